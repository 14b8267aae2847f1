"""Where a slider move's time goes inside the app's kernels: a timeline per request, with each thread's CPU time.

The app's kernels are started by Voila, so a probe cannot be pasted into them; IPython runs the files of its
profile's ``startup`` folder in every kernel, and this script writes one that wraps a few methods (a panel's
request, its computation, partial and final deliveries; the training engine's evaluations, recorded steps and
track functions) to log ``time.monotonic()``, the thread's ``time.thread_time()`` and the thread's name, one file
per kernel. A worker whose wall time runs ahead of its CPU time was waiting: for the GIL, or for a core that
another thread or process had (06's damping panel, 2026-12-07: the OpenMP thread of a kernel started without
``OMP_NUM_THREADS=1``; docs/performance.md, "Heavy panels' first frame, continued").

Usage::

    python benchmarks/kernel_trace.py profile /tmp/ipy            # writes /tmp/ipy/profile_default/startup/
    IPYTHONDIR=/tmp/ipy LECTURE_CACHE_DIR=/tmp/kd python benchmarks/kernel_draw.py --only 06_three_mechanisms --panels 2
    python benchmarks/kernel_trace.py report                       # per request: the first partial's timeline
    python benchmarks/kernel_trace.py report --draw kernel_draw.out  # and each move's legs: press -> request -> sent -> painted

Traces go to ``$LECTURE_TRACE_DIR`` (default ``/tmp/lecture-trace``), which ``report`` reads and ``profile`` empties.
Last line of ``report``: a JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

TRACE_DIR = Path(os.environ.get("LECTURE_TRACE_DIR", "/tmp/lecture-trace"))
STARTUP = """# written by benchmarks/kernel_trace.py: time panel requests in this kernel
import sys
sys.path.insert(0, {benchmarks!r})
import kernel_trace
kernel_trace.install()
"""


def install() -> None:
    """Wrap the methods named in the module docstring; called in a kernel by the startup file."""
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    out = open(TRACE_DIR / f"{os.getpid()}.log", "a", buffering=1)

    def event(what: str) -> None:
        out.write(f"{time.monotonic():.6f} {time.time():.6f} {time.thread_time():.6f} "
                  f"{threading.current_thread().name} {what}\n")

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            event(f"> {label}")
            try:
                return fn(*args, **kwargs)
            finally:
                event(f"< {label}")
        return wrapper

    from lecture_lib import engine
    from lecture_lib.experiments import mechanisms
    from lecture_lib.viz import runner

    for name in ("request", "_timed_call", "_deliver_partial", "_deliver"):
        setattr(runner.ComputeRunner, name, timed(getattr(runner.ComputeRunner, name), name))
    for name in ("__init__", "evaluate", "_pre_stats"):
        setattr(engine.Trainer, name, timed(getattr(engine.Trainer, name), f"Trainer.{name}"))
    step = engine.Trainer.step

    def recorded_step(self, record=False, **kwargs):
        if not record:
            return step(self, record=record, **kwargs)
        return timed(step, f"step{self.step_count}")(self, record=record, **kwargs)

    engine.Trainer.step = recorded_step
    tracks = mechanisms._kfac_tracks
    mechanisms._kfac_tracks = lambda *a, **k: {n: timed(f, f"track:{n}") for n, f in tracks(*a, **k).items()}
    event("installed")


def profile(ipython_dir: Path) -> Path:
    """Write the startup file into ``ipython_dir``'s default profile; empty the trace folder."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    path = startup / "00-kernel-trace.py"
    path.write_text(STARTUP.format(benchmarks=str(Path(__file__).resolve().parent)))
    for old in TRACE_DIR.glob("*.log"):
        old.unlink()
    return path


