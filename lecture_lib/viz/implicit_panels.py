"""Figures and live panels of notebook 04, "Implicit learning-rate decay from normalization".

Each section of the notebook calls one ``*_panel()`` function. Every panel has three layers:

* a **compute** function of the control values that trains real PyTorch models through
  :mod:`lecture_lib.scale_invariance` and returns a small dict (cached by the panel);
* a **pure figure builder** ``result -> go.Figure`` drawing every trace (a fixed number of
  traces, so that updates only change trace data);
* an **update** copying the new trace data onto the widget built once
  (:func:`lecture_lib.viz.figures.copy_trace_data`).

Step counts shrink when :data:`lecture_lib.viz.FAST` is set (``LECTURE_FAST=1``).
"""
from __future__ import annotations

import functools
import html

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import losses
from .. import scale_invariance as si
from . import FAST, figures, panels

F64 = torch.float64
HIDDEN = ("linears.0.weight", "linears.1.weight")
OUTPUT = "linears.2.weight"
LAYER_LABELS = {"w": "w (toy model)", "linears.0.weight": "hidden layer 1 (BN)",
                "linears.1.weight": "hidden layer 2 (BN)", OUTPUT: "output layer (no BN)"}
MODELS = {"toy model c·xᵀw/‖w‖": "toy", "BN network (digits)": "bn"}


def _style(fig: go.Figure, height: int = figures.HEIGHT) -> go.Figure:
    """The house layout (fonts, palette, legend on top) on a figure built with subplots."""
    base = figures.base_layout(height=height)
    fig.update_layout(template=base.template, font=base.font, colorway=base.colorway, height=height,
                      margin=dict(l=70, r=24, t=120, b=60), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.14, xanchor="left", x=0.0,
                                  font=base.legend.font),
                      hoverlabel=base.hoverlabel, uirevision="lecture")
    fig.update_xaxes(showline=True, linecolor="#888", zeroline=False)
    fig.update_yaxes(showline=True, linecolor="#888", zeroline=False)
    return fig


def _log_axes(fig, row, col, x_title, y_title, log_x=True, log_y=True):
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear", exponentformat="power",
                     row=row, col=col)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", exponentformat="power",
                     row=row, col=col)


