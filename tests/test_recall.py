"""Page-side recall (lecture_lib.viz.recall): in the kernel (entries, bound, silent cache hits), and in the browser
on the fixtures tests/fixtures/recall_demo.ipynb and scrub_demo.ipynb (a scrubbed family recalled).

The recall fixture draws y = a·x and a horizontal line at a (its y range and title follow a); the a slider
computes in the kernel the first time, and a move back to a value drawn before redraws in the page.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from browser_helpers import close_context, REDRAW_TIMEOUT_MS, SLIDER_HANDLE, open_page, wait_for_dashboard
from lecture_lib.viz import figures, panels, scrub

X = np.linspace(0.0, 1.0, 50)
SENT = ["_py2js_restyle", "_py2js_update", "_py2js_relayout", "_py2js_addTraces"]


def line(a):
    if a > 2.5:
        raise ValueError("a must be at most 2.5")
    return {"a": a, "y": a * X}


def build(res):
    fig = figures.figure([go.Scatter(x=X, y=res["y"], mode="lines", name="a·x"),
                          go.Scatter(x=[0.0, 1.0], y=[res["a"], res["a"]], mode="lines", name="level")],
                         y_title=f"y (a = {res['a']:g})")
    fig.update_yaxes(range=[-0.1, 1.1 * max(res["a"], 0.1)])
    return fig


def make_panel(cache_size=32):
    return panels.LivePanel(compute=line, controls={"a": panels.slider("a", 0.0, 3.0, 1.0, step=0.5)}, build=build,
                            notes=lambda res: f"slope {res['a']:g}", cache_size=cache_size)


def capture(recall):
    messages = []
    recall.send = lambda content, buffers=None: messages.append((content, buffers))
    return messages


def floats(entry, buffers, figure, trace, key):
    return np.frombuffer(buffers[entry["figures"][figure]["traces"][trace][key]["buffer"]], dtype=np.float64)


def test_each_drawn_result_is_sent_once_with_its_data_layout_and_notes(page):
    panel = make_panel()
    messages = capture(panel.recall)
    panel.recall._on_msg(None, {"ready": True}, [])         # a page listens now: the result on screen is sent
    assert len(messages) == 1 and messages[0][0]["add"]["key"] == [1.0]
    panel.set(a=2.0)
    assert panel.wait(10)
    content, buffers = messages[-1]
    entry = content["add"]
    assert entry["key"] == [2.0] and entry["notes"] == "slope 2" and content["drop"] == []
    assert np.allclose(floats(entry, buffers, 0, 0, "y"), 2.0 * X)
    assert entry["figures"][0]["traces"][1]["name"] == "level"
    # the layout paths a redraw changed, with their value for this result; base: the first result's
    assert entry["figures"][0]["layout"]["yaxis.range"] == [-0.1, 2.2]
    assert entry["figures"][0]["layout"]["yaxis.title.text"] == "y (a = 2)"
    assert content["base"][0]["yaxis.title.text"] == "y (a = 1)"
    panel.set(a=1.0)                                          # held already, drawn by the kernel: not sent again
    assert len(messages) == 2


def test_the_page_holds_at_most_the_cache_size_and_is_told_what_to_drop(page):
    panel = make_panel(cache_size=2)
    messages = capture(panel.recall)
    for a in (1.5, 2.0, 0.5):
        panel.set(a=a)
        assert panel.wait(10)
    assert [m[0]["drop"] for m in messages] == [[], ["[1.0]"], ["[1.5]"]]
    assert list(panel.recall.held) == ["[2.0]", "[0.5]"]


def test_a_recalled_cache_hit_sends_no_figure_update_and_the_kernel_follows(page):
    panel = make_panel()
    panel.set(a=2.0)
    assert panel.wait(10)
    panel.set(a=1.0)
    sent = []
    panel.figure.observe(sent.append, names=SENT)
    drawn = panel.recall.drawn
    panel.recall._on_msg(None, {"recalled": "[2.0]", "drawn": drawn}, [])     # what the page says after drawing
    panel.set(a=2.0)
    assert sent == [] and panel.recall.drawn == drawn
    assert np.allclose(panel.figure.data[0].y, 2.0 * X)                      # the kernel's copy shows the recalled
    assert np.allclose(panel.figure._widget_data[0]["y"], 2.0 * X)            # result, so does a page connecting later
    assert panel.figure.layout.yaxis.range == (-0.1, 2.2) and panel.figure.layout.yaxis.title.text == "y (a = 2)"
    assert "slope 2" in panel._notes.value and "data-generation='4'" in panel._state.value
    panel.set(a=1.0)                                   # not recalled by the page: drawn by the kernel, diffing from a = 2
    assert sent != [] and panel.recall.drawn == drawn + 1
    assert np.allclose(panel.figure.data[0].y, 1.0 * X)


def test_a_recall_made_before_a_figure_update_reached_the_page_is_void(page):
    panel = make_panel()
    panel.set(a=2.0)
    assert panel.wait(10)
    panel.set(a=1.0)
    panel.recall._on_msg(None, {"recalled": "[2.0]", "drawn": panel.recall.drawn - 1}, [])   # a draw was on its way
    sent = []
    panel.figure.observe(sent.append, names=SENT)
    panel.set(a=2.0)
    assert sent != [] and np.allclose(panel.figure.data[0].y, 2.0 * X)


def test_an_error_is_not_kept(page):
    panel = make_panel()
    messages = capture(panel.recall)
    panel.set(a=3.0)
    assert panel.wait(10) and "at most 2.5" in panel.message and messages == []


def test_a_scrub_panel_recalls_the_whole_family_and_its_scrubber_follows_silently(page):
    family = scrub.ScrubPanel(compute=lambda b, a: [line(s + b) for s in a],
                              controls={"b": panels.slider("b", 0.0, 1.0, 0.0, step=0.5)}, build=build,
                              scrub=scrub.Scrub("a", (0.5, 1.0, 1.5), "a", index=1))
    messages = capture(family.recall)
    family.set(b=0.5)
    assert family.wait(10)
    content, buffers = messages[-1]
    frames = content["add"]["frames"]                       # every position of the family, for the scrubber
    assert len(frames) == 3 and frames[2][0]["traces"] == [0, 1]
    assert np.allclose(np.frombuffer(buffers[frames[2][0]["y"][0]["buffer"]], dtype=np.float64), 2.0 * X)
    family.set(b=0.0)
    sent = []
    family.figure.observe(sent.append, names=SENT)
    family.scrubber.observe(sent.append, names=["frames"])
    family.recall._on_msg(None, {"recalled": "[0.5]", "drawn": family.recall.drawn}, [])
    family.set(b=0.5)
    assert sent == [] and np.allclose(family.figure.data[0].y, 1.5 * X)   # position 1 of the family b = 0.5
    assert np.allclose(np.asarray(family.scrubber.frames[2][0]["y"][0]), 2.0 * X)
    family.scrubber.index = 2                                # scrubbing goes on within the recalled family
    assert sent == [] and np.allclose(family.figure.data[0].y, 2.0 * X)


READY_JS = "(panel) => { const r = panel.querySelector('.lecture-recall'); return r && +r.dataset.entries >= 2; }"
Y_IS_JS = """([panel, y]) => { const d = panel.querySelector('.js-plotly-plot').data[0].y;
    return d.length === y.length && Array.from(d).every((v, i) => Math.abs(v - y[i]) < 1e-9); }"""
GENERATION_JS = "(panel) => +panel.querySelector('.lecture-state span').dataset.generation"


def test_a_slider_moved_back_redraws_in_the_page_without_a_figure_message(chromium, voila_fixture_app):
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/recall_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        handle = panel.locator(SLIDER_HANDLE).first
        generation = panel.evaluate(GENERATION_JS)
        handle.focus()
        page.keyboard.press("ArrowRight")                                  # a: 1 -> 1.5, computed in the kernel
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(1.5 * X)], timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(READY_JS, arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(f"(p) => ({GENERATION_JS})(p) > {generation}", arg=panel.element_handle(),
                               timeout=REDRAW_TIMEOUT_MS)
        # from now on every redraw is counted: the recall's one, and any figure message of the kernel
        page.evaluate("""() => { window.__redraws = 0;
            for (const gd of document.querySelectorAll('.js-plotly-plot'))
              for (const e of ['plotly_update', 'plotly_restyle', 'plotly_relayout']) gd.on(e, () => window.__redraws++); }""")
        generation = panel.evaluate(GENERATION_JS)
        page.keyboard.press("ArrowLeft")                                   # back to a = 1: recalled in the page
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(1.0 * X)], timeout=5_000)
        assert panel.locator(".lecture-recall").get_attribute("data-recalls") == "1"
        assert panel.evaluate("(p) => p.querySelector('.js-plotly-plot').layout.yaxis.title.text") == "y (a = 1)"
        panel.locator(".lecture-notes", has_text="slope 1").wait_for(timeout=5_000)
        page.wait_for_function(f"(p) => ({GENERATION_JS})(p) > {generation}", arg=panel.element_handle(),
                               timeout=REDRAW_TIMEOUT_MS)                  # the kernel answered the move
        page.wait_for_timeout(500)
        assert page.evaluate("window.__redraws") == 1                     # the recall's, nothing from the kernel
        page.keyboard.press("ArrowRight")                                  # and forth: recalled again
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(1.5 * X)], timeout=5_000)
        assert panel.locator(".lecture-recall").get_attribute("data-recalls") == "2"
        page.keyboard.press("ArrowRight")                                  # a = 2: new, drawn by the kernel
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(2.0 * X)], timeout=REDRAW_TIMEOUT_MS)
        assert page.evaluate("window.__redraws") > 2
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


# What a graph div shows, and the same data and layout drawn afresh by plotly in a div of the same size.
AS_FRESH_JS = """async (panel) => {
  const gd = panel.querySelector('.js-plotly-plot');
  const shown = (g) => JSON.stringify({
    ranges: ['xaxis', 'yaxis'].map((k) => g._fullLayout[k].range), title: g._fullLayout.yaxis.title.text,
    ticks: [...g.querySelectorAll('.xtick text, .ytick text')].map((t) => t.textContent).sort(),
    paths: [...g.querySelectorAll('.scatterlayer path.js-line')].map((p) => p.getAttribute('d')) });
  const div = document.createElement('div');
  document.body.appendChild(div);
  const layout = { ...JSON.parse(JSON.stringify(gd.layout)), width: gd._fullLayout.width, height: gd._fullLayout.height };
  await Plotly.newPlot(div, gd.data.map((t) => ({ ...t })), layout);
  const out = { drawn: shown(gd), fresh: shown(div), changedDraws: +(gd.dataset.lectureChangedDraws || 0) };
  Plotly.purge(div); div.remove();
  return out;
}"""


def test_a_new_result_from_the_kernel_is_drawn_by_redraw_changed_as_plotly_would(chromium, voila_fixture_app):
    """The figure's view draws the kernel's update of the data and layout values (voila_app.figure_widget,
    drawChanged) with scrub.js's redrawChanged, not plotly's whole-figure update: what it shows is what plotly
    draws afresh from the same data and layout, and the kernel's figure keeps following (a second new value)."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/recall_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        handle = panel.locator(SLIDER_HANDLE).first
        page.wait_for_function("() => typeof window.lectureRedrawChanged === 'function'", timeout=REDRAW_TIMEOUT_MS)
        before = panel.evaluate(AS_FRESH_JS)["changedDraws"]
        handle.focus()
        for a in (1.5, 2.0):                                   # new values, computed and drawn by the kernel
            page.keyboard.press("ArrowRight")
            page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(a * X)], timeout=REDRAW_TIMEOUT_MS)
            panel.locator(".lecture-notes", has_text=f"slope {a:g}").wait_for(timeout=REDRAW_TIMEOUT_MS)
            page.wait_for_timeout(300)                         # the relayout of the new range and title
            got = panel.evaluate(AS_FRESH_JS)
            assert got["drawn"] == got["fresh"] and f"y (a = {a:g})" in got["drawn"]
            assert got["changedDraws"] > before
            before = got["changedDraws"]
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_a_scrubbed_family_moved_back_is_recalled_and_scrubs_in_the_page(chromium, voila_fixture_app):
    slopes = (0.5, 1.0, 2.0, 3.0, 4.0)                                     # tests/fixtures/scrub_demo.ipynb
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/scrub_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        generation = panel.evaluate(GENERATION_JS)
        handle = panel.locator(SLIDER_HANDLE).first
        handle.focus()
        page.keyboard.press("ArrowRight")                                  # b: 0 -> 0.25, a new family
        page.wait_for_function(READY_JS, arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(f"(p) => ({GENERATION_JS})(p) > {generation}", arg=panel.element_handle(),
                               timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(slopes[1] * X + 0.25)],
                               timeout=REDRAW_TIMEOUT_MS)
        page.keyboard.press("ArrowLeft")                                   # back to b = 0: recalled in the page
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(slopes[1] * X)], timeout=5_000)
        assert panel.locator(".lecture-recall").get_attribute("data-recalls") == "1"
        scrubber = panel.locator(".lecture-scrub input[type=range]")
        scrubber.focus()
        page.keyboard.press("End")                                         # scrubbing within the recalled family
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(slopes[4] * X)], timeout=5_000)
        panel.locator(".lecture-notes", has_text="slope 4").wait_for(timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_function("(p) => p.querySelector('.lecture-state span').dataset.link === 'p1.a=4'",
                               arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_the_kernel_keys_a_value_as_the_page_rounds_it(page):
    """A log slider's value computed in the page on the way back (10 ** exponent) may differ in its last bit from the
    same value on the way there: both sides key it to 12 significant digits (controls.freeze; the page's `round`)."""
    slider = panels.log_slider("c", 1e-2, 1e2, 3.0)
    recall = make_panel().recall
    recall.controls, recall.attrs = [slider], ["value"]
    key = recall.key()
    slider.value = float(np.nextafter(3.0, 0.0))        # 2.9999999999999996, as the page may compute it
    assert slider.value != 3.0 and recall.key() == key == "[3.0]"
    slider.value = 3.0000001
    assert recall.key() != key


# redrawChanged (lecture_lib/viz/scrub.js), the recall's redraw, against plotly's own full drawing of the same figure:
# figure A is drawn, then given B's data by redrawChanged; B is drawn afresh beside it. What both show is compared.
REDRAW_JS = """async ([a, b, layout, keys]) => {
  // numeric arrays as the FigureWidget's view hands them to plotly (and the recall holds them): Float64Array
  const typed = (t) => { for (const k of ['x', 'y']) if (Array.isArray(t[k]) && typeof t[k][0] === 'number') t[k] = Float64Array.from(t[k]);
                         return t; };
  const place = (f) => { const d = document.createElement('div'); d.style.width = '800px'; document.body.append(d);
                         return Plotly.newPlot(d, f.data.map(typed), f.layout); };
  const [ga, gb] = [await place(a), await place(b)];
  const shown = (gd) => JSON.stringify({
    ranges: Object.keys(gd._fullLayout).filter((k) => /^[xy]axis\\d*$/.test(k)).map((k) => gd._fullLayout[k].range),
    ticks: [...gd.querySelectorAll('.xtick text, .ytick text, .g-ytitle, .g-xtitle')].map((t) => t.textContent),
    lines: [...gd.querySelectorAll('.scatterlayer path.js-line')].map((p) => p.getAttribute('d')),
    points: [...gd.querySelectorAll('.scatterlayer path.point')].map((p) => p.getAttribute('transform') + p.getAttribute('d')),
  });
  const before = shown(ga), events = [];
  ga.on('plotly_relayout', (e) => events.push(e));
  // every trace as the recall holds it: B's data as plotly decoded it, and the trace's name and visibility
  const traces = gb.data.map((t) => Object.fromEntries([['name', t.name], ['visible', t.visible], ['x', t.x], ['y', t.y],
    ...keys.filter((k) => k.split('.').reduce((o, p) => o && o[p], t) !== undefined)
           .map((k) => [k, k.split('.').reduce((o, p) => o[p], t)])]));
  const drawn = window.LectureScrub.redrawChanged(Plotly, ga, traces, layout);
  await new Promise((r) => setTimeout(r, 100));
  return {drawn, before, after: shown(ga), fresh: shown(gb), events: events.map((e) => Object.keys(e).sort()),
          layoutKeys: Object.keys(ga.layout)};
}"""


def redraw(chromium, tmp_path, a, b, layout=None, keys=("marker.size", "customdata")):
    from browser_helpers import close_context, new_page
    from voila_app.export import classic_scrub_script
    from plotly.offline import get_plotlyjs
    import plotly.io as pio

    path = tmp_path / "redraw.html"
    path.write_text(f"<html><body><script>{get_plotlyjs()}</script><script>{classic_scrub_script()}</script></body></html>")
    context, page, watcher = new_page(chromium)
    try:
        page.goto(path.as_uri())
        got = page.evaluate(REDRAW_JS, [json_of(a, pio), json_of(b, pio), layout or {}, list(keys)])
        assert watcher.errors == []
        return got
    finally:
        close_context(context)


def json_of(fig, pio):
    """The figure as plotly JSON with its arrays as lists (plotly.py writes numbers as base64 ``bdata``)."""
    import base64
    import json

    def plain(v):
        if isinstance(v, dict) and set(v) >= {"dtype", "bdata"}:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
        if isinstance(v, dict):
            return {k: plain(u) for k, u in v.items()}
        return [plain(u) for u in v] if isinstance(v, list) else v
    return plain(json.loads(pio.to_json(fig)))


def two_lines(scale=1.0, n=40, sizes=None, **layout):
    x = np.linspace(1.0, 10.0, n)
    fig = figures.figure([go.Scatter(x=x, y=scale * x ** 2, mode="lines+markers", name="square",
                                     marker=dict(size=sizes if sizes is not None else 6)),
                          go.Scatter(x=x, y=np.sqrt(x), mode="lines", name="root")], y_title="y")
    fig.update_layout(**layout)
    return fig


def test_redraw_changed_on_fixed_axes_replots_the_changed_traces_alone_as_plotly_draws_them(chromium, tmp_path):
    fixed = dict(xaxis_range=[0, 12], yaxis_range=[0, 400])
    got = redraw(chromium, tmp_path, two_lines(1.0, sizes=np.full(40, 5.0), **fixed),
                 two_lines(2.0, n=30, sizes=np.linspace(3.0, 12.0, 30), **fixed))
    assert got["drawn"] == "plot" and got["after"] == got["fresh"] != got["before"]
    assert got["events"] == []                                           # no relayout: the two traces' layers only


def test_redraw_changed_autoranges_the_axes_as_a_full_draw_and_reports_nothing(chromium, tmp_path):
    a, b = two_lines(1.0, yaxis_type="log"), two_lines(1e3, n=25, yaxis_type="log")
    got = redraw(chromium, tmp_path, a, b)
    assert got["drawn"] == "relayout" and got["after"] == got["fresh"] != got["before"]
    # one relayout, marked so that a FigureWidget's view sends nothing to its kernel; plotly's layout is left clean
    assert got["events"] == [["_doNotReportToPy", "xaxis.autorange", "yaxis.autorange"]]
    assert "_doNotReportToPy" not in got["layoutKeys"]


def test_redraw_changed_applies_the_layout_paths_that_differ(chromium, tmp_path):
    a, b = two_lines(1.0), two_lines(1.0, yaxis_title_text="y (after)")
    got = redraw(chromium, tmp_path, a, b, layout={"yaxis.title.text": "y (after)", "xaxis.title.text": "step k"})
    assert got["drawn"] == "relayout" and got["after"] == got["fresh"] != got["before"]
    assert got["events"] == [["_doNotReportToPy", "yaxis.title.text"]]   # the data are equal: not drawn again


def test_redraw_changed_leaves_anything_else_to_a_full_update(chromium, tmp_path):
    renamed = two_lines(2.0)
    renamed.data[1].name = "root, renamed"
    bars = go.Figure([go.Bar(x=[1, 2, 3], y=[1, 2, 3])])
    for a, b in [(two_lines(1.0), renamed), (bars, go.Figure([go.Bar(x=[1, 2, 3], y=[3, 2, 1])])),
                 (two_lines(1.0), two_lines(1.0, sizes=np.full(40, 5.0)))]:   # sizes: a number, then an array
        got = redraw(chromium, tmp_path, a, b)
        assert got["drawn"] is False and got["after"] == got["before"] and got["events"] == []
