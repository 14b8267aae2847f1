"""Figures and live panels of notebook 03, "Kronecker spectra".

Three panels, each an experiment of :mod:`lecture_lib.experiments.kronecker` (real torch
linear algebra and a real training run) called in one line, and a pure figure builder
``result -> go.Figure`` with every trace (fixed, unique names) that builds and updates the figure:

* :func:`spectrum_panel` -- eig(A ⊗ B) computed from the explicit product against the
  products of the factors' eigenvalues;
* :func:`kfac_panel` -- the K-FAC block A ⊗ S against the exact Gauss-Newton block of a
  small MLP layer as training proceeds;
* :func:`cost_panel` -- measured time of the eigenbasis inverse against the dense inverse;
* :func:`linear_network_panel` -- every layer of a linear network: the K-FAC block is exact.

``fast=True`` (default: :func:`lecture_lib.viz.fast_mode`, i.e. ``LECTURE_FAST=1``) shrinks the sizes.
"""
from __future__ import annotations

import functools

import numpy as np
import plotly.graph_objects as go

from ..experiments import kronecker as experiments
from ..kronecker import KronSpectrum
from . import fast_mode, figures, panels, scrub
from .runner import TORCH_FUNC_IMPORTS

KFAC_SIZES = (4, 6, 3)
LAYER_LABELS = {"hidden layer (linears.0)": "linears.0", "output layer (linears.1)": "linears.1"}


def _fmt(x: float) -> str:
    return f"{x:.1e}"


# =========================================================================== (a) spectra
def spectrum_figure(result: KronSpectrum) -> go.Figure:
    """Eigenvalues of the explicit n·m × n·m product (line) and the products λ_i ν_j (circles), by rank."""
    rank = np.arange(1, len(result.explicit) + 1)
    traces = [
        go.Scatter(x=rank, y=result.explicit, mode="lines+markers", name="eigvalsh(A ⊗ B), explicit matrix",
                   line=dict(color=figures.color(0), width=2.5), marker=dict(size=5),
                   hovertemplate="rank %{x}: %{y:.4g}<extra>explicit</extra>"),
        go.Scatter(x=rank, y=result.products, mode="markers", name="λᵢ νⱼ, products of factor eigenvalues",
                   marker=dict(size=11, symbol="circle-open", color=figures.color(1), line=dict(width=2)),
                   hovertemplate="rank %{x}: %{y:.4g}<extra>λᵢνⱼ</extra>"),
    ]
    return figures.figure(traces, x_title="rank (largest first)", y_title="eigenvalue", log_y=True)


def _spectrum_notes(r: KronSpectrum) -> str:
    return (f"{len(r.explicit)} eigenvalues. Largest gap between the two lists: {_fmt(r.eigenvalue_error)} "
            f"(relative to the top eigenvalue). Eigenvector check ‖(A⊗B)(rᵢ⊗sⱼ) − λᵢνⱼ(rᵢ⊗sⱼ)‖: "
            f"{_fmt(r.eigenvector_residual)}. Inverse check ‖(A⊗B)⁻¹ − A⁻¹⊗B⁻¹‖/‖(A⊗B)⁻¹‖: "
            f"{_fmt(r.inverse_error)}. Condition number of A ⊗ B: {r.condition_number:.4g} "
            f"= cond(A)·cond(B).")


#: The cond(A) positions of the spectrum panel: 10^(k/3), k = 0..12 (1 to 10⁴), all computed at once.
SPECTRUM_CONDS = tuple(float(f"{10 ** (k / 3):.3g}") for k in range(13))


def spectrum_panel() -> scrub.ScrubPanel:
    """Sliders on the sizes and cond(B); cond(A) scrubbed across a family; the two spectra on top of each other."""
    return scrub.ScrubPanel(
        compute=functools.partial(experiments.spectrum_family, seed=0),
        controls={"n": panels.int_slider("n (size of A)", 1, 12, 6),
                  "m": panels.int_slider("m (size of B)", 1, 10, 4),
                  "cond_b": panels.log_slider("condition number of B", 1.0, 1e4, 100.0)},
        scrub=scrub.Scrub("cond_a", SPECTRUM_CONDS, "condition number of A", index=SPECTRUM_CONDS.index(10.0),
                          together="computed together, as one vectorised computation"),
        build=spectrum_figure,
        notes=_spectrum_notes,
        title="The spectrum of a Kronecker product",
        caption="Every circle sits on the line: the nm eigenvalues of A ⊗ B are exactly the products "
                "λᵢνⱼ. Slide cond(A) from 1 up: the spectrum splits into m copies of A's spread, one per "
                "eigenvalue of B, and the spread of the product multiplies.",
    )


