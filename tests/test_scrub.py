"""Scrubbing a batched family (lecture_lib.viz.scrub): in the kernel (frames, coherency, URL state), and in
the browser on the fixture tests/fixtures/scrub_demo.ipynb.

The fixture draws y = a·x + b for five slopes a computed at once; the scrub slider (a range input)
switches a in the page, the b slider recomputes the family in the kernel.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from browser_helpers import close_context, REDRAW_TIMEOUT_MS, open_page, wait_for_dashboard
from lecture_lib.viz import equilibrium_panels, figures, panels, scrub
from lecture_lib.viz.live_figures import LiveFigures

SLOPES = (0.5, 1.0, 2.0, 3.0, 4.0)
X = np.linspace(0.0, 1.0, 50)
PLOTTED_Y_JS = "(panel) => Array.from(panel.querySelector('.js-plotly-plot').data[0].y)"
READY_JS = "(panel) => { const s = panel.querySelector('.lecture-scrub'); return s && s.dataset.ready === '1'; }"
INDEX_IS_JS = "([panel, i]) => +panel.querySelector('.lecture-scrub').dataset.index === i"
LINK_JS = "(panel) => panel.querySelector('.lecture-state span').dataset.link"
# wraps Plotly.animate: window.__animated lists the class of every x and y array handed to it
RECORD_ANIMATE_JS = """() => { const animate = window.Plotly.animate; window.__animated = [];
    window.Plotly.animate = function (gd, frame, ...rest) {
      for (const d of (frame && frame.data) || []) window.__animated.push(d.x.constructor.name, d.y.constructor.name);
      return animate.call(this, gd, frame, ...rest); }; }"""
# restyle trace 0 of the panel's plot in the page, not reported to the figure's kernel
PAGE_RESTYLE_JS = """(p, update) => window.Plotly.restyle(p.querySelector('.js-plotly-plot'),
                                                            {...update, _doNotReportToPy: true}, [0])"""
# the line's SVG path as the scrub drew it, then as Plotly.redraw (a full replot of the div's data) draws it
REPLOT_DRAWS_THE_SAME_JS = """async (panel) => {
    const gd = panel.querySelector('.js-plotly-plot'), line = () => gd.querySelector('.scatterlayer .trace path.js-line');
    const drawn = line().getAttribute('d');
    await window.Plotly.redraw(gd);
    return [drawn, line().getAttribute('d')]; }"""
Y_IS_JS = """([panel, y]) => { const d = panel.querySelector('.js-plotly-plot').data[0].y;
    return d.length === y.length && Array.from(d).every((v, i) => Math.abs(v - y[i]) < 1e-9); }"""


def test_scrub_slider_switches_positions_in_the_page(chromium, voila_fixture_app):
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/scrub_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        page.wait_for_function(READY_JS, arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        assert "trained together" in panel.inner_text()
        assert np.allclose(panel.evaluate(PLOTTED_Y_JS), SLOPES[1] * X)
        page.evaluate(RECORD_ANIMATE_JS)
        scrubber = panel.locator(".lecture-scrub input[type=range]")
        scrubber.focus()
        for _ in range(2):
            page.keyboard.press("ArrowRight")                 # a person's keyboard: 1.0 -> 2.0 -> 3.0
        page.wait_for_function(INDEX_IS_JS, arg=[panel.element_handle(), 3], timeout=5_000)
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[3] * X)], timeout=5_000)
        assert panel.locator(".lecture-scrub-value").inner_text() == "3"
        # the line's traces were redrawn alone (scrub.js redrawTraces), without Plotly.animate's supplyDefaults of
        # the whole figure, from plain Arrays (plotly walks every index of a typed array, ~1 µs a point) ...
        assert page.evaluate("() => window.__animated") == []
        assert panel.evaluate("(p) => p.querySelector('.js-plotly-plot').data[0].y.constructor.name") == "Array"
        # ... and drew what plotly's full replot of the same data draws
        drawn, replotted = panel.evaluate(REPLOT_DRAWS_THE_SAME_JS)
        assert "L" in drawn and drawn == replotted
        # a trace the quick redraw does not handle (a fill depends on its neighbour) goes through Plotly.animate.
        # The fill is set in the page alone (_doNotReportToPy, as plotly's view marks the kernel's own restyles): a
        # restyle reported to the kernel comes back from it as _py2js_restyle, which plotly's view applies again
        # (it does not skip its own), so a late echo of 'tozeroy' could land after the 'none' below
        panel.evaluate(PAGE_RESTYLE_JS, {"fill": "tozeroy"})
        page.keyboard.press("ArrowLeft")                      # 3.0 -> 2.0
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[2] * X)], timeout=5_000)
        assert page.evaluate("() => window.__animated") == ["Array"] * 2
        panel.evaluate(PAGE_RESTYLE_JS, {"fill": "none"})
        scrubber.focus()
        page.keyboard.press("ArrowRight")                     # back to 3.0, redrawn alone again
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[3] * X)], timeout=5_000)
        assert page.evaluate("() => window.__animated") == ["Array"] * 2
        drawn, replotted = panel.evaluate(REPLOT_DRAWS_THE_SAME_JS)
        assert "L" in drawn and drawn == replotted
        # the axes are fixed to the whole family (every slope's line fits) while the data move
        y_range = panel.evaluate("(p) => p.querySelector('.js-plotly-plot').layout.yaxis.range")
        assert y_range[0] <= 0.0 and y_range[1] >= SLOPES[-1] * X[-1]
        panel.locator(".lecture-notes", has_text="slope 3").wait_for(timeout=REDRAW_TIMEOUT_MS)
        # the kernel publishes the position for the address bar: a shared link reopens here
        page.wait_for_function("(p) => p.querySelector('.lecture-state span').dataset.link === 'p1.a=3'",
                               arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        # another control recomputes the whole family; the page keeps the scrubbed position
        handle = panel.locator(".lecture-control .noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")                     # b: 0 -> 0.25
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[3] * X + 0.25)],
                               timeout=REDRAW_TIMEOUT_MS)
        scrubber.focus()
        page.keyboard.press("Home")                           # a = 0.5, from the new family
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[0] * X + 0.25)], timeout=5_000)
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


Y_RANGE_JS = "(p) => p.querySelector('.js-plotly-plot').layout.yaxis.range"
TOP_AT_LEAST_JS = "([p, top]) => p.querySelector('.js-plotly-plot').layout.yaxis.range[1] >= top"
TOP_BELOW_JS = "([p, top]) => p.querySelector('.js-plotly-plot').layout.yaxis.range[1] < top"


def test_another_control_fits_the_axes_to_the_runs_the_new_family_draws(chromium, voila_fixture_app):
    """A control that changes which runs are drawn (04's growth panel: the toy model's run or the BN network's
    layers) computes a new family, and the axes fit the runs the new figure shows, not those the figure showed
    before (tests/fixtures/scrub_switch_demo.ipynb: one trace for the small model, another, 100 times larger,
    for the big one). The kernel's frames had come before its figure update, and the axes were fixed over the
    old figure's visible trace: the big model's lines ran off a 0-1 axis."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/scrub_switch_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        handle = panel.element_handle()
        page.wait_for_function(READY_JS, arg=handle, timeout=REDRAW_TIMEOUT_MS)
        small = panel.evaluate(Y_RANGE_JS)
        assert small[1] >= SLOPES[-1] and small[1] < 10              # the small family: lines up to y = 4
        panel.locator("select").first.select_option("big")
        page.wait_for_function("(p) => { const t = p.querySelector('.js-plotly-plot').data[1];"
                               " return t.visible !== false && t.y.length === 50 && Math.abs(t.y[49] - 100) < 1e-9; }",
                               arg=handle, timeout=REDRAW_TIMEOUT_MS)                      # big, a = 1 drawn
        page.wait_for_function(TOP_AT_LEAST_JS, arg=[handle, 100 * SLOPES[-1]], timeout=5_000)
        scrubber = panel.locator(".lecture-scrub input[type=range]")
        scrubber.focus()
        page.keyboard.press("End")                                   # a = 4: y up to 400, inside the axes
        page.wait_for_function(Y_IS_JS.replace("data[0]", "data[1]"), arg=[handle, list(100 * SLOPES[-1] * X)],
                               timeout=5_000)
        assert panel.evaluate(Y_RANGE_JS)[1] >= 100 * SLOPES[-1]
        panel.locator("select").first.select_option("small")         # drawn again (the page's recall or the kernel)
        page.wait_for_function(Y_IS_JS, arg=[handle, list(SLOPES[-1] * X)], timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(TOP_BELOW_JS, arg=[handle, 10], timeout=5_000)   # fitted to the small family again
        assert panel.evaluate(Y_RANGE_JS)[1] >= SLOPES[-1]
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_a_shared_link_reopens_at_the_scrubbed_position(chromium, voila_fixture_app):
    url = f"{voila_fixture_app.url}/voila/render/scrub_demo.ipynb?p1.a=4"
    context, page, watcher = open_page(chromium, url)
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        page.wait_for_function(READY_JS, arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[4] * X)], timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(INDEX_IS_JS, arg=[panel.element_handle(), 4], timeout=REDRAW_TIMEOUT_MS)
        panel.locator(".lecture-notes", has_text="slope 4").wait_for(timeout=REDRAW_TIMEOUT_MS)
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def lines(b, a):
    return [{"a": s, "y": s * X + b} for s in a]


