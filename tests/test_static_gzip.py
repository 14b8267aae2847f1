"""The app's static files go out gzip-compressed, each file compressed once (voila_app.static_gzip)."""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application, RequestHandler, StaticFileHandler

import voila_app.static_gzip as static_gzip


class Page(RequestHandler):
    def get(self):
        self.write("kernel id 1234 " * 200)


class NoETagStatic(StaticFileHandler):
    """As jupyter_server's FileFindHandler, which serves the extensions' files: no ETag."""

    def compute_etag(self):
        return None


class StaticGZipTest(AsyncHTTPTestCase):
    def get_app(self):
        self.tmp = tempfile.mkdtemp()
        self.script = Path(self.tmp) / "chunk.js"
        # more than one of StaticFileHandler's 64 kB chunks, so the first answer is sent in pieces
        self.content = b"".join(b"var x%d = %d;\n" % (i, i * i) for i in range(20_000))
        self.script.write_bytes(self.content)
        static_gzip.StaticFilesGZip.compressed = static_gzip.CompressedStatic()
        return Application([(r"/voila/static/(.*)", StaticFileHandler, {"path": self.tmp}),
                            (r"/voila/labextensions/(.*)", NoETagStatic, {"path": self.tmp}),
                            (r"/voila/render/page", Page)], transforms=[static_gzip.StaticFilesGZip])

    def fetch_js(self, where="static", **headers):
        return self.fetch(f"/voila/{where}/chunk.js", decompress_response=False,
                          headers={"Accept-Encoding": "gzip", **headers})

    def test_a_static_file_is_compressed_once_and_sent_whole_after(self):
        self.compressed_once_and_sent_whole("static")

    def test_a_file_served_without_an_etag_is_compressed_once_too(self):
        self.compressed_once_and_sent_whole("labextensions")

    def compressed_once_and_sent_whole(self, where):
        compressions = []
        real = static_gzip.GZipContentEncoding.transform_chunk
        static_gzip.GZipContentEncoding.transform_chunk = lambda s, c, f: compressions.append(len(c)) or real(s, c, f)
        try:
            first, second, third = (self.fetch_js(where) for _ in range(3))
        finally:
            static_gzip.GZipContentEncoding.transform_chunk = real
        assert len(compressions) >= 2                      # the first answer: compressed chunk by chunk
        assert sum(compressions) == len(self.content)      # ... and no later one compressed anything
        for r in (first, second, third):
            assert r.code == 200 and r.headers["Content-Encoding"] == "gzip"
            assert "Accept-Encoding" in r.headers["Vary"]
            assert gzip.decompress(r.body) == self.content
        assert second.body == first.body == third.body
        assert int(second.headers["Content-Length"]) == len(second.body) < len(self.content) / 3
        assert len(static_gzip.StaticFilesGZip.compressed) == 1

    def test_an_edited_file_is_compressed_afresh(self):
        self.fetch_js()
        self.content = b"let y = 2;\n" * 5_000
        self.script.write_bytes(self.content)
        r = self.fetch_js()
        assert gzip.decompress(r.body) == self.content

    def test_revalidation_head_range_and_plain_clients_are_answered_as_tornado_does(self):
        etag = self.fetch_js().headers["Etag"]
        self.fetch_js()                                     # kept now
        assert self.fetch_js(**{"If-None-Match": etag}).code == 304
        modified = self.fetch_js("labextensions").headers["Last-Modified"]
        assert self.fetch_js("labextensions", **{"If-Modified-Since": modified}).code == 304
        head = self.fetch("/voila/static/chunk.js", method="HEAD", headers={"Accept-Encoding": "gzip"})
        assert head.code == 200 and head.body == b""
        part = self.fetch("/voila/static/chunk.js", headers={"Range": "bytes=0-99"})
        assert part.code == 206 and part.body == self.content[:100]
        plain = self.fetch("/voila/static/chunk.js", decompress_response=False)
        assert "Content-Encoding" not in plain.headers and plain.body == self.content

    def test_pages_are_never_compressed(self):
        r = self.fetch("/voila/render/page", decompress_response=False, headers={"Accept-Encoding": "gzip"})
        assert r.code == 200 and "Content-Encoding" not in r.headers


def test_the_kept_files_stay_within_their_limit():
    kept = static_gzip.CompressedStatic(limit=100)
    kept.put(("/a.js", None, "Sat, 05 Dec 2026 23:52:31 GMT", "600"), b"x" * 60)
    kept.put(("/b.js", None, "Sat, 05 Dec 2026 23:52:31 GMT", "600"), b"y" * 60)   # past the limit: not kept
    kept.put(("/a.js", None, "Sat, 05 Dec 2026 23:52:31 GMT", "600"), b"x" * 60)
    assert len(kept) == 1 and kept.size == 60 and kept.get(("/b.js", None, "Sat, 05 Dec 2026 23:52:31 GMT", "600")) is None
