"""Live panels: controls wired to a compute function and a figure built from its first result.

The pattern (the one voila-gallery dashboards use)::

    panel = LivePanel(
        compute=run_experiment,                 # run_experiment(lr=..., weight_decay=...) -> result
        controls={"lr": log_slider("α (learning rate)", 1e-3, 1.0, 0.1),
                  "weight_decay": slider("λ (weight decay)", 0.0, 0.01, 5e-4, step=1e-4)},
        build=loss_figure,                      # pure builder: result -> go.Figure (or a list)
        notes=lambda result: divergence_notes(result, labels),
        title="Learning rate and weight decay",
    )
    panel          # last expression of the cell: displays title, controls, progress, plot, notes

What the panel guarantees:

- the default result is computed ONCE, and ``build`` makes the figure from it; each later
  result is built the same way and only its trace data reach the ``FigureWidget``,
  trace by trace name (:mod:`lecture_lib.viz.live_figures`);
- sliders fire on release (``continuous_update=False``, :mod:`lecture_lib.viz.controls`);
- results are cached by control values (bounded LRU), so moving a slider back is instant; the page
  itself keeps what it drew for them and redraws a cached result without the kernel
  (:mod:`lecture_lib.viz.recall`);
  compute runs in a background thread; past ``progress_after`` seconds a progress bar
  appears; a newer control value supersedes a computation still running
  (:mod:`lecture_lib.viz.runner`);
- a long computation streams: if ``compute`` reports partial results (``progress(fraction, partial)``,
  e.g. through :class:`lecture_lib.record.Stream`), the figures draw each one as it comes (at most
  ten a second) through the same builder, so the new runs' curves grow while they train, and the
  final result replaces the last; notes wait for the final result (dimmed meanwhile, under a line saying they
  describe the previous values). The state element counts the
  partial frames drawn (``data-partial-generation``, ``data-partials``, see
  :class:`~lecture_lib.viz.panel_view.PanelView`);
- ``ValueError``/``TypeError`` from ``compute`` (bad hyperparameters) show their message in
  the panel; other exceptions show a short error line, never a traceback. With
  ``LECTURE_PANEL_RAISE=1`` (set by the notebook tests) a failure of the first computation
  is raised instead, so a broken notebook fails its test;
- panels are numbered 1, 2, ... in the order they are built; in a Voila dashboard the
  page's URL can set a panel's controls and switch on presenter mode (figures side by side
  for a 1280×720 projector, larger fonts, thicker lines), and each panel publishes its
  non-default control values so that the page keeps the URL in step
  (:mod:`lecture_lib.viz.url_state`).

Its widgets, CSS and DOM hooks are :class:`~lecture_lib.viz.panel_view.PanelView`'s.
"""
from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import ipywidgets as widgets
import plotly.graph_objects as go

from . import url_state
from .controls import CONTROL_WIDTH, choice, dropdown, freeze, int_slider, log_slider, slider, toggle
from .live_figures import LiveFigures, figure_widget, refresh_initial_state
from .panel_view import PANEL_CSS, PRESENT_FIGURE_HEIGHT, PRESENT_GAP, PRESENT_WIDTH, PanelView
from .recall import Recall
from .runner import ComputeRunner, Outcome, Superseded, classify, warm_when_idle
from .url_state import decode_value, encode_value

log = logging.getLogger(__name__)

__all__ = ["LivePanel", "Superseded", "divergence_notes", "slider", "int_slider", "log_slider", "dropdown",
           "choice", "toggle", "encode_value", "decode_value", "figure_widget", "refresh_initial_state",
           "CONTROL_WIDTH", "PANEL_CSS", "PRESENT_WIDTH", "PRESENT_FIGURE_HEIGHT", "PRESENT_GAP"]


def divergence_notes(record, labels: Sequence[str]) -> str:
    """HTML listing every diverged run, e.g. ``"α = 3: diverged at step 12"``; empty if none did."""
    lines = []
    for r, label in enumerate(labels):
        note = record.divergence_note(r)
        if note:
            lines.append(f"<span class='lecture-diverged'>{html.escape(str(label))}: {html.escape(note)}</span>")
    return " · ".join(lines)


def _strict() -> bool:
    return os.environ.get("LECTURE_PANEL_RAISE", "").strip().lower() in {"1", "true", "yes", "on"}


