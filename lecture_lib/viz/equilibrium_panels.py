"""Figures and live panels of notebook 05, "The weight-decay equilibrium".

Each section of the notebook calls one ``*_panel()`` function. Every panel has three layers:

* a **compute** function of the control values running real PyTorch through
  :mod:`lecture_lib.equilibrium` (families of settings as one batched computation);
* a **pure figure builder** ``result -> go.Figure`` drawing every trace;
* an **update** copying the new trace data onto the figure widget built once.

Step counts shrink when :data:`lecture_lib.viz.FAST` is set (``LECTURE_FAST=1``).
"""
from __future__ import annotations

import functools
import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import equilibrium as eq
from . import FAST, figures, panels

GREY = "#9aa3ad"

def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def _style(fig: go.Figure, height: int = figures.HEIGHT, **layout) -> go.Figure:
    """The house layout (fonts, palette, legend on top) for figures built with subplots."""
    base = figures.base_layout(height=height)
    fig.update_layout(template=base.template, font=base.font, colorway=base.colorway, height=height,
                      margin=base.margin, legend=base.legend, hovermode="closest", hoverlabel=base.hoverlabel,
                      uirevision="lecture", **layout)
    fig.update_xaxes(showline=True, linecolor="#888", zeroline=False)
    fig.update_yaxes(showline=True, linecolor="#888", zeroline=False)
    # subplot titles sit just above the plots; keep the legend clear of them
    fig.update_layout(margin=dict(t=110), legend=dict(y=1.14))
    fig.update_annotations(font_size=figures.FONT_SIZE)
    return fig


