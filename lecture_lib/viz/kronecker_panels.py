"""Figures and live panels of notebook 03, "Kronecker spectra".

Three panels, each a compute function from :mod:`lecture_lib.kronecker` (real torch
linear algebra and a real training run), a pure figure builder ``result -> go.Figure``
with every trace, and an update that copies trace data onto the figure built once:

* :func:`spectrum_panel` -- eig(A ⊗ B) computed from the explicit product against the
  products of the factors' eigenvalues;
* :func:`kfac_panel` -- the K-FAC block A ⊗ S against the exact Gauss-Newton block of a
  small MLP layer as training proceeds;
* :func:`cost_panel` -- measured time of the eigenbasis inverse against the dense inverse.

Sizes shrink when :data:`lecture_lib.viz.FAST` is set (``LECTURE_FAST=1``).
"""
from __future__ import annotations

import ast
import inspect
import textwrap

import numpy as np
import plotly.graph_objects as go

from .. import kronecker
from . import FAST, figures, panels

KFAC_STEPS = 60 if FAST else 300
KFAC_CHECKPOINTS = 4 if FAST else 11
KFAC_SIZES = (4, 6, 3)
COST_WIDTHS = (4, 8, 12, 16, 24, 32, 48, 64)
LAYER_LABELS = {"hidden layer (linears.0)": "linears.0", "output layer (linears.1)": "linears.1"}


def source(fn) -> "IPython.display.Markdown":  # noqa: F821
    """A library function's code without its docstring, as a highlighted Markdown block (the math is in the prose)."""
    from IPython.display import Markdown
    code = textwrap.dedent(inspect.getsource(fn))
    body = ast.parse(code).body[0].body
    lines = code.splitlines()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        doc = body[0]
        lines = lines[:doc.lineno - 1] + lines[doc.end_lineno:]
    return Markdown("```python\n" + "\n".join(lines) + "\n```")


def _fmt(x: float) -> str:
    return f"{x:.1e}"


# =========================================================================== (a) spectra
def spectrum(n: int = 6, m: int = 4, cond_a: float = 10.0, cond_b: float = 100.0) -> kronecker.KronSpectrum:
    """Compute for the spectrum panel: random SPD factors, their Kronecker product, the checks."""
    return kronecker.spectrum_demo(int(n), int(m), float(cond_a), float(cond_b), seed=0)


def spectrum_figure(result: kronecker.KronSpectrum) -> go.Figure:
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


def _spectrum_notes(r: kronecker.KronSpectrum) -> str:
    return (f"{len(r.explicit)} eigenvalues. Largest gap between the two lists: {_fmt(r.eigenvalue_error)} "
            f"(relative to the top eigenvalue). Eigenvector check ‖(A⊗B)(rᵢ⊗sⱼ) − λᵢνⱼ(rᵢ⊗sⱼ)‖: "
            f"{_fmt(r.eigenvector_residual)}. Inverse check ‖(A⊗B)⁻¹ − A⁻¹⊗B⁻¹‖/‖(A⊗B)⁻¹‖: "
            f"{_fmt(r.inverse_error)}. Condition number of A ⊗ B: {r.condition_number:.4g} "
            f"= cond(A)·cond(B).")


def spectrum_panel() -> panels.LivePanel:
    """Sliders on the sizes and condition numbers of A and B; the two spectra on top of each other."""
    first = spectrum()
    return panels.LivePanel(
        compute=spectrum,
        controls={"n": panels.int_slider("n (size of A)", 1, 12, 6),
                  "m": panels.int_slider("m (size of B)", 1, 10, 4),
                  "cond_a": panels.log_slider("condition number of A", 1.0, 1e4, 10.0),
                  "cond_b": panels.log_slider("condition number of B", 1.0, 1e4, 100.0)},
        figure=spectrum_figure(first),
        update=lambda fig, r: figures.copy_trace_data(fig, spectrum_figure(r)),
        notes=_spectrum_notes,
        title="The spectrum of a Kronecker product",
        caption="Every circle sits on the line: the nm eigenvalues of A ⊗ B are exactly the products "
                "λᵢνⱼ. Push both condition numbers up and watch the spread of the product multiply.",
    )


# =========================================================================== (b) K-FAC vs exact GN
def kfac_comparison(layer: str = "linears.0", checkpoint: int = 0) -> dict:
    """Compute for the K-FAC panel: the (cached) training run, and which checkpoint to show."""
    result = kronecker.kfac_vs_exact(layer, sizes=KFAC_SIZES, steps=KFAC_STEPS, checkpoints=KFAC_CHECKPOINTS)
    if not 0 <= int(checkpoint) < len(result.steps):
        raise ValueError(f"checkpoint must be in [0, {len(result.steps) - 1}], got {checkpoint}")
    return {"result": result, "k": int(checkpoint)}


