"""The app in a real browser: landing page, every dashboard drawn, sliders redraw plots, no JS errors.

Drives Debian's Chromium (headless) with Playwright against ``python -m voila_app``
on a free loopback port with LECTURE_FAST=1. Screenshots land in
``test-artifacts/`` for people to look at.
"""
from __future__ import annotations

import time

import pytest

from browser_helpers import (close_context, LOAD_TIMEOUT_MS, PANEL_STATE_JS, REDRAW_TIMEOUT_MS, REPORTS_SENT_JS, SLIDER_HANDLE,
                             VIEWPORT, assert_no_cell_errors, kernel_id, move_slider, new_page, open_page, slider_state,
                             wait_for_dashboard, wait_until_settled)
from conftest import FIXTURES_DIR, notebook_paths, running_voila

pytestmark = pytest.mark.browser

# Everything a panel's plots draw (traces, heatmap images, annotations, axes), so any redraw shows up.
PANEL_SIGNATURE_JS = """(panel) => Array.from(panel.querySelectorAll(
    '.js-plotly-plot .cartesianlayer, .js-plotly-plot .imagelayer, .js-plotly-plot .infolayer, '
    + '.js-plotly-plot .layer-above, .js-plotly-plot .polarlayer, .js-plotly-plot .ternarylayer'))
    .map(e => e.innerHTML).join('|')"""


def screenshot(page, path) -> None:
    """A screenshot of the whole dashboard (Voila scrolls inside the page, so grow the viewport)."""
    height = page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll('body, body *'))
        .filter(e => e.scrollHeight > e.clientHeight + 4 || e === document.body)
        .map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 12000)})
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
# Per figure of the page's panels (drawn or not: voila_app.figure_widget draws lazily), whether it has a drawn trace.
FIGURES_DRAWN_JS = """() => Array.from(document.querySelectorAll('.lecture-figure')).map(f =>
    Array.from(f.querySelectorAll('.scatterlayer .trace path')).some(p => (p.getAttribute('d') || '').length > 8))"""
# Whether the browser renders the first figure and the last markdown cell's text now (false: the cell is off screen,
# its rendering skipped).
RENDERED_JS = """() => [document.querySelector('.lecture-figure'),
    Array.from(document.querySelectorAll('.jp-MarkdownCell .jp-RenderedHTMLCommon')).pop()]
    .map(e => !!e && e.checkVisibility({contentVisibilityAuto: true}))"""
# Per figure: the width plotly drew it at, the width of its box, and whether it is rendered now. A figure drawn while
# its cell was off screen (its rendering skipped) must still have its box's width.
FIGURE_WIDTHS_JS = """() => Array.from(document.querySelectorAll('.lecture-figure')).map(gd => [
    gd._fullLayout ? gd._fullLayout.width : null, gd.getBoundingClientRect().width,
    gd.checkVisibility({contentVisibilityAuto: true})])"""
# The y values the page's i-th figure draws (its graph div is the figure's element).
FIGURE_Y_JS = "(i) => Array.from(document.querySelectorAll('.lecture-figure')[i].data[0].y)"


def wait_for_change(page, panel, before: str) -> None:
    page.wait_for_function(f"([panel, before]) => ({PANEL_SIGNATURE_JS})(panel) !== before",
                           arg=[panel.element_handle(), before], timeout=REDRAW_TIMEOUT_MS)


