"""What a kernel-driven redraw costs in the page: plotly's whole-figure update against ``redrawChanged``, paired.

A new result or a streamed partial reaches a figure as one ``_py2js_update`` per figure, which plotly's view
draws with ``Plotly.update`` of the whole figure; in a page with lecture panels the view now draws it with
``scrub.js``'s ``redrawChanged`` where only trace data and layout values changed (``voila_app/figure_widget.py``,
``drawChanged``). This benchmark moves the first slider of every panel four times, each to a value not computed
before (so the kernel computes, and heavy panels stream), in the order plotly, changed, changed, plotly: the two
ways alternate on the same panel, page and kernel, so the machine's drift cancels. For plotly's way the page's
``window.lectureRedrawChanged`` is removed for that move (the view then falls back to ``Plotly.update``).

Per move, in the page: ``first_ms``, key press -> the task after the frame painted after the panel's state
element first shows the request (a streamed partial, or the final result; a ``MutationObserver``), and
``update_ms``, the script time of the figure views' ``do_update`` calls up to then (wrapped, ``performance.now``),
and the wall-clock times of the press, the first figure update, the state element's change and the paint
(``*_unix_ms``), which ``kernel_trace.py report --draw`` lines up with the kernel's request and send.
Per panel, the mean of each way; over panels, the paired difference plotly - changed with a 95% t interval.
Starts the app (full settings unless ``--fast``) on the notebooks; the result cache (``LECTURE_CACHE_DIR``)
should hold the defaults only (``./lecture warm`` into a fresh folder), so that every move computes. Last line:
a JSON object. Usage: ``.venv/bin/python benchmarks/kernel_draw.py [--only 02_ics_eigenvalues ...] [--wait 8]
[--fast] [--panels 2 ...] [--repeat 3]`` (docs/performance.md, "Kernel-driven redraws draw what changed").
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import emit, opened_dashboard, panel_title, served_dashboards  # noqa: E402
from dashboard_latency import GENERATION_JS, SETTLED_JS, SLIDER, slider_state  # noqa: E402

ORDER = ("plotly", "changed", "changed", "plotly")

# Once per page: time every do_update of the figure views; keep the page's redrawChanged to switch it per move.
INSTRUMENT_JS = """async () => {
  const m = await window.lectureFigureBundles[false];
  const proto = m.FigureView.prototype, original = proto.do_update;
  window.__kd = { updates: [], keep: window.lectureRedrawChanged };
  proto.do_update = function () {
    const t0 = performance.now();
    try { return original.call(this); } finally { window.__kd.updates.push([t0, performance.now() - t0]); }
  };
  return typeof window.__kd.keep === 'function';
}"""

# Before one move: the way, and a watch of the panel's state element (key press -> first frame of the request).
ARM_JS = """([panel, way, generation]) => {
  const kd = window.__kd;
  window.lectureRedrawChanged = way === 'changed' ? kd.keep : undefined;
  kd.pressed = null; kd.shown = null; kd.updates = [];
  panel.addEventListener('keydown', () => { if (kd.pressed === null) kd.pressed = performance.now(); },
                         { capture: true, once: true });
  const box = panel.querySelector('.lecture-state');
  const observer = new MutationObserver(() => {
    const s = box.querySelector('span');
    if (!s || kd.shown !== null) return;
    if (+s.dataset.partialGeneration > generation || +s.dataset.generation > generation) {
      kd.shown = performance.now(); observer.disconnect();
      requestAnimationFrame(() => setTimeout(() => { kd.painted = performance.now(); }, 0));
    }
  });
  kd.painted = null;
  observer.observe(box, { subtree: true, childList: true, attributes: true, characterData: true });
}"""
READ_JS = """() => { const kd = window.__kd;
  if (kd.painted === null || kd.pressed === null) return null;
  const upto = kd.updates.filter(([t]) => t <= kd.shown);
  return { first_ms: kd.painted - kd.pressed, update_ms: upto.reduce((s, [, ms]) => s + ms, 0), updates: upto.length,
           pressed_unix_ms: performance.timeOrigin + kd.pressed, painted_unix_ms: performance.timeOrigin + kd.painted,
           first_update_unix_ms: upto.length ? performance.timeOrigin + upto[0][0] : null,
           shown_unix_ms: performance.timeOrigin + kd.shown };
}"""


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval of paired differences."""
    from scipy import stats       # scipy comes with scikit-learn (the test extras)
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def measure(browser, url: str, wait: float, only: list[int] | None = None, repeat: int = 1) -> list[dict]:
    """One dashboard: the four moves of every panel with a slider (``ORDER``, ``repeat`` times; ``only``: those
    panels, counted from 1 among the panels with a slider), each timed in the page."""
    order = ORDER * repeat
    with opened_dashboard(browser, url, wait) as page:
        if not page.evaluate(INSTRUMENT_JS):
            raise SystemExit(f"{url}: no window.lectureRedrawChanged (no panel module evaluated scrub.js)")
        rows = []
        panels = page.locator(".lecture-panel").filter(has=page.locator(SLIDER))
        for i in range(panels.count()):
            if only and i + 1 not in only:
                continue
            panel = panels.nth(i)
            title = panel_title(panel, i)[:50]
            handle = panel.locator(SLIDER).first
            handle.scroll_into_view_if_needed()
            now, low, high = slider_state(handle)
            key = "ArrowRight" if high - now >= now - low else "ArrowLeft"     # the side with more room
            moves = []
            for way in order:                     # each press a value this page has not drawn: computed
                value, generation = slider_state(handle)[0], panel.evaluate(GENERATION_JS)
                page.evaluate(ARM_JS, [panel.element_handle(), way, generation])
                handle.focus()
                page.keyboard.press(key)
                if slider_state(handle)[0] == value:                          # the end of the slider
                    break
                page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), generation], timeout=600_000)
                page.wait_for_function("() => window.__kd.painted !== null", timeout=30_000)
                moves.append({"way": way, **page.evaluate(READ_JS)})
                page.wait_for_timeout(300)
            if len(moves) < len(order):
                print(f"    {title:<50s} skipped: fewer than {len(order)} positions on one side", flush=True)
                continue
            by = {w: [m for m in moves if m["way"] == w] for w in ("plotly", "changed")}
            row = {"panel": title, "moves": moves,
                   **{f"{w}_first_ms": statistics.fmean(m["first_ms"] for m in ms) for w, ms in by.items()},
                   **{f"{w}_update_ms": statistics.fmean(m["update_ms"] for m in ms) for w, ms in by.items()},
                   "changed_first_ms_median": statistics.median(m["first_ms"] for m in by["changed"]),
                   "changed_within_150_ms": sum(m["first_ms"] <= 150 for m in by["changed"])}
            rows.append(row)
            print(f"    {title:<50s} first frame plotly {row['plotly_first_ms']:6.1f} ms, changed "
                  f"{row['changed_first_ms']:6.1f} ms; figure updates plotly {row['plotly_update_ms']:5.1f} ms, "
                  f"changed {row['changed_update_ms']:5.1f} ms; changed: median {row['changed_first_ms_median']:.1f} ms, "
                  f"{row['changed_within_150_ms']} of {len(by['changed'])} within 150 ms", flush=True)
        page.evaluate("() => { window.lectureRedrawChanged = window.__kd.keep; }")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="notebook stems (default: all)")
    parser.add_argument("--wait", type=float, default=8.0, help="seconds after the first plot before the moves")
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST=1 (default: the full settings)")
    parser.add_argument("--panels", nargs="*", type=int, help="only these panels of each dashboard, counted from 1 "
                        "among those with a slider (a heavy panel's moves keep its kernel busy for the next panels)")
    parser.add_argument("--repeat", type=int, default=1, help="the four moves (plotly, changed, changed, plotly) "
                        "this many times per panel, each to a value not computed before (a panel needs 4 x repeat "
                        "positions on one side of its default)")
    args = parser.parse_args(argv)
    results: dict[str, list] = {}
    for browser, nb, url in served_dashboards(args.only, "kernel_draw_voila.log", args.fast):
        print(nb.stem, flush=True)
        results[nb.stem] = measure(browser, url, args.wait, args.panels, args.repeat)
    rows = [r for rs in results.values() for r in rs]
    summary = {}
    for what in ("first", "update"):
        mean, low, high = t_interval([r[f"plotly_{what}_ms"] - r[f"changed_{what}_ms"] for r in rows])
        summary[f"{what}_ms_saved"] = {"mean": round(mean, 1), "ci95": [round(low, 1), round(high, 1)]}
        summary[f"{what}_ms_median"] = {w: round(statistics.median(r[f"{w}_{what}_ms"] for r in rows), 1)
                                        for w in ("plotly", "changed")}
    print(f"{len(rows)} panels: first frame plotly - changed = {summary['first_ms_saved']['mean']} ms "
          f"(95% CI {summary['first_ms_saved']['ci95']}); figure updates' script "
          f"{summary['update_ms_saved']['mean']} ms less (95% CI {summary['update_ms_saved']['ci95']})")
    emit({"benchmark": "kernel_draw", "fast": args.fast, "cpus": os.cpu_count(), "panels": len(rows), "repeat": args.repeat,
          **summary, "dashboards": results})


if __name__ == "__main__":
    main()
