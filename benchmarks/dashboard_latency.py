"""Dashboard latency in a real browser: open -> first plot, and slider release -> redrawn plot.

Starts the app (``python -m voila_app --fast``, pre-heated kernels) on a free
loopback port, waits until every notebook's kernel pool is filled, then for each
dashboard in ``notebooks/``:

- ``open``: seconds from navigation to the first drawn plot trace (pre-heated kernel);
- 20 slider moves on the first panel that has a slider (keyboard, one step each):
  10 to new values (computed) and 10 back (served from the panel's cache). For each,
  seconds from the key press to the panel having drawn the new result with nothing
  pending (its hidden ``lecture-state`` element). Reports median and p90 over all 20, and the medians of each half;
- ``scrub``: on the first panel with a scrub slider (:mod:`lecture_lib.viz.scrub`), ``--moves`` key presses
  on it; for each, milliseconds (measured in the page) from the key press to the plot's data having
  changed and plotly having redrawn (the next animation frame after it). Median and p90.

Prints one line per dashboard and, last, a JSON object with every figure.
Usage: ``.venv/bin/python benchmarks/dashboard_latency.py [--full] [--moves 20] [--only 01_adaptive_methods]``
(``--full``: the notebooks' full settings, as in class, instead of LECTURE_FAST=1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voila_app.server import running_app  # noqa: E402

CHROMIUM = os.environ.get("LECTURE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-dev-shm-usage"]
PLOT = ".lecture-panel .js-plotly-plot .scatterlayer .trace path"
# The panel's hidden state element (lecture_lib.viz.panels): the generation drawn and a busy flag.
# It is updated right after the figure update, over the same websocket, so "newer generation,
# not busy" means the new data has reached the page's plots.
GENERATION_JS = "(panel) => +(panel.querySelector('.lecture-state span') || {dataset: {generation: -1}}).dataset.generation"
SETTLED_JS = """([panel, g]) => { const s = panel.querySelector('.lecture-state span');
    return s && +s.dataset.generation > g && s.dataset.busy === '0'; }"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def slider_state(handle) -> tuple[float, float, float]:
    get = handle.get_attribute
    return float(get("aria-valuenow")), float(get("aria-valuemin")), float(get("aria-valuemax"))


# In the page: press-to-redraw time of one scrub step, measured with performance.now() around the input event
# (the swap is synchronous: plotly restyles inside the handler), plus one animation frame for the paint.
SCRUB_STEP_JS = """async (panel, key) => {
  const input = panel.querySelector('.lecture-scrub input[type=range]');
  const gd = panel.querySelector('.js-plotly-plot');
  const before = gd.data.map(t => t.y);
  const t0 = performance.now();
  input.focus();
  const i = +input.value, n = +input.max;
  input.value = key === 'ArrowRight' ? Math.min(i + 1, n) : Math.max(i - 1, 0);
  input.dispatchEvent(new Event('input', {bubbles: true}));
  await new Promise(r => requestAnimationFrame(() => r()));
  const changed = gd.data.some((t, k) => t.y !== before[k]);
  return {ms: performance.now() - t0, changed};
}"""


