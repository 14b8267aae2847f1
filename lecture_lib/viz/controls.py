"""The controls of a panel: each helper returns a configured ipywidget.

Sliders fire on release (``continuous_update=False``): a panel computes once per move,
not once per pixel. Every control carries the CSS class ``lecture-control``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets

CONTROL_WIDTH = "360px"
_STYLE = {"description_width": "initial"}


def _control(w: widgets.Widget) -> widgets.Widget:
    w.add_class("lecture-control")
    return w


def slider(description: str, min: float, max: float, value: float, step: float | None = None,
           readout_format: str = ".3g") -> widgets.FloatSlider:
    """A float slider that fires on release; ``step`` defaults to 1/100 of the range."""
    if not min < max:
        raise ValueError(f"slider '{description}': min must be below max, got {min} and {max}")
    step = (max - min) / 100 if step is None else step
    return _control(widgets.FloatSlider(value=value, min=min, max=max, step=step, description=description,
                                        continuous_update=False, readout_format=readout_format,
                                        style=_STYLE, layout=widgets.Layout(width=CONTROL_WIDTH)))


def int_slider(description: str, min: int, max: int, value: int, step: int = 1) -> widgets.IntSlider:
    """An integer slider that fires on release."""
    if not min < max:
        raise ValueError(f"int_slider '{description}': min must be below max, got {min} and {max}")
    return _control(widgets.IntSlider(value=value, min=min, max=max, step=step, description=description,
                                      continuous_update=False, style=_STYLE,
                                      layout=widgets.Layout(width=CONTROL_WIDTH)))


def log_slider(description: str, min: float, max: float, value: float,
               steps_per_decade: int = 10, readout_format: str = ".3g") -> widgets.FloatLogSlider:
    """A slider on a log scale from ``min`` to ``max`` (both > 0), e.g. a learning rate.

    Values are powers of ten on a grid of ``steps_per_decade`` points per decade
    (:meth:`LivePanel.values` rounds them to 12 significant digits, so that
    0.1 reads as 0.1 and not 0.10000000000000002).
    """
    if not 0 < min < max:
        raise ValueError(f"log_slider '{description}': need 0 < min < max, got {min} and {max}")
    if not min <= value <= max:
        raise ValueError(f"log_slider '{description}': value {value} outside [{min}, {max}]")
    return _control(widgets.FloatLogSlider(value=value, base=10, min=math.log10(min), max=math.log10(max),
                                           step=1.0 / steps_per_decade, description=description,
                                           continuous_update=False, readout_format=readout_format,
                                           style=_STYLE, layout=widgets.Layout(width=CONTROL_WIDTH)))


def dropdown(description: str, options: Sequence | Mapping, value: Any) -> widgets.Dropdown:
    """A dropdown; ``options`` is a list of values or a ``{label: value}`` mapping."""
    opts = list(options.items()) if isinstance(options, Mapping) else list(options)
    return _control(widgets.Dropdown(options=opts, value=value, description=description, style=_STYLE,
                                     layout=widgets.Layout(width=CONTROL_WIDTH)))


def choice(description: str, options: Sequence | Mapping, value: Any) -> widgets.ToggleButtons:
    """A row of buttons for a few mutually exclusive options."""
    opts = list(options.items()) if isinstance(options, Mapping) else list(options)
    return _control(widgets.ToggleButtons(options=opts, value=value, description=description, style=_STYLE))


def toggle(description: str, value: bool = False) -> widgets.Checkbox:
    """An on/off switch (a checkbox)."""
    return _control(widgets.Checkbox(value=bool(value), description=description, indent=False,
                                     layout=widgets.Layout(width="auto")))


def freeze(value):
    """A control value as a cache key: floats rounded to 12 significant digits, lists as tuples."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