# =========================================================================== (b) K-FAC vs exact GN
def kfac_figures(data: experiments.KFACCheckpoint, steps: int | None = None) -> list[go.Figure]:
    """Left: both spectra at the chosen checkpoint. Right: relative error and loss over training.

    ``steps``: the training's length, to which the step axis is fixed (as :func:`figures.span_steps` does, with 3%
    room each side), so that the checkpoints streamed so far grow across an axis that stays still; ``None``: the
    axis autoranges.
    """
    r, k = data.result, data.k
    rank = np.arange(1, r.exact.shape[1] + 1)
    floor = 1e-12 * r.exact[k, 0]   # eigenvalues that are zero up to round-off are not drawn on a log axis
    keep_e, keep_k = r.exact[k] > floor, r.kfac[k] > floor
    spectra = figures.figure([
        go.Scatter(x=rank[keep_e], y=r.exact[k][keep_e], mode="lines+markers", name="exact GN block G_ℓℓ",
                   line=dict(color=figures.color(0), width=2.5), marker=dict(size=5)),
        go.Scatter(x=rank[keep_k], y=r.kfac[k][keep_k], mode="markers", name="K-FAC A ⊗ S",
                   marker=dict(size=10, symbol="circle-open", color=figures.color(1), line=dict(width=2))),
    ], title="spectra at the chosen checkpoint", x_title="rank (largest first)", y_title="eigenvalue",
        log_y=True)
    error = figures.figure([
        go.Scatter(x=r.steps, y=r.relative_error, mode="lines+markers", name="‖G_ℓℓ − A⊗S‖_F / ‖G_ℓℓ‖_F",
                   line=dict(color=figures.color(1), width=2.5), cliponaxis=False),   # checkpoints 0 and `steps`
        go.Scatter(x=r.steps, y=r.loss, mode="lines", name="training loss", yaxis="y2",
                   line=dict(color=figures.REFERENCE_COLOR, width=2, dash="dot")),
        go.Scatter(x=[r.steps[k]], y=[r.relative_error[k]], mode="markers", name="shown on the left",
                   marker=dict(size=15, symbol="diamond", color=figures.color(2)), cliponaxis=False),
    ], title="over training", x_title="step k", y_title="relative error")
    error.update_layout(yaxis=dict(rangemode="tozero"),
                        # its own round ticks (an overlaying axis takes the left axis's grid: 0.072, 0.144, ...)
                        yaxis2=dict(title=dict(text="loss"), overlaying="y", side="right", showgrid=False,
                                    rangemode="tozero", tickmode="auto"),
                        margin=dict(r=90))
    if steps:   # fixed to the training (as figures.span_steps), with room left of step 0 for the diamond
        error.update_xaxes(range=[-0.03 * steps, 1.03 * steps])
    return [spectra, error]


def _kfac_notes(data: experiments.KFACCheckpoint) -> str:
    r, k = data.result, data.k
    if r.relative_error.max() < 1e-10:
        return ("Output layer with squared error: the output Hessian is I, so S = I and "
                f"G_ℓℓ = A ⊗ I exactly (largest relative error {_fmt(r.relative_error.max())}).")
    return (f"Step {int(r.steps[k])}: relative error {r.relative_error[k]:.3f}, loss {r.loss[k]:.4f}. "
            f"Top eigenvalue: exact {r.exact[k, 0]:.4g}, K-FAC {r.kfac[k, 0]:.4g}.")


def kfac_panel(fast: bool | None = None) -> panels.LivePanel:
    """Pick a layer and a checkpoint of a real training run; compare the curvature blocks."""
    fast = fast_mode() if fast is None else fast
    checkpoints, steps = (4, 60) if fast else (11, 300)
    return panels.LivePanel(
        compute=functools.partial(experiments.kfac_checkpoint, steps=steps, checkpoints=checkpoints, sizes=KFAC_SIZES),
        controls={"layer": panels.dropdown("layer", LAYER_LABELS, "linears.0"),
                  "checkpoint": panels.int_slider("checkpoint", 0, checkpoints - 1, 0)},
        build=functools.partial(kfac_figures, steps=steps),
        notes=_kfac_notes,
        preload=TORCH_FUNC_IMPORTS,           # the exact Gauss-Newton block: torch.func.jacrev
        title="K-FAC against the exact Gauss-Newton block",
        caption=f"A {'-'.join(map(str, KFAC_SIZES))} tanh MLP trained by gradient descent on a teacher task. "
                "Slide through the checkpoints: for the hidden layer the Kronecker block tracks the exact "
                "spectrum closely but not exactly; switch to the output layer and the two coincide.",
    )


# =========================================================================== (b') linear networks
ERROR_FLOOR = 1e-17      # a log axis cannot show an exact 0


