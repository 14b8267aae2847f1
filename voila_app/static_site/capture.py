"""Kernel side of ``./lecture export``: every panel of the notebook, precomputed over a grid of its controls.

The exporter runs a notebook headless and then runs :func:`capture` in the same kernel. For each panel
(:data:`url_state.PAGE` knows them, in page order) it computes the panel's result at every point of a
grid -- the scrub positions of a :class:`~lecture_lib.viz.scrub.ScrubPanel` (one batched family, free),
times the values of the controls chosen by the plan -- and builds each point's figures with the
panel's own builder (thinned as the live figures are, :meth:`LiveFigures.prepare`). What it writes
per panel (``<out>/<model_id>.json``):

- ``figures``: the default position's figures (plotly JSON) with the swapped ``x``/``y`` removed;
- ``dims``: ``[{name, label, labels, index}]``, the first one varying slowest;
- ``frames[p][k]``: position ``p``'s data for figure ``k``, ``{"traces": [i...], "x": [a...], "y": [a...]}``
  (``a`` indexes ``arrays``), optionally ``"layout"`` (index into ``layouts``: the layout entries that
  differ between positions); the format of :func:`lecture_lib.viz.scrub.family_frames` with shared arrays;
- ``arrays``: each distinct array once (a shared x axis is stored once), as :func:`encode` writes it
  (float16 where that is invisible on a plot, else float32);
- ``notes``: index into ``note_texts`` per position; ``fixed``: the controls left at their defaults.
"""
from __future__ import annotations

import base64
import itertools
import json
import math
import re
import time
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from lecture_lib.viz import figures as _figures
from lecture_lib.viz import url_state
from lecture_lib.viz.controls import freeze
from lecture_lib.viz.live_figures import _flat
from lecture_lib.viz.scrub import ScrubPanel


def panels() -> list:
    """The notebook's panels, numbered from 1 in page order."""
    return list(url_state.PAGE._panels)


def control_grid(w: widgets.Widget, points: int) -> tuple[list, list[str]]:
    """Up to ``points`` values of control ``w`` spread over its range, its current value among them, with labels."""
    value = w.value
    if isinstance(w, widgets.Checkbox):
        values, labels = [False, True], ["off", "on"]
    elif hasattr(w, "_options_values"):
        values, labels = list(w._options_values), [str(s) for s in w._options_labels]
    elif isinstance(w, widgets.FloatLogSlider):
        n = int(round((w.max - w.min) / w.step)) + 1
        values = [freeze(float(w.base ** (w.min + i * w.step))) for i in range(n)]
        labels = None
    elif isinstance(w, (widgets.FloatSlider, widgets.IntSlider)):
        n = int(round((w.max - w.min) / w.step)) + 1
        values = [freeze(w.min + i * w.step) for i in range(n)]
        labels = None
    else:
        raise TypeError(f"cannot put a {type(w).__name__} on a grid")
    # the nearest grid value to the default is replaced by the default itself
    keep = sorted(set(np.linspace(0, len(values) - 1, min(points, len(values))).round().astype(int).tolist()))
    near = min(range(len(values)), key=lambda i: abs(_num(values[i]) - _num(value)))
    if near not in keep:
        keep = sorted(set(keep) | {near})
        keep.remove(min((k for k in keep if k != near), key=lambda k: abs(k - near)))
    values = [value if i == near else values[i] for i in keep] if value not in values else [values[i] for i in keep]
    if value not in values:
        values = sorted(values + [value], key=_num)
    if labels is None:
        fmt = getattr(w, "readout_format", "d") or ".3g"
        labels = [format(v, fmt) for v in values]
    else:
        by_value = dict(zip(list(w._options_values) if hasattr(w, "_options_values") else [False, True], labels))
        labels = [by_value[v] for v in values]
    return values, labels


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def compute(panel, values: dict):
    """The panel's result for control ``values`` (a family for a ScrubPanel), computed here and now."""
    return panel.runner._compute(**values)           # no progress: nothing streams while exporting


