"""Pure figure builders: data in, ``plotly.graph_objects.Figure`` out.

Nothing here holds state or talks to widgets, so every function can be called
in a test, in a notebook cell or inside a :class:`~lecture_lib.viz.panels.LivePanel`
update. The house style:

- one colour-blind-safe palette (Okabe & Ito 2008, "Color Universal Design"),
  yellow last because it is hard to read on white;
- large sans-serif fonts (the dashboards are projected in lecture halls);
- axis titles carry the lecture's notation and units, e.g. ``"step k"``,
  ``"‖w‖² (squared weight norm)"``;
- a run that diverged is drawn up to its last finite value and ends in a cross,
  with "diverged at step k" in its legend entry: NaN is never handed to plotly.

To keep panels fast, a figure is built once; afterwards only trace data
changes, trace by trace name (:func:`copy_trace_data`).
"""
from __future__ import annotations

import ast
import copy
import functools
import inspect
import textwrap
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.basedatatypes import BasePlotlyType

# Okabe-Ito: blue, vermillion, bluish green, reddish purple, orange, sky blue, black, yellow.
PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7",
                            "#E69F00", "#56B4E9", "#000000", "#F0E442")
FONT_FAMILY = "Inter, 'Source Sans 3', 'Segoe UI', system-ui, -apple-system, Helvetica, Arial, sans-serif"
FONT_SIZE = 15
HEIGHT = 400
# The house margins hold what plotly's automargin would otherwise make room for on the first draw: y tick labels
# as powers of ten and the axis title (l), a one-row legend above the plot (t), the x tick labels and title (b).
# A margin that grows makes plotly plot the figure a second time (Plots.doAutoMargin): measured on every
# dashboard at classroom settings, 46 of 47 figures grew from (70, 24, 36, 60) on their first draw, most of them
# to (87, 24, 50, 63), and the first plot's draw took 138-257 ms; with these margins (and ``legend_rows`` where a
# builder's legend wraps) 2 of 47 grow (neither is a page's first) and the first draw takes 100-173 ms. A figure
# that needs more still gets it.
MARGIN = dict(l=96, r=32, t=52, b=66)
TITLE_HEIGHT = 28               # a figure title above the legend
LEGEND_ROW = 28                 # each further row of a legend whose entries do not fit one row
REFERENCE_COLOR = "#555555"  # dashed theory / prediction lines
# plotly's default ("hide past div") measures every tick label again after each redraw, forcing the
# page's layout once per label: ~15 ms of a 2-figure redraw (docs/performance.md). Our margins keep
# labels inside the figure, so there is nothing to hide.
TICKLABELOVERFLOW = "allow"

# Trace attributes that hold data (copied on update); style attributes stay as built. ``mode`` follows the data:
# a trace of one point is drawn with markers (show_lone_points).
DATA_KEYS = ("x", "y", "z", "text", "customdata", "name", "visible", "mode",
             "marker.size", "marker.symbol", "marker.color")
LONE_POINT_SIZE = 7             # px: the marker of a line trace that has one point so far


def color(i: int) -> str:
    """The ``i``-th palette colour (wraps around)."""
    return PALETTE[i % len(PALETTE)]


def log_axis(title: str, **kwargs) -> dict:
    """Layout dict for a logarithmic axis with tick labels as powers of ten (``10⁻³``)."""
    return dict(title=dict(text=title), type="log", exponentformat="power",
                showexponent="all", ticklabeloverflow=TICKLABELOVERFLOW, **kwargs)


