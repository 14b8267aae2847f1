// Scrubbing a precomputed family in the page: ONE mechanism for the live dashboard and a static page.
//
// Depends only on Plotly (passed in, e.g. window.Plotly) and the figures' graph divs; no kernel, no
// widget model. lecture_lib.viz.scrub inlines this file into the Scrubber anywidget's module (its
// `export default` is appended after this text), and a static exporter may include it verbatim.
//
// Data: `frames[p][k]` is what figure k shows at position p of the scrubbed parameter:
//     {traces: [i, ...], x: [array, ...], y: [array, ...]}
// trace i of figure k gets x[j], y[j] (j-th entry of `traces`); arrays are Float64Array, number
// arrays, or the raw float64 bytes (ArrayBuffer / DataView) the kernel sends, see `floats`.
// (Python: lecture_lib.viz.scrub.family_frames builds exactly this, one entry per figure.)
//
// Why Plotly on the graph divs and not the FigureWidget models: going through a model,
// plotly's FigureWidget front end also diffs every trace's full data and sends the "trace deltas"
// back to the kernel after each redraw (measured: half of a scrub step's time). The kernel learns
// the position separately and brings its own copy of the figures up to date without a message
// (lecture_lib.viz.scrub.ScrubPanel), so its later updates stay coherent with what the page shows.

/** A float64 array from what a frame holds: a typed or plain array, or raw float64 bytes. */
export function floats(v) {
  if (v instanceof Float64Array || Array.isArray(v)) return v;
  if (v instanceof ArrayBuffer) return new Float64Array(v);
  if (ArrayBuffer.isView(v)) return new Float64Array(v.buffer, v.byteOffset, v.byteLength / 8);
  return v;
}

/** Frames with every array decoded once (see `floats`), so that a swap only hands arrays to Plotly. */
export function decodeFrames(frames) {
  return frames.map((position) => position.map((f) => ({
    traces: f.traces, x: f.x.map(floats), y: f.y.map(floats) })));
}

const AXIS_NAME = { x: "xaxis", y: "yaxis" };
const axisName = (trace, letter) => AXIS_NAME[letter] + (trace[letter + "axis"] || letter).slice(1);   // "x2" -> "xaxis2"

/**
 * The range of every linear or log axis of `gd` that shows data and that the figure leaves to plotly's
 * autorange: the union over all positions (frames[*][k], the other traces as they are), padded like
 * plotly pads y. Used so that the axes stay put while the data move (and because Plotly.animate, which
 * `swap` uses, does not autorange).
 */
export function familyRanges(gd, frames, k) {
  const ranges = {};
  const add = (trace, letter, values) => {
    const name = axisName(trace, letter), ax = gd._fullLayout[name], own = (gd.layout[name] || {});
    if (!ax || (ax.type !== "linear" && ax.type !== "log") || (!own._lectureFixed && (own.autorange === false || (own.range && own.autorange !== true)))) return;
    const r = ranges[name] || (ranges[name] = [Infinity, -Infinity, ax.type, letter]);
    for (let v of values || []) {
      if (ax.type === "log") { if (!(v > 0)) continue; v = Math.log10(v); }
      if (Number.isFinite(v)) { if (v < r[0]) r[0] = v; if (v > r[1]) r[1] = v; }
    }
  };
  const listed = new Set();
  for (const position of frames) {
    const f = position[k];
    if (!f) continue;
    f.traces.forEach((i, j) => {
      const t = gd._fullData[i];
      listed.add(i);
      if (t && t.visible === true) { add(t, "x", f.x[j]); add(t, "y", f.y[j]); }
    });
  }
  gd._fullData.forEach((t, i) => { if (!listed.has(i) && t.visible === true) { add(t, "x", t.x); add(t, "y", t.y); } });
  const update = {};
  for (const [name, [lo, hi, , letter]] of Object.entries(ranges)) {
    if (!(lo <= hi)) continue;
    const pad = letter === "y" ? (hi > lo ? 0.05 * (hi - lo) : 0.5) : (hi > lo ? 0 : 0.5);
    update[name + ".range"] = [lo - pad, hi + pad];
    update[name + ".autorange"] = false;
  }
  return update;
}

