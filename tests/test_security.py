"""What a visitor of the app can and cannot do: listen address, code execution, sources, tracebacks.

The app is served (``python -m voila_app``, the configuration students get) from a
temporary folder holding two tiny notebooks without PyTorch, so the server starts in
seconds: ``tiny.ipynb`` (a slider whose callback raises; its source holds a marker that
must never be served) and ``broken.ipynb`` (a cell that raises while the page renders).
The attacks are written as a visitor would try them: with the cookies and the kernel id
that the dashboard page hands out.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import nbformat
import psutil
import pytest
import websocket
from jupyter_server.services.kernels.connection.base import (deserialize_msg_from_ws_v1,
                                                             serialize_msg_to_ws_v1)
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from browser_helpers import close_context, kernel_id, new_page, open_page
from conftest import running_voila

SOURCE_MARKER = "source-marker-5e1d"          # only in the notebooks' code: must never be served
RENDER_MARKER = "render-traceback-marker-91c2"      # raised while the page renders
CALLBACK_MARKER = "callback-traceback-marker-3b7a"  # raised by a widget callback after a slider move
V1 = "v1.kernel.websocket.jupyter.org"
# What Voila forwards from a page to its kernel; everything else is dropped by the server.
ALLOWED = {"comm_open", "comm_close", "comm_msg", "comm_info_request", "kernel_info_request", "shutdown_request"}


def _notebooks(folder):
    folder.mkdir()
    tiny = new_notebook(cells=[
        new_markdown_cell("# Tiny\n\n*Can a visitor run code?*"),
        new_code_cell("import ipywidgets as widgets\n"
                      f"SOURCE_MARKER = {SOURCE_MARKER!r}\n"
                      "slider = widgets.IntSlider(value=3, min=0, max=10, description='n')\n"
                      "def on_change(change):\n"
                      f"    raise RuntimeError({CALLBACK_MARKER!r} + ' ' + SOURCE_MARKER)\n"
                      "slider.observe(on_change, names='value')\n"
                      "slider")])
    broken = new_notebook(cells=[
        new_markdown_cell("# Broken\n\n*Does a traceback reach the page?*"),
        new_code_cell(f"SOURCE_MARKER = {SOURCE_MARKER!r}\n"
                      "def fail():\n"
                      f"    raise RuntimeError({RENDER_MARKER!r} + ' ' + SOURCE_MARKER)\n"
                      "fail()")])
    nbformat.write(tiny, folder / "tiny.ipynb")
    nbformat.write(broken, folder / "broken.ipynb")
    return folder


@pytest.fixture(scope="module")
def security_app(tmp_path_factory, kernel_name):
    with running_voila(_notebooks(tmp_path_factory.mktemp("security") / "notebooks"), "voila-security") as app:
        yield app


def _opener():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def _get(opener, url, timeout=60):
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


# -- where the app listens ------------------------------------------------------------------

@pytest.mark.browser
def test_app_and_its_kernels_listen_on_loopback_only(security_app):
    """Without ``--ip`` the app binds 127.0.0.1, and the kernels' ZMQ ports are loopback too."""
    voila = psutil.Process(security_app.proc.pid)
    # the server answers before its pool has started the kernels (once, on a busy 2-core machine, none was up yet)
    assert security_app.wait_preheated(["tiny.ipynb"], timeout=240), "the kernel pool was not filled in 240 s"
    listening = [c for c in voila.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", security_app.port)]
    kernels = voila.children(recursive=True)
    assert kernels, "the pre-heated kernels should be running"
    for kernel in kernels:
        for c in kernel.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                assert c.laddr.ip == "127.0.0.1", f"kernel {kernel.pid} listens on {c.laddr}"


# -- code execution through the page's kernel websocket -------------------------------------

def _message(msg_type, content, channel):
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": uuid.uuid4().hex,
              "username": "visitor", "version": "5.3", "date": "2024-01-01T00:00:00.000000Z"}
    return channel, {"header": header, "parent_header": {}, "metadata": {}, "content": content}


