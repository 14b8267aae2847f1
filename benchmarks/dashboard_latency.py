"""Dashboard latency in a real browser: open -> first plot, and slider release -> redrawn plot.

Starts the app (``python -m voila_app --fast``, pre-heated kernels) on a free
loopback port, waits until every notebook's kernel pool is filled, then for each
dashboard in ``notebooks/``:

- ``open``: seconds from navigation to the first drawn plot trace (pre-heated kernel);
- 20 slider moves on the first panel that has a slider (keyboard, one step each):
  10 towards the slider's farther end (new values, computed) and 10 back (served from the panel's cache).
  A move is counted as *cached* when its value was shown before, *new* otherwise (``fresh_moves``,
  ``cached_moves``): a slider that starts near an end bounces off it. For each, seconds from the key press
  to the panel having drawn the new result with nothing pending (its hidden ``lecture-state`` element).
  Reports median and p90 over all 20, and the medians of new and cached moves;
  for the cached moves also ``cached_redraw_*_ms``: in the page, from the key press to the last redraw of the
  panel's plots (what a person sees; the harness's own polling is not in it): plotly's ``plotly_afterplot``, or,
  for a move the page recalls itself (:mod:`lecture_lib.viz.recall`, which may redraw without a replot), the
  frame after its ``lecture-recalled`` event has been painted;
- ``first_frame``: for each move to a new value, seconds (in the page) from the key press to the first
  redraw of one of the panel's plots (plotly's ``plotly_afterplot``); ``first_streamed_frame`` is its
  median over the moves whose result arrived in more than one redraw (a panel that streams partial
  runs), ``null`` when no move streamed;
- ``scrub``: on the first panel with a scrub slider (:mod:`lecture_lib.viz.scrub`), ``--moves`` steps
  on it (bouncing between its ends); for each, milliseconds (measured in the page) from the input event to the frame after the
  redraw has been painted (an animation frame, then a task). Median and p90, twice:
  ``scrub_at_open_*`` right after the first plot, while the page draws its other figures and, on this one machine,
  the server's pool refills (a kernel runs the notebook on the same 2 cores as the browser); and ``scrub_*`` after the
  slider moves, once every pool kernel has executed its notebook and ``--scrub-settle`` seconds passed: the browser's own cost, which is
  what a lecture hall sees (its browsers do not share the server's cores). A scrub step needs no kernel.

- ``--every-panel`` (what ``stream_latency.py`` measured before it was folded in here): after those, once
  the dashboard's kernel pool has started its refill and ``--settle`` seconds passed (no notebook execution
  competing), one arrow key on the first slider of *every* panel that has one: ``first_ms``, key press -> the
  first frame showing the new request (``streamed``: a partial result, read from the panel state element's
  ``data-partial-generation``; else the final one) and ``final_s``, key press -> the final result drawn.
  Per dashboard under ``panels``; per setting ``every_panel_first_streamed_median_ms``/``_max_ms``.

And the naive floor, in the same run: a minimal notebook (written to a temporary folder) with one
``FigureWidget`` (1 trace, 1000 points, the class the app's panels use) whose ``y`` the kernel sets on
each slider release: what plotly + ipywidgets + the websocket cost with no work at all, timed from
the key press to the plot's redraw (``plotly_afterplot``).

Only the notebooks measured are served (copied to a temporary folder with the floor notebook), so
the machine does not pre-heat the others. Prints one line per dashboard and, last, a JSON object.
Usage: ``.venv/bin/python benchmarks/dashboard_latency.py [--settings fast full] [--moves 20]
[--only 05_weight_decay_equilibrium 01_adaptive_methods] [--profile benchmarks/out/profiles] [--every-panel
[--settle 30]]``
(``--profile``: Chrome CPU profiles of the scrub steps and the cached moves, see :class:`CpuProfile`) (``full``: the notebooks' full settings, as in
class; ``fast``: LECTURE_FAST=1; ``--full`` is ``--settings full``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import panel_title  # noqa: E402
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
  input.focus();
  const i = +input.value, n = +input.max;
  const t0 = performance.now();
  input.value = key === 'ArrowRight' ? Math.min(i + 1, n) : Math.max(i - 1, 0);
  input.dispatchEvent(new Event('input', {bubbles: true}));
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));     // painted
  const changed = gd.data.some((t, k) => t.y !== before[k]);
  return {ms: performance.now() - t0, changed};
}"""