def build(res):
    return figures.figure([go.Scatter(x=X, y=res["y"], mode="lines", name="a·x + b")], y_title="y")



def make_scrub_panel():
    return scrub.ScrubPanel(compute=lines, controls={"b": panels.slider("b", 0.0, 1.0, 0.0, step=0.25)},
                            build=build, scrub=scrub.Scrub("a", SLOPES, "a (slope)", index=1),
                            notes=lambda res: f"slope {res['a']:g}")


def test_frames_hold_every_position_and_the_kernel_follows_the_page_silently(page):
    panel = make_scrub_panel()
    frames = panel.scrubber.frames
    assert len(frames) == len(SLOPES) and all(f[0]["traces"] == [0] for f in frames)
    assert np.allclose(np.frombuffer(frames[3][0]["y"][0], dtype=np.float64), SLOPES[3] * X)
    sent = []                                                       # nothing may go to the page: it swapped already
    panel.figure.observe(sent.append, names=["_py2js_restyle", "_py2js_update", "_py2js_relayout"])
    layout = panel.figure._widget_layout
    panel.scrubber.index = 3                                        # what the page reports after a swap
    assert sent == []
    assert panel.figure._widget_layout is layout                    # data only: the layout is not copied again
    assert np.allclose(panel.figure.data[0].y, SLOPES[3] * X)      # the kernel's copy shows what the page shows
    assert np.allclose(panel.figure._widget_data[0]["y"], SLOPES[3] * X)   # and a page connecting later starts there
    assert "slope 3" in panel._notes.value and panel.link() == {"a": "3"}
    assert "data-link='p1.a=3'" in panel._state.value
    # another control recomputes the family; the figure is drawn at the scrubbed position
    panel.set(b=0.5)
    assert panel.wait(30)
    assert np.allclose(panel.figure.data[0].y, SLOPES[3] * X + 0.5)
    sent.clear()
    panel.scrub_to(0)       # a position set in the kernel (a link to a pre-heated kernel) also goes through the figure,
    assert sent != []       # for a page whose scrubber is not ready to swap it in yet
    assert np.allclose(panel.figure.data[0].y, SLOPES[0] * X + 0.5) and panel.link() == {"b": "0.5", "a": "0.5"}
    with pytest.raises(ValueError, match="index must be in 0..4"):
        panel.scrub_to(5)