PAGE_WIDTH = 1000         # px: a figure on the static page is at most this wide (the page's column)
PIXELS_PER_BUCKET = 3     # one (min, max) pair of a line per this many pixel columns: the pixels it covers


def pixel_buckets(fig) -> int:
    """Buckets of :func:`thin_to_pixels` for one (min, max) pair per ``PIXELS_PER_BUCKET`` pixel columns of the
    narrowest x axis: no more points than the pixels a line occupies."""
    width = fig.layout.width or PAGE_WIDTH
    fractions = [1.0]
    for name in fig.layout:
        if name.startswith("xaxis"):
            domain = fig.layout[name].domain
            if domain:
                fractions.append(domain[1] - domain[0])
    return max(50, int(width * min(fractions) / PIXELS_PER_BUCKET))


MAX_MARKERS = 300        # a markers-only trace: at most this many points (every k-th), each is an SVG path
_PER_POINT = ("text", "hovertext", "customdata", "marker.size", "marker.color", "marker.symbol")


def pixel_indices(x: np.ndarray, y: np.ndarray, buckets: int, log: bool) -> np.ndarray:
    """Indices keeping, in each of ``buckets`` equal slices of the x axis (of log10 x on a log axis), the
    minimum and the maximum of ``y``, plus the first and last point: a line through them covers the same
    pixels. ``x`` increasing and finite (positive on a log axis), ``y`` finite."""
    pos = np.log10(x) if log else x
    span = pos[-1] - pos[0]
    if not span > 0:
        return np.arange(len(y))
    b = np.minimum(((pos - pos[0]) / span * buckets).astype(np.int64), buckets - 1)
    order = np.lexsort((y, b))                 # by bucket, then y: each bucket's min first, max last
    starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0])
    ends = np.r_[starts[1:] - 1, len(order) - 1]
    return np.unique(np.r_[order[starts], order[ends], 0, len(y) - 1])


def thin_to_pixels(fig: go.Figure, buckets: int) -> go.Figure:
    """Thin ``fig``'s long line traces in place to :func:`pixel_indices`, on linear and log x axes alike, and
    markers-only clouds to every k-th point (at most ``MAX_MARKERS``); per-point attributes follow the points."""
    for trace in fig.data:
        if trace.type != "scatter" or trace.x is None or trace.y is None:
            continue
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        if trace.mode == "markers":          # a cloud of points, one SVG path each: every k-th point keeps its shape
            if len(y) > MAX_MARKERS and len(x) == len(y):
                _keep(trace, y, np.arange(0, len(y), -(-len(y) // MAX_MARKERS)))
            continue
        if "markers" in (trace.mode or "lines"):
            continue
        if len(y) <= 2 * buckets or len(x) != len(y) or x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
            continue
        log = getattr(fig.layout["xaxis" + (trace.xaxis or "x")[1:]], "type", None) == "log"
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x)) and np.all(np.diff(x) >= 0)) or (log and x[0] <= 0):
            continue
        _keep(trace, y, pixel_indices(x.astype(float), y.astype(float), buckets, log))
    return fig


def _keep(trace, y, keep) -> None:
    patch = {"x": np.asarray(trace.x)[keep], "y": y[keep]}
    for key in _PER_POINT:
        value = trace
        for part in key.split("."):
            value = getattr(value, part, None)
        if value is not None and not isinstance(value, str) and np.ndim(value) == 1 and len(value) == len(y):
            patch[key.replace(".", "_")] = np.asarray(value)[keep]
    trace.update(patch)


def position_figures(panel, values: dict) -> list[list]:
    """The figures of every scrub position (one position for a plain panel) at control ``values``, as the
    live panel builds them, thinned to the pixels of their axes."""
    result = compute(panel, values)
    members = list(result) if isinstance(panel, ScrubPanel) else [result]
    figs = [[go.Figure(f) for f in panel.live.prepare(m)] for m in members]
    for position in figs:
        for f in position:
            thin_to_pixels(f, pixel_buckets(f))
    return figs, members


