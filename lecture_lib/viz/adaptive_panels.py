"""Figures and live panels of notebook 01, "Adaptive gradient methods and grafting".

Each section of the notebook calls one ``*_panel()`` function. Every panel follows
the same three layers:

* a **compute** function of the control values: an experiment of
  :mod:`lecture_lib.experiments.adaptive` (real PyTorch), called in one line, whose
  result the panel caches;
* a **pure figure builder** ``result -> go.Figure`` that draws every trace (each
  with a fixed, unique name), used both to build the figure and to update it.

``fast=True`` (default: :func:`lecture_lib.viz.fast_mode`, i.e. ``LECTURE_FAST=1``)
chooses small step counts and data sizes.
"""
from __future__ import annotations

import functools
import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..experiments import adaptive as experiments
from ..record import smooth
from . import fast_mode, figures, panels, scrub

GREY = "#9aa3ad"
LABELS = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam"}




# =========================================================================== 1. trajectories

BOX = ((-4.5, 4.5), (-4.5, 4.5))
CONDITION = 100.0


def _finite(path: np.ndarray, diverged: int) -> np.ndarray:
    return path if diverged < 0 else path[:max(diverged, 1)]


#: The contour levels of J drawn under the paths: 10^-2.5 ... 10^1.5.
TRAJECTORY_LEVELS = tuple(10.0 ** (k / 2) for k in range(-5, 4))


@functools.lru_cache(maxsize=8)
def _trajectory_canvas(hessian: tuple, minimum: tuple, steps: int) -> tuple[dict, dict]:
    """What no α or β changes in :func:`trajectory_figure`: its layout as plotly JSON, and the contours
    of J (a function of the valley's angle only) as one line trace's arguments. Every axis has a fixed
    range (the step axis: all ``steps``, also when a path diverged early), so that a slider moved back
    redraws the paths alone in the page (:mod:`lecture_lib.viz.recall`).

    Validated once per valley: the redraw after a slider move then sends and draws the paths only (the
    contours' data are equal between results, so the panel's update leaves them out, and the browser
    draws ellipses instead of running a contour plot's marching squares again)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.48, 0.52], horizontal_spacing=0.1)
    figures.style(fig, height=460)
    fig.update_xaxes(title_text="w₁", range=list(BOX[0]), constrain="domain", row=1, col=1)
    fig.update_yaxes(title_text="w₂", range=list(BOX[1]), scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_xaxes(title_text="step k", range=[0, steps], row=1, col=2)
    fig.update_yaxes(title_text="J(w) (loss)", type="log", exponentformat="power", dtick=1, range=[-8, 1.5], row=1, col=2)
    contours = figures.quadratic_contours(np.reshape(hessian, (2, 2)), minimum, TRAJECTORY_LEVELS)
    return fig.layout.to_plotly_json(), dict(x=contours.x, y=contours.y)


def trajectory_figure(result: experiments.Trajectories) -> go.Figure:
    """Left: the valley's contours with the three paths. Right: the loss of each against the step."""
    q = result.quadratic
    steps = len(next(iter(result.paths.values()))) - 1
    layout, contours = _trajectory_canvas(tuple(q.hessian.flatten().tolist()), tuple(q.minimum.tolist()), steps)
    traces = [go.Scatter(**contours, mode="lines", line=dict(color=figures.CONTOUR_COLOR, width=1),
                         hoverinfo="skip", showlegend=False, name="contours of J")]
    for i, (name, path) in enumerate(result.paths.items()):
        d = result.diverged_at[name]
        p = _finite(path, d)
        traces.append(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines+markers", name=name, legendgroup=name,
                                 line=dict(color=figures.color(i), width=2), marker=dict(size=4, color=figures.color(i)),
                                 hovertemplate=f"{name}<br>w = (%{{x:.3f}}, %{{y:.3f}})<extra></extra>"))
        loss = np.maximum(_finite(result.loss[name], d), 1e-16)
        traces.append(go.Scatter(x=np.arange(len(loss)), y=loss, mode="lines", legendgroup=name, showlegend=False,
                                 name=f"{name}: loss", line=dict(color=figures.color(i), width=2.5),
                                 xaxis="x2", yaxis="y2"))
    traces.append(go.Scatter(x=[result.start[0]], y=[result.start[1]], mode="markers", name="start w₀",
                             marker=dict(size=11, color="#222", symbol="circle-open", line=dict(width=2))))
    traces.append(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="minimum w*",
                             marker=dict(size=14, color="#222", symbol="star")))
    # the layout was validated once; each trace was validated as it was built
    return go.Figure(data=traces, layout=layout, _validate=False)