#: Labelled mantissas per decade for a log axis that spans few decades, densest first. plotly labels such an axis at
#: linear steps (0.02, 0.025, 0.03, ... crowded at the top) or with every digit 2..9 in small type.
LOG_LADDERS = ((1, 1.5, 2, 3, 5, 7), (1, 2, 5), (1, 3))
MAX_LOG_LABELS = 7              # labels a ladder may put on the data's span (a plot ~300 px tall)
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_label(value: float, power: bool | None = None) -> str:
    """``value`` (> 0) as a log axis labels it: plainly (``0.015``, ``2``, ``3000``) or as a power of ten
    (``1.5×10⁻⁴``, ``10⁵``). ``power=None``: powers outside ``[0.001, 10⁵)``; one axis should use one style
    (:func:`tick_labels`)."""
    exp = int(np.floor(np.log10(value) + 1e-9))
    if not (power if power is not None else not -3 <= exp <= 4):
        return np.format_float_positional(float(f"{value:.3g}"), trim="-")
    mantissa = float(f"{value / 10.0 ** exp:.3g}")
    text = "10" + str(exp).translate(_SUPERSCRIPT)
    return text if mantissa == 1 else f"{mantissa:g}×{text}"


def tick_labels(values, low: float | None = None, high: float | None = None) -> list[str]:
    """:func:`tick_label` of each value in one style: powers of ten if any value in ``[low, high]`` (default: all
    of them) needs one."""
    values = [float(v) for v in values]
    shown = [v for v in values if (low is None or v >= low * (1 - 1e-9)) and (high is None or v <= high * (1 + 1e-9))]
    power = any(not 1e-3 <= v < 1e5 for v in shown or values)
    return [tick_label(v, power) for v in values]


def log_ticks(low: float, high: float) -> dict | None:
    """``tickvals`` and ``ticktext`` for a log axis whose data span ``[low, high]`` (``0 < low <= high``): the
    densest of :data:`LOG_LADDERS` that puts at most :data:`MAX_LOG_LABELS` labels on the span. ``None`` (leave
    plotly's ticks) when the sparsest puts more (about 3.5 decades and up: plotly's powers of ten read well) or the
    densest fewer than 2 (a span under ×1.5: plotly's linear steps read well).

    The values run a decade past the span on both sides (plotly draws those inside the axis range only), so the
    ticks stay the same while streamed data grow inside those decades: a partial redraw changes no layout.
    """
    if not (0 < low <= high < np.inf):
        return None
    lo, hi = int(np.floor(np.log10(low))), int(np.ceil(np.log10(high)))
    for i, ladder in enumerate(LOG_LADDERS):
        values = [m * 10.0 ** e for e in range(lo - 1, hi + 2) for m in ladder]
        inside = sum(low <= v * (1 + 1e-9) and v <= high * (1 + 1e-9) for v in values)
        if inside <= MAX_LOG_LABELS:
            if i == 0 and inside < 2:
                return None
            values = [float(f"{v:.12g}") for v in values]
            return dict(tickvals=values, ticktext=tick_labels(values, low, high))
    return None


def ladder_ticks(ladder: Sequence[float] = (1, 2, 5), decades: tuple[int, int] = (-6, 4)) -> dict:
    """``tickvals``/``ticktext`` at ``ladder`` × 10^k for every k in ``decades`` (plotly draws those inside the axis
    range): round labels for a log axis whose range the data do not tell a builder, e.g. a scrubbed family's, which
    the page fixes to the whole family's extent (:mod:`~lecture_lib.viz.scrub`). The same for every result, so
    scrubbing and streaming change no layout. Labels are plain in ``[0.001, 10⁵)``, powers of ten beyond."""
    values = [float(f"{m * 10.0 ** e:.12g}") for e in range(decades[0], decades[1] + 1) for m in ladder]
    return dict(tickvals=values, ticktext=[tick_label(v) for v in values])


def log_spans(fig: go.Figure) -> dict[str, tuple[float, float]]:
    """``{axis name: (lowest, highest)}`` of the finite positive values the visible traces of ``fig`` plot on each
    axis (``"xaxis"``, ``"yaxis2"``, ...); axes without such values are left out."""
    spans: dict[str, list[float]] = {}
    for trace in fig.data:
        if _prop(trace, "visible") is False:
            continue
        for letter in "xy":
            values = _prop(trace, letter)
            if values is None:
                continue
            ref = _prop(trace, f"{letter}axis") or letter
            try:
                v = np.asarray(values, dtype=float)       # None -> NaN
            except (TypeError, ValueError):               # names on a category axis
                continue
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                span = spans.setdefault(f"{letter}axis{ref[1:]}", [np.inf, 0.0])
                span[0], span[1] = min(span[0], float(v.min())), max(span[1], float(v.max()))
    return {name: (lo, hi) for name, (lo, hi) in spans.items()}


