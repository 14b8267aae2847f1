"""Figures and live panels of notebook 02, "Internal covariate shift and outlier eigenvalues".

Each section of the notebook calls one ``*_panel()`` function. Every panel has the
same two layers: an **experiment** of :mod:`lecture_lib.experiments.ics`, called in one
line with the control values (cached by the panel), and a **pure figure builder**
``result -> go.Figure`` that draws every trace, each with its own name; the panel builds
its figure widget from the first result and copies later results' trace data onto it.
Each panel takes ``fast`` (default: :func:`lecture_lib.viz.fast_mode`, i.e.
``LECTURE_FAST=1``) and then runs smaller experiments.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import ics
from ..experiments import ics as experiments
from . import fast_mode, figures, panels, scrub
from .runner import TORCH_FUNC_IMPORTS

NORM_LABELS = {"none": "no normalizer", "center": "batch centering", "batch": "batch norm"}
VARIANT_LABELS = {"uncentered": "uncentered x", "centered": "centered x − m", "whitened": "whitened Σ^(−1/2)(x − m)"}


def _positive(values, rel_floor: float = 1e-9) -> np.ndarray:
    """Eigenvalues for a log axis: values below ``rel_floor`` x the largest (rounding noise) dropped."""
    v = np.asarray(values, dtype=float)
    return v[v > rel_floor * max(v.max(), 1e-300)]




#: The ‖m‖ positions of the outlier and descent panels' scrubbers (0 to 6 in steps of ½), computed together.
MEAN_NORMS = tuple(float(v) for v in np.linspace(0.0, 6.0, 13))


# =========================================================================== 1. the outlier of A

def outlier_figure(spec: ics.MomentSpectrum) -> go.Figure:
    """Sorted eigenvalues of A = E[aaᵀ] with the predicted outlier ‖m‖² + σ² and the bulk level σ²."""
    ev = spec.eigenvalues.cpu().numpy()
    i = np.arange(1, len(ev) + 1)
    traces = [
        go.Scatter(x=i, y=ev, mode="markers", name="eigenvalues of A = E[a aᵀ]",
                   marker=dict(size=10, color=figures.color(0)),
                   hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"),
        figures.reference_line([0.5, len(ev) + 0.5], [spec.predicted] * 2, "predicted outlier ‖m‖² + σ²",
                               color_=figures.color(1)),
        figures.reference_line([0.5, len(ev) + 0.5], [spec.variance] * 2, "bulk σ² (average variance)"),
    ]
    return figures.figure(traces, x_title="index i (eigenvalues sorted)", y_title="eigenvalue λᵢ(A)", log_y=True)


def outlier_notes(spec: ics.MomentSpectrum) -> str:
    align = "—" if np.isnan(spec.alignment) else f"{spec.alignment:.4f}"
    return (f"‖m‖ = {float(spec.mean.norm()):.3g} · top eigenvalue <b>{float(spec.eigenvalues[0]):.4g}</b> vs "
            f"predicted ‖m‖² + σ² = <b>{spec.predicted:.4g}</b> · second {float(spec.eigenvalues[1]):.3g} · "
            f"|cos(top eigenvector, m)| = {align} · condition number κ(A) = {spec.condition_number:.3g}")


def outlier_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """The spectrum of A = E[aaᵀ]; ‖m‖ scrubs (every position one batched eigendecomposition), the inputs and D recompute."""
    fast = fast_mode() if fast is None else fast
    controls = {"features": panels.dropdown("inputs a", {"Gaussian N(m, I)": "gaussian",
                                                         "logistic units σ(z)": "logistic",
                                                         "tanh units tanh(z)": "tanh",
                                                         "ReLU units max(z, 0)": "relu"}, "gaussian"),
                "dim": panels.int_slider("D (width)", 4, 64, 20)}
    return scrub.ScrubPanel(
        partial(experiments.outlier_family, samples=5000 if fast else 20000), controls,
        scrub=scrub.Scrub("mean_norm", MEAN_NORMS, "‖m‖ (Gaussian inputs)", index=MEAN_NORMS.index(3.0),
                          together="computed together, as one vectorised computation"),
        build=outlier_figure, notes=outlier_notes,
        title="One outlier eigenvalue, in the direction of the mean",
        caption="A = E[aaᵀ] without a bias column. Slide ‖m‖: the top eigenvalue follows ‖m‖² + 1 while the "
                "rest stay at 1. Then switch to "
                "logistic units (mean ½ each, so ‖m‖² ≈ D/4) and widen the layer; tanh units have no outlier.")


# =========================================================================== 2. gradient descent

def descent_figures(result: experiments.DescentComparison) -> list[go.Figure]:
    loss = []
    for i, (label, rec, excess) in enumerate(zip(result.labels, result.records, result.excess_loss)):
        loss += figures.line_traces(rec, np.asarray(excess)[:, None], [VARIANT_LABELS[label]],
                                    colors=[figures.color(i)], dash=("dot" if label == "whitened" else None))
    f1 = figures.span_steps(figures.figure(loss, y_title="J(w_k) − J(w*)", log_y=True), result.records)
    spec = []
    for i, (label, ev) in enumerate(zip(result.labels, result.hessian_eigenvalues)):
        ev = np.asarray(ev)
        spec.append(go.Scatter(x=np.arange(1, len(ev) + 1), y=ev, mode="markers", name=VARIANT_LABELS[label],
                               marker=dict(size=11 - 3 * i, color=figures.color(i)),
                               hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"))
    f2 = figures.figure(spec, x_title="index i (H = E[x̃ x̃ᵀ], x̃ = (x, 1))", y_title="eigenvalue λᵢ(H)",
                        log_y=True, height=330)
    return [f1, f2]


def descent_notes(result: experiments.DescentComparison) -> str:
    parts = [f"{VARIANT_LABELS[l]}: κ(H) = <b>{k:.3g}</b>, α = {lr:.3g}"
             for l, k, lr in zip(result.labels, result.condition_numbers, result.lrs)]
    notes = [panels.divergence_notes(rec, [VARIANT_LABELS[l]]) for l, rec in zip(result.labels, result.records)]
    top = float(result.hessian_eigenvalues[0][0])
    if np.isfinite(result.predicted_outlier):
        p = result.predicted_outlier
        parts.append(f"uncentered λ_max(H) = <b>{top:.4g}</b> vs predicted (‖m‖² + 2 + ‖m‖√(‖m‖² + 4))/2 = "
                     f"<b>{p:.4g}</b> (from the true m; ‖m‖² + 1 would say {p - 1 + 1 / p:.4g}) · "
                     f"predicted κ(H) = ν₊² = {p * p:.3g}")
    else:
        parts.append(f"uncentered λ_max(H) = <b>{top:.4g}</b> (the closed-form prediction assumes Σ = I)")
    return " · ".join(parts) + "".join(f"<br>{n}" for n in notes if n)


def descent_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Gradient descent on linear regression, uncentered vs centered vs whitened; ‖m‖ scrubs, κ(Σ) and c recompute.

    ‖m‖ is the slider that carries the notebook's point: it moves the outlier eigenvalue ν₊ ≈ ‖m‖² + 2 of H,
    and the uncentered run slows down with it while the centered one does not. All 13 positions (39 runs)
    train as one batched computation (:func:`~lecture_lib.experiments.ics.descent_family`).
    """
    fast = fast_mode() if fast is None else fast
    controls = {"cond": panels.log_slider("κ(Σ) (input covariance)", 1.0, 100.0, 1.0),
                "lr_scale": panels.slider("α · λ_max(H)", 0.1, 1.9, 1.0, step=0.1)}
    return scrub.ScrubPanel(
        partial(experiments.descent_family, steps=100 if fast else 400), controls,
        scrub=scrub.Scrub("mean_norm", MEAN_NORMS, "‖m‖ (input mean)", index=MEAN_NORMS.index(3.0)),
        build=descent_figures, notes=descent_notes,
        title="Gradient descent on linear regression: uncentered vs centered features",
        caption="H = E[x̃x̃ᵀ] with x̃ = (x, 1): the bias column is included. Each run uses its own step "
                "α = c/λ_max(H). Raise ‖m‖: the uncentered run slows down by κ(H) = ν₊² ≈ (‖m‖² + 2)², centering "
                "fixes it; raise κ(Σ) and only whitening helps.")