def _thin(k: int, target: int = 600) -> slice:
    """A stride that keeps about ``target`` of ``k`` points (plots stay light)."""
    return slice(None, None, max(1, k // target))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _update(fig, result, builder, layout_keys=()):
    figures.copy_trace_data(fig, builder(result), layout_keys=layout_keys)


# =========================================================================== 1. shrink vs growth, per layer

BN_STEPS = 150 if FAST else 600


def balance_compute(lr: float, weight_decay: float, momentum: float) -> dict:
    """Train the BN network once; per scale-invariant layer, the per-step shrink and growth of ‖w‖²."""
    rec = eq.train_bn_network(lr, weight_decay, momentum, steps=BN_STEPS, batch_size=32, label_noise=0.3)
    names = eq.scale_invariant_names(rec)
    out = {"steps": rec.steps, "names": names, "tau": eq.relaxation_steps(lr, weight_decay, momentum)
           if weight_decay > 0 else math.inf, "record": rec}
    for n in names:
        w, g = rec.param_norm[n][:, 0], rec.grad_norm[n][:, 0]
        shrink, growth = eq.norm_balance(w, g, lr, weight_decay, momentum)
        w0 = w[0] ** 2  # Myrtle normalizes every layer to ||w||^2 = 1 at the start
        out[n] = {"shrink": shrink / w0, "growth": growth / w0, "growth_smooth": eq.smooth(growth / w0, 25),
                  "w2": w ** 2 / w0}
    return out


def _layer_label(name: str) -> str:
    return f"layer {int(name.split('.')[1]) + 1}"


def balance_figures(res: dict) -> list[go.Figure]:
    k = res["steps"]
    fig1 = figures.figure(x_title="step k", y_title="change of ‖w‖² per step (÷ ‖w₀‖²)", log_y=True, height=420)
    for i, n in enumerate(res["names"]):
        c = figures.color(i)
        fig1.add_trace(go.Scatter(x=k, y=res[n]["growth"], mode="lines", line=dict(color=_rgba(c, 0.25), width=1),
                                  name=f"{_layer_label(n)}: growth α′²‖g‖² (per step)", legendgroup=n,
                                  showlegend=False, hoverinfo="skip"))
        fig1.add_trace(go.Scatter(x=k, y=res[n]["growth_smooth"], mode="lines", line=dict(color=c, width=2),
                                  name=f"{_layer_label(n)} growth α′²‖g‖²", legendgroup=n))
        fig1.add_trace(go.Scatter(x=k, y=res[n]["shrink"], mode="lines", line=dict(color=c, width=3, dash="dash"),
                                  name=f"{_layer_label(n)} shrink 2α′λ‖w‖²", legendgroup=n))
    fig2 = figures.figure(x_title="step k", y_title="‖w‖² / ‖w₀‖²", height=340)
    for i, n in enumerate(res["names"]):
        fig2.add_trace(go.Scatter(x=k, y=res[n]["w2"], mode="lines", line=dict(color=figures.color(i), width=2.5),
                                  name=_layer_label(n)))
    tau = res["tau"]
    fig2.add_trace(go.Scatter(x=[tau, tau] if tau < k[-1] else [], y=[0, 1.5] if tau < k[-1] else [],
                              mode="lines", line=dict(color=GREY, dash="dot", width=2),
                              name="relaxation time (1−ρ)/(4αλ)"))
    return [fig1, fig2]


def balance_notes(res: dict) -> str:
    parts = []
    last = slice(len(res["steps"]) * 2 // 3, None)
    for n in res["names"]:
        s, g = np.nanmean(res[n]["shrink"][last]), np.nanmean(res[n]["growth"][last])
        parts.append(f"{_layer_label(n)}: growth / shrink = {g / s:.2f}")
    tau = res["tau"]
    tau_txt = "no decay: no equilibrium" if not math.isfinite(tau) else f"relaxation time (1−ρ)/(4αλ) = {tau:.0f} steps"
    return ("Last third of training, " + "; ".join(parts) + f". {tau_txt}. "
            + panels.divergence_notes(res["record"], ["this run"]))


def balance_panel():
    controls = {"lr": panels.log_slider("α (learning rate)", 0.01, 1.0, 0.1),
                "weight_decay": panels.log_slider("λ (weight decay)", 1e-4, 3e-2, 5e-3),
                "momentum": panels.slider("ρ (momentum)", 0.0, 0.95, 0.9, step=0.05)}
    first = balance_compute(0.1, 5e-3, 0.9)
    return panels.LivePanel(
        compute=balance_compute, controls=controls, figure=balance_figures(first),
        update=lambda figs, r: [figures.copy_trace_data(f, b) for f, b in zip(figs, balance_figures(r))],
        notes=balance_notes,
        title="Weight decay shrinks, the gradient grows: per layer, per step",
        caption="A batch-normalized MLP on the digits (30% of the training labels randomized, so the gradients "
                "stay noisy), SGD with momentum and weight decay, B = 32. Dashed: the shrink "
                "2α′λ‖w‖² from weight decay; solid: the growth α′²‖g‖² from the orthogonal gradient (α′ = α/(1−ρ); "
                "faint: per step, bold: smoothed). Try λ = 10⁻⁴: the growth wins and the norms climb; at λ = 10⁻² "
                "they meet within a few relaxation times.")


# =========================================================================== 2. equilibrium ratio, collapse

def _toy_steps(lr, weight_decay, momentum, cap: int = 5000) -> int:
    """About five relaxation times of the slowest run, clipped so that a slider move stays ~1-2 s."""
    tau = float(np.max(eq.relaxation_steps(lr, weight_decay, momentum)))
    lo, hi = (200, 1500) if FAST else (800, cap)
    return int(min(max(5 * tau, lo), hi))


def ratio_compute(lr: float, weight_decay: float, momentum: float, batch_size: int) -> dict:
    """A family of four (α, λ) runs around the chosen one, as one batched computation."""
    lrs = np.array([lr, 4 * lr, lr, 4 * lr])
    wds = np.array([weight_decay, weight_decay, 4 * weight_decay, 4 * weight_decay])
    steps = _toy_steps(lrs, wds, momentum)
    rec = eq.train_toy(lrs, wds, momentum, batch_size=batch_size, steps=steps)
    w, g = rec.param_norm["w"], rec.grad_norm["w"]
    G = eq.grad_scale(rec)  # RMS gradient norm at unit weight norm, for the mean-field map
    x_map = eq.sq_norm_map(w[0] ** 2, lrs, wds, G, steps - 1, momentum)
    return {"record": rec, "lr": lrs, "wd": wds, "momentum": momentum, "steps": rec.steps,
            "ratio": eq.smooth(w / g, max(steps // 60, 1)), "ratio_pred": eq.equilibrium_ratio(lrs, wds, momentum),
            "w2_scaled": w ** 2 / np.sqrt(lrs / wds), "map_scaled": x_map / np.sqrt(lrs / wds),
            "tau": eq.relaxation_steps(lrs, wds, momentum),
            "check": eq.equilibrium_check(rec, lrs, wds, momentum)}


def _family_labels(res) -> list[str]:
    return [f"α={_fmt(a)}, λ={_fmt(l)}" for a, l in zip(res["lr"], res["wd"])]


def ratio_figures(res: dict) -> list[go.Figure]:
    k, labels = res["steps"], _family_labels(res)
    fig1 = figures.figure(x_title="step k", y_title="‖w‖ / ‖g‖ (smoothed)", log_y=True, height=380)
    for r, lab in enumerate(labels):
        fig1.add_trace(go.Scatter(x=k, y=res["ratio"][:, r], mode="lines", name=lab,
                                  line=dict(color=figures.color(r), width=2.5), legendgroup=lab))
        fig1.add_trace(go.Scatter(x=[k[0], k[-1]], y=[res["ratio_pred"][r]] * 2, mode="lines",
                                  line=dict(color=figures.color(r), width=1.5, dash="dash"),
                                  name="√(α/(2λ(1−ρ)))" if r == 0 else lab, legendgroup=lab, showlegend=r == 0))
    fig2 = figures.figure(x_title="step k", y_title="‖w‖² / √(α/λ)", height=380)
    for r, lab in enumerate(labels):
        fig2.add_trace(go.Scatter(x=k, y=res["w2_scaled"][:, r], mode="lines", name=lab, showlegend=False,
                                  line=dict(color=figures.color(r), width=2.5)))
        fig2.add_trace(go.Scatter(x=k, y=res["map_scaled"][:len(k), r], mode="lines", showlegend=r == 0,
                                  name="mean-field map x ← (1−α′λ)²x + α′²G²/x",
                                  line=dict(color=figures.color(r), width=1.5, dash="dot")))
        tau = res["tau"][r]
        i = min(int(np.searchsorted(k, tau)), len(k) - 1)
        fig2.add_trace(go.Scatter(x=[k[i]] if tau <= k[-1] else [], y=[res["w2_scaled"][i, r]] if tau <= k[-1] else [],
                                  mode="markers", marker=dict(size=12, color=figures.color(r), symbol="diamond",
                                                              line=dict(color="white", width=1)),
                                  name="one relaxation time (1−ρ)/(4αλ)", showlegend=r == 0))
    return [fig1, fig2]


def ratio_notes(res: dict) -> str:
    c = res["check"]
    rows = "".join(f"<tr><td>{html.escape(lab)}</td><td>{c['ratio'][r]:.3g}</td><td>{c['ratio_pred'][r]:.3g}</td>"
                   f"<td>{c['ratio_rel'][r]:.3f}</td><td>{res['tau'][r]:.0f}</td></tr>"
                   for r, lab in enumerate(_family_labels(res)))
    return ("<table style='border-collapse:collapse'><tr><th>run</th><th>late median ‖w‖/‖g‖</th>"
            "<th>predicted</th><th>measured / predicted</th><th>(1−ρ)/(4αλ)</th></tr>" + rows + "</table>"
            + panels.divergence_notes(res["record"], _family_labels(res)))


def ratio_panel():
    controls = {"lr": panels.log_slider("α (learning rate)", 0.01, 1.0, 0.1),
                "weight_decay": panels.log_slider("λ (weight decay)", 1e-4, 3e-2, 2e-3),
                "momentum": panels.slider("ρ (momentum)", 0.0, 0.95, 0.0, step=0.05),
                "batch_size": panels.dropdown("B (batch size)", [8, 32, 128], 32)}
    first = ratio_compute(0.1, 2e-3, 0.0, 32)
    return panels.LivePanel(
        compute=ratio_compute, controls=controls, figure=ratio_figures(first),
        update=lambda figs, r: [figures.copy_trace_data(f, b) for f, b in zip(figs, ratio_figures(r))],
        notes=ratio_notes,
        title="The equilibrium ‖w‖/‖g‖ and the √(α/λ) collapse",
        caption="Four runs (α, λ), (4α, λ), (α, 4λ), (4α, 4λ) of the toy scale-invariant model, one batched "
                "computation. Left: ‖w‖/‖g‖ settles on √(α/(2λ(1−ρ))) (dashed). Right: ‖w‖² divided by √(α/λ) "
                "collapses onto one value; diamonds mark one relaxation time. Slide ρ to 0.9: the ratio grows "
                "by √10, the relaxation is 10× faster.")


# =========================================================================== 3. SGD + WD is LARS

def lars_compute(lr: float, weight_decay: float, momentum: float) -> dict:
    """SGD+WD and LARS with η = √(2αλ(1−ρ)), same data order, both starting at the equilibrium norm."""
    steps = _toy_steps(lr, weight_decay, momentum, cap=3000)
    eta = eq.equilibrium_angular_step(lr, weight_decay, momentum)
    data = eq.toy_data()
    G = eq.toy_grad_scale(32, data=data)
    norm0 = math.sqrt(eq.equilibrium_sq_norm(lr, weight_decay, G, momentum))
    sgd = eq.train_toy(lr, weight_decay, momentum, steps=steps, init_norm=norm0, track_weights=True, data=data)
    lars = eq.train_toy(eta, 0.0, momentum, steps=steps, optimizer="lars", init_norm=norm0, track_weights=True,
                        data=data)
    w_true = data.meta["w_true"].numpy()
    wn, gn = sgd.param_norm["w"][:, 0], sgd.grad_norm["w"][:, 0]
    return {"steps": sgd.steps, "eta": eta, "sgd_step": lr * gn / wn,
            "sgd_angle": eq.angle_to(sgd.extras["w"][:, 0], w_true),
            "lars_angle": eq.angle_to(lars.extras["w"][:, 0], w_true),
            "check": eq.equilibrium_check(sgd, lr, weight_decay, momentum), "records": (sgd, lars)}


def lars_figure(res: dict) -> go.Figure:
    k = res["steps"]
    th = _thin(len(k), 500)
    fig = _style(make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                               subplot_titles=("per-step α‖g‖/‖w‖ of SGD + weight decay",
                                               "angle between w and the teacher's direction")), height=420)
    fig.add_trace(go.Scatter(x=k[th], y=res["sgd_step"][th], mode="markers", name="SGD: α‖g‖/‖w‖",
                             marker=dict(size=5, color=_rgba(figures.color(0), 0.45))), 1, 1)
    fig.add_trace(go.Scatter(x=[k[0], k[-1]], y=[res["eta"]] * 2, mode="lines", name="η = √(2αλ(1−ρ))",
                             line=dict(color="black", width=2.5)), 1, 1)
    fig.add_trace(go.Scatter(x=k, y=res["sgd_angle"], mode="lines", name="SGD + weight decay",
                             line=dict(color=figures.color(0), width=2.5)), 1, 2)
    fig.add_trace(go.Scatter(x=k, y=res["lars_angle"], mode="lines", name="LARS, η = √(2αλ(1−ρ)), no decay",
                             line=dict(color=figures.color(1), width=2.5)), 1, 2)
    fig.update_xaxes(title_text="step k")
    fig.update_yaxes(title_text="radians per step", type="log", row=1, col=1)
    fig.update_yaxes(title_text="∠(w, w*) (radians)", type="log", row=1, col=2)
    return fig


def lars_notes(res: dict) -> str:
    c = res["check"]
    return (f"η = √(2αλ(1−ρ)) = {res['eta']:.4g}; late median of SGD's α‖g‖/‖w‖ = {c['step'][0]:.4g} "
            f"(ratio {c['step_rel'][0]:.3f}). Final angle to the teacher: SGD {res['sgd_angle'][-1]:.3f}, "
            f"LARS {res['lars_angle'][-1]:.3f} rad. "
            + panels.divergence_notes(res["records"][0], ["SGD"]))


def lars_panel():
    controls = {"lr": panels.log_slider("α (learning rate)", 0.01, 1.0, 0.1),
                "weight_decay": panels.log_slider("λ (weight decay)", 1e-4, 3e-2, 5e-3),
                "momentum": panels.slider("ρ (momentum)", 0.0, 0.95, 0.0, step=0.05)}
    first = lars_compute(0.1, 5e-3, 0.0)
    return panels.LivePanel(
        compute=lars_compute, controls=controls, figure=lars_figure(first),
        update=lambda fig, r: figures.copy_trace_data(fig, lars_figure(r)),
        notes=lars_notes,
        title="SGD with weight decay takes LARS steps",
        caption="Left: the noisy per-step angular step of SGD + weight decay scatters around η = √(2αλ(1−ρ)) "
                "(black), the step LARS takes exactly. Right: SGD + weight decay and LARS with that η, no decay, "
                "same minibatches: they learn the direction at the same pace. Change α and λ with αλ fixed: "
                "nothing changes.")


# =========================================================================== 4. the 2-D picture

PLANE_STEPS = 120 if FAST else 300


ARROW_SCALE = 1.0  # draw the two pieces of one step this many times longer than they are


@functools.lru_cache(maxsize=16)
def _plane_run(lr: float, weight_decay: float):
    data = eq.toy_data(dim=2, teacher_scale=0.0)  # pure-noise labels: the direction random-walks
    rec = eq.train_toy([lr, lr], [0.0, weight_decay], batch_size=8, steps=PLANE_STEPS, dim=2, init_norm=0.5,
                       track_weights=True, data=data)
    G = eq.grad_scale(rec)[1]
    return rec, math.sqrt(eq.equilibrium_sq_norm(lr, weight_decay, G))


def plane_compute(lr: float, weight_decay: float, step: int) -> dict:
    """Two runs in the plane (no decay, decay λ) and the two pieces of step ``step``."""
    rec, radius = _plane_run(lr, weight_decay)
    step = min(int(step), PLANE_STEPS - 1)
    w, g = rec.extras["w"], rec.extras["g"]  # (K, 2, 2)
    decays = np.array([0.0, weight_decay])
    return {"w": w, "step": step, "radius": radius,
            "decay_piece": -lr * decays[:, None] * w[step], "grad_piece": -lr * g[step], "lr": lr,
            "weight_decay": weight_decay, "record": rec}


def _times(scale: float) -> str:
    return "" if scale == 1 else f", drawn ×{scale:g}"


def plane_figure(res: dict) -> go.Figure:
    fig = figures.figure(x_title="w₁", y_title="w₂", height=560)
    t = np.linspace(0, 2 * np.pi, 200)
    fig.add_trace(go.Scatter(x=res["radius"] * np.cos(t), y=res["radius"] * np.sin(t), mode="lines",
                             line=dict(color=GREY, dash="dash", width=2),
                             name="equilibrium circle ‖w‖² = G√(α/(2λ))"))
    k = res["step"]
    names = ("no weight decay (spirals out)", f"λ = {_fmt(res['weight_decay'])} (settles on the circle)")
    for r in range(2):
        c = figures.color(r)
        w = res["w"][:, r]
        fig.add_trace(go.Scatter(x=w[:k + 1, 0], y=w[:k + 1, 1], mode="lines", name=names[r],
                                 line=dict(color=_rgba(c, 0.75), width=1.5)))
        fig.add_trace(go.Scatter(x=[w[k, 0]], y=[w[k, 1]], mode="markers", showlegend=False,
                                 marker=dict(size=11, color=c, line=dict(color="white", width=1.5))))
    for r in range(2):
        w0 = res["w"][k, r]
        gend = w0 + ARROW_SCALE * res["grad_piece"][r]
        dend = gend + ARROW_SCALE * res["decay_piece"][r]
        fig.add_trace(go.Scatter(x=[w0[0], gend[0]], y=[w0[1], gend[1]], mode="lines+markers",
                                 line=dict(color=figures.color(2), width=3),
                                 marker=dict(symbol="arrow", angleref="previous", size=[0, 14],
                                             color=figures.color(2)),
                                 name="gradient step −αg (⊥ w: outward)" + _times(ARROW_SCALE), showlegend=r == 1))
        fig.add_trace(go.Scatter(x=[gend[0], dend[0]], y=[gend[1], dend[1]], mode="lines+markers",
                                 line=dict(color=figures.color(3), width=3),
                                 marker=dict(symbol="arrow", angleref="previous", size=[0, 14],
                                             color=figures.color(3)),
                                 name="decay step −αλw (inward)" + _times(ARROW_SCALE), showlegend=r == 1))
    lim = float(np.nanmax(np.abs(res["w"]))) * 1.1
    fig.update_layout(xaxis=dict(range=[-lim, lim], scaleanchor="y", scaleratio=1), yaxis=dict(range=[-lim, lim]),
                      legend=dict(orientation="v", x=1.02, y=1.0, yanchor="top", xanchor="left"),
                      margin=dict(r=300))
    return fig


def plane_notes(res: dict) -> str:
    k = res["step"]
    n0, n1 = (np.linalg.norm(res["w"][k, r]) for r in range(2))
    return (f"Step {k}: ‖w‖ = {n0:.3f} without decay, {n1:.3f} with decay (circle radius {res['radius']:.3f}). "
            f"‖αg‖ = {np.linalg.norm(res['grad_piece'][1]):.3g}, ‖αλw‖ = {np.linalg.norm(res['decay_piece'][1]):.3g}.")


def plane_panel():
    controls = {"lr": panels.log_slider("α (learning rate)", 0.1, 3.0, 1.0),
                "weight_decay": panels.log_slider("λ (weight decay)", 3e-3, 0.1, 0.02),
                "step": panels.int_slider("step k", 0, PLANE_STEPS - 1, PLANE_STEPS - 1)}
    first = plane_compute(1.0, 0.02, PLANE_STEPS - 1)
    return panels.LivePanel(
        compute=plane_compute, controls=controls, figure=plane_figure(first),
        update=lambda fig, r: figures.copy_trace_data(fig, plane_figure(r), layout_keys=("xaxis.range",
                                                                                        "yaxis.range")),
        notes=plane_notes,
        title="One step in the plane: outward gradient, inward decay",
        caption="The toy model with a two-dimensional weight. Step through training with the k slider: the green "
                "gradient step is orthogonal to w and pushes it outward (Pythagoras), the purple decay step "
                "pulls it inward. Without decay the weights spiral out; with decay they settle on the circle.")


# =========================================================================== 5. batch size and linear scaling

BATCH_EXAMPLES = 6000 if FAST else 24000


def batch_compute(lr: float, weight_decay: float, batch_size: int) -> dict:
    factors = (1, 2, 4, 8)
    out = eq.batch_scaling(factors=factors, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                           examples=BATCH_EXAMPLES)
    curves = {}
    for n in factors:
        rec = out[n]
        curves[n] = {"examples": rec.steps * n * batch_size,
                     "loss": eq.smooth(rec.loss[:, 0], max(len(rec.steps) // 30, 1)),
                     "cos": eq.smooth(rec.extras["grad_momentum_cos"][1:, 0], max(len(rec.steps) // 15, 1)),
                     "cos_steps": rec.steps[1:]}
    return {"factors": factors, "curves": curves, "summary": out["summary"], "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "records": [out[n] for n in factors]}


def batch_figure(res: dict) -> go.Figure:
    s, B = res["summary"], res["batch_size"]
    fig = _style(make_subplots(rows=1, cols=3, horizontal_spacing=0.09,
                               subplot_titles=("training loss vs examples seen", "per-step angular step α‖g‖/‖w‖",
                                               "cos(gₜ, EMA of earlier g)")), height=430)
    for i, n in enumerate(res["factors"]):
        c = res["curves"][n]
        fig.add_trace(go.Scatter(x=c["examples"], y=c["loss"], mode="lines", line=dict(color=figures.color(i), width=2),
                                 name=f"n={n}: B={n * B}, α={_fmt(n * res['lr'])}", legendgroup=str(n)), 1, 1)
        fig.add_trace(go.Scatter(x=c["cos_steps"] * n * B, y=c["cos"], mode="lines", showlegend=False,
                                 line=dict(color=figures.color(i), width=2), legendgroup=str(n)), 1, 3)
    fig.add_trace(go.Scatter(x=s["n"], y=s["step"], mode="markers", marker=dict(size=13, color=figures.color(0)),
                             name="measured (late median)"), 1, 2)
    fig.add_trace(go.Scatter(x=s["n"], y=s["step_pred"], mode="lines", line=dict(color="black", dash="dash"),
                             name="√(2nαλ): √n per step"), 1, 2)
    fig.add_trace(go.Scatter(x=s["n"], y=s["step_pred"][0] * s["n"], mode="lines",
                             line=dict(color=GREY, dash="dot"), name="n·√(2αλ) (if steps scaled linearly)"), 1, 2)
    fig.update_xaxes(title_text="examples seen", row=1, col=1)
    fig.update_xaxes(title_text="scale factor n", type="log", row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="examples seen", row=1, col=3)
    fig.update_yaxes(range=[-0.5, 0.5], row=1, col=3)
    return fig


def batch_notes(res: dict) -> str:
    s, B = res["summary"], res["batch_size"]
    g = " · ".join(f"B={int(n * B)}: G={G:.3g}, G·√B={G * math.sqrt(n * B):.3g}" for n, G in zip(s["n"], s["grad_scale"]))
    corr = ", ".join(f"{c:+.3f}" for c in s["correlation"])
    return (f"Gradient norm at unit weight norm G (noise dominated if G·√B is constant): {g}. "
            f"Mean cos(gₜ, vₜ₋₁) per n: {corr}.")


def batch_panel():
    controls = {"lr": panels.log_slider("α (learning rate at n = 1)", 0.005, 0.2, 0.02),
                "weight_decay": panels.log_slider("λ (weight decay)", 1e-3, 3e-2, 5e-3),
                "batch_size": panels.dropdown("B (batch size at n = 1)", [4, 8, 16], 8)}
    first = batch_compute(0.02, 5e-3, 8)
    return panels.LivePanel(
        compute=batch_compute, controls=controls, figure=batch_figure(first),
        update=lambda fig, r: figures.copy_trace_data(fig, batch_figure(r)),
        notes=batch_notes,
        title="The linear scaling rule, seen through the equilibrium",
        caption="Scale the batch size and the learning rate together by n = 1, 2, 4, 8 and train on the same "
                "number of examples. Middle: each step turns w by √n more, not n. Left: the loss curves still "
                "agree per example seen, because the gradient norm falls as 1/√B (notes) and successive batch "
                "gradients are nearly orthogonal (right).")


# =========================================================================== 6. Labatie: effective LR, not capacity

LABATIE_STEPS = 150 if FAST else 600
LABATIE_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def labatie_compute(lr: float, momentum: float) -> dict:
    rec, model, data = eq.train_bn_network(lr, list(LABATIE_DECAYS), momentum, steps=LABATIE_STEPS,
                                           batch_size=32, label_noise=0.3, decay_scale_invariant_only=True,
                                           eval_every=max(LABATIE_STEPS // 6, 1), return_model=True)
    names = eq.scale_invariant_names(rec)
    eff = np.mean([rec.effective_lr[n] for n in names], axis=0)  # (K, R): α/‖w‖², averaged over layers
    ang = np.mean([rec.angular_step[n] for n in names], axis=0)
    gap = eq.rescaled_output_gap(model, data.x_train, 10.0)
    return {"steps": rec.steps, "eff": eff, "angle": eq.smooth(ang, max(LABATIE_STEPS // 40, 1)), "record": rec,
            "gap": gap, "test_acc": rec.test_accuracy[-1], "train_acc": eq.late_median(rec.accuracy, 0.9),
            "test_loss": rec.test_loss[-1]}


def _decay_labels() -> list[str]:
    return [f"λ = {_fmt(l)}" if l > 0 else "λ = 0" for l in LABATIE_DECAYS]


def labatie_figure(res: dict) -> go.Figure:
    k, labels = res["steps"], _decay_labels()
    fig = _style(make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                               subplot_titles=("effective learning rate α/‖w‖² (hidden layers)",
                                               "angular step per step (smoothed)")), height=420)
    for r, lab in enumerate(labels):
        c = figures.color(r)
        fig.add_trace(go.Scatter(x=k, y=res["eff"][:, r], mode="lines", name=lab, legendgroup=lab,
                                 line=dict(color=c, width=2.5)), 1, 1)
        fig.add_trace(go.Scatter(x=k, y=res["angle"][:, r], mode="lines", name=lab, legendgroup=lab,
                                 showlegend=False, line=dict(color=c, width=2.5)), 1, 2)
    fig.update_xaxes(title_text="step k")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", title_text="radians", row=1, col=2)
    return fig


def labatie_notes(res: dict) -> str:
    rows = "".join(f"<tr><td>{lab}</td><td>{res['eff'][-1, r]:.3g}</td><td>{res['train_acc'][r]:.3f}</td>"
                   f"<td>{res['test_acc'][r]:.3f}</td><td>{res['test_loss'][r]:.3f}</td><td>{res['gap'][r]:.1e}</td></tr>"
                   for r, lab in enumerate(_decay_labels()))
    return ("<table><tr><th>run</th><th>final α/‖w‖²</th><th>train acc.</th><th>test acc.</th><th>test loss</th>"
            "<th>relative change of f when the hidden weights ×10</th></tr>" + rows + "</table>"
            + panels.divergence_notes(res["record"], _decay_labels()))


def labatie_panel():
    controls = {"lr": panels.log_slider("α (learning rate)", 0.01, 1.0, 0.1),
                "momentum": panels.slider("ρ (momentum)", 0.0, 0.95, 0.9, step=0.05)}
    first = labatie_compute(0.1, 0.9)
    return panels.LivePanel(
        compute=labatie_compute, controls=controls, figure=labatie_figure(first),
        update=lambda fig, r: figures.copy_trace_data(fig, labatie_figure(r)),
        notes=labatie_notes,
        title="What weight decay changes in a normalized network: the effective learning rate",
        caption="Four decay strengths λ, applied to the batch-normalized hidden weights only, trained as one batched "
                "computation (same start, same minibatches). "
                "Multiplying the hidden weights by 10 leaves the network's outputs unchanged (last column): "
                "the norm is no capacity. What λ does change is α/‖w‖², and with it how far each noisy step "
                "turns the weights.")