def tidy_log_axes(fig: go.Figure, axes: Sequence[str] | None = None) -> go.Figure:
    """Give each log axis of ``fig`` (or of ``axes``, e.g. ``["yaxis2"]``) the :func:`log_ticks` of the finite
    positive values its visible traces plot, in place, and return ``fig``. Axes with ``tickvals`` of their own
    and axes without data are left as they are."""
    spans = log_spans(fig)
    for name in axes if axes is not None else sorted(spans):
        axis = fig.layout[name]
        if axis.type != "log" or axis.tickvals is not None or name not in spans:
            continue
        ticks = log_ticks(*spans[name])
        if ticks is not None:
            axis.update(ticks)
    return fig


def unify_log_ticks(figs: Sequence[go.Figure]) -> None:
    """One figure as drawn at several positions of a family (``figs``, in place): a log axis that plotly autoranges
    and whose ticks differ between positions gets, at every position, the :func:`log_ticks` of the whole family's
    span (plotly's own ticks where those are ``None``). For a page that fixes such axes to the family's extent
    (:func:`lecture_lib.viz.scrub` ``fixRanges``): the labels then fit the range shown and stay put while scrubbing,
    instead of changing style from one position to the next, each a relayout of the figure."""
    spans = [log_spans(f) for f in figs]
    for name in sorted(set().union(*spans)):
        axes = [_layout_axis(f, name) for f in figs]
        if any(a is None or a.type != "log" or a.range is not None for a in axes):
            continue
        if len({_ticks_of(a) for a in axes}) < 2:
            continue
        low = min(s[name][0] for s in spans if name in s)
        high = max(s[name][1] for s in spans if name in s)
        ticks = log_ticks(low, high) or dict(tickvals=None, ticktext=None)
        for a in axes:
            a.update(ticks)


def _ticks_of(axis) -> tuple:
    """An axis's ``(tickvals, ticktext)`` as comparable tuples (plotly may hold them as numpy arrays)."""
    return tuple(None if v is None else tuple(np.ravel(v)) for v in (axis.tickvals, axis.ticktext))


def _layout_axis(fig: go.Figure, name: str):
    """``fig.layout[name]`` (e.g. ``"yaxis2"``), ``None`` where the layout has no such axis."""
    try:
        return fig.layout[name]
    except KeyError:                                  # plotly's PlotlyKeyError: a subplot the layout lacks
        return None


def linear_axis(title: str, **kwargs) -> dict:
    """Layout dict for a linear axis."""
    return dict(title=dict(text=title), type="linear", ticklabeloverflow=TICKLABELOVERFLOW, **kwargs)


def base_layout(title: str | None = None, x_title: str = "step k", y_title: str = "",
                log_x: bool = False, log_y: bool = False, height: int = HEIGHT,
                legend_title: str | None = None, legend_rows: int = 1) -> go.Layout:
    """The house layout: white background, large fonts, palette, legend above the plot.

    ``uirevision`` is fixed so that a user's zoom survives trace updates. ``legend_rows``: the rows the legend
    takes at a panel's width (its top margin; see :data:`MARGIN`).
    """
    axis = log_axis if log_x else linear_axis
    yaxis = log_axis if log_y else linear_axis
    return go.Layout(
        template="plotly_white",
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=FONT_SIZE + 3)) if title else None,
        font=dict(family=FONT_FAMILY, size=FONT_SIZE, color="#222222"),
        colorway=list(PALETTE),
        height=height,
        margin=dict(MARGIN, t=MARGIN["t"] + (TITLE_HEIGHT if title else 0) + LEGEND_ROW * (legend_rows - 1)),
        xaxis=axis(x_title, showline=True, linecolor="#888", mirror=False, zeroline=False),
        yaxis=yaxis(y_title, showline=True, linecolor="#888", mirror=False, zeroline=False),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0.0,
                    title=dict(text=legend_title) if legend_title else None,
                    font=dict(size=FONT_SIZE - 1)),
        hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT_FAMILY, size=FONT_SIZE - 1)),
        uirevision="lecture",
    )