def _notes(panel, member) -> str:
    fn = panel.notes_fn                 # a ScrubPanel's: of one position's result
    return fn(member) if fn else ""


class _Pool:
    """Distinct values stored once: ``add(v)`` returns the index of an equal value already stored."""

    def __init__(self):
        self.items, self._index = [], {}

    def add(self, item, key) -> int:
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append(item)
        return self._index[key]


def encode(a: np.ndarray) -> str:
    """Numbers as text: ``"h"`` + base64 float16 where that is invisible on a plot (every value within 1/2000 of
    the array's spread, or relative 1/1000 on a log axis), else ``"f"`` + base64 float32 (little endian)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    finite = a[np.isfinite(a)]
    if finite.size:
        with np.errstate(over="ignore", invalid="ignore"):
            half = a.astype("<f2")
        spread = float(np.ptp(finite)) if finite.size > 1 else 0.0
        err = np.abs(half[np.isfinite(a)].astype(np.float64) - finite)
        tol = np.maximum(spread / 2000, np.abs(finite) / 1000)
        if np.all(np.isfinite(half[np.isfinite(a)])) and np.all(err <= tol):
            return "h" + base64.b64encode(half.tobytes()).decode("ascii")
    return "f" + base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """The numbers :func:`encode` wrote (as float64)."""
    dtype = {"h": "<f2", "f": "<f4"}[text[0]]
    return np.frombuffer(base64.b64decode(text[1:]), dtype=dtype).astype(np.float64)


def _array(pool: _Pool, values):
    a = np.asarray(values)
    if a.dtype.kind == "O":               # numbers with None (a gap in a line): None -> NaN, drawn as the same gap
        try:
            a = np.asarray([np.nan if v is None else v for v in a.ravel()], dtype=float).reshape(a.shape)
        except (TypeError, ValueError):
            pass
    if a.dtype.kind not in "fiub":        # categories, dates: kept as JSON
        item = a.tolist()
        return pool.add(item, json.dumps(item))
    text = encode(a)
    return pool.add(text, text)


def panel_grid(panel, controls: list[str], points: int | dict, progress=lambda: None) -> dict:
    """Everything the static page needs to scrub ``panel`` over its scrub positions x ``controls``
    (``points`` values of each, or ``points[name]``)."""
    defaults = panel.values
    counts = points if isinstance(points, dict) else dict.fromkeys(controls, points)
    grids = {name: control_grid(panel.controls[name], counts[name]) for name in controls}
    dims = []
    if isinstance(panel, ScrubPanel):
        s = panel.scrub
        dims.append({"name": s.name, "label": s.label, "labels": [s.fmt(v) for v in s.values],
                     "index": s.index, "values": [_plain(v) for v in s.values]})
    for name in controls:
        values, labels = grids[name]
        dims.append({"name": name, "label": panel.controls[name].description, "labels": labels,
                     "index": values.index(defaults[name]) if defaults[name] in values else 0,
                     "values": [_plain(v) for v in values]})
    # compute: one call per control combination (a ScrubPanel's call gives all scrub positions)
    combos = list(itertools.product(*[grids[n][0] for n in controls]))
    computed = {}
    for combo in combos:
        values = dict(defaults, **dict(zip(controls, combo)))
        figs, members = position_figures(panel, values)
        computed[combo] = (figs, [_notes(panel, m) for m in members])
        progress()
    scrub_n = len(dims[0]["labels"]) if isinstance(panel, ScrubPanel) else 1
    positions = []                                   # flat, first dimension slowest
    for s_i in range(scrub_n):
        for combo in combos:
            figs, notes = computed[combo]
            positions.append((figs[s_i], notes[s_i]))
    if not isinstance(panel, ScrubPanel):
        positions = [(computed[c][0][0], computed[c][1][0]) for c in combos]
    shape = [len(d["labels"]) for d in dims]
    default = int(np.ravel_multi_index([d["index"] for d in dims], shape)) if dims else 0
    base = positions[default][0]
    # the page fixes autoranged axes to the extent of the family shown: the first dimension's positions, the others
    # where they are (flat order, first dimension slowest: family c is positions c, c + rest, c + 2 rest, ...)
    rest = len(positions) // shape[0] if shape else 1
    for c in range(rest):
        for k in range(len(base)):
            _figures.unify_log_ticks([figs[k] for figs, _ in positions[c::rest]])
    arrays, layouts, note_texts = _Pool(), _Pool(), _Pool()
    flats = [[_flat(f.layout.to_plotly_json()) for f in figs] for figs, _ in positions]
    varying = [sorted({p for fl in flats for p in fl[k].keys() | flats[default][k].keys()
                       if not _same(fl[k].get(p), flats[default][k].get(p))}) for k in range(len(base))]
    frames, swapped, zswapped = [], [set() for _ in base], [set() for _ in base]
    for (figs, note), flat in zip(positions, flats):
        frame = []
        for k, (b, fig) in enumerate(zip(base, figs)):
            index = {id(t): i for i, t in enumerate(b.data)}
            pairs, missing, _ = _figures.match_traces(b.data, fig.data)
            entry = {"traces": [], "x": [], "y": []}
            for t, s in pairs:
                z = getattr(s, "z", None)
                if z is not None and getattr(t, "z", None) is not None:     # a heatmap or contour: its z swapped too
                    z = np.asarray([[np.nan if v is None else v for v in row] for row in z], dtype=float)
                    entry.setdefault("ztraces", []).append(index[id(t)])
                    entry.setdefault("z", []).append(_array(arrays, z))
                    entry.setdefault("zcols", []).append(int(z.shape[1]))
                if s.x is None or s.y is None:
                    continue
                entry["traces"].append(index[id(t)])
                entry["x"].append(_array(arrays, s.x))
                entry["y"].append(_array(arrays, s.y))
            for t in missing:                        # a trace this position lacks: drawn empty
                if t.x is not None:
                    entry["traces"].append(index[id(t)])
                    entry["x"].append(_array(arrays, []))
                    entry["y"].append(_array(arrays, []))
            swapped[k].update(entry["traces"])
            zswapped[k].update(entry.get("ztraces", []))
            if varying[k]:
                patch = {p: _jsonable(flat[k].get(p)) for p in varying[k]}
                text = json.dumps(patch, sort_keys=True)
                entry["layout"] = layouts.add(patch, text)
            frame.append(entry)
        frames.append(frame)
    _drop_constant_z(frames, zswapped)
    figures = []
    for k, fig in enumerate(base):
        spec = json.loads(fig.to_json())
        for i in swapped[k]:
            spec["data"][i].pop("x", None)
            spec["data"][i].pop("y", None)
        for i in zswapped[k]:
            spec["data"][i].pop("z", None)
        figures.append(spec)
    notes_index = [note_texts.add(n, n) for _, n in positions]
    fixed = [{"name": n, "label": w.description, "value": _label(w)} for n, w in panel.controls.items()
             if n not in controls]
    return {"number": panel.number, "title": _title(panel), "caption": _caption(panel), "dims": dims, "shape": shape, "default": default,
            "figures": figures, "frames": frames, "arrays": arrays.items, "layouts": layouts.items,
            "notes": notes_index, "note_texts": note_texts.items, "fixed": fixed, "defaults": {
                k: _plain(v) for k, v in defaults.items()}, "grid_controls": controls}


def _drop_constant_z(frames: list, zswapped: list[set]) -> None:
    """A heatmap or contour whose values are the same at every position (a loss surface under paths that
    move) stays in its figure and leaves the frames: a z swap redraws the whole contour (~100 ms a step)."""
    for k, traces in enumerate(zswapped):
        for t in sorted(traces):
            values = {e["z"][e["ztraces"].index(t)] for e in (frame[k] for frame in frames) if t in e.get("ztraces", [])}
            if len(values) > 1 or any(t not in frame[k].get("ztraces", []) for frame in frames):
                continue
            traces.discard(t)
            for frame in frames:
                e = frame[k]
                j = e["ztraces"].index(t)
                for key in ("ztraces", "z", "zcols"):
                    del e[key][j]
                if not e["ztraces"]:
                    del e["ztraces"], e["z"], e["zcols"]


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return json.dumps(_jsonable(a)) == json.dumps(_jsonable(b))


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _plain(v):
    return _jsonable(v.item() if isinstance(v, np.generic) else v)


def _label(w) -> str:
    if hasattr(w, "_options_labels"):
        try:
            return str(w._options_labels[list(w._options_values).index(w.value)])
        except ValueError:
            return str(w.value)
    if isinstance(w, widgets.Checkbox):
        return "on" if w.value else "off"
    fmt = getattr(w, "readout_format", None)
    try:
        return format(w.value, fmt) if fmt else str(w.value)
    except (TypeError, ValueError):
        return str(w.value)


def _caption(panel) -> str:
    """The panel's caption; a ScrubPanel's note on its controls retold for a page where only the grid moves."""
    text = panel.caption_html
    if isinstance(panel, ScrubPanel):
        text = re.sub(r"<i>All \d+ positions of the .*?</i>",
                      f"<i>All {len(panel.scrub.values)} positions of the {panel.scrub.label} slider were "
                      f"{panel.scrub.together}.</i>", text, flags=re.S)
    return text


def _title(panel) -> str:
    m = re.search(r"<h3>(.*?)</h3>", panel.title_html)
    return m.group(1) if m else ""


def capture(out_dir: str, plan: dict, points: int) -> dict:
    """Write ``<out_dir>/<model_id>.json`` for every panel; ``plan[str(number)]`` lists its grid controls,
    each ``"name"`` (``points`` values) or ``"name:n"`` (at most ``n`` values: a control whose every value is a
    separate training run, kept to what the panel's point needs).

    Progress goes to ``<out_dir>/progress.json`` (``{"done", "total", "panel"}``) for the exporter's bar.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for panel in panels():
        if panel.live is None:
            raise RuntimeError(f"panel {panel.number} has no figure (its first computation failed)")
        entries = plan.get(str(panel.number), _default_controls(panel))      # "name" or "name:points"
        counts = {e.split(":")[0]: min(int(e.split(":")[1]), points) if ":" in e else points for e in entries}
        if isinstance(panel, ScrubPanel):
            counts.pop(panel.scrub.name, None)                  # its family: a dimension already
        controls = list(counts)
        unknown = [c for c in controls if c not in panel.controls]
        if unknown:        # a notebook whose panels moved: the plan names another panel's controls
            raise ValueError(f"export PLAN: panel {panel.number} ({_title(panel)!r}) has no control {unknown}; "
                             f"it has {sorted(panel.controls)}")
        n = math.prod(len(control_grid(panel.controls[c], counts[c])[0]) for c in controls)
        todo.append((panel, controls, counts, n))
    total, done = sum(n for *_, n in todo), [0]
    timings = {}

    def tick(name):
        done[0] += 1
        (out / "progress.json").write_text(json.dumps({"done": done[0], "total": total, "panel": name}))

    for panel, controls, counts, _ in todo:
        start = time.perf_counter()
        spec = panel_grid(panel, controls, counts, progress=lambda: tick(f"panel {panel.number}"))
        timings[panel.number] = round(time.perf_counter() - start, 2)
        spec["seconds"] = timings[panel.number]
        (out / f"{panel.model_id}.json").write_text(json.dumps(spec, separators=(",", ":"), allow_nan=False))
    return timings


def _default_controls(panel) -> list[str]:
    """Without a plan: a ScrubPanel scrubs only its family, any other panel its first control."""
    if isinstance(panel, ScrubPanel):
        return []
    return list(panel.controls)[:1]