def test_a_link_sets_the_scrub_position_and_reports_a_wrong_one(page):
    page.receive("p1.a=4")                          # the query known before the panel is built
    panel = make_scrub_panel()
    assert panel.index == 4 and np.allclose(panel.figure.data[0].y, SLOPES[4] * X)
    panel.attach_url_state({"a": "2", "b": "0.25"}, present=False)   # a link arriving later
    assert panel.wait(30)
    assert panel.index == 2 and np.allclose(panel.figure.data[0].y, SLOPES[2] * X + 0.25)
    panel.attach_url_state({"a": "7"}, present=False)
    assert panel.index == 2 and re.search(r"p1\.a=7: .*not one of the positions 0\.5, 1, 2, 3, 4",
                                          panel._link_note.value)


def test_scrub_js_is_the_widgets_module_and_documents_the_frames():
    source = scrub.SCRUB_JS.read_text()
    assert scrub.Scrubber._esm.startswith(source)
    for name in ("export function swap(Plotly, plotDivs, position, layouts = [])", "export function wire(input",
                 "{traces: [i, ...], x: [array, ...], y: [array, ...]}"):
        assert name in source


def test_frames_leave_out_a_trace_that_is_the_same_at_every_position(page):
    def build_with_reference(res):
        later = [go.Scatter(x=X, y=X + 1.0, mode="lines", name="not at the first")] if res["a"] != SLOPES[0] else []
        return figures.figure([go.Scatter(x=X, y=res["y"], mode="lines", name="a·x + b"),
                               go.Scatter(x=X, y=X, mode="lines", name="y = x"),
                               go.Scatter(x=[0.0, 1.0], y=[res["y"][0], 0.0], mode="lines", name="moves once")]
                              + later)

    family = lines(0.0, SLOPES)
    family[2] = {**family[2], "y": family[2]["y"] + 1.0}      # "moves once" differs at position 2 only
    live = LiveFigures.built(build_with_reference, family[1])
    frames = scrub.family_frames(live.widgets, [live.prepare(r) for r in family])
    assert frames[0][0]["traces"] == [0, 2] and all(position[0]["traces"] == [0, 2, 3] for position in frames[1:])
    assert np.allclose(np.frombuffer(frames[2][0]["y"][1], dtype=np.float64), [1.0, 0.0])
    assert np.allclose(np.frombuffer(frames[4][0]["y"][0], dtype=np.float64), SLOPES[4] * X)


