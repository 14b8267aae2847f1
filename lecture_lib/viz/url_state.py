"""A dashboard's state in its URL: presenter mode, the panel on screen, and control values.

A link such as ::

    /voila/render/05_weight_decay_equilibrium.ipynb?present=1&panel=3&p3.lr=0.4&p3.weight_decay=0.005

opens notebook 05 in presenter mode on its third panel with α = 0.4 and λ = 0.005: the exact
plot an instructor bookmarked for slide 12. The page keeps its address bar in step with the
controls (the dashboard template reads each panel's ``data-link``), so bookmarking or copying
the address is enough.

Keys:

``present``
    ``1`` shows one panel at a time, laid out for a 1280×720 projector.
``panel``
    the 1-based number of the panel to show (presenter mode) or scroll to.
``p<N>.<control>``
    the value of control ``<control>`` (the keyword the panel passes to its compute
    function) of panel ``N``: a number for sliders, the option's label for dropdowns and
    button rows, ``1``/``0`` for switches. Only values that differ from the defaults are
    written. For a scrub slider (:class:`~lecture_lib.viz.scrub.ScrubPanel`), ``<control>`` is the
    scrubbed parameter and the value one of its positions (``p2.weight_decay=0.005``).

Voila hands the page's query string to the kernel: in the ``QUERY_STRING`` environment
variable of a kernel started for the request, or, for a pre-heated kernel (one that ran the
notebook before anyone asked for it), over Voila's ``voila/query/<kernel id>`` websocket once a
visitor arrives. :data:`PAGE` waits for it in a daemon thread and hands each registered
:class:`~lecture_lib.viz.panels.LivePanel` its part; panels built later get theirs at
construction. Outside Voila (JupyterLab, nbclient) there is no query and nothing happens.

:func:`encode_value` and :func:`decode_value` translate between a control's value and its
text in the URL; :func:`encode_position` and :func:`decode_position` do so for a scrub position.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import ipywidgets as widgets

log = logging.getLogger(__name__)

_PANEL_KEY = re.compile(r"^p(\d+)\.(\w+)$")
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Query:
    """What a dashboard URL asks for (see the module docstring)."""

    present: bool = False
    panel: int | None = None
    values: dict[int, dict[str, str]] = field(default_factory=dict)   # panel number -> {control: text}
    ignored: tuple[str, ...] = ()                                     # keys that mean nothing here


def parse_query(query: str | None) -> Query:
    """Parse a query string (``"present=1&p2.lr=0.1"``, a leading ``?`` allowed); unknown keys are listed in ``ignored``."""
    present, panel, values, ignored = False, None, {}, []
    for key, text in parse_qsl((query or "").lstrip("?"), keep_blank_values=True):
        if key == "present":
            present = text.strip().lower() in TRUE_WORDS or text == ""
        elif key == "panel":
            panel = int(text) if text.isdigit() and int(text) >= 1 else None
            if panel is None:
                ignored.append(key)
        elif m := _PANEL_KEY.match(key):
            values.setdefault(int(m.group(1)), {})[m.group(2)] = text
        else:
            ignored.append(key)
    return Query(present, panel, values, tuple(ignored))


def encode_value(w: widgets.Widget) -> str:
    """A control's current value as URL text: the option's label, ``1``/``0`` for a switch, 6 digits for a float."""
    if isinstance(w, widgets.Checkbox):
        return "1" if w.value else "0"
    if hasattr(w, "_options_labels"):
        return str(w.label)
    if isinstance(w.value, float):
        return f"{w.value:.6g}"
    return str(w.value)


def _slider_range(w: widgets.Widget) -> tuple[float, float]:
    if isinstance(w, widgets.FloatLogSlider):
        return w.base ** w.min, w.base ** w.max
    return w.min, w.max


def decode_value(w: widgets.Widget, text: str):
    """The control value that URL ``text`` stands for; ValueError (with the accepted values) if none does."""
    if isinstance(w, widgets.Checkbox):
        word = text.strip().lower()
        if word in TRUE_WORDS or word in {"0", "false", "no", "off"}:
            return word in TRUE_WORDS
        raise ValueError(f"{text!r} is not a switch value (1 or 0)")
    if hasattr(w, "_options_labels"):
        labels = list(w._options_labels)
        if text not in labels:
            raise ValueError(f"{text!r} is not one of {', '.join(map(repr, labels))}")
        return w._options_values[labels.index(text)]
    if isinstance(w, (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider)):
        lo, hi = _slider_range(w)
        try:
            value = int(text) if isinstance(w, widgets.IntSlider) else float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9) + 1e-12):
            raise ValueError(f"{text} is outside [{lo:.6g}, {hi:.6g}]")
        return min(max(value, lo), hi)
    raise ValueError(f"a {type(w).__name__} cannot be set from a link")


def encode_position(values, index: int) -> str:
    """Position ``index`` of a scrub slider over ``values`` as URL text: its value (6 digits for a float)."""
    value = values[index]
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def decode_position(values, text: str) -> int:
    """The position of ``values`` that URL ``text`` names (its value, to 6 digits); ValueError listing them if none."""
    texts = [encode_position(values, i) for i in range(len(values))]
    if text in texts:
        return texts.index(text)
    try:
        number = float(text)
        for i, value in enumerate(values):
            if isinstance(value, (int, float)) and math.isclose(number, value, rel_tol=1e-5, abs_tol=1e-12):
                return i
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not one of the positions {', '.join(texts)}")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def voila_query_ws_url() -> str | None:
    """The websocket on which Voila sends a pre-heated kernel its visitor's request (None outside one)."""
    kernel_id = _env("VOILA_KERNEL_ID")
    if _env("VOILA_PREHEAT") != "True" or not kernel_id:
        return None
    protocol = _env("VOILA_WS_PROTOCOL", "ws")
    host = _env("VOILA_APP_IP", "127.0.0.1")
    port = _env("VOILA_APP_PORT", "8866")
    base = _env("VOILA_WS_BASE_URL") or _env("VOILA_SERVER_URL", "/")
    return f"{protocol}://{host}:{port}{base}voila/query/{kernel_id}"


