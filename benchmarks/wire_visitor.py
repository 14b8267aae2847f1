"""A dashboard visitor without a browser: what a page asks of the server, on the wire.

A class of 30 opens a dashboard from 30 laptops; on one benchmark machine, 30 headless Chromiums
would take the server's CPUs for their own drawing (about 2.5 CPU-seconds a page here), which the
students' laptops do not. A :class:`WireVisitor` asks the server for what a page asks for, in the
same order, and does nothing of the drawing:

1. ``GET`` the dashboard page (Voilà hands it a pre-heated kernel, or starts one and streams the
   page while that kernel runs the notebook), the landing page and the kernel's model (the page's
   scripts ask for both: the first sets the XSRF cookie), and every static file a real page of this server
   fetched (``static_urls``, recorded from a browser visit: Voilà's scripts, the template's CSS,
   plotly's front end), gzip accepted, as a browser with an empty cache does;
2. opens the kernel's websocket, sends ``kernel_info_request``, opens ipywidgets' control comm and
   asks for every widget's state (``request_states``, the message a page's widget manager sends);
   ``open_s`` is the time from arrival to that state received: the server's part of an open;
3. ``move``: sets the first slider of the first panel that has one (page order) one step on, as the
   slider's ``update`` message of a released handle does, and waits until the panel's hidden state
   widget (``lecture-state``) says a new generation has been drawn with nothing pending; ``updated``:
   one of that panel's figures received new data in between;
4. ``close``: shuts its kernel down as a page's unload handler does (``POST /voila/api/shutdown/<id>``).

Used by ``benchmarks/concurrent_visitors.py`` (``--browsers K``: K real browsers among the visitors,
the rest wire visitors) and checked against a real dashboard by ``tests/test_load.py``.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

PROTOCOL = "v1.kernel.websocket.jupyter.org"       # the kernel websocket protocol JupyterLab's pages speak

SLIDERS = {"FloatSliderModel", "FloatLogSliderModel", "IntSliderModel"}
# a widget output's model id in the page: plain JSON, or escaped inside a script Voila streams (\"model_id\")
_MODEL_ID = re.compile(r'\\?"model_id\\?":\s*\\?"([0-9a-f]{32})')
_CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)
_STATE = re.compile(r"""data-generation=['"](-?\d+)['"].*?data-busy=['"](\d)['"].*?data-outcome=['"]([\w-]*)['"]""", re.S)


def static_paths(urls: list[str], base_url: str, page_path: str) -> list[str]:
    """The files a browser's page fetched from ``base_url`` besides the page itself and the kernel's API
    (Voilà's scripts, styles, fonts, plotly's front end), as paths, each once."""
    paths = [u[len(base_url):] for u in urls if u.startswith(base_url + "/")]
    return list(dict.fromkeys(p.split("#")[0] for p in paths
                              if not p.startswith(page_path) and "/api/" not in p))


def _cookies(response) -> dict[str, str]:
    return {k: v for c in response.headers.get_list("Set-Cookie") for k, v in [c.split(";")[0].split("=", 1)]}


def panel_state(html: str) -> tuple[int, bool, str] | None:
    """(generation, busy, outcome) written in a panel's ``lecture-state`` widget, None before the first."""
    m = _STATE.search(html or "")
    return None if m is None else (int(m.group(1)), m.group(2) == "1", m.group(3))


def _children(state: dict) -> list[str]:
    return [c.removeprefix("IPY_MODEL_") for c in state.get("children", ()) if isinstance(c, str)]


def first_slider_panel(states: dict, roots: list[str]) -> dict | None:
    """In page order (``roots``: the model ids of the page's widget outputs), the first panel
    (a box with the ``lecture-panel`` class) that holds a slider: its slider's, state widget's and
    figures' model ids, or None."""
    def walk(mid):
        yield mid
        for child in _children(states.get(mid, {}).get("state", {})):
            yield from walk(child)

    # the page's outputs first, in page order; then every model (a cell Voila streamed in a form not read above)
    for root in [*roots, *states]:
        if root not in states:
            continue
        for mid in walk(root):
            s = states.get(mid, {}).get("state", {})
            if "lecture-panel" not in s.get("_dom_classes", ()):
                continue
            inside = [m for m in walk(mid) if m in states]
            sliders = [m for m in inside if states[m]["model_name"] in SLIDERS
                       and "lecture-control" in states[m]["state"].get("_dom_classes", ())]
            if not sliders:
                continue
            state_box = next(m for m in inside if "lecture-state" in states[m]["state"].get("_dom_classes", ()))
            figure_box = next(m for m in inside if "lecture-figures" in states[m]["state"].get("_dom_classes", ()))
            return {"panel": mid, "slider": sliders[0], "state": state_box,
                    "figures": set(walk(figure_box)) - {figure_box}}
    return None