def _line(x, y, name, color, dash=None, width=2.5, showlegend=True, group=None) -> go.Scatter:
    """A line truncated at its first non-finite value (never NaN handed to plotly)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = figures.finite_prefix(y)
    return go.Scatter(x=x[:n], y=y[:n], mode="lines", name=name, legendgroup=group, showlegend=showlegend,
                      line=dict(color=color, width=width, dash=dash),
                      hovertemplate=f"{html.escape(name)}<br>%{{x:.4g}}, %{{y:.4g}}<extra></extra>")


def _empty(name, color, dash=None, showlegend=False) -> go.Scatter:
    return go.Scatter(x=[], y=[], mode="lines", name=name, showlegend=showlegend,
                      line=dict(color=color, width=2.5, dash=dash))


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Moving average along axis 0 (trailing window); NaN stays NaN."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) < window:
        return y
    c = np.cumsum(np.where(np.isfinite(y), y, 0.0), axis=0)
    out = np.empty_like(y)
    out[:window] = c[:window] / np.arange(1, window + 1).reshape(-1, *([1] * (y.ndim - 1)))
    out[window:] = (c[window:] - c[:-window]) / window
    return np.where(np.isfinite(y), out, np.nan)


def _alpha_label(a: float) -> str:
    return f"α = {a:.3g}"


def _steps_from_1(record) -> np.ndarray:
    return record.steps.astype(float) + 1.0  # log axes: plot step k at k + 1


# =========================================================================== 1. scale invariance

GAMMA_GRID = np.logspace(-2, 2, 33)


@functools.lru_cache(maxsize=2)
def _euler_setup(model_kind: str):
    if model_kind == "toy":
        model, data = si.toy_setup(dim=20, dtype=F64)
        return model, losses.mse, data.x_train[:64], data.y_train[:64], ("w",)
    model, data = si.bn_setup(width=32, dtype=F64)
    return model, losses.cross_entropy, data.x_train[:128], data.y_train[:128], (HIDDEN[0], OUTPUT)


def euler_check(model: str = "bn", gamma: float = 3.0) -> dict:
    """Rescale each tensor of the chosen model by every γ of a grid (and by the slider's γ); measure Euler."""
    if model not in MODELS.values():
        raise ValueError(f"model must be one of {list(MODELS.values())}, got {model!r}")
    net, loss_fn, x, y, names = _euler_setup(model)
    grid = np.unique(np.append(GAMMA_GRID, gamma))
    checks = {n: si.euler_identities(net, loss_fn, x, y, n, grid) for n in names}
    return {"model": model, "gamma": float(gamma), "checks": checks}


def euler_figure(result: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("cost J(γw)", "gradient norm ‖∇J(γw)‖"))
    gamma = result["gamma"]
    names = list(result["checks"])
    for i, slot in enumerate((0, 1)):
        color = figures.color(0 if slot == 0 else 1)
        if slot < len(names):
            c = result["checks"][names[slot]]
            label = LAYER_LABELS[names[slot]] + (" · scale invariant" if c.scale_invariant else " · not invariant")
            j = int(np.argmin(np.abs(c.gammas - gamma)))
            fig.add_trace(_line(c.gammas, c.loss, label, color, group=str(slot)), 1, 1)
            fig.add_trace(go.Scatter(x=c.gammas, y=c.grad_norm, mode="markers", name=label, showlegend=False,
                                     legendgroup=str(slot), marker=dict(size=7, color=color)), 1, 2)
            fig.add_trace(go.Scatter(x=[gamma], y=[c.loss[j]], mode="markers", showlegend=False,
                                     marker=dict(size=15, color=color, symbol="diamond")), 1, 1)
            fig.add_trace(go.Scatter(x=[gamma], y=[c.grad_norm[j]], mode="markers", showlegend=False,
                                     marker=dict(size=15, color=color, symbol="diamond")), 1, 2)
        else:
            for col in (1, 2):
                fig.add_trace(_empty("", color), 1, col)
                fig.add_trace(go.Scatter(x=[], y=[], mode="markers", showlegend=False), 1, col)
    c0 = result["checks"][names[0]]
    i1 = int(np.argmin(np.abs(np.log(c0.gammas))))
    fig.add_trace(figures.reference_line(c0.gammas, c0.grad_norm[i1] / c0.gammas, "Euler: ‖∇J(w)‖ / γ"), 1, 2)
    _log_axes(fig, 1, 1, "γ (rescaling of w)", "J(γw)", log_y=False)
    _log_axes(fig, 1, 2, "γ (rescaling of w)", "‖∇J(γw)‖")
    return _style(fig)


def _euler_notes(result: dict) -> str:
    rows = []
    for name, c in result["checks"].items():
        r = c.at(result["gamma"])
        rows.append(f"<b>{html.escape(LAYER_LABELS[name])}</b> at γ = {result['gamma']:.3g}: "
                    f"|J(γw) − J(w)|/J(w) = {r['loss_change']:.1e}, "
                    f"‖γ∇J(γw) − ∇J(w)‖/‖∇J(w)‖ = {r['euler_error']:.1e}, "
                    f"cos∠(w, ∇J) = {r['cosine']:.1e}"
                    + (f" (largest over units {r['unit_cosine']:.1e})" if name != "w" else ""))
    if result["model"] == "bn":
        rows.append("Batch norm divides by √(σ² + ε) with ε = 10⁻⁵, so its invariance is exact only while "
                    "the pre-activation variance dwarfs ε: watch the errors grow at small γ.")
    return "<br>".join(rows)


def euler_panel() -> panels.LivePanel:
    """Section 1: J(γw) = J(w), ∇J(γw) = ∇J(w)/γ and w ⊥ ∇J(w), on the toy model and a BN network."""
    return panels.LivePanel(
        compute=euler_check,
        controls={"model": panels.dropdown("model", MODELS, "bn"),
                  "gamma": panels.log_slider("γ (rescale the weights)", 1e-2, 1e2, 3.0)},
        figure=euler_figure(euler_check()),
        update=lambda fw, r: figures.copy_trace_data(fw, euler_figure(r)),
        notes=_euler_notes,
        title="Scale invariance and Euler's identities",
        caption=("Drag γ across four decades. The hidden layer feeding batch norm leaves the cost flat and its "
                 "gradient falls exactly as 1/γ (dashed); the output layer, which feeds no normalizer, does "
                 "neither. The notes print the three identities at your γ, measured in float64."),
    )


# =========================================================================== 2. Pythagorean growth

GROWTH_STEPS = {"toy": 300 if FAST else 3000, "bn": 80 if FAST else 600}


def growth(model: str = "bn", lr: float = 1.0) -> dict:
    """One SGD run (no weight decay); ‖w‖² per scale-invariant tensor with its square-root fit."""
    if model not in MODELS.values():
        raise ValueError(f"model must be one of {list(MODELS.values())}, got {model!r}")
    dtype = F64 if model == "toy" else torch.float32
    rec = si.run(model, torch.tensor([float(lr)], dtype=dtype), GROWTH_STEPS[model],
                 **({"dtype": dtype} if model == "toy" else {}))
    names = [n for n, inv in rec.scale_invariant.items() if inv]
    out = {"model": model, "lr": float(lr), "record": rec, "names": names, "fits": {}, "residual": {},
           "monotone": {}}
    for n in names:
        sq = rec.param_norm[n][:, 0] ** 2
        valid = np.isfinite(sq)
        out["fits"][n] = si.fit_sqrt_law(rec.steps[valid], sq[valid]) if valid.sum() >= 3 else None
        res = si.pythagorean_residual(rec.param_norm[n], rec.grad_norm[n], lr)
        out["residual"][n] = float(np.nanmax(np.abs(res))) if np.isfinite(res).any() else float("nan")
        sq_ok = sq[valid]
        # never shrank, up to the rounding of the dtype (float32: a step can add less than one ulp)
        tol = 4 * np.finfo(np.float32 if dtype == torch.float32 else np.float64).eps
        out["monotone"][n] = bool(np.all(np.diff(sq_ok) >= -tol * sq_ok[1:]))
    return out


def growth_figure(result: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("squared norm ‖w_k‖²", "effective learning rate α / ‖w_k‖²"))
    rec = result["record"]
    k = _steps_from_1(rec)
    for slot in range(2):
        color = figures.color(slot)
        if slot < len(result["names"]):
            n = result["names"][slot]
            fit = result["fits"][n]
            sq = rec.param_norm[n][:, 0] ** 2
            fig.add_trace(_line(k, sq, LAYER_LABELS[n], color, group=n), 1, 1)
            fig.add_trace(_line(k, rec.effective_lr[n][:, 0], LAYER_LABELS[n], color, showlegend=False,
                                group=n), 1, 2)
            if fit is not None:
                label = f"√ law fit: k₀ = {fit.k0:.3g}, R² = {fit.r2:.3f}"
                fig.add_trace(_line(k, fit.predict(rec.steps), label, color, dash="dash", width=2, group=n), 1, 1)
                fig.add_trace(_line(k, fit.effective_lr(rec.steps, result["lr"]), label, color, dash="dash",
                                    width=2, showlegend=False, group=n), 1, 2)
            else:
                fig.add_trace(_empty("", color, "dash"), 1, 1)
                fig.add_trace(_empty("", color, "dash"), 1, 2)
        else:
            for col in (1, 2, 1, 2):
                fig.add_trace(_empty("", color), 1, col)
    _log_axes(fig, 1, 1, "step k + 1", "‖w_k‖²", log_y=False)
    _log_axes(fig, 1, 2, "step k + 1", "α / ‖w_k‖²")
    return _style(fig)


def _growth_notes(result: dict) -> str:
    rec = result["record"]
    lines = []
    for n in result["names"]:
        fit = result["fits"][n]
        fit_text = (f"‖w_k‖² ≈ {fit.scale:.3g}·√(1 + k/{fit.k0:.3g}), R² = {fit.r2:.4f}" if fit else "no fit")
        lines.append(f"<b>{html.escape(LAYER_LABELS[n])}</b>: {fit_text}; "
                     f"‖w‖ never shrank: {'yes' if result['monotone'][n] else 'no'}; "
                     f"largest Pythagorean residual |‖w_(k+1)‖² − ‖w_k‖² − α²‖∇J‖²| / ‖w_(k+1)‖² = "
                     f"{result['residual'][n]:.1e}")
    note = panels.divergence_notes(rec, [_alpha_label(result["lr"])])
    return "<br>".join(lines + ([note] if note else []))


def growth_panel() -> panels.LivePanel:
    """Section 2: ‖w‖² only grows, along √(1 + k/k₀); the effective learning rate falls as 1/√k."""
    return panels.LivePanel(
        compute=growth,
        controls={"model": panels.dropdown("model", MODELS, "toy"),
                  "lr": panels.log_slider("α (learning rate)", 1e-2, 10.0, 0.3)},
        figure=growth_figure(growth("toy", 0.3)),
        update=lambda fw, r: figures.copy_trace_data(fw, growth_figure(r)),
        notes=_growth_notes,
        title="Pythagorean growth of the weight norm",
        caption=("Plain SGD, no weight decay. The norm of every scale-invariant tensor only grows, and the "
                 "dashed √(1 + k/k₀) law (fitted) tracks it; so the effective rate α/‖w‖² falls like "
                 "1/√k once k passes k₀. Raise α: k₀ shrinks and the decay starts sooner. Switch to the BN "
                 "network: each hidden layer has its own norm and schedule, and the fit is looser because the "
                 "gradient shrinks as the network learns the digits."),
    )


# =========================================================================== 3. the α sweep collapses

COLLAPSE_STEPS = 400 if FAST else 3000
COLLAPSE_RUNS = 5


def collapse(lr_min: float = 0.01, decades: int = 3) -> dict:
    """ONE batched run of the toy model: R = 5 learning rates log-spaced over ``decades`` decades."""
    decades = int(decades)
    if not 1 <= decades <= 5:
        raise ValueError(f"decades must be between 1 and 5, got {decades}")
    lr = float(lr_min) * torch.logspace(0, decades, COLLAPSE_RUNS, dtype=F64)
    rec = si.run("toy", lr, COLLAPSE_STEPS)
    return {"lr": lr.cpu().numpy(), "record": rec, "asymptote": si.late_asymptote(rec, "w")}


def collapse_figure(result: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("effective learning rate α / ‖w_k‖²", "training loss (smoothed)"))
    rec = result["record"]
    k = _steps_from_1(rec)
    window = max(1, len(k) // 60)
    loss = _smooth(rec.loss, window)
    for r, a in enumerate(result["lr"]):
        c = figures.color(r)
        fig.add_trace(_line(k, rec.effective_lr["w"][:, r], _alpha_label(a), c, group=str(r)), 1, 1)
        fig.add_trace(_line(k, loss[:, r], _alpha_label(a), c, showlegend=False, group=str(r)), 1, 2)
    fig.add_trace(figures.reference_line(k, result["asymptote"], "α-free asymptote 1/(G√(2k))"), 1, 1)
    _log_axes(fig, 1, 1, "step k + 1", "α / ‖w_k‖²")
    _log_axes(fig, 1, 2, "step k + 1", "J (minibatch, smoothed)", log_y=False)
    return _style(fig)


def _collapse_notes(result: dict) -> str:
    eff = result["record"].effective_lr["w"]
    return (f"At k = 0 the five effective rates span a factor {si.spread(eff, 0):.3g}; "
            f"after {COLLAPSE_STEPS} steps they span a factor {si.spread(eff, -1):.3g}. "
            "Late in training α cancels: ‖w_k‖² ≈ α G √(2k), so α/‖w_k‖² ≈ 1/(G√(2k)).")


def collapse_panel() -> panels.LivePanel:
    """Section 3: learning rates over several decades, one batched run; the late curves collapse."""
    return panels.LivePanel(
        compute=collapse,
        controls={"lr_min": panels.log_slider("smallest α", 1e-3, 1.0, 0.01),
                  "decades": panels.int_slider("decades spanned", 1, 5, 3)},
        figure=collapse_figure(collapse()),
        update=lambda fw, r: figures.copy_trace_data(fw, collapse_figure(r)),
        notes=_collapse_notes,
        title="The explicit learning rate hardly matters late in training",
        caption=("Five learning rates spread over up to five decades, trained as one batched computation on the "
                 "toy scale-invariant model. Slide the range: the effective rates start far apart and end on "
                 "the same dashed α-free line, and the loss curves end together too."),
    )


# =========================================================================== 4. the output layer escapes

OUTPUT_STEPS = 80 if FAST else 600


def output_layer(lr: float = 1.0) -> dict:
    """BN network, SGD: the learning rate each layer trains with over time."""
    lr_t = torch.tensor([float(lr)])
    rec = si.run("bn", lr_t, OUTPUT_STEPS)
    return {"lr": float(lr), "record": rec, "rates": si.layer_learning_rates(rec, lr_t)}


def output_figure(result: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("learning rate each layer feels",
                                        "output layer relative to hidden layer 1"))
    rec = result["record"]
    k = _steps_from_1(rec)
    rates = result["rates"]
    for i, n in enumerate(HIDDEN + (OUTPUT,)):
        fig.add_trace(_line(k, rates[n][:, 0], LAYER_LABELS[n], figures.color(i)), 1, 1)
    ratio = rates[OUTPUT][:, 0] / rates[HIDDEN[0]][:, 0]
    fig.add_trace(_line(k, ratio, "α / (α/‖w₁‖²) = ‖w₁‖²", figures.color(3)), 1, 2)
    _log_axes(fig, 1, 1, "step k + 1", "α (output) or α/‖w‖² (BN layers)")
    _log_axes(fig, 1, 2, "step k + 1", "ratio of learning rates", log_y=False)
    return _style(fig)


def _output_notes(result: dict) -> str:
    rates = result["rates"]
    r0 = rates[OUTPUT][0, 0] / rates[HIDDEN[0]][0, 0]
    r1 = rates[OUTPUT][:, 0] / rates[HIDDEN[0]][:, 0]
    r1 = r1[np.isfinite(r1)][-1] if np.isfinite(r1).any() else float("nan")
    note = panels.divergence_notes(result["record"], [_alpha_label(result["lr"])])
    return (f"The output layer's rate relative to hidden layer 1 grew by a factor {r1 / r0:.3g} "
            f"over {OUTPUT_STEPS} steps." + (f"<br>{note}" if note else ""))


def output_panel() -> panels.LivePanel:
    """Section 4: the output layer is not scale invariant, keeps α, and trains relatively faster later."""
    return panels.LivePanel(
        compute=output_layer,
        controls={"lr": panels.log_slider("α (learning rate)", 0.03, 5.0, 1.0)},
        figure=output_figure(output_layer()),
        update=lambda fw, r: figures.copy_trace_data(fw, output_figure(r)),
        notes=_output_notes,
        title="The output layer escapes",
        caption=("The BN layers' effective rates α/‖w‖² fall as their norms grow; the output layer, which feeds "
                 "no normalizer, keeps α. Raise α: the hidden rates fall sooner and the gap opens faster "
                 "(too large an α and the output layer itself diverges)."),
    )


# =========================================================================== 5. remedies

REMEDY_STEPS = 80 if FAST else 400
REMEDY_LABELS = {"none": "plain SGD", "weight_decay": "weight decay λ",
                 "exp_schedule": "exponential α schedule (Li & Arora)", "unit_norm": "project to ‖w‖ = 1"}


def remedies(lr: float = 1.0, weight_decay: float = 5e-3, exp_schedule: bool = True, use_weight_decay: bool = True,
             unit_norm: bool = True, lr_unit: float = 0.03) -> dict:
    """BN network: plain SGD and each switched-on remedy, applied to the scale-invariant layers.

    The projected run has its own learning rate ``lr_unit``: on the unit sphere α *is* the
    effective rate, so it lives on a different scale from the α of the other runs.
    """
    if float(lr) * float(weight_decay) >= 1:
        raise ValueError("α·λ must be below 1 (otherwise weight decay flips the sign of w)")
    chosen = {"none": True, "weight_decay": use_weight_decay, "exp_schedule": exp_schedule, "unit_norm": unit_norm}
    runs = {name: si.run("bn", torch.tensor([float(lr_unit if name == "unit_norm" else lr)]), REMEDY_STEPS,
                         remedy=name, weight_decay=float(weight_decay))
            for name, on in chosen.items() if on}
    return {"lr": float(lr), "lr_unit": float(lr_unit), "weight_decay": float(weight_decay), "runs": runs}


def remedies_figure(result: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("effective learning rate of hidden layer 1", "training loss (smoothed)"))
    for i, (name, label) in enumerate(REMEDY_LABELS.items()):
        c = figures.color(i)
        dash = "dot" if name == "exp_schedule" else None
        rec = result["runs"].get(name)
        if rec is None:
            fig.add_trace(_empty(label + " (off)", c, dash, showlegend=True), 1, 1)
            fig.add_trace(_empty(label, c, dash), 1, 2)
            continue
        k = _steps_from_1(rec)
        loss = _smooth(rec.loss, max(1, len(k) // 40))
        fig.add_trace(_line(k, rec.effective_lr[HIDDEN[0]][:, 0], label, c, dash=dash, group=name), 1, 1)
        fig.add_trace(_line(k, loss[:, 0], label, c, dash=dash, showlegend=False, group=name), 1, 2)
    _log_axes(fig, 1, 1, "step k + 1", "α_k / ‖w_k‖²")
    _log_axes(fig, 1, 2, "step k + 1", "J (minibatch, smoothed)", log_y=False)
    return _style(fig, height=430)


def _remedies_notes(result: dict) -> str:
    lines = []
    for name, rec in result["runs"].items():
        eff = rec.effective_lr[HIDDEN[0]][:, 0]
        ok = eff[np.isfinite(eff)]
        text = f"{html.escape(REMEDY_LABELS[name])}: effective rate {ok[0]:.3g} → {ok[-1]:.3g}" if ok.size else ""
        if name == "unit_norm":
            err = float(np.nanmax(np.abs(eff / result["lr_unit"] - 1)))
            text += f" (equals α to {err:.0e})"
        note = rec.divergence_note(0)
        lines.append(text + (f" — {note}" if note else ""))
    return "<br>".join(lines)


def remedies_panel() -> panels.LivePanel:
    """Section 5: exponential schedule, weight decay and unit-norm projection, each a switch."""
    return panels.LivePanel(
        compute=remedies,
        controls={"lr": panels.log_slider("α (learning rate)", 0.03, 3.0, 1.0),
                  "weight_decay": panels.log_slider("λ (weight decay)", 1e-4, 0.1, 5e-3),
                  "exp_schedule": panels.toggle("exponential α schedule", True),
                  "use_weight_decay": panels.toggle("weight decay", True),
                  "unit_norm": panels.toggle("project to unit norm", True),
                  "lr_unit": panels.log_slider("α of the projected run", 1e-3, 1.0, 0.03)},
        figure=remedies_figure(remedies()),
        update=lambda fw, r: figures.copy_trace_data(fw, remedies_figure(r)),
        notes=_remedies_notes,
        title="Three ways to undo the implicit decay",
        caption=("Each switch adds a run, the remedy acting on the batch-norm layers. Weight decay stops the fall "
                 "of α/‖w‖²; the exponential schedule α ϱ^−(2k+1) with ϱ = 1 − αλ reaches the same effective rate "
                 "(Li & Arora's equivalence: the dotted curve lands on the weight-decay one); projecting to unit "
                 "norm pins it to α itself, so that run gets its own α: try 1 and watch it stop learning."),
    )


# =========================================================================== 6. optimizers

OPT_STEPS = 40 if FAST else 150
OPT_LR = {"sgd": 0.3, "adam": 0.01, "kfac": 0.003}
OPT_LABELS = {"sgd": "SGD", "adam": "Adam", "kfac": "K-FAC"}
INIT_SCALES = (0.25, 1.0, 4.0)


def optimizers(damping: float = 1e-4, spread: float = 4.0) -> dict:
    """Each optimizer from three rescalings c·w₀ of the same BN weights (one batched run per optimizer)."""
    if not 1.0 <= float(spread) <= 10.0:
        raise ValueError(f"spread must be in [1, 10], got {spread}")
    scales = torch.tensor([1.0 / spread, 1.0, float(spread)])
    records = {name: si.run("bn", lr, OPT_STEPS, optimizer=name, damping=float(damping), init_scale=scales)
               for name, lr in OPT_LR.items()}
    return {"damping": float(damping), "scales": scales.cpu().numpy(), "records": records}


def optimizer_figure(result: dict) -> go.Figure:
    names = list(OPT_LABELS)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, shared_yaxes=True,
                        subplot_titles=[f"{OPT_LABELS[n]} (α = {OPT_LR[n]:g})" for n in names])
    for col, n in enumerate(names, start=1):
        rec = result["records"][n]
        k = _steps_from_1(rec)
        ang = _smooth(rec.angular_step[HIDDEN[0]], max(1, len(k) // 30))
        for r, c in enumerate(result["scales"]):
            fig.add_trace(_line(k, ang[:, r], f"start at {c:.3g}·w₀", figures.color(r), showlegend=(col == 1),
                                group=str(r)), 1, col)
        _log_axes(fig, 1, col, "step k + 1", "angle turned per step (rad)" if col == 1 else "")
    return _style(fig, height=420)


def _optimizer_notes(result: dict) -> str:
    parts = []
    for n, rec in result["records"].items():
        ang = rec.angular_step[HIDDEN[0]]
        early = np.nanmean(ang[1:min(20, len(ang))], axis=0)
        parts.append(f"{OPT_LABELS[n]}: early angular steps differ by a factor {early.max() / early.min():.3g}")
        notes = panels.divergence_notes(rec, [f"{OPT_LABELS[n]}, c = {c:.3g}" for c in result["scales"]])
        if notes:
            parts.append(notes)
    c = result["scales"][-1]
    return ("<br>".join(parts) + f"<br>The starts differ in ‖w‖ by up to c² = {c * c:.3g}×. At the first step "
            f"theory predicts angular steps apart by c⁴ = {c ** 4:.3g}× for SGD (∝ 1/‖w‖²), c² = {c ** 2:.3g}× "
            "for Adam (∝ 1/‖w‖) and 1× for undamped K-FAC; averaged over 20 steps the factors shrink "
            "because the small-norm start grows fastest.")


def optimizer_panel() -> panels.LivePanel:
    """Section 6: SGD, Adam and K-FAC from rescaled starting weights; only K-FAC does not care."""
    return panels.LivePanel(
        compute=optimizers,
        controls={"damping": panels.log_slider("γ (K-FAC damping)", 1e-5, 1e-1, 1e-4),
                  "spread": panels.slider("c (start from w₀/c, w₀ and c·w₀)", 1.0, 8.0, 4.0, step=0.5)},
        figure=optimizer_figure(optimizers()),
        update=lambda fw, r: figures.copy_trace_data(fw, optimizer_figure(r)),
        notes=_optimizer_notes,
        title="Different optimizers, different implicit schedules",
        caption=("The same BN network started from w₀/c, w₀ and c·w₀: the same function, different weight norms. "
                 "SGD's angular steps scale like 1/‖w‖² and Adam's like 1/‖w‖, so the norm growth of training "
                 "decays them; K-FAC's curves stay together (its first steps are large and noisy on this small "
                 "network). Raise γ: the effective damping γ‖w‖² takes over, the K-FAC curves separate and "
                 "K-FAC starts to behave like SGD (Zhang et al. 2019, mechanism 3)."),
    )


def source_block(*functions):
    """The source of library functions as a highlighted code block, docstrings stripped (see notebook 01)."""
    from .adaptive_panels import source_block as _source_block

    return _source_block(*functions)