def requests(lines: list[tuple[float, float, float, str, str]]) -> list[dict]:
    """Per request of a kernel: milliseconds from the request to each mark up to its first partial's delivery,
    the worker thread's CPU milliseconds over the same span, and the request's and the send's wall-clock times
    (Unix milliseconds, comparable with a page's ``performance.timeOrigin + performance.now()`` on this machine)."""
    out = []
    starts = [i for i, (_, _, _, _, what) in enumerate(lines) if what == "> request"]
    for n, i in enumerate(starts):
        t0, marks, cpu0 = lines[i][0], {}, None
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        for t, wall, cpu, thread, what in lines[i:end]:
            if thread != "MainThread" and cpu0 is None and what == "> _timed_call":
                cpu0 = cpu
            marks.setdefault(what, round(1000 * (t - t0), 1))
            if what == "< _deliver_partial":
                out.append({"marks": marks, "worker_cpu_ms": round(1000 * (cpu - cpu0), 1) if cpu0 else None,
                            "request_unix_ms": round(1000 * lines[i][1], 1), "sent_unix_ms": round(1000 * wall, 1)})
                break
    return out


def report() -> dict:
    logs = {}
    for path in sorted(TRACE_DIR.glob("*.log")):
        rows = []
        for line in path.read_text().splitlines():
            t, wall, cpu, thread, what = line.split(None, 4)
            rows.append((float(t), float(wall), float(cpu), thread, what.strip()))
        logs[path.stem] = rows
    summary = {}
    for pid, rows in logs.items():
        found = requests(rows)
        if not found:
            continue
        for k, r in enumerate(found, 1):
            m = r["marks"]
            print(f"kernel {pid} request {k}: first partial handed over at {m.get('> _deliver_partial')} ms, sent at "
                  f"{m.get('< _deliver_partial')} ms (worker CPU {r['worker_cpu_ms']} ms); step 0 from "
                  f"{m.get('> step0')} to {m.get('< step0')} ms, its traces ended at {m.get('< track:traces')} ms")
        sent = [r["marks"]["< _deliver_partial"] for r in found]
        summary[pid] = {"requests": found, "sent_ms_median": statistics.median(sent)}
    return {"benchmark": "kernel_trace", "trace_dir": str(TRACE_DIR), "kernels": summary}


def join(summary: dict, draw: dict) -> dict:
    """Each move of ``kernel_draw.py``'s JSON (``draw``) with the kernel request it caused: the milliseconds from
    the key press to the request, from the request to the first partial's send, and from the send to the painted
    frame. Both clocks are this machine's wall clock."""
    found = [r for k in summary.values() for r in k["requests"]]
    legs = {"press_to_request_ms": [], "request_to_sent_ms": [], "sent_to_painted_ms": []}
    for panels in draw["dashboards"].values():
        for row in panels:
            for move in row["moves"]:
                match = [r for r in found if move["pressed_unix_ms"] <= r["request_unix_ms"] <= move["painted_unix_ms"]]
                if not match:
                    continue
                r = match[0]
                legs["press_to_request_ms"].append(r["request_unix_ms"] - move["pressed_unix_ms"])
                legs["request_to_sent_ms"].append(r["sent_unix_ms"] - r["request_unix_ms"])
                legs["sent_to_painted_ms"].append(move["painted_unix_ms"] - r["sent_unix_ms"])
    for name, values in legs.items():
        if values:
            print(f"{name}: median {statistics.median(values):.1f} ms, range {min(values):.1f}-{max(values):.1f} ms, "
                  f"{len(values)} moves")
    return {name: round(statistics.median(v), 1) if v else None for name, v in legs.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("profile", help="write the IPython startup file").add_argument("ipython_dir", type=Path)
    rep = sub.add_parser("report", help="print the traced requests")
    rep.add_argument("--draw", type=Path, help="kernel_draw.py's output: split each move's first frame into the "
                     "page's and the kernel's legs")
    args = parser.parse_args(argv)
    if args.command == "profile":
        print(f"wrote {profile(args.ipython_dir)}; run the app or a benchmark with IPYTHONDIR={args.ipython_dir}")
    else:
        out = report()
        if args.draw:
            out["legs"] = join(out["kernels"], json.loads(args.draw.read_text().strip().splitlines()[-1]))
        print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