@functools.lru_cache(maxsize=64)
def _base_layout_json(**kwargs) -> dict:
    return base_layout(**kwargs).to_plotly_json()


def figure(traces: Sequence[go.BaseTraceType] = (), **layout_kwargs) -> go.Figure:
    """A figure holding ``traces`` with :func:`base_layout` (keyword arguments go to it).

    The house layout is validated once per set of arguments, not per figure: a scrubbed family builds
    one figure per position and a streaming panel one per partial result, and validating the layout's
    template costs ~20 ms a figure, far more than the traces (validated as they were built). plotly
    copies the layout it is given, so the cached one never changes.
    """
    return go.Figure(data=list(traces), layout=_base_layout_json(**layout_kwargs), _validate=False)


def rgba(hex_color: str, alpha: float) -> str:
    """A palette colour with transparency, for bands and faded runs."""
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


@functools.lru_cache(maxsize=16)
def _style_json(height: int, legend_rows: int = 1) -> dict:
    base = _base_layout_json(height=height, legend_rows=legend_rows)
    return {key: base[key] for key in ("template", "font", "colorway", "height", "margin", "legend", "hovermode",
                                       "hoverlabel", "uirevision")}


def style(fig: go.Figure, height: int = HEIGHT, legend_rows: int = 1, **layout) -> go.Figure:
    """Apply the house layout (fonts, palette, legend on top) to a figure built with subplots.
    ``legend_rows``: as in :func:`base_layout`.

    The house layout's parts come validated from :func:`_base_layout_json` (cached) and are set without
    validating them again (the template alone cost ~20 ms a call); ``layout`` is validated as usual.
    """
    fig._layout_obj._validate = False          # as plotly does when it sets its default template
    try:
        for key, value in _style_json(height, legend_rows).items():
            fig.layout[key] = copy.deepcopy(value)
    finally:
        fig._layout_obj._validate = fig._validate
    if layout:
        fig.update_layout(**layout)
    fig.update_xaxes(showline=True, linecolor="#888", zeroline=False, ticklabeloverflow=TICKLABELOVERFLOW)
    fig.update_yaxes(showline=True, linecolor="#888", zeroline=False, ticklabeloverflow=TICKLABELOVERFLOW)
    return fig


def _without_docstring(source: str) -> str:
    """A function's source with its docstring removed (the code reads shorter; the docs are one ``help()`` away)."""
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body if tree.body and hasattr(tree.body[0], "body") else []
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        lines = source.splitlines()
        start, end = body[0].lineno - 1, body[0].end_lineno
        return "\n".join(lines[:start] + lines[end:])
    return source


def source_block(*functions, docstrings: bool = False) -> "IPython.display.Markdown":  # noqa: F821
    """The source code of library functions as a highlighted Markdown code block (for the notebook)."""
    from IPython.display import Markdown
    sources = [inspect.getsource(f).rstrip() for f in functions]
    if not docstrings:
        sources = [_without_docstring(src) for src in sources]
    return Markdown("```python\n" + "\n\n".join(sources) + "\n```")


def _array_of(record, values) -> np.ndarray:
    if isinstance(values, str):
        values = getattr(record, values)
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"values must have shape (K, R) (recorded steps x runs), got {arr.shape}")
    return arr


def finite_prefix(y: np.ndarray) -> int:
    """Length of the longest prefix of ``y`` whose entries are all finite."""
    bad = ~np.isfinite(np.asarray(y, dtype=float))
    return int(np.argmax(bad)) if bad.any() else len(bad)