# =========================================================================== 3. ICS Conditioning Hypothesis

MAX_OUTPUTS = 4


def conditioning_figures(rep: ics.ConditioningReport) -> list[go.Figure]:
    exact, kfac = rep.exact.cpu().numpy(), rep.kfac.cpu().numpy()
    top = min(len(exact), 40)
    i = np.arange(1, top + 1)
    traces = [
        go.Scatter(x=i, y=exact[:top], mode="markers", name="exact GN block of W₁ (bias excluded)",
                   marker=dict(size=10, color=figures.color(0)), hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"),
        go.Scatter(x=i, y=kfac[:top], mode="markers", name="K-FAC A ⊗ S",
                   marker=dict(size=13, symbol="circle-open", color=figures.color(2), line=dict(width=2)),
                   hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"),
    ]
    pred = rep.predicted.cpu().numpy()      # one dashed level per output, in one trace (None breaks the line)
    traces.append(go.Scatter(x=[v for _ in pred for v in (0.5, top + 0.5, None)],
                             y=[v for p in pred for v in (p, p, None)], mode="lines", name="predicted ν·λᵢ(S)",
                             line=dict(color=figures.color(1), dash="dash", width=2),
                             hovertemplate="ν·λ(S) = %{y:.4g}<extra></extra>"))
    f1 = figures.figure(traces, x_title="index (top 40 eigenvalues, sorted)", y_title="eigenvalue", log_y=True)
    align = rep.alignment.cpu().numpy()
    k = np.arange(1, MAX_OUTPUTS + 1)
    y = np.full(MAX_OUTPUTS, np.nan)
    y[:len(align)] = align
    keep = np.isfinite(y)
    f2 = figures.figure([go.Bar(x=k[keep], y=y[keep], name="fraction in span{m ⊗ v}",
                                marker_color=figures.color(0), hovertemplate="u_%{x}: %{y:.3f}<extra></extra>")],
                        x_title="top eigenvector u_k of the exact block", y_title="‖(m̂ᵀ ⊗ I) u_k‖²",
                        height=300)
    f2.update_yaxes(range=[0, 1.05])
    f2.update_xaxes(tickmode="array", tickvals=list(k), range=[0.5, MAX_OUTPUTS + 0.5])
    return [f1, f2]


def conditioning_notes(rep: ics.ConditioningReport) -> str:
    pred = ", ".join(f"{p:.3g}" for p in rep.predicted.cpu().numpy())
    got = ", ".join(f"{e:.3g}" for e in rep.exact.cpu().numpy()[:len(rep.predicted)])
    return (f"ν = ‖m‖² + 1 = <b>{rep.nu:.3g}</b> · predicted outliers ν·λᵢ(S): {pred} · "
            f"exact top eigenvalues: {got} · rest of the spectrum below {float(rep.exact[len(rep.predicted)]):.3g}")


def conditioning_panel(fast: bool | None = None) -> panels.LivePanel:
    fast = fast_mode() if fast is None else fast
    controls = {"mean_norm": panels.slider("‖m‖ (mean of the layer's inputs)", 0.0, 5.0, 3.0, step=0.25),
                "outputs": panels.int_slider("M (network outputs)", 1, MAX_OUTPUTS, 3)}
    return panels.LivePanel(
        partial(experiments.conditioning_experiment, n=400 if fast else 1000, dim=6, hidden=10), controls,
        build=conditioning_figures, notes=conditioning_notes,
        preload=TORCH_FUNC_IMPORTS,           # the exact Gauss-Newton block: torch.func.jacrev
        title="ICS Conditioning Hypothesis in a small MLP (first layer, 6 → 10 → M, tanh)",
        caption="The block of the first weight matrix W₁ only (its bias excluded), so A = E[aaᵀ] has no 1 appended "
                "and ν = ‖m‖² + 1. Raise ‖m‖: exactly M eigenvalues of the exact Gauss-Newton block detach from the bulk, "
                "land on the dashed predictions ν·λᵢ(S), and their eigenvectors lie in span{m ⊗ v}. "
                "Change M to change the number of outliers.")


# =========================================================================== 4. the fix by reparameterization

def reparam_figures(result: experiments.ReparamComparison) -> list[go.Figure]:
    """Both networks' traces, every time: a streamed partial draws the network not yet trained as empty traces, so
    the figure keeps its traces and the page redraws their data alone."""
    loss, spec = [], []
    for i, label in enumerate(result.labels):
        if i < len(result.records):
            rec, b = result.records[i], result.best[i]
            loss += figures.line_traces(rec, rec.loss[:, [b]], [f"{label}, best α"], colors=[figures.color(i)])
        else:
            loss += figures.line_traces(None, np.empty((0, 1)), [f"{label}, best α"], x=[], colors=[figures.color(i)])
        ev = _positive(result.gn_eigenvalues[i], 1e-7) if i < len(result.gn_eigenvalues) else np.empty(0)
        spec.append(go.Scatter(x=np.arange(1, len(ev) + 1), y=ev, mode="markers", name=f"{label}, GN block",
                               marker=dict(size=9, color=figures.color(i)),
                               hovertemplate="λ_%{x} = %{y:.4g}<extra></extra>"))
    f1 = figures.span_steps(figures.tidy_log_axes(figures.figure(loss, y_title="training loss J", log_y=True)),
                            result.records)
    f2 = figures.figure(spec, x_title="index i (first layer's GN block, W and b, at init)",
                        y_title="eigenvalue", log_y=True, height=330)
    return [f1, f2]


def reparam_notes(result: experiments.ReparamComparison) -> str:
    top = [float(ev[0]) for ev in result.gn_eigenvalues]
    div = [panels.divergence_notes(rec, [f"{label}, α = {lr:.3g}" for lr in result.lrs])
           for label, rec in zip(result.labels, result.records)]
    best = [f"best α ({label}) = <b>{result.lrs[b]:.3g}</b>" for label, b in zip(result.labels, result.best)]
    return (f"same function: max |f(x) − f̃(x̃)| = <b>{result.max_output_gap:.1e}</b> at initialization · "
            f"top eigenvalue of the first layer's GN block {top[0]:.3g} → {top[1]:.3g} · {' · '.join(best)} · "
            f"α swept over {len(result.lrs)} values "
            f"({result.lrs[0]:.3g} … {result.lrs[-1]:.3g}), one batched run each"
            + "".join(f"<br>{d}" for d in div if d))


def reparam_panel(fast: bool | None = None) -> panels.LivePanel:
    fast = fast_mode() if fast is None else fast
    controls = {"mean_norm": panels.slider("‖m‖ (input mean)", 0.0, 5.0, 3.0, step=0.25),
                "cond": panels.log_slider("κ(Σ) (input covariance)", 1.0, 100.0, 10.0)}
    return panels.LivePanel(
        partial(experiments.reparam_experiment, steps=80 if fast else 200, n=256 if fast else 512), controls,
        build=reparam_figures, notes=reparam_notes,
        preload=TORCH_FUNC_IMPORTS,           # the exact Gauss-Newton block: torch.func.jacrev
        title="Same network, new coordinates: W̃ = WΣ^(1/2), b̃ = b + Wm",
        caption="Both networks start as the same function and each gets its best α from a sweep. Raise ‖m‖ "
                "or κ(Σ): the original's spectrum spreads and it trains slower; the reparameterized one does not care.")


def quasi_diagonal_figure(mats: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("[RRᵀ]⁻¹ (approximates the curvature)", "RRᵀ (the preconditioner)"))
    for col, key, name in ((1, "curvature", "[RRᵀ]⁻¹"), (2, "preconditioner", "RRᵀ")):
        z = mats[key].cpu().numpy()        # zmid = 0: the colour scale stays symmetric as the values change
        fig.add_trace(go.Heatmap(z=np.ascontiguousarray(z[::-1]), zmid=0.0, colorscale="RdBu_r", showscale=False,
                                 name=name, hovertemplate=f"{name}: %{{z:.3g}}<extra></extra>"), row=1, col=col)
    fig = figures.style(fig, height=380)
    fig.update_xaxes(showticklabels=False, showline=False)
    fig.update_yaxes(showticklabels=False, showline=False, scaleanchor=None)
    return fig


def quasi_diagonal_panel(fast: bool | None = None) -> panels.LivePanel:
    """``fast`` is accepted for a uniform call; the matrices are instant either way."""
    controls = {"mean_norm": panels.slider("‖m‖", 0.0, 5.0, 2.0, step=0.25),
                "cond": panels.log_slider("κ(Σ)", 1.0, 100.0, 10.0)}
    return panels.LivePanel(
        partial(experiments.quasi_diagonal_experiment, dim=3, out_features=2), controls, build=quasi_diagonal_figure,
        title="The quasi-diagonal preconditioner as a matrix (D = 3 inputs, 2 outputs, with bias)",
        caption="Rows and columns: vec(W) (3 blocks of 2) then b. Set ‖m‖ = 0 and κ = 1: both are the identity. "
                "The mean couples each weight only to the weights and bias of the same output unit.")


# =========================================================================== 5. the wrinkle

def wrinkle_figures(result: experiments.WrinkleResult) -> list[go.Figure]:
    """Every normalizer's traces, every time: in a streamed partial the normalizers not yet trained are empty traces
    and their bars are missing (not yet computed), so the page redraws the curves' data alone."""
    loss = []                          # trace names say "c", not its value: the names stay fixed as c moves
    for i, norm in enumerate(result.norms):
        trained = i < len(result.records)
        rec = result.records[i] if trained else None
        for r, (shift, dash, width) in enumerate((("0", None, 2.5), ("c", "dash", 4))):
            values = rec.loss[:, [r]] if trained else np.empty((0, 1))
            loss += figures.line_traces(rec, values, [f"{NORM_LABELS[norm]}, shift {shift}"],
                                        x=None if trained else [], colors=[figures.color(i)], dash=dash,
                                        width=width, legendgroup=norm)
    f1 = figures.span_steps(figures.tidy_log_axes(figures.figure(loss, y_title="training loss J", log_y=True,
                                                                 legend_rows=2)), result.records)
    x = [NORM_LABELS[n] for n in result.norms]
    bar = lambda values: [None if not np.isfinite(v) else float(v) for v in values]   # NaN: not computed yet
    kfac, exact = result.kfac_top, result.exact_top
    bars = [
        go.Bar(x=x, y=bar(kfac[:, 0]), name="λ_max(A), shift 0", marker_color="#b9c4cf"),
        go.Bar(x=x, y=bar(kfac[:, 1]), name="λ_max(A), shift c", marker_color="#6c7a89"),
        go.Bar(x=x, y=bar(exact[:, 0]), name="λ_max(exact GN block), shift 0", marker_color=figures.color(5)),
        go.Bar(x=x, y=bar(exact[:, 1]), name="λ_max(exact GN block), shift c", marker_color=figures.color(0)),
    ]
    f2 = figures.figure(bars, x_title="", y_title="top eigenvalue (layer 2, at init)", log_y=True, height=340)
    f2.update_layout(barmode="group")
    f2.update_xaxes(type="category")       # the house layout sets a linear axis; these are names
    return [f1, f2]


def wrinkle_notes(result: experiments.WrinkleResult) -> str:
    parts = [f"{NORM_LABELS[n]}: max |J(shift 0) − J(shift {result.shifts[1]:g})| = <b>{g:.1e}</b>"
             for n, g in zip(result.norms, result.max_gap)]
    div = [panels.divergence_notes(rec, [f"{NORM_LABELS[n]}, shift 0", f"{NORM_LABELS[n]}, shift {result.shifts[1]:g}"])
           for n, rec in zip(result.norms, result.records)]
    return " · ".join(parts) + "".join(f"<br>{d}" for d in div if d)


def wrinkle_panel(fast: bool | None = None) -> panels.LivePanel:
    fast = fast_mode() if fast is None else fast
    controls = {"shift": panels.slider("c (shift of the activations)", 0.0, 10.0, 5.0, step=0.5),
                "lr": panels.log_slider("α (learning rate)", 0.003, 0.3, 0.05)}
    return panels.LivePanel(
        partial(experiments.wrinkle_experiment, steps=60 if fast else 250, n=128 if fast else 256), controls,
        build=wrinkle_figures, notes=wrinkle_notes,
        preload=TORCH_FUNC_IMPORTS,           # the exact Gauss-Newton block: torch.func.jacrev
        title="The wrinkle: shift the activations that feed a normalized layer",
        caption="Dashed = shifted by c. Without a normalizer the shift slows training; with batch centering or "
                "batch norm the dashed curve lies exactly on the solid one, although K-FAC's factor A (grey bars) "
                "has a huge outlier. The exact curvature (blue) does not move. Bars: layer 2's K-FAC factor "
                "A = E[ããᵀ] (ã = (a, 1) where the layer has a bias: no normalizer, batch centering; a alone before "
                "batch norm, whose layer has none) and its exact Gauss-Newton block, weights only.")


# =========================================================================== 6. batch centering

def centering_figures(sweep: experiments.CenteringSweep) -> list[go.Figure]:
    g = sweep.gradient
    auto = g.autograd.cpu().numpy().ravel()
    lim = float(max(np.abs(auto).max(), np.abs(g.direct.cpu().numpy()).max())) * 1.05
    f1 = figures.figure([
        go.Scatter(x=auto, y=g.centered.cpu().numpy().ravel(), mode="markers", name="S̄ᵀÃ (centered activations)",
                   marker=dict(size=11, color=figures.color(0))),
        go.Scatter(x=auto, y=g.direct.cpu().numpy().ravel(), mode="markers", name="S̄ᵀA (direct path only)",
                   marker=dict(size=9, symbol="x", color=figures.color(1))),
        figures.reference_line([-lim, lim], [-lim, lim], "equality"),
    ], x_title="W̄ by autograd through the centering layer (entries)", y_title="formula (entries)", height=360)
    i = int(np.argmin(np.abs(sweep.shifts - sweep.shift)))
    f2 = figures.figure([
        go.Scatter(x=sweep.shifts, y=sweep.norm_autograd, mode="lines", name="‖W̄‖ through the centering layer",
                   line=dict(color=figures.color(0), width=3)),
        go.Scatter(x=sweep.shifts, y=sweep.norm_direct, mode="lines", name="‖S̄ᵀA‖ (direct path only)",
                   line=dict(color=figures.color(1), width=3, dash="dash")),
        go.Scatter(x=[sweep.shifts[i]] * 2, y=[sweep.norm_autograd[i], sweep.norm_direct[i]], mode="markers",
                   name="current c", marker=dict(size=12, color="#222")),
    ], x_title="c (shift of the activations)", y_title="gradient norm", height=330)
    return [f1, f2]


def centering_notes(sweep: experiments.CenteringSweep) -> str:
    g = sweep.gradient
    err = float((g.autograd - g.centered).abs().max())
    off = float((g.autograd - g.direct).abs().max())
    return (f"max |autograd − S̄ᵀÃ| = <b>{err:.1e}</b> (rounding) · max |autograd − S̄ᵀA| = {off:.3g} · "
            f"the statistics path removes S̄ᵀ1 āᵀ")


def centering_panel(fast: bool | None = None) -> panels.LivePanel:
    """``fast`` is accepted for a uniform call; one batch of gradients is instant either way."""
    controls = {"shift": panels.slider("c (shift of the activations)", -5.0, 5.0, 2.0, step=0.5),
                "batch_size": panels.int_slider("B (batch size)", 2, 128, 32)}
    return panels.LivePanel(
        experiments.centering_experiment, controls, build=centering_figures, notes=centering_notes,
        title="Batch centering: the weight gradient sees centered activations",
        caption="Slide c: the true gradient (blue, on the diagonal) never changes, while the direct-path "
                "formula S̄ᵀA (orange) drifts off the diagonal and its norm grows with |c|.")
