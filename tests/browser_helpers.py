"""The browser side of the app's tests and benchmarks, written once: Chromium, pages, plots, panels.

Used by ``tests/test_browser.py``, ``test_load.py``, ``test_presenter.py``, ``test_security.py``
(through ``conftest.py``'s ``chromium`` fixture too) and by ``benchmarks/concurrent_visitors.py`` and
``benchmarks/hub_users.py`` (which put ``tests/`` on ``sys.path``). Playwright is imported by the
callers; nothing here starts a browser on import.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from pathlib import Path

CHROMIUM = os.environ.get("LECTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}
LOAD_TIMEOUT_MS = 240_000     # a pre-heated kernel may still be executing its notebook right after start-up
REDRAW_TIMEOUT_MS = 90_000

# A plot has a drawn trace: a path of a scatter trace with real geometry (an empty trace draws "M0,0").
PLOT_PATH = ".js-plotly-plot .scatterlayer .trace path"
PANEL_PLOT_PATH = f".lecture-panel {PLOT_PATH}"
HAS_DRAWN_PATH_JS = """(sel) => Array.from(document.querySelectorAll(sel))
    .some(p => (p.getAttribute('d') || '').length > 8)"""
# The panel's hidden state element (lecture_lib.viz.panels): which request is drawn, and whether work is
# pending. It is updated right after the figure, over the same websocket, so "newer generation, not busy"
# means the new data has reached the page's plots.
PANEL_STATE_JS = """(panel) => { const s = panel.querySelector('.lecture-state span');
    return s ? {generation: +s.dataset.generation, busy: s.dataset.busy === '1', outcome: s.dataset.outcome}
             : {generation: -1, busy: true, outcome: 'none'}; }"""
SETTLED_JS = f"([panel, g]) => {{ const s = ({PANEL_STATE_JS})(panel); return s.generation > g && !s.busy; }}"
SLIDER_HANDLE = ".lecture-control .noUi-handle"
# voila_app.figure_widget: the figures' views report their redraws to the kernel when the page is idle
REPORTS_SENT_JS = "() => !window.lectureReportsPending"


CLOSE_TIMEOUT_S = 30.0        # closing a context takes well under a second; see close_context
_BROWSER_PIDS: dict[int, int] = {}      # id(Browser) -> pid of its Chromium browser process


def _chromium_browser_pids() -> set[int]:
    """Our Chromium browser processes (children of Playwright's driver, not renderers or helpers)."""
    import psutil

    pids = set()
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = proc.cmdline()
            if any(a == "--remote-debugging-pipe" for a in cmd) and not any(a.startswith("--type=") for a in cmd):
                pids.add(proc.pid)
    return pids


def launch(playwright):
    """Debian's headless Chromium (no browser download ever). Its process is remembered, so that
    :func:`close_context` can end it if it stops answering."""
    before = _chromium_browser_pids()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    started = _chromium_browser_pids() - before
    if len(started) == 1:
        _BROWSER_PIDS[id(browser)] = started.pop()
    return browser


def kill_browser(browser) -> bool:
    """End ``browser``'s Chromium and every process it started; whether there was one to end."""
    import psutil

    pid = _BROWSER_PIDS.pop(id(browser), None)
    if pid is None:
        return False
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    return True


class RestartingBrowser:
    """A Chromium for a whole session that is started again if :func:`close_context` had to end it; every
    attribute is the current browser's."""

    def __init__(self, playwright):
        self.playwright = playwright
        self.browser = launch(playwright)

    def current(self):
        if id(self.browser) not in _BROWSER_PIDS or not self.browser.is_connected():
            self.browser = launch(self.playwright)
        return self.browser

    def __getattr__(self, name):
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"RestartingBrowser({self.browser!r})"


def close_context(context, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close a browser context; if Chromium has not answered within ``timeout_s``, end the browser.

    In two of about ten full runs of the suite (and once in CI), Chromium never answered a close (or an
    evaluate) of a page that had already passed its test, and the suite hung until pytest-timeout. It never
    happened when the test ran alone. Ending the browser makes Playwright's pending call return; the suite's
    ``chromium`` fixture starts a new browser for the next test, and a warning says it happened.
    """
    browser = context.browser
    fired = threading.Event()

    def end() -> None:
        if kill_browser(browser):
            fired.set()

    timer = threading.Timer(timeout_s, end)
    timer.daemon = True
    timer.start()
    try:
        context.close()
    except Exception:                   # Playwright's "browser has been closed", once the timer ended it
        if not fired.is_set():
            raise
    finally:
        timer.cancel()
    if fired.is_set():
        warnings.warn(f"Chromium did not close a browser context within {timeout_s:.0f} s; the browser was "
                      "ended and is started again", RuntimeWarning, stacklevel=2)


class Watcher:
    """Collects uncaught page errors, console errors and requested URLs of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.requests: list[str] = []             # every URL the page asked for
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error" else None)


def new_page(browser, viewport=VIEWPORT, init_script: str | None = None):
    """A fresh browser context (own cookies, so its own kernel) with one page, watched for errors, not navigated."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    return context, page, Watcher(page)


def open_page(browser, url: str, viewport=VIEWPORT, wait_until: str = "domcontentloaded",
              timeout_ms: int = LOAD_TIMEOUT_MS):
    """:func:`new_page` on ``url``: ``(context, page, watcher)``."""
    context, page, watcher = new_page(browser, viewport)
    page.goto(url, wait_until=wait_until, timeout=timeout_ms)
    return context, page, watcher


def wait_for_dashboard(page, timeout_ms: int = LOAD_TIMEOUT_MS) -> float:
    """Seconds until the first plot of a panel of the page has a drawn trace."""
    start = time.monotonic()
    page.wait_for_function(HAS_DRAWN_PATH_JS, arg=PANEL_PLOT_PATH, timeout=timeout_ms)
    return time.monotonic() - start


def kernel_id(page) -> str:
    """The id of the kernel a dashboard page was given."""
    return json.loads(page.locator("#jupyter-config-data").text_content())["kernelId"]


def slider_panels(page):
    """The page's panels that have a slider."""
    return page.locator(".lecture-panel").filter(has=page.locator(SLIDER_HANDLE))


def slider_state(handle) -> tuple[float, float, float]:
    """A slider handle's ``(value, min, max)``."""
    get = handle.get_attribute
    return float(get("aria-valuenow") or 0), float(get("aria-valuemin") or 0), float(get("aria-valuemax") or 0)


def move_slider(page, panel, presses: int = 3) -> None:
    """Move the panel's first slider a few steps with the keyboard, as a user would (left if at the end)."""
    handle = panel.locator(SLIDER_HANDLE).first
    handle.scroll_into_view_if_needed()
    now, _, high = slider_state(handle)
    handle.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowLeft" if now >= high else "ArrowRight")


def wait_until_settled(page, panel, generation: int, timeout_ms: int = REDRAW_TIMEOUT_MS) -> dict:
    """Wait until the panel has drawn a request newer than ``generation`` and has nothing pending; its state."""
    page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), generation], timeout=timeout_ms)
    return panel.evaluate(PANEL_STATE_JS)


def assert_no_cell_errors(page, name: str) -> None:
    text = page.inner_text("body")
    assert "There was an error when executing cell" not in text, f"{name}: a cell raised:\n{text[-2000:]}"
    failures = page.locator(".lecture-message .lecture-error", has_text="Something went wrong")
    assert failures.count() == 0, f"{name}: a panel failed: {failures.first.inner_text()}"


def plotly_page(path: Path, figures, width: int) -> str:
    """Write a static page that draws ``figures`` with plotly.js, each ``width`` px wide; its URL. In the page,
    ``window.figs`` holds the promises of their graph divs, resolved once plotted."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    path.write_text("<html><body><script>" + get_plotlyjs() + "</script>" + "".join(
        f"<div id='f{i}' style='width:{width}px'></div>" for i in range(len(figures))) + "<script>window.figs = ["
        + ",".join(pio.to_json(f) for f in figures) + "].map((f, i) => Plotly.newPlot('f' + i, f.data, f.layout));"
        "</script></body></html>")
    return path.as_uri()
