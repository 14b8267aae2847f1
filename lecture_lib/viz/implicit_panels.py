"""Figures and live panels of notebook 04, "Implicit learning-rate decay from normalization".

Each section of the notebook calls one ``*_panel()`` function. Every panel has three layers:

* **compute**: one call of an experiment of :mod:`lecture_lib.experiments.implicit_decay`
  (real PyTorch training) returning a small result dataclass (cached by the panel);
* a **pure figure builder** ``result -> go.Figure`` drawing every trace, the same traces
  (each with its own name) for every result: a layer or remedy the result lacks gets an
  empty, hidden trace, so that updates only change trace data;
* the :class:`~lecture_lib.viz.panels.LivePanel` (``build=``) that wires the controls to both.

Step counts are chosen when a panel is built: ``fast=True`` (default: ``LECTURE_FAST=1``)
picks the small ones of :data:`STEPS`.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..experiments import implicit_decay as experiment
from ..experiments.implicit_decay import HIDDEN, OUTPUT, REMEDIES
from ..record import smooth
from . import fast_mode, figures, panels, scrub

LAYER_LABELS = {"w": "w (toy model)", HIDDEN[0]: "hidden layer 1 (BN)", HIDDEN[1]: "hidden layer 2 (BN)",
                OUTPUT: "output layer (no BN)"}
LAYER_COLORS = {"w": figures.color(0), HIDDEN[0]: figures.color(0), HIDDEN[1]: figures.color(1),
                OUTPUT: figures.color(2)}
MODELS = {"toy model c·xᵀw/‖w‖": "toy", "BN network (digits)": "bn"}

# step counts of each section: (the lecture's, fast mode's)
STEPS = {"growth": ({"toy": 3000, "bn": 600}, {"toy": 300, "bn": 80}), "collapse": (3000, 400),
         "output": (600, 80), "remedies": (400, 80), "optimizers": (150, 40)}


def _steps(section: str, fast: bool | None):
    return STEPS[section][fast_mode() if fast is None else fast]


# =========================================================================== figure helpers

def _figure(titles, axes, height: int = figures.HEIGHT, **subplots) -> go.Figure:
    """Subplots side by side in the house style; ``axes`` holds ``(x title, y title, log y)`` per subplot
    (x is always steps or the rescaling factor c, on a log axis). The legend sits above the subplot titles."""
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.12 if len(titles) == 2 else 0.07,
                        subplot_titles=titles, **subplots)
    for col, (x_title, y_title, log_y) in enumerate(axes, start=1):
        fig.update_xaxes(title_text=x_title, type="log", exponentformat="power", row=1, col=col)
        fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", exponentformat="power", row=1, col=col)
    return figures.style(fig, height=height, margin_t=120, legend_y=1.14)


def _line(x, y, name, color, dash=None, width=2.5, showlegend=True, group=None, pending=False) -> go.Scatter:
    """A line truncated at its first non-finite value (never NaN handed to plotly); hidden when empty, unless
    ``pending``: a run still to train in a streamed partial, shown empty so that the partial changes data alone
    (the page redraws it without plotly's full update)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = figures.finite_prefix(y)
    return go.Scatter(x=x[:n], y=y[:n], mode="lines", name=name, legendgroup=group or name, showlegend=showlegend,
                      visible=bool(n) or pending, line=dict(color=color, width=width, dash=dash),
                      hovertemplate=f"{html.escape(name)}<br>%{{x:.4g}}, %{{y:.4g}}<extra></extra>")


def _pair(fig, x, left, right, name, right_name, color, **line) -> None:
    """One quantity per subplot, left and right, toggled together by the left one's legend entry."""
    fig.add_trace(_line(x, left, name, color, **line), 1, 1)
    fig.add_trace(_line(x, right, f"{name} · {right_name}", color, showlegend=False, group=name, **line), 1, 2)


def _markers(x, y, name, color, size=7, symbol="circle", group=None) -> go.Scatter:
    return go.Scatter(x=x, y=y, mode="markers", name=name, legendgroup=group, showlegend=False, visible=len(x) > 0,
                      marker=dict(size=size, color=color, symbol=symbol))


def _steps_from_1(record) -> np.ndarray:
    return record.steps.astype(float) + 1.0  # log axes: plot step k at k + 1


EMPTY = np.array([])


# =========================================================================== 1. scale invariance

EULER_LAYERS = {"w": "w (toy model) · scale invariant", HIDDEN[0]: "hidden layer 1 (BN) · scale invariant",
                OUTPUT: "output layer (no BN) · not invariant"}


def euler_figure(result: experiment.EulerResult) -> go.Figure:
    fig = _figure(("cost J(c·w)", "gradient norm ‖∇J(c·w)‖"),
                  [("c (rescaling of w)", "J(c·w)", False), ("c (rescaling of w)", "‖∇J(c·w)‖", True)])
    for layer, label in EULER_LAYERS.items():
        check = result.checks.get(layer)
        factors, loss, grad = (check.factors, check.loss, check.grad_norm) if check else (EMPTY, EMPTY, EMPTY)
        at = [int(np.argmin(np.abs(factors - result.factor)))] if check else []
        color = LAYER_COLORS[layer]
        fig.add_trace(_line(factors, loss, label, color), 1, 1)
        fig.add_trace(_markers(factors, grad, f"{label} · ‖∇J‖", color, group=label), 1, 2)
        fig.add_trace(_markers(factors[at], loss[at], f"{label} · J at your c", color, 15, "diamond", label), 1, 1)
        fig.add_trace(_markers(factors[at], grad[at], f"{label} · ‖∇J‖ at your c", color, 15, "diamond", label), 1, 2)
    c0 = next(iter(result.checks.values()))
    i1 = int(np.argmin(np.abs(np.log(c0.factors))))
    fig.add_trace(figures.reference_line(c0.factors, c0.grad_norm[i1] / c0.factors, "Euler: ‖∇J(w)‖ / c"), 1, 2)
    return fig


def _euler_notes(result: experiment.EulerResult) -> str:
    rows = []
    for name, check in result.checks.items():
        r = check.at(result.factor)
        rows.append(f"<b>{html.escape(LAYER_LABELS[name])}</b> at c = {result.factor:.3g}: "
                    f"|J(c·w) − J(w)|/J(w) = {r['loss_change']:.1e}, "
                    f"‖c·∇J(c·w) − ∇J(w)‖/‖∇J(w)‖ = {r['euler_error']:.1e}, "
                    f"cos∠(w, ∇J) = {r['cosine']:.1e}"
                    + (f" (largest over units {r['unit_cosine']:.1e})" if name != "w" else ""))
    if result.model == "bn":
        rows.append("Batch norm divides by √(σ² + ε) with ε = 10⁻⁵, so its invariance is exact only while "
                    "the pre-activation variance dwarfs ε: watch the errors grow at small c.")
    return "<br>".join(rows)


def euler_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 1: J(c·w) = J(w), ∇J(c·w) = ∇J(w)/c and w ⊥ ∇J(w), on the toy model and a BN network."""
    return panels.LivePanel(
        compute=experiment.euler_check,
        controls={"model": panels.dropdown("model", MODELS, "bn"),
                  "factor": panels.log_slider("c (rescale the weights)", 1e-2, 1e2, 3.0)},
        build=euler_figure,
        notes=_euler_notes,
        title="Scale invariance and Euler's identities",
        caption=("Drag c across four decades. The hidden layer feeding batch norm leaves the cost flat and its "
                 "gradient falls exactly as 1/c (dashed); the output layer, which feeds no normalizer, does "
                 "neither. The notes print the three identities at your c, measured in float64."),
    )


# =========================================================================== 2. Pythagorean growth

def growth_figure(result: experiment.GrowthResult) -> go.Figure:
    fig = _figure(("squared norm ‖w_k‖²", "effective learning rate α / ‖w_k‖²"),
                  [("step k + 1", "‖w_k‖²", True), ("step k + 1", "α / ‖w_k‖²", True)])
    rec = result.record
    rows = _log_rows(len(rec.steps))
    k = _steps_from_1(rec)[rows]
    for n in ("w",) + HIDDEN:
        color, label = LAYER_COLORS[n], LAYER_LABELS[n]
        on = n in result.names
        measured = (rec.param_norm[n][rows, 0] ** 2, rec.effective_lr[n][rows, 0]) if on else (EMPTY, EMPTY)
        _pair(fig, k, *measured, label, "α/‖w‖²", color)
        ready = on and n in result.predicted  # a partial result (still training) has no prediction yet
        predicted = (result.predicted[n][rows], result.lr / result.predicted[n][rows]) if ready else (EMPTY, EMPTY)
        _pair(fig, k, *predicted, f"√ law predicted ({label})", "α/‖w‖²", color, dash="dash", width=2, pending=on)
    # the axes span the scrubbed family's range (‖w‖² 1-1100 on the toy and 20-4700 on the BN network, α/‖w‖²
    # 0.005-10, at full settings): on a linear axis the default α's ‖w‖² (1-29, 21-26) lay flat along the bottom;
    # log, with 1-3 labels (plotly labelled every digit 2..9, 1-2-5 put 11 labels), the √ law is a line of slope ½
    fig.update_yaxes(figures.ladder_ticks((1, 3)))
    return figures.span_steps(fig, rec)


def _growth_notes(result: experiment.GrowthResult) -> str:
    lines = []
    for n in result.names:
        ratio = result.ratio[n][np.isfinite(result.ratio[n])]
        low, high = (float(ratio.min()), float(ratio.max())) if ratio.size else (float("nan"),) * 2
        lines.append(f"<b>{html.escape(LAYER_LABELS[n])}</b>: G = {result.G[n]:.3g} from an independent run "
                     f"(other seed), so k₀ = {result.k0(n):.3g}; measured/predicted ‖w_K‖² = "
                     f"{result.end_ratio(n):.3f} at the last step, between {low:.3f} and {high:.3f} over the run; "
                     f"‖w‖ never shrank: {'yes' if result.monotone[n] else 'no'}; "
                     f"largest Pythagorean residual |‖w_(k+1)‖² − ‖w_k‖² − α²‖∇J‖²| / ‖w_(k+1)‖² = "
                     f"{result.residual[n]:.1e}")
    note = panels.divergence_notes(result.record, [f"α = {result.lr:.3g}"])
    return "<br>".join(lines + ([note] if note else []))


#: The α positions of the growth panel (1-2-3-5 per decade, 0.01 to 10), all trained together.
GROWTH_LRS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)


def growth_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Section 2: ‖w‖² only grows; the √(1 + k/k₀) law predicted from an independent run's G, α scrubbed."""
    steps = _steps("growth", fast)
    return scrub.ScrubPanel(
        compute=lambda model, lr, progress=None: experiment.growth_family(model, lr, steps=steps[model],
                                                                          progress=progress),
        controls={"model": panels.dropdown("model", MODELS, "toy")},
        scrub=scrub.Scrub("lr", GROWTH_LRS, "α (learning rate)", index=GROWTH_LRS.index(0.3)),
        build=growth_figure,
        notes=_growth_notes,
        title="Pythagorean growth of the weight norm",
        caption=("Plain SGD, no weight decay. The norm of every scale-invariant tensor only grows. The dashed "
                 "curve is a prediction, not a fit: ‖w₀‖²√(1 + k/k₀) with k₀ = ‖w₀‖⁴/(2α²G²) and G the "
                 "root-mean-square ‖∇J(ŵ)‖ of a second run with another seed (one per α). Early on the measured "
                 "norm runs above it, because ‖∇J(ŵ)‖ is largest while the direction is still being learned and "
                 "the law drops the α⁴ term of the recursion; the notes give the ratio. Raise α: k₀ shrinks and "
                 "the decay starts sooner. On the BN network ‖∇J(ŵ)‖ falls as the digits are learned, so the "
                 "measured curve bends away from the √ shape in between. Both axes are logarithmic: once k ≫ k₀ "
                 "the law is a straight line, of slope ½ on the left and −½ on the right."),
    )


# =========================================================================== 3. the α sweep collapses

BAND = figures.rgba(figures.REFERENCE_COLOR, 0.22)


def _log_rows(count: int, target: int = 400) -> np.ndarray:
    """About ``target`` row indices spread evenly on a log axis of steps 1..count (long runs stay light to scrub)."""
    return np.unique(np.geomspace(1, count, min(target, count)).round().astype(int)) - 1


def _band(x, values: np.ndarray, name: str, group: str) -> go.Scatter:
    """The region between the smallest and the largest finite value over runs (columns), as one filled outline."""
    finite = np.where(np.isfinite(values), values, np.nan)
    keep = np.isfinite(finite).any(axis=1)
    low, high = np.nanmin(finite[keep], axis=1), np.nanmax(finite[keep], axis=1)
    x = np.asarray(x, dtype=float)[keep]
    return go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([high, low[::-1]]), mode="lines",
                      fill="toself", fillcolor=BAND, line=dict(width=0, color=BAND), name=name, legendgroup=group,
                      showlegend=group == name, hoverinfo="skip")