def linear_network_figure(r: experiments.LinearNetworkBlocks) -> go.Figure:
    """Grouped bars: ‖G_ℓℓ − A⊗S‖_F/‖G_ℓℓ‖_F per layer (log axis), one colour per network."""
    x = [f"layer {i + 1}" + (" (output)" if i == len(r.layers) - 1 else "") for i in range(len(r.layers))]
    bars = [go.Bar(x=x, y=np.maximum(row, ERROR_FLOOR).tolist(), name=label, marker_color=figures.color(i),
                   hovertemplate="%{x}: %{y:.2e}<extra>" + label + "</extra>")
            for i, (label, row) in enumerate(zip(r.networks, r.relative_error))]
    bars.append(go.Scatter(x=[x[0], x[-1]], y=[2.2e-16] * 2, mode="lines", name="float64 rounding (2.2e-16)",
                           line=dict(color=figures.REFERENCE_COLOR, dash="dash"), hoverinfo="skip"))
    fig = figures.figure(bars, x_title="", y_title="‖G_ℓℓ − A ⊗ S‖_F / ‖G_ℓℓ‖_F", log_y=True, height=360)
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    return fig


def _linear_network_notes(r: experiments.LinearNetworkBlocks) -> str:
    linear = r.relative_error[:2].max()
    tanh = r.relative_error[2, :-1]
    return (f"Sizes {'-'.join(map(str, r.sizes))}. Linear networks, every layer: largest relative error "
            f"<b>{linear:.1e}</b> (rounding). Tanh network, hidden layers: {', '.join(f'{e:.3f}' for e in tanh)}; "
            f"its output layer: {r.relative_error[2, -1]:.1e}.")


def linear_network_panel(fast: bool | None = None) -> panels.LivePanel:
    """``fast`` is accepted for a uniform call; the exact blocks of these small networks are instant."""
    def compute(depth: int, mean_norm: float):
        return experiments.linear_network_blocks(sizes=(6,) + (5,) * depth + (3,), mean_norm=mean_norm)

    return panels.LivePanel(
        compute=compute,
        controls={"depth": panels.int_slider("hidden layers", 1, 4, 2),
                  "mean_norm": panels.slider("‖m‖ (input mean)", 0.0, 5.0, 2.0, step=0.5)},
        build=linear_network_figure,
        notes=_linear_network_notes,
        preload=TORCH_FUNC_IMPORTS,           # the exact Gauss-Newton block: torch.func.jacrev
        title="Linear networks: K-FAC's block is exact in every layer",
        caption="Squared error (output Hessian I), exact Gauss-Newton blocks in float64, uncentered correlated "
                "inputs. Without nonlinearities the back-propagated derivatives do not depend on the input, so "
                "every layer sits at rounding error, with or without biases; the tanh network's hidden layers "
                "do not.",
    )


# =========================================================================== (c) cost
def cost_figure(t: experiments.InverseTiming) -> go.Figure:
    """Log-log time against layer width, with n³ and n⁶ guides through the last measurement."""
    n = t.widths.astype(float)
    ms_eig, ms_dense = 1e3 * t.eigenbasis, 1e3 * t.dense
    traces = [
        go.Scatter(x=n, y=ms_eig, mode="lines+markers", name="eigenbasis: 2 eigh + kron_damped_solve",
                   line=dict(color=figures.color(2), width=2.5)),
        go.Scatter(x=n, y=ms_dense, mode="lines+markers", name="dense: form n²×n² matrix, solve",
                   line=dict(color=figures.color(1), width=2.5)),
        figures.reference_line(n, ms_eig[-1] * (n / n[-1]) ** 3, "∝ n³"),
        figures.reference_line(n, ms_dense[-1] * (n / n[-1]) ** 6, "∝ n⁶", dash="dot"),
    ]
    fig = figures.figure(traces, x_title="layer width n (A and S are n × n; n² weights)",
                         y_title="time per solve (ms)", log_x=True, log_y=True)
    fig.update_layout(margin_b=80)             # tick labels as powers of ten under the axis: taller
    return fig


def _cost_notes(t: experiments.InverseTiming) -> str:
    n = int(t.widths[-1])
    return (f"At width {n} ({n * n} weights): eigenbasis {1e3 * t.eigenbasis[-1]:.3g} ms, dense "
            f"{1e3 * t.dense[-1]:.3g} ms, {t.dense[-1] / t.eigenbasis[-1]:.0f}× slower. Both give the same "
            f"answer (largest relative difference {_fmt(t.max_difference.max())}). Small sizes are dominated "
            "by fixed overheads, so the slopes only approach 3 and 6 as n grows. Measured on this machine, now.")


def cost_panel(fast: bool | None = None) -> panels.LivePanel:
    """Measure both ways of applying the damped inverse as the layer grows."""
    fast = fast_mode() if fast is None else fast
    choices = [w for w in experiments.COST_WIDTHS[2:] if not fast or w <= 24]
    return panels.LivePanel(
        compute=functools.partial(experiments.time_inverses_up_to, repeats=1 if fast else 2),
        controls={"largest": panels.dropdown("largest width n", choices, choices[-1] if fast else choices[-2])},
        build=cost_figure,
        notes=_cost_notes,
        title="What the eigenbasis saves",
        caption="Real timings of (A ⊗ S + γI)⁻¹ applied to one gradient. Choose a larger width "
                "(64 takes a few seconds: the dense matrix has 16.8 million entries) and see the "
                "two curves part at the rates n³ and n⁶.",
    )
