"""plotly's figure front end (``widgetbundle.js``) delivered so that it arrives in time.

What is served as ``widgetbundle.js`` is plotly's front end with plotly.js's cartesian bundle in place of
the full plotly.js (1.6 MB instead of 5 MB, and a third of the evaluation time; :mod:`voila_app.plotly_partial`);
plotly's own is served as ``widgetbundle-full.js`` for a figure with a trace type the cartesian bundle lacks.

Every figure of a dashboard imports that bundle by URL (``lecture_lib.viz.panels``), and
anywidget gives a figure's model 2 seconds to initialise, the import included. When the
bundle takes longer to arrive, the figure is drawn once but never follows the sliders
again: measured in headless Chromium against the app, every one of three single
visitors on a 1.5 MB/s connection (12 Mbit/s, a student's share of lecture-hall WiFi) got
plots that ignored the sliders; with 10 visitors opening a dashboard at once on a busy
2-core server, 4 to 8 of them did. :class:`BundleHandler` serves the bundle
gzip-compressed (0.5 MB; 1.5 MB for the full one), compressed ONCE when the app starts rather than
per request, with an ``ETag`` so a browser that has it revalidates with a tiny 304.

Not done, on purpose: a ``rel=modulepreload`` link to the bundle on every dashboard page.
Chromium then parses and compiles the 5 MB module on the page's main thread while the
widgets are being restored; on a busy machine that task outlasts jupyterlab-manager's
2-second wait for a widget model (it re-checks only between timer ticks), and whole
panels failed with "widget model not found": 6 of 36 page loads of dashboard 03, none of
36 without the link.
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from tornado import web

BUNDLE_NAME = "widgetbundle.js"
FULL_BUNDLE_NAME = "widgetbundle-full.js"


class CompressedFile:
    """A file's bytes (or ``raw`` bytes made for it) and their gzip compression, read and compressed once."""

    def __init__(self, path: Path, raw: bytes | None = None):
        self.path = Path(path)
        self.raw = self.path.read_bytes() if raw is None else raw
        self.gzipped = gzip.compress(self.raw, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha1(self.raw).hexdigest() + '"'


def figure_bundles(log=None) -> dict[str, CompressedFile]:
    """What the figures import, by file name: ``widgetbundle.js``, plotly's front end with the cartesian plotly.js
    (:mod:`voila_app.plotly_partial`; plotly's own where that cannot be made, with a warning), and
    ``FULL_BUNDLE_NAME``, plotly's own, for a figure with a trace type the partial bundle lacks."""
    from .config import plotly_bundle_dir
    from .plotly_partial import PLOTLY_PARTIAL, cartesian_widget_bundle, partial_matches, partial_version, plotlyjs_version

    full = CompressedFile(plotly_bundle_dir() / BUNDLE_NAME)
    bundles = {BUNDLE_NAME: full, FULL_BUNDLE_NAME: full}
    if not partial_matches():
        why = f"{PLOTLY_PARTIAL.name} is plotly.js {partial_version()}, plotly bundles {plotlyjs_version()}"
    else:
        try:
            text = cartesian_widget_bundle(full.raw.decode("utf-8"), PLOTLY_PARTIAL.read_text(encoding="utf-8"))
        except ValueError as error:
            why = str(error)
        else:
            bundles[BUNDLE_NAME] = CompressedFile(full.path, text.encode("utf-8"))
            return bundles
    if log is not None:
        log.warning("lecture: figures use plotly's full front end (%s; scripts/update_plotly_partial.sh)", why)
    return bundles


class BundleHandler(web.RequestHandler):
    """``GET /voila/static/widgetbundle.js``: the bundle, gzip-compressed when the browser accepts it."""

    def initialize(self, bundle: CompressedFile):
        self.bundle = bundle

    def compute_etag(self):
        return self.bundle.etag

    def _body(self) -> bytes:
        self.set_header("Content-Type", "text/javascript; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")          # revalidate: a 304 when unchanged
        self.set_header("Vary", "Accept-Encoding")
        if "gzip" in self.request.headers.get("Accept-Encoding", ""):
            self.set_header("Content-Encoding", "gzip")
            return self.bundle.gzipped
        return self.bundle.raw

    def head(self):
        body = self._body()
        self.set_header("Content-Length", len(body))
        self.set_etag_header()
        if self.check_etag_header():
            self.set_status(304)

    def get(self):
        body = self._body()
        self.set_etag_header()
        if self.check_etag_header():
            self.set_status(304)
            return
        self.write(body)