def span_steps(fig: go.Figure, source, **where) -> go.Figure:
    """Fix ``fig``'s x axes (steps) to the whole training and return it.

    ``source``: a Record (its ``config['steps']``, which a streamed partial Record holds too:
    :func:`lecture_lib.engine.train`), a list or dict of Records trained as long (the first counts), the number of
    steps itself, or ``None`` (nothing is fixed). A linear axis spans ``[0, steps]``; a log axis,
    on which step k is drawn at k + 1, spans 1 to ``steps``. From the first partial result on, the curves then grow
    across an axis that stays still, and the page redraws their traces without relaying that axis out. ``where``
    (``row=``, ``col=``) picks the subplots whose x axis counts steps.
    """
    if isinstance(source, dict):
        source = next(iter(source.values()), None)
    elif isinstance(source, (list, tuple)):
        source = source[0] if source else None
    steps = int(source) if isinstance(source, (int, np.integer)) else (getattr(source, "config", None) or {}).get("steps")
    if steps:
        fig.for_each_xaxis(lambda ax: ax.update(range=[0, float(np.log10(steps))] if ax.type == "log"
                                                else [0, steps]), **where)
    return fig


def line_traces(record, values, labels: Sequence[str], x=None, colors: Sequence[str] | None = None,
                dash: str | None = None, width: float = 2.5, showlegend: bool = True,
                legendgroup: str | None = None) -> list[go.Scatter]:
    """One line per run, each truncated where its run diverged.

    Args:
        record: a :class:`lecture_lib.record.Record` (anything with ``steps``,
            ``diverged_at`` and ``divergence_note(r)`` works).
        values: a ``(K, R)`` array of per-step values, or the name of a
            ``(K, R)`` field of the record (``"loss"``, ``"accuracy"``).
        labels: legend entry of each run (``R`` strings), e.g. ``"α = 0.1"``.
        x: the ``(K,)`` x-values; default ``record.steps``.

    A diverged run is drawn up to its last finite value, ends in a cross
    marker, and its legend entry reads ``"<label> (diverged at step k)"``.
    Always returns exactly ``R`` traces, so a panel can update them in place. Runs not trained yet (a streamed
    partial): ``record=None``, ``values`` of shape ``(0, R)`` and ``x=[]`` give their traces, empty.
    """
    arr = _array_of(record, values)
    x = np.asarray(record.steps if x is None else x, dtype=float)
    if len(labels) != arr.shape[1]:
        raise ValueError(f"labels must name every run: got {len(labels)} labels for {arr.shape[1]} runs")
    if len(x) != arr.shape[0]:
        raise ValueError(f"x has {len(x)} entries but values have {arr.shape[0]} rows")
    traces = []
    for r, label in enumerate(labels):
        y = arr[:, r]
        n = finite_prefix(y)
        note = record.divergence_note(r) if hasattr(record, "divergence_note") else None
        if note is None and n < len(y):
            note = f"diverged at step {int(x[n])}" if n < len(x) else "diverged"
        sizes = np.zeros(n)
        if note is not None and n > 0:
            sizes[-1] = 13.0
        c = (colors[r] if colors is not None else color(r))
        traces.append(go.Scatter(
            x=x[:n], y=y[:n], mode="lines+markers",
            name=f"{label} ({note})" if note else str(label),
            line=dict(color=c, width=width, dash=dash),
            marker=dict(size=sizes, symbol="x", color=c, line=dict(width=0)),
            showlegend=showlegend, legendgroup=legendgroup,
            hovertemplate=f"{label}<br>%{{x:.4g}}, %{{y:.4g}}<extra></extra>",
        ))
    return traces


