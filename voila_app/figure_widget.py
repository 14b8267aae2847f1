"""The FigureWidget that the app's kernels build: plotly's front end loaded once per page.

plotly >= 6 ships its FigureWidget front end (~5 MB of JavaScript) inside every widget's
state, and anywidget evaluates it once per figure. In the app's kernels a figure instead
carries the small module :data:`SHARED_BUNDLE_ESM`, which imports the bundle from Voila's
static files (served by :class:`voila_app.bundle.BundleHandler`): fetched and evaluated once
per page (the browser caches it), so a dashboard with many figures opens fast. It also keeps
the data arrays out of the "trace deltas" plotly's front end reports to the kernel after each
redraw, and sends those reports after the redraw is painted (see ``patchFigureView``), and, in a page
with lecture panels, draws a kernel-driven update that changes only trace data and layout values with
``scrub.js``'s ``redrawChanged`` instead of plotly's whole-figure ``Plotly.update`` (``drawChanged``).

Figures are drawn lazily (issue 17, "open fast"): one near the viewport at once, the others after the
first figure of the page is drawn (at once where none is near the viewport), one per idle moment
(without scrolling), so the first plot does not wait for every figure of the page. Until then a
figure's element keeps its size, and its model follows the kernel (plotly's view draws the model's
data as they are when it is drawn). Code that needs a graph div waits for ``gd._fullLayout`` (the
Scrubber, :mod:`lecture_lib.viz.scrub`); the browser tests wait for drawn traces.

anywidget gives a model's initialize() 2 seconds; past that the figure is drawn but never
follows its model again. The bundle can take longer to arrive and evaluate (a slow line, ten
visitors' kernels starting on the same laptop), so initialize() only starts plotly's own
initialisation and render() waits for it, without a deadline.

How kernels get it: ``python -m voila_app`` sets ``LECTURE_FIGURE_WIDGET`` to
:data:`FIGURE_WIDGET` (and puts the checkout on ``PYTHONPATH``) for the kernels Voila starts
(:func:`voila_app.config.kernel_environment`); :func:`lecture_lib.viz.live_figures.figure_widget`
builds the class it names. JupyterLab and Notebook 7 started by ``./lecture lab`` /
``./lecture notebook`` load the server extension :mod:`voila_app.jupyter_extension`, which serves
the bundle and sets the same for their kernels. Elsewhere (nbclient, a Jupyter server without
the extension) figures are plain ``go.FigureWidget``\\ s. This module imports only plotly, traitlets (and the trace
types of :mod:`voila_app.plotly_partial`, a constant): it
is loaded inside kernels.
"""
from __future__ import annotations

import json

import plotly.graph_objects as go
from plotly.serializers import custom_serializers
from traitlets import Dict

from .plotly_partial import PARTIAL_TRACE_TYPES

FIGURE_WIDGET = "voila_app.figure_widget:SharedBundleFigureWidget"

