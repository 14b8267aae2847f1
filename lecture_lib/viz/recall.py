"""Page-side recall: a slider moved back to a value the panel has drawn redraws in the browser at once.

A :class:`~lecture_lib.viz.panels.LivePanel` caches its results, but a cached result still went page ->
kernel -> a figure update per figure -> plotly's front end, which replots and then diffs and sends its
"trace deltas" back: 45 to 75 ms in the page. The :class:`Recall` (an invisible anywidget in the panel)
keeps in the page what the figures showed for each result the kernel drew (bounded: the kernel says which
to drop), keyed by the control values as the page's widget models hold them. When the controls come back
to such a key, the page draws the entry itself on each graph div and sets the notes, then tells the kernel.
It draws what changed only (``scrub.js``'s ``redrawChanged``): the traces whose data changed are recalculated
alone, then replotted alone where their axes are fixed, or redrawn with their axes by one ``Plotly.relayout``
that autoranges those axes; a full ``Plotly.update`` only where more than data and layout values changed (a
trace's name or visibility, other trace types). Either way marked ``_doNotReportToPy``, so that plotly's front
end sends nothing back. The recall's element then fires ``lecture-recalled`` (bubbling), which
``benchmarks/dashboard_latency.py`` times.

Coherency with the kernel, the pattern of :class:`~lecture_lib.viz.scrub.ScrubPanel`: the kernel then
answers the control change as usual (a cache hit), but draws silently (:meth:`LiveFigures.draw`'s
``silent``: its ``FigureWidget``\\ s and the state a page connecting later starts from follow, no message)
when the page recalled exactly this result and had received every figure update the kernel sent before
(``drawn`` counts them; a draw still on its way to the page would land over the recalled one). In every
other case (no Recall in the page yet, an entry dropped, a streamed partial, an error, a link) the kernel
draws as before. Only data and the layout paths a redraw changes are recalled, so a presenter restyle or
a user's zoom stay as they are. The message to the kernel goes out inside the control model's change event,
before the control's view sends the new value: the kernel knows of the recall when the cache hit comes.

A :class:`~lecture_lib.viz.scrub.ScrubPanel`'s result is a family: its entry also holds the scrubber's frames
(every position); the page draws the scrubber's current position of it and hands the frames to the scrubber's
model as if the kernel had set them (``set_state``: nothing goes back), and the kernel takes them silently.

An entry, as sent (a custom message, arrays as binary buffers): ``{"id", "key", "notes", "figures": [{"traces":
[{"x": ..., "y": ..., "name": ..., "visible": ...}, ...], "layout": {path: value}}, ...]}`` (plus ``"frames"``
for a family, :func:`~lecture_lib.viz.scrub.family_frames`'s), every trace of each figure in order; a numeric
array is ``{"buffer": j}``. With it come ``base`` (per figure, the first
result's value of every layout path a redraw has changed: what an entry not listing a path shows) and ``drop``
(ids the page forgets).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import traitlets
from plotly.utils import PlotlyJSONEncoder

from .controls import freeze
from .figures import DATA_KEYS
from .live_figures import LiveFigures, _flat

# The widget's module: scrub.js (its `redrawChanged` draws what changed; lecture_lib.viz.scrub.SCRUB_JS), then the
# recall itself.
RECALL_ESM = Path(__file__).with_name("scrub.js").read_text() + """
const PREFIX = "IPY_MODEL_";
const decode = (v, buffers) => {
  if (!v || v.buffer === undefined || Array.isArray(v)) return v;
  const b = buffers[v.buffer];
  return b instanceof ArrayBuffer ? new Float64Array(b) : new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
};

/** Draw one figure's entry on a graph div, nothing reported back to the kernel: what changed only (scrub.js
 * `redrawChanged`), else one Plotly.update. `position`: for a scrubbed family, what the figure shows at the
 * scrubber's position ({traces, x, y}, lecture_lib.viz.scrub). */
function drawOn(Plotly, gd, figure, base, position) {
  const traces = figure.traces.slice(), layout = { ...base, ...figure.layout };
  if (position) position.traces.forEach((i, j) => { traces[i] = { ...traces[i], x: position.x[j], y: position.y[j] }; });
  if (redrawChanged(Plotly, gd, traces, layout)) return;
  const n = traces.length, data = { _doNotReportToPy: true };
  traces.forEach((t, i) => {
    for (const [name, v] of Object.entries(t)) (data[name] || (data[name] = new Array(n)))[i] = v;
  });
  Plotly.update(gd, data, layout, traces.map((_, i) => i));
}