def _trajectory_notes(result: experiments.Trajectories) -> str:
    bits = []
    for name, loss in result.loss.items():
        d = result.diverged_at[name]
        if d >= 0:
            bits.append(f"<span class='lecture-diverged'>{name}: diverged at step {d}</span>")
        else:
            bits.append(f"{name}: J = {loss[-1]:.2g} after {len(loss) - 1} steps")
    return " · ".join(bits)


def trajectories_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 1: SGD vs RMSprop vs Adam on a 2-D valley; sliders α (two), β and the valley's angle."""
    fast = fast_mode() if fast is None else fast
    return panels.LivePanel(
        compute=functools.partial(experiments.trajectories, condition=CONDITION, steps=40 if fast else 150),
        controls={
            "lr_sgd": panels.log_slider("α for SGD", 1e-2, 3.0, 1.6),
            "lr_adaptive": panels.log_slider("α for RMSprop and Adam", 1e-3, 1.0, 0.1),
            "beta2": panels.slider("β (second-moment decay)", 0.0, 0.999, 0.9, step=0.001),
            "angle": panels.slider("θ (valley angle, degrees)", 0.0, 90.0, 0.0, step=5.0, readout_format=".0f"),
        },
        build=trajectory_figure,
        notes=_trajectory_notes,
        title="Diagonal preconditioning on an ill-conditioned valley",
        caption=("Curvatures 1 and 1/100. At θ = 0 the valley lies along the axes: RMSprop and Adam head for the "
                 "minimum while SGD zigzags and then crawls along the floor. Turn θ: SGD's path turns rigidly with "
                 "the valley (it does not care about coordinates), the diagonal methods' paths change shape. "
                 "Push SGD's α past 2 to see it diverge."),
    )


# =========================================================================== 2. empirical vs true Fisher

def _fisher_range(result: experiments.FisherComparison) -> list[float]:
    """Log-axis range holding both diagonals along both paths (the axes stay put while r and the data change)."""
    values = np.concatenate([np.concatenate([p.empirical.ravel(), p.true.ravel()]) for p in result.paths.values()])
    values = values[values > 0]
    return [np.log10(values.min()) - 0.15, np.log10(values.max()) + 0.15]