def _rows_when_done(rec) -> int:
    """The rows ``rec`` holds once its training is done (a streamed partial holds fewer so far). A smoothing window
    set from it stays the same while a run streams, so the start of a smoothed curve does not change as it grows."""
    steps, every = rec.config.get("steps"), rec.config.get("record_every")
    return len(range(0, steps, every)) if steps and every else len(rec.steps)


def collapse_figure(position: experiment.CollapseAt) -> go.Figure:
    """The run of the chosen α (bold) inside the band of the whole sweep, and the α-free asymptote (dashed)."""
    fig = _figure(("effective learning rate α / ‖w_k‖²", "training loss (smoothed)"),
                  [("step k + 1", "α / ‖w_k‖²", True), ("step k + 1", "J (minibatch, smoothed)", False)])
    sweep, r = position.sweep, position.index
    rec = sweep.record
    rows = _log_rows(len(rec.steps))
    k = _steps_from_1(rec)[rows]
    loss = smooth(rec.loss, max(1, _rows_when_done(rec) // 60))[rows]
    eff = rec.effective_lr["w"][rows]
    everyone = f"all {len(sweep.lr)} α, trained together"
    fig.add_trace(_band(k, eff, everyone, everyone), 1, 1)
    fig.add_trace(_band(k, loss, f"{everyone} · loss", everyone), 1, 2)
    _pair(fig, k, eff[:, r], loss[:, r], "the α on the slider", "loss", figures.color(0), width=3)
    fig.add_trace(figures.reference_line(k, sweep.asymptote[rows], "predicted α-free asymptote 1/(G√(2k))"), 1, 1)
    return figures.span_steps(fig, rec)


def _collapse_notes(position: experiment.CollapseAt) -> str:
    sweep, r = position.sweep, position.index
    eff = position.effective_lr
    finite = eff[np.isfinite(eff)]
    end = f"{finite[-1]:.3g}" if finite.size else "—"
    note = position.sweep.record.divergence_note(r)
    return (f"<b>α = {position.lr:.3g}</b>: effective rate {eff[0]:.3g} at k = 0, {end} "
            f"after {len(sweep.record.steps)} steps, {sweep.ratio[r]:.2f}× the asymptote; it took "
            f"{sweep.k_over_k0[r]:.2g}× its own predicted k₀ = ‖w₀‖⁴/(2α²G²) steps."
            + (f" {note}." if note else "") + "<br>"
            f"All {len(sweep.lr)} α ({sweep.lr[0]:.3g} to {sweep.lr[-1]:.3g}): the effective rates span a factor "
            f"{sweep.spread_start:.3g} at k = 0 and {sweep.spread_end:.3g} at the end. "
            f"G = {sweep.G:.3g}, the root-mean-square ‖∇J(ŵ)‖ over the second half of an independent run "
            f"(another seed, α = {sweep.probe_lr:.3g}). The asymptote is the limit k ≫ k₀. A ratio well below 1 "
            "has one of two causes: the run is not yet far past its k₀ (small α, or a large ‖w₀‖), so ‖w₀‖ still "
            "counts; or α is so large that its first steps, taken at the larger gradient of the initial direction, "
            "inflated ‖w‖ beyond what the average G implies.")


def _positions(progress):
    """A ``progress`` that hands on a partial sweep as its positions (what the scrubbed panel draws)."""
    if progress is None:
        return None
    return lambda fraction, partial=None: progress(fraction, None if partial is None else partial.positions())


def collapse_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Section 3: thirteen learning rates over three decades, one batched run, scrubbed in the browser."""
    steps = _steps("collapse", fast)
    lrs = experiment.COLLAPSE_LRS
    return scrub.ScrubPanel(
        compute=lambda lr, init_norm, progress=None: experiment.collapse(
            lr, steps=steps, init_norm=init_norm, progress=_positions(progress)).positions(),
        controls={"init_norm": panels.log_slider("‖w₀‖ (initial weight norm)", 0.25, 4.0, 1.0)},
        scrub=scrub.Scrub("lr", lrs, "α (learning rate)", index=lrs.index(0.316)),
        build=collapse_figure,
        notes=_collapse_notes,
        title="The explicit learning rate hardly matters late in training",
        caption=("Thirteen learning rates a quarter decade apart, from 0.01 to 10, on the toy scale-invariant "
                 "model; the grey band spans all of them. Slide α: the effective rate starts a factor 1000 "
                 "apart and ends on the dashed α-free line 1/(G√(2k)), whose G comes from a separate run, not "
                 "from these thirteen. Raise ‖w₀‖: the small α need far longer to forget where they started."),
    )


# =========================================================================== 4. the output layer escapes

def output_figure(result: experiment.OutputLayerResult) -> go.Figure:
    fig = _figure(("learning rate each layer feels", "output layer relative to hidden layer 1"),
                  [("step k + 1", "α (output) or α/‖w‖² (BN layers)", True),
                   ("step k + 1", "ratio of learning rates", False)])
    k = _steps_from_1(result.record)
    for n in HIDDEN + (OUTPUT,):
        fig.add_trace(_line(k, result.rates[n][:, 0], LAYER_LABELS[n], LAYER_COLORS[n]), 1, 1)
    fig.add_trace(_line(k, result.ratio, "α / (α/‖w₁‖²) = ‖w₁‖²", figures.color(3)), 1, 2)
    return figures.span_steps(fig, result.record)


def _output_notes(result: experiment.OutputLayerResult) -> str:
    ratio = result.ratio[np.isfinite(result.ratio)]
    growth = ratio[-1] / ratio[0] if ratio.size else float("nan")
    note = panels.divergence_notes(result.record, [f"α = {result.lr:.3g}"])
    return (f"The output layer's rate relative to hidden layer 1 grew by a factor {growth:.3g} "
            f"over {len(result.record.steps)} steps." + (f"<br>{note}" if note else ""))


def output_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 4: the output layer is not scale invariant, keeps α, and trains relatively faster later."""
    steps = _steps("output", fast)
    return panels.LivePanel(
        compute=lambda lr, progress=None: experiment.output_layer(lr, steps=steps, progress=progress),
        controls={"lr": panels.log_slider("α (learning rate)", 0.03, 5.0, 1.0)},
        build=output_figure,
        notes=_output_notes,
        title="The output layer escapes",
        caption=("The BN layers' effective rates α/‖w‖² fall as their norms grow; the output layer, which feeds "
                 "no normalizer, keeps α. Raise α: the hidden rates fall sooner and the gap opens faster "
                 "(too large an α and the output layer itself diverges)."),
    )


# =========================================================================== 5. remedies

REMEDY_LABELS = {"none": "plain SGD", "weight_decay": "weight decay λ",
                 "exp_schedule": "exponential α schedule (Li & Arora)", "unit_norm": "project to ‖w‖ = 1"}


def remedies_figure(result: experiment.RemediesResult) -> go.Figure:
    fig = _figure(("effective learning rate of hidden layer 1", "training loss (smoothed)"),
                  [("step k + 1", "α_k / ‖w_k‖²", True), ("step k + 1", "J (minibatch, smoothed)", False)],
                  height=430)
    for i, (name, label) in enumerate(REMEDY_LABELS.items()):
        rec = result.runs.get(name)
        k, eff, loss = EMPTY, EMPTY, EMPTY
        if rec is not None:
            k = _steps_from_1(rec)
            eff, loss = rec.effective_lr[HIDDEN[0]][:, 0], smooth(rec.loss, max(1, _rows_when_done(rec) // 40))[:, 0]
        _pair(fig, k, eff, loss, label, "loss", figures.color(i), dash="dot" if name == "exp_schedule" else None,
              pending=name in result.chosen)
    return figures.span_steps(figures.tidy_log_axes(fig, ["yaxis"]), result.runs)   # the rates span ~×3


def _remedies_notes(result: experiment.RemediesResult) -> str:
    lines = []
    for name, rec in result.runs.items():
        eff = rec.effective_lr[HIDDEN[0]][:, 0]
        ok = eff[np.isfinite(eff)]
        text = f"{html.escape(REMEDY_LABELS[name])}: effective rate {ok[0]:.3g} → {ok[-1]:.3g}" if ok.size else ""
        if name == "unit_norm":
            text += f" (equals α to {float(np.nanmax(np.abs(eff / result.lr_unit - 1))):.0e})"
        note = rec.divergence_note(0)
        lines.append(text + (f" — {note}" if note else ""))
    return "<br>".join(lines)


def remedies_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 5: exponential schedule, weight decay and unit-norm projection, each a switch."""
    steps = _steps("remedies", fast)

    def compute(lr, weight_decay, exp_schedule, use_weight_decay, unit_norm, lr_unit, progress=None):
        chosen = [r for r, on in zip(REMEDIES, (True, use_weight_decay, exp_schedule, unit_norm)) if on]
        return experiment.remedies(lr, weight_decay, chosen, lr_unit, steps=steps, progress=progress)

    return panels.LivePanel(
        compute=compute,
        controls={"lr": panels.log_slider("α (learning rate)", 0.03, 3.0, 1.0),
                  "weight_decay": panels.log_slider("λ (weight decay)", 1e-4, 0.1, 5e-3),
                  "exp_schedule": panels.toggle("exponential α schedule", True),
                  "use_weight_decay": panels.toggle("weight decay", True),
                  "unit_norm": panels.toggle("project to unit norm", True),
                  "lr_unit": panels.log_slider("α of the projected run", 1e-3, 1.0, 0.03)},
        build=remedies_figure,
        notes=_remedies_notes,
        title="Three ways to undo the implicit decay",
        caption=("Each switch adds a run, the remedy acting on the batch-norm layers. Weight decay stops the fall "
                 "of α/‖w‖²; the exponential schedule α ϱ^−(2k+1) with ϱ = 1 − αλ reaches the same effective rate "
                 "(Li & Arora's equivalence: the dotted curve lands on the weight-decay one); projecting to unit "
                 "norm pins it to α itself, so that run gets its own α: try 1 and watch it stop learning."),
    )


# =========================================================================== 6. optimizers

OPT_LABELS = {"sgd": "SGD", "adam": "Adam", "kfac": "K-FAC"}
STARTS = ("start at w₀/c", "start at w₀", "start at c·w₀")


def optimizer_figure(result: experiment.OptimizersResult) -> go.Figure:
    fig = _figure([f"{OPT_LABELS[n]} (α = {result.lrs[n]:g})" for n in OPT_LABELS],
                  [("step k + 1", "angle turned per step (rad)", True), ("step k + 1", "", True),
                   ("step k + 1", "", True)], height=420, shared_yaxes=True)
    for col, n in enumerate(OPT_LABELS, start=1):
        rec = result.records.get(n)           # None: a partial result, this optimizer has not started yet
        k = _steps_from_1(rec) if rec is not None else EMPTY
        ang = smooth(rec.angular_step[HIDDEN[0]], max(1, _rows_when_done(rec) // 30)) if rec is not None else None
        for r, start in enumerate(STARTS):
            name = start if col == 1 else f"{start} · {OPT_LABELS[n]}"
            fig.add_trace(_line(k, ang[:, r] if ang is not None else EMPTY, name, figures.color(r),
                                showlegend=col == 1, group=start, pending=True), 1, col)
    return figures.span_steps(fig, result.records)


def _optimizer_notes(result: experiment.OptimizersResult) -> str:
    parts = []
    for n, rec in result.records.items():
        parts.append(f"{OPT_LABELS[n]}: early angular steps differ by a factor {result.early_spread(n):.3g}")
        notes = panels.divergence_notes(rec, [f"{OPT_LABELS[n]}, c = {c:.3g}" for c in result.scales])
        if notes:
            parts.append(notes)
    c = result.scales[-1]
    return ("<br>".join(parts) + f"<br>The starts differ in ‖w‖ by up to c² = {c * c:.3g}×. At the first step "
            f"theory predicts angular steps apart by c⁴ = {c ** 4:.3g}× for SGD (∝ 1/‖w‖²), c² = {c ** 2:.3g}× "
            "for Adam (∝ 1/‖w‖) and 1× for undamped K-FAC (damped: the start c·w₀ with γ acts like w₀ with "
            f"c²γ = {c * c * result.damping:.2g}); averaged over 20 steps the factors shrink because the "
            "small-norm start grows fastest.")


def optimizer_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 6: SGD, Adam and K-FAC from rescaled starting weights; only K-FAC does not care."""
    steps = _steps("optimizers", fast)
    return panels.LivePanel(
        compute=lambda damping, spread, progress=None: experiment.optimizers(damping, spread, steps=steps,
                                                                             progress=progress),
        controls={"damping": panels.log_slider("γ (K-FAC damping)", 1e-5, 1e-1, 1e-4),
                  "spread": panels.slider("c (start from w₀/c, w₀ and c·w₀)", 1.0, 8.0, 4.0, step=0.5)},
        build=optimizer_figure,
        notes=_optimizer_notes,
        title="Different optimizers, different implicit schedules",
        caption=("The same BN network started from w₀/c, w₀ and c·w₀: the same function, different weight norms. "
                 "SGD's angular steps scale like 1/‖w‖² and Adam's like 1/‖w‖, so the norm growth of training "
                 "decays them; K-FAC's curves stay together (its first steps are large and noisy on this small "
                 "network). The reason: from c·w₀ with damping γ, K-FAC moves the directions exactly as it does "
                 "from w₀ with damping c²γ, so without damping the start does not matter at all. Raise γ: the "
                 "effective damping γ‖w‖² takes over, the K-FAC curves separate and K-FAC starts to behave like "
                 "SGD (Zhang et al. 2019, mechanism 3)."),
    )
