"""Live panels: controls wired to a compute function and a figure built once.

The pattern (the one voila-gallery dashboards use)::

    panel = LivePanel(
        compute=run_experiment,                 # run_experiment(lr=..., weight_decay=...) -> result
        controls={"lr": log_slider("α (learning rate)", 1e-3, 1.0, 0.1),
                  "weight_decay": slider("λ (weight decay)", 0.0, 0.01, 5e-4, step=1e-4)},
        figure=loss_figure(run_experiment(lr=0.1, weight_decay=5e-4)),   # pure builder, ALL traces
        update=lambda fig, result: figures.copy_trace_data(fig, loss_figure(result)),
        notes=lambda result: divergence_notes(result, labels),
        title="Learning rate and weight decay",
    )
    panel          # last expression of the cell: displays title, controls, progress, plot, notes

What the panel guarantees:

- each plotly figure becomes ONE ``FigureWidget``, built once from the figure's
  traces and layout (traces added to a FigureWidget after construction are not
  drawn by Voila 0.5 with plotly >= 6); updates only change trace data, inside
  ``fig.batch_update()`` so the browser redraws once;
- sliders fire on release (``continuous_update=False``);
- results are cached by control values (bounded LRU), so moving a slider back
  is instant;
- compute runs in a background thread; past ``progress_after`` seconds a
  progress bar appears (driven by ``progress(fraction)`` if ``compute`` accepts
  a ``progress`` argument, by an estimate from earlier runs otherwise);
- a newer control value supersedes a computation still running: the stale
  result is cached but never drawn over a newer one, and a ``progress``
  callback of a superseded computation raises :class:`Superseded` so that
  cooperative compute functions stop early;
- ``ValueError``/``TypeError`` from ``compute`` (bad hyperparameters) show
  their message in the panel; other exceptions show a short error line, never
  a traceback. With ``LECTURE_PANEL_RAISE=1`` (set by the notebook tests) a
  failure of the first computation is raised instead, so a broken notebook
  fails its test.

- panels are numbered 1, 2, ... in the order they are built; in a Voila dashboard the
  page's URL can set a panel's controls and switch on presenter mode (figures laid out
  side by side for a 1280×720 projector, larger fonts, thicker lines), and each panel
  publishes its non-default control values so that the page keeps the URL in step
  (:mod:`lecture_lib.viz.url_state`).

DOM hooks for tests and styling: the panel has CSS class ``lecture-panel``,
figures ``lecture-figure``, controls ``lecture-control``, the progress row
``lecture-progress``, notes ``lecture-notes``, the message ``lecture-message``, and a
hidden ``lecture-state`` element whose ``<span data-generation data-busy data-outcome
data-panel data-link>`` says which request is drawn, whether work is still pending, the
panel's number and its URL fragment (``p2.lr=0.3&p2.beta2=0.9``).
"""
from __future__ import annotations

import contextlib
import copy
import html
import inspect
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import ipywidgets as widgets
import plotly.graph_objects as go

from . import figures as _figures
from . import url_state

log = logging.getLogger(__name__)

CONTROL_WIDTH = "360px"
# presenter mode: the panel's figures side by side on a 1280x720 canvas (the page scales it to the screen)
PRESENT_WIDTH, PRESENT_FIGURE_HEIGHT, PRESENT_GAP = 1236, 440, 12
_STYLE = {"description_width": "initial"}

PANEL_CSS = """
<style>
.lecture-panel { border: 1px solid #d8dde3; border-radius: 10px; padding: 14px 18px 10px 18px;
                 margin: 14px 0 22px 0; background: #ffffff; box-shadow: 0 1px 3px rgba(0,0,0,0.06);
                 max-width: 1040px; }
.lecture-panel .lecture-title h3 { margin: 0 0 4px 0; font-size: 1.25em; font-weight: 600; color: #1d2a3a; }
.lecture-panel .lecture-caption { color: #4a5563; font-size: 0.98em; line-height: 1.45; margin-bottom: 6px; }
.lecture-panel .lecture-controls { gap: 4px 26px; padding: 6px 0 2px 0; }
.lecture-panel .lecture-control .widget-label { font-size: 1.0em; }
.lecture-panel .lecture-notes { color: #333; font-size: 0.98em; }
.lecture-panel .lecture-notes table { border-collapse: collapse; margin: 6px 0; font-size: 0.95em; }
.lecture-panel .lecture-notes th, .lecture-panel .lecture-notes td { padding: 3px 12px; text-align: right;
                 border-bottom: 1px solid #e3e7ec; }
.lecture-panel .lecture-notes th:first-child, .lecture-panel .lecture-notes td:first-child { text-align: left; }
.lecture-panel .lecture-notes .lecture-diverged { color: #b34700; font-weight: 600; }
.lecture-panel .lecture-message .lecture-error, .lecture-panel .lecture-link-note .lecture-error { background: #fff4e5; border-left: 4px solid #D55E00;
                 padding: 8px 12px; margin: 6px 0; color: #5b2500; border-radius: 4px; }
.lecture-panel .lecture-stale { opacity: 0.45; transition: opacity 0.2s; }
</style>
"""


