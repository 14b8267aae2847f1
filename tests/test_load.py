"""A class at once: concurrent visitors, a slider storm on every dashboard, nothing left behind.

The visitor machinery (separate browser contexts, in-page timing, server memory) is
``benchmarks/concurrent_visitors.py``'s; the benchmark measures 10 visitors on a real
dashboard, these tests check the guarantees with few visitors so CI stays quick.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from benchmarks.concurrent_visitors import (PLOT_DATA_JS, PROBE_JS, WATCH_STATE_JS, Visitor, close_visitors, move_all,
                                            open_visitors, server_memory, settle, wait_open)
from browser_helpers import (close_context, LOAD_TIMEOUT_MS, PANEL_STATE_JS, SETTLED_JS, SLIDER_HANDLE, kernel_id, open_page,
                             slider_panels, slider_state, wait_for_dashboard)
from conftest import FIXTURES_DIR, notebook_paths, running_voila

pytestmark = pytest.mark.browser

VISITORS = 3
POOL = len(list(FIXTURES_DIR.glob("*.ipynb")))   # one pre-heated kernel per fixture notebook
STORM = 30                 # rapid slider moves on each dashboard
SETTLE_TIMEOUT_MS = 120_000


# -- many visitors at once, and what they leave behind ----------------------------------

@pytest.fixture(scope="module")
def class_app(kernel_name):
    """The fixture dashboard (one LivePanel) served as in class, pool of one, on a server of its own
    so that its memory and kernels are only this module's."""
    with running_voila(FIXTURES_DIR, log_name="voila-load") as app:
        yield app


@pytest.fixture(scope="module")
def class_visit(chromium, class_app):
    """Three visitors open the dashboard at the same moment, each moves the slider twice (all
    at once), then they close their tabs. Records the server's memory and kernels before
    (pre-heated pool only, after one earlier visitor has paid the server's one-time costs),
    at the peak and after."""
    url = f"{class_app.url}/voila/render/panel_demo.ipynb"
    pid = class_app.proc.pid
    warm = open_visitors(chromium, url, 1)
    wait_open(warm, timeout_ms=LOAD_TIMEOUT_MS)
    close_visitors(warm)
    before_rss, before_kernels = settle(pid, kernels=POOL)
    visitors = open_visitors(chromium, url, VISITORS)
    wait_open(visitors, timeout_ms=LOAD_TIMEOUT_MS)
    ids = [kernel_id(v.page) for v in visitors]
    peak_rss, peak_kernels = server_memory(pid)
    move_all(visitors, moves=2, timeout_ms=SETTLE_TIMEOUT_MS)
    close_visitors(visitors)
    after_rss, after_kernels = settle(pid, kernels=POOL)
    return {"visitors": visitors, "kernel_ids": ids, "before": (before_rss, before_kernels),
            "peak": (peak_rss, peak_kernels), "after": (after_rss, after_kernels)}


def test_concurrent_visitors_each_see_their_plot_update(class_visit):
    visitors = class_visit["visitors"]
    assert len(set(class_visit["kernel_ids"])) == VISITORS, "every visitor has a kernel of their own"
    assert class_visit["peak"][1] >= VISITORS, "the visitors' kernels ran side by side"
    for v in visitors:
        assert v.open_s is not None and v.open_s > 0
        assert v.updated == [True, True], f"visitor {v.index}: plot updated after each move: {v.updated}"
        assert v.errors == [], f"visitor {v.index}: {v.errors}"


def test_kernels_and_memory_return_after_visitors_leave(class_visit, class_app):
    """Closing the tabs shuts every visitor's kernel down; the server is back to its pre-heated
    pool, and its resident memory (Voila plus kernels) within 10 % of what it was before."""
    (before, _), (after, after_kernels) = class_visit["before"], class_visit["after"]
    log = class_app.log(tail=None)
    for kid in class_visit["kernel_ids"]:
        assert f"Kernel shutdown: {kid}" in log, f"visitor kernel {kid} still running"
    assert after_kernels == POOL, "only the pre-heated kernels are left"
    assert abs(after - before) <= 0.10 * before, (f"RSS {after / 2**20:.0f} MB after the visitors left, "
                                                  f"{before / 2**20:.0f} MB before")


def test_kernels_talk_to_the_server_over_unix_sockets(class_visit, class_app):
    """Every kernel of the server (pool and visitors) was started with the ``ipc`` transport: no TCP ports,
    so 30 kernels starting at once cannot lose one to a port taken in between (``ZMQError: Address already
    in use``, seen with a pool of 30 over TCP)."""
    import psutil

    files = [arg for p in psutil.Process(class_app.proc.pid).children(recursive=True)
             for arg in p.cmdline() if arg.endswith(".json") and "kernel-" in arg]
    assert len(files) == POOL, f"one connection file per pre-heated kernel: {files}"
    for path in files:
        with open(path) as f:
            info = json.load(f)
        assert info["transport"] == "ipc", f"{path}: {info['transport']}"
        assert not info["ip"].startswith("127."), info["ip"]
    assert "Address already in use" not in class_app.log(tail=None)