def measure_scrub(page, moves: int) -> dict | None:
    """Scrub-step latencies (ms, in the page) on the first panel with a scrub slider; None if there is none."""
    panel = page.locator(".lecture-panel").filter(has=page.locator(".lecture-scrub input")).first
    if panel.count() == 0:
        return None
    page.wait_for_function("(p) => (p.querySelector('.lecture-scrub') || {dataset: {}}).dataset.ready === '1'",
                           arg=panel.element_handle(), timeout=120_000)
    panel.scroll_into_view_if_needed()
    times, unchanged = [], 0
    for i in range(moves):
        r = panel.evaluate(SCRUB_STEP_JS, "ArrowRight" if i < moves // 2 else "ArrowLeft")
        times.append(r["ms"])
        unchanged += not r["changed"]
    return {"scrub_median_ms": round(statistics.median(times), 1), "scrub_p90_ms": round(percentile(times, 0.9), 1),
            "scrub_moves": moves, "scrub_unchanged": unchanged}


def measure_dashboard(browser, url: str, moves: int) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=300_000)
        page.wait_for_function("(sel) => Array.from(document.querySelectorAll(sel))"
                               ".some(p => (p.getAttribute('d') || '').length > 8)", arg=PLOT, timeout=300_000)
        open_s = time.perf_counter() - start
        panel = page.locator(".lecture-panel").filter(has=page.locator(".lecture-control .noUi-handle")).first
        if panel.count() == 0:
            return {"open_s": open_s, "error": "no panel with a slider"}
        handle = panel.locator(".lecture-control .noUi-handle").first
        handle.scroll_into_view_if_needed()
        if moves == 0:
            return {"open_s": round(open_s, 3)}
        scrub = measure_scrub(page, moves) or {}
        times, fresh, cached = [], [], []
        half = moves // 2
        for i in range(moves):
            now, low, high = slider_state(handle)
            forward = i < half
            key = "ArrowRight" if forward else "ArrowLeft"
            if (forward and now >= high) or (not forward and now <= low):
                key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
            before = panel.evaluate(GENERATION_JS)
            handle.focus()
            t0 = time.perf_counter()
            page.keyboard.press(key)
            page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), before], timeout=120_000)
            dt = time.perf_counter() - t0
            times.append(dt)
            (fresh if forward else cached).append(dt)
        return {"open_s": round(open_s, 3), "median_s": round(statistics.median(times), 3),
                "p90_s": round(percentile(times, 0.9), 3),
                "fresh_median_s": round(statistics.median(fresh), 3),
                "cached_median_s": round(statistics.median(cached), 3) if cached else None,
                "cached_p90_s": round(percentile(cached, 0.9), 3) if cached else None, "moves": len(times), **scrub}
    finally:
        context.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--full", action="store_true", help="full settings (no LECTURE_FAST): classroom figures")
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems to measure (default: all)")
    args = parser.parse_args(argv)
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if p.stem in args.only]
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    results, cold = {}, {"open_s": None}
    log = REPO / "benchmarks" / "out" / "dashboard_latency_voila.log"
    with running_app(REPO / "notebooks", log, fast=not args.full) as app, sync_playwright() as p:
        preheated = app.wait_preheated([nb.name for nb in notebooks])
        print(f"app at {app.url}; kernel pools filled: {preheated}", flush=True)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            # the very first dashboard after start-up pays one-time costs (server templates,
            # Chromium compiling Voila's JavaScript): measured apart, then the pool refills
            cold = measure_dashboard(browser, f"{app.url}/voila/render/{notebooks[0].name}", 0)
            print(f"cold start: first dashboard drawn after {cold['open_s']:.2f} s", flush=True)
            time.sleep(2)
            for nb in notebooks:
                app.wait_preheated([nb.name], timeout=120)
                r = measure_dashboard(browser, f"{app.url}/voila/render/{nb.name}", args.moves)
                results[nb.stem] = r
                if "error" in r:
                    print(f"{nb.stem:32s} open {r['open_s']:6.2f} s   {r['error']}", flush=True)
                else:
                    print(f"{nb.stem:32s} open {r['open_s']:6.2f} s   slider->plot median {r['median_s']:.2f} s"
                          f"  p90 {r['p90_s']:.2f} s  (new values {r['fresh_median_s']:.2f} s,"
                          f" cached {r['cached_median_s']:.2f} s)"
                          + (f"  scrub median {r['scrub_median_ms']:.0f} ms p90 {r['scrub_p90_ms']:.0f} ms"
                             if "scrub_median_ms" in r else ""), flush=True)
        finally:
            browser.close()
    print(json.dumps({"benchmark": "dashboard_latency", "lecture_fast": not args.full, "cpus": os.cpu_count(),
                      "cold_first_open_s": cold["open_s"],
                      "moves": args.moves, "dashboards": results}))


if __name__ == "__main__":
    main()
