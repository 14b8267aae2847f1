"""Figures and live panels of notebook 05, "The weight-decay equilibrium".

Each section of the notebook calls one ``*_panel()`` function. Every panel has three layers:

* a **compute** step: one call of an experiment of :mod:`lecture_lib.experiments.equilibrium`
  (real PyTorch, families of settings as one batched computation);
* a **pure figure builder** ``result -> go.Figure`` drawing every trace, each with a unique, stable name;
* the :class:`~lecture_lib.viz.panels.LivePanel`, which builds the figure once from the first result
  and copies the trace data of every later one.

Step counts are chosen when a panel is built: ``fast=True`` (or ``LECTURE_FAST=1`` when ``fast`` is
``None``) takes :data:`FAST_SIZES`, otherwise :data:`FULL_SIZES`.
"""
from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..cache import recent
from ..experiments import equilibrium as ex
from . import fast_mode, figures, panels, scrub

GREY = "#9aa3ad"


@dataclass(frozen=True)
class Sizes:
    """How long the panels' runs are."""

    bn_steps: int          # the batch-normalized network (sections 1 and 6)
    toy_min_steps: int     # toy runs last five relaxation times, clipped to [toy_min_steps, toy_max_steps]
    toy_max_steps: int
    lars_max_steps: int    # the same clip for the SGD-vs-LARS pair
    plane_steps: int       # the 2-D picture
    batch_examples: int    # examples seen by each run of the batch-scaling family


FULL_SIZES = Sizes(bn_steps=600, toy_min_steps=800, toy_max_steps=5000, lars_max_steps=3000, plane_steps=300,
                   batch_examples=24000)
FAST_SIZES = Sizes(bn_steps=150, toy_min_steps=200, toy_max_steps=1500, lars_max_steps=1500, plane_steps=120,
                   batch_examples=6000)


def sizes(fast: bool | None = None) -> Sizes:
    """:data:`FAST_SIZES` when ``fast`` (``None``: ask ``LECTURE_FAST``), else :data:`FULL_SIZES`."""
    return FAST_SIZES if (fast_mode() if fast is None else fast) else FULL_SIZES


def _subplots(titles: tuple[str, ...], height: int, spacing: float) -> go.Figure:
    """One row of subplots in the house style, x axes in steps unless set otherwise: a copy of the figure built once
    for these arguments. Builders run again for every streamed partial, and plotly takes ~20 ms to build and
    validate these subplots (titles, axes, style) but ~8 ms to copy them."""
    return go.Figure(_subplots_built(titles, height, spacing))


@functools.lru_cache(maxsize=16)
def _subplots_built(titles: tuple[str, ...], height: int, spacing: float) -> go.Figure:
    fig = figures.style(make_subplots(rows=1, cols=len(titles), horizontal_spacing=spacing, subplot_titles=titles),
                        height=height)
    fig.update_layout(margin=dict(t=124, b=72), legend=dict(y=1.14))  # subplot titles above the plots: legend clear
    fig.update_annotations(font_size=figures.FONT_SIZE)
    fig.update_xaxes(title_text="step k")
    return fig