# -- a visitor on a slow connection --------------------------------------------------------

SLOW_BYTES_PER_S = 1.5 * 2**20      # 12 Mbit/s: a student's share of lecture-hall WiFi


def test_plotly_bundle_is_compressed_and_cached(class_app):
    """The figure front end (1.6 MB with the cartesian plotly.js) goes out gzip-compressed and answers a revalidation with 304, and so do
    Voila's scripts; dashboard pages do not ask the browser to preload it (a ``modulepreload`` made panels fail
    with "widget model not found", see ``voila_app.bundle``)."""
    url = f"{class_app.url}/voila/static/widgetbundle.js"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept-Encoding": "gzip"}), timeout=60) as r:
        body, etag = r.read(), r.headers["ETag"]
        assert r.headers["Content-Encoding"] == "gzip" and len(body) < 2 * 2**20
    with urllib.request.urlopen(url, timeout=60) as r:           # a client without gzip gets it plain
        plain = r.read()
        assert r.headers.get("Content-Encoding") is None and len(plain) > 2.5 * len(body)
    request = urllib.request.Request(url, headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=60)
    assert not_modified.value.code == 304
    page = urllib.request.Request(f"{class_app.url}/voila/render/panel_demo.ipynb", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(page, timeout=240) as r:
        assert "modulepreload" not in (r.headers["Link"] or "")
        # a page holds its kernel's id: never compressed (voila_app.static_gzip)
        assert r.headers.get("Content-Encoding") is None
        r.read()
    # Voila's own JavaScript (about 3 MB of chunks a page loads) goes out compressed as well
    script = f"{class_app.url}/voila/static/voila.js"
    with urllib.request.urlopen(urllib.request.Request(script, headers={"Accept-Encoding": "gzip"}), timeout=60) as r:
        assert r.headers["Content-Encoding"] == "gzip"


def test_a_visitor_on_a_slow_connection_gets_plots_that_follow_the_slider(chromium, class_app):
    """anywidget gives a figure 2 s to load its front end; on a 1.5 MB/s line the plain 5 MB
    bundle took longer and the plot stayed frozen on its first drawing (every try, before
    ``voila_app.bundle``). Throttled in Chromium, the plot must follow the slider."""
    visitors = []
    context = chromium.new_context()
    try:
        context.add_init_script(PROBE_JS)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20,
                                                      "downloadThroughput": SLOW_BYTES_PER_S,
                                                      "uploadThroughput": SLOW_BYTES_PER_S})
        visitor = Visitor(0, context, page)
        page.on("pageerror", lambda exc: visitor.errors.append(f"pageerror: {exc}"))
        visitors.append(visitor)
        page.goto(f"{class_app.url}/voila/render/panel_demo.ipynb", wait_until="commit", timeout=LOAD_TIMEOUT_MS)
        wait_open(visitors, timeout_ms=LOAD_TIMEOUT_MS)
        move_all(visitors, moves=1, timeout_ms=SETTLE_TIMEOUT_MS)
        assert visitor.updated == [True], "the plot did not follow the slider"
        assert visitor.errors == [], visitor.errors
    finally:
        if visitors:
            close_visitors(visitors)
        else:
            close_context(context)


# -- a slider storm on every dashboard -----------------------------------------------------

def _wait_quiet(page, panel, generation: int, quiet_s: float = 2.5, timeout_s: float = 120.0) -> dict:
    """Wait until the panel has drawn something newer than ``generation``, has nothing pending,
    and its state has not changed for ``quiet_s`` (the widget front end may still be holding
    the last slider value back until the kernel is idle)."""
    page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), generation], timeout=SETTLE_TIMEOUT_MS)
    deadline = time.monotonic() + timeout_s
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = panel.evaluate("(panel) => panel.__lectureStates.length")
        if n != count:
            count, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s and not panel.evaluate(PANEL_STATE_JS)["busy"]:
            return panel.evaluate(PANEL_STATE_JS)
        time.sleep(0.25)
    raise AssertionError("the panel never came to rest")


