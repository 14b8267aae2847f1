"""The browser harness itself: a Chromium that stops answering ends the test's wait, not the suite.

Chromium twice never answered a call (a context's close, a page's evaluate) in a full run of the suite, and
the suite waited until pytest-timeout. :func:`browser_helpers.close_context` bounds that wait by ending the
browser; the suite's ``chromium`` fixture then starts a new one.
"""
from __future__ import annotations

import time

import pytest

from browser_helpers import RestartingBrowser, close_context, launch, new_page

pytestmark = pytest.mark.browser


class HungContext:
    """A context whose close never returns by itself: it waits on a page's promise that never settles."""

    def __init__(self, page):
        self.page, self.browser = page, page.context.browser

    def close(self):
        self.page.evaluate("() => new Promise(() => {})")


@pytest.fixture
def playwright(chromium):
    """The session's Playwright (a process may run only one): these tests launch their own browsers in it."""
    return chromium.playwright


@pytest.mark.timeout(120)      # without the watchdog, the close would wait forever
def test_a_close_chromium_never_answers_ends_the_browser_and_the_next_test_gets_a_new_one(playwright):
    browser = RestartingBrowser(playwright)
    first = browser.current()
    context, page, _ = new_page(browser)
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="did not close a browser context within 1 s"):
        close_context(HungContext(page), timeout_s=1.0)
    assert time.monotonic() - start < 20
    assert not first.is_connected()
    context, page, _ = new_page(browser)                # the next test's page: a new browser
    assert browser.current() is not first and page.evaluate("() => 1 + 1") == 2
    close_context(context)
    browser.current().close()


def test_a_close_that_answers_leaves_the_browser_alone(playwright, recwarn):
    browser = launch(playwright)
    context, _, _ = new_page(browser)
    close_context(context, timeout_s=30.0)
    assert browser.is_connected() and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    browser.close()