# Where the bundle is: Voila's page names its base URL on <body> (our template: "<base>voila/"); a
# JupyterLab or Notebook 7 page has its base URL in #jupyter-config-data, and the server extension
# voila_app.jupyter_extension serves the bundle at "<base>lecture-static/widgetbundle.js".
# Two bundles are served (voila_app.bundle): "widgetbundle.js", plotly's front end with plotly.js's cartesian
# partial bundle (a third of the full one's evaluation time: the largest item of a page's opening), and
# "widgetbundle-full.js", plotly's own, imported only for a figure that has a trace type the partial bundle
# lacks (a 3-D plot a TA adds, say). The cartesian trace types are filled in from voila_app.bundle.
SHARED_BUNDLE_ESM = """function bundleUrl(name) {
  const here = window.location.href;
  const voila = document.body && document.body.dataset.baseUrl;
  if (voila) return new URL(`static/${name}`, new URL(voila, here)).href;
  const config = document.getElementById("jupyter-config-data");
  const base = (config && JSON.parse(config.textContent).baseUrl) || "/";
  return new URL(`lecture-static/${name}`, new URL(base, here)).href;
}
const CARTESIAN = new Set(__CARTESIAN_TRACE_TYPES__);
const needsFullBundle = (model) => (model.get("_widget_data") || []).some((t) => !CARTESIAN.has(t.type || "scatter"));
// After a redraw that the kernel asked for, plotly's front end reports to the kernel each trace's "delta"
// and the layout's (what plotly computed, e.g. default colours), diffing its full data and layout against
// the state the page first received: the data arrays the kernel just sent go back with it. Two changes,
// both outside what plotly draws: the data arrays stay out of the trace deltas (the kernel keeps them as
// "defaults" and uses nothing else of them: a few hundred bytes instead of every point), and both reports
// wait for a moment the page is idle (they were ~30% of a redraw's script time, measured; run after each paint, they
// delayed the next message's redraw: a streamed partial reaches three figures one after the other), and only a
// view's newest report of each kind is sent (plotly's kernel side applies the report of its newest edit alone).
// Plotly 7's front end names the layout report "_js2py_widget_layoutDelta", a key its kernel side does not declare
// (it has "_js2py_layoutDelta"): such a report would change nothing there, so once a view finds its layout report
// named so, the page neither computes nor sends it again (a diff of the whole layout, ~10 kB, per figure and redraw).
// Every array goes, short ones too, as do plotly's encoded arrays ({dtype, bdata}) and the {"0": .., "1": ..}
// objects its diff makes of an array: the kernel holds such a property as a numpy array, and plotly's delta
// handler, given a dict there, tests the array with `if not value` (a ValueError in the kernel; notebook 06's
// marker x and customdata came back so). Arrays of objects (e.g. transforms) stay.
const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
const isArrayData = (v) => ArrayBuffer.isView(v) || (Array.isArray(v) && !(v.length && isPlainObject(v[0])))
  || (isPlainObject(v) && (("bdata" in v && "dtype" in v)      // plotly's typed-array spec {dtype, bdata, shape}
      || (Object.keys(v).length > 0 && Object.keys(v).every((k) => /^[0-9]+$/.test(k)))));   // an array diffed index by index
const withoutArrays = (delta) => {
  if (!delta || typeof delta !== "object" || Array.isArray(delta)) return delta;
  const out = {};
  for (const [key, value] of Object.entries(delta)) if (!isArrayData(value)) out[key] = withoutArrays(value);
  return out;
};
const whenIdle = (fn) => (window.requestIdleCallback ? requestIdleCallback(fn, { timeout: 1000 }) : setTimeout(fn, 50));
// A page being closed drops the reports still waiting: its kernel is being shut down (Voila's unload handler), and
// a report sent then fails with "Cannot send" in the console.
if (!window.__lectureLeaving) {
  window.__lectureLeaving = { now: false };
  for (const type of ["beforeunload", "pagehide"]) addEventListener(type, () => { window.__lectureLeaving.now = true; });
  addEventListener("pageshow", () => { window.__lectureLeaving.now = false; });
}
// window.lectureReportsPending: how many reports wait (for tests: the kernel has them once it is 0)
function reportWhenIdle(view, kind, send) {        // the newest report of this kind waits; an older one is dropped
  const pending = (view.__lectureReports ??= new Map());
  const waiting = pending.has(kind);
  pending.set(kind, send);
  if (waiting) return;
  window.lectureReportsPending = (window.lectureReportsPending || 0) + 1;
  whenIdle(() => {
    const newest = pending.get(kind);
    pending.delete(kind);
    window.lectureReportsPending -= 1;
    if (!window.__lectureLeaving.now && view.model.comm_live !== false) newest();
  });
}
// A kernel-driven redraw (`_py2js_update`: a new result, a streamed partial) that changes trace data and layout
// values only is drawn as the page's recall draws a cached result, by scrub.js's redrawChanged: plotly's calc and
// plot of the changed traces alone, or one relayout that autoranges their axes, instead of Plotly.update of the
// whole figure (2-5 ms against 10-25 ms per figure, docs/performance.md). A page with lecture panels provides it
// (window.lectureRedrawChanged, set where scrub.js is evaluated: the panels' Recall and Scrubber modules); in any
// other page, and for any other change (a trace's name or visibility, styles, other trace types), plotly's own.
// The update's per-trace values follow plotly's restyle: one value per listed trace (cycled), undefined = unchanged.
function drawChanged(gd, update) {
  const redraw = window.lectureRedrawChanged, Plotly = window.Plotly;
  if (!redraw || !Plotly || !gd || !gd._fullLayout || !Array.isArray(gd.data)) return false;
  const n = gd.data.length, style = update.style_data || {}, layout = {};
  let indexes = update.style_traces;
  indexes = indexes == null ? [...Array(n).keys()] : Array.isArray(indexes) ? indexes : [indexes];
  const traces = gd.data.map((t) => ({ x: t.x, y: t.y, name: t.name, visible: t.visible }));
  for (const [path, value] of Object.entries(style)) {
    if (path.startsWith("_")) continue;                        // _doNotReportToPy and the like
    const values = Array.isArray(value) ? value : [value];
    for (let j = 0; j < indexes.length; j++) {
      const v = values[j % values.length], i = indexes[j];
      if (v === undefined) continue;
      if (v === null || !(i >= 0 && i < n)) return false;       // a reset to the default, a trace not there
      traces[i][path] = v;
    }
  }
  for (const [path, v] of Object.entries(update.layout_data || {})) if (!path.startsWith("_") && v !== undefined) layout[path] = v;
  const how = redraw(Plotly, gd, traces, layout);
  if (how === "plot") gd.emit("plotly_afterplot");             // as plotly's own redraw does (relayout emits it)
  if (how) gd.dataset.lectureChangedDraws = (+gd.dataset.lectureChangedDraws || 0) + 1;   // for tests, benchmarks
  return !!how;
}
function patchFigureView(FigureView) {
  const proto = FigureView.prototype, sendTraces = proto._sendTraceDeltas, sendLayout = proto._sendLayoutDelta;
  if (!sendTraces || sendTraces.light) return;
  const doUpdate = proto.do_update;
  proto.do_update = function () {
    const update = this.model.get("_py2js_update");
    let drawn = false;
    try {
      drawn = update != null && drawChanged(this.el, update);
    } catch (error) {                  // plotly's own redraw follows; a failure here must not lose the update
      console.warn("[lecture] redrawChanged failed; plotly redraws:", error);
    }
    if (!drawn) return doUpdate.call(this);
    this._sendTraceDeltas(update.trace_edit_id);
    this._sendLayoutDelta(update.layout_edit_id);
  };
  // A restyle made in this view (a legend click) goes to the kernel, which sends it back as _py2js_restyle to every
  // view; plotly's view applies it again, its own included: a second full restyle of a drawn figure, and, arriving
  // late, one that can undo a newer restyle (a second click). The view that made it reports to the kernel only.
  const doRestyle = proto.do_restyle;
  proto.do_restyle = function () {
    const msg = this.model.get("_py2js_restyle");
    if (!msg || msg.source_view_id !== this.viewID) return doRestyle.call(this);
    this._sendTraceDeltas(msg.trace_edit_id);
    this._sendLayoutDelta(msg.layout_edit_id);
  };
  proto._sendTraceDeltas = Object.assign(function (editId) {
    reportWhenIdle(this, "traces", () => {
      const model = this.model;
      model.set = (name, value) => Object.getPrototypeOf(model).set.call(model, name,
        name === "_js2py_traceDeltas" && value ? { ...value, trace_deltas: value.trace_deltas.map(withoutArrays) } : value);
      try { sendTraces.call(this, editId); } finally { delete model.set; }
    });
  }, { light: true });
  proto._sendLayoutDelta = function (editId) {
    if (proto.__lectureLayoutReportUnknown) return;
    reportWhenIdle(this, "layout", () => {
      const model = this.model, touch = this.touch;
      let known = true;
      model.set = (name, value) => {
        if (model.get(name) !== undefined) return Object.getPrototypeOf(model).set.call(model, name, value);
        known = false;                 // a key the kernel never declared: not sent
        proto.__lectureLayoutReportUnknown = true;
      };
      this.touch = () => { if (known) touch.call(this); };
      try { sendLayout.call(this, editId); } finally { delete model.set; delete this.touch; }
    });
  };
}
const bundles = (window.lectureFigureBundles ??= {});        // one import per bundle and page
const loadBundle = (full) => (bundles[full] ??= import(bundleUrl(full ? "widgetbundle-full.js" : "widgetbundle.js"))
  .then((m) => { patchFigureView(m.FigureView); return m; }));
// Lazy drawing: a figure is drawn when it comes near the viewport; the others wait until the first figure of
// the page has been drawn (so they do not delay it; at once where no figure is near the viewport) and are then
// drawn one per idle moment, nearest to the viewport first, without scrolling. Until drawn, a figure's element keeps its layout's
// size (the page does not jump and the figures below stay below the fold). Its model follows the kernel
// meanwhile (plotly's model applies every update to its data and layout), and plotly's view draws the model's
// data as they are when it is drawn.
// anywidget evaluates this module once per figure: the queue and the observer are the page's, kept on window.
const lazy = (window.lectureLazyFigures ??= (() => {
  const NEAR_PX = 300;                // drawn this close to the viewport (CSS pixels)
  // Where none is near: how long to wait for one that is still rendering before the nearest is drawn. Every
  // figure's render() waits for the same bundle import, so a page's figures reach the observer together;
  // it was 250 ms, a tenth of notebook 03's first plot (docs/performance.md, "Opening a dashboard").
  const NONE_NEAR_MS = 50;
  const waiting = new Map();          // element -> draw()
  let queuedOne = false, drewOne = false, drainAllowed = false, draining = false;
  const idle = (fn) => (window.requestIdleCallback ? requestIdleCallback(fn, { timeout: 500 }) : setTimeout(fn, 50));
  // how far a waiting figure is from the viewport (one not on the page, or hidden, last)
  const distance = (el) => {
    if (!el.isConnected || !el.getClientRects().length) return Infinity;
    const r = el.getBoundingClientRect();
    return Math.max(0, r.top - window.innerHeight, -r.bottom);
  };
  const drainOne = () => {             // the waiting figure nearest to the viewport
    if (!waiting.size) { draining = false; return; }
    let nearest = null, best = Infinity;
    for (const el of waiting.keys()) {
      const d = distance(el);
      if (nearest === null || d < best) { nearest = el; best = d; }
    }
    drawNow(nearest);
    idle(drainOne);
  };
  const drainRest = (now = false) => {
    drainAllowed = true;
    if (!draining && waiting.size) { draining = true; (now ? setTimeout : idle)(drainOne); }
  };
  // An entry says where its figure was when observed; figures rendered later (above it, still without their
  // placeholder size) can push it away, so a near one is drawn only if still near at the next frame.
  const drawIfNear = (el) => requestAnimationFrame(() => { if (distance(el) <= NEAR_PX) drawNow(el); });
  let fallback = 0;
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) drawIfNear(entry.target);
    // none near the viewport (the figures observed so far, that is; others may still be rendering): if none
    // is drawn shortly, there is nothing to wait for, and the nearest is drawn at once
    if (!drewOne) {
      clearTimeout(fallback);
      fallback = setTimeout(() => { if (!drewOne) drainRest(true); }, NONE_NEAR_MS);
    }
  }, { rootMargin: `${NEAR_PX}px` });
  function drawNow(el) {
    const draw = waiting.get(el);
    if (!draw) return;
    waiting.delete(el);
    observer.unobserve(el);
    if (!drewOne) performance.mark("lecture-first-figure-drawn");   // marks for benchmarks and tests
    try {
      draw();
    } catch (error) {                 // one figure that fails must not keep the others from being drawn
      console.error("[lecture] a figure failed to draw:", error);
    }
    if (!drewOne) {                   // the rest once this one is plotted (plotly's newPlot is asynchronous)
      drewOne = true;
      let tries = 0;                  // ... or, if it never is, after 5 s
      const plotted = () => {
        if (!el._fullLayout && ++tries <= 250) { setTimeout(plotted, 20); return; }
        // the page's first plot: the Voila template's script typesets the markdown's math after it
        if (el._fullLayout) window.lectureFirstFigurePlotted = true;
        drainRest();
      };
      plotted();
    }
  }
  function drawLazily(el, layout, draw) {
    const size = (v) => (typeof v === "number" ? `${v}px` : "");
    if (!queuedOne) { queuedOne = true; performance.mark("lecture-first-figure-queued"); }
    el.style.minHeight = size((layout && layout.height) || 360);
    el.style.minWidth = size(layout && layout.width);
    let cleanup = null;
    waiting.set(el, () => { el.style.minHeight = el.style.minWidth = ""; cleanup = draw(); });
    observer.observe(el);
    if (drainAllowed) drainRest();
    return () => {
      waiting.delete(el);
      observer.unobserve(el);
      if (typeof cleanup === "function") cleanup();
    };
  }
  return drawLazily;
})());
export default () => {
  let plotly;
  return {
    initialize(ctx) {
      if (!performance.getEntriesByName("lecture-first-figure-model").length) performance.mark("lecture-first-figure-model");
      plotly = loadBundle(needsFullBundle(ctx.model))
        .then((m) => { const widget = m.default(); widget.initialize(ctx); return widget; });
    },
    async render(ctx) {
      const widget = await plotly;
      return lazy(ctx.el, ctx.model.get("_widget_layout"), () => widget.render(ctx));
    },
  };
};
"""


