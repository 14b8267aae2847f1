"""Scrubbing at frame rate: one slider whose positions were all computed together, switched in the browser.

A :class:`ScrubPanel` is a :class:`~lecture_lib.viz.panels.LivePanel` whose ``compute`` returns a
*family*: one result per position of the scrubbed parameter, trained as one batched run (the
engine's run dimension). All positions' trace data reach the page once (binary buffers), and the
:class:`Scrubber` (a keyboard-accessible ``<input type=range>``, a small anywidget) swaps them into
the panel's ``FigureWidget``\\ s in the browser: no round trip to the kernel. The other controls
recompute the whole family, as any panel's controls do.

How the swap works: each figure is a plotly ``FigureWidget``, whose front end redraws whenever its
model's ``_py2js_restyle`` changes. The scrubber sets that on the figure models in the page (found
with anywidget's ``widget_manager``) with the next position's ``x``/``y`` per trace, exactly the
message the kernel would have sent, and tells the kernel its new index afterwards (notes follow
then). Why not plotly's own ``frames`` + ``layout.sliders``: ``FigureWidget`` does not take frames,
a plotly slider moves one figure (a panel has several) and cannot be moved with the keyboard. For a
static page, :func:`family_figure` turns the same family into one ``go.Figure`` with frames and a
plotly slider.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import traitlets

from . import figures as _figures
from .panels import LivePanel

SCRUB_ESM = """
const PREFIX = "IPY_MODEL_";
// a float64 array as the kernel sends one to a FigureWidget (plotly's own serialization of numpy arrays)
const floats = (v) => ({ buffer: v, dtype: "float64", shape: [v.byteLength / 8] });
export default {
  render({ model, el }) {
    const box = document.createElement("div");
    box.className = "lecture-scrub";
    const label = document.createElement("label");
    const input = document.createElement("input");
    const value = document.createElement("span");
    input.type = "range"; input.min = 0; input.step = 1;
    input.setAttribute("aria-label", model.get("description"));
    label.textContent = model.get("description") + " ";
    value.className = "lecture-scrub-value";
    label.append(input, value);
    box.append(label);
    el.append(box);
    let frames = [], figures = [];
    const load = async () => {
      const manager = model.widget_manager;
      figures = await Promise.all(model.get("figures").map((ref) => manager.get_model(ref.slice(PREFIX.length))));
      frames = model.get("frames").map((position) => position.map((f) => ({
        traces: f.traces, x: f.x.map(floats), y: f.y.map(floats) })));
      input.max = Math.max(frames.length - 1, 0);
      mark(model.get("index"));
    };
    const mark = (i) => {
      input.value = i;
      value.textContent = (model.get("labels") || [])[i] || "";
      box.dataset.index = i;
      box.dataset.ready = "1";
    };
    const show = (i) => {
      const frame = frames[i];
      if (!frame) return;
      frame.forEach((f, k) => figures[k].set("_py2js_restyle",
        { restyle_data: { x: f.x, y: f.y }, restyle_traces: f.traces, trace_edit_id: null, layout_edit_id: null }));
      mark(i);
    };
    input.addEventListener("input", () => {
      const i = +input.value;
      show(i);
      model.set("index", i);
      model.save_changes();                    // the kernel learns the index; the plot does not wait for it
    });
    model.on("change:frames", () => { load(); });
    model.on("change:index", () => mark(model.get("index")));
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

    ``frames[p][k]`` is ``{"traces": [i, ...], "x": [buffer, ...], "y": [buffer, ...]}``: the data of
    figure ``k``'s traces ``i`` at position ``p`` (float64 bytes, sent as binary websocket buffers).
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

    ``label`` is the slider's description (``"λ (weight decay)"``), ``index`` its starting position.
    """

    name: str
    values: tuple
    label: str
    index: int = 0
    fmt: Callable[[Any], str] = staticmethod(lambda v: f"{v:.3g}")

    def __post_init__(self):
        if len(self.values) < 2:
            raise ValueError(f"scrub {self.name!r} needs at least two values, got {len(self.values)}")
        if not 0 <= self.index < len(self.values):
            raise ValueError(f"scrub {self.name!r}: index {self.index} outside 0..{len(self.values) - 1}")


def _bytes(a) -> memoryview:
    return memoryview(np.ascontiguousarray(np.asarray(a, dtype=np.float64)))


def family_frames(widgets_: Sequence[go.FigureWidget], family_figures: Sequence[Sequence[go.Figure]]) -> list:
    """The :class:`Scrubber`'s frames: per position, per figure, the ``x``/``y`` of each trace of the figure
    widget that the position's figure has (matched by name, :func:`figures.match_traces`)."""
    frames = []
    for figs in family_figures:
        position = []
        for fw, fig in zip(widgets_, figs):
            index = {id(t): i for i, t in enumerate(fw.data)}
            pairs, _, _ = _figures.match_traces(fw.data, fig.data)
            pairs = [(index[id(t)], s) for t, s in pairs if s.x is not None and s.y is not None]
            position.append({"traces": [i for i, _ in pairs], "x": [_bytes(s.x) for _, s in pairs],
                             "y": [_bytes(s.y) for _, s in pairs]})
        frames.append(position)
    return frames


def family_figure(figs: Sequence[go.Figure], labels: Sequence[str], label: str, active: int = 0) -> go.Figure:
    """One ``go.Figure`` with a frame per position and plotly's own slider (for a static HTML page).

    ``figs[p]`` is the figure of position ``p`` (same traces, by order); the figure starts at ``active``.
    """
    base = go.Figure(figs[active])
    base.frames = [go.Frame(name=str(p), data=[{"x": t.x, "y": t.y} for t in f.data]) for p, f in enumerate(figs)]
    base.update_layout(sliders=[dict(active=active, currentvalue=dict(prefix=f"{label} = "), steps=[
        dict(label=lab, method="animate", args=[[str(p)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                               transition=dict(duration=0))])
        for p, lab in enumerate(labels)])])
    return base


class ScrubPanel(LivePanel):
    """A :class:`LivePanel` whose ``scrub`` parameter is switched in the browser across a batched family.

    Args:
        compute: ``compute(**control_values, **{scrub.name: scrub.values}) -> sequence of results``,
            one per scrub value, in order, computed together (one batched run).
        scrub: the :class:`Scrub` (not among ``controls``).
        build, notes: as for :class:`LivePanel`, of ONE position's result.
        Other arguments: as for :class:`LivePanel`. The caption says that all positions were trained together.
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
        self._position_notes = notes

        def family(**control_values):
            return compute(**control_values, **{scrub.name: values})

        note = (f"All {len(values)} positions of the {scrub.label} slider were trained together, as one batched "
                "run: moving it switches between them in your browser, without computing again; the other "
                "controls train the whole family again.")
        super().__init__(compute=family, controls=controls, build=build,
                         notes=(lambda fam: self._notes_at(fam)) if notes else None, title=title,
                         caption=f"{caption} <i>{note}</i>" if caption else f"<i>{note}</i>", **kwargs)
        self._controls_box.children = (widgets.HTML(SCRUB_CSS), self.scrubber) + tuple(self._controls_box.children)
        self.scrubber.observe(self._on_scrub, names="index")

    @property
    def index(self) -> int:
        return self.scrubber.index

    @property
    def shown(self) -> Any:
        """The result on screen: the family's member at the scrubber's position."""
        return None if self.family is None else self.family[self.index]

    def _notes_at(self, family) -> str:
        return self._position_notes(family[self.index])

    def _draw(self, family) -> None:
        # the scrubber gets every position's data BEFORE the figures show the current one (same websocket,
        # in order): once the page shows the new family, scrubbing switches within it
        first = self.live is None
        if first:
            super()._draw(family[self.index])
        self.scrubber.figures = list(self.live.widgets)
        self.scrubber.frames = family_frames(self.live.widgets, [self.live.prepare(r) for r in family])
        self.family = family
        if not first:
            super()._draw(family[self.index])

    def _on_scrub(self, change) -> None:
        # the page already shows the new position; only the notes follow (and a page connecting later)
        if self.family is not None and self._position_notes is not None:
            self.show_notes(self._position_notes(self.family[change["new"]]))