export default {
  async render({ model, el }) {
    const manager = model.widget_manager;
    const get = (ref) => manager.get_model(ref.slice(PREFIX.length));
    const entries = new Map();         // JSON of the key (as the page's models hold it) -> entry
    let base = [], recalls = 0;
    const controls = await Promise.all(model.get("controls").map(get));
    const attrs = model.get("attrs");
    // numbers to 12 significant digits, as the kernel's key (controls.freeze): a log slider's value computed in
    // the page on the way back (10 ** exponent) may differ in its last bit from the same value on the way there
    const round = (v) => (typeof v === "number" ? Number(v.toPrecision(12)) : Array.isArray(v) ? v.map(round) : v);
    const keyNow = () => JSON.stringify(controls.map((m, j) => round(m.get(attrs[j]))));
    const divs = async (ref) => (await Promise.all(Object.values((await get(ref)).views || {}))).map((v) => v.el);

    let gds = [];                      // per figure, its graph divs (usually one), looked up ahead of a move
    const lookUp = async () => { gds = await Promise.all(model.get("figures").map(divs)); };
    const drawable = () => gds.every((d) => d.length && d.every((gd) => gd.isConnected && gd._fullLayout));
    const notes = model.get("notes") && await get(model.get("notes"));
    const scrubber = model.get("scrubber") && await get(model.get("scrubber"));

    // synchronous, inside the control model's change: the kernel hears of the recall before the control's
    // new value (the control's view sends it right after this change event)
    const recall = () => {
      const entry = entries.get(keyNow()), Plotly = window.Plotly;
      if (!entry || !Plotly) return;
      if (gds.length !== entry.figures.length || !drawable()) { lookUp(); return; }   // the kernel draws this one
      model.send({ recalled: entry.id, drawn: model.get("drawn") });   // it brings its copy up to date, silently
      // a scrubbed family: the scrubber's position of it; then the scrubber takes the family's frames, as if
      // the kernel had set them (set_state: nothing goes back), and scrubs within it
      const position = entry.frames && entry.frames[scrubber.get("index")];
      gds.forEach((divs, k) => divs.forEach((gd) => drawOn(Plotly, gd, entry.figures[k], base[k], position && position[k])));
      if (entry.frames) scrubber.set_state({ frames: entry.frames });
      if (notes) notes.set_state({ value: entry.notes });
      el.dataset.recalls = ++recalls;
      el.dispatchEvent(new CustomEvent("lecture-recalled", { bubbles: true }));   // drawn (benchmarks time it)
    };
    controls.forEach((m, j) => m.on("change:" + attrs[j], recall));

    model.on("msg:custom", (msg, buffers) => {
      for (const id of msg.drop || []) for (const [key, e] of entries) if (e.id === id) entries.delete(key);
      if (msg.base) base = msg.base;
      const entry = msg.add;
      if (!entry) return;
      for (const f of entry.figures) for (const t of f.traces) for (const name of Object.keys(t)) t[name] = decode(t[name], buffers);
      for (const position of entry.frames || []) for (const f of position) {
        f.x = f.x.map((v) => decode(v, buffers)); f.y = f.y.map((v) => decode(v, buffers));
      }
      entries.set(JSON.stringify(entry.key), entry);
      el.dataset.entries = entries.size;
      if (!drawable() || gds.length !== entry.figures.length) lookUp();
    });
    el.className = "lecture-recall";
    model.send({ ready: true });       // entries sent before this page listened are lost: the kernel sends again
  },
};
"""


def _selection(w: widgets.Widget) -> bool:
    # a selection widget's model holds the index of its value, not the value (Dropdown, ToggleButtons)
    return isinstance(w, widgets.widgets.widget_selection._Selection)


def _json(value) -> Any:
    return json.loads(json.dumps(value, cls=PlotlyJSONEncoder))


def _value(value, buffers: list) -> Any:
    """A 1-D numeric array as a float64 binary buffer (``{"buffer": j}``), anything else as JSON."""
    if not isinstance(value, (str, bytes, dict)) and value is not None:
        a = np.asarray(value)
        if a.ndim == 1 and a.dtype.kind in "fiu":
            buffers.append(memoryview(np.ascontiguousarray(a, dtype=np.float64)))
            return {"buffer": len(buffers) - 1}
    return _json(value)


def _trace(props: dict, buffers: list) -> dict:
    trace = {"name": props.get("name"), "visible": props.get("visible")}
    for path in DATA_KEYS:
        value = props
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            trace[path] = _value(value, buffers)
    return trace


class Recall(anywidget.AnyWidget):
    """The page's store of drawn results and the kernel's side of it (see the module docstring).

    Args:
        controls: the panel's control widgets, in a fixed order.
        notes: the panel's notes ``HTML`` widget.
        size: how many entries the page holds (least recently drawn dropped).
    """

    _esm = RECALL_ESM
    figures = traitlets.List(traitlets.Instance(widgets.Widget)).tag(sync=True, **widgets.widget_serialization)
    controls = traitlets.List(traitlets.Instance(widgets.Widget)).tag(sync=True, **widgets.widget_serialization)
    attrs = traitlets.List(traitlets.Unicode()).tag(sync=True)      # per control, the attribute its model holds
    notes = traitlets.Instance(widgets.Widget, allow_none=True).tag(sync=True, **widgets.widget_serialization)
    scrubber = traitlets.Instance(widgets.Widget, allow_none=True).tag(sync=True, **widgets.widget_serialization)
    drawn = traitlets.Int(0).tag(sync=True)      # figure updates the kernel has sent

    def __init__(self, controls: Sequence[widgets.Widget], notes: widgets.Widget, size: int):
        controls = list(controls)
        super().__init__(controls=controls, attrs=["index" if _selection(w) else "value" for w in controls],
                         notes=notes, layout=widgets.Layout(display="none"))
        self.size = size
        self.held: OrderedDict[str, Any] = OrderedDict()    # id -> the result the page holds for it
        self._recalled: tuple | None = None                  # (id, drawn) of the page's last recall
        self.on_ready = lambda: None                         # the panel sends its current result
        self.on_msg(self._on_msg)

    def key(self) -> str:
        """The current controls' key (the id of an entry): their values as the page's models hold them, numbers
        to 12 significant digits (:func:`~lecture_lib.viz.controls.freeze`, as the page rounds them)."""
        return json.dumps([_json(freeze(getattr(w, t))) for w, t in zip(self.controls, self.attrs)])

    def page_shows(self, result) -> bool:
        """Whether the page drew ``result`` itself for the current controls (then the kernel draws silently).
        Asked once per draw: a recall answers the one control change that comes with it."""
        recalled, self._recalled = self._recalled, None
        return recalled == (self.key(), self.drawn) and self.held.get(recalled[0]) is result

    def sent_draw(self) -> None:
        """The kernel sent a figure update: a recall the page made before receiving it is void."""
        self._recalled = None
        self.drawn += 1

    def remember(self, result, live: LiveFigures, notes: str, frames: list | None = None) -> None:
        """``result`` is on screen for the current controls: the page keeps what the figures show (and, for
        a :class:`~lecture_lib.viz.scrub.ScrubPanel`'s family, the scrubber's ``frames``)."""
        key = self.key()
        if self.held.get(key) is result:
            self.held.move_to_end(key)
            return
        self.figures = list(live.widgets)
        buffers: list = []
        figures = []
        with live.lock:
            for fw, varying in zip(live.widgets, live.varying):
                layout = _flat(fw._layout) if varying else {}
                figures.append({"traces": [_trace(t, buffers) for t in fw._data],
                                "layout": {path: _json(layout.get(path)) for path in varying}})
            base = [_json(varying) for varying in live.varying]
        self.held[key] = result
        self.held.move_to_end(key)
        drop = []
        while len(self.held) > self.size:
            drop.append(self.held.popitem(last=False)[0])
        entry = {"id": key, "key": json.loads(key), "notes": notes, "figures": figures}
        if frames is not None:
            entry["frames"] = [[{"traces": f["traces"], "x": [_value(x, buffers) for x in f["x"]],
                                 "y": [_value(y, buffers) for y in f["y"]]} for f in position] for position in frames]
        self.send({"add": entry, "base": base, "drop": drop}, buffers)

    def _on_msg(self, _, content, buffers) -> None:
        if content.get("ready"):
            self.held.clear()
            self.on_ready()
        elif "recalled" in content:
            self._recalled = (content["recalled"], content.get("drawn"))