const fixedFor = new WeakMap();      // graph div -> the frames its axis ranges were fixed for

/** Fix each drawn figure's axes to the family's ranges (once per family and div; see `familyRanges`). */
export function fixRanges(Plotly, plotDivs, frames) {
  plotDivs.forEach((divs, k) => {
    for (const gd of Array.isArray(divs) ? divs : [divs]) {
      if (!gd || !gd._fullLayout || fixedFor.get(gd) === frames) continue;
      fixedFor.set(gd, frames);
      const update = familyRanges(gd, frames, k);
      if (Object.keys(update).length) {
        Plotly.relayout(gd, update);
        for (const key of Object.keys(update)) if (key.endsWith(".range")) gd.layout[key.split(".")[0]]._lectureFixed = true;
      }
    }
  });
}

/**
 * Show one position: each figure's traces get the position's x/y, redrawn alone (`redrawTraces`: plotly's calc
 * and plot of those traces only) where that suffices, else in one Plotly.animate call (no transition, no redraw
 * of axes and legend: half the time of Plotly.restyle, measured; a newer call supersedes a frame not yet drawn).
 * `plotDivs[k]` is figure k's graph div (or a list of divs showing the same figure); divs not yet
 * drawn are skipped. Call `fixRanges` first: animate keeps the axes as they are.
 * Optional, per figure (a static page's frames carry them): `layout`, an index into `layouts`, applied
 * when it changes; `ztraces`/`z`, heatmap or contour values. Traces whose x and y are the very arrays
 * already drawn (a static page shares equal arrays between positions) are not sent again.
 */
export function swap(Plotly, plotDivs, position, layouts = []) {
  position.forEach((f, k) => {
    if (!f) return;
    const divs = Array.isArray(plotDivs[k]) ? plotDivs[k] : [plotDivs[k]];
    for (const gd of divs) {
      if (!gd || !gd._fullLayout) continue;
      const traces = [], data = [];
      f.traces.forEach((i, j) => {
        // the very arrays drawn already (Plotly.animate keeps the arrays it is given): nothing to send. Asked of
        // the div, not remembered here: anything else may have drawn on it since (the figure's own widget view)
        const now = gd.data[i], x = plain(f.x[j]), y = plain(f.y[j]);
        if (now && now.x === x && now.y === y) return;
        traces.push(i); data.push({ x, y });
      });
      const layout = f.layout === undefined ? null : layouts[f.layout];
      if (layout && layoutOn.get(gd) !== layout) { layoutOn.set(gd, layout); Plotly.relayout(gd, layout); }
      if (f.ztraces && f.ztraces.length) Plotly.restyle(gd, { z: f.z }, f.ztraces);     // heatmaps, contours
      if (!traces.length || redrawTraces(gd, traces, data)) continue;        // the traces alone, where it can
      Plotly.animate(gd, { data, traces }, ANIMATE).catch(() => {});   // superseded: nothing to do
    }
  });
}
const layoutOn = new WeakMap();      // graph div -> the position layout it shows

/**
 * Give traces `traces` of `gd` the new x/y of `data` and redraw those traces only: what Plotly.animate without a
 * transition does, less its supplyDefaults of the whole figure (every trace and the layout, every step: most of
 * a step's script on a figure of many traces or subplots) and its calc of the traces that did not change.
 * Only where nothing else can depend on the new data: plain scatter traces (`plainScatter`) on axes whose ranges
 * are fixed (`fixRanges`); anything else returns false, and the caller animates. Uses plotly.js's own steps (the
 * trace module's calc, the cartesian plot of the given traces, as Plotly.animate does), so the drawing is plotly's.
 */
