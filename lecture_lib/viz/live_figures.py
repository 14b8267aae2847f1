"""The figure side of a panel: plotly ``FigureWidget``\\ s built once, redrawn in place.

- each plotly figure becomes ONE ``FigureWidget``, built once from the figure's traces
  and layout; a redraw changes trace data inside ``fig.batch_update()``, so the browser
  redraws once;
- :meth:`LiveFigures.built` follows a builder ``build(result) -> go.Figure``: each new
  result is built the same way, its trace data copied by trace name
  (:func:`~lecture_lib.viz.figures.copy_trace_data`: a trace the new figure lacks is
  hidden, a new one added, so a builder needs no placeholder traces; an added trace was
  checked to draw in a Voila 0.5 page with plotly 6 served by ``voila_app``), and the
  layout keys the builder changed (a title, annotations, an axis range) copied too;
- which ``FigureWidget`` class is built can be chosen from outside: ``LECTURE_FIGURE_WIDGET``
  names a subclass as ``module:Class`` (the Voila app sets it so that figures load plotly's
  front end once per page, see ``voila_app.figure_widget``).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go

from . import figures as _figures

log = logging.getLogger(__name__)

FIGURE_WIDGET_ENV = "LECTURE_FIGURE_WIDGET"


@functools.lru_cache(maxsize=None)
def _load_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, go.FigureWidget)):
            raise TypeError(f"{spec} is not a FigureWidget subclass")
        return cls
    except Exception as exc:  # noqa: BLE001 - a plain FigureWidget still draws
        log.warning("%s=%s unusable (%s): using plotly's FigureWidget", FIGURE_WIDGET_ENV, spec, exc)
        return go.FigureWidget


def figure_widget_class() -> type:
    """``go.FigureWidget``, or the subclass that ``LECTURE_FIGURE_WIDGET`` names (``module:Class``)."""
    spec = os.environ.get(FIGURE_WIDGET_ENV, "").strip()
    return _load_class(spec) if spec else go.FigureWidget


def figure_widget(figure: go.Figure) -> go.FigureWidget:
    """One FigureWidget holding all of ``figure``'s traces (passed to the constructor).

    Its axes never hide tick labels that overflow the figure (``ticklabeloverflow="allow"``,
    :data:`figures.TICKLABELOVERFLOW`): plotly's default measures every label again after each redraw.
    """
    fw = figure_widget_class()(data=figure.data, layout=figure.layout)
    fw.update_xaxes(ticklabeloverflow=_figures.TICKLABELOVERFLOW)
    fw.update_yaxes(ticklabeloverflow=_figures.TICKLABELOVERFLOW)
    return fw


def refresh_initial_state(fw: go.FigureWidget, layout: bool = True) -> None:
    """Make the state a browser receives when it first connects match the figure as it is now.

    A FigureWidget sends later changes as relayout/restyle messages and keeps its construction-time
    data and layout as the state a newly connecting page starts from. In a pre-heated Voila kernel
    a panel can change before the page connects (a link sets its sliders, presenter mode restyles
    it): those messages reach nobody, so the initial state is brought up to date here, silently
    (no message: pages already connected got the restyle/relayout). ``layout=False``: only the data
    changed (a scrub step; copying the layout, template included, was most of its time in the kernel).
    """
    fw._trait_values["_widget_data"] = copy.deepcopy(fw._data)
    if layout:
        fw._trait_values["_widget_layout"] = copy.deepcopy(fw._layout_obj._props)


@contextlib.contextmanager
def _unsent_updates(fw: go.FigureWidget):
    """Within: ``fw``'s batched updates change its data and layout without a message to the page."""
    fw._send_update_msg = lambda *args, **kwargs: None
    try:
        yield
    finally:
        del fw._send_update_msg


def _flat(layout: dict, prefix: str = "") -> dict[str, Any]:
    """``{"xaxis": {"range": [0, 1]}}`` -> ``{"xaxis.range": [0, 1]}`` (lists are leaves; no template)."""
    out = {}
    for key, value in layout.items():
        if key == "template" and not prefix:
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays inside: treat as changed, setting them again is harmless
        return False


def copy_layout_changes(target, before: dict, after: dict) -> set[str]:
    """Set on ``target`` the layout entries in which the flat layouts ``before`` and ``after`` differ;
    returns their paths."""
    changed = set()
    for path in before.keys() | after.keys():
        if path not in after:
            target.layout[path] = None
        elif path not in before or not _same(before[path], after[path]):
            target.layout[path] = after[path]
        else:
            continue
        changed.add(path)
    return changed