# In the page: note the key press and every redraw of the panel's plots (first one, and how many), so that
# the time to the first (possibly partial, streamed) frame is known after the move settles.
WATCH_REDRAWS_JS = """(panel) => {
  const w = {pressed: null, redraws: []};
  window.__lectureWatch = w;
  panel.addEventListener('keydown', () => { if (w.pressed === null) w.pressed = performance.now(); }, {capture: true, once: true});
  // the page's recall (lecture_lib.viz.recall) draws a move back itself, partly without a replot: timed to the frame
  // after it has been painted
  if (!panel.__lectureRecallWatched) { panel.__lectureRecallWatched = true;
    panel.addEventListener('lecture-recalled', () => requestAnimationFrame(() => setTimeout(() => {
      const v = window.__lectureWatch; if (v.pressed !== null) v.redraws.push(performance.now()); }, 0))); }
  for (const gd of panel.querySelectorAll('.js-plotly-plot')) {
    if (!gd.__lectureWatched && gd.on) { gd.__lectureWatched = true;
      gd.on('plotly_afterplot', () => { const v = window.__lectureWatch; if (v.pressed !== null) v.redraws.push(performance.now()); }); }
  }
}"""
REDRAWS_JS = """() => { const w = window.__lectureWatch, n = w.redraws.length;
  return {first: n ? (w.redraws[0] - w.pressed) / 1000 : null, last: n ? (w.redraws[n - 1] - w.pressed) / 1000 : null, count: n}; }"""

FLOOR_NAME = "00_floor.ipynb"
FLOOR_SOURCE = """import numpy as np
import ipywidgets as widgets
from lecture_lib.viz.live_figures import figure_widget_class

x = np.linspace(0.0, 10.0, 1000)
fig = figure_widget_class()(data=[dict(type="scatter", x=x, y=np.sin(x), mode="lines", name="sin")])
fig.add_class("lecture-floor")
slider = widgets.IntSlider(value=0, min=0, max=50, description="shift", continuous_update=False)

def redraw(change):
    with fig.batch_update():
        fig.data[0].y = np.sin(x + 0.1 * change["new"])

slider.observe(redraw, names="value")
widgets.VBox([slider, fig])"""
FLOOR_ARM_JS = """() => {
  const w = window.__floor = {pressed: null, drawn: null};
  document.addEventListener('keydown', () => { if (w.pressed === null) w.pressed = performance.now(); }, {capture: true, once: true});
  document.querySelector('.js-plotly-plot').once('plotly_afterplot', () => { w.drawn = performance.now(); });
}"""


def write_floor(folder: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FLOOR_SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / FLOOR_NAME)


