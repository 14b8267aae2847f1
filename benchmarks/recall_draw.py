"""What drawing a recalled result costs per figure: the old full ``Plotly.update`` against ``redrawChanged``.

Starts the app (``python -m voila_app``, full settings unless ``--fast``) serving the notebooks, opens each
dashboard in headless Chromium, waits ``--wait`` seconds after the first plot, and adds ``scrub.js`` to the
page as a classic script (``window.LectureScrub``, as the static site does). Then, for every figure of every
panel, it draws a second result on the figure's graph div, the figure's data with every numeric ``y`` scaled by
``--scale`` (as the page's Recall holds a result: per trace its name, visibility and ``figures.DATA_KEYS``), two
ways, ``--reps`` times each, alternating, the figure put back between draws:

- ``update``: what the Recall did before (issue 16, fourth session): one ``Plotly.update`` of every trace's
  attributes and the layout, marked ``_doNotReportToPy``: plotly's defaults, calc and plot of the whole figure;
- ``changed``: what it does now, ``scrub.js``'s ``redrawChanged``: calc of the changed traces alone, then their
  plot alone where their axes' ranges are fixed (``path: plot``), or one ``Plotly.relayout`` that autoranges
  those axes (``path: relayout``).

Each draw is timed from its call to the task after the next frame (``requestAnimationFrame``, then a task:
the paint included; a frame is 16.7 ms, so this is at least the wait for the next one) and, as ``call``, to the
return of the call (the script's own work, without the wait for a frame). After the last draw of each way, the
figure's axes' ranges, tick labels and the SVG paths
of its traces are compared (``same``). Per figure it prints the traces, the points, the path, the medians of
both ways and their ratio. Last line: a JSON object. Usage: ``.venv/bin/python benchmarks/recall_draw.py
[--only 05_weight_decay_equilibrium ...] [--reps 6] [--scale 1.3] [--wait 8] [--fast]`` (docs/performance.md,
"Cached moves: the recall draws what changed").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import emit, opened_dashboard, served_dashboards  # noqa: E402
from lecture_lib.viz.figures import DATA_KEYS  # noqa: E402
from voila_app.export import classic_scrub_script  # noqa: E402

# Per figure of panel `index`: both ways timed `reps` times each, alternating; the figure put back after each.
DRAW_JS = r"""
async ([index, scale, reps, keys]) => {
  const P = window.Plotly, S = window.LectureScrub;
  const painted = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const plain = (v) => (ArrayBuffer.isView(v) ? Array.from(v) : v);
  const numeric = (v) => Array.isArray(v) && v.length > 0 && typeof v[0] === "number";
  const shown = (gd) => JSON.stringify({
    ranges: Object.keys(gd._fullLayout).filter((k) => /^[xy]axis\d*$/.test(k)).map((k) => gd._fullLayout[k].range),
    ticks: [...gd.querySelectorAll(".xtick text, .ytick text")].map((t) => t.textContent).sort(),   // DOM order varies
    paths: [...gd.querySelectorAll(".scatterlayer path.js-line, .scatterlayer path.point")].map((p) => p.getAttribute("d")),
  });
  // the Recall's draw before this session: every trace's attributes and the layout in one marked Plotly.update
  const update = (gd, traces) => {
    const data = { _doNotReportToPy: true };
    traces.forEach((t, i) => { for (const [k, v] of Object.entries(t)) (data[k] || (data[k] = new Array(traces.length)))[i] = v; });
    return P.update(gd, data, {}, traces.map((_, i) => i));
  };
  const panel = document.querySelectorAll(".lecture-panel")[index];
  panel.scrollIntoView();
  await painted();
  const out = [];
  for (const gd of panel.querySelectorAll(".js-plotly-plot")) {
    if (!gd._fullLayout || !gd.data || !gd.data.length) continue;
    // what the Recall's entry holds of a trace (lecture_lib.viz.recall): name, visibility and figures.DATA_KEYS
    const a = gd.data.map((t) => {
      const entry = { name: t.name, visible: t.visible };
      for (const path of keys) {
        const v = path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), t);
        if (v !== undefined) entry[path] = plain(v);
      }
      return entry;
    });
    const changed = [];
    const b = a.map((t, i) => {
      if (t.visible === false || !numeric(t.y)) return t;
      changed.push(i);
      return { ...t, y: t.y.map((v) => v * scale) };
    });
    if (!changed.length) continue;
    let relayouts = 0, relayouted = false;       // the path redrawChanged took: a relayout event or none
    gd.on("plotly_relayout", () => relayouts++);
    const times = { update: [], changed: [] }, calls = { update: [], changed: [] }, after = {};
    let fell = false;
    for (let rep = 0; rep < reps; rep++) {
      for (const way of ["update", "changed"]) {
        await update(gd, a); await painted();
        const before = relayouts, t0 = performance.now();
        if (way === "update") await update(gd, b);
        else if (!S.redrawChanged(P, gd, b, {})) { fell = true; await update(gd, b); }
        calls[way].push(performance.now() - t0);
        await painted();
        if (way === "changed") relayouted = relayouts > before;      // emitted once plotly's relayout resolved
        times[way].push(performance.now() - t0);
        after[way] = shown(gd);
      }
    }
    await update(gd, a); await painted();
    out.push({ traces: a.length, changed: changed.length,
               points: changed.reduce((s, i) => s + a[i].y.length, 0),
               path: fell ? "update (fallback)" : relayouted ? "relayout" : "plot",
               update_ms: times.update, changed_ms: times.changed,
               update_call_ms: calls.update, changed_call_ms: calls.changed, same: after.update === after.changed });
  }
  return out;
}"""


def median(values):
    return round(statistics.median(values), 1)


def measure(browser, url: str, reps: int, scale: float, wait: float) -> list[dict]:
    """One dashboard: every figure of every panel, both ways (``DRAW_JS``)."""
    with opened_dashboard(browser, url, wait) as page:
        page.add_script_tag(content=classic_scrub_script())
        rows = []
        for index in range(page.evaluate("document.querySelectorAll('.lecture-panel').length")):
            for figure, r in enumerate(page.evaluate(DRAW_JS, [index, scale, reps, list(DATA_KEYS)])):
                rows.append({"panel": index, "figure": figure, **r,
                             **{f"{k}_median_ms": median(r[f"{k}_ms"])
                                for k in ("update", "changed", "update_call", "changed_call")}})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="notebook stems (default: all)")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--scale", type=float, default=1.3, help="factor on every numeric y: the second result")
    parser.add_argument("--wait", type=float, default=8.0, help="seconds after the first plot before the draws")
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST=1 (default: the full settings)")
    args = parser.parse_args(argv)
    results: dict[str, list] = {}
    for browser, nb, url in served_dashboards(args.only, "recall_draw_voila.log", args.fast):
        rows = results[nb.stem] = measure(browser, url, args.reps, args.scale, args.wait)
        for r in rows:
            print(f"{nb.stem[:2]} panel {r['panel']} figure {r['figure']}: {r['traces']:2d} traces"
                  f" ({r['changed']} changed, {r['points']:5d} points)  {r['path']:8s}"
                  f"  update {r['update_median_ms']:6.1f} ms  changed {r['changed_median_ms']:6.1f} ms"
                  f"  x{r['update_median_ms'] / max(r['changed_median_ms'], 0.1):4.1f}"
                  f"  (calls {r['update_call_median_ms']:5.1f} / {r['changed_call_median_ms']:5.1f} ms)"
                  f"  {'same drawing' if r['same'] else 'DIFFERENT drawing'}", flush=True)
    every = [r for rows in results.values() for r in rows]
    emit({"benchmark": "recall_draw", "fast": args.fast, "reps": args.reps, "scale": args.scale,
          "cpus": os.cpu_count(), "figures": len(every), "all_same": all(r["same"] for r in every),
          **{f"{k}_median_ms": median([r[f"{k}_median_ms"] for r in every]) if every else None
             for k in ("update", "changed", "update_call", "changed_call")},
          "dashboards": results})


if __name__ == "__main__":
    main()