def fisher_figure(result: experiments.FisherComparison) -> go.Figure:
    """Left: diag F_emp against diag F, one point per weight (y = x dashed). Right: their gap along the path."""
    lo, hi = _fisher_range(result)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12)
    fig.add_trace(figures.reference_line([10 ** lo, 10 ** hi], [10 ** lo, 10 ** hi], "F_emp = F"), row=1, col=1)
    fig.add_trace(go.Scatter(x=result.true, y=result.empirical, mode="markers", name="weights wⱼ",
                             marker=dict(size=12, color=figures.color(1 if result.misspecified else 0),
                                         line=dict(width=1, color="#222")),
                             text=[f"w{j + 1}" for j in range(len(result.true))],
                             hovertemplate="%{text}<br>F = %{x:.3g}<br>F_emp = %{y:.3g}<extra></extra>"),
                  row=1, col=1)
    for i, m in enumerate((False, True)):
        p = result.paths[m]
        fig.add_trace(go.Scatter(x=p.distances, y=p.relative_difference, mode="lines",
                                 name="gap, misspecified" if m else "gap, well specified",
                                 line=dict(color=figures.color(i), width=2.5)), row=1, col=2)
    fig.add_trace(go.Scatter(x=[result.distance], y=[result.relative_difference], mode="markers",
                             name="current weights", marker=dict(size=13, color="#222", symbol="diamond")),
                  row=1, col=2)
    figures.style(fig, height=460)
    fig.update_xaxes(title_text="diag F (labels sampled from the model)", type="log", exponentformat="power", dtick=1,
                     range=[lo, hi], constrain="domain", row=1, col=1)
    fig.update_yaxes(title_text="diag F_emp (labels from the data)", type="log", exponentformat="power", dtick=1,
                     range=[lo, hi], scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_xaxes(title_text="distance from the optimum r (units of ‖w_opt‖)", row=1, col=2)
    fig.update_yaxes(title_text="‖diag F_emp − diag F‖ / ‖diag F‖", type="log", exponentformat="power", dtick=1,
                     row=1, col=2)
    return fig


def _fisher_notes(result: experiments.FisherComparison) -> str:
    ratio = result.empirical / result.true
    return (f"r = {result.distance:.2f}: relative difference {result.relative_difference:.3f}; "
            f"F_emp / F per weight between {ratio.min():.2f} and {ratio.max():.2f}")


def fisher_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 2: empirical vs true Fisher diagonals of logistic regression; distance slider, misspecification toggle."""
    n = 5000 if (fast_mode() if fast is None else fast) else 20000
    return panels.LivePanel(
        compute=functools.partial(experiments.fisher_comparison, n=n, max_distance=2.0, path_points=41),
        controls={"distance": panels.slider("r (distance from the fitted optimum)", 0.0, 2.0, 0.0, step=0.05),
                  "misspecified": panels.toggle("misspecified data (outliers with coin-flip labels)", False)},
        build=fisher_figure,
        notes=_fisher_notes,
        title="Empirical vs true Fisher on a logistic regression",
        caption=(f"{n} examples, 8 weights whose Fisher entries span two decades. At r = 0 with well-specified "
                 "data every point sits on the diagonal; slide r up, or switch on the misspecification, and the "
                 "empirical Fisher overshoots."),
    )


# =========================================================================== 3. L2 vs decoupled weight decay

LR_SGD = 0.2
DECAY_NAMES = experiments.DECAY_OPTIMIZERS

DECAY_BOX = ((-0.3, 1.6), (-0.3, 3.2))


#: The contour levels of J − J* drawn under the paths: 10^-3 ... 10^0.5.
DECAY_LEVELS = tuple(10.0 ** (k / 2) for k in range(-6, 2))

STYLES = {"SGD + L2": (0, None, 5), "SGDW": (5, "dot", 0), "Adam + L2": (1, None, 3), "AdamW": (2, None, 3)}


@functools.lru_cache(maxsize=4)
def _decay_canvas(problem) -> tuple[dict, dict]:
    """What no λ or α changes in :func:`decay_figure`: its layout (three subplots, axes, house style) as
    plotly JSON, and the contours of J as one line trace's data.

    Computed and validated once per problem: validating this layout again costs more than all the traces,
    and a scrubbed family draws 13 figures.
    """
    fig = make_subplots(rows=1, cols=3, column_widths=[0.3, 0.35, 0.35], horizontal_spacing=0.08,
                        subplot_titles=("", "w₁ (feature scale 1)",
                                        "w₂ (feature scale 0.2)"))
    figures.style(fig, height=470)
    fig.update_xaxes(title_text="w₁", range=list(DECAY_BOX[0]), row=1, col=1)
    fig.update_yaxes(title_text="w₂", range=list(DECAY_BOX[1]), row=1, col=1)
    for j, top in ((2, 1.15), (3, 3.0)):
        fig.update_xaxes(type="log", exponentformat="power", dtick=1, title_text="λ (weight decay)", row=1, col=j)
        fig.update_yaxes(range=[-0.1, top], title_text="final weight" if j == 2 else None, row=1, col=j)
    fig.update_layout(margin=dict(t=125), legend=dict(y=1.16))
    # J − J* = ½ (w − w*)ᵀ H (w − w*) with H = XᵀX / n: its level sets are ellipses
    contours = figures.quadratic_contours(problem.hessian.numpy(), problem.least_squares.numpy(), DECAY_LEVELS)
    return fig.layout.to_plotly_json(), dict(x=contours.x, y=contours.y)


def decay_figure(result: experiments.DecayComparison) -> go.Figure:
    """Left: paths at the chosen λ on the contours of J. Middle, right: each final weight against λ."""
    sweep = result.sweep
    layout, contours = _decay_canvas(result.problem)
    traces = [go.Scatter(**contours, mode="lines", line=dict(color=figures.CONTOUR_COLOR, width=1), hoverinfo="skip",
                         showlegend=False, name="contours of J", xaxis="x", yaxis="y")]
    for name in DECAY_NAMES:
        c, dash, _ = STYLES[name]
        p = sweep.paths[name][:, -1]
        d = int(sweep.diverged_at[name][-1])
        p = p if d < 0 else p[:max(d, 1)]
        traces.append(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name=name, legendgroup=name,
                                 line=dict(color=figures.color(c), width=2.5 if dash else 1.2, dash=dash),
                                 hovertemplate=f"{name}<br>w = (%{{x:.3f}}, %{{y:.3f}})<extra></extra>",
                                 xaxis="x", yaxis="y"))
    ls, ridge = sweep.least_squares, sweep.ridge[-1]
    # AdamW's C is known once it has trained: a partial sweep (still streaming) draws no prediction before that
    predicted = sweep.decoupled_prediction.get("AdamW", np.full_like(sweep.ridge, np.nan))
    pred = predicted[-1]
    traces.append(go.Scatter(x=[ls[0]], y=[ls[1]], mode="markers", name="minimum of J",
                             marker=dict(size=15, color="#222", symbol="star"), xaxis="x", yaxis="y"))
    traces.append(go.Scatter(x=[ridge[0]], y=[ridge[1]], mode="markers", name="minimum of J + (λ/2)‖w‖²",
                             legendgroup="ridge", marker=dict(size=13, color="#222", symbol="diamond-open",
                                                              line=dict(width=2.5)), xaxis="x", yaxis="y"))
    traces.append(go.Scatter(x=[pred[0]], y=[pred[1]], mode="markers", name="minimum of J + (λ/2)wᵀCw",
                             legendgroup="pred", marker=dict(size=13, color=figures.color(2), symbol="square-open",
                                                             line=dict(width=2.5)), xaxis="x", yaxis="y"))

    grid_wd = sweep.weight_decays[:-1]
    chosen = result.weight_decay
    for j in range(2):
        w, axes = ("w₁", "w₂")[j], dict(xaxis=f"x{j + 2}", yaxis=f"y{j + 2}")      # subplots 2 and 3
        column = [
            go.Scatter(x=grid_wd, y=sweep.ridge[:-1, j], mode="lines", name=f"ridge minimum ({w})",
                       line=dict(color=GREY, width=7), showlegend=False, legendgroup="ridge", opacity=0.6, **axes),
            go.Scatter(x=grid_wd, y=predicted[:-1, j], mode="lines",
                       name=f"J + (λ/2)wᵀCw prediction ({w})", showlegend=False, legendgroup="pred",
                       line=dict(color=figures.rgba(figures.color(2), 0.4), width=7), **axes)]
        for name in DECAY_NAMES:
            c, dash, size = STYLES[name]
            column.append(go.Scatter(x=grid_wd, y=sweep.final[name][:-1, j], name=f"{name} ({w})", legendgroup=name,
                                     mode="lines+markers" if size else "lines", showlegend=False,
                                     line=dict(color=figures.color(c), width=3 if dash else 1.5, dash=dash),
                                     marker=dict(size=size + 2, color=figures.color(c)), **axes))
        top = 1.15 if j == 0 else 3.0
        column.append(go.Scatter(x=[chosen, chosen], y=[-0.1, top], mode="lines", name=f"chosen λ ({w})",
                                 line=dict(color="#222", width=1, dash="dash"), showlegend=False, hoverinfo="skip",
                                 **axes))
        traces += column
    # the layout was validated once; each trace was validated as it was built
    return go.Figure(data=traces, layout=layout, _validate=False)


def _decay_notes(result: experiments.DecayComparison) -> str:
    sweep = result.sweep
    lines = [f"paths at λ = {result.weight_decay:.3g}, α = {result.lr:.3g} (Adam, AdamW)"]
    for name in DECAY_NAMES:
        d = int(sweep.diverged_at[name][-1])
        if d >= 0:
            lines.append(f"<span class='lecture-diverged'>{name}: diverged at step {d}</span>")
    gap = np.abs(sweep.paths["SGD + L2"] - sweep.paths["SGDW"]).max()
    lines.append(f"largest difference between the SGD + L2 and SGDW iterates: {gap:.1e}")
    return " · ".join(lines)


#: The λ positions of the weight-decay panel's scrubber: the sweep's own grid (three decades, 13 values).
DECAY_GRID = experiments.DECAY_GRID


def decay_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Section 3: Adam + L2 vs AdamW (and SGD + L2 vs SGDW) from the same start; α recomputes, λ scrubs.

    λ is the slider that carries the section's point (AdamW leaves w₂ alone as λ grows): every λ of the
    sweep is already trained in the same batched run, so the family costs what one λ did.
    """
    steps = 150 if (fast_mode() if fast is None else fast) else 600
    return scrub.ScrubPanel(
        compute=functools.partial(experiments.decay_comparisons, steps=steps, batch_size=8, lr_sgd=LR_SGD),
        controls={"lr": panels.log_slider("α for Adam / AdamW", 1e-3, 0.2, 0.02)},
        scrub=scrub.Scrub("weight_decay", DECAY_GRID, "λ (weight decay)", index=10),     # λ ≈ 0.32
        build=decay_figure,
        notes=_decay_notes,
        title="L2 regularization vs decoupled weight decay",
        caption=(f"Linear regression on two features of scales 1 and 0.2, minibatches of 8, {steps} steps, "
                 f"SGD with α = {LR_SGD}. Each λ-sweep is one batched run. Raise λ: SGD + L2 and SGDW stay on top of "
                 "each other and of the ridge solution, Adam + L2 too, but AdamW settles where J + (λ/2)wᵀCw is "
                 "smallest and barely shrinks w₂."),
    )


def sgd_identity_figures(result: experiments.SGDDecayIdentity) -> list[go.Figure]:
    """The gap between SGD + L2 and SGDW over the steps (ρ = 0 and the chosen ρ); their paths and the two ridge points."""
    rho = result.momentum
    steps = np.arange(len(result.gap(0.0)))
    gaps = figures.figure([
        go.Scatter(x=steps, y=result.gap(0.0), mode="lines", name="ρ = 0: ‖w(SGD + L2) − w(SGDW)‖",
                   line=dict(color=figures.color(0), width=3)),
        go.Scatter(x=steps, y=result.gap(rho), mode="lines", name="chosen ρ: ‖w(SGD + L2) − w(SGDW)‖",
                   line=dict(color=figures.color(1), width=3)),
        go.Scatter(x=[2], y=[result.predicted_second_step_gap], mode="markers", name="predicted at k = 2: αρλ‖w₀‖",
                   marker=dict(size=12, symbol="x", color="#222")),
    ], x_title="step k", y_title="distance between the iterates", height=330)
    traces = []
    for i, (r, dash) in enumerate(((0.0, None), (rho, "dot"))):
        for j, name in enumerate(("SGD + L2", "SGDW")):
            path = result.paths[r][name]
            traces.append(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines",
                                     name=f"{name}, {'ρ = 0' if i == 0 else 'chosen ρ'}",
                                     line=dict(color=figures.color(2 * j), width=4 - 2 * j, dash=dash)))
    for j, (label, point) in enumerate(result.ridge.items()):
        traces.append(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name=f"ridge solution, {label}",
                                 marker=dict(size=14, symbol=["star", "diamond"][j], color=GREY,
                                             line=dict(width=1.5, color="#222"))))
    paths = figures.figure(traces, x_title="w₁", y_title="w₂", height=380)
    return [gaps, paths]


