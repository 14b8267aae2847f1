"""A class opens one dashboard at once: N browser sessions, each moves a slider; open time, latency, memory.

Starts the app as ``./lecture app`` runs it (``python -m voila_app``, every notebook of
``notebooks/``, one pre-heated kernel per notebook; ``--fast`` unless ``--full``) on a free
loopback port and waits until the pools have executed their notebooks. Then N visitors
(separate Playwright browser contexts in one headless Chromium: separate cookies, separate
kernels) open the same dashboard within a fraction of a second of each other, and each
moves the first slider of the first panel that has one, ``--moves`` times, all visitors at
the same moment. Reports, per visitor and over all:

- ``open``: seconds from navigation to the first drawn plot (measured in the page);
- ``slider -> plot``: seconds from the key press to the panel having drawn the new result
  with nothing pending (its hidden ``lecture-state`` element), measured in the page, so the
  figures do not depend on the order in which this script looks at the pages;
- whether every visitor's plot data changed after each move;
- resident memory (RSS) of the Voila process plus all its kernels: before (pool only),
  at the peak, and after every visitor closed the tab (kernels shut down, pool refilled).
  RSS counts shared libraries once per process, so the sum over-counts what the machine
  actually uses; the *change* per visitor is the figure to plan with.

Prints figures; last line a JSON object. The helpers (``open_visitors``, ``move_all``,
``close_visitors``, ``server_memory``, ``settle``) are also used by ``tests/test_load.py``.
On one machine the visitors' browsers compete with the server for its CPUs, which students'
browsers on their own laptops do not; ``--server-nice 10`` gives the browsers the CPUs first.
Usage: ``.venv/bin/python benchmarks/concurrent_visitors.py [--visitors 10] [--moves 3]
[--notebook 01_adaptive_methods] [--pool-size 1] [--server-nice 10] [--full]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))    # the browser helpers the tests use

from benchmarks._common import emit  # noqa: E402
from browser_helpers import (CHROMIUM, HAS_DRAWN_PATH_JS, PANEL_PLOT_PATH, PANEL_STATE_JS, SETTLED_JS,  # noqa: E402
                             SLIDER_HANDLE, launch, new_page, slider_panels, slider_state)

MB = 1024 * 1024

# Installed in every page before its scripts run: the time (performance.now(), ms since the
# navigation started) at which the first plot trace is drawn, and the time of every key press.
PROBE_JS = """(() => {
  const probe = window.__lectureProbe = {firstPlot: null, keys: []};
  const drawn = """ + HAS_DRAWN_PATH_JS + """;
  const poll = () => {
    if (drawn(""" + json.dumps(PANEL_PLOT_PATH) + """)) {
      probe.firstPlot = performance.now();
    } else { setTimeout(poll, 25); }
  };
  poll();
  document.addEventListener('keydown', () => probe.keys.push(performance.now()), true);
})();"""
FIRST_PLOT_JS = "() => window.__lectureProbe && window.__lectureProbe.firstPlot !== null"
# Records every change of a panel's lecture-state element with its time: {t, generation, busy, outcome}.
WATCH_STATE_JS = """(panel) => {
  const box = panel.querySelector('.lecture-state');
  const log = panel.__lectureStates = [];
  const state = """ + PANEL_STATE_JS + """;
  const read = () => { if (box.querySelector('span')) log.push({t: performance.now(), ...state(panel)}); };
  new MutationObserver(read).observe(box, {subtree: true, childList: true, attributes: true, characterData: true});
  read();
}"""
# The data every plot of the panel draws (plotly keeps it on the graph div), as one string.
PLOT_DATA_JS = """(panel) => JSON.stringify(Array.from(panel.querySelectorAll('.js-plotly-plot')).map(gd =>
  (gd.data || []).map(t => ['x', 'y', 'z'].map(k => t[k] && t[k].length !== undefined ? Array.from(t[k]) : t[k]))))"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- server side: memory of Voila and its kernels ----------------------------------------