def measure_floor(browser, url: str, moves: int) -> dict:
    """Slider release -> redrawn plot (ms, in the page) of the floor notebook: plotly + ipywidgets, no work."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit", timeout=300_000)
        page.wait_for_function("(sel) => Array.from(document.querySelectorAll(sel))"
                               ".some(p => (p.getAttribute('d') || '').length > 8)",
                               arg=".js-plotly-plot .scatterlayer .trace path", timeout=300_000)
        handle = page.locator(".noUi-handle").first
        page.wait_for_timeout(500)
        times = []
        for i in range(moves):
            page.evaluate(FLOOR_ARM_JS)
            handle.focus()
            page.keyboard.press("ArrowRight" if i < moves // 2 else "ArrowLeft")
            page.wait_for_function("() => window.__floor.drawn !== null", timeout=60_000)
            times.append(page.evaluate("() => window.__floor.drawn - window.__floor.pressed"))
        return {"floor_median_ms": round(statistics.median(times), 1), "floor_p90_ms": round(percentile(times, 0.9), 1),
                "floor_moves": moves}
    finally:
        context.close()


class CpuProfile:
    """``--profile DIR``: Chrome's sampling CPU profiler (DevTools protocol) around a block of moves; writes
    ``DIR/<name>.cpuprofile`` (open it in Chrome DevTools' Performance panel) and prints the functions with
    the most time, inclusive, per move. ``(program)`` is the browser's own work: style, layout, paint."""

    def __init__(self, page, folder: Path | None):
        self.page, self.folder, self.cdp = page, folder, None

    def start(self) -> None:
        if self.folder is None:
            return
        self.cdp = self.page.context.new_cdp_session(self.page)
        self.cdp.send("Profiler.enable")
        self.cdp.send("Profiler.setSamplingInterval", {"interval": 200})
        self.cdp.send("Profiler.start")

    def stop(self, name: str, moves: int, top: int = 25) -> None:
        if self.cdp is None:
            return
        profile = self.cdp.send("Profiler.stop")["profile"]
        self.cdp.detach()
        self.cdp = None
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.cpuprofile").write_text(json.dumps(profile))
        nodes = {n["id"]: n for n in profile["nodes"]}
        parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}
        inclusive: dict[str, float] = {}
        for sample, dt in zip(profile["samples"], profile["timeDeltas"]):
            seen, node = set(), sample
            while node is not None:
                frame = nodes[node]["callFrame"]
                key = f"{frame['functionName'] or '(anonymous)'} {frame['url'].rsplit('/', 1)[-1][:24]}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0.0) + dt / 1000 / max(moves, 1)
                node = parent.get(node)
        print(f"  profile {name}: ms per move, inclusive (written to {self.folder / name}.cpuprofile)")
        for key, ms in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {ms:8.1f}  {key}")


def measure_scrub(page, moves: int, profile: Path | None = None, name: str = "") -> dict | None:
    """Scrub-step latencies (ms, in the page) on the first panel with a scrub slider; None if there is none."""
    panel = page.locator(".lecture-panel").filter(has=page.locator(".lecture-scrub input")).first
    if panel.count() == 0:
        return None
    page.wait_for_function("(p) => (p.querySelector('.lecture-scrub') || {dataset: {}}).dataset.ready === '1'",
                           arg=panel.element_handle(), timeout=120_000)
    panel.scroll_into_view_if_needed()
    times, unchanged, key = [], 0, "ArrowRight"
    profiler = CpuProfile(page, profile)
    profiler.start()
    for _ in range(moves):
        at, last = panel.evaluate("(p) => { const s = p.querySelector('.lecture-scrub input'); return [+s.value, +s.max]; }")
        key = "ArrowLeft" if at >= last else "ArrowRight" if at <= 0 else key     # bounce between the ends
        r = panel.evaluate(SCRUB_STEP_JS, key)
        unchanged += not r["changed"]
        if r["changed"]:
            times.append(r["ms"])
    profiler.stop(f"{name}_scrub", moves)
    return {"scrub_median_ms": round(statistics.median(times), 1), "scrub_p90_ms": round(percentile(times, 0.9), 1),
            "scrub_moves": moves, "scrub_unchanged": unchanged}


# --every-panel: one move per panel with a slider; the first frame showing the new request is a partial result
# (the state element's data-partial-generation passes the generation drawn before the press) or, for a
# computation that does not stream (light, or cached), the final one (data-generation passes it).
FIRST_FRAME_JS = """([panel, g]) => { const s = panel.querySelector('.lecture-state span');
    if (!s) return false;
    if (+s.dataset.partialGeneration > g) return 'partial';
    return +s.dataset.generation > g ? 'final' : false; }"""