SHARED_BUNDLE_ESM = SHARED_BUNDLE_ESM.replace("__CARTESIAN_TRACE_TYPES__", json.dumps(sorted(PARTIAL_TRACE_TYPES)))


class SharedBundleFigureWidget(go.FigureWidget):
    """A FigureWidget whose front end is loaded by URL from Voila (see SHARED_BUNDLE_ESM).

    The reports a page sends after each redraw are not echoed back to the page (``echo_update=False``): ipywidgets
    echoes a state a front end set to every front end, and no front end reads these (plotly's view only writes
    them). The trace-delta report was the largest message a streamed partial caused, ~10 kB per figure, relayed to
    the page while it drew the next figures; the layout report goes the same way should plotly send it under this
    key (plotly 7 does not: see SHARED_BUNDLE_ESM).
    """

    _esm = SHARED_BUNDLE_ESM
    _js2py_traceDeltas = Dict(allow_none=True).tag(sync=True, echo_update=False, **custom_serializers)
    _js2py_layoutDelta = Dict(allow_none=True).tag(sync=True, echo_update=False, **custom_serializers)

    def _send_update_msg(self, restyle_data, relayout_data, trace_indexes=None, source_view_id=None):
        """Plotly's ``_send_update_msg`` in two messages instead of four.

        Plotly sets four synced traits one after the other, each its own comm message: the two edit ids, the update,
        and the update again as ``None`` (so that a state sent again in full replays nothing). Here the edit ids
        travel with the update (``hold_sync``); the reset stays a message of its own. A streamed partial of a
        three-figure panel was twelve messages, the server relaying each while the page drew.
        """
        trace_indexes = self._normalize_trace_indexes(trace_indexes)
        with self.hold_sync():
            self._last_trace_edit_id += 1
            self._trace_edit_in_process = True
            self._last_layout_edit_id += 1
            self._layout_edit_in_process = True
            self._py2js_update = {
                "style_data": restyle_data,
                "layout_data": relayout_data,
                "style_traces": trace_indexes,
                "trace_edit_id": self._last_trace_edit_id,
                "layout_edit_id": self._last_layout_edit_id,
                "source_view_id": source_view_id,
            }
        self._py2js_update = None