def kfac_figures(data: dict) -> list[go.Figure]:
    """Left: both spectra at the chosen checkpoint. Right: relative error and loss over training."""
    r, k = data["result"], data["k"]
    rank = np.arange(1, r.exact.shape[1] + 1)
    floor = 1e-12 * r.exact[k, 0]   # eigenvalues that are zero up to round-off are not drawn on a log axis
    keep_e, keep_k = r.exact[k] > floor, r.kfac[k] > floor
    spectra = figures.figure([
        go.Scatter(x=rank[keep_e], y=r.exact[k][keep_e], mode="lines+markers", name="exact GN block G_ℓℓ",
                   line=dict(color=figures.color(0), width=2.5), marker=dict(size=5)),
        go.Scatter(x=rank[keep_k], y=r.kfac[k][keep_k], mode="markers", name="K-FAC A ⊗ S",
                   marker=dict(size=10, symbol="circle-open", color=figures.color(1), line=dict(width=2))),
    ], title=f"spectra at step {int(r.steps[k])}", x_title="rank (largest first)", y_title="eigenvalue",
        log_y=True)
    error = figures.figure([
        go.Scatter(x=r.steps, y=r.relative_error, mode="lines+markers", name="‖G_ℓℓ − A⊗S‖_F / ‖G_ℓℓ‖_F",
                   line=dict(color=figures.color(1), width=2.5)),
        go.Scatter(x=r.steps, y=r.loss, mode="lines", name="training loss", yaxis="y2",
                   line=dict(color=figures.REFERENCE_COLOR, width=2, dash="dot")),
        go.Scatter(x=[r.steps[k]], y=[r.relative_error[k]], mode="markers", name="shown on the left",
                   marker=dict(size=15, symbol="diamond", color=figures.color(2))),
    ], title="over training", x_title="step k", y_title="relative error")
    error.update_layout(yaxis=dict(rangemode="tozero"),
                        yaxis2=dict(title=dict(text="loss"), overlaying="y", side="right", showgrid=False,
                                    rangemode="tozero"),
                        margin=dict(r=70))
    return [spectra, error]


def _kfac_update(figs, data: dict) -> None:
    for fig, new in zip(figs, kfac_figures(data)):
        figures.copy_trace_data(fig, new, layout_keys=("title.text",))


def _kfac_notes(data: dict) -> str:
    r, k = data["result"], data["k"]
    if r.relative_error.max() < 1e-10:
        return ("Output layer with squared error: the output Hessian is I, so S = I and "
                f"G_ℓℓ = A ⊗ I exactly (largest relative error {_fmt(r.relative_error.max())}).")
    return (f"Step {int(r.steps[k])}: relative error {r.relative_error[k]:.3f}, loss {r.loss[k]:.4f}. "
            f"Top eigenvalue: exact {r.exact[k, 0]:.4g}, K-FAC {r.kfac[k, 0]:.4g}.")


def kfac_panel() -> panels.LivePanel:
    """Pick a layer and a checkpoint of a real training run; compare the curvature blocks."""
    first = kfac_comparison()
    return panels.LivePanel(
        compute=kfac_comparison,
        controls={"layer": panels.dropdown("layer", LAYER_LABELS, "linears.0"),
                  "checkpoint": panels.int_slider("checkpoint", 0, KFAC_CHECKPOINTS - 1, 0)},
        figure=kfac_figures(first),
        update=_kfac_update,
        notes=_kfac_notes,
        title="K-FAC against the exact Gauss-Newton block",
        caption=f"A {'-'.join(map(str, KFAC_SIZES))} tanh MLP trained by gradient descent on a teacher task. "
                "Slide through the checkpoints: for the hidden layer the Kronecker block tracks the exact "
                "spectrum closely but not exactly; switch to the output layer and the two coincide.",
    )


# =========================================================================== (c) cost
def cost(largest: int = 24 if FAST else 48) -> kronecker.InverseTiming:
    """Compute for the cost panel: measured times up to the chosen largest width."""
    widths = tuple(w for w in COST_WIDTHS if w <= int(largest))
    if len(widths) < 2:
        raise ValueError(f"largest must be at least {COST_WIDTHS[1]}, got {largest}")
    return kronecker.time_inverses(widths=widths, repeats=1 if FAST else 2)


def cost_figure(t: kronecker.InverseTiming) -> go.Figure:
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
    return figures.figure(traces, x_title="layer width n (A and S are n × n; n² weights)",
                          y_title="time per solve (ms)", log_x=True, log_y=True)


def _cost_notes(t: kronecker.InverseTiming) -> str:
    n = int(t.widths[-1])
    return (f"At width {n} ({n * n} weights): eigenbasis {1e3 * t.eigenbasis[-1]:.3g} ms, dense "
            f"{1e3 * t.dense[-1]:.3g} ms, {t.dense[-1] / t.eigenbasis[-1]:.0f}× slower. Both give the same "
            f"answer (largest relative difference {_fmt(t.max_difference.max())}). Small sizes are dominated "
            "by fixed overheads, so the slopes only approach 3 and 6 as n grows. Measured on this machine, now.")


def cost_panel() -> panels.LivePanel:
    """Measure both ways of applying the damped inverse as the layer grows."""
    choices = [w for w in COST_WIDTHS[2:] if not FAST or w <= 24]
    first = cost(choices[-2] if not FAST else choices[-1])
    return panels.LivePanel(
        compute=cost,
        controls={"largest": panels.dropdown("largest width n", choices, int(first.widths[-1]))},
        figure=cost_figure(first),
        update=lambda fig, t: figures.copy_trace_data(fig, cost_figure(t)),
        notes=_cost_notes,
        title="What the eigenbasis saves",
        caption="Real timings of (A ⊗ S + γI)⁻¹ applied to one gradient. Choose a larger width "
                "(64 takes a few seconds: the dense matrix has 16.8 million entries) and see the "
                "two curves part at the rates n³ and n⁶.",
    )
