"""The app's static files go out gzip-compressed, each file compressed once (voila_app.static_gzip).

The server runs on a loop of its own in a thread: a test run with browsers has Playwright's loop running in the
main thread (as in test_pool)."""
from __future__ import annotations

import asyncio
import gzip
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler, StaticFileHandler

import voila_app.static_gzip as static_gzip
from voila_app.server import free_port


class Page(RequestHandler):
    def get(self):
        self.write("kernel id 1234 " * 200)


class NoETagStatic(StaticFileHandler):
    """As jupyter_server's FileFindHandler, which serves the extensions' files: no ETag."""

    def compute_etag(self):
        return None


@pytest.fixture
def served(tmp_path):
    """(base URL, the script's path, its content): a tornado app with the transform, on a thread of its own."""
    script = tmp_path / "chunk.js"
    # more than one of StaticFileHandler's 64 kB chunks, so the first answer is sent in pieces
    content = b"".join(b"var x%d = %d;\n" % (i, i * i) for i in range(20_000))
    script.write_bytes(content)
    static_gzip.StaticFilesGZip.compressed = static_gzip.CompressedStatic()
    app = Application([(r"/voila/static/(.*)", StaticFileHandler, {"path": str(tmp_path)}),
                       (r"/voila/labextensions/(.*)", NoETagStatic, {"path": str(tmp_path)}),
                       (r"/voila/render/page", Page)], transforms=[static_gzip.StaticFilesGZip])
    port, ready, loop = free_port(), threading.Event(), asyncio.new_event_loop()

    def run():
        asyncio.set_event_loop(loop)
        server = HTTPServer(app)
        server.listen(port, "127.0.0.1")
        loop.call_soon(ready.set)
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}", script, content
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def fetch(url: str, method: str = "GET", **headers):
    """(status, headers, body as sent: not decompressed)."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as error:        # 304 and the like
        return error.code, error.headers, error.read()


def fetch_js(base: str, where: str = "static", **headers):
    return fetch(f"{base}/voila/{where}/chunk.js", **{"Accept-Encoding": "gzip", **headers})


@pytest.mark.parametrize("where", ["static", "labextensions"])      # with an ETag, and without one
def test_a_static_file_is_compressed_once_and_sent_whole_after(served, where):
    base, _, content = served
    compressions = []
    real = static_gzip.GZipContentEncoding.transform_chunk
    static_gzip.GZipContentEncoding.transform_chunk = lambda s, c, f: compressions.append(len(c)) or real(s, c, f)
    try:
        first, second, third = (fetch_js(base, where) for _ in range(3))
    finally:
        static_gzip.GZipContentEncoding.transform_chunk = real
    assert len(compressions) >= 2                      # the first answer: compressed chunk by chunk
    assert sum(compressions) == len(content)           # ... and no later one compressed anything
    for status, headers, body in (first, second, third):
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in headers["Vary"]
        assert gzip.decompress(body) == content
    assert second[2] == first[2] == third[2]
    assert int(second[1]["Content-Length"]) == len(second[2]) < len(content) / 3
    assert len(static_gzip.StaticFilesGZip.compressed) == 1


def test_an_edited_file_is_compressed_afresh(served):
    base, script, _ = served
    fetch_js(base)
    content = b"let y = 2;\n" * 5_000
    script.write_bytes(content)
    assert gzip.decompress(fetch_js(base)[2]) == content


def test_revalidation_head_range_and_plain_clients_are_answered_as_tornado_does(served):
    base, _, content = served
    etag = fetch_js(base)[1]["Etag"]
    fetch_js(base)                                      # kept now
    assert fetch_js(base, **{"If-None-Match": etag})[0] == 304
    modified = fetch_js(base, "labextensions")[1]["Last-Modified"]
    assert fetch_js(base, "labextensions", **{"If-Modified-Since": modified})[0] == 304
    status, _, body = fetch(f"{base}/voila/static/chunk.js", method="HEAD", **{"Accept-Encoding": "gzip"})
    assert status == 200 and body == b""
    status, _, body = fetch(f"{base}/voila/static/chunk.js", Range="bytes=0-99")
    assert status == 206 and body == content[:100]
    status, headers, body = fetch(f"{base}/voila/static/chunk.js")
    assert "Content-Encoding" not in headers and body == content


def test_pages_are_never_compressed(served):
    status, headers, _ = fetch(f"{served[0]}/voila/render/page", **{"Accept-Encoding": "gzip"})
    assert status == 200 and "Content-Encoding" not in headers


def test_the_kept_files_stay_within_their_limit():
    kept = static_gzip.CompressedStatic(limit=100)
    key_a, key_b = ("/a.js", None, "Sat, 05 Dec 2026 23:52:31 GMT", "600"), ("/b.js", None, "Sat, 05 Dec 2026", "600")
    kept.put(key_a, b"x" * 60)
    kept.put(key_b, b"y" * 60)              # past the limit: not kept (sent all the same)
    kept.put(key_a, b"x" * 60)
    assert len(kept) == 1 and kept.size == 60 and kept.get(key_b) is None