def test_landing_page_lists_every_notebook(chromium, voila_app, artifacts_dir):
    context, page, watcher = open_page(chromium, voila_app.url + "/")
    try:
        page.wait_for_selector("#lecture-cards", timeout=30_000)
        screenshot(page, artifacts_dir / "landing.png")
        for path in notebook_paths():
            card = page.locator(f'.lecture-card[data-notebook="{path.name}"]')
            assert card.count() == 1, f"no card for {path.name}"
            assert card.locator("h2").inner_text().strip(), f"card of {path.name} has no title"
            assert card.locator(".question").inner_text().strip(), f"card of {path.name} has no question"
            assert card.locator("a.lecture-card-link").get_attribute("href").endswith(f"/voila/render/{path.name}")
            assert card.locator("a.present").get_attribute("href").endswith(f"/voila/render/{path.name}?present=1")
        assert page.locator(".lecture-card").count() == len(notebook_paths())
        # the whole card opens the dashboard (the title link covers it), the Present button presenter mode
        # (hit-test instead of clicking: opening a dashboard here would take notebook 01's pre-heated kernel)
        hits = page.evaluate("""() => Array.from(document.querySelectorAll('.lecture-card')).map(card => {
            card.scrollIntoView({block: 'center'});
            const at = (el) => { const r = el.getBoundingClientRect();
                                 const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                                 return hit && hit.closest('a') ? hit.closest('a').className : null; };
            return [at(card.querySelector('.question')), at(card.querySelector('a.present'))]; })""")
        assert hits == [["lecture-card-link", "present"]] * len(notebook_paths()), hits
        assert watcher.errors == []
    finally:
        close_context(context)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_dashboard_draws_and_every_slider_panel_redraws(chromium, voila_app, artifacts_dir, path):
    context, page, watcher = open_page(chromium, f"{voila_app.url}/voila/render/{path.name}")
    try:
        wait_for_dashboard(page)
        widths = page.evaluate(FIGURE_WIDTHS_JS)
        assert all(abs(w - box) <= 1 for w, box, _ in widths if w is not None), f"{path.name}: {widths}"
        screenshot(page, artifacts_dir / f"{path.stem}.png")
        assert_no_cell_errors(page, path.name)
        panels = page.locator(".lecture-panel")
        assert panels.count() >= 1, f"{path.name} shows no LivePanel"
        redrawn, moved = [], 0
        for i in range(panels.count()):
            panel = panels.nth(i)
            if panel.locator(".lecture-control .noUi-handle").count() == 0:
                continue
            state = panel.evaluate(PANEL_STATE_JS)
            before = panel.evaluate(PANEL_SIGNATURE_JS)
            move_slider(page, panel)
            state = wait_until_settled(page, panel, state["generation"])
            assert state["outcome"] != "error", f"{path.name} panel {i} failed after a slider move"
            moved += 1
            if panel.evaluate(PANEL_SIGNATURE_JS) != before:
                redrawn.append(i)
        assert moved >= 1, f"{path.name}: no panel has a slider to move"
        # some panels demonstrate an invariance (the plot must NOT change); most must redraw
        assert redrawn, f"{path.name}: moving sliders redrew no plot"
        assert_no_cell_errors(page, path.name)
        screenshot(page, artifacts_dir / f"{path.stem}-moved.png")
        assert watcher.errors == [], f"{path.name}: JavaScript errors: {watcher.errors}"
        # plotly's front end once, with the cartesian plotly.js: every figure of the lecture is cartesian
        bundles = [url.rsplit("/", 1)[-1] for url in watcher.requests if "widgetbundle" in url]
        assert bundles == ["widgetbundle.js"], f"{path.name}: plotly front ends imported: {bundles}"
        # nor in its kernel: an exception there (e.g. in a widget's message handler) is withheld from the page
        # (voila_app.kernel_socket) and logged; plotly's trace-delta handler raised on notebook 06's markers
        page.wait_for_function(REPORTS_SENT_JS, timeout=REDRAW_TIMEOUT_MS)   # the page reports when idle
        page.wait_for_timeout(300)                 # ... and the kernel has handled the reports
        kernel = kernel_id(page)
        withheld = [line for line in voila_app.log(tail=None).splitlines()
                    if kernel in line and "not sent to the page" in line and "stderr:" not in line]
        assert withheld == [], f"{path.name}: errors in its kernel: {withheld}"
    finally:
        close_context(context)