class LiveFigures:
    """A panel's figures: ``widgets`` (FigureWidgets, CSS class ``lecture-figure``), built once.

    Args:
        figure: a ``go.Figure`` or a list of them, with every trace.
        redraw: ``redraw(fig_widget, result)`` (or ``redraw([fig_widgets], result)`` for a
            list) setting trace data; it runs inside ``batch_update()``.
    """

    def __init__(self, figure: go.Figure | Sequence[go.Figure], redraw: Callable[[Any, Any], None]):
        if not callable(redraw):
            raise TypeError("update must be a callable")
        self._single = isinstance(figure, go.Figure)
        figs = [figure] if self._single else list(figure)
        if not figs or not all(isinstance(f, go.Figure) for f in figs):
            raise TypeError("figure must be a plotly go.Figure or a list of them")
        self.widgets: list[go.FigureWidget] = [figure_widget(f) for f in figs]
        for fw in self.widgets:
            fw.add_class("lecture-figure")
        self._redraw = redraw
        # the (thinned) figures a result is drawn from; set by built()
        self.prepare: Callable[[Any], list[go.Figure]] | None = None
        self.lock = threading.RLock()           # one redraw or restyle at a time
        self._transient: list = []               # non-empty while draw() shows a partial result
        # per figure, the flat layout paths some redraw changed, with the first figure's value (None: unset)
        self.varying: list[dict[str, Any]] = [{} for _ in self.widgets]
        self._behind = False                     # a partial drew after the state a connecting page starts from

    @classmethod
    def built(cls, build: Callable[[Any], go.Figure | Sequence[go.Figure]], result,
              keep: int = 32) -> "LiveFigures":
        """Figures built by ``build(result)``; each later result is built the same way and copied over.

        Long line traces are thinned to the pixels they occupy (:func:`figures.thin_traces`), a one-point line
        is drawn as a point (:func:`figures.show_lone_points`: a run streamed with one row so far), a partial
        result's runs not started yet keep the legend entries they have on screen
        (:func:`figures.hold_legend_entries`), and the last ``keep`` built figures are kept by result, so that
        showing a result again (a slider moved back to a cached value) skips the builder and plotly's validation
        of a new figure.
        """
        single = []                              # whether build returns one figure (not a list)

        def prepare(res) -> list[go.Figure]:
            figs = build(res)
            single.append(isinstance(figs, go.Figure))
            figs = [figs] if single[-1] else list(figs)
            return [_figures.show_lone_points(_figures.thin_traces(f)) for f in figs]

        built: OrderedDict = OrderedDict()       # id(result) -> (result, figures, flat layouts)
        transient: list = []                     # the LiveFigures' _transient

        def prepared(res):
            hit = built.get(id(res))
            if hit is not None and hit[0] is res:
                built.move_to_end(id(res))
                return hit[1], hit[2]
            figs = prepare(res)
            entry = (res, figs, [_flat(f.layout.to_plotly_json()) for f in figs])
            if transient:                        # a partial result (runs still training) is shown once: not kept
                return entry[1], entry[2]
            built[id(res)] = entry
            while len(built) > keep:
                built.popitem(last=False)
            return entry[1], entry[2]

        first, layouts = prepared(result)
        layouts, varying = list(layouts), [{} for _ in layouts]

        def redraw(target, new_result) -> None:
            targets = target if isinstance(target, list) else [target]
            new, flats = prepared(new_result)
            if len(new) != len(targets):
                raise ValueError(f"build returned {len(new)} figures for this result, {len(targets)} for the first")
            for i, (fw, fig) in enumerate(zip(targets, new)):
                if transient:                    # built for this draw alone (not kept): changed in place
                    _figures.hold_legend_entries(fig, _figures.legend_entries(fw))
                _figures.copy_trace_data(fw, fig)
                for path in copy_layout_changes(fw, layouts[i], flats[i]):
                    varying[i].setdefault(path, first_layouts[i].get(path))
                layouts[i] = flats[i]

        first_layouts = list(layouts)
        live = cls(first[0] if single[0] else first, redraw)
        live.prepare = lambda res: prepared(res)[0]
        live.varying = varying
        live._transient = transient
        return live

    def draw(self, result, transient: bool = False, silent: bool = False) -> None:
        """Show ``result``: one batched redraw per figure; a page connecting later starts from it.
        ``transient``: a partial result (runs still training), whose built figures are not kept, and which a
        page connecting later starts from only after :meth:`settle` (or the next draw that is not transient):
        copying every figure's state took a fifth of a streamed partial's redraw in the kernel, before its
        first frame went out. ``silent``: the page drew it already (:mod:`~lecture_lib.viz.recall`): only the
        kernel's copy of the figures changes, nothing is sent."""
        with self.lock:
            self._transient[:] = [True] if transient else []
            with contextlib.ExitStack() as stack:
                for fw in self.widgets:
                    if silent:
                        stack.enter_context(_unsent_updates(fw))
                    stack.enter_context(fw.batch_update())
                try:
                    self._redraw(self.widgets[0] if self._single else self.widgets, result)
                finally:
                    self._transient.clear()
            if transient:
                self._behind = True
            else:
                self._refresh()

    def settle(self) -> None:
        """After partial draws (``draw(transient=True)``), a page connecting later starts from what is on screen."""
        with self.lock:
            if self._behind:
                self._refresh()

    def _refresh(self) -> None:
        for fw in self.widgets:
            refresh_initial_state(fw)
        self._behind = False

    def restyle_for_projector(self, width: int, height: int, gap: int) -> None:
        """Figures side by side in ``width`` pixels (``gap`` between them), ``height`` tall, projector style."""
        with self.lock:
            each = (width - gap * (len(self.widgets) - 1)) // max(len(self.widgets), 1)
            with contextlib.ExitStack() as stack:
                for fw in self.widgets:
                    stack.enter_context(fw.batch_update())
                    _figures.restyle_for_projector(fw, width=each, height=height)
            self._refresh()

    def mark_stale(self, stale: bool) -> None:
        """Fade the figures (CSS class ``lecture-stale``) while they do not show the controls' values."""
        for fw in self.widgets:
            (fw.add_class if stale else fw.remove_class)("lecture-stale")
