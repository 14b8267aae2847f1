"""Scrubbing at frame rate: one slider whose positions were all computed together, switched in the browser.

A :class:`ScrubPanel` is a :class:`~lecture_lib.viz.panels.LivePanel` whose ``compute`` returns a
*family*: one result per position of the scrubbed parameter, trained as one batched run (the
engine's run dimension). All positions' trace data reach the page once (binary buffers), and the
:class:`Scrubber` (a keyboard-accessible ``<input type=range>``, a small anywidget) swaps them into
the panel's figures in the browser: no round trip to the kernel. The other controls recompute the
whole family, as any panel's controls do.

The frames (:func:`family_frames`): ``frames[p][k]`` is what figure ``k`` shows at position ``p``,
``{"traces": [i, ...], "x": [a, ...], "y": [a, ...]}``: trace ``i`` (its index in the figure) gets
the ``j``-th ``x``/``y`` array, ``j`` the place of ``i`` in ``traces``; arrays are float64 bytes
(``memoryview``), sent as binary websocket buffers. Traces not listed keep their data.

One mechanism, with or without a kernel: the page-side swap is ``scrub.js`` (next to this file),
a plain JavaScript module that needs only Plotly, the figures' graph divs and the frames:
``swap(Plotly, plotDivs, frames[p])`` gives each figure the position's ``x``/``y`` and redraws those traces
only (``redrawTraces``: plotly's calc and plot of the changed traces, without ``Plotly.animate``'s defaults
of the whole figure; ``Plotly.animate`` where a trace needs more: axes and legend stay drawn), ``fixRanges`` first
fixes the axes to the whole family's range (they stay put while the data move), and
``wire(input, {...})`` wires an ``<input type=range>`` to both. The Scrubber's module is that file
with the widget glue appended (it finds the graph divs through the figure models' views and tells
the kernel the index); a static page (no kernel) includes the same file and calls ``wire``.

Why Plotly on the graph divs, not the ``FigureWidget`` models: through a model, plotly's front end
restyles (a full replot: axes, legend, margins) and then diffs every trace's full data and sends
those "trace deltas" to the kernel; ``Plotly.animate`` without a transition redraws the traces only
(about a quarter of the time, measured: docs/performance.md). Coherency with the kernel: the kernel learns
the index (:meth:`ScrubPanel._on_scrub`) and writes the position's data into its ``FigureWidget``\\ s
without sending anything (the page shows it already), and into the state a page connecting later
starts from; so a later update from the kernel (another control) is computed against what the
page shows. An index set in the kernel (a link, ``panel.scrub_to(i)``) reaches an open page as a
custom message, which swaps it in (not as a change of ``index``: the kernel's echo of an index the
page set a moment earlier would move the page back while someone scrubs).

Why not plotly's own ``frames`` + ``layout.sliders``: ``FigureWidget`` does not take frames, a
plotly slider moves one figure (a panel has several) and cannot be moved with the keyboard.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import traitlets

from . import figures as _figures
from . import url_state
from .live_figures import refresh_initial_state
from .panels import LivePanel
from .runner import _takes_progress

SCRUB_JS = Path(__file__).with_name("scrub.js")

# The widget's module: scrub.js (the one scrub mechanism, shared with static pages), then the glue that
# finds the figures' graph divs through their widget models' views and tells the kernel the index.
SCRUB_ESM = SCRUB_JS.read_text() + """
const PREFIX = "IPY_MODEL_";
export default {
  render({ model, el }) {
    const box = document.createElement("div");
    box.className = "lecture-scrub";
    const label = document.createElement("label");
    const input = document.createElement("input");
    const value = document.createElement("span");
    input.setAttribute("aria-label", model.get("description"));
    label.textContent = model.get("description") + " ";
    value.className = "lecture-scrub-value";
    label.append(input, value);
    box.append(label);
    el.append(box);
    let figures = [], divs = [];           // per figure: its model, the graph divs of its views (usually one)
    const findDivs = async () => {
      divs = await Promise.all(figures.map(async (m) => (await Promise.all(Object.values(m.views || {}))).map((v) => v.el)));
    };
    const drawn = () => divs.length === figures.length && divs.every((d) => d.length && d.every((gd) => gd.isConnected));
    // a figure's view may render after this one: look its div up again before the next move if needed
    for (const event of ["focus", "pointerdown"]) input.addEventListener(event, () => { if (!drawn()) findDivs(); });
    // A position set before the figures were plotted (a link that reached a pre-heated kernel after this page
    // connected, a move before a figure below the fold was drawn: voila_app.figure_widget draws lazily) cannot
    // be swapped in yet, and the figure's view then plots its model's data: once every graph div is plotted,
    // show the slider's position (a no-op where it shows it already).
    const plotted = () => drawn() && divs.every((d) => d.every((gd) => gd._fullLayout && gd.data));
    const showWhenPlotted = async (i) => {
      for (let k = 0; k < 300 && !plotted(); k++) { await new Promise((r) => setTimeout(r, 100)); await findDivs(); }
      if (plotted() && scrubber.index === i) scrubber.show(i);
    };
    const scrubber = wire(input, {
      Plotly: () => window.Plotly, plotDivs: () => divs, labels: model.get("labels") || [], output: value,
      onInput: (i) => {
        box.dataset.index = i;
        model.set("index", i);
        model.save_changes();             // the kernel learns the index; the plot does not wait for it
        if (!plotted()) showWhenPlotted(i);
      },
    });
    const load = async () => {
      // the new family first, synchronously: a move from now on (even while the figures are looked up below)
      // shows the new family's data, never the old one's
      scrubber.setFrames(model.get("frames"), scrubber.index < 0 ? model.get("index") : scrubber.index);
      const manager = model.widget_manager;
      figures = await Promise.all(model.get("figures").map((ref) => manager.get_model(ref.slice(PREFIX.length))));
      await findDivs();
      scrubber.fix();
      const shown = scrubber.index;
      if (shown !== model.get("index")) {   // scrubbed while the kernel computed: show the page's position
        scrubber.show(shown);
        model.set("index", shown);
        model.save_changes();
      }
      box.dataset.index = shown;
      box.dataset.ready = "1";
      // figures not plotted yet (the page is opening): show the position once they are. A new family for plotted
      // figures needs nothing more: the kernel's figure update came before the frames and drew its position
      if (!plotted()) showWhenPlotted(shown);
    };
    model.on("change:frames", () => { load(); });
    // a position chosen in the kernel (a link, scrub_to) comes as a message, not as a change of "index":
    // the kernel's echo of an index this page set a moment ago must not move the page back
    model.on("msg:custom", (msg) => {
      if (msg && Number.isInteger(msg.show) && msg.show !== scrubber.index) {
        scrubber.show(msg.show); box.dataset.index = msg.show;
        if (!plotted()) showWhenPlotted(msg.show);
      }
    });
    load();
  },
};
"""

SCRUB_CSS = """<style>
.lecture-scrub label { font-size: 1.0em; display: flex; align-items: center; gap: 10px; }
.lecture-scrub input[type=range] { width: 240px; }
.lecture-scrub-value { min-width: 4em; font-variant-numeric: tabular-nums; }
</style>"""


class Scrubber(anywidget.AnyWidget):
    """A slider that swaps precomputed trace data into ``figures`` in the browser (see the module docstring).

    ``frames``: :func:`family_frames`'s list, ``frames[p][k]`` figure ``k`` at position ``p``.
    """

    _esm = SCRUB_ESM
    figures = traitlets.List(traitlets.Instance(widgets.Widget)).tag(sync=True, **widgets.widget_serialization)
    frames = traitlets.List().tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    description = traitlets.Unicode("").tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)


@dataclass(frozen=True)
class Scrub:
    """The scrubbed parameter: ``compute``'s keyword ``name`` receives all ``values`` at once.

    ``label`` is the slider's description (``"λ (weight decay)"``), ``index`` its starting position;
    ``together`` says how the positions were computed, for the caption (training runs by default; an
    eigendecomposition panel says ``"computed together, as one vectorised computation"``).
    """

    name: str
    values: tuple
    label: str
    index: int = 0
    fmt: Callable[[Any], str] = staticmethod(lambda v: f"{v:.3g}")
    together: str = "trained together, as one batched run"

    def __post_init__(self):
        if len(self.values) < 2:
            raise ValueError(f"scrub {self.name!r} needs at least two values, got {len(self.values)}")
        if not 0 <= self.index < len(self.values):
            raise ValueError(f"scrub {self.name!r}: index {self.index} outside 0..{len(self.values) - 1}")


def _bytes(a) -> memoryview:
    return memoryview(np.ascontiguousarray(np.asarray(a, dtype=np.float64)))


def family_frames(widgets_: Sequence[go.FigureWidget], family_figures: Sequence[Sequence[go.Figure]]) -> list:
    """The :class:`Scrubber`'s frames: per position, per figure, the ``x``/``y`` of each trace of the figure
    widget that the position's figure has (matched by name, :func:`figures.match_traces`).

    A trace whose ``x`` and ``y`` are the same at every position (a sweep drawn behind the scrubbed point, a
    reference line) is left out: the figure shows it already, and each trace handed to the browser costs a
    scrub step its share of the redraw.
    """
    family = []                                 # per position, per figure: [(trace index, x, y), ...]
    for figs in family_figures:
        position = []
        for fw, fig in zip(widgets_, figs):
            index = {id(t): i for i, t in enumerate(fw.data)}
            pairs, _, _ = _figures.match_traces(fw.data, fig.data)
            position.append([(index[id(t)], np.asarray(s.x, dtype=np.float64), np.asarray(s.y, dtype=np.float64))
                             for t, s in pairs if s.x is not None and s.y is not None])
        family.append(position)
    constant = [{i for i, _, _ in entries if _same_everywhere(family, k, i)}
                for k, entries in enumerate(family[0])] if family else []
    return [[{"traces": [i for i, _, _ in entries if i not in constant[k]],
              "x": [_bytes(x) for i, x, _ in entries if i not in constant[k]],
              "y": [_bytes(y) for i, _, y in entries if i not in constant[k]]} for k, entries in enumerate(position)]
            for position in family]


def _same_everywhere(family: list, k: int, i: int) -> bool:
    """Whether trace ``i`` of figure ``k`` has the same ``x`` and ``y`` at every position of ``family``."""
    drawn = [next(((x, y) for j, x, y in position[k] if j == i), None) for position in family]
    first = drawn[0]
    return all(d is not None and np.array_equal(d[0], first[0], equal_nan=True)
               and np.array_equal(d[1], first[1], equal_nan=True) for d in drawn)


class ScrubPanel(LivePanel):
    """A :class:`LivePanel` whose ``scrub`` parameter is switched in the browser across a batched family.

    Args:
        compute: ``compute(**control_values, **{scrub.name: scrub.values}) -> sequence of results``,
            one per scrub value, in order, computed together (one batched run).
        scrub: the :class:`Scrub` (not among ``controls``).
        build, notes: as for :class:`LivePanel`, of ONE position's result.
        Other arguments: as for :class:`LivePanel`. The caption says that all positions were trained together.

    The position is part of the page's URL (``p<N>.<scrub.name>=<value>``, :mod:`url_state`).

    A family drawn before comes back in the page when the other controls do (:mod:`~lecture_lib.viz.recall`):
    the page's Recall hands its frames to the scrubber.
    """

    def __init__(self, compute: Callable[..., Sequence[Any]], controls, build, scrub: Scrub,
                 notes: Callable[[Any], str] | None = None, title: str | None = None, caption: str | None = None,
                 **kwargs):
        values = tuple(scrub.values)
        self.scrub = scrub
        self.scrubber = Scrubber(labels=[scrub.fmt(v) for v in values], description=scrub.label, index=scrub.index)
        self.scrubber.add_class("lecture-control")
        self.scrubber.add_class("lecture-scrub-control")
        self.family: Sequence[Any] | None = None
        self._frames: list = []
        self._position_notes = notes

        streams = _takes_progress(compute)

        def family(progress=None, **control_values):     # progress: partial families stream (LivePanel)
            extra = {"progress": progress} if streams and progress is not None else {}
            return compute(**control_values, **{scrub.name: values}, **extra)

        again = "train" if scrub.together.startswith("trained") else "compute"
        note = (f"All {len(values)} positions of the {scrub.label} slider were {scrub.together}: moving it "
                f"switches between them in your browser, without computing again; the other controls {again} "
                "the whole family again.")
        super().__init__(compute=family, controls=controls, build=build,
                         notes=(lambda fam: self._notes_at(fam)) if notes else None, title=title,
                         caption=f"{caption} <i>{note}</i>" if caption else f"<i>{note}</i>", **kwargs)
        self._controls_box.children = (widgets.HTML(SCRUB_CSS), self.scrubber) + tuple(self._controls_box.children)
        self.scrubber.observe(self._on_scrub, names="index")
        if self.recall is not None:
            self.recall.scrubber = self.scrubber

    @property
    def index(self) -> int:
        return self.scrubber.index

    @property
    def shown(self) -> Any:
        """The result on screen: the family's member at the scrubber's position."""
        return None if self.family is None else self.family[self.index]

    def scrub_to(self, index: int) -> None:
        """Move the scrubber to position ``index`` (the page follows, without computing)."""
        if not 0 <= index < len(self.scrub.values):
            raise ValueError(f"index must be in 0..{len(self.scrub.values) - 1}, got {index}")
        if self.family is not None and self.live is not None and index != self.index:
            # drawn through the figure widgets too: a page whose scrubber has no frames or graph divs yet
            # (a pre-heated kernel receives the link after the page drew the default position) shows it
            self.live.draw(self.family[index])
            self._sent_draw()
        self.scrubber.index = index
        self.scrubber.send({"show": index})      # a page already open swaps it in; a later one starts there

    def link(self) -> dict[str, str]:
        """As :meth:`LivePanel.link`, plus the scrubbed value when it is not the notebook's starting one."""
        link = super().link()
        if self.index != self.scrub.index:
            link[self.scrub.name] = url_state.encode_position(self.scrub.values, self.index)
        return link

    def _set_from_link(self, texts) -> bool:
        texts = dict(texts)
        text = texts.pop(self.scrub.name, None)
        changed = super()._set_from_link(texts)
        if text is not None:
            try:
                self.scrub_to(url_state.decode_position(self.scrub.values, text))
            except ValueError as exc:
                self.show_link_note([f"p{self.number}.{self.scrub.name}={text}: {exc}"])
        return changed

    @property
    def notes_fn(self) -> Callable[[Any], str] | None:
        """The ``notes`` function given: ONE position's result -> HTML (None without one)."""
        return self._position_notes

    def _notes_at(self, family) -> str:
        return self._position_notes(family[self.index])

    def _draw_first(self, family) -> None:
        super()._draw_first(family[self.index])
        self._take_family(family)

    def _redraw(self, family, silent: bool = False) -> None:
        # the figures show the new family's current position first, then the scrubber gets every position's data
        # (same websocket, in order) and fixes the axes to the family over the runs the figures now draw, as the
        # page's recall does. Frames first fixed them over the previous figure's runs: switched from the toy model
        # to the BN network, 04's growth panel kept the toy run's axes and its larger α ran off the plot. A move
        # in between (milliseconds) is shown again from the new family when it arrives (SCRUB_ESM's load).
        super()._redraw(family[self.index], silent)
        self._take_family(family, silent)

    def _take_family(self, family, silent: bool = False) -> None:
        frames = family_frames(self.live.widgets, [self.live.prepare(r) for r in family])
        self.scrubber.figures = list(self.live.widgets)
        if silent:      # the page's Recall gave its scrubber these frames (lecture_lib.viz.recall)
            self.scrubber._trait_values["frames"] = frames
        else:
            self.scrubber.frames = frames
        self.family, self._frames = family, frames

    def _recall_frames(self) -> list:
        return self._frames

    def _draw_partial(self, family) -> None:
        # a family still training streams its current position only; the scrubber gets the final family
        self.live.draw(family[self.index], transient=True)

    def _on_scrub(self, change) -> None:
        # the page shows the new position already (or will: an index set here is swapped in by the page);
        # the kernel's copy of the figures follows, silently, then the notes and the URL
        if self.family is None:
            return
        position = self._frames[change["new"]] if change["new"] < len(self._frames) else []
        with self.live.lock:
            for fw, f in zip(self.live.widgets, position):
                for i, x, y in zip(f["traces"], f["x"], f["y"]):
                    fw._data[i]["x"], fw._data[i]["y"] = np.asarray(x), np.asarray(y)
                refresh_initial_state(fw, layout=False)
        if self._position_notes is not None:
            self.show_notes(self._position_notes(self.family[change["new"]]))
        self._publish_state()