class LivePanel(PanelView):
    """Controls, a progress bar, one or more figures and notes, wired to ``compute``.

    Args:
        compute: ``compute(**control_values) -> result``; if it accepts a
            ``progress`` keyword it receives a callback ``progress(fraction, partial=None)``;
            a ``partial`` (a result of the same type, runs trained so far) is drawn at once.
        controls: ``{keyword: widget}``; the keyword is the argument of
            ``compute`` the widget sets (use :func:`slider`, :func:`log_slider`...).
        build: ``build(result) -> go.Figure`` (or a list of figures), a pure builder.
            Give every trace a unique ``name``: updates match traces by name.
        notes: optional ``notes(result) -> str`` (HTML) shown under the plot.
        title, caption: heading and one-paragraph explanation (HTML allowed in caption).
        cache_size: how many results to keep (least recently used dropped).
        progress_after: seconds of compute after which the progress bar shows.
        preload: modules ``compute`` imports on its first run in a process (e.g. ``runner.TORCH_FUNC_IMPORTS``
            for a computation with ``torch.func``'s reverse mode: 1.1-1.6 s and ~70 MB), imported once the
            notebook has run (:func:`~lecture_lib.viz.runner.warm_when_idle`): a kernel whose notebook came from
            the result cache would otherwise pay them in the first slider move that computes.
        warm: work run after those imports, once the notebook has run: it fills what ``compute`` keeps in the
            process for its next requests (06's damping panel: step 0's statistics, which a move of γ or λ
            reuses), so that the first move after a notebook served from the result cache finds it too.
    """

    recalls = True      # the page keeps drawn results (lecture_lib.viz.recall), a ScrubPanel its families too

    def __init__(self, compute: Callable[..., Any], controls: Mapping[str, widgets.Widget],
                 build: Callable[[Any], go.Figure | Sequence[go.Figure]],
                 notes: Callable[[Any], str] | None = None, title: str | None = None,
                 caption: str | None = None, cache_size: int = 32, progress_after: float = 0.5,
                 preload: Sequence[str] = (), warm: Callable[[], Any] | None = None):
        if not callable(build):
            raise TypeError(f"build must be a figure builder result -> go.Figure, got {type(build).__name__}")
        self.controls: dict[str, widgets.Widget] = dict(controls)
        self.runner = ComputeRunner(compute, on_outcome=self._show, on_progress=self._show_progress,
                                    on_idle=self._on_idle, on_partial=self._show_partial, cache_size=cache_size,
                                    progress_after=progress_after)
        super().__init__(list(self.controls.values()), title=title, caption=caption)
        self.recall: Recall | None = None
        if self.recalls:
            self.recall = Recall(self.controls.values(), self._notes, size=cache_size)
            self.recall.on_ready = self._remember
            self.children += (self.recall,)
        self._build, self._notes_fn = build, notes
        self.live: LiveFigures | None = None       # made from the first result
        self.result: Any = None
        self._outcome = "none"
        self._draw_error: Exception | None = None
        self._partial_generation, self._partials = -1, 0    # the streaming request on screen, its frames

        # URL state: defaults are what the notebook chose; a link may already ask for other values
        self._defaults = {name: encode_value(w) for name, w in self.controls.items()}
        self._quiet = False
        self.presenting = False
        self._present_size = (PRESENT_WIDTH, PRESENT_FIGURE_HEIGHT)
        self.number = url_state.PAGE.register(self)
        link_values, present = url_state.PAGE.pending_for(self.number)
        self._set_from_link(link_values)
        if present:
            self.present()
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        strict = _strict()
        self.runner.run_now(self.values, raise_errors=strict)      # the one computation of the default
        warm_when_idle(preload, tasks=() if warm is None else (warm,))
        if strict and self._draw_error is not None:
            raise self._draw_error

    # -- public ---------------------------------------------------------------
    @property
    def figures(self) -> list[go.FigureWidget]:
        """The figure widgets (none yet if the first computation failed)."""
        return self.live.widgets if self.live is not None else []

    @property
    def figure(self) -> go.FigureWidget:
        """The first (usually only) figure widget."""
        return self.figures[0]

    @property
    def values(self) -> dict[str, Any]:
        """Current control values, floats rounded to 12 significant digits."""
        return {name: freeze(w.value) for name, w in self.controls.items()}

    def set(self, **values) -> None:
        """Set controls programmatically (as a user would); triggers recomputation."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; panel has {sorted(self.controls)}")
        for name, value in values.items():
            self.controls[name].value = value

    def request(self, values: Mapping[str, Any] | None = None) -> None:
        """Compute (or fetch from cache) and draw the result for ``values`` (default: current)."""
        values = self.values if values is None else {k: freeze(v) for k, v in values.items()}
        self.runner.request(values)
        self._publish_state()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no computation is running or pending; ``False`` on timeout."""
        return self.runner.wait(timeout)

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
        self.presenting, self._present_size = True, (width, height)
        if self.live is not None:
            self.live.restyle_for_projector(width, height, PRESENT_GAP)
        self.lay_out_for_projector()

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
                changed |= freeze(self.controls[name].value) != freeze(value)
                self.controls[name].value = value
        finally:
            self._quiet = False
        self.show_link_note(ignored)
        return changed

    def _draw(self, result) -> None:
        if self.live is None:
            self._draw_first(result)
        elif self.recall is not None and self.recall.page_shows(result):
            self._redraw(result, silent=True)          # the page drew it already (lecture_lib.viz.recall)
        else:
            self._redraw(result)
            self._sent_draw()

    def _draw_first(self, result) -> None:
        self.live = LiveFigures.built(self._build, result)     # build=: the first result makes the figures
        if self.presenting:
            self.live.restyle_for_projector(*self._present_size, PRESENT_GAP)
        self.show_figures(self.live.widgets)

    def _redraw(self, result, silent: bool = False) -> None:
        if silent:
            self.live.draw(result, silent=True)
        else:
            self.live.draw(result)

    def _show(self, outcome: Outcome) -> None:
        """The runner's newest outcome: draw a result, or show why there is none."""
        kind, value = outcome.kind, outcome.value
        if kind == "ok":
            try:
                self._draw(value)
                notes = self._notes_fn(value) if self._notes_fn else ""
            except Exception as exc:  # noqa: BLE001 - shown to the user, raised in tests (first computation)
                self._draw_error = exc
                kind, value = classify(exc)
            else:
                self.result = value
                self.show_notes(notes)
                self.show_message("")
        if kind != "ok":
            self.show_message(value, error=(kind == "error"))
            self.mark_notes_stale(False)
        if self.live is not None:
            self.live.mark_stale(kind != "ok")
        self._outcome = kind
        self._remember()
        self._publish_state()

    def _draw_partial(self, partial) -> None:
        """Draw a partial result (a :class:`~lecture_lib.viz.scrub.ScrubPanel` draws its current position)."""
        self.live.draw(partial, transient=True)

    def _show_partial(self, generation: int, partial) -> None:
        """The runner's partial result of the newest request: the figures show the runs trained so far."""
        if self.live is None:
            return
        try:
            self._draw_partial(partial)
        except Exception:  # noqa: BLE001 - a partial that does not draw is skipped; the final result follows
            log.warning("a partial result could not be drawn", exc_info=True)
            return
        self._sent_draw()
        if self._partial_generation != generation:
            self._partial_generation, self._partials = generation, 0
            self.mark_notes_stale(True)    # the notes wait for the final result: say whose they are
        self._partials += 1
        self.live.mark_stale(False)
        self._publish_state()

    def _sent_draw(self) -> None:
        if self.recall is not None:
            self.recall.sent_draw()

    def _remember(self) -> None:
        """The page keeps the result on screen, for a move back to these values (lecture_lib.viz.recall)."""
        current = self._outcome == "ok" and self.runner.delivered == self.runner.generation
        if self.recall is None or self.live is None or not current:
            return
        try:
            self.recall.remember(self.result, self.live, self._notes.value, self._recall_frames())
        except Exception:  # noqa: BLE001 - the kernel still draws it; recall is only faster
            log.warning("a result could not be kept in the page", exc_info=True)

    def _recall_frames(self) -> list | None:
        """What a :class:`~lecture_lib.viz.scrub.ScrubPanel` recalls besides the figures: its scrubber's frames."""
        return None

    def _show_progress(self, fraction: float, elapsed: float) -> None:
        self.show_progress(fraction, elapsed)
        if self.live is not None and self._partial_generation != self.runner.generation:
            self.live.mark_stale(True)     # not while the figures show the new runs growing

    def _on_idle(self) -> None:
        if self.live is not None:
            self.live.settle()             # a computation that failed after its partials leaves one on screen
        self.hide_progress()
        if not self.message and self.live is not None:
            self.live.mark_stale(False)
        self._publish_state()

    def _publish_state(self) -> None:
        link = "&".join(f"p{self.number}.{quote(k)}={quote(v)}" for k, v in self.link().items())
        self.show_state(generation=self.runner.delivered, busy=self.runner.busy, outcome=self._outcome,
                        number=self.number, synced=url_state.PAGE.query is not None, link=link,
                        partial_generation=self._partial_generation, partials=self._partials)

    # -- read-only views for exporters (voila_app.static_site.capture) --------
    @property
    def title_html(self) -> str:
        """The title as shown (``<h3>...</h3>``, or "" without one)."""
        return self._title_html

    @property
    def caption_html(self) -> str:
        """The caption as shown (HTML, or "")."""
        return self._caption_html

    @property
    def notes_fn(self) -> Callable[[Any], str] | None:
        """The ``notes`` function given: result -> HTML (None without one)."""
        return self._notes_fn
