"""The figure and widget layer of the explorables (never imported by the science core).

- :mod:`lecture_lib.viz.figures`: pure functions ``record -> plotly figure``, the
  house theme (fonts, colour-blind-safe palette) and helpers such as
  :func:`~lecture_lib.viz.figures.line_traces`, which draws each run only up to
  the step at which it diverged.
- :mod:`lecture_lib.viz.panels`: :class:`~lecture_lib.viz.panels.LivePanel`,
  which wires slider/dropdown controls to a compute function and a figure built
  once, plus control helpers (``slider``, ``log_slider``, ``dropdown``, ``toggle``).

``FAST`` is ``True`` when the environment variable ``LECTURE_FAST`` is set to
``1`` (or ``true``/``yes``/``on``): notebooks then choose small step counts so
that the test suite and CI can execute every notebook in seconds.
"""
from __future__ import annotations

import os


def fast_mode(environ=os.environ) -> bool:
    """``True`` when ``LECTURE_FAST`` asks for fast settings (``1``, ``true``, ``yes``, ``on``)."""
    return environ.get("LECTURE_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


FAST: bool = fast_mode()

from . import figures, panels  # noqa: E402  (FAST must exist before panels reads it)

__all__ = ["FAST", "fast_mode", "figures", "panels"]