def _receive_request_info(ws_url: str) -> dict | None:
    """Block until Voila sends the request info of the visitor this kernel serves (a JSON dict)."""
    import asyncio

    import websockets  # a dependency of Voila; only imported inside a Voila kernel

    async def receive():
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            return await ws.recv()

    try:
        return json.loads(asyncio.run(receive()))
    except Exception as exc:  # noqa: BLE001 - no query is a normal page, never a failure
        log.warning("no request info from %s: %s", ws_url, exc)
        return None


class PageState:
    """The panels of this kernel's page, and the query they are drawn for.

    ``register`` numbers panels 1, 2, ... in the order they are built (the order on the page).
    The query arrives once; ``attach`` is called for every panel with its number, the values the
    query gives it and whether the page is presented, either at once or when the query arrives.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._panels: list = []
        self._query: Query | None = None
        self._listening = False

    @property
    def query(self) -> Query | None:
        return self._query

    def register(self, panel) -> int:
        """Number ``panel`` and start listening for the page's query; returns the number (1-based)."""
        with self._lock:
            self._panels.append(panel)
            number = len(self._panels)
            if self._query is None and not self._listening:
                self._start_listening()
        return number

    def pending_for(self, number: int) -> tuple[dict[str, str], bool]:
        """Values and presenter flag already known for panel ``number`` (empty before the query arrives)."""
        q = self._query
        return ({}, False) if q is None else (q.values.get(number, {}), q.present)

    def receive(self, query: str | None) -> None:
        """Take the page's query string and hand every panel built so far its part."""
        parsed = parse_query(query)
        with self._lock:
            self._query = parsed
            panels = list(self._panels)
        if parsed.ignored:
            log.info("ignored URL keys: %s", ", ".join(parsed.ignored))
        for number, panel in enumerate(panels, start=1):
            try:
                panel.attach_url_state(parsed.values.get(number, {}), parsed.present)
            except Exception:  # noqa: BLE001 - a bad link must never break the page
                log.exception("applying the URL to panel %d failed", number)

    def _start_listening(self) -> None:
        if "QUERY_STRING" in os.environ and _env("VOILA_PREHEAT") != "True":
            self._query = parse_query(os.environ["QUERY_STRING"])    # a kernel started for this request
            return
        url = voila_query_ws_url()
        if url is None:
            return                                                  # not in Voila: no URL state
        self._listening = True

        def listen():
            info = _receive_request_info(url)
            if info:
                os.environ.update({k: str(v) for k, v in info.items()})
            self.receive((info or {}).get("QUERY_STRING", ""))

        threading.Thread(target=listen, name="lecture-url-state", daemon=True).start()


PAGE = PageState()