def _attacks(target):
    code = f"open({str(target)!r}, 'w').write('executed')"
    execute = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    return [
        _message("execute_request", execute, "shell"),
        _message("execute_request", execute, "control"),     # ipykernel would run it on either
        # the debugger evaluates expressions; history and inspection would leak the hidden code
        _message("debug_request", {"type": "request", "seq": 1, "command": "evaluate",
                                   "arguments": {"expression": code, "context": "repl"}}, "control"),
        _message("history_request", {"output": False, "raw": True, "hist_access_type": "tail", "n": 100}, "shell"),
        _message("inspect_request", {"code": "SOURCE_MARKER", "cursor_pos": 13, "detail_level": 1}, "shell"),
        _message("complete_request", {"code": "SOURCE_", "cursor_pos": 7}, "shell"),
    ]


class KernelSocket:
    """A websocket to ``/api/kernels/<id>/channels``, opened with the page's cookies (legacy JSON or v1)."""

    def __init__(self, app, kernel_id, cookie, protocol):
        self.protocol = protocol
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{app.port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
            cookie=cookie, origin=app.url, subprotocols=[protocol] if protocol else None, timeout=5)

    def send(self, channel, msg):
        if self.protocol == V1:
            self.ws.send_binary(serialize_msg_to_ws_v1(msg, channel, pack=lambda d: json.dumps(d).encode()))
        else:
            self.ws.send(json.dumps({**msg, "channel": channel, "buffers": []}))

    def replies(self, until_type, timeout=30.0):
        """(channel, msg_type) of everything received until ``until_type`` arrives, plus two quiet seconds."""
        seen, deadline, stop = [], time.monotonic() + timeout, None
        while time.monotonic() < (deadline if stop is None else min(deadline, stop)):
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(frame, bytes):
                channel, parts = deserialize_msg_from_ws_v1(frame)
                seen.append((channel, json.loads(parts[0])["msg_type"]))
            else:
                msg = json.loads(frame)
                seen.append((msg.get("channel"), msg["msg_type"]))
            if seen[-1][1] == until_type and stop is None:
                stop = time.monotonic() + 2.0
        return seen

    def close(self):
        self.ws.close()


@pytest.mark.browser
def test_a_visitor_cannot_execute_code_through_the_kernel_websocket(chromium, security_app, tmp_path):
    """The attack: take the kernel id and cookies the dashboard page got, open the kernel's
    websocket as the page does, and send an ``execute_request`` that would create a file
    (and other requests that would run or reveal code). Voila 0.5 drops every message type
    but comm and kernel-info ones (``MappingKernelManager.allowed_message_types``), on every
    channel and in both websocket protocols; a ``kernel_info_request`` sent after the attack
    is answered, so the messages did reach a live kernel's server side and were dropped there."""
    context, page, _ = open_page(chromium, f"{security_app.url}/voila/render/tiny.ipynb", timeout_ms=120_000)
    try:
        page.locator(".widget-slider").first.wait_for(timeout=120_000)
        kernel = kernel_id(page)
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies())
        assert "_xsrf=" in cookie
        target = tmp_path / "executed.txt"
        for protocol in (None, V1):
            sock = KernelSocket(security_app, kernel, cookie, protocol)
            try:
                for channel, msg in _attacks(target):
                    sock.send(channel, msg)
                sock.send(*_message("kernel_info_request", {}, "shell"))
                seen = sock.replies(until_type="kernel_info_reply")
            finally:
                sock.close()
            types = {t for _, t in seen}
            assert "kernel_info_reply" in types, f"{protocol or 'legacy'}: the kernel did not answer: {seen}"
            leaked = types & {"execute_reply", "execute_input", "execute_result", "stream", "error", "debug_reply",
                              "history_reply", "inspect_reply", "complete_reply"}
            assert not leaked, f"{protocol or 'legacy'} protocol: the kernel ran the attack: {seen}"
            assert not target.exists(), f"{protocol or 'legacy'} protocol: the execute_request was executed"
        log = security_app.log(tail=None)
        for msg_type in ("execute_request", "debug_request", "history_request", "inspect_request"):
            assert f'Received message of type "{msg_type}", which is not allowed' in log
        # the page itself still works: its slider talks to the same kernel over comm messages
        assert page.locator(".widget-slider").count() == 1
    finally:
        close_context(context)