# plotly >= 6 ships its FigureWidget front end (~5 MB of JavaScript) inside every widget's
# state, and anywidget evaluates it once per figure. Served by voila_app (which sets
# LECTURE_SHARED_PLOTLY_BUNDLE=1 for its kernels), a figure instead carries this small module,
# which imports the bundle from Voila's static files: fetched and evaluated once per page (the
# browser caches it), so a dashboard with many figures opens fast.
# anywidget gives a model's initialize() 2 seconds; past that the figure is drawn but never
# follows its model again. The bundle can take longer to arrive and evaluate (a slow line, ten
# visitors' kernels starting on the same laptop), so initialize() only starts plotly's own
# initialisation and render() waits for it, without a deadline.
SHARED_BUNDLE_ESM = """const body = document.body;
const base = new URL((body && body.dataset.baseUrl) || "/voila/", window.location.href);
const bundle = import(new URL("static/widgetbundle.js", base).href);
export default () => {
  let plotly;
  return {
    initialize(ctx) {
      plotly = bundle.then((m) => { const widget = m.default(); widget.initialize(ctx); return widget; });
    },
    async render(ctx) {
      return (await plotly).render(ctx);
    },
  };
};
"""


class _SharedBundleFigureWidget(go.FigureWidget):
    """A FigureWidget whose front end is loaded by URL from Voila (see SHARED_BUNDLE_ESM)."""

    _esm = SHARED_BUNDLE_ESM


def figure_widget(figure: go.Figure) -> go.FigureWidget:
    """One FigureWidget holding all of ``figure``'s traces (passed to the constructor)."""
    shared = os.environ.get("LECTURE_SHARED_PLOTLY_BUNDLE", "").strip() == "1"
    cls = _SharedBundleFigureWidget if shared else go.FigureWidget
    return cls(data=figure.data, layout=figure.layout)


def refresh_initial_state(fw: go.FigureWidget) -> None:
    """Make the state a browser receives when it first connects match the figure as it is now.

    A FigureWidget sends later changes as relayout/restyle messages and keeps its construction-time
    data and layout as the state a newly connecting page starts from. In a pre-heated Voila kernel
    a panel can change before the page connects (a link sets its sliders, presenter mode restyles
    it): those messages reach nobody, so the initial state is brought up to date here, silently
    (no message: pages already connected got the restyle/relayout).
    """
    fw._trait_values["_widget_data"] = copy.deepcopy(fw._data)
    fw._trait_values["_widget_layout"] = copy.deepcopy(fw._layout_obj._props)


class Superseded(Exception):
    """Raised by a ``progress`` callback when a newer control value has arrived."""


# ---------------------------------------------------------------------------
# control helpers: each returns a configured ipywidget
# ---------------------------------------------------------------------------

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


def divergence_notes(record, labels: Sequence[str]) -> str:
    """HTML listing every diverged run, e.g. ``"α = 3: diverged at step 12"``; empty if none did."""
    lines = []
    for r, label in enumerate(labels):
        note = record.divergence_note(r)
        if note:
            lines.append(f"<span class='lecture-diverged'>{html.escape(str(label))}: {html.escape(note)}</span>")
    return " · ".join(lines)


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
        if word in url_state.TRUE_WORDS or word in {"0", "false", "no", "off"}:
            return word in url_state.TRUE_WORDS
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


def _freeze(value):
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _takes_progress(fn: Callable) -> bool:
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _strict() -> bool:
    return os.environ.get("LECTURE_PANEL_RAISE", "").strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------
# the panel
# ---------------------------------------------------------------------------