def reference_line(x, y, name: str, dash: str = "dash", color_: str = REFERENCE_COLOR,
                   width: float = 2.0) -> go.Scatter:
    """A theory curve or prediction (dashed grey by default); non-finite points are dropped."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return go.Scatter(x=x[keep], y=y[keep], mode="lines", name=name,
                      line=dict(color=color_, width=width, dash=dash),
                      hovertemplate=f"{name}<br>%{{x:.4g}}, %{{y:.4g}}<extra></extra>")


CONTOUR_COLOR = "#c3ccd6"


def quadratic_contours(hessian, center, levels: Sequence[float], name: str = "contours of J",
                       points: int = 97, **trace) -> go.Scatter:
    r"""The level sets :math:`\tfrac12 (w - c)^\top H (w - c) = \ell` of a 2-D quadratic as one line trace,
    one ellipse per level, separated by gaps (``None``).

    Drawn instead of a ``go.Contour`` of the same function: the browser then runs no marching squares on
    every redraw of the figure, and the trace's data stay equal between results of the same quadratic,
    so a panel's update does not send them again. ``hessian`` is symmetric positive definite (2, 2).
    """
    values, vectors = np.linalg.eigh(np.asarray(hessian, dtype=float))
    t = np.linspace(0.0, 2 * np.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)])                        # (2, points)
    x, y = [], []
    for level in levels:
        w = np.asarray(center, dtype=float)[:, None] + vectors @ (np.sqrt(2 * level / values)[:, None] * circle)
        x += w[0].tolist() + [None]
        y += w[1].tolist() + [None]
    style = dict(mode="lines", line=dict(color=CONTOUR_COLOR, width=1), hoverinfo="skip", showlegend=False)
    return go.Scatter(x=x[:-1], y=y[:-1], name=name, **(style | trace))


PROJECTOR_FONT_SIZE = 18


def restyle_for_projector(fig, width: int, height: int) -> None:
    """Restyle ``fig`` in place for a projector: its size, larger black text, darker axes and grid,
    lines half again as thick (at least 3 px). Only style changes: trace data stay as they are,
    so :func:`copy_trace_data` keeps working on the figure afterwards."""
    if width < 200 or height < 150:
        raise ValueError(f"width and height must be at least 200 x 150 pixels, got {width} x {height}")
    size = PROJECTOR_FONT_SIZE
    fig.update_layout(width=width, height=height, autosize=False,
                      font=dict(size=size, color="#000000"), legend=dict(font=dict(size=size - 1)),
                      hoverlabel=dict(font=dict(size=size - 1)),
                      margin=dict(l=78, r=20, t=fig.layout.margin.t or 40, b=64))
    axis_style = dict(linecolor="#000000", linewidth=1.5, gridcolor="#cfcfcf",
                      tickfont=dict(color="#000000", size=size - 1), title=dict(font=dict(size=size)))
    fig.update_xaxes(**axis_style)
    fig.update_yaxes(**axis_style)
    fig.update_annotations(font=dict(size=size - 1, color="#000000"))
    if fig.layout.title.text:
        fig.update_layout(title=dict(font=dict(size=size + 2)))
    for trace in fig.data:
        line = getattr(trace, "line", None)
        if line is not None and "width" in line and trace.type in ("scatter", "scattergl"):
            line.width = max(3.0, 1.5 * (line.width or 2.0))


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def _prop(trace, dotted: str):
    """``trace``'s value at ``dotted`` as stored (already validated), ``None`` if unset. Reads plotly's
    plain property dict: ``trace["marker"]["size"]`` builds and validates child objects on every read,
    half of a cached redraw's time in the kernel (docs/performance.md)."""
    value = trace._props
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _trace_keys(traces) -> list[tuple]:
    """Each trace's identity: its type, its name, and how many traces of that type and name came before it."""
    seen: dict[tuple, int] = {}
    keys = []
    for t in traces:
        base = (t.type, t.name)
        keys.append(base + (seen.get(base, 0),))
        seen[base] = seen.get(base, 0) + 1
    return keys


