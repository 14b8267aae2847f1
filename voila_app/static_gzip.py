"""gzip for the app's static files, compressed once per file rather than once per request.

A dashboard page fetches about 80 static files (Voila's and JupyterLab's JavaScript chunks, the
widget extensions', the template's; 4 MB uncompressed, 1.1 MB compressed). tornado's
:class:`~tornado.web.GZipContentEncoding` compresses each of them again for every request, on the
server's one thread: 0.15 s of server time per page against 0.04 s for the same files uncompressed
(83 files, 6 connections as a browser opens them; ``docs/performance.md``, "Opening faster"). One
browser on the loopback does not see the difference (its chunks arrive at the pace of Chromium's script
streaming); a class's pages share the server's thread. :class:`StaticFilesGZip` keeps
each file's compressed bytes, keyed on its URL path and what the static handler says of the file (its
``ETag``, where the handler gives one, ``Last-Modified`` and length, so an edited file is compressed
afresh), and sends them with a ``Content-Length`` on every later request.

Pages are not compressed: a page holds its kernel's id next to parts of the request, which compressed
over HTTPS is what BREACH-style attacks read from the response's size; static files hold nothing of
the kind.
"""
from __future__ import annotations

import threading

from tornado.web import GZipContentEncoding

# URL parts of the static files the app sends gzip-compressed
STATIC_PARTS = ("/voila/static/", "/voila/labextensions/", "/voila/templates/")
# what the kept compressed files may take in all (the app's static files take about 2.5 MB compressed)
CACHE_LIMIT_BYTES = 64 * 2**20


class CompressedStatic:
    """Compressed static files by URL path and the file's ETag, modification time and length; at most ``limit``
    bytes of them (beyond it, a file is compressed for each request, as tornado does)."""

    def __init__(self, limit: int = CACHE_LIMIT_BYTES):
        self.limit = limit
        self.size = 0
        self._files: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        return self._files.get(key)

    def put(self, key: tuple, body: bytes) -> None:
        with self._lock:
            if key not in self._files and self.size + len(body) <= self.limit:
                self._files[key] = body
                self.size += len(body)

    def __len__(self) -> int:
        return len(self._files)


class StaticFilesGZip(GZipContentEncoding):
    """tornado's gzip transform for static files only (``STATIC_PARTS``), each file compressed once.

    A whole ``200`` answer to a ``GET`` of a file (``Last-Modified`` and ``Content-Length`` set) is kept as
    it was sent; the next such request for the same path, ``ETag``, modification time and length gets the kept bytes in its first chunk (the static handler's later
    chunks of the raw file are dropped). Anything else (a ``304``, a range, a ``HEAD``) goes through
    tornado's transform unchanged.
    """

    compressed = CompressedStatic()

    def __init__(self, request):
        super().__init__(request)
        self._gzipping = self._gzipping and any(part in request.path for part in STATIC_PARTS)
        self._path = request.path if request.method == "GET" else None
        self._key: tuple | None = None
        self._sent: list[bytes] | None = None      # what this answer has sent, kept once it finishes
        self._from_cache = False

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        file = tuple(headers.get(name) for name in ("Etag", "Last-Modified", "Content-Length"))
        if self._gzipping and self._path is not None and status_code == 200 and all(file[1:]):
            self._key = (self._path, *file)
            body = self.compressed.get(self._key)
            if body is not None:
                self._from_cache = True
                headers["Vary"] = headers["Vary"] + ", Accept-Encoding" if "Vary" in headers else "Accept-Encoding"
                headers["Content-Encoding"] = "gzip"
                headers["Content-Length"] = str(len(body))
                return status_code, headers, body
        status_code, headers, chunk = super().transform_first_chunk(status_code, headers, chunk, finishing)
        if self._key is not None and self._gzipping:
            self._sent = []
            self._keep(chunk, finishing)
        return status_code, headers, chunk

    def transform_chunk(self, chunk, finishing):
        if self._from_cache:
            return b""
        chunk = super().transform_chunk(chunk, finishing)
        if self._sent is not None:
            self._keep(chunk, finishing)
        return chunk

    def _keep(self, chunk: bytes, finishing: bool) -> None:
        self._sent.append(chunk)
        if finishing:
            self.compressed.put(self._key, b"".join(self._sent))
            self._sent = None
