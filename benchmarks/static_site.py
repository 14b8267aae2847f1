"""The static site (``./lecture export``): build time, size, page open -> first figure, scrub latency.

    python benchmarks/static_site.py [--full] [--site DIR] [--cache-dir DIR] [--moves 20]

Builds the site (fast settings unless ``--full``; ``--site DIR`` measures an existing build instead) from a
cold result cache, a fresh folder of its own (``--cache-dir DIR`` builds with that cache instead), then
opens every page from ``file://`` in headless Chromium: the time from navigation to the first drawn figure
(target <= 1.5 s) and, for every range input, the latency from the input event (a key press) to the painted
frame that shows the new position (the first task after the next animation frame; target p90 <= 33 ms).
Sizes per page and in total (target <= 25 MB at full settings). Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _common import emit, row  # noqa: E402

LATENCY_JS = """async ([index, moves]) => {
  const box = document.querySelectorAll('.static-scrub')[index];
  const input = box.querySelector('input');
  input.scrollIntoView({block: 'center'});
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)));
  const times = [];
  const max = +input.max;
  let last = null;
  input.addEventListener('input', (e) => { last = e.timeStamp; });     // after page.js's listener: the swap is done
  input.focus();
  for (let i = 0; i < moves; i++) {
    const up = (Math.floor(i / Math.max(max, 1)) % 2) === 0;
    input.dispatchEvent(new KeyboardEvent('keydown', {key: up ? 'ArrowRight' : 'ArrowLeft', bubbles: true}));
    input.value = Math.min(max, Math.max(0, +input.value + (up ? 1 : -1)));
    input.dispatchEvent(new Event('input', {bubbles: true}));
    await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
    times.push(performance.now() - last);
    await new Promise(r => setTimeout(r, 30));
  }
  return times;
}"""


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def measure_page(browser, url: str, moves: int) -> dict:
    from browser_helpers import new_page

    context, page, watcher = new_page(browser)
    try:
        page.goto(url)
        page.wait_for_function("() => window.__lectureFirstFigure !== undefined", timeout=60_000)
        first_ms = page.evaluate("window.__lectureFirstFigure")
        page.wait_for_function("() => Array.from(document.querySelectorAll('section.static-panel'))"
                               ".every(s => s.dataset.ready === '1')", timeout=60_000)
        latencies = {}
        for i in range(page.locator(".static-scrub").count()):
            label = page.locator(".static-scrub").nth(i).evaluate(
                "(b) => b.closest('section').id + ' ' + b.firstChild.textContent.trim()")
            latencies[label] = page.evaluate(LATENCY_JS, [i, moves])
        return {"first_figure_ms": round(first_ms, 1), "latencies": latencies, "errors": watcher.errors}
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="classroom settings (default: fast)")
    parser.add_argument("--site", type=Path, help="measure this existing build instead of building one")
    parser.add_argument("--cache-dir", help="build with this result cache (default: a fresh, empty one)")
    parser.add_argument("--moves", type=int, default=20, help="scrub moves per range input")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from browser_helpers import launch

    build_s = None
    if args.site is None:
        from voila_app import export
        out = Path(tempfile.mkdtemp(prefix="lecture-site-"))
        cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="lecture-cache-")      # cold unless told
        start = time.perf_counter()
        export.export(out, fast=not args.full, notebooks=sorted(export.NOTEBOOKS_DIR.glob("*.ipynb")),
                      cache_dir=cache_dir, command="./lecture export" + ("" if args.full else " --fast"))
        build_s = time.perf_counter() - start
    else:
        out = args.site.resolve()
    build = json.loads((out / "build.json").read_text())
    pages = sorted(p for p in out.glob("*.html") if p.name != "index.html")
    files = [f for f in out.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    sizes = {f.name: f.stat().st_size for f in files if f.parent == out / "assets"}
    sizes.update({p.name: p.stat().st_size + sum(f.stat().st_size for f in (out / p.stem).glob("*"))
                  for p in out.glob("*.html")})
    results, all_lat = {}, []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for page in pages:
                r = measure_page(browser, page.as_uri(), args.moves)
                lat = [t for ts in r["latencies"].values() for t in ts]
                all_lat += lat
                results[page.stem] = {"first_figure_ms": r["first_figure_ms"], "bytes": sizes[page.name],
                                      "scrub_p50_ms": round(percentile(lat, 0.5), 1),
                                      "scrub_p90_ms": round(percentile(lat, 0.9), 1),
                                      "worst_input_p90_ms": max((round(percentile(v, 0.9), 1), k)
                                                                for k, v in r["latencies"].items()) if lat else None,
                                      "errors": len(r["errors"])}
                print(f"{page.stem:32s} {sizes[page.name] / 1e6:6.2f} MB  first figure {r['first_figure_ms']:6.0f} ms"
                      f"  scrub p50 {results[page.stem]['scrub_p50_ms']:5.1f} ms"
                      f"  p90 {results[page.stem]['scrub_p90_ms']:5.1f} ms  ({len(r['latencies'])} inputs)",
                      flush=True)
        finally:
            browser.close()
    cache = "measured build" if args.site else ("given: " + args.cache_dir if args.cache_dir else "cold")
    row("settings", "full" if args.full else "fast")
    row("result cache at build", cache)
    row("build time (this run; the build's own count)", f"{build_s or build['seconds']:.0f}", "s")
    row("site size", f"{total / 1e6:.2f}", "MB (target <= 25 at full)")
    row("scrub input -> painted frame, p90 over all", f"{percentile(all_lat, 0.9):.1f}", "ms (target <= 33)")
    row("page open -> first figure, worst page",
        f"{max(r['first_figure_ms'] for r in results.values()):.0f}", "ms (target <= 1500)")
    emit({"benchmark": "static_site", "lecture_fast": not args.full, "cpus": os.cpu_count(),
          "cache": cache, "build_s": round(build_s or build["seconds"], 1), "total_bytes": total,
          "plotly_js_bytes": sizes.get("plotly.min.js"),
          "scrub_p90_ms": round(percentile(all_lat, 0.9), 1), "scrub_p50_ms": round(percentile(all_lat, 0.5), 1),
          "first_figure_ms_max": max(r["first_figure_ms"] for r in results.values()), "pages": results})


if __name__ == "__main__":
    main()