def match_traces(target, source) -> tuple[list[tuple], list, list]:
    """Pair ``target``'s traces with ``source``'s: ``(pairs, unmatched_target, unmatched_source)``.

    A trace is known by its type and ``name`` (the k-th of several traces with the same name
    pairs with the k-th). Traces left over on both sides are then paired in order when their
    types agree: a run whose legend entry became ``"α = 3 (diverged at step 12)"`` is still
    the same trace.
    """
    by_key = dict(zip(_trace_keys(target), target))
    pairs, unmatched_source = [], []
    for key, s in zip(_trace_keys(source), source):
        t = by_key.pop(key, None)
        if t is None:
            unmatched_source.append(s)
        else:
            pairs.append((t, s))
    unmatched_target = list(by_key.values())
    still_unmatched = []
    for s in unmatched_source:
        i = next((i for i, t in enumerate(unmatched_target) if t.type == s.type), None)
        if i is None:
            still_unmatched.append(s)
        else:
            pairs.append((unmatched_target.pop(i), s))
    unmatched_source = still_unmatched
    return pairs, unmatched_target, unmatched_source


def copy_trace_data(target, source: go.Figure, layout_keys: Sequence[str] = ()) -> None:
    """Make ``target`` show the data of ``source``, matching traces by name (:func:`match_traces`).

    ``target`` is usually a panel's ``FigureWidget`` and ``source`` the figure a pure
    builder returned for the new result. For each matched pair only data attributes
    (:data:`DATA_KEYS`, the drawing mode among them) are copied, so styling, a user's zoom and a legend entry the user
    switched off stay put; a trace of ``target`` that ``source`` no longer has is hidden
    (kept, so that it can come back), and a trace only ``source`` has is added. The named
    layout keys (e.g. ``("annotations", "xaxis.range")``) are copied too.

    Inside ``target.batch_update()`` (a panel's redraw) the changed values go straight into plotly's batch, which
    sends them in one message on leaving it: they come from ``source``'s traces, validated when it was built, and
    validating them again trace by trace took ~1 ms a trace (12 of a 25 ms partial redraw of 06's damping panel).
    """
    pairs, gone, new = match_traces(target.data, source.data)
    batch = target._batch_trace_edits if getattr(target, "_in_batch_mode", False) else None
    for t, s in pairs:
        patch = {}
        for key in DATA_KEYS:
            value = _prop(s, key)
            if value is not None and (batch is None or not BasePlotlyType._vals_equal(_prop(t, key), value)):
                patch[key] = value
        if t.visible is False and s.visible is None:
            patch["visible"] = True          # hidden by an earlier update: back on screen
        if batch is None:
            t.update({key.replace(".", "_"): value for key, value in patch.items()})
        elif patch:
            batch.setdefault(t._trace_ind, {}).update(patch)
    for t in gone:
        t.visible = False
    if new:
        target.add_traces(new)
    for key in layout_keys:
        target.update_layout({key.replace(".", "_"): _get(source.layout, key)})


# -- points per trace: no more than the pixels they occupy ---------------------------------------

THIN_BUCKETS = 500          # a panel's figure is at most ~1000 px wide: two points (min, max) per bucket
_PER_POINT_KEYS = ("text", "customdata", "marker.size", "marker.color", "marker.symbol")


def minmax_indices(y: np.ndarray, buckets: int = THIN_BUCKETS) -> np.ndarray:
    """Indices of ``y`` keeping, in each of ``buckets`` equal runs of points, its minimum and its maximum
    (in their order), plus the first and last point: a line drawn through them covers the same pixels.

    ``y`` must be finite; returns ``arange(len(y))`` when it has no more than ``2 * buckets`` points.
    """
    n = len(y)
    if n <= 2 * buckets:
        return np.arange(n)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    width = int(np.max(np.diff(edges)))
    starts = edges[:-1]
    # pad each bucket to the same width with its own first value, then argmin/argmax per row
    cols = np.minimum(starts[:, None] + np.arange(width)[None, :], edges[1:, None] - 1)
    rows = y[cols]
    lo = cols[np.arange(buckets), np.argmin(rows, axis=1)]
    hi = cols[np.arange(buckets), np.argmax(rows, axis=1)]
    return np.unique(np.concatenate(([0, n - 1], lo, hi)))


def _linear_x(fig: go.Figure, trace) -> bool:
    axis = "xaxis" + (trace.xaxis or "x")[1:]
    return getattr(fig.layout[axis], "type", None) != "log"