export function redrawTraces(gd, traces, data) {
  const layout = gd._fullLayout;
  if (!cartesianOf(gd)) return false;
  for (let j = 0; j < traces.length; j++) {
    if (!plainScatter(gd, traces[j], data[j])) return false;
    const t = gd._fullData[traces[j]];
    for (const letter of ["x", "y"]) {
      const ax = layout[axisName(t, letter)];
      if (!ax || ax.autorange !== false) return false;
    }
  }
  recalc(gd, traces, data);
  plotTraces(gd, traces);
  return true;
}

/**
 * Draw on `gd` a figure given whole: `traces[i]` is what trace i shows ({x, y, name, visible, and any other data
 * attribute by its dotted path, e.g. "marker.size"}, every trace of the figure in order) and `layout` the value of
 * each layout path that may differ ({path: value}). The page-side recall's redraw (lecture_lib.viz.recall): what
 * did not change is not drawn again. The traces whose x/y changed are recalculated alone (plotly's calc of those
 * traces); if none of their axes autoranges and no layout path changed, those traces alone are replotted (as in
 * `redrawTraces`); else one Plotly.relayout with the changed layout paths and an autorange of those traces' axes
 * redraws axes and data, plotly's autorange taking every trace's extremes as its full redraw would. Half to a tenth
 * of a full Plotly.update of the figure, which runs supplyDefaults and calc of every trace and redraws legend and
 * titles (measured: docs/performance.md). Returns false, having changed nothing, where anything else changed (the
 * number of traces, a name, a visibility, a data attribute other than x/y and the per-point arrays of `POINT_ARRAYS`
 * that were arrays already) or a changed trace is not a plain scatter (`plainScatter`): the caller draws it with
 * Plotly.update. Else "relayout" where plotly's relayout draws (it emits plotly_afterplot), "plot" where the traces
 * were plotted alone or nothing needed drawing (no plotly_afterplot). Nothing is reported to a FigureWidget's kernel.
 */
export function redrawChanged(Plotly, gd, traces, layout) {
  const full = gd._fullLayout;
  if (!cartesianOf(gd) || !gd.data || gd.data.length !== traces.length) return false;
  const changed = [], data = [], hidden = [], relayout = {};
  for (let i = 0; i < traces.length; i++) {
    const t = traces[i], now = gd.data[i], points = {};
    for (const [path, v] of Object.entries(t)) {
      if (path === "x" || path === "y") continue;
      const was = valueAt(now, path);
      if (path === "visible" ? (v ?? true) === (was ?? true) : same(v, was)) continue;
      if (!POINT_ARRAYS.has(path) || !sameKind(v, was) || !sameKind(v, valueAt(gd._fullData[i], path))) return false;
      points[path] = v;                               // a per-point array, e.g. marker sizes: taken like x and y
    }
    const moved = Object.keys(points).length > 0;
    if (!moved && same(t.x, now.x) && same(t.y, now.y)) continue;
    if (t.visible === false) { hidden.push(i); continue; }        // not drawn: its data change draws nothing
    if (!plainScatter(gd, i, t)) return false;
    changed.push(i); data.push({ x: t.x, y: t.y, points });
  }
  for (const i of hidden) {
    for (const [path, v] of Object.entries(traces[i])) if (path === "x" || path === "y" || POINT_ARRAYS.has(path)) setAt(gd.data[i], path, v);
  }
  for (const [path, v] of Object.entries(layout || {})) if (!same(v, valueAt(gd.layout, path))) relayout[path] = v;
  const autorange = {};
  for (const i of changed) {
    const t = gd._fullData[i];
    for (const letter of ["x", "y"]) {
      const name = axisName(t, letter), ax = full[name];
      if (ax && ax.autorange !== false) autorange[name + ".autorange"] = ax.autorange;
    }
  }
  recalc(gd, changed, data);
  const axes = Object.keys(autorange).length;
  if (!axes && changed.length) plotTraces(gd, changed);            // a relayout of titles alone redraws no data
  if (!axes && !Object.keys(relayout).length) return "plot";
  quietRelayout(Plotly, gd, { ...relayout, ...autorange });
  return "relayout";
}

