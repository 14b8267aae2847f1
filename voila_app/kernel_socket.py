"""The kernel websocket a dashboard page talks to, minus tracebacks.

What a visitor's page may SEND to its kernel is limited by Voila itself: its kernel
manager forwards only comm messages, ``kernel_info_request`` and ``shutdown_request``
(``MappingKernelManager.allowed_message_types``), so a visitor cannot run code through
the websocket (``tests/test_security.py`` tries). What the kernel sends BACK is not
filtered by Voila: an exception in a widget callback (or a traceback logged to stderr,
or a warning quoting a source line) travels to the browser as an iopub ``error`` or
``stderr`` stream message, with the lines of the hidden code in it. The page does not
show them, but anyone can read them in the browser's developer tools.

:class:`LectureKernelWebsocketHandler` drops those two kinds of message on their way to
the page and writes a short line to the server log instead (the instructor's terminal:
a warning for an error, an info line with the last line of a stderr message),
so errors stay visible to the person running the app. Everything else (widget comm
messages, status, stdout streams, display data) passes unchanged, in both websocket
protocols (``v1.kernel.websocket.jupyter.org`` binary frames and the legacy JSON).
"""
from __future__ import annotations

import json
import re

from jupyter_server.services.kernels.connection.base import (deserialize_binary_message,
                                                             deserialize_msg_from_ws_v1)
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _parse(message) -> tuple[str | None, str | None, dict]:
    """(channel, msg_type, content) of an outgoing websocket message; content only for the
    messages the filter looks into (``error``, ``stream``)."""
    if isinstance(message, dict):
        header = message.get("header") or {}
        return message.get("channel"), header.get("msg_type"), message.get("content") or {}
    if isinstance(message, str):
        msg = json.loads(message)
        return msg.get("channel"), (msg.get("header") or {}).get("msg_type"), msg.get("content") or {}
    if isinstance(message, (bytes, bytearray, memoryview)):
        data = bytes(message)
        try:                                      # v1: offsets, channel, header, parent, metadata, content, buffers
            if not 6 <= int.from_bytes(data[:8], "little") <= len(data) // 8:
                raise ValueError("not a v1 message")
            channel, parts = deserialize_msg_from_ws_v1(data)
            msg_type = json.loads(parts[0])["msg_type"]
            content = json.loads(parts[3]) if msg_type in ("error", "stream") else {}
            return channel, msg_type, content
        except Exception:  # noqa: BLE001 - not v1: the legacy binary format (a message with buffers)
            if not 1 <= int.from_bytes(data[:4], "big") <= len(data) // 4:
                raise ValueError("not a websocket kernel message") from None
            msg = deserialize_binary_message(data)
            return msg.get("channel"), (msg.get("header") or {}).get("msg_type"), msg.get("content") or {}
    return None, None, {}


def withheld(message) -> str | None:
    """Why ``message`` must not reach the page (a line for the server log), or None to pass it on."""
    try:
        channel, msg_type, content = _parse(message)
    except Exception:  # noqa: BLE001 - unparseable frames are passed on as Voila would
        return None
    if channel not in (None, "iopub"):
        return None
    if msg_type == "error":
        return f"{content.get('ename', 'Error')}: {_ANSI.sub('', str(content.get('evalue', '')))}"
    if msg_type == "stream" and content.get("name") == "stderr":
        text = _ANSI.sub("", str(content.get("text", ""))).strip()
        return "stderr: " + (text.splitlines()[-1] if text else "")
    return None


class LectureKernelWebsocketHandler(VoilaKernelWebsocketHandler):
    """Voila's kernel websocket handler that keeps kernel errors and stderr off the page."""

    def write_message(self, message, binary: bool = False):
        reason = withheld(message)
        if reason is not None:
            log = self.log.info if reason.startswith("stderr:") else self.log.warning
            log("kernel %s: not sent to the page: %s", getattr(self, "kernel_id", "?"), reason[:500])
            return None
        return super().write_message(message, binary)
