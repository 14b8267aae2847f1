"""What one scrub step costs the browser: the swap's script and the frame it paints, split by Chrome's trace.

Starts the app (``python -m voila_app``, full settings unless ``--fast``) serving one notebook, opens it
in headless Chromium once per variant and repetition, waits ``--wait`` seconds after the first plot (the
page's idle drawing and the pool's refill done), and steps the first panel with a scrub slider ``--steps``
times (bouncing between its ends; each step as ``dashboard_latency.py`` times it: input event -> the task
after the next frame), with Chrome's tracing on. Per page it prints the steps' median and p90 and, as medians
over the steps, the ``input`` handler's time (``script``: the swap), the wait until the next
``BeginMainFrame`` (``wait``) and that frame's time (``frame``) with its style, layout, pre-paint, paint,
layerize and commit phases. The trace adds a little to each step.

A variant is extra CSS injected into the page after the first plot, to try a rendering change without
editing the template: ``--css '{"as is": "", "cells": ".jp-Cell { content-visibility: auto; }"}'``.
Last line: a JSON object. Usage: ``.venv/bin/python benchmarks/scrub_frame.py [--notebook
05_weight_decay_equilibrium] [--css JSON] [--steps 40] [--reps 2] [--wait 8] [--fast]``
(docs/performance.md, "Scrubbing: what a frame paints").
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import emit  # noqa: E402
from dashboard_latency import ARGS, CHROMIUM, PLOT, measure_scrub  # noqa: E402
from voila_app.server import running_app  # noqa: E402

CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "blink", "toplevel", "cc"]
PHASES = ("UpdateLayoutTree", "Layout", "PrePaint", "Paint", "Layerize", "Commit")
FIRST_PLOT_JS = "(sel) => Array.from(document.querySelectorAll(sel)).some(p => (p.getAttribute('d') || '').length > 8)"


def breakdown(raw: bytes) -> dict:
    """Per step (an ``input`` event's dispatch on the renderer's main thread): medians, in ms, of the handler,
    the wait to the next BeginMainFrame, that frame, and the frame's phases."""
    trace = json.loads(raw)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    inputs = sorted((e for e in events if e.get("name") == "EventDispatch"
                     and (e.get("args", {}).get("data") or {}).get("type") == "input"), key=lambda e: e["ts"])
    if not inputs:
        return {}
    main = (inputs[0]["pid"], inputs[0]["tid"])
    spans = sorted((e for e in events if e.get("ph") == "X" and "dur" in e and (e["pid"], e["tid"]) == main),
                   key=lambda e: e["ts"])
    frames = [e for e in spans if e["name"] == "ProxyMain::BeginMainFrame"]
    rows = collections.defaultdict(list)
    for step in inputs:
        rows["script"].append(step["dur"] / 1000)
        frame = next((f for f in frames if f["ts"] > step["ts"]), None)
        if frame is None:
            continue
        rows["wait"].append((frame["ts"] - step["ts"] - step["dur"]) / 1000)
        rows["frame"].append(frame["dur"] / 1000)
        inside = [e for e in spans if frame["ts"] <= e["ts"] < frame["ts"] + frame["dur"]]
        for phase in PHASES:
            rows[phase].append(sum(e["dur"] for e in inside if e["name"] == phase) / 1000)
    return {k: round(statistics.median(v), 1) for k, v in rows.items()}


def measure(browser, url: str, css: str, steps: int, wait: float) -> dict:
    """One page: ``css`` injected after the first plot, ``wait`` seconds, then ``steps`` scrub steps
    (``dashboard_latency.measure_scrub``) with Chrome's tracing on, split by :func:`breakdown`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit", timeout=300_000)
        page.wait_for_function(FIRST_PLOT_JS, arg=PLOT, timeout=300_000)
        if css:
            page.add_style_tag(content=css)
        time.sleep(wait)
        browser.start_tracing(page=page, categories=CATEGORIES)
        steps_ms = measure_scrub(page, steps)
        split = breakdown(browser.stop_tracing())
        if steps_ms is None:
            raise SystemExit("this notebook has no scrub slider")
        return {"step_median_ms": steps_ms["scrub_median_ms"], "step_p90_ms": steps_ms["scrub_p90_ms"], **split}
    finally:
        context.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="05_weight_decay_equilibrium")
    parser.add_argument("--css", default='{"as is": ""}', help="JSON: variant name -> CSS injected after the first plot")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--wait", type=float, default=8.0, help="seconds after the first plot before the steps")
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST=1 (default: the full settings)")
    args = parser.parse_args(argv)
    variants = json.loads(args.css)
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    name = args.notebook.removesuffix(".ipynb") + ".ipynb"
    results: dict[str, list] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="lecture-scrub-") as tmp, sync_playwright() as p:
        shutil.copy(REPO / "notebooks" / name, Path(tmp) / name)
        log = REPO / "benchmarks" / "out" / "scrub_frame_voila.log"
        with running_app(Path(tmp), log, fast=args.fast) as app:
            app.wait_preheated([name], timeout=900)
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                for rep in range(args.reps):
                    for variant, css in variants.items():
                        app.wait_preheated([name], timeout=300)
                        r = measure(browser, f"{app.url}/voila/render/{name}", css, args.steps, args.wait)
                        results[variant].append(r)
                        print(f"{variant:24s} page {rep + 1}: step median {r['step_median_ms']:5.1f} ms"
                              f" p90 {r['step_p90_ms']:5.1f} ms   "
                              + "  ".join(f"{k} {v}" for k, v in r.items() if not k.startswith("step_")), flush=True)
            finally:
                browser.close()
    emit({"benchmark": "scrub_frame", "notebook": name, "fast": args.fast, "steps": args.steps,
          "cpus": os.cpu_count(), "variants": results})


if __name__ == "__main__":
    main()