def synthetic_ratio_family(decay: float, steps: int = 5000) -> SimpleNamespace:
    """What notebook 05's ratio figures read of a family (experiments.equilibrium.RatioFamily), at classroom length:
    noisy per-step ‖w‖², a smoothed ratio, a smooth map."""
    rng = np.random.default_rng(int(decay * 1e5))
    k = np.arange(steps, dtype=float)
    settle = 1.0 - np.exp(-k[:, None] * decay * np.array([1.0, 4.0, 4.0, 16.0]))
    noisy = settle * (1.0 + 0.1 * rng.standard_normal((steps, 4)))
    return SimpleNamespace(steps=k, ratio=np.cumsum(noisy, axis=0) / (1.0 + k[:, None]), ratio_pred=np.ones(4),
                           sq_norm_scaled=noisy, map_scaled=settle, relaxation=1.0 / (4 * decay) * np.ones(4),
                           record=SimpleNamespace(config={"steps": steps}))


def test_notebook_05_ratio_frames_carry_few_points():
    family = [synthetic_ratio_family(d) for d in equilibrium_panels.RATIO_DECAYS]
    live = LiveFigures.built(equilibrium_panels.ratio_figures, family[6])
    frames = scrub.family_frames(live.widgets, [live.prepare(r) for r in family])
    thinned = 2 * figures.THIN_BUCKETS + 2            # minmax thinning: a min and a max per bucket, the ends
    for position in frames:
        lengths = [len(a) for f in position for a in f["y"]]
        assert max(lengths) <= thinned and sum(lengths) <= 4 * thinned + 2 * 4 * 500 + 4 * 2 + 4, lengths
        for fw, f in zip(live.widgets, position):
            for i, y in zip(f["traces"], f["y"]):
                name = fw.data[i].name
                if name in equilibrium_panels.RUN_LABELS and fw is live.widgets[0] or name.startswith("mean-field"):
                    assert len(y) <= 500, name          # the smoothed ratio and the map: ~500 points