/**
 * Plotly.relayout, its plotly_relayout event marked `_doNotReportToPy` (so that a FigureWidget's view sends nothing to
 * its kernel) without that key in the relayout itself: plotly takes a key it has no attribute for as one that needs
 * a full replot (measured: 20 to 30 ms instead of 4 to 7). The event carries a copy of the update, so it is known by
 * its keys; gd.emit is wrapped once per div.
 */
function quietRelayout(Plotly, gd, update) {
  const keys = JSON.stringify(Object.keys(update).sort());
  if (!gd.emit.__lectureQuiet) {
    const emit = gd.emit, pending = gd.__lectureQuiet = [];
    gd.emit = function (name, data) {
      const j = name === "plotly_relayout" && data ? pending.indexOf(JSON.stringify(Object.keys(data).sort())) : -1;
      if (j >= 0) { pending.splice(j, 1); data._doNotReportToPy = true; }
      return emit.call(this, name, data);
    };
    gd.emit.__lectureQuiet = true;
  }
  gd.__lectureQuiet.push(keys);
  Plotly.relayout(gd, update).catch(() => {
    const j = gd.__lectureQuiet.indexOf(keys);
    if (j >= 0) gd.__lectureQuiet.splice(j, 1);
  });
}

const cartesianOf = (gd) => gd._fullLayout && gd.calcdata && gd.data
  && (gd._fullLayout._basePlotModules || []).find((m) => m.name === "cartesian");

// Per-point arrays a scatter trace's calc and plot read as they read x and y (plotly keeps the input array in the
// full trace), so that a new one is taken by a calc of the trace alone: hover data, text, marker size, colour, symbol.
const POINT_ARRAYS = new Set(["customdata", "text", "marker.size", "marker.color", "marker.symbol"]);

/** Whether trace i of `gd` can take new x/y (`data`) by a calc of its own: a plain scatter trace, drawn, with no
 * fill, stack or error bars and no per-point array but x, y and `POINT_ARRAYS` (nothing else depends on its data). */
function plainScatter(gd, i, { x, y }) {
  const t = gd._fullData[i], calcdata = gd.calcdata;
  return !!t && t.type === "scatter" && t.visible === true && t.index === i && t._input === gd.data[i]
    && !!calcdata[i] && calcdata[i][0].trace === t && !t.stackgroup && !(t.fill && t.fill !== "none")
    && !(t.error_x && t.error_x.visible) && !(t.error_y && t.error_y.visible) && isArray(x) && isArray(y)
    && (t._arrayAttrs || []).every((a) => a === "x" || a === "y" || POINT_ARRAYS.has(a));
}

/** Set the traces' new x/y (and `points`: per-point arrays by path) and run plotly's calc of those traces alone
 * (their calcdata and axis extremes). */
function recalc(gd, traces, data) {
  traces.forEach((i, j) => {
    const t = gd._fullData[i];
    gd.data[i].x = t.x = data[j].x;
    gd.data[i].y = t.y = data[j].y;
    for (const [path, v] of Object.entries(data[j].points || {})) { setAt(gd.data[i], path, v); setAt(t, path, v); }
    t._length = Math.min(t.x.length, t.y.length);
    let cd = t._length ? t._module.calc(gd, t) : [];
    if (!Array.isArray(cd) || !cd[0]) cd = [{ x: undefined, y: undefined }];    // an empty trace, as plotly's doCalcdata
    if (!cd[0].t) cd[0].t = {};
    cd[0].trace = t;
    gd.calcdata[i] = cd;
  });
}

/** plotly's cartesian plot of the given traces alone (what Plotly.animate does without a transition). */
function plotTraces(gd, traces) {
  cartesianOf(gd).plot(gd, traces, { duration: 0, easing: "cubic-in-out", ordering: "layout first" }, () => () => {});
}

