"""The figure and widget layer of the explorables (never imported by the science core).

- :mod:`lecture_lib.viz.figures`: pure functions ``record -> plotly figure``, the
  house theme (fonts, colour-blind-safe palette, :func:`~lecture_lib.viz.figures.style`,
  :func:`~lecture_lib.viz.figures.rgba`, :func:`~lecture_lib.viz.figures.source_block`) and
  helpers such as :func:`~lecture_lib.viz.figures.line_traces`, which draws each run only
  up to the step at which it diverged.
- :mod:`lecture_lib.viz.panels`: :class:`~lecture_lib.viz.panels.LivePanel`, which wires
  controls to a compute function and a figure built from its first result. Its pieces:
  :mod:`~lecture_lib.viz.controls` (``slider``, ``log_slider``, ``dropdown``, ``toggle``...),
  :mod:`~lecture_lib.viz.runner` (worker thread, newest request wins, cache, progress),
  :mod:`~lecture_lib.viz.live_figures` (FigureWidgets built once, redrawn by trace name),
  :mod:`~lecture_lib.viz.panel_view` (the widgets, CSS and DOM hooks) and
  :mod:`~lecture_lib.viz.url_state` (a dashboard's state in its URL).

:func:`fast_mode` is ``True`` when the environment variable ``LECTURE_FAST`` is set to
``1`` (or ``true``/``yes``/``on``): notebooks then choose small step counts so that the
test suite and CI can execute every notebook in seconds. Panels call it when they are built
(``panel(fast=None)``), never at import, so one process can build panels at both settings.
"""
from __future__ import annotations

import os


def fast_mode(environ=os.environ) -> bool:
    """``True`` when ``LECTURE_FAST`` asks for fast settings (``1``, ``true``, ``yes``, ``on``)."""
    return environ.get("LECTURE_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


from . import figures, panels  # noqa: E402

__all__ = ["fast_mode", "figures", "panels"]