def _thin(k: int, target: int = 600) -> slice:
    """A stride that keeps about ``target`` of ``k`` points (plots stay light)."""
    return slice(None, None, max(1, k // target))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _lr(default: float, low: float = 0.01, high: float = 1.0, label: str = "α (learning rate)"):
    return panels.log_slider(label, low, high, default)


def _weight_decay(default: float, low: float = 1e-4, high: float = 3e-2):
    return panels.log_slider("λ (weight decay)", low, high, default)


def _momentum(default: float):
    return panels.slider("ρ (momentum)", 0.0, 0.95, default, step=0.05)


def _sgd_controls(weight_decay: float, momentum: float, **more) -> dict:
    """Sliders for α (starting at 0.1), λ and ρ, plus ``more`` controls."""
    return {"lr": _lr(0.1), "weight_decay": _weight_decay(weight_decay), "momentum": _momentum(momentum), **more}


# =========================================================================== 1. shrink vs growth, per layer

def _layer_label(name: str) -> str:
    return f"layer {int(name.split('.')[1]) + 1}"


def balance_figures(res: ex.LayerBalance) -> list[go.Figure]:
    k = res.steps
    fig1 = figures.figure(x_title="step k", y_title="change of ‖w‖² per step (÷ ‖w₀‖²)", log_y=True, height=420,
                          legend_rows=2)
    for i, n in enumerate(res.names):
        c, layer = figures.color(i), _layer_label(n)
        fig1.add_trace(go.Scatter(x=k, y=res.growth[n], mode="lines", line=dict(color=figures.rgba(c, 0.25), width=1),
                                  name=f"{layer}: growth α′²‖g‖² (per step)", legendgroup=n,
                                  showlegend=False, hoverinfo="skip"))
        fig1.add_trace(go.Scatter(x=k, y=res.growth_smooth[n], mode="lines", line=dict(color=c, width=2),
                                  name=f"{layer} growth α′²‖g‖²", legendgroup=n))
        fig1.add_trace(go.Scatter(x=k, y=res.shrink[n], mode="lines", line=dict(color=c, width=3, dash="dash"),
                                  name=f"{layer} shrink 2α′λ‖w‖²", legendgroup=n))
    fig2 = figures.figure(x_title="step k", y_title="‖w‖² / ‖w₀‖²", height=340)
    for i, n in enumerate(res.names):
        fig2.add_trace(go.Scatter(x=k, y=res.sq_norm[n], mode="lines", line=dict(color=figures.color(i), width=2.5),
                                  name=_layer_label(n)))
    tau, shown = res.relaxation, res.relaxation < k[-1]
    fig2.add_trace(go.Scatter(x=[tau, tau] if shown else [], y=[0, 1.5] if shown else [],
                              mode="lines", line=dict(color=GREY, dash="dot", width=2),
                              name="relaxation time (1−ρ)/(4αλ)"))
    figures.tidy_log_axes(fig1, ["yaxis"])          # ~2 decades: 0.005, 0.01, 0.02, ..., not every digit 2..9
    return [figures.span_steps(f, res.record) for f in (fig1, fig2)]


def balance_notes(res: ex.LayerBalance) -> str:
    parts = []
    last = slice(len(res.steps) * 2 // 3, None)
    for n in res.names:
        s, g = np.nanmean(res.shrink[n][last]), np.nanmean(res.growth[n][last])
        parts.append(f"{_layer_label(n)}: growth / shrink = {g / s:.2f}")
    tau = res.relaxation
    tau_txt = "no decay: no equilibrium" if not math.isfinite(tau) else f"relaxation time (1−ρ)/(4αλ) = {tau:.0f} steps"
    return ("Last third of training, " + "; ".join(parts) + f". {tau_txt}. "
            + panels.divergence_notes(res.record, ["this run"]))


def balance_panel(fast: bool | None = None) -> panels.LivePanel:
    return panels.LivePanel(
        compute=functools.partial(ex.layer_balance, steps=sizes(fast).bn_steps, batch_size=32, label_noise=0.3),
        controls=_sgd_controls(5e-3, 0.9),
        build=balance_figures, notes=balance_notes,
        title="Weight decay shrinks, the gradient grows: per layer, per step",
        caption="A batch-normalized MLP on the digits (30% of the training labels randomized, so the gradients "
                "stay noisy), SGD with momentum and weight decay, B = 32. Dashed: the shrink "
                "2α′λ‖w‖² from weight decay; solid: the growth α′²‖g‖² from the orthogonal gradient (α′ = α/(1−ρ); "
                "faint: per step, bold: smoothed). Try λ = 10⁻⁴: the growth wins and the norms climb; at λ = 10⁻² "
                "they meet within a few relaxation times.")


# =========================================================================== 2. equilibrium ratio, collapse

RUN_LABELS = ("(α, λ)", "(4α, λ)", "(α, 4λ)", "(4α, 4λ)")   # the family of ratio_family, in its order


def ratio_figures(res: ex.RatioFamily) -> list[go.Figure]:
    k = res.steps
    # the smoothed ratio and the mean-field map vary over tens of steps (the smoothing window is steps/60): 250
    # points draw them as well as 5000; the noisy ‖w‖² keeps its extremes in 250 columns of the ~870 px plot
    # (figures.thin_traces). Half the points of 500 columns: 05's scrub step, 40 -> 31 ms median (docs/performance.md)
    th = _thin(len(k), 250)
    fig1 = figures.figure(x_title="step k", y_title="‖w‖ / ‖g‖ (smoothed)", log_y=True, height=380)
    fig1.update_yaxes(dtick="D2")    # 1, 2, 5 per decade: over the family's two decades, every digit's label crowds
    for r, lab in enumerate(RUN_LABELS):
        fig1.add_trace(go.Scatter(x=k[th], y=res.ratio[th, r], mode="lines", name=lab,
                                  line=dict(color=figures.color(r), width=2.5), legendgroup=lab))
        fig1.add_trace(go.Scatter(x=[k[0], k[-1]], y=[res.ratio_pred[r]] * 2, mode="lines",
                                  line=dict(color=figures.color(r), width=1.5, dash="dash"),
                                  name="√(α/(2λ(1−ρ)))" if r == 0 else f"√(α/(2λ(1−ρ))) {lab}", legendgroup=lab,
                                  showlegend=r == 0))
    fig2 = figures.figure(x_title="step k", y_title="‖w‖² / √(α/λ)", height=380)
    for r, lab in enumerate(RUN_LABELS):
        fig2.add_trace(go.Scatter(x=k, y=res.sq_norm_scaled[:, r], mode="lines", name=lab, showlegend=False,
                                  line=dict(color=figures.color(r), width=2.5)))
        fig2.add_trace(go.Scatter(x=k[th], y=res.map_scaled[:len(k)][th, r], mode="lines", showlegend=r == 0,
                                  name="mean-field map x ← (1−α′λ)²x + α′²G²/x, G from another seed"
                                  if r == 0 else f"mean-field map {lab}",
                                  line=dict(color=figures.color(r), width=1.5, dash="dot")))
        tau, shown = res.relaxation[r], res.relaxation[r] <= k[-1]
        i = min(int(np.searchsorted(k, tau)), len(k) - 1)
        fig2.add_trace(go.Scatter(x=[k[i]] if shown else [], y=[res.sq_norm_scaled[i, r]] if shown else [],
                                  mode="markers", marker=dict(size=12, color=figures.color(r), symbol="diamond",
                                                              line=dict(color="white", width=1)),
                                  name="one relaxation time (1−ρ)/(4αλ)" if r == 0 else f"one relaxation time {lab}",
                                  showlegend=r == 0))
    return [figures.span_steps(fig1, res.record), figures.span_steps(figures.thin_traces(fig2, 250), res.record)]


def _family_values(res: ex.RatioFamily) -> list[str]:
    return [f"α={_fmt(a)}, λ={_fmt(l)}" for a, l in zip(res.lr, res.weight_decay)]


def ratio_notes(res: ex.RatioFamily) -> str:
    c = res.check
    rows = "".join(f"<tr><td>{html.escape(lab)}</td><td>{html.escape(values)}</td><td>{c['ratio'][r]:.3g}</td>"
                   f"<td>{c['ratio_pred'][r]:.3g}</td><td>{c['ratio_rel'][r]:.3f}</td>"
                   f"<td>{res.grad_scale[r]:.3g}</td><td>{res.sq_norm_late[r]:.3g}</td><td>{res.sq_norm_pred[r]:.3g}</td>"
                   f"<td>{res.sq_norm_rel[r]:.3f}</td><td>{res.relaxation[r]:.0f}</td></tr>"
                   for r, (lab, values) in enumerate(zip(RUN_LABELS, _family_values(res))))
    return ("<table style='border-collapse:collapse'><tr><th>run</th><th>values</th><th>late median ‖w‖/‖g‖</th>"
            "<th>predicted √(α/(2λ(1−ρ)))</th><th>measured / predicted</th>"
            "<th>G from the other seed</th><th>late median ‖w‖²</th><th>the map's late median</th>"
            "<th>measured / predicted</th><th>(1−ρ)/(4αλ)</th></tr>" + rows + "</table>"
            "The dotted map and the predicted ‖w‖² use G measured on the same four settings trained from another "
            "seed (other initial direction, other minibatches), not on the runs plotted. "
            + panels.divergence_notes(res.record, _family_values(res)))


# the λ positions the ratio panel scrubs: 2·10⁻³ × 10^(k/5), k = -6..6 (1.3·10⁻⁴ to 3.2·10⁻²), all trained at once
RATIO_DECAYS = tuple(float(f"{2e-3 * 10 ** (k / 5):.3g}") for k in range(-6, 7))


def ratio_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    s = sizes(fast)
    controls = _sgd_controls(2e-3, 0.0, batch_size=panels.dropdown("B (batch size)", [8, 32, 128], 32))
    del controls["weight_decay"]                     # λ is scrubbed: every position trained at once
    return scrub.ScrubPanel(
        compute=functools.partial(ex.ratio_families, min_steps=s.toy_min_steps, max_steps=s.toy_max_steps),
        controls=controls, scrub=scrub.Scrub("weight_decay", RATIO_DECAYS, "λ (weight decay)",
                                             index=RATIO_DECAYS.index(2e-3)),
        build=ratio_figures, notes=ratio_notes,
        title="The equilibrium ‖w‖/‖g‖ and the √(α/λ) collapse",
        caption="Four runs (α, λ), (4α, λ), (α, 4λ), (4α, 4λ) of the toy scale-invariant model, one batched "
                "computation. Left: ‖w‖/‖g‖ settles on √(α/(2λ(1−ρ))) (dashed). Right: ‖w‖² divided by √(α/λ) "
                "collapses onto one value; dotted: the mean-field map, with G taken from an independent run "
                "(another seed); diamonds mark one relaxation time. Slide ρ to 0.9: the ratio grows "
                "by √10, the relaxation is 10× faster.")


# =========================================================================== 3. SGD + WD is LARS

def lars_figure(res: ex.LarsComparison) -> go.Figure:
    k = res.steps
    th = _thin(len(k), 500)
    fig = _subplots(("per step: LARS coefficient α‖g‖/‖w‖ and the angle turned",
                     "angle between w and the teacher's direction"), height=440, spacing=0.12)
    fig.add_trace(go.Scatter(x=k[th], y=res.sgd_step[th], mode="markers", name="SGD: α‖g‖/‖w‖ (LARS coefficient)",
                             marker=dict(size=5, color=figures.rgba(figures.color(0), 0.45))), 1, 1)
    fig.add_trace(go.Scatter(x=[k[0], k[-1]], y=[res.eta] * 2, mode="lines", name="η = √(2αλ(1−ρ))",
                             line=dict(color="black", width=2.5)), 1, 1)
    fig.add_trace(go.Scatter(x=k[th], y=res.sgd_turn[th], mode="markers", name="SGD: angle turned per step (rad)",
                             marker=dict(size=5, symbol="diamond", color=figures.rgba(figures.color(2), 0.45))), 1, 1)
    fig.add_trace(go.Scatter(x=[k[0], k[-1]], y=[res.turn] * 2, mode="lines",
                             name="predicted RMS angle √(2αλ/(1+ρ))", line=dict(color="black", width=2.5, dash="dash")),
                  1, 1)
    fig.add_trace(go.Scatter(x=k, y=res.sgd_angle, mode="lines", name="SGD + weight decay",
                             line=dict(color=figures.color(0), width=2.5)), 1, 2)
    fig.add_trace(go.Scatter(x=k, y=res.lars_angle, mode="lines", name="LARS, η = √(2αλ(1−ρ)), same ρ, no decay",
                             line=dict(color=figures.color(1), width=2.5)), 1, 2)
    fig.update_yaxes(title_text="α‖g‖/‖w‖ · angle per step (rad)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="∠(w, w*) (radians)", type="log", row=1, col=2)
    return figures.span_steps(fig, res.sgd)            # LARS trains as long as SGD


def lars_notes(res: ex.LarsComparison) -> str:
    c = res.check
    return (f"LARS coefficient: η = √(2αλ(1−ρ)) = {res.eta:.4g}; late median of SGD's α‖g‖/‖w‖ = {c['step'][0]:.4g} "
            f"(measured / predicted {c['step_rel'][0]:.3f}). Angle turned per step (late RMS): SGD "
            f"{res.sgd_turn_rms:.4g}, LARS {res.lars_turn_rms:.4g}; predicted √(2αλ/(1+ρ)) = {res.turn:.4g} "
            f"(SGD measured / predicted {res.sgd_turn_rms / res.turn:.3f}; "
            f"the angle is {res.turn / res.eta:.2f}× η, i.e. 1/√(1−ρ²)). Final angle to the teacher: "
            f"SGD {res.sgd_angle[-1]:.3f}, LARS {res.lars_angle[-1]:.3f} rad. "
            + panels.divergence_notes(res.sgd, ["SGD"]))


def lars_panel(fast: bool | None = None) -> panels.LivePanel:
    s = sizes(fast)
    return panels.LivePanel(
        compute=functools.partial(ex.sgd_vs_lars, min_steps=s.toy_min_steps, max_steps=s.lars_max_steps),
        controls=_sgd_controls(5e-3, 0.9),
        build=lars_figure, notes=lars_notes,
        title="SGD with weight decay takes LARS steps",
        caption="Left: SGD + weight decay's coefficient α‖g‖/‖w‖ (circles) scatters around η = √(2αλ(1−ρ)) "
                "(black), the coefficient LARS puts on every gradient before its momentum buffer. The angle w "
                "actually turns per step (diamonds) is α‖v‖/‖w‖, set by the buffer v: about √(2αλ/(1+ρ)) "
                "(dashed), 1/√(1−ρ²) times η (2.3× at ρ = 0.9; the same at ρ = 0). Right: SGD + weight decay and "
                "LARS with that η and the same ρ, no decay, same minibatches: they learn the direction at a "
                "similar pace. Change α and λ with αλ fixed: nothing changes.")


# =========================================================================== 4. the 2-D picture

ARROW_SCALE = 1.0  # draw the two pieces of one step this many times longer than they are
RUNS_2D = ("no weight decay", "weight decay λ")

#: The last 16 plane runs in memory: the step slider only picks a step of the same runs (the panel passes a progress
#: callback, which the disk cache and this one leave out of the key).
_plane_runs = recent(16)(ex.plane_runs)


def _times(scale: float) -> str:
    return "" if scale == 1 else f", drawn ×{scale:g}"


def plane_figure(result: tuple[ex.PlaneRuns, int]) -> go.Figure:
    """The two runs up to step ``k`` and the two pieces of that step (``result = (runs, k)``)."""
    res, k = result
    decay_piece, grad_piece = res.pieces(k)
    fig = figures.figure(x_title="w₁", y_title="w₂", height=560)
    t = np.linspace(0, 2 * np.pi, 200) if math.isfinite(res.radius) else np.empty(0)   # partial: no circle yet
    fig.add_trace(go.Scatter(x=res.radius * np.cos(t), y=res.radius * np.sin(t), mode="lines",
                             line=dict(color=GREY, dash="dash", width=2),
                             name="equilibrium circle ‖w‖² = G√(α/(2λ))"))
    legends = ("no weight decay (spirals out)", "weight decay λ (settles on the circle)")
    for r in range(2):
        c = figures.color(r)
        w = res.w[:, r]
        fig.add_trace(go.Scatter(x=w[:k + 1, 0], y=w[:k + 1, 1], mode="lines", name=legends[r],
                                 line=dict(color=figures.rgba(c, 0.75), width=1.5)))
        fig.add_trace(go.Scatter(x=[w[k, 0]], y=[w[k, 1]], mode="markers", showlegend=False,
                                 name=f"w at step k, {RUNS_2D[r]}",
                                 marker=dict(size=11, color=c, line=dict(color="white", width=1.5))))
    for r in range(2):
        w0 = res.w[k, r]
        gend = w0 + ARROW_SCALE * grad_piece[r]
        dend = gend + ARROW_SCALE * decay_piece[r]
        for start, end, colour, piece in ((w0, gend, figures.color(2), "gradient step −αg (⊥ w: outward)"),
                                          (gend, dend, figures.color(3), "decay step −αλw (inward)")):
            fig.add_trace(go.Scatter(x=[start[0], end[0]], y=[start[1], end[1]], mode="lines+markers",
                                     line=dict(color=colour, width=3),
                                     marker=dict(symbol="arrow", angleref="previous", size=[0, 14], color=colour),
                                     name=piece + _times(ARROW_SCALE) + ("" if r == 1 else f", {RUNS_2D[r]}"),
                                     showlegend=r == 1))
    fig.update_layout(xaxis=dict(scaleanchor="y", scaleratio=1),   # autorange follows the runs; circles stay round
                      legend=dict(orientation="v", x=1.02, y=1.0, yanchor="top", xanchor="left"),
                      margin=dict(r=332))
    return fig


def plane_notes(result: tuple[ex.PlaneRuns, int]) -> str:
    res, k = result
    decay_piece, grad_piece = res.pieces(k)
    n0, n1 = (np.linalg.norm(res.w[k, r]) for r in range(2))
    if not math.isfinite(res.radius):          # a partial result: the runs so far, the probe not yet trained
        return (f"Step {k}: ‖w‖ = {n0:.3f} without decay, {n1:.3f} with decay. Training… (the circle's radius "
                f"comes from a separate run, trained next).")
    late = np.median(np.linalg.norm(res.w[len(res.w) // 2:, 1], axis=-1))
    return (f"Step {k}: ‖w‖ = {n0:.3f} without decay, {n1:.3f} with decay (circle radius {res.radius:.3f}, "
            f"predicted with G from a run from another seed; late median ‖w‖ of the decayed run / radius = "
            f"{late / res.radius:.3f}). "
            f"‖αg‖ = {np.linalg.norm(grad_piece[1]):.3g}, ‖αλw‖ = {np.linalg.norm(decay_piece[1]):.3g}.")


def plane_panel(fast: bool | None = None) -> panels.LivePanel:
    steps = sizes(fast).plane_steps

    def compute(lr: float, weight_decay: float, step: int, progress=None) -> tuple[ex.PlaneRuns, int]:
        def runs_progress(fraction: float, partial: ex.PlaneRuns | None = None) -> None:
            # the runs so far, drawn at the chosen step or, while they have not reached it, at their last one
            progress(fraction, None if partial is None else (partial, min(int(step), len(partial.w) - 1)))

        runs = _plane_runs(lr, weight_decay, steps, progress=None if progress is None else runs_progress)
        return runs, min(int(step), steps - 1)

    return panels.LivePanel(
        compute=compute,
        controls={"lr": _lr(1.0, 0.1, 3.0), "weight_decay": _weight_decay(0.02, 3e-3, 0.1),
                  "step": panels.int_slider("step k", 0, steps - 1, steps - 1)},
        build=plane_figure, notes=plane_notes,
        title="One step in the plane: outward gradient, inward decay",
        caption="The toy model with a two-dimensional weight. Step through training with the k slider: the green "
                "gradient step is orthogonal to w and pushes it outward (Pythagoras), the purple decay step "
                "pulls it inward. Without decay the weights spiral out; with decay they settle on the circle, whose "
                "radius is predicted from a separate run (another seed).")


# =========================================================================== 5. batch size and linear scaling

def batch_figure(res: ex.BatchScaling, examples: int | None = None) -> go.Figure:
    """``examples``: what each run sees in all (the panel's setting); the two "examples seen" axes span it, so that
    the curves grow across a still axis while the runs stream. ``None``: they autorange."""
    fig = _subplots(("training loss vs examples seen", "angle per step α‖g‖/‖w‖ (ρ = 0)",
                     "cos(gₜ, EMA of earlier g)"), height=430, spacing=0.09)
    for i, n in enumerate(res.factors):
        started = n in res.examples        # a partial result (still training): a factor not started is drawn empty
        seen, loss, cos = (res.examples[n], res.loss[n], res.cos[n]) if started else ([], [], [])
        fig.add_trace(go.Scatter(x=seen, y=loss, mode="lines",
                                 line=dict(color=figures.color(i), width=2),
                                 name=f"n = {n}: batch nB, rate nα", legendgroup=str(n)), 1, 1)
        fig.add_trace(go.Scatter(x=seen[1:], y=cos, mode="lines", showlegend=False,
                                 name=f"n = {n}: cos(gₜ, vₜ₋₁)", line=dict(color=figures.color(i), width=2),
                                 legendgroup=str(n)), 1, 3)
    fig.add_trace(go.Scatter(x=res.n, y=res.step, mode="markers", marker=dict(size=13, color=figures.color(0)),
                             name="measured (late median)"), 1, 2)
    factors = np.asarray(res.factors, dtype=float)   # the predictions need no training: drawn from the first frame
    fig.add_trace(go.Scatter(x=factors, y=res.step_pred, mode="lines", line=dict(color="black", dash="dash"),
                             name="√(2nαλ): √n per step"), 1, 2)
    fig.add_trace(go.Scatter(x=factors, y=res.step_pred[0] * factors, mode="lines",
                             line=dict(color=GREY, dash="dot"), name="n·√(2αλ) (if steps scaled linearly)"), 1, 2)
    seen_axis = dict(title_text="examples seen", range=[0, examples] if examples else None)
    fig.update_xaxes(seen_axis, row=1, col=1)
    pad = 0.12 * max(np.log10(factors.max() / factors.min()), 1.0)     # the markers at the ends stay whole
    fig.update_xaxes(title_text="scale factor n", type="log", tickvals=list(res.factors), row=1, col=2,
                     range=[np.log10(factors.min()) - pad, np.log10(factors.max()) + pad])
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(seen_axis, row=1, col=3)
    fig.update_yaxes(range=[-0.5, 0.5], row=1, col=3)
    return figures.tidy_log_axes(fig, ["yaxis2"])


def batch_notes(res: ex.BatchScaling) -> str:
    B = res.batch_size
    runs = " · ".join(f"n={int(n)}: B={int(n * B)}, α={_fmt(n * res.lr)}" for n in res.n)
    g = " · ".join(f"B={int(n * B)}: G={G:.3g}, G·√B={G * math.sqrt(n * B):.3g}" for n, G in zip(res.n, res.grad_scale))
    corr = ", ".join(f"{c:+.3f}" for c in res.correlation)
    return (f"Runs: {runs}. Gradient norm at unit weight norm G (noise dominated if G·√B is constant): {g}. "
            f"Mean cos(gₜ, vₜ₋₁) per n: {corr}.")


def batch_panel(fast: bool | None = None) -> panels.LivePanel:
    examples = sizes(fast).batch_examples
    return panels.LivePanel(
        compute=functools.partial(ex.batch_scaling, factors=(1, 2, 4, 8), examples=examples),
        controls={"lr": _lr(0.02, 0.005, 0.2, label="α (learning rate at n = 1)"),
                  "weight_decay": _weight_decay(5e-3, 1e-3, 3e-2),
                  "batch_size": panels.dropdown("B (batch size at n = 1)", [4, 8, 16], 8)},
        build=functools.partial(batch_figure, examples=examples), notes=batch_notes,
        title="The linear scaling rule, seen through the equilibrium",
        caption="Scale the batch size and the learning rate together by n = 1, 2, 4, 8 and train on the same "
                "number of examples. Middle: each step turns w by √n more, not n. Left: the loss curves still "
                "agree per example seen, because the gradient norm falls as 1/√B (notes) and successive batch "
                "gradients are nearly orthogonal (right).")


# =========================================================================== 6. Labatie: effective LR, not capacity

LABATIE_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def _decay_labels() -> list[str]:
    return [f"λ = {_fmt(l)}" if l > 0 else "λ = 0" for l in LABATIE_DECAYS]


def labatie_figure(res: ex.DecayStrengths) -> go.Figure:
    k = res.steps
    fig = _subplots(("effective learning rate α/‖w‖² (hidden layers)", "angular step per step (smoothed)"),
                    height=420, spacing=0.12)
    for r, lab in enumerate(_decay_labels()):
        c = figures.color(r)
        fig.add_trace(go.Scatter(x=k, y=res.effective_lr[:, r], mode="lines", name=lab, legendgroup=lab,
                                 line=dict(color=c, width=2.5)), 1, 1)
        fig.add_trace(go.Scatter(x=k, y=res.angular_step[:, r], mode="lines", name=f"{lab}: angular step",
                                 legendgroup=lab, showlegend=False, line=dict(color=c, width=2.5)), 1, 2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", title_text="radians", row=1, col=2)
    return figures.span_steps(fig, res.record)


def labatie_notes(res: ex.DecayStrengths) -> str:
    rows = "".join(f"<tr><td>{lab}</td><td>{res.effective_lr[-1, r]:.3g}</td><td>{res.train_accuracy[r]:.3f}</td>"
                   f"<td>{res.test_accuracy[r]:.3f}</td><td>{res.test_loss[r]:.3f}</td>"
                   f"<td>{res.output_gap[r]:.1e}</td></tr>"
                   for r, lab in enumerate(_decay_labels()))
    return ("<table><tr><th>run</th><th>final α/‖w‖²</th><th>train acc.</th><th>test acc.</th><th>test loss</th>"
            "<th>relative change of f when the hidden weights ×10</th></tr>" + rows + "</table>"
            + panels.divergence_notes(res.record, _decay_labels()))


def labatie_panel(fast: bool | None = None) -> panels.LivePanel:
    return panels.LivePanel(
        compute=functools.partial(ex.decay_strengths, decays=LABATIE_DECAYS, steps=sizes(fast).bn_steps),
        controls={"lr": _lr(0.1), "momentum": _momentum(0.9)},
        build=labatie_figure, notes=labatie_notes,
        title="What weight decay changes in a normalized network: the effective learning rate",
        caption="Four decay strengths λ, applied to the batch-normalized hidden weights only, trained as one batched "
                "computation (same start, same minibatches). "
                "Multiplying the hidden weights by 10 leaves the network's outputs unchanged (last column): "
                "the norm is no capacity. What λ does change is α/‖w‖², and with it how far each noisy step "
                "turns the weights.")