def server_memory(pid: int) -> tuple[int, int]:
    """(RSS in bytes of the Voila process plus every process it started, number of those processes)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total, len(procs) - 1


def settle(pid: int, kernels: int | None = None, timeout: float = 180.0, quiet_cpu: float = 10.0) -> tuple[int, int]:
    """Wait until the server has ``kernels`` kernels (any number if None) and they are idle
    (each under ``quiet_cpu`` % CPU over two 1-second windows); return ``server_memory``."""
    import psutil

    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            raise RuntimeError("the Voila process is gone") from None
        if kernels is not None and len(children) != kernels:
            quiet = 0
            time.sleep(0.5)
            continue
        for c in children:
            with _ignore_gone():
                c.cpu_percent(None)
        time.sleep(1.0)
        busy = False
        for c in children:
            with _ignore_gone():
                busy |= c.cpu_percent(None) > quiet_cpu
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return server_memory(pid)
    rss, n = server_memory(pid)
    raise TimeoutError(f"server did not settle within {timeout:.0f} s: {n} kernels (want {kernels}), "
                       f"RSS {rss / MB:.0f} MB")


class _ignore_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import psutil

        return kind is not None and issubclass(kind, psutil.NoSuchProcess)


def renice(pid: int, niceness: int) -> None:
    """Set the niceness of the Voila process and every process it started."""
    import psutil

    if niceness:
        root = psutil.Process(pid)
        for p in [root] + root.children(recursive=True):
            with _ignore_gone():
                p.nice(niceness)


class MemorySampler:
    """Samples ``server_memory(pid)`` every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.peak_rss, self.peak_kernels = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, n = server_memory(self.pid)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_kernels = max(self.peak_kernels, n)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- browser side: visitors ------------------------------------------------------------------

@dataclass
class Visitor:
    """One visitor: a browser context of its own (own cookies, own kernel) with one page."""

    index: int
    context: object
    page: object
    panel: object = None
    open_s: float | None = None
    latencies: list[float] = field(default_factory=list)
    updated: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def handle(self):
        return self.panel.locator(SLIDER_HANDLE).first


def open_visitors(browser, url: str, n: int) -> list[Visitor]:
    """``n`` visitors start loading ``url`` back to back (navigation is not awaited)."""
    visitors = []
    for i in range(n):
        context, page, watcher = new_page(browser, init_script=PROBE_JS)
        visitors.append(Visitor(i, context, page, errors=watcher.errors))
    for v in visitors:
        v.page.goto(url, wait_until="commit", timeout=300_000)
    return visitors


def wait_open(visitors: list[Visitor], timeout_ms: int = 300_000) -> None:
    """Wait until every visitor's first plot is drawn; ``open_s`` is measured in the page."""
    for v in visitors:
        v.page.wait_for_function(FIRST_PLOT_JS, timeout=timeout_ms)
        v.open_s = v.page.evaluate("() => window.__lectureProbe.firstPlot") / 1000
        panels = slider_panels(v.page)
        if panels.count() == 0:
            raise RuntimeError("the dashboard has no panel with a slider")
        v.panel = panels.first
        v.panel.wait_for(state="attached")
        v.panel.evaluate(WATCH_STATE_JS)


def _key(handle) -> str:
    now, _, high = slider_state(handle)
    return "ArrowLeft" if now >= high else "ArrowRight"


def move_all(visitors: list[Visitor], moves: int, timeout_ms: int = 180_000) -> None:
    """Every visitor moves the slider one step, all at once, ``moves`` times; records in-page
    latencies (key press -> new result drawn, nothing pending) and whether the plot data changed."""
    for _ in range(moves):
        before = []
        for v in visitors:
            v.handle.scroll_into_view_if_needed()
            before.append((v.panel.evaluate(PANEL_STATE_JS)["generation"], v.panel.evaluate(PLOT_DATA_JS)))
        for v in visitors:                       # the presses go out back to back
            v.handle.focus()
            v.page.keyboard.press(_key(v.handle))
        for v, (g, data) in zip(visitors, before):
            v.page.wait_for_function(SETTLED_JS, arg=[v.panel.element_handle(), g], timeout=timeout_ms)
            key_t = v.page.evaluate("() => window.__lectureProbe.keys.at(-1)")
            log = v.panel.evaluate("(panel) => panel.__lectureStates")
            done = next(s["t"] for s in log if s["generation"] > g and not s["busy"])
            v.latencies.append((done - key_t) / 1000)
            v.updated.append(v.panel.evaluate(PLOT_DATA_JS) != data)
            state = v.panel.evaluate(PANEL_STATE_JS)
            if state["outcome"] != "ok":
                v.errors.append(f"panel outcome {state['outcome']!r} after a move")


def close_visitors(visitors: list[Visitor]) -> None:
    """Close every tab as a person does: the page's unload handler asks Voila to shut its kernel down."""
    for v in visitors:
        v.page.close(run_before_unload=True)
    time.sleep(1.0)       # let the shutdown beacons leave before the contexts go
    for v in visitors:
        v.context.close()