SLIDER = ".lecture-control .noUi-handle"


def measure_every_panel(page, timeout_ms: int = 300_000) -> list[dict]:
    """On every panel with a slider, one arrow key on its first slider: ``first_ms`` (key press -> the first
    frame of the new request, ``streamed`` if that was a partial result) and ``final_s`` (-> the final result
    drawn, nothing pending). Both polled by Playwright on animation frames (each includes the frame showing it)."""
    rows = []
    panels = page.locator(".lecture-panel").filter(has=page.locator(SLIDER))
    for i in range(panels.count()):
        panel = panels.nth(i)
        title = panel_title(panel, i)
        handle = panel.locator(SLIDER).first
        handle.scroll_into_view_if_needed()
        now, _, high = slider_state(handle)
        before = panel.evaluate(GENERATION_JS)
        handle.focus()
        t0 = time.perf_counter()
        page.keyboard.press("ArrowLeft" if now >= high else "ArrowRight")
        kind = page.wait_for_function(FIRST_FRAME_JS, arg=[panel.element_handle(), before],
                                      timeout=timeout_ms).json_value()
        first = time.perf_counter() - t0
        page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), before], timeout=timeout_ms)
        final = time.perf_counter() - t0
        rows.append({"panel": title[:60], "first_ms": round(1000 * first, 1), "streamed": kind == "partial",
                     "final_s": round(final, 3)})
        print(f"    {title[:58]:<58s} first frame {1000 * first:7.0f} ms ({kind:7s})  final {final:6.2f} s",
              flush=True)
    return rows


def wait_refilled(app, name: str, fills: int, settle: float, timeout: float = 300.0) -> None:
    """Wait until the pool of ``name`` has started its next kernel (the page took the last one), then ``settle``
    seconds more while that kernel runs the notebook, so that no notebook execution competes with the moves."""
    deadline = time.monotonic() + timeout
    while app.log(tail=None).count(f"Kernel pool of {name} is filled") <= fills and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(settle)