def test_a_trace_type_outside_the_cartesian_bundle_draws_with_plotlys_full_front_end(chromium, voila_fixture_app):
    """Figures import plotly's front end with plotly.js's cartesian bundle (voila_app.plotly_partial); a figure with
    another trace type (a TA's table, a 3-D plot) gets plotly's full one, and both draw."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/trace_types_demo.ipynb")
    try:
        drawn_js = """() => Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot'))
            .filter(gd => gd.layout && gd.layout.meta).map(gd => [gd.layout.meta,
                !!gd.querySelector('.table .cell-text') || !!gd.querySelector('.scatterlayer .trace path[d*="L"]')]))"""
        page.wait_for_function(f"() => {{ const d = ({drawn_js})(); return d['table-figure'] && d['line-figure']; }}",
                               timeout=REDRAW_TIMEOUT_MS * 2)
        bundles = sorted(url.rsplit("/", 1)[-1] for url in watcher.requests if "widgetbundle" in url)
        assert bundles == ["widgetbundle-full.js", "widgetbundle.js"], bundles
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_fixture_panel_redraws_and_notes_divergence(chromium, voila_fixture_app, artifacts_dir):
    """The panel contract end to end on the tiny fixture notebook (independent of the real notebooks)."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        assert panel.locator(".lecture-notes").inner_text().strip() == ""
        assert "α (learning rate)" in panel.inner_text()
        assert "LivePanel(" not in page.inner_text("body"), "code must be hidden"
        assert page.locator(".jp-CodeCell .jp-InputArea-editor").count() == 0, "code must be hidden"
        before = panel.evaluate(PANEL_SIGNATURE_JS)
        move_slider(page, panel, presses=1)
        wait_for_change(page, panel, before)
        before = panel.evaluate(PANEL_SIGNATURE_JS)
        handle = panel.locator(".lecture-control .noUi-handle").first
        handle.focus()
        page.keyboard.press("End")          # α = 1: the curvature-4 run diverges
        wait_for_change(page, panel, before)
        panel.locator(".lecture-notes", has_text="diverged at step").wait_for(timeout=REDRAW_TIMEOUT_MS)
        assert "h = 4: diverged at step" in panel.locator(".lecture-notes").inner_text()
        assert "diverged at step" in panel.locator(".js-plotly-plot .legend").first.text_content()
        screenshot(page, artifacts_dir / "fixture-panel-diverged.png")
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_redraw_reports_go_to_the_kernel_when_idle_unechoed_and_without_plotlys_unknown_layout_key(
        chromium, voila_fixture_app):
    """After a redraw, a figure's view reports its trace deltas to the kernel (plotly's kernel side ends the edit
    with them), once the page is idle; the kernel echoes nothing of them back, and the layout report, which plotly 7's
    front end names with a key its kernel side lacks, is not sent (voila_app.figure_widget)."""
    context, page, watcher = new_page(chromium)
    sent, received = [], []

    def on_socket(ws):
        ws.on("framesent", lambda payload: sent.append(payload if isinstance(payload, str) else payload.decode("utf-8", "replace")))
        ws.on("framereceived", lambda payload: received.append(payload if isinstance(payload, str) else payload.decode("utf-8", "replace")))

    page.on("websocket", on_socket)
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb", wait_until="domcontentloaded",
                  timeout=LOAD_TIMEOUT_MS)
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        page.wait_for_function(REPORTS_SENT_JS, timeout=REDRAW_TIMEOUT_MS)
        sent.clear(), received.clear()
        before = panel.evaluate(PANEL_SIGNATURE_JS)
        move_slider(page, panel, presses=1)
        wait_for_change(page, panel, before)
        page.wait_for_function(REPORTS_SENT_JS, timeout=REDRAW_TIMEOUT_MS)
        page.wait_for_timeout(500)                 # the kernel's answers arrive
        assert any("_js2py_traceDeltas" in f for f in sent), "no trace-delta report reached the kernel"
        assert not any("_js2py_widget_layoutDelta" in f for f in sent)
        assert not any("echo_update" in f and "_js2py_traceDeltas" in f for f in received)
        assert any("echo_update" in f for f in received), "the slider's value is echoed (ipywidgets 8): a live check"
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_a_restyle_made_in_the_page_is_not_applied_again_when_the_kernel_echoes_it(chromium, voila_fixture_app):
    """A legend click restyles the figure in the page; plotly's view reports it to the kernel, which sends it back to
    every view. The view that made it does not restyle again (voila_app.figure_widget): one restyle, not two, and a
    late echo cannot undo a newer click."""
    context, page, watcher = new_page(chromium)
    received = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.append(
        payload if isinstance(payload, str) else payload.decode("utf-8", "replace"))))
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb", wait_until="domcontentloaded",
                  timeout=LOAD_TIMEOUT_MS)
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        page.wait_for_function("(p) => { const gd = p.querySelector('.js-plotly-plot'); return gd && gd._fullLayout; }",
                               arg=panel.element_handle(), timeout=REDRAW_TIMEOUT_MS)
        panel.evaluate("""(p) => { const gd = p.querySelector('.js-plotly-plot'); window.__restyles = [];
            gd.on('plotly_restyle', (e) => window.__restyles.push(JSON.stringify(e[0]))); }""")
        received.clear()
        panel.evaluate("(p) => window.Plotly.restyle(p.querySelector('.js-plotly-plot'), {visible: 'legendonly'}, [0])")
        deadline = time.monotonic() + 10
        while not any("_py2js_restyle" in f and "legendonly" in f for f in received) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert any("_py2js_restyle" in f and "legendonly" in f for f in received), "the kernel did not echo the restyle"
        page.wait_for_timeout(500)                 # the echo has been handled
        assert page.evaluate("() => window.__restyles.length") == 1, page.evaluate("() => window.__restyles")
        assert panel.evaluate("(p) => p.querySelector('.js-plotly-plot').data[0].visible") == "legendonly"
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_idle_kernel_is_culled_while_its_tab_is_open(chromium, kernel_name):
    """Memory returns after visitors leave: an idle kernel is shut down even with a tab connected,
    while the pre-heated pool kernel is kept."""
    with running_voila(FIXTURES_DIR, log_name="voila-culling",
                       extra_args=("--cull-idle-timeout", "4", "--cull-interval", "1")) as app:
        context, page, watcher = open_page(chromium, f"{app.url}/voila/render/panel_demo.ipynb")
        try:
            wait_for_dashboard(page)
            deadline = time.monotonic() + 60
            while "Culling 'idle' kernel" not in app.log(tail=None) and time.monotonic() < deadline:
                time.sleep(0.5)
            log = app.log(tail=None)
            assert "Culling 'idle' kernel" in log and "with 1 connections" in log, log[-2000:]
            assert log.count("Kernel shutdown") == 1, "only the visitor's kernel goes; the pool stays"
        finally:
            close_context(context)