def _drawn(panel) -> str:
    """What the panel shows: every plot's data, and the notes under it."""
    return panel.evaluate(PLOT_DATA_JS) + "|" + panel.locator(".lecture-notes").inner_text()


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_slider_storm_leaves_the_final_value_drawn(chromium, voila_app, path):
    """30 key presses on a slider as fast as the browser sends them (one step on, one back, one on,
    ten times: it ends elsewhere even on a three-value slider): the kernel stays alive,
    the drawn generation never goes backwards (no stale result drawn over a newer one), and
    what the panel shows at rest is what it shows when the final value is asked for alone
    (one step away and back: the final value is then a single request)."""
    context, page, watcher = open_page(chromium, f"{voila_app.url}/voila/render/{path.name}")
    errors = watcher.errors
    try:
        wait_for_dashboard(page)
        panel = slider_panels(page).first
        panel.evaluate(WATCH_STATE_JS)
        start = _wait_quiet(page, panel, -1, quiet_s=0.5)
        handle = panel.locator(SLIDER_HANDLE).first
        handle.scroll_into_view_if_needed()
        now, low, high = slider_state(handle)
        up, down = ("ArrowRight", "ArrowLeft") if high - now >= now - low else ("ArrowLeft", "ArrowRight")
        handle.focus()
        for key in [up, down, up] * (STORM // 3):     # net ten steps (fewer at the end of the range)
            page.keyboard.press(key)
        final_value = handle.get_attribute("aria-valuenow")
        assert float(final_value) != now, "the storm did not move the slider"
        rest = _wait_quiet(page, panel, start["generation"])
        history = panel.evaluate("(panel) => panel.__lectureStates")
        generations = [s["generation"] for s in history]
        assert generations == sorted(generations), f"a stale result was drawn over a newer one: {generations}"
        assert rest["outcome"] == "ok", f"after the storm the panel shows {rest['outcome']!r}"
        with urllib.request.urlopen(f"{voila_app.url}/api/kernels/{kernel_id(page)}", timeout=30) as r:
            assert json.loads(r.read())["execution_state"] in {"idle", "busy"}, "the kernel died"
        after_storm = _drawn(panel)

        away_key, back_key = ("ArrowLeft", "ArrowRight") if float(final_value) >= high else ("ArrowRight", "ArrowLeft")
        handle.focus()
        page.keyboard.press(away_key)                 # one step away ...
        away = _wait_quiet(page, panel, rest["generation"], quiet_s=0.5)
        page.keyboard.press(back_key)                 # ... and back: the final value, requested alone
        back = _wait_quiet(page, panel, away["generation"], quiet_s=0.5)
        assert handle.get_attribute("aria-valuenow") == final_value
        assert back["outcome"] == "ok"
        assert _drawn(panel) == after_storm, "the plot after the storm is not the one of the final slider value"
        assert errors == [], f"JavaScript errors: {errors}"
    finally:
        page.close(run_before_unload=True)            # the tab closes: Voila shuts its kernel down
        close_context(context)


# -- a visitor on the wire (the benchmark's stand-in for a browser on another machine) --------

def test_a_wire_visitor_asks_what_a_page_asks_and_sees_its_panel_redraw(chromium, class_app):
    """``benchmarks.wire_visitor``: fetches what a real page of this server fetched, gets every widget's state
    over the kernel websocket, finds the page's first slider panel, and each slider step it sends makes the
    kernel draw a new generation with new figure data; closing shuts its kernel down."""
    from benchmarks.wire_visitor import WireClass, static_paths

    path = "/voila/render/panel_demo.ipynb"
    browser_visit = open_visitors(chromium, class_app.url + path, 1)
    wait_open(browser_visit, timeout_ms=LOAD_TIMEOUT_MS)
    files = static_paths(browser_visit[0].requests, class_app.url, path)
    close_visitors(browser_visit)
    assert any(f.endswith("widgetbundle.js") for f in files) and any("voila" in f and f.endswith(".js") for f in files)
    wire = WireClass(class_app.url, path, files, indices=[0, 1])
    try:
        wire.start_open([0.0, 0.5]).result(LOAD_TIMEOUT_MS / 1000)
        for _ in range(2):
            wire.move_all(timeout=SETTLE_TIMEOUT_MS / 1000)
        for v in wire.visitors:
            assert v.errors == [], v.errors
            assert v.open_s is not None and v.page_s <= v.open_s
            assert v.updated == [True, True] and len(v.latencies) == 2 and all(t > 0 for t in v.latencies)
        kernels = [v.kernel_id for v in wire.visitors]
        assert len(set(kernels)) == 2
    finally:
        wire.close_all()
    deadline = time.monotonic() + 60              # (other tests of this server may leave kernels of their own)
    while not all(f"Kernel shutdown: {k}" in class_app.log(tail=None) for k in kernels) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(f"Kernel shutdown: {k}" in class_app.log(tail=None) for k in kernels), "the wire visitors' kernels shut down"