def wait_executed(app, settle: float, timeout: float = 300.0) -> None:
    """Wait until every pool kernel that began executing its notebook has executed it (voila_app.pool logs
    both), then ``settle`` seconds more: no notebook execution competes with the browser for the machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = app.log(tail=None)
        started = len(re.findall(r"for \S+ executing its notebook", log))
        if log.count("finished executing its notebook") >= started:
            break
        time.sleep(0.5)
    time.sleep(settle)


def measure_dashboard(browser, url: str, moves: int, profile: Path | None = None, name: str = "",
                      every_panel: bool = False, quiet=None) -> dict:
    """Open ``url`` and measure it (see the module's docstring). ``quiet()`` waits until no notebook execution
    competes, before the second scrub and (``every_panel``) the moves on every panel."""
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
        at_open = measure_scrub(page, moves, profile, f"{name}_at_open") or {}
        profiler = CpuProfile(page, profile)
        times, fresh, cached, first, streamed, cached_in_page = [], [], [], [], [], []
        half = moves // 2
        now, low, high = slider_state(handle)
        # the first half moves towards the slider's farther end (new values), the second half comes back over
        # them (cached); a move counts as cached when its value was shown before (a slider that starts near one
        # end bounces off it, and a move back past the start is a new value)
        away, back = ("ArrowRight", "ArrowLeft") if high - now >= now - low else ("ArrowLeft", "ArrowRight")
        seen = {now}
        for i in range(moves):
            now, low, high = slider_state(handle)
            if i == half:
                profiler.start()                   # the moves back
            key = away if i < half else back
            if (key == "ArrowRight" and now >= high) or (key == "ArrowLeft" and now <= low):
                key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
            before = panel.evaluate(GENERATION_JS)
            panel.evaluate(WATCH_REDRAWS_JS)
            handle.focus()
            t0 = time.perf_counter()
            page.keyboard.press(key)
            page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), before], timeout=120_000)
            dt = time.perf_counter() - t0
            times.append(dt)
            value = slider_state(handle)[0]
            known = value in seen
            seen.add(value)
            (cached if known else fresh).append(dt)
            redraws = page.evaluate(REDRAWS_JS)
            if known and redraws["last"] is not None:
                cached_in_page.append(redraws["last"] * 1000)
            if not known and redraws["first"] is not None:
                first.append(redraws["first"])
                if redraws["count"] > len(panel.locator(".js-plotly-plot").all()):   # more redraws than plots
                    streamed.append(redraws["first"])
        profiler.stop(f"{name}_cached", moves - half)
        if quiet is not None and (at_open or every_panel):
            quiet()                                # no notebook execution competes with the browser
        scrub = {}
        if at_open:
            scrub = {**{k.replace("scrub_", "scrub_at_open_"): v for k, v in at_open.items() if k != "scrub_moves"},
                     **measure_scrub(page, moves, profile, name)}
        panels = None
        if every_panel:
            panels = measure_every_panel(page)
        return {**({"panels": panels} if panels is not None else {}), "open_s": round(open_s, 3), "median_s": round(statistics.median(times), 3),
                "p90_s": round(percentile(times, 0.9), 3),
                "fresh_median_s": round(statistics.median(fresh), 3) if fresh else None,
                "fresh_moves": len(fresh), "cached_moves": len(cached),
                "cached_median_s": round(statistics.median(cached), 3) if cached else None,
                "cached_p90_s": round(percentile(cached, 0.9), 3) if cached else None,
                # in the page: key press -> the last redraw of the panel's plots (no harness polling in it)
                "cached_redraw_median_ms": round(statistics.median(cached_in_page), 1) if cached_in_page else None,
                "cached_redraw_p90_ms": round(percentile(cached_in_page, 0.9), 1) if cached_in_page else None,
                "first_frame_median_s": round(statistics.median(first), 3) if first else None,
                "first_streamed_frame_median_s": round(statistics.median(streamed), 3) if streamed else None,
                "streamed_moves": len(streamed), "moves": len(times), **scrub}
    finally:
        context.close()


def run_setting(p, notebooks: list[Path], fast: bool, moves: int, profile: Path | None = None,
                settle: float | None = None, scrub_settle: float = 2.0) -> dict:
    """Serve ``notebooks`` and the floor notebook from a temporary folder; measure each, then the floor."""
    results, cold = {}, {"open_s": None}
    label = "fast" if fast else "full"
    log = REPO / "benchmarks" / "out" / f"dashboard_latency_voila_{label}.log"
    with tempfile.TemporaryDirectory(prefix="lecture-latency-") as tmp:
        folder = Path(tmp)
        for nb in notebooks:
            shutil.copy(nb, folder / nb.name)
        write_floor(folder)
        names = [nb.name for nb in notebooks] + [FLOOR_NAME]
        with running_app(folder, log, fast=fast) as app:
            preheated = app.wait_preheated(names, timeout=900)
            print(f"[{label}] app at {app.url}; kernel pools filled: {preheated}", flush=True)
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                # the very first dashboard after start-up pays one-time costs (server templates,
                # Chromium compiling Voila's JavaScript): measured apart, then the pool refills
                cold = measure_dashboard(browser, f"{app.url}/voila/render/{notebooks[0].name}", 0)
                print(f"[{label}] cold start: first dashboard drawn after {cold['open_s']:.2f} s", flush=True)
                time.sleep(2)
                floor = measure_floor(browser, f"{app.url}/voila/render/{FLOOR_NAME}", moves)
                print(f"[{label}] naive FigureWidget floor: median {floor['floor_median_ms']:.0f} ms"
                      f"  p90 {floor['floor_p90_ms']:.0f} ms", flush=True)
                for nb in notebooks:
                    app.wait_preheated([nb.name], timeout=300)
                    fills = app.log(tail=None).count(f"Kernel pool of {nb.name} is filled")
                    if settle is None:          # the second scrub: once no notebook executes
                        quiet = lambda: wait_executed(app, scrub_settle)   # noqa: E731
                    else:                       # and --every-panel's moves: the pool refilled, `settle` later
                        quiet = lambda nb=nb, fills=fills: (wait_refilled(app, nb.name, fills, settle),  # noqa: E731
                                                            wait_executed(app, scrub_settle))
                    r = measure_dashboard(browser, f"{app.url}/voila/render/{nb.name}", moves,
                                          profile, f"{nb.stem}_{label}", quiet=quiet,
                                          every_panel=settle is not None)
                    results[nb.stem] = r
                    if "error" in r:
                        print(f"[{label}] {nb.stem:32s} open {r['open_s']:6.2f} s   {r['error']}", flush=True)
                        continue
                    ff = r["first_streamed_frame_median_s"]
                    print(f"[{label}] {nb.stem:32s} open {r['open_s']:6.2f} s   slider->plot median {r['median_s']:.2f} s"
                          f"  p90 {r['p90_s']:.2f} s  (new values {r['fresh_median_s']} s ({r['fresh_moves']} moves),"
                          f" cached {r['cached_median_s']} s p90 {r['cached_p90_s']} s ({r['cached_moves']} moves), in the page"
                          f" {r['cached_redraw_median_ms']} ms p90 {r['cached_redraw_p90_ms']} ms,"
                          f" first streamed frame {'-' if ff is None else f'{ff:.2f} s'})"
                          + (f"  scrub median {r['scrub_median_ms']:.0f} ms p90 {r['scrub_p90_ms']:.0f} ms"
                             f" (at open: median {r['scrub_at_open_median_ms']:.0f} ms p90"
                             f" {r['scrub_at_open_p90_ms']:.0f} ms)" if "scrub_median_ms" in r else ""), flush=True)
            finally:
                browser.close()
    streamed = [row["first_ms"] for r in results.values() for row in r.get("panels") or [] if row["streamed"]]
    every = {} if settle is None else {
        "every_panel_first_streamed_median_ms": round(statistics.median(streamed), 1) if streamed else None,
        "every_panel_first_streamed_max_ms": max(streamed) if streamed else None}
    return {"lecture_fast": fast, "cold_first_open_s": cold["open_s"], **floor, **every, "dashboards": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--settings", nargs="+", choices=["fast", "full"], default=["fast", "full"],
                        help="fast: LECTURE_FAST=1; full: the notebooks' classroom settings (default: both)")
    parser.add_argument("--full", action="store_true", help="the same as --settings full")
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems to measure (default: all)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for Chrome CPU profiles of the scrub steps and cached moves (slows them)")
    parser.add_argument("--every-panel", action="store_true",
                        help="also one move on every panel with a slider: first frame (streamed or final) and final")
    parser.add_argument("--settle", type=float, default=None,
                        help="with --every-panel: seconds to wait after the pool's refill started before those "
                             "moves (default 30 with full settings, 5 fast)")
    parser.add_argument("--scrub-settle", type=float, default=2.0,
                        help="seconds to wait, once every pool kernel has executed its notebook, before the second scrub (default 2)")
    args = parser.parse_args(argv)
    settings = ["full"] if args.full else args.settings
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if p.stem in args.only]
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        for setting in settings:
            settle = None if not args.every_panel else (
                args.settle if args.settle is not None else 5.0 if setting == "fast" else 30.0)
            out[setting] = run_setting(p, notebooks, fast=(setting == "fast"), moves=args.moves, profile=args.profile,
                                       settle=settle, scrub_settle=args.scrub_settle)
    print(json.dumps({"benchmark": "dashboard_latency", "cpus": os.cpu_count(), "moves": args.moves,
                      "settings": out}))


if __name__ == "__main__":
    main()