def summary(visitors: list[Visitor]) -> dict:
    opens = [v.open_s for v in visitors]
    lat = [x for v in visitors for x in v.latencies]
    return {"visitors": len(visitors),
            "open_median_s": round(statistics.median(opens), 2), "open_p90_s": round(percentile(opens, 0.9), 2),
            "open_max_s": round(max(opens), 2),
            "slider_median_s": round(statistics.median(lat), 3) if lat else None,
            "slider_p90_s": round(percentile(lat, 0.9), 3) if lat else None,
            "all_plots_updated": all(all(v.updated) for v in visitors),
            "per_visitor": [{"open_s": round(v.open_s, 2), "slider_s": [round(x, 3) for x in v.latencies],
                             "updated": v.updated, "errors": v.errors} for v in visitors]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=10)
    parser.add_argument("--moves", type=int, default=3, help="slider moves per visitor (all at once)")
    parser.add_argument("--notebook", default="01_adaptive_methods", help="stem of the dashboard to open")
    parser.add_argument("--pool-size", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="full settings (no LECTURE_FAST)")
    parser.add_argument("--server-nice", type=int, default=0,
                        help="run Voila and its kernels at this niceness (10: the browsers, which share this "
                             "machine's CPUs, get them first, as students' browsers on their own laptops would)")
    args = parser.parse_args(argv)
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.notebook not in {p.stem for p in notebooks}:
        sys.exit(f"no notebook {args.notebook!r}; have {[p.stem for p in notebooks]}")
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from voila_app.server import running_app

    log = REPO / "benchmarks" / "out" / "concurrent_visitors_voila.log"
    url_path = f"/voila/render/{args.notebook}.ipynb"
    with running_app(REPO / "notebooks", log, pool_size=args.pool_size, fast=not args.full) as app, \
            sync_playwright() as p:
        pid = app.proc.pid
        pool = args.pool_size * len(notebooks)
        renice(pid, args.server_nice)             # kernels started from now on inherit it
        app.wait_preheated([nb.name for nb in notebooks])
        renice(pid, args.server_nice)
        browser = launch(p)
        try:
            # one visitor first, alone: the one-time costs of the first page after start-up
            # (templates, Chromium compiling Voila's JavaScript) are not the class's
            warm = open_visitors(browser, app.url + url_path, 1)
            wait_open(warm)
            close_visitors(warm)
            base_rss, base_k = settle(pid, kernels=pool, timeout=300)
            print(f"app at {app.url}; {args.visitors} visitors on {args.notebook} "
                  f"({'full' if args.full else 'LECTURE_FAST=1'} settings, {os.cpu_count()} CPUs, pool {args.pool_size}, "
                  f"server niceness {args.server_nice})")
            print(f"before: {base_rss / MB:7.0f} MB RSS  (Voila + {base_k} pre-heated kernels)", flush=True)
            with MemorySampler(pid) as sampler:
                t0 = time.perf_counter()
                visitors = open_visitors(browser, app.url + url_path, args.visitors)
                wait_open(visitors)
                all_open_s = time.perf_counter() - t0
                move_all(visitors, args.moves)
                close_visitors(visitors)
                after_rss, after_k = settle(pid, kernels=pool, timeout=300)
        finally:
            browser.close()
    s = summary(visitors)
    print(f"open -> first plot: median {s['open_median_s']:.1f} s, p90 {s['open_p90_s']:.1f} s, "
          f"slowest {s['open_max_s']:.1f} s (all {args.visitors} drawn after {all_open_s:.1f} s)")
    print(f"slider -> plot ({args.moves} moves each, all visitors at once): median {s['slider_median_s']:.2f} s, "
          f"p90 {s['slider_p90_s']:.2f} s; every visitor's plot updated: {s['all_plots_updated']}")
    per_kernel = (sampler.peak_rss - base_rss) / max(sampler.peak_kernels - base_k, 1)
    print(f"peak:   {sampler.peak_rss / MB:7.0f} MB RSS  ({sampler.peak_kernels} kernels; "
          f"{per_kernel / MB:.0f} MB per visitor kernel)")
    print(f"after:  {after_rss / MB:7.0f} MB RSS  ({after_k} kernels, visitors gone; "
          f"{100 * (after_rss - base_rss) / base_rss:+.1f} % of before)")
    for i, v in enumerate(s["per_visitor"]):
        print(f"  visitor {i:2d}: open {v['open_s']:5.1f} s  slider {v['slider_s']}  updated {v['updated']}"
              + (f"  errors {v['errors']}" if v["errors"] else ""))
    emit({"benchmark": "concurrent_visitors", "notebook": args.notebook, "lecture_fast": not args.full,
          "cpus": os.cpu_count(), "pool_size": args.pool_size, "server_nice": args.server_nice, "moves": args.moves,
          **s,
          "all_open_s": round(all_open_s, 2),
          "rss_before_mb": round(base_rss / MB), "rss_peak_mb": round(sampler.peak_rss / MB),
          "rss_after_mb": round(after_rss / MB), "kernels_before": base_k, "kernels_peak": sampler.peak_kernels,
          "kernels_after": after_k, "mb_per_visitor_kernel": round(per_kernel / MB)})


if __name__ == "__main__":
    main()
