"""Scrubbing a batched family in the browser (lecture_lib.viz.scrub) on the fixture tests/fixtures/scrub_demo.ipynb.

The fixture draws y = a·x + b for five slopes a computed at once; the scrub slider (a range input)
switches a in the page, the b slider recomputes the family in the kernel.
"""
from __future__ import annotations

import numpy as np

from browser_helpers import REDRAW_TIMEOUT_MS, open_page, wait_for_dashboard

SLOPES = (0.5, 1.0, 2.0, 3.0, 4.0)
X = np.linspace(0.0, 1.0, 50)
PLOTTED_Y_JS = "(panel) => Array.from(panel.querySelector('.js-plotly-plot').data[0].y)"
READY_JS = "(panel) => { const s = panel.querySelector('.lecture-scrub'); return s && s.dataset.ready === '1'; }"
INDEX_IS_JS = "([panel, i]) => +panel.querySelector('.lecture-scrub').dataset.index === i"
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
        scrubber = panel.locator(".lecture-scrub input[type=range]")
        scrubber.focus()
        for _ in range(2):
            page.keyboard.press("ArrowRight")                 # a person's keyboard: 1.0 -> 2.0 -> 3.0
        page.wait_for_function(INDEX_IS_JS, arg=[panel.element_handle(), 3], timeout=5_000)
        page.wait_for_function(Y_IS_JS, arg=[panel.element_handle(), list(SLOPES[3] * X)], timeout=5_000)
        assert panel.locator(".lecture-scrub-value").inner_text() == "3"
        panel.locator(".lecture-notes", has_text="slope 3").wait_for(timeout=REDRAW_TIMEOUT_MS)
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
        context.close()