def test_closing_the_tab_shuts_its_kernel_down(chromium, voila_fixture_app):
    """Voila's page sends a shutdown beacon on unload: a closed tab frees its kernel at once."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb")
    try:
        wait_for_dashboard(page)
        before = voila_fixture_app.log(tail=None).count("Kernel shutdown")
        page.goto(voila_fixture_app.url + "/")     # leaving the page fires its beforeunload handler
        deadline = time.monotonic() + 30
        while voila_fixture_app.log(tail=None).count("Kernel shutdown") == before and time.monotonic() < deadline:
            time.sleep(0.3)
        assert voila_fixture_app.log(tail=None).count("Kernel shutdown") == before + 1
    finally:
        close_context(context)


def test_figures_below_the_fold_draw_later_without_scrolling(chromium, voila_fixture_app):
    """Six figures stacked in one panel, most below the fold: all are drawn, nobody scrolls."""
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/lazy_demo.ipynb")
    try:
        wait_for_dashboard(page)
        page.wait_for_function(f"() => ({FIGURES_DRAWN_JS})().every(Boolean)", timeout=REDRAW_TIMEOUT_MS)
        assert len(page.evaluate(FIGURES_DRAWN_JS)) == 6
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_where_no_figure_is_near_the_viewport_the_nearest_is_drawn_without_waiting(chromium, voila_fixture_app):
    """A window so short that no figure of the page is near it: the nearest is drawn as soon as the figures have
    reached the lazy queue, not after a quarter of a second (voila_app.figure_widget, NONE_NEAR_MS; it was 250 ms)."""
    context, page, watcher = new_page(chromium, viewport={"width": 480, "height": 100})
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/lazy_demo.ipynb", wait_until="domcontentloaded")
        page.wait_for_function(f"() => ({FIGURES_DRAWN_JS})().some(Boolean)", timeout=REDRAW_TIMEOUT_MS * 2)
        top = page.evaluate("document.querySelector('.lecture-figure').getBoundingClientRect().top")
        assert top > 100 + 300, f"the first figure ({top} px from the top) was near the viewport: nothing to test"
        queued, drawn = (page.evaluate(f"performance.getEntriesByName('{name}')[0].startTime")
                         for name in ("lecture-first-figure-queued", "lecture-first-figure-drawn"))
        assert 0 <= drawn - queued < 240, f"the first figure was drawn {drawn - queued:.0f} ms after it was queued"
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_plotlys_front_end_is_evaluated_before_any_figure_model_is_restored(chromium, voila_fixture_app):
    """The figures' front end is imported as the kernel's websocket opens, while the kernel prepares the widget state,
    and the widget messages wait until it has been evaluated (static/lecture-dashboard.js, "5. plotly"): it no
    longer runs after the state, and no model is mid-restore while it runs (anywidget's 2-second deadline). The
    bundle is held back 0.8 s, as a slow line would, so that the state arrives before it: the models still wait."""
    context, page, watcher = new_page(chromium)
    page.route("**/widgetbundle.js", lambda route: (time.sleep(0.8), route.continue_()))
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb", wait_until="domcontentloaded")
        page.wait_for_function(f"() => ({FIGURES_DRAWN_JS})().some(Boolean)", timeout=REDRAW_TIMEOUT_MS * 2)
        marks = page.evaluate("() => Object.fromEntries(['lecture-bundle-import', 'lecture-bundle-evaluated',"
                              " 'lecture-first-figure-model'].map(n => [n, (performance.getEntriesByName(n)[0] || {}).startTime]))")
        assert None not in marks.values(), marks
        assert marks["lecture-bundle-import"] < marks["lecture-bundle-evaluated"] <= marks["lecture-first-figure-model"], marks
        bundles = page.evaluate("performance.getEntriesByType('resource').filter(r => r.name.includes('widgetbundle'))"
                                ".map(r => r.name)")
        assert len(bundles) == 1, bundles          # the figures' own import found the module evaluated
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_the_markdowns_math_is_typeset_after_the_first_plot(chromium, voila_fixture_app):
    """MathJax typesets the markdown's LaTeX once the first figure is plotted, not as Voila's app starts (where it
    held the first plot back: docs/performance.md, "Opening a dashboard"); the math is typeset all the same."""
    first_math = (f"new MutationObserver((_, obs) => {{ if (document.querySelector('.jp-MarkdownOutput mjx-container')) {{"
                  f" window.figureDrawnBeforeMath = ({FIGURES_DRAWN_JS})().some(Boolean); obs.disconnect(); }} }})"
                  ".observe(document, {childList: true, subtree: true});")
    context, page, watcher = new_page(chromium, init_script=first_math)
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/lazy_demo.ipynb", wait_until="domcontentloaded")
        page.wait_for_function("() => window.figureDrawnBeforeMath !== undefined", timeout=REDRAW_TIMEOUT_MS * 2)
        assert page.evaluate("window.figureDrawnBeforeMath"), "the math was typeset before any figure was drawn"
        page.wait_for_function("() => document.querySelectorAll('.jp-MarkdownOutput mjx-container').length === 3",
                               timeout=REDRAW_TIMEOUT_MS)
        assert page.locator(".lecture-math-deferred").count() == 0
        assert "$" not in page.locator(".jp-MarkdownOutput").first.inner_text(), "raw LaTeX left on the page"
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_a_figure_far_below_the_fold_is_drawn_when_scrolled_to_with_its_latest_data(chromium, voila_fixture_app):
    """Lazy drawing: without the page's idle moments (which draw the rest) only the figures near the viewport
    are drawn; one far below, updated by the kernel meanwhile, draws its model's latest data once scrolled to."""
    context, page, watcher = new_page(chromium, init_script="window.requestIdleCallback = () => 0;")
    try:
        page.goto(f"{voila_fixture_app.url}/voila/render/lazy_demo.ipynb", wait_until="domcontentloaded")
        page.wait_for_function(f"() => ({FIGURES_DRAWN_JS})()[0] === true", timeout=REDRAW_TIMEOUT_MS * 2)
        drawn = page.evaluate(FIGURES_DRAWN_JS)
        assert len(drawn) == 6 and drawn[0] and not all(drawn), drawn
        far = max(i for i, d in enumerate(drawn) if not d)    # the lowest figure not drawn yet
        assert far >= 3, f"a figure near the top was left undrawn: {drawn}"
        panel = page.locator(".lecture-panel").first
        state = panel.evaluate(PANEL_STATE_JS)
        move_slider(page, panel, presses=1)
        wait_until_settled(page, panel, state["generation"])
        exponent, _, _ = slider_state(panel.locator(SLIDER_HANDLE).first)
        assert exponent != 1.0 and not page.evaluate(FIGURES_DRAWN_JS)[far]
        # the browser skips the rendering of the cell after the panel, far below (lecture-dashboard.css), not the panel's
        assert page.evaluate(RENDERED_JS) == [True, False], page.evaluate(RENDERED_JS)
        page.locator(".lecture-figure").nth(far).scroll_into_view_if_needed()
        page.wait_for_function(f"() => ({FIGURES_DRAWN_JS})()[{far}]", timeout=REDRAW_TIMEOUT_MS)
        y = page.evaluate(f"({FIGURE_Y_JS})({far})")
        assert y[-1] == pytest.approx(40 ** (exponent * (far + 1) / 6)), "the figure drew the data it was created with"
        page.locator(".jp-MarkdownCell").last.scroll_into_view_if_needed()
        page.wait_for_function(f"() => ({RENDERED_JS})()[1]", timeout=REDRAW_TIMEOUT_MS)
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)