def test_voila_forwards_only_widget_and_kernel_info_messages():
    """The allow-list behind the test above, as Voila configures its kernel manager."""
    import inspect

    from voila import app as voila_app

    source = inspect.getsource(voila_app.Voila.init_settings)
    allowed = re.search(r"allowed_message_types=\[(.*?)\]", source, re.S).group(1)
    assert {s.strip().strip('"\'') for s in allowed.split(",") if s.strip()} == ALLOWED


# -- sources and tracebacks ------------------------------------------------------------------

SOURCE_URLS = {
    # path -> the statuses that are acceptable (200 only where the answer is a page without code)
    "/voila/files/tiny.ipynb": {403, 404},
    "/voila/files/..%2Ftiny.ipynb": {403, 404},
    "/files/tiny.ipynb": {404},
    "/api/contents": {404},
    "/api/contents/tiny.ipynb": {404},
    "/api/contents/tiny.ipynb?content=1&format=text": {404},
    "/voila/api/contents/tiny.ipynb?content=1&format=text": {200},   # metadata only, content null
    "/notebooks/tiny.ipynb": {404},
    "/tree": {404},
    "/lab": {404},
    "/lab/tree/tiny.ipynb": {404},
    "/edit/tiny.ipynb": {404},
    "/nbconvert/script/tiny.ipynb": {404},
    "/api/kernels": {404, 405},
    "/api/sessions": {404},
    "/voila/static/..%2F..%2Ftiny.ipynb": {403, 404},
    "/voila/render/tiny.ipynb?download": {200},
    "/voila/render/tiny.ipynb?download=1&format=notebook": {200},
    "/voila/render/tiny.ipynb?template=lab": {200},
    "/voila/render/tiny.ipynb?template=classic": {200},
    "/voila/render/tiny.ipynb?template=reveal": {200},
    "/voila/render/tiny.ipynb?template=base": {200},
}


@pytest.mark.browser
def test_notebook_sources_are_not_served(security_app):
    """No URL a visitor might try returns a notebook's code; rendered pages have it stripped,
    and ``?template=`` cannot swap in another template (``base`` used to hang the request)."""
    opener, _ = _opener()
    status, landing = _get(opener, security_app.url + "/")
    assert status == 200 and SOURCE_MARKER not in landing
    for path, statuses in SOURCE_URLS.items():
        start = time.monotonic()
        status, body = _get(opener, security_app.url + path, timeout=60)
        assert status in statuses, f"{path}: HTTP {status}"
        assert SOURCE_MARKER not in body, f"{path} serves notebook source"
        assert "Traceback" not in body, f"{path} answers with a traceback"
        if path.startswith("/voila/render/"):
            assert 'class="lecture-nav"' in body, f"{path} is not rendered with the app's template"
            assert "window.voila_finish()" in body, f"{path}: the page never finished"
            assert time.monotonic() - start < 60
        if path.startswith("/voila/api/contents/"):
            assert json.loads(body)["content"] is None


@pytest.mark.browser
def test_kernels_of_other_visitors_cannot_be_listed(security_app):
    """A visitor only learns the kernel id of their own page: there is no kernel or session listing."""
    opener, _ = _opener()
    for path in ("/api/kernels", "/api/kernels/", "/api/sessions", "/voila/api/kernels", "/api/kernelspecs"):
        status, body = _get(opener, security_app.url + path)
        assert status in {404, 405}, f"{path}: HTTP {status}: {body[:200]}"
        assert "Traceback" not in body