def next_value(model: dict) -> float:
    """The value one keyboard step on from ``model``'s (towards its maximum, back from it at the end)."""
    s, name = model["state"], model["model_name"]
    if name == "FloatLogSliderModel":
        exponent = math.log(s["value"], s.get("base", 10))
        up = exponent + s["step"] <= s["max"] + 1e-9
        return s.get("base", 10) ** (exponent + (s["step"] if up else -s["step"]))
    up = s["value"] + s["step"] <= s["max"]
    return s["value"] + (s["step"] if up else -s["step"])



@dataclass
class WireVisitor:
    """One visitor, on the wire (see the module docstring). Times are seconds."""

    index: int
    arrival_s: float = 0.0
    page_s: float | None = None          # arrival -> the page's last byte (the server's rendering)
    open_s: float | None = None          # arrival -> every widget's state received
    latencies: list[float] = field(default_factory=list)
    updated: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kernel_id: str | None = None
    kernel: dict = field(default_factory=dict)     # its kernel process: rss_mb, uss_mb, cpu_s (filled by the benchmark)

    async def open(self, base_url: str, path: str, static_urls: list[str], timeout: float = 300) -> None:
        client = AsyncHTTPClient()
        start = time.perf_counter()
        page = await client.fetch(base_url + path, request_timeout=timeout, decompress_response=True)
        self.page_s = time.perf_counter() - start
        html = page.body.decode()
        self._cookies = _cookies(page)
        config = json.loads(_CONFIG.search(html).group(1))
        self.kernel_id = config["kernelId"]
        self._roots = list(dict.fromkeys(_MODEL_ID.findall(html)))
        # what the page's own scripts ask for: the landing page (which sets the XSRF cookie the kernel's
        # shutdown needs) and the page's kernel model
        for url in (f"{base_url}/", f"{base_url}/api/kernels/{self.kernel_id}"):
            response = await client.fetch(HTTPRequest(url, headers={"Cookie": self._cookie_header()},
                                                      request_timeout=timeout))
            self._cookies.update(_cookies(response))
        await asyncio.gather(*(client.fetch(HTTPRequest(base_url + u, headers={"Accept-Encoding": "gzip"},
                                                        decompress_response=False, request_timeout=timeout))
                               for u in static_urls))
        ws_url = base_url.replace("http", "ws", 1) + f"/api/kernels/{self.kernel_id}/channels?session_id={uuid.uuid4()}"
        self._ws = await websocket_connect(HTTPRequest(ws_url, request_timeout=timeout), subprotocols=[PROTOCOL],
                                           max_message_size=1 << 30)
        self._session = uuid.uuid4().hex
        self._states, self._waiters = {}, []
        self._reader = asyncio.ensure_future(self._read())
        await self._send("kernel_info_request", {})
        control = uuid.uuid4().hex
        reply = self._expect(lambda m: m["header"]["msg_type"] == "comm_msg"
                             and m["content"].get("comm_id") == control
                             and m["content"]["data"].get("method") == "update_states")
        await self._send("comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
                         metadata={"version": "1.0.0"})
        await self._send("comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        msg = await asyncio.wait_for(reply, timeout)
        self._states = msg["content"]["data"]["states"]
        self.open_s = time.perf_counter() - start
        self._panel = first_slider_panel(self._states, self._roots)
        if self._panel is None:
            raise RuntimeError("the dashboard has no panel with a slider")

    async def move(self, timeout: float = 180) -> None:
        """One step of the first panel's slider; records the latency and whether a figure got new data."""
        p, states = self._panel, self._states
        before = panel_state(states[p["state"]]["state"].get("value", ""))
        generation = -1 if before is None else before[0]
        value = next_value(states[p["slider"]])
        figure_news = []
        settled = self._expect(lambda m: self._settles(m, generation), figure_news)
        start = time.perf_counter()
        await self._send("comm_msg", {"comm_id": p["slider"],
                                      "data": {"method": "update", "state": {"value": value}, "buffer_paths": []}})
        states[p["slider"]]["state"]["value"] = value
        msg = await asyncio.wait_for(settled, timeout)
        self.latencies.append(time.perf_counter() - start)
        self.updated.append(bool(figure_news))
        outcome = panel_state(msg["content"]["data"]["state"]["value"])[2]
        if outcome != "ok":
            self.errors.append(f"panel outcome {outcome!r} after a move")

    def _settles(self, m: dict, generation: int) -> bool:
        c = m["content"]
        if m["header"]["msg_type"] != "comm_msg" or c.get("comm_id") != self._panel["state"]:
            return False
        s = panel_state((c["data"].get("state") or {}).get("value", ""))
        return s is not None and s[0] > generation and not s[1]

    async def close(self, base_url: str) -> None:
        self._reader.cancel()
        self._ws.close()
        # as the page's unload handler does: with the page's XSRF cookie, echoed in a header
        xsrf = self._cookies.get("_xsrf", "")
        headers = {"Cookie": self._cookie_header(), "X-XSRFToken": xsrf}
        response = await AsyncHTTPClient().fetch(f"{base_url}/voila/api/shutdown/{self.kernel_id}", method="POST",
                                                 body=b"", headers=headers, raise_error=False)
        if response.code != 204:
            self.errors.append(f"kernel shutdown answered {response.code}")

    def _cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self._cookies.items())

    # -- the websocket ---------------------------------------------------------------------

    async def _send(self, msg_type: str, content: dict, metadata: dict | None = None) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "wire-visitor",
                  "session": self._session, "date": now, "version": "5.3"}
        parts = [json.dumps(part).encode() for part in (header, {}, metadata or {}, content)]
        await self._ws.write_message(serialize_msg_to_ws_v1(parts, "shell"), binary=True)

    def _expect(self, match, figure_news: list | None = None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((match, future, figure_news))
        return future

    async def _read(self) -> None:
        while True:
            frame = await self._ws.read_message()
            if frame is None:
                for _, future, _ in self._waiters:
                    if not future.done():
                        future.set_exception(ConnectionError("the kernel websocket closed"))
                return
            channel, parts = deserialize_msg_from_ws_v1(frame)
            if channel != "iopub":
                continue
            msg = {"header": json.loads(parts[0]), "content": json.loads(parts[3])}
            content = msg.get("content") or {}
            if msg["header"]["msg_type"] == "comm_msg" and content.get("comm_id") in self._states:
                data = content.get("data") or {}
                if data.get("method") in ("update", "echo_update"):        # keep the model states current
                    self._states[content["comm_id"]]["state"].update(data.get("state") or {})
            for match, future, figure_news in list(self._waiters):
                if future.done():
                    self._waiters.remove((match, future, figure_news))
                    continue
                if figure_news is not None and content.get("comm_id") in self._panel["figures"]:
                    figure_news.append(msg["header"]["msg_type"])
                if match(msg):
                    future.set_result(msg)
                    self._waiters.remove((match, future, figure_news))


class WireClass:
    """Wire visitors in a thread of their own (their own asyncio loop), driven from synchronous code:
    ``open_all(arrivals)`` starts them at the given seconds after now and waits until every one is
    open (or failed); ``move_all()`` moves every open one's slider at the same moment; ``close_all()``."""

    def __init__(self, base_url: str, path: str, static_urls: list[str], indices: list[int]):
        self.base_url, self.path, self.static_urls = base_url, path, static_urls
        self.visitors = [WireVisitor(i) for i in indices]
        # one client per visitor, as on separate laptops: no queue of at most 10 requests at a time
        AsyncHTTPClient.configure(None, max_clients=max(10, 20 * len(indices)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start_open(self, arrivals: list[float]) -> "concurrent.futures.Future":  # noqa: F821
        """Start the visitors' arrivals (seconds from now); returns a future done when all are open."""
        async def one(v, delay, t0):
            await asyncio.sleep(max(delay - (time.perf_counter() - t0), 0))
            v.arrival_s = delay
            try:
                await v.open(self.base_url, self.path, self.static_urls)
            except Exception as exc:  # noqa: BLE001 - a visitor that could not open is reported, not fatal
                v.errors.append(f"open failed: {exc!r}")

        async def all_of():
            t0 = time.perf_counter()
            await asyncio.gather(*(one(v, d, t0) for v, d in zip(self.visitors, arrivals)))

        return asyncio.run_coroutine_threadsafe(all_of(), self._loop)

    def move_all(self, timeout: float = 180) -> None:
        async def one(v):
            try:
                await v.move(timeout)
            except Exception as exc:  # noqa: BLE001
                v.errors.append(f"move failed: {exc!r}")
                v.updated.append(False)

        async def all_of():
            await asyncio.gather(*(one(v) for v in self.visitors if v.open_s is not None))

        self._run(all_of())

    def close_all(self) -> None:
        async def all_of():
            await asyncio.gather(*(v.close(self.base_url) for v in self.visitors if v.kernel_id is not None),
                                 return_exceptions=True)

        self._run(all_of())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