def _sgd_identity_notes(result: experiments.SGDDecayIdentity) -> str:
    rho = result.momentum
    end = result.paths[rho]
    far = {name: float(np.linalg.norm(end[name][-1] - result.ridge[key]))
           for name, key in (("SGD + L2", "λ"), ("SGDW", "(1−ρ)λ"))}
    return (f"ρ = 0: largest ‖w(SGD + L2) − w(SGDW)‖ over {len(result.gap(0.0)) - 1} steps = "
            f"<b>{result.gap(0.0).max():.1e}</b> · ρ = {rho:g}: at step 2 the gap is {result.gap(rho)[2]:.6g} vs "
            f"αρλ‖w₀‖ = {result.predicted_second_step_gap:.6g}; at the end SGD + L2 is {far['SGD + L2']:.1e} from the "
            f"ridge point of λ and SGDW {far['SGDW']:.1e} from that of (1 − ρ)λ")


#: The ρ positions of the SGD identity panel's scrubber, trained together.
MOMENTA = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def sgd_identity_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Section 3: the identity SGD + L2 = SGDW holds without momentum; ρ scrubs (all ρ one batched run), λ recomputes."""
    steps = 300 if (fast_mode() if fast is None else fast) else 600
    return scrub.ScrubPanel(
        compute=functools.partial(experiments.sgd_decay_identities, steps=steps, lr=0.05),
        controls={"weight_decay": panels.log_slider("λ (weight decay)", 1e-2, 1.0, 0.3)},
        scrub=scrub.Scrub("momentum", MOMENTA, "ρ (momentum)", index=MOMENTA.index(0.9)),
        build=sgd_identity_figures,
        notes=_sgd_identity_notes,
        title="SGD: L2 = weight decay without momentum, not with it",
        caption=(f"Full-batch gradients of the same regression, α = 0.05, {steps} steps, start w₀ = (−1, 4). "
                 "PyTorch's SGD (L2 inside the momentum buffer) against SGDW (decay added after the buffer). "
                 "At ρ = 0 the two paths are one; with momentum they part at step 2 and settle at different "
                 "ridge points."),
    )


# =========================================================================== 4. grafting

OPTIMIZER_CHOICES = {f"{LABELS[name]} (α = {lr:g})": name for name, lr in experiments.DEFAULT_LR.items()}


def grafting_figures(result: experiments.GraftingResult) -> list[go.Figure]:
    """Training loss of M, D and graft(M, D); per-layer step norms of the grafted run against M's and D's.

    The legend names the roles (M, D, graft), not the optimizers: the dropdowns say which is which.
    """
    loss_traces = []
    records = list(result.records.values())
    for i, text in enumerate(("M (magnitude)", "D (direction)", "graft: |M| × dir(D)")):
        # a streamed partial: the runs not trained yet are empty traces, so the page redraws the data alone
        rec = records[i] if i < len(records) else None
        n = figures.finite_prefix(rec.loss[:, 0]) if rec is not None else 0
        x, y = (rec.steps[:n], smooth(rec.loss[:n, 0], 5)) if n else ([], [])
        loss_traces.append(go.Scatter(x=x, y=y, mode="lines", name=text,
                                      line=dict(color=figures.color([0, 1, 6][i]), width=[2.5, 2.5, 3.5][i],
                                                dash=[None, None, "dash"][i])))
    losses = figures.figure(loss_traces, x_title="step k", y_title="training loss (minibatch, smoothed)",
                            log_y=True, height=420)
    losses.update_yaxes(dtick=1)

    norm_traces = []
    weights = [i for i, n in enumerate(result.layer_names) if n.endswith("weight")]
    for c, i in enumerate(weights):
        layer = f"layer {c + 1}"
        color = figures.color(c + 2)
        norm_traces.append(go.Scatter(x=result.steps, y=result.step_norms["graft"][:, i], mode="lines",
                                      name=f"{layer}: grafted step", legendgroup=layer,
                                      line=dict(color=color, width=3)))
        norm_traces.append(go.Scatter(x=result.steps[::3], y=result.step_norms["M"][::3, i], mode="markers",
                                      name=f"{layer}: M's step", legendgroup=layer,
                                      marker=dict(size=8, symbol="circle-open", color="#222", line=dict(width=1.5))))
        norm_traces.append(go.Scatter(x=result.steps, y=result.step_norms["D"][:, i], mode="lines",
                                      name=f"{layer}: D's step", legendgroup=layer,
                                      line=dict(color=color, width=1.5, dash="dot")))
    norms = figures.figure(norm_traces, x_title="step k", y_title="per-layer step norm ‖Δw_ℓ‖", log_y=True,
                           height=420, legend_rows=3)
    norms.update_yaxes(dtick=1)
    return [figures.span_steps(f, records) for f in (losses, norms)]


def _grafting_notes(result: experiments.GraftingResult) -> str:
    s = result.step_norms
    ok = np.isfinite(s["graft"]).all(axis=1)
    ratio = np.abs(s["graft"][ok] / s["M"][ok] - 1).max() if ok.any() else float("nan")
    cos = s["cos_D"][ok].min() if ok.any() else float("nan")
    parts = [f"along the grafted run, every layer ℓ: max |‖Δw<sub>ℓ</sub>‖ / ‖Δw<sub>ℓ</sub><sup>M</sup>‖ − 1| = "
             f"{ratio:.1e}, min cos(Δw<sub>ℓ</sub>, Δw<sub>ℓ</sub><sup>D</sup>) = {cos:.6f}"]
    for label, rec in result.records.items():
        note = rec.divergence_note(0)
        if note:
            parts.append(f"<span class='lecture-diverged'>{html.escape(label)}: {note}</span>")
        else:
            parts.append(f"{html.escape(label)}: final loss {np.mean(rec.loss[-10:, 0]):.3f}")
    return " · ".join(parts)


def grafting_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 4: AdaGraft on the digits; dropdowns choose the magnitude M and the direction D."""
    steps = 60 if (fast_mode() if fast is None else fast) else 300
    return panels.LivePanel(
        compute=functools.partial(experiments.grafting_experiment, steps=steps, batch_size=64, record_every=2),
        controls={"magnitude": panels.dropdown("M (step size from)", OPTIMIZER_CHOICES, "rmsprop"),
                  "direction": panels.dropdown("D (direction from)", OPTIMIZER_CHOICES, "sgd")},
        build=grafting_figures,
        notes=_grafting_notes,
        title="Grafting: one optimizer's step size, another's direction",
        caption=(f"A 64-64-64-10 ReLU network on the 8×8 digits, {steps} steps of minibatches of 64, same "
                 "start and same minibatches for all three runs. Try M = RMSprop, D = SGD, then swap them: which "
                 "curve does the graft follow? On the right, the grafted step (line) sits exactly on M's (circles)."),
    )