const isArray = (v) => Array.isArray(v) || ArrayBuffer.isView(v);
const valueAt = (obj, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
function setAt(obj, path, v) {
  const parts = path.split("."), last = parts.pop();
  for (const k of parts) obj = obj[k] || (obj[k] = {});
  obj[last] = v;
}
/** Both arrays of the same kind of element (numbers, strings...): one can stand for the other in plotly's defaults. */
const sameKind = (a, b) => isArray(a) && isArray(b) && (!a.length || !b.length || typeof a[0] === typeof b[0]);

/** Equal as plotly would draw them: numbers and strings by value, arrays (plain or typed) element by element,
 * objects by their JSON; null and undefined alike (an attribute left to its default). */
function same(a, b) {
  if (a === b || (a == null && b == null)) return true;
  if (a == null || b == null) return false;
  if (isArray(a) && isArray(b)) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) {
      const u = a[i], v = b[i];
      if (u !== v && !(u !== u && v !== v) && !(typeof u === "object" && typeof v === "object" && same(u, v))) return false;
    }
    return true;
  }
  return typeof a === "object" && typeof b === "object" && !isArray(a) && !isArray(b) && JSON.stringify(a) === JSON.stringify(b);
}

// Plotly.animate walks every index of an array that is not an Array (its expandObjectPaths runs `for...in`
// and two regular expressions over each key of a typed array): ~1 µs a point, a quarter of a scrub step of
// 12 000 points with the garbage it leaves (measured: docs/performance.md). It gets plain Arrays, each made
// once per typed array, so that equal positions still hand over the very same array (see `swap`).
const plainOf = new WeakMap();       // typed array -> the plain Array handed to Plotly
export function plain(v) {
  if (!ArrayBuffer.isView(v)) return v;
  let a = plainOf.get(v);
  if (!a) plainOf.set(v, a = Array.from(v));
  return a;
}
const ANIMATE = { mode: "immediate", frame: { duration: 0, redraw: false }, transition: { duration: 0 } };

/**
 * Wire an <input type=range> to a family: moving it (mouse, keyboard, screen reader) swaps positions.
 * options: Plotly (or a function returning it, when it loads later); plotDivs() -> the current graph divs (see `swap`); frames (decoded or not);
 * labels (text per position) and output (an element that shows it); onInput(i) after each swap.
 * Returns {show(i), mark(i), setFrames(frames, i), fix(), get index()}.
 */
export function wire(input, { Plotly, plotDivs, frames = [], labels = [], output = null, onInput = null }) {
  let decoded = decodeFrames(frames);
  let shown = -1;
  input.type = "range"; input.min = 0; input.step = 1;
  const mark = (i) => {
    input.max = Math.max(decoded.length - 1, 0);
    input.value = i;
    if (output) output.textContent = labels[i] ?? "";
  };
  const show = (i) => {
    if (!decoded[i]) return;
    const plotly = typeof Plotly.animate === "function" ? Plotly : Plotly(), divs = plotDivs();
    fixRanges(plotly, divs, decoded);
    swap(plotly, divs, decoded[i]);
    shown = i;
    mark(i);
  };
  input.addEventListener("input", () => {
    const i = +input.value;
    if (i === shown) return;
    show(i);
    if (onInput) onInput(i);
  });
  return {
    show,
    mark: (i) => { shown = i; mark(i); },
    setFrames(next, i) {
      decoded = decodeFrames(next); shown = i; mark(i);
      const plotly = typeof Plotly.animate === "function" ? Plotly : Plotly && Plotly();
      if (plotly) fixRanges(plotly, plotDivs(), decoded);       // now, not on the first move
    },
    /** Fix the axes to the family's ranges on the divs plotDivs() gives now (see `fixRanges`). */
    fix() {
      const plotly = typeof Plotly.animate === "function" ? Plotly : Plotly && Plotly();
      if (plotly) fixRanges(plotly, plotDivs(), decoded);
    },
    get index() { return shown; },
  };
}

// The figures' views draw kernel-driven updates with redrawChanged too (voila_app/figure_widget.py, drawChanged):
// a page where this module runs (a panel's Recall or Scrubber) offers it to them.
if (typeof window !== "undefined" && !window.lectureRedrawChanged) window.lectureRedrawChanged = redrawChanged;
