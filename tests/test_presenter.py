"""For instructors, in a real browser: presenter mode at 1280×720 (one panel, no scrolling, large
type, keyboard navigation), PNG/SVG export of a panel's figures, and the URL that holds the slider
values (bookmark a plot, open the link, get the same plot; a bad link gets a message)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from browser_helpers import (close_context, LOAD_TIMEOUT_MS, PANEL_STATE_JS, REDRAW_TIMEOUT_MS, assert_no_cell_errors, move_slider,
                             open_page, wait_for_dashboard, wait_until_settled)
from conftest import notebook_paths

pytestmark = pytest.mark.browser

PROJECTOR = {"width": 1280, "height": 720}
# What a panel's plots show, without the random ids plotly gives clip paths and traces:
# line paths, legend entries and tick labels.
# What a panel's plots show: each figure's line paths and legend in order, its tick labels as a set (their order in
# the DOM depends on how the axis was last redrawn: a relayout appends new ticks after those it keeps).
PLOT_CONTENT_JS = """(panel) => Array.from(panel.querySelectorAll('.js-plotly-plot')).map((gd) => {
    const texts = (sel, sorted) => { const t = Array.from(gd.querySelectorAll(sel)).map(e => e.getAttribute('d') || e.textContent);
                                     return (sorted ? t.sort() : t).map(v => '|' + v).join(''); };
    return texts('.scatterlayer path.js-line') + texts('.legendtext') + texts('.xtick text', true) + texts('.ytick text', true);
  }).join('||')"""
MIN_SCALE = 0.8            # a panel may be shrunk to fit, but not below this
MIN_TITLE_PX = 24          # panel titles on screen, after scaling

# Where the current panel and everything in it sits on screen, and whether anything can scroll.
LAYOUT_JS = """() => {
  const panels = Array.from(document.querySelectorAll('.lecture-panel'));
  const visible = panels.filter(p => p.getBoundingClientRect().height > 0 && getComputedStyle(p).display !== 'none');
  const cur = document.querySelector('.lecture-panel.lecture-current');
  const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const title = cur && cur.querySelector('.lecture-title h3');
  const scrollers = Array.from(document.querySelectorAll('body, body *')).filter(e => {
      const s = getComputedStyle(e); return /(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 2; });
  return {visible: visible.length, total: panels.length, panel: cur ? rect(cur) : null,
          controls: cur ? Array.from(cur.querySelectorAll('.lecture-control, .lecture-figure, .widget-button')).map(rect) : [],
          scale: parseFloat(document.body.dataset.presentScale || '0'),
          titlePx: title ? parseFloat(getComputedStyle(title).fontSize) : null,
          count: (document.querySelector('.lecture-present-count') || {}).textContent,
          presenting: cur ? cur.classList.contains('lecture-presenting') : false,
          pageScroll: document.scrollingElement.scrollHeight - window.innerHeight,
          scrollers: scrollers.map(e => e.tagName + '.' + e.className).slice(0, 5)};
}"""


def inside(box, width, height, top=0.0, slack=1.0) -> bool:
    left, t, right, bottom = box
    return left >= -slack and t >= top - slack and right <= width + slack and bottom <= height + slack


def wait_presented(page, number: int, has_figures: bool) -> dict:
    """Wait until panel ``number`` is on screen, laid out for the projector, and (if it has plots) drawn."""
    page.wait_for_function(f"() => document.body.dataset.presentPanel === '{number}'", timeout=LOAD_TIMEOUT_MS)
    if has_figures:
        page.wait_for_function(
            """() => { const p = document.querySelector('.lecture-panel.lecture-current');
                 const plots = p ? Array.from(p.querySelectorAll('.js-plotly-plot')) : [];
                 return p && p.classList.contains('lecture-presenting') && plots.length > 0
                        && plots.every(gd => gd._fullLayout && gd._fullLayout.width === gd.layout.width
                                             && gd.querySelector('.main-svg')); }""",
            timeout=LOAD_TIMEOUT_MS)
    page.wait_for_timeout(300)          # the page refits on its next tick after a relayout
    return page.evaluate(LAYOUT_JS)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_presenter_mode_shows_each_panel_whole_at_1280x720(chromium, voila_app, artifacts_dir, path):
    context, page, watcher = open_page(chromium, f"{voila_app.url}/voila/render/{path.name}?present=1", PROJECTOR)
    try:
        page.wait_for_selector(".lecture-present-bar", timeout=LOAD_TIMEOUT_MS)
        wait_for_dashboard(page)
        total = page.evaluate("() => document.querySelectorAll('.lecture-panel').length")
        assert total >= 1
        for number in range(1, total + 1):
            has_figures = page.evaluate(
                f"() => document.querySelectorAll('.lecture-panel')[{number - 1}].querySelector('.lecture-figure') !== null")
            layout = wait_presented(page, number, has_figures)
            where = f"{path.name}, panel {number}/{total}"
            assert layout["visible"] == 1, f"{where}: {layout['visible']} panels visible, want one"
            assert layout["count"] == f"{number} / {total}"
            assert layout["presenting"] or not has_figures, f"{where}: figures not laid out for the projector"
            assert inside(layout["panel"], PROJECTOR["width"], PROJECTOR["height"], top=50), f"{where}: {layout}"
            for box in layout["controls"]:
                assert inside(box, PROJECTOR["width"], PROJECTOR["height"], top=50), f"{where}: control cut off {box}"
            assert layout["pageScroll"] <= 1 and not layout["scrollers"], f"{where}: something scrolls: {layout}"
            assert layout["scale"] >= MIN_SCALE, f"{where}: shrunk to {layout['scale']} to fit"
            assert layout["titlePx"] * layout["scale"] >= MIN_TITLE_PX, f"{where}: title too small on screen"
            assert f"panel={number}" in page.url
            page.screenshot(path=str(artifacts_dir / f"present-{path.stem[:2]}-{number}.png"))
            page.keyboard.press("PageDown")
        assert page.evaluate("() => document.body.dataset.presentPanel") == str(total)   # stops at the last
        page.keyboard.press("Home")
        page.wait_for_function("() => document.body.dataset.presentPanel === '1'", timeout=10_000)
        if total > 1:
            page.keyboard.press("ArrowRight")
            page.wait_for_function("() => document.body.dataset.presentPanel === '2'", timeout=10_000)
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("() => document.body.dataset.presentPanel === '1'", timeout=10_000)
        assert_no_cell_errors(page, path.name)
        assert watcher.errors == [], f"{path.name}: JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


def test_presenter_keys_reach_the_panel_and_escape_leaves(chromium, voila_fixture_app, artifacts_dir):
    """A focused slider keeps its arrow keys; PageDown/PageUp (clickers) still navigate; Esc leaves."""
    url = f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb?present=1"
    context, page, watcher = open_page(chromium, url, PROJECTOR)
    try:
        layout = wait_presented(page, 1, has_figures=True)
        assert layout["visible"] == 1 and layout["scale"] >= 1.0     # a small panel is shown at least life size
        panel = page.locator(".lecture-panel.lecture-current")
        state = panel.evaluate(PANEL_STATE_JS)
        move_slider(page, panel, presses=2)                          # arrows on a focused slider move it
        wait_until_settled(page, panel, state["generation"])
        assert page.evaluate("() => document.body.dataset.presentPanel") == "1"
        page.wait_for_function("() => /p1\\.lr=/.test(location.search)", timeout=10_000)
        page.screenshot(path=str(artifacts_dir / "present-fixture.png"))
        page.keyboard.press("Escape")
        page.wait_for_url(lambda u: "panel_demo.ipynb" in u and "present" not in u, wait_until="commit",
                          timeout=30_000)
        query = parse_qs(urlparse(page.url).query)
        assert "present" not in query and query["panel"] == ["1"] and "p1.lr" in query
        assert watcher.errors == [], watcher.errors
    finally:
        close_context(context)


@pytest.mark.timeout(300)     # a hang fails in 5 minutes with the stacks (pytest-timeout), not in 15
def test_url_holds_the_slider_values_and_reopens_the_same_plot(chromium, voila_fixture_app):
    base = f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb"
    context, page, watcher = open_page(chromium, base)
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        state = panel.evaluate(PANEL_STATE_JS)
        move_slider(page, panel, presses=1)
        wait_until_settled(page, panel, state["generation"])
        page.wait_for_function("() => /p1\\.lr=/.test(location.search)", timeout=10_000)
        bookmarked = page.url
        value = parse_qs(urlparse(bookmarked).query)["p1.lr"][0]
        readout = panel.locator(".widget-readout").first.inner_text()
        drawn = panel.evaluate(PLOT_CONTENT_JS)
        assert "h = 4" in drawn and drawn.count("|M") >= 1
        tools_link = panel.locator(".lecture-tool[data-action=link]")
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        tools_link.click()
        page.wait_for_function("() => document.querySelector('.lecture-tool[data-action=link]').dataset.url",
                               timeout=10_000)
        # the clipboard's promises have no timeout of their own, nor has evaluate: twice in four full runs this
        # test waited forever (never when run alone; where exactly is not known), so the read is raced with one
        copied = page.evaluate("""() => Promise.race([navigator.clipboard.readText(), new Promise((_, reject) =>
                                   setTimeout(() => reject(new Error('clipboard read: no answer in 10 s')), 10000))])""")
        assert parse_qs(urlparse(copied).query) == {"panel": ["1"], "p1.lr": [value]}
    finally:
        close_context(context)

    # a new visitor opening the bookmark sees the same slider value and the same plot
    context, page, watcher = open_page(chromium, bookmarked)
    try:
        panel = page.locator(".lecture-panel").first
        page.wait_for_function(f"""() => {{ const r = document.querySelector('.lecture-panel .widget-readout');
                                    return r && r.textContent.trim() === {readout!r}; }}""", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function(f"([p, s]) => ({PLOT_CONTENT_JS})(p) === s",
                               arg=[panel.element_handle(), drawn], timeout=REDRAW_TIMEOUT_MS)
        assert parse_qs(urlparse(page.url).query)["p1.lr"] == [value]
        assert watcher.errors == [], watcher.errors
    finally:
        close_context(context)


def test_a_bad_link_shows_a_message_not_a_traceback(chromium, voila_fixture_app):
    url = f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb?p1.lr=70&p1.momentum=0.9"
    context, page, watcher = open_page(chromium, url)
    try:
        wait_for_dashboard(page)
        note = page.locator(".lecture-link-note", has_text="Part of the link was ignored")
        note.wait_for(timeout=LOAD_TIMEOUT_MS)
        text = note.inner_text()
        assert "p1.lr=70: 70 is outside [0.01, 1]" in text and "p1.momentum (this panel has no such control" in text
        assert "Traceback" not in page.inner_text("body")
        assert float(page.locator(".lecture-panel .widget-readout").first.inner_text()) == 0.1
        assert watcher.errors == [], watcher.errors
    finally:
        close_context(context)


def test_png_and_svg_export_download_every_figure(chromium, voila_fixture_app, tmp_path):
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/panel_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        for fmt, magic in (("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<svg")):
            with page.expect_download(timeout=30_000) as info:
                panel.locator(f".lecture-tool[data-action={fmt}]").click()
            download = info.value
            assert download.suggested_filename == f"panel_demo-panel1.{fmt}"
            target = tmp_path / download.suggested_filename
            download.save_as(target)
            data = target.read_bytes()
            assert data.startswith(magic), data[:40]
            if fmt == "svg":
                assert b"h = 4" in data            # the legend made it into the vector file
            else:
                width = int.from_bytes(data[16:20], "big")
                on_screen = panel.evaluate("(p) => p.querySelector('.js-plotly-plot')._fullLayout.width")
                assert width == 2 * on_screen, f"PNG is {width} px wide for a {on_screen} px figure: want 2x"
        assert watcher.errors == [], watcher.errors
    finally:
        close_context(context)