@pytest.mark.browser
def test_tracebacks_never_reach_the_page(chromium, security_app):
    """A cell that raises while the page renders, and a widget callback that raises after a
    slider move: neither the traceback nor the error message reaches the page, in its HTML,
    its text or any websocket frame it receives."""
    context, page, _ = new_page(chromium)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
        payload if isinstance(payload, str) else payload.decode("utf-8", errors="replace"))))
    try:
        opener, _ = _opener()
        status, html = _get(opener, f"{security_app.url}/voila/render/broken.ipynb")
        assert status == 200 and "window.voila_finish()" in html
        assert RENDER_MARKER not in html and "Traceback" not in html

        page.goto(f"{security_app.url}/voila/render/broken.ipynb", wait_until="load", timeout=120_000)
        page.wait_for_function("() => document.querySelector('#rendered_cells') && "
                               "getComputedStyle(document.querySelector('#rendered_cells')).display !== 'none'",
                               timeout=120_000)
        for where in (page.content(), page.inner_text("body")):
            assert RENDER_MARKER not in where and SOURCE_MARKER not in where and "Traceback" not in where

        page.goto(f"{security_app.url}/voila/render/tiny.ipynb", wait_until="load", timeout=120_000)
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.wait_for(timeout=120_000)
        handle.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        # the callbacks did run and raise: the server logged what it kept from the page
        def arrived():
            return (f"not sent to the page: RuntimeError: {CALLBACK_MARKER}" in security_app.log(tail=None)
                    or any(CALLBACK_MARKER in f for f in frames))

        deadline = time.monotonic() + 30
        while not arrived():
            assert time.monotonic() < deadline, "the slider callback never ran: nothing logged, nothing sent"
            time.sleep(0.3)
        time.sleep(1.0)       # the other moves' callbacks
        received = "\n".join(frames)
        for where in (page.content(), page.inner_text("body"), received):
            assert CALLBACK_MARKER not in where and RENDER_MARKER not in where and SOURCE_MARKER not in where
            assert "Traceback" not in where
    finally:
        close_context(context)


# -- the filter on what kernels send to pages (no server needed) ----------------------------

def _outgoing(msg_type, content, channel="iopub"):
    channel, msg = _message(msg_type, content, channel)
    return channel, {**msg, "buffers": []}


@pytest.mark.parametrize("protocol", ["v1", "legacy", "legacy-binary"])
def test_kernel_errors_and_stderr_are_withheld_from_the_page(protocol):
    from jupyter_server.services.kernels.connection.base import serialize_binary_message

    from voila_app.kernel_socket import withheld

    def frame(msg_type, content, channel="iopub"):
        channel, msg = _outgoing(msg_type, content, channel)
        if protocol == "v1":
            return serialize_msg_to_ws_v1({k: msg[k] for k in ("header", "parent_header", "metadata", "content")},
                                          channel, pack=lambda d: json.dumps(d).encode())
        if protocol == "legacy":
            return json.dumps({**msg, "channel": channel})
        return serialize_binary_message({**msg, "channel": channel, "buffers": [b"\x00\x01"]})

    error = frame("error", {"ename": "RuntimeError", "evalue": "\x1b[31mboom\x1b[0m",
                            "traceback": ["Traceback (most recent call last)", "    secret_source_line()"]})
    assert withheld(error) == "RuntimeError: boom"
    stderr = frame("stream", {"name": "stderr", "text": "Traceback ...\n  x = hidden()\nValueError: no\n"})
    assert withheld(stderr) == "stderr: ValueError: no"
    for passed in (frame("stream", {"name": "stdout", "text": "hello"}),
                   frame("status", {"execution_state": "idle"}),
                   frame("comm_msg", {"comm_id": "c", "data": {"method": "update", "state": {"value": 3}}}),
                   frame("kernel_info_reply", {"status": "ok"}, channel="shell"),
                   frame("error", {"ename": "E", "evalue": "on another channel"}, channel="shell")):
        assert withheld(passed) is None
    assert withheld(b"not a message") is None and withheld("{not json") is None