def show_lone_points(fig: go.Figure) -> go.Figure:
    """Draw ``fig``'s one-point line traces as a point, in place, and return it.

    plotly draws a line through one point as nothing, so a run streamed with one row so far (or one test-set
    evaluation) would stay invisible until its second. Such a scatter trace gets markers (``mode``, copied as data
    by :func:`copy_trace_data`) of at least :data:`LONE_POINT_SIZE` px. A panel whose first partial result is one
    row should draw it with markers all along, sized per point (``marker.size``, e.g. 06's damping panel): then
    the page redraws it without plotly's full update, which a change of mode needs.
    """
    for trace in fig.data:                            # _prop: read as stored, as every prepared figure passes here
        x = _prop(trace, "x")
        if trace.type != "scatter" or x is None or len(x) != 1 or _prop(trace, "visible") is False:
            continue
        mode = _prop(trace, "mode") or "lines+markers"  # plotly's default for fewer than 20 points
        if mode == "none":
            continue
        patch = {} if "markers" in mode else {"mode": mode + "+markers"}
        size = _prop(trace, "marker.size")
        if size is not None and np.all(np.asarray(size) < LONE_POINT_SIZE):
            patch["marker_size"] = [LONE_POINT_SIZE] if np.ndim(size) else LONE_POINT_SIZE
        if patch:
            trace.update(patch)
    return fig


def legend_entries(fig) -> set[str]:
    """The names plotly.js lists in ``fig``'s legend: shown traces that hold at least one point (plotly.js makes a
    trace without points invisible, legend entry included)."""
    names = set()
    for trace in fig.data:
        x, y = _prop(trace, "x"), _prop(trace, "y")
        points = x if x is not None else y if y is not None else ()
        if _prop(trace, "visible") is not False and _prop(trace, "showlegend") is not False and len(points):
            names.add(trace.name)
    return names


def hold_legend_entries(fig: go.Figure, names) -> go.Figure:
    """Give each empty scatter trace of ``fig`` named in ``names`` one missing point (``x = y = [None]``), in
    place, and return it: it draws nothing and keeps its legend entry.

    A streamed partial holds the entries of the result on screen (:meth:`LiveFigures.built`): without them the
    legend listed only the runs started so far and grew, moving the plots down, when the last ones began or the
    final result came.
    """
    for trace in fig.data:
        if trace.type != "scatter" or trace.name not in names or _prop(trace, "visible") is False \
                or _prop(trace, "showlegend") is False:
            continue
        x, y = _prop(trace, "x"), _prop(trace, "y")
        if (x is None or len(x) == 0) and (y is None or len(y) == 0):
            trace.update(x=[None], y=[None])
    return fig


def thin_traces(fig: go.Figure, buckets: int = THIN_BUCKETS) -> go.Figure:
    """Thin ``fig``'s long line traces in place to :func:`minmax_indices` (extremes kept) and return it.

    Only ``scatter`` traces drawn as lines with finite, increasing ``x`` on a linear x axis are thinned
    (markers-only traces and log-x plots are left alone); per-point attributes (``marker.size``, ``text``,
    ...) follow the kept points. A plot 1000 px wide shows no more than it did; the browser gets ~1000
    points per trace instead of 5000.
    """
    for trace in fig.data:
        if trace.type != "scatter" or "lines" not in (trace.mode or "lines") or trace.x is None or trace.y is None:
            continue
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        if len(y) <= 2 * buckets or x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu" or len(x) != len(y):
            continue
        if not (np.all(np.isfinite(y)) and np.all(np.diff(x) >= 0) and _linear_x(fig, trace)):
            continue
        keep = minmax_indices(y, buckets)
        patch = {"x": x[keep], "y": y[keep]}
        for key in _PER_POINT_KEYS:
            value = _get(trace, key)
            if value is not None and not isinstance(value, str) and np.ndim(value) == 1 and len(value) == len(y):
                patch[key.replace(".", "_")] = np.asarray(value)[keep]
        trace.update(patch)
    return fig