class LivePanel(widgets.VBox):
    """Controls, a progress bar, one or more figures and notes, wired to ``compute``.

    Args:
        compute: ``compute(**control_values) -> result``; if it accepts a
            ``progress`` keyword it receives a callback ``progress(fraction)``.
        controls: ``{keyword: widget}``; the keyword is the argument of
            ``compute`` the widget sets (use :func:`slider`, :func:`log_slider`...).
        figure: a ``go.Figure`` with ALL its traces, or a list of them.
        update: ``update(fig_widget, result)`` (or ``update([fig_widgets], result)``
            for a list) setting trace data; it runs inside ``batch_update()``.
        notes: optional ``notes(result) -> str`` (HTML) shown under the plot.
        title, caption: heading and one-paragraph explanation (HTML allowed in caption).
        cache_size: how many results to keep (least recently used dropped).
        progress_after: seconds of compute after which the progress bar shows.
    """

    def __init__(self, compute: Callable[..., Any], controls: Mapping[str, widgets.Widget],
                 figure: go.Figure | Sequence[go.Figure] | None = None,
                 update: Callable[[Any, Any], None] | None = None,
                 notes: Callable[[Any], str] | None = None, title: str | None = None,
                 caption: str | None = None, cache_size: int = 32, progress_after: float = 0.5,
                 build: Callable[[Any], go.Figure | Sequence[go.Figure]] | None = None):
        if build is not None:
            if figure is not None or update is not None:
                raise TypeError("give build, or figure and update, not both")
            self.controls = dict(controls)
            self._compute, self._takes_progress = compute, _takes_progress(compute)
            first = (tuple(sorted(self.values.items())), self._compute(**self.values))  # computed once
            figure = build(first[1])

            def update(target, result):
                for fw, fig in zip(target if isinstance(target, list) else [target],
                                   [build(result)] if isinstance(figure, go.Figure) else build(result)):
                    _figures.copy_trace_data(fw, fig)
        else:
            first = None
        if not callable(compute) or not callable(update):
            raise TypeError("compute and update must be callables")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._compute = compute
        self._update = update
        self._notes_fn = notes
        self._takes_progress = _takes_progress(compute)
        self.controls: dict[str, widgets.Widget] = dict(controls)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._progress_after = progress_after
        self._durations: list[float] = []

        self._single = isinstance(figure, go.Figure)
        figs = [figure] if self._single else list(figure)
        if not figs or not all(isinstance(f, go.Figure) for f in figs):
            raise TypeError("figure must be a plotly go.Figure or a list of them")
        # Built ONCE, with every trace passed to the constructor.
        self.figures: list[go.FigureWidget] = [figure_widget(f) for f in figs]
        for fw in self.figures:
            fw.add_class("lecture-figure")

        self._lock = threading.Lock()            # guards generation, pending, busy
        self._apply_lock = threading.RLock()     # one apply at a time, newest wins
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Event()
        self._idle.set()
        self._generation = 0
        self._applied_generation = -1
        self._pending: tuple | None = None
        self._busy = False
        self._worker: threading.Thread | None = None
        self._fraction: float | None = None
        self.result: Any = None
        self.message: str = ""
        self._outcome = "none"

        self._title = widgets.HTML(f"<h3>{html.escape(title)}</h3>" if title else "")
        self._title.add_class("lecture-title")
        self._caption = widgets.HTML(caption or "")
        self._caption.add_class("lecture-caption")
        self._bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                          layout=widgets.Layout(width="160px"))
        self._status = widgets.HTML("")
        self._progress = widgets.HBox([self._bar, self._status],
                                      layout=widgets.Layout(visibility="hidden", align_items="center"))
        self._progress.add_class("lecture-progress")
        # the progress bar sits at the end of the controls row: no jump in the layout when it shows
        self._controls_box = widgets.HBox(list(self.controls.values()) + [self._progress],
                                          layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self._controls_box.add_class("lecture-controls")
        self._message = widgets.HTML("")
        self._message.add_class("lecture-message")
        self._notes = widgets.HTML("")
        self._notes.add_class("lecture-notes")
        # machine-readable state for browser tests: applied generation, busy flag, outcome
        self._state = widgets.HTML("", layout=widgets.Layout(display="none"))
        self._state.add_class("lecture-state")
        self._figure_box = widgets.VBox(self.figures)
        self._figure_box.add_class("lecture-figures")
        # what a link set (or could not set) on this panel, e.g. "link ignored p2.lr=7: outside [...]"
        self._link_note = widgets.HTML("")
        self._link_note.add_class("lecture-link-note")
        children = [widgets.HTML(PANEL_CSS)]
        children += [w for w, text in ((self._title, title), (self._caption, caption)) if text]
        children += [self._controls_box, self._link_note, self._message, self._figure_box, self._notes,
                     self._state]
        super().__init__(children)
        self.add_class("lecture-panel")

        # URL state: defaults are what the notebook chose; a link may already ask for other values
        self._defaults = {name: encode_value(w) for name, w in self.controls.items()}
        self._quiet = False
        self.presenting = False
        self.number = url_state.PAGE.register(self)
        link_values, present = url_state.PAGE.pending_for(self.number)
        self._set_from_link(link_values)
        if present:
            self.present()
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        self._first_compute(first)

    # -- public ---------------------------------------------------------------
    @property
    def figure(self) -> go.FigureWidget:
        """The first (usually only) figure widget."""
        return self.figures[0]

    @property
    def values(self) -> dict[str, Any]:
        """Current control values, floats rounded to 12 significant digits."""
        return {name: _freeze(w.value) for name, w in self.controls.items()}

    def set(self, **values) -> None:
        """Set controls programmatically (as a user would); triggers recomputation."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; panel has {sorted(self.controls)}")
        for name, value in values.items():
            self.controls[name].value = value

    def link(self) -> dict[str, str]:
        """The controls that differ from the notebook's defaults, as URL text (``{"lr": "0.3"}``)."""
        current = {name: encode_value(w) for name, w in self.controls.items()}
        return {name: text for name, text in current.items() if text != self._defaults[name]}

    def attach_url_state(self, values: Mapping[str, str], present: bool) -> None:
        """Apply what the page's URL asks of this panel (called by :data:`url_state.PAGE`)."""
        if present:
            self.present()
        if self._set_from_link(values):
            self.request()
        else:
            self._publish_state()        # data-synced: the page may now write the URL

    def present(self, width: int = PRESENT_WIDTH, height: int = PRESENT_FIGURE_HEIGHT) -> None:
        """Lay the panel out for a projector: figures side by side in ``width`` pixels, ``height`` tall,
        larger fonts, darker axes, thicker lines (:func:`figures.restyle_for_projector`)."""
        with self._apply_lock:
            n = len(self.figures)
            each = (width - PRESENT_GAP * (n - 1)) // max(n, 1)
            with contextlib.ExitStack() as stack:
                for fw in self.figures:
                    stack.enter_context(fw.batch_update())
                    _figures.restyle_for_projector(fw, width=each, height=height)
            for fw in self.figures:
                refresh_initial_state(fw)
            self._figure_box.layout.flex_flow = "row nowrap"
            self._figure_box.layout.grid_gap = f"{PRESENT_GAP}px"
            self.add_class("lecture-presenting")
            self.presenting = True

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no computation is running or pending; ``False`` on timeout."""
        return self._idle.wait(timeout)

    def request(self, values: Mapping[str, Any] | None = None) -> None:
        """Compute (or fetch from cache) and draw the result for ``values`` (default: current)."""
        values = dict(self.values if values is None else values)
        key = tuple(sorted((k, _freeze(v)) for k, v in values.items()))
        with self._lock:
            self._generation += 1
            generation = self._generation
            cached = self._cache_get(key)
            if cached is None:
                self._pending = (generation, key, values)
                self._idle.clear()
                self._ensure_worker()
                self._wake.notify()
            else:
                self._pending = None
        if cached is not None:
            self._apply(generation, "ok", cached[0])
        else:
            self._publish_state()

    # -- internals ------------------------------------------------------------
    def _on_change(self, change) -> None:
        if not self._quiet:
            self.request()

    def _set_from_link(self, texts: Mapping[str, str]) -> bool:
        """Set controls from URL text without a request per control; returns whether any changed."""
        changed, ignored = False, []
        values = {}
        for name, text in texts.items():
            if name not in self.controls:
                ignored.append(f"p{self.number}.{name} (this panel has no such control; it has "
                               f"{', '.join(self.controls)})")
                continue
            try:
                values[name] = decode_value(self.controls[name], text)
            except ValueError as exc:
                ignored.append(f"p{self.number}.{name}={text}: {exc}")
        self._quiet = True
        try:
            for name, value in values.items():
                changed |= _freeze(self.controls[name].value) != _freeze(value)
                self.controls[name].value = value
        finally:
            self._quiet = False
        self._link_note.value = ("" if not ignored else "<div class='lecture-error'><b>Part of the link was ignored:</b> "
                                 + "; ".join(html.escape(i) for i in ignored) + "</div>")
        return changed

    def _cache_get(self, key):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        return None

    def _cache_put(self, key, result) -> None:
        with self._lock:
            self._cache[key] = (result,)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _call(self, values: dict, generation: int):
        if not self._takes_progress:
            return self._compute(**values)

        def progress(fraction: float) -> None:
            if generation != self._generation:
                raise Superseded()
            self._fraction = min(max(float(fraction), 0.0), 1.0)

        return self._compute(**values, progress=progress)

    def _first_compute(self, known=None) -> None:
        """Compute (or take ``known``, the result that built the figure) for the current values and draw it."""
        values = self.values
        key = tuple(sorted(values.items()))
        self._generation = 1
        start = time.monotonic()
        try:
            result = known[1] if known is not None and known[0] == key else self._call(values, 1)
        except Exception as exc:  # noqa: BLE001 - shown to the user, raised in tests
            if _strict():
                raise
            self._apply(1, *self._classify(exc))
            return
        self._durations.append(time.monotonic() - start)
        self._cache_put(key, result)
        self._apply(1, "ok", result, strict=_strict())

    @staticmethod
    def _classify(exc: Exception) -> tuple[str, str]:
        if isinstance(exc, (ValueError, TypeError)):
            return "bad", str(exc)
        log.error("panel computation failed", exc_info=exc)
        return "error", f"The computation failed ({type(exc).__name__}: {exc})."

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="LivePanel-worker", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None:
                    self._busy = False
                    self._idle.set()
                    self._wake.wait()
                generation, key, values = self._pending
                self._pending = None
                self._busy = True
            self._fraction = None
            done = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(done, time.monotonic()), daemon=True)
            ticker.start()
            start = time.monotonic()
            try:
                result = self._call(values, generation)
                outcome = ("ok", result)
                self._durations = (self._durations + [time.monotonic() - start])[-5:]
                self._cache_put(key, result)
            except Superseded:
                outcome = None
            except Exception as exc:  # noqa: BLE001 - shown to the user instead of a traceback
                outcome = self._classify(exc)
            finally:
                done.set()
                ticker.join()
            if outcome is not None and generation == self._generation:
                self._apply(generation, *outcome)
            with self._lock:
                idle = self._pending is None
                if idle:
                    self._busy = False
            if idle:
                self._progress.layout.visibility = "hidden"
                if not self.message:
                    for fw in self.figures:
                        fw.remove_class("lecture-stale")
                self._publish_state()

    def _tick(self, done: threading.Event, start: float) -> None:
        expected = sorted(self._durations)[len(self._durations) // 2] if self._durations else 2.0
        if done.wait(self._progress_after):
            return
        self._progress.layout.visibility = "visible"
        for fw in self.figures:
            fw.add_class("lecture-stale")
        while not done.wait(0.1):
            elapsed = time.monotonic() - start
            fraction = self._fraction
            if fraction is None:  # no report from compute: estimate from earlier runs, never reach 1
                fraction = elapsed / (elapsed + max(expected, 1e-3))
            self._bar.value = fraction
            self._status.value = f"<span style='color:#555'>computing… {elapsed:.1f} s</span>"

    def _apply(self, generation: int, kind: str, payload, strict: bool = False) -> None:
        with self._apply_lock:
            if generation < self._applied_generation:
                return  # a newer result is already drawn: never overwrite it
            self._applied_generation = generation
            if kind == "ok":
                try:
                    with contextlib.ExitStack() as stack:
                        for fw in self.figures:
                            stack.enter_context(fw.batch_update())
                        self._update(self.figures[0] if self._single else self.figures, payload)
                    for fw in self.figures:
                        refresh_initial_state(fw)
                    notes = self._notes_fn(payload) if self._notes_fn else ""
                except Exception as exc:  # noqa: BLE001
                    if strict:
                        raise
                    kind, payload = self._classify(exc)
                else:
                    self.result = payload
                    self._notes.value = notes or ""
                    self._show_message("")
            if kind != "ok":
                self._show_message(payload, error=(kind == "error"))
            for fw in self.figures:
                if kind == "ok":
                    fw.remove_class("lecture-stale")
                else:
                    fw.add_class("lecture-stale")
            self._outcome = kind
            self._publish_state()

    def _publish_state(self) -> None:
        busy = self._pending is not None or self._busy
        link = "&".join(f"p{self.number}.{quote(k)}={quote(v)}" for k, v in self.link().items())
        self._state.value = (f"<span data-generation='{self._applied_generation}' data-busy='{int(busy)}' "
                             f"data-outcome='{self._outcome}' data-panel='{self.number}' "
                             f"data-synced='{int(url_state.PAGE.query is not None)}' "
                             f"data-link='{html.escape(link, quote=True)}'></span>")

    def _show_message(self, text: str, error: bool = False) -> None:
        self.message = text
        if not text:
            self._message.value = ""
            return
        head = "Something went wrong" if error else "Cannot run with these settings"
        self._message.value = (f"<div class='lecture-error'><b>{head}:</b> {html.escape(text)}</div>")
