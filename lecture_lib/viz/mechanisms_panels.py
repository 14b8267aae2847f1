"""Figures and live panels of notebook 06, "Three mechanisms of weight decay" (Zhang et al. 2019).

One ``*_panel()`` per section. Each compute function runs an experiment of
:mod:`lecture_lib.experiments.mechanisms` (all configurations of a panel as one batched run) and
each figure builder draws its result. A panel's ``fast`` argument (default: ``LECTURE_FAST``, see
:func:`lecture_lib.viz.fast_mode`) picks the small run sizes under which CI executes the notebook.
"""
from __future__ import annotations

import functools
import html
import threading

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from .. import mechanisms as M
from ..cache import recent
from ..experiments import mechanisms as E
from . import fast_mode, figures, panels, scrub

SCHEME_COLORS = {"none": figures.color(6), "wd-bn": figures.color(0), "wd-fc": figures.color(4),
                 "wd-all": figures.color(1), "graft": figures.color(2), "graft+wd-fc": figures.color(3)}
SCHEME_DASH = {"graft": "dot", "graft+wd-fc": "dot"}

# Run sizes of each panel: {fast: sizes}. Fast (LECTURE_FAST=1, or fast=True) runs the notebook in seconds.
EFFECTIVE_LR_SIZES = {False: dict(steps=1000, width=64, seeds=tuple(range(8))),
                      True: dict(steps=150, width=32, seeds=(0, 1, 2))}
JACOBIAN_SIZES = {False: dict(steps=600, seeds=tuple(range(8))), True: dict(steps=100, seeds=(0, 1, 2))}
DAMPING_SIZES = {False: dict(steps=1000, width=64, seeds=(0, 1, 2, 3)), True: dict(steps=100, width=32, seeds=(0, 1))}


def _scheme_traces(x, values, schemes, showlegend=True, label: str = "", dash: str | None = None,
                   points: bool = False):
    """One line per decay scheme (a column of ``values``), drawn up to its first non-finite value (a lone value, the
    first row of a streamed run, shows as a point: :func:`figures.show_lone_points`). ``points``: the traces carry
    markers all along, of size 0 per point (which ``show_lone_points`` raises for a lone value), so that the page
    draws a first partial of one row without plotly's full update, which a change of mode would need; they are
    not clipped at the axes, where a lone value at step 0 would show half."""
    traces = []
    for i, s in enumerate(schemes):
        y = np.asarray(values[:, i], dtype=float)
        n = figures.finite_prefix(y)
        name = f"{label}, {M.SCHEME_LABELS[s]}" if label else M.SCHEME_LABELS[s]
        traces.append(go.Scatter(x=np.asarray(x[:n], dtype=float), y=y[:n], mode="lines+markers" if points else "lines",
                                 name=name, marker=dict(color=SCHEME_COLORS[s], size=np.zeros(n) if points else 7),
                                 cliponaxis=not points,
                                 legendgroup=s, showlegend=showlegend,
                                 line=dict(color=SCHEME_COLORS[s], width=2.5, dash=dash or SCHEME_DASH.get(s)),
                                 hovertemplate=f"{name}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"))
    return traces


def _scheme_notes(record, schemes, extra: str = "", cols=None) -> str:
    acc = record.test_accuracy
    bits = []
    for i, s in zip(range(len(schemes)) if cols is None else cols, schemes):
        note = record.divergence_note(i)
        if note:
            bits.append(f"<span class='lecture-diverged'>{html.escape(M.SCHEME_LABELS[s])}: {note}</span>")
        else:
            tail = acc[-3:, i]
            bits.append(f"{html.escape(M.SCHEME_LABELS[s])}: <b>{100 * np.nanmean(tail):.2f}%</b>")
    head = "Test accuracy (mean of the last three evaluations): "
    return head + " · ".join(bits) + (f"<br>{extra}" if extra else "")


# =========================================================================== 1. effective learning rate
#: The αλ positions of the effective-learning-rate panel's scrubber (one decade apart), trained together.
DECAYS_PER_STEP = (1e-5, 1e-4, 1e-3, 1e-2)


@functools.lru_cache(maxsize=8)
def effective_lr_family(optimizer: str = "sgd", decay_per_step: tuple = DECAYS_PER_STEP, steps: int = 1000,
                        width: int = 64, seeds: tuple = (0,), progress=None) -> list[E.EffectiveLrResult]:
    r""":func:`effective_lr` for every :math:`\alpha\lambda` of ``decay_per_step``, all trained as one batched run."""
    lr = 0.05 if optimizer == "sgd" else 1e-3
    return E.effective_lr_family(optimizer, lr=lr, weight_decay=tuple(d / lr for d in decay_per_step), steps=steps,
                                 width=width, seeds=seeds, eval_every=max(steps // 30, 1),
                                 record_every=max(steps // 100, 1), progress=progress)


def _seed_mean(result: E.EffectiveLrResult, values: np.ndarray) -> np.ndarray:
    """``(K, R)`` per-run values -> ``(K, schemes)`` means over each scheme's seeds (NaN where a run diverged)."""
    return np.stack([np.asarray(values[:, result.columns(s)], dtype=float).mean(1) for s in result.schemes], 1)


def effective_lr_figures(result: E.EffectiveLrResult) -> list[go.Figure]:
    rec, schemes = result.record, result.schemes
    acc = figures.figure(_scheme_traces(rec.eval_steps, 100 * _seed_mean(result, rec.test_accuracy), schemes),
                         y_title="test accuracy (%), mean over seeds", height=380, legend_rows=2)
    acc.update_yaxes(range=[90, 100])
    layer = result.layers[0]
    eff = figures.figure(_scheme_traces(rec.steps, _seed_mean(result, rec.effective_lr[layer]), schemes,
                                        showlegend=False),
                         y_title=f"α / ‖w‖² of {layer}", log_y=True, height=330)
    eff.update_yaxes(figures.ladder_ticks())   # under a decade: plotly's linear steps crowd (0.008, 0.01, 0.012)
    return [figures.span_steps(f, rec) for f in (acc, eff)]


EFFECTIVE_LR_COMPARISONS = (("wd-all", "none"), ("wd-bn", "none"), ("wd-fc", "none"), ("graft", "none"),
                            ("wd-all", "graft"), ("graft+wd-fc", "wd-fc"))


def _effective_lr_notes(result: E.EffectiveLrResult) -> str:
    rec = result.record
    diverged = [f"{M.SCHEME_LABELS[s]}, seed {sd}: {rec.divergence_note(i * len(result.seeds) + j)}"
                for i, s in enumerate(result.schemes) for j, sd in enumerate(result.seeds)
                if rec.divergence_note(i * len(result.seeds) + j)]
    bits = ["Test accuracy (mean of the last three evaluations, mean over seeds): " + " · ".join(
        f"{html.escape(M.SCHEME_LABELS[s])}: <b>{np.mean(result.final_accuracy(s)):.2f}%</b>" for s in result.schemes)]
    if len(result.seeds) >= 2:
        pairs = [(a, b) for a, b in EFFECTIVE_LR_COMPARISONS if a in result.schemes and b in result.schemes]
        bits.append(f"paired differences over {len(result.seeds)} seeds (points, 95% interval; bold: excludes 0): "
                    + " · ".join(f"{html.escape(M.SCHEME_LABELS[a])} − {html.escape(M.SCHEME_LABELS[b])}: "
                                 + (f"<b>{d}</b>" if d.excludes(0) else str(d))
                                 for a, b in pairs for d in [result.difference(a, b)]))
    if diverged:
        bits.append("<span class='lecture-diverged'>" + html.escape("; ".join(diverged)) + "</span>")
    return "<br>".join(bits)


def effective_lr_panel(fast: bool | None = None) -> scrub.ScrubPanel:
    """Section 1: decay on the BN layers, on the top layer, everywhere, and norm grafting; αλ scrubs (every αλ
    one batched run), the optimizer recomputes."""
    fast = fast_mode() if fast is None else fast
    size = EFFECTIVE_LR_SIZES[fast]
    return scrub.ScrubPanel(
        compute=functools.partial(effective_lr_family, **size),
        controls={"optimizer": panels.dropdown("optimizer", {"SGD (ρ = 0.9, α = 0.05)": "sgd",
                                                             "Adam (α = 10⁻³)": "adam"}, "sgd")},
        scrub=scrub.Scrub("decay_per_step", DECAYS_PER_STEP, "αλ (decay per step)",
                          index=DECAYS_PER_STEP.index(1e-3), fmt=lambda v: f"{v:.0e}"),
        build=effective_lr_figures,
        notes=_effective_lr_notes,
        title="Mechanism 1: weight decay raises the effective learning rate",
        caption=(f"Six decay schemes × {len(size['seeds'])} seeds of one BN network ({size['width']} units × 2 hidden "
                 f"layers, digits, {size['steps']} steps) at each of {len(DECAYS_PER_STEP)} decays per step αλ, "
                 "trained as one batched run; seed s gives every scheme and every αλ the same start and minibatches. "
                 "Curves: means over seeds. The dotted runs never decay their normalized "
                 "layers; after every step their norms are set to those of the run decaying everywhere, so their "
                 "α/‖w‖² in the lower plot equals the donor's by construction: it shows what grafting transfers, "
                 "not that it works. The evidence is the accuracy, in the notes with paired intervals. Slide αλ to "
                 "10⁻⁵ and every scheme collapses onto no decay."),
    )


# =========================================================================== 2. Jacobian regularization
def _decay_axis(decays: np.ndarray) -> np.ndarray:
    """αλ for a log axis: λ = 0 drawn a factor 3 left of the smallest decay."""
    positive = decays[decays > 0]
    return np.where(decays > 0, decays, positive.min() / 3 if positive.size else 1e-4)


#: Margins wide enough for every depth's log tick labels: with the house margins of the time (l=70, r=24) plotly's automargin
#: widened them to 76-80 / 24-29 px depending on the result, and a change of margins makes plotly plot the figure
#: a second time (doAutoMargin): half of a cached move's redraw (docs/performance.md).
JACOBIAN_MARGIN = dict(l=88, r=36, b=80)


def jacobian_figures(result: E.JacobianResult) -> list[go.Figure]:
    ok = ~result.diverged
    scatter, lines = [], []
    grid = np.unique(result.decay_per_step)
    for i, (name, symbol) in enumerate((("sgd", "circle"), ("kfac-g", "diamond"))):
        rows = ok & (result.optimizer == name)
        scatter.append(go.Scatter(
            x=result.jacobian_norm[rows], y=result.kfac_norm[rows], mode="markers", name=M.LABELS[name],
            marker=dict(size=10, symbol=symbol, color=figures.color(i), line=dict(width=1, color="#333")),
            customdata=result.decay_per_step[rows],
            hovertemplate=f"{M.LABELS[name]}, αλ = %{{customdata:.2g}}<br>‖J‖² = %{{x:.4g}}, "
                          "K-FAC GN norm = %{y:.4g}<extra></extra>"))
        geo = np.array([np.exp(np.nanmean(np.log(result.jacobian_norm[rows & (result.decay_per_step == d)])))
                        if (rows & (result.decay_per_step == d)).any() else np.nan for d in grid])
        lines.append(go.Scatter(
            x=_decay_axis(result.decay_per_step[rows]), y=result.jacobian_norm[rows], mode="markers",
            name=f"{M.LABELS[name]}, each seed", showlegend=False,
            marker=dict(size=6, symbol=symbol, color=figures.rgba(figures.color(i), 0.35)), hoverinfo="skip"))
        lines.append(go.Scatter(
            x=_decay_axis(grid), y=geo, mode="lines+markers", name=f"{M.LABELS[name]}, geometric mean",
            showlegend=False, line=dict(color=figures.color(i), width=2.5),
            marker=dict(size=9, symbol=symbol, color=figures.color(i)),
            hovertemplate=f"{M.LABELS[name]}<br>αλ = %{{x:.2g}}: ‖J‖² = %{{y:.4g}}<extra></extra>"))
    fig_s = figures.figure(scatter, x_title="E‖Jₓ‖²_F (input-output Jacobian, test inputs)",
                           y_title="K-FAC Gauss-Newton norm", log_x=True, log_y=True, height=380)
    fig_l = figures.figure(lines, x_title="αλ, decay per step", y_title="E‖Jₓ‖²_F",
                           log_x=True, log_y=True, height=330)
    if grid.size:                                    # labelled at the decays trained, "0 (none)" where there was none
        fig_l.update_xaxes(tickvals=_decay_axis(grid),
                           ticktext=["0 (none)"] * int(grid[0] == 0) + figures.tick_labels(grid[grid > 0]))
    for fig in (fig_s, fig_l):
        figures.tidy_log_axes(fig)                    # 1-2 decades: plotly labelled every digit 2..9
        fig.update_layout(margin=JACOBIAN_MARGIN)
    return [fig_s, fig_l]


def _verdict(interval) -> str:
    if interval.low > 1:
        return "K-FAC-G cuts more"
    if interval.high < 1:
        return "SGD cuts more"
    return "not resolved"


def _jacobian_notes(result: E.JacobianResult) -> str:
    n_seeds = len(set(result.seed.tolist()))
    bits = [f"correlation of log norms across the {int((~result.diverged).sum())} trained networks: "
            f"<b>{result.correlation():.3f}</b>"]
    if n_seeds >= 2:
        for d in result.decays():
            sgd, kfac, rel = result.reduction("sgd", d), result.reduction("kfac-g", d), result.relative_reduction(d)
            bits.append(f"<span class='lecture-detail'>αλ = {d:g}: decay divides ‖J‖² by SGD "
                        f"<b>{sgd.mean:.2f}×</b> [{sgd.low:.2f}, {sgd.high:.2f}], K-FAC-G <b>{kfac.mean:.2f}×</b> "
                        f"[{kfac.low:.2f}, {kfac.high:.2f}]; </span>K-FAC-G / SGD at αλ = {d:g}: "
                        f"<b>{rel.mean:.2f}×</b> [{rel.low:.2f}, {rel.high:.2f}] ({_verdict(rel)})")
        bits.append(f"<span class='lecture-detail'>(geometric means over {n_seeds} paired seeds, 95% intervals)</span>")
    else:
        bits.append("one seed: no interval; run more seeds before reading the ratios")
    paper = E.PAPER_JACOBIAN
    bits.append("<span class='lecture-detail'>paper (Table 2, no decay → decay at each optimizer's tuned λ): "
                "VGG16 SGD {} → {}, K-FAC-G {} → {}; ResNet32 SGD {} → {}, K-FAC-G {} → {}</span>".format(*paper["VGG16"]["sgd"], *paper["VGG16"]["kfac-g"],
                                                             *paper["ResNet32"]["sgd"], *paper["ResNet32"]["kfac-g"]))
    diverged = [f"{M.LABELS[o]} αλ = {d:g}" for o, d, bad in zip(result.optimizer, result.decay_per_step,
                                                                   result.diverged) if bad]
    if diverged:
        bits.append("<span class='lecture-diverged'>diverged: " + ", ".join(diverged) + "</span>")
    return "<br>".join(bits)


def jacobian_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 2: K-FAC GN norm against the Jacobian norm, and how much decay cuts ‖J‖² per optimizer at equal αλ."""
    fast = fast_mode() if fast is None else fast
    size = JACOBIAN_SIZES[fast]
    return panels.LivePanel(
        compute=functools.partial(E.jacobian_experiment, width=64, **size),
        controls={"depth": panels.int_slider("hidden layers", 1, 3, 2)},
        build=jacobian_figures,
        notes=_jacobian_notes,
        title="Mechanism 2: does K-FAC-G's weight decay shrink the input-output Jacobian more than SGD's?",
        caption=(f"Bias-free ReLU networks without BN (64 units per hidden layer) trained on the digits for "
                 f"{size['steps']} steps with SGD (α = 0.05, ρ = 0.9) or K-FAC-G (α = 0.01) at the same decays per "
                 f"step αλ, {len(size['seeds'])} seeds; seed s gives every run the same start and minibatches. "
                 "Top: each point is one trained network. Bottom: ‖Jₓ‖² against αλ (faint: each seed; line: "
                 "geometric mean). The notes give each optimizer's reduction with its paired 95% interval. "
                 "Change the depth."),
    )


# --------------------------------------------------------------------------- 2b. across architectures
DEPTH_SYMBOLS = {1: "circle", 2: "diamond", 3: "square"}
CHECKPOINTS = {"early": 0, "middle": 1, "end": 2}


def _architecture_at(result: E.ArchitectureResult, checkpoint: int) -> int:
    steps = result.steps()
    return steps[min(checkpoint, len(steps) - 1)]


def architecture_figures(view: tuple[E.ArchitectureResult, int]) -> list[go.Figure]:
    """Left: K-FAC norm against K‖J_x‖² per trained network (colour and symbol: depth, size: width); right: their
    ratio per architecture (geometric mean over seeds) against the width, one line per depth."""
    result, checkpoint = view
    step = _architecture_at(result, checkpoint)
    rows = result.step == step
    ratio = result.geometric_mean("ratio", step)
    scatter, lines = [], []
    for i, d in enumerate((1, 2, 3)):
        sel = rows & (result.depth == d)
        widths = sorted(w for w, dd in ratio if dd == d)
        scatter.append(go.Scatter(
            x=(d + 1) * result.jacobian_norm[sel], y=result.kfac_norm[sel], mode="markers",
            name=f"{d} hidden layer{'s' if d > 1 else ''}", customdata=result.width[sel],
            marker=dict(size=5 + 2 * np.log2(np.maximum(result.width[sel], 1) / 8), symbol=DEPTH_SYMBOLS[d],
                        color=figures.color(i), line=dict(width=1, color="#333")),
            hovertemplate=f"depth {d}, width %{{customdata}}<br>K‖J‖² = %{{x:.4g}}, K-FAC norm = %{{y:.4g}}"
                          "<extra></extra>"))
        lines.append(go.Scatter(
            x=widths, y=[ratio[(w, d)] for w in widths], mode="lines+markers", name=f"ratio, depth {d}",
            showlegend=False, line=dict(color=figures.color(i), width=2.5),
            marker=dict(size=9, symbol=DEPTH_SYMBOLS[d], color=figures.color(i)),
            hovertemplate=f"depth {d}, width %{{x}}: K-FAC norm / K‖J‖² = %{{y:.3f}}<extra></extra>"))
    lo = float(min(np.min((result.depth[rows] + 1) * result.jacobian_norm[rows]), np.min(result.kfac_norm[rows])))
    hi = float(max(np.max((result.depth[rows] + 1) * result.jacobian_norm[rows]), np.max(result.kfac_norm[rows])))
    scatter.append(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="K-FAC norm = K‖J‖² (linear networks)",
                              line=dict(color="#888", dash="dash", width=1.5), hoverinfo="skip"))
    fig_s = figures.tidy_log_axes(figures.figure(scatter, x_title="K · E‖Jₓ‖²_F (test inputs)",
                                                 y_title="K-FAC Gauss-Newton norm", log_x=True, log_y=True, height=380))
    fig_r = figures.figure(lines, x_title="width (units per hidden layer)", y_title="K-FAC norm / K‖Jₓ‖²",
                           log_x=True, height=380)
    widths = sorted({float(w) for t in lines for w in (t.x if t.x is not None else ())})
    fig_r.update_xaxes(tickvals=widths, ticktext=[f"{w:g}" for w in widths])    # the widths, not log mantissas
    return [fig_s, fig_r]


def _architecture_notes(view: tuple[E.ArchitectureResult, int]) -> str:
    result, checkpoint = view
    step = _architecture_at(result, checkpoint)
    n_seeds = len(set(result.seed.tolist()))
    ratio = result.geometric_mean("ratio", step)
    fmt = lambda i: f"<b>{i.mean:+.2f}</b> [{i.low:+.2f}, {i.high:+.2f}]"      # noqa: E731
    bits = [f"after {step} steps: ‖Jₓ‖² differs {result.spread('jacobian_norm', step):.2f}× across the "
            f"{len(ratio)} architectures, the K-FAC norm {result.spread('kfac_norm', step):.2f}×, their ratio "
            f"K-FAC norm / K‖Jₓ‖² {result.spread('ratio', step):.2f}× (from {min(ratio.values()):.2f} to "
            f"{max(ratio.values()):.2f})"]
    if n_seeds >= 2:
        bits.append(f"correlation of the log K-FAC norm with log K‖Jₓ‖²: {fmt(result.correlation(step=step))}; "
                    f"with log ‖Jₓ‖² (no factor K): {fmt(result.correlation(times_k=False, step=step))}")
        bits.append(f"partial, at equal depth: {fmt(result.correlation('depth', step=step))}; given the weight scale "
                    f"∏‖W_ℓ‖²_F: {fmt(result.correlation('scale', step=step))}")
        bits.append(f"<span class='lecture-detail'>(one correlation per seed across the architectures; mean and 95% "
                    f"interval over {n_seeds} seeds, on Fisher's z)</span>")
    else:
        bits.append("one seed: no interval")
    return "<br>".join(bits)


def _architecture_compute(checkpoint: int, runs: str, fast: bool, progress=None) -> tuple:
    if runs == "saved":
        return E.architecture_result(E.load_table(E.ARCHITECTURE_PATH)), checkpoint
    config = E.ARCHITECTURE_REDUCED if fast else E.ARCHITECTURE_CONFIG
    return E.architecture_experiment(**config, progress=progress), checkpoint


def architecture_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 2: does the K-FAC norm track ‖J_x‖² across widths and depths? The saved sweep, or recomputed."""
    fast = fast_mode() if fast is None else fast
    table = E.load_table(E.ARCHITECTURE_PATH)
    cfg, v = table["config"], table["version"]
    recompute = "recompute (reduced, seconds)" if fast else f"recompute (about {table['seconds'] / 60:.0f} min)"
    return panels.LivePanel(
        compute=functools.partial(_architecture_compute, fast=fast),
        controls={"checkpoint": panels.choice("measured", CHECKPOINTS, 2),
                  "runs": panels.choice("runs", {"saved": "saved", recompute: "recompute"}, "saved")},
        build=architecture_figures,
        notes=_architecture_notes,
        title="Mechanism 2 across architectures: does the K-FAC norm track ‖Jₓ‖²?",
        caption=(f"Bias-free ReLU networks without BN, widths {', '.join(map(str, cfg['widths']))} × "
                 f"{', '.join(map(str, cfg['depths']))} hidden layers, trained with K-FAC-G (α = 0.01, γ = 0.01) and "
                 f"weight decay αλ = 10⁻³ for {cfg['steps']} steps, {len(cfg['seeds'])} seeds; measured after "
                 f"{', '.join(map(str, cfg['checkpoints']))} steps (early / middle / end). Left: each point one network "
                 "(size: width); dashed: the identity of linear networks. Right: the ratio per architecture. Saved by "
                 f"scripts/make_architecture_table.py with lecture_lib {v['lecture_lib']}, torch {v['torch']} in "
                 f"{table['seconds']:.0f} s."),
    )


# =========================================================================== 3. effective damping
@recent(16)                  # not lru_cache: the panel's progress callback, new with each request, never hit it
def damping(curvature: str = "kfac-f", damping: float = 1e-3, weight_decay: float = 0.1, steps: int = 1000,
            width: int = 64, seeds=(0,), progress=None) -> E.DampingResult:
    return E.damping_experiment(curvature, damping=damping, weight_decay=weight_decay, steps=steps, width=width,
                                seeds=seeds, record_every=max(steps // 40, 1), eval_every=max(steps // 20, 1),
                                progress=progress)


def _damping_first_row(width: int, seeds, **_) -> None:
    """One step of the panel's default configuration, not cached: it fills step 0's statistics (the probe's factors
    and traces, :data:`lecture_lib.experiments.mechanisms._INITIAL`), which every move of γ or λ reuses."""
    E.damping_experiment.uncached("kfac-f", steps=1, width=width, seeds=seeds)


def damping_figures(result: E.DampingResult) -> list[go.Figure]:
    """The first seed's run of each scheme (the notes give the intervals over all seeds)."""
    rec, schemes, cols = result.record, result.schemes, result.first_seed()
    rel = figures.figure(_scheme_traces(rec.steps, result.relative_damping[:, cols, 0], schemes, points=True),
                         y_title="γ / mean eigenvalue of A⊗S", log_y=True, height=340)
    cos = figures.figure(_scheme_traces(rec.steps, result.cosine[:, cols, 0], schemes, showlegend=False, points=True),
                         y_title="cos(K-FAC step, gradient)", height=300)
    cos.update_yaxes(range=[0, 1.02])
    traces = (_scheme_traces(rec.steps, result.fisher_trace[:, cols], schemes, label="tr F(ŵ)", dash="solid",
                             points=True)
              + _scheme_traces(rec.steps, result.gn_trace[:, cols], schemes, label="tr G(ŵ)", dash="dash",
                               points=True))
    tr = figures.figure(traces, y_title=f"trace, layer {result.layers[0]}", log_y=True, height=360, legend_rows=2)
    return [figures.span_steps(f, rec) for f in (rel, cos, tr)]


def _damping_notes(result: E.DampingResult) -> str:
    cols = result.first_seed()
    extra = []
    for i, s in zip(cols, result.schemes):
        f, g = result.fisher_trace[:, i], result.gn_trace[:, i]
        n = figures.finite_prefix(f)
        if n > 1:
            extra.append(f"{html.escape(M.SCHEME_LABELS[s])}: tr F(ŵ) ×{f[n - 1] / f[0]:.2g}, "
                         f"tr G(ŵ) ×{g[n - 1] / g[0]:.2g} over training; tr F / tr G {f[0] / g[0]:.2g} → "
                         f"{f[n - 1] / g[n - 1]:.2g}")
    if len(result.seeds) > 1 and "none" in result.schemes and np.all(np.isfinite(result.relative_damping[-4:])):
        n = len(result.seeds)
        for s in result.schemes:
            if s != "none":
                r, c = result.damping_ratio("none", s), result.cosine_difference("none", s)
                extra.append(f"no decay vs {html.escape(M.SCHEME_LABELS[s])}, layer {result.layers[0]}, last "
                             f"records, {n} paired seeds: relative damping ×{r.mean:.2g} [{r.low:.2g}, {r.high:.2g}], "
                             f"cosine {c} (95% intervals)")
    return _scheme_notes(result.record, result.schemes, "<br>".join(extra), cols)


def damping_panel(fast: bool | None = None) -> panels.LivePanel:
    """Section 3: effective damping γ‖w‖² of K-FAC on a BN network, and the Fisher's collapse."""
    fast = fast_mode() if fast is None else fast
    size = DAMPING_SIZES[fast]
    return panels.LivePanel(
        compute=functools.partial(damping, **size),
        warm=functools.partial(_damping_first_row, **size),
        controls={"curvature": panels.dropdown("K-FAC curvature", {"Fisher (K-FAC-F)": "kfac-f",
                                                                   "Gauss-Newton (K-FAC-G)": "kfac-g"}, "kfac-f"),
                  "damping": panels.log_slider("γ (damping)", 1e-5, 1e-1, 1e-3),
                  "weight_decay": panels.log_slider("λ (weight decay)", 1e-3, 1.0, 0.1)},
        build=damping_figures,
        notes=_damping_notes,
        title="Mechanism 3: weight decay keeps K-FAC second order",
        caption=(f"K-FAC (α = 0.02) on a BN network ({size['width']} units × 2), first hidden layer. Top: damping "
                 "relative to the curvature; once it passes 1 the damping dominates. Middle: the cosine between "
                 "K-FAC's step and the plain gradient, which tends to 1 as K-FAC turns into gradient descent. "
                 "Bottom: traces of the Fisher (solid) and Gauss-Newton (dashed) blocks for ŵ. Compare K-FAC-F "
                 "with K-FAC-G, and raise γ."),
    )


# =========================================================================== 4. the headline table
def _diff_cell(interval) -> str:
    text = f"{interval.mean:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"
    return f"<td>{'<b>' + text + '</b>' if interval.excludes(0.0) else text}</td>"


def table_html(table: dict, paper: bool = True) -> str:
    """Our digits table: mean ± std over seeds, paired differences with 95% intervals, the paper's CIFAR-10 numbers.

    A regularizer's cell is bold only when its paired intervals against both others exclude 0
    (:func:`~lecture_lib.experiments.mechanisms.winner`); a difference is bold when its interval excludes 0.
    """
    cfg = table["config"]
    regs = M.REGULARIZERS
    diffs = E.paired_differences(table)
    paper_rows = list(E.PAPER_TABLE)
    head = "".join(f"<th>{M.LABELS[r]}</th>" for r in regs)
    head += "<th>WD − L2<br><small>paired, 95% CI</small></th><th>WD − none<br><small>paired, 95% CI</small></th>"
    rows = []
    for name in table["mean"]:
        best = E.winner(diffs[name])
        cells = []
        for r in regs:
            text = f"{table['mean'][name][r]:.2f} ± {table['std'][name][r]:.2f}"
            cells.append(f"<td>{'<b>' + text + '</b>' if r == best else text}</td>")
        cells += [_diff_cell(diffs[name][("wd", "l2")]), _diff_cell(diffs[name][("wd", "none")])]
        rows.append(f"<tr><th>{M.LABELS[name]}</th>{''.join(cells)}</tr>")
    # the paper's numbers in a table of their own: side by side, the two tables would not fit a 1280-px page
    paper_head = "".join(f"<th>{html.escape(p)}</th>" for p in paper_rows)
    paper_body = "".join(
        f"<tr><th>{M.LABELS[name]}</th>" + "".join(
            f"<td class='paper'>{E.PAPER_TABLE[p][name][0]:.2f} → {E.PAPER_TABLE[p][name][1]:.2f}</td>"
            for p in paper_rows) + "</tr>" for name in table["mean"])
    style = ("<style>.lecture-table{border-collapse:collapse;font-size:0.98em;margin:6px 0}"
             ".lecture-table th,.lecture-table td{padding:5px 9px;border-bottom:1px solid #e1e5ea;text-align:center}"
             ".lecture-table td{white-space:nowrap}.lecture-table td.paper{color:#555;background:#f6f7f9}.lecture-table th{max-width:150px}</style>")
    v = table.get("version", {})
    se = [E.new_test_set_se(table, n, "wd", "l2") for n in table["mean"]]
    se_text = (f" A new test set of {table['n_test']} images would move each difference by about "
               f"{min(se):.2f}–{max(se):.2f} points (one standard error, from the per-image results); the "
               "intervals do not include this." if se and se[0] is not None else
               " The intervals hold the test set fixed; a new test set would add sampling noise to every difference.")
    cfg_noise = cfg.get("label_noise", 0.0)
    noise_text = (f" {100 * cfg_noise:.0f}% of the training labels (and of the validation labels the λ were chosen on) "
                  "replaced by a wrong class; test labels clean." if cfg_noise else "")
    caption = (f"Test accuracy (%) on the digits test split ({100 * cfg['test_fraction']:.0f}% of 1797 images; one "
               f"image = {100 / table.get('n_test', 899):.2f} points), mean ± std over {len(cfg['seeds'])} seeds; seed s "
               f"gives the none, L2 and WD runs the same start and minibatches (and K-FAC-F the same sampled targets), "
               f"so differences are paired over seeds "
               f"(Student-t 95% intervals; bold: the interval excludes 0). A regularizer's cell is bold only when it "
               f"beats both others with intervals excluding 0.{se_text} BN MLP {cfg['width']} × {cfg['depth']}, "
               f"{cfg['steps']} steps of batch {cfg['batch_size']}; λ per optimizer and kind chosen on a validation "
               f"split of the training set, α fixed.{noise_text} Computed with lecture_lib {v.get('lecture_lib', '?')}, "
               f"torch {v.get('torch', '?')}" + (f" on {v['cpu']}" if "cpu" in v else "")
               + (f" in {table['seconds']:.0f} s." if "seconds" in table else "."))
    ours = (f"{style}<table class='lecture-table'><tr><th>optimizer</th>{head}</tr>{''.join(rows)}</table>"
            f"<div class='lecture-detail' style='color:#4a5563;font-size:0.92em;max-width:1000px'>"
            f"{html.escape(caption)}</div>")
    if not paper:
        return ours
    return (f"{ours}<div class='lecture-detail'><p style='margin:10px 0 2px'><b>The paper</b> (Zhang et al. 2019, "
            f"Table 1; CIFAR-10 test accuracy, no regularization → weight decay):</p>"
            f"<table class='lecture-table'><tr><th>optimizer</th>{paper_head}</tr>{paper_body}</table></div>")


def _recompute_status(saved: dict, new: dict) -> str:
    """How a recomputed table compares with the saved one, and the likely reason when it differs."""
    if new["accuracy"] == saved["accuracy"]:
        return "recomputed: <b>identical</b> to the saved table"
    was, now = saved.get("version", {}), new["version"]
    changed = [f"{k} {html.escape(str(was[k]))} → {html.escape(str(now[k]))}" for k in now
               if k in was and was[k] != now[k]]
    why = ("; ".join(changed) + ": float32 rounds differently" if changed else
           "same versions and instruction set; another CPU model may still round float32 differently")
    return f"recomputed: differs from the saved table ({why})"


def _lead_text(lead: tuple[float, float, float] | None, value: float) -> str:
    """``'+0.31 over 0.003'``: how far ``value`` led its grid's runner-up on validation (:func:`E.grid_lead`);
    empty when the grid did not choose ``value``."""
    return f"+{lead[2]:.2f} over {lead[1]:g}" if lead and lead[0] == value else ""


def hyperparameter_html(table: dict) -> str:
    """α, the tuned λ of L2 and of weight decay (marked † where the choice sits at an end of its grid), and γ."""
    cfg, tuning = table["config"], table.get("tuning") or {}
    edge = set(tuning.get("at_edge", []))

    def lam(name, reg):
        value = cfg[reg][name]
        lead = _lead_text(E.tuning_lead(tuning, name, reg), value)
        mark = " †" if f"{name} {reg} {value:g}" in edge else ""
        return f"{value:g}{mark}" + (f" <small>({lead})</small>" if lead else "")

    rows = "".join(f"<tr><th>{M.LABELS[n]}</th><td>{cfg['lr'][n]:g}</td><td>{lam(n, 'l2')}</td>"
                   f"<td>{lam(n, 'wd')}</td><td>{cfg['lr'][n] * cfg['wd'][n]:.2g}</td>"
                   f"<td>{cfg['damping'].get(n, '—')}</td></tr>" for n in table["mean"])
    notes = []
    if tuning.get("scores"):
        cpu = tuning.get("version", {}).get("cpu")
        notes.append(f"In brackets: the chosen λ's lead over the next best λ of its grid, in mean validation accuracy "
                     f"over {len(tuning.get('seeds', []))} seeds (points; ties go to the smaller λ"
                     + (f"; tuned on {html.escape(cpu)}" if cpu else "") + "). A small lead is a near-tie: other "
                     "seeds, or another CPU's float32 rounding, can reorder it.")
    if edge:
        notes.append("† the best validation score sat at an end of the grid: the optimum may lie beyond it.")
    note = "".join(f"<div style='color:#4a5563;font-size:0.9em'>{n}</div>" for n in notes)
    return ("<table class='lecture-table'><tr><th>optimizer</th><th>α</th><th>λ (L2)</th><th>λ (weight decay)</th>"
            f"<th>αλ (WD, per step)</th><th>γ</th></tr>{rows}</table>{note}")


def _title(text: str) -> widgets.HTML:
    title = widgets.HTML(f"<h3>{html.escape(text)}</h3>")
    title.add_class("lecture-title")
    return title


class HeadlineTable(widgets.VBox):
    """The saved headline table, and a button that recomputes it (with a progress bar) from its config."""

    TITLES = {"clean": "The headline table, reproduced on the digits",
              "noisy": "The headline table with 30% wrong training labels"}

    def __init__(self, table: dict | None = None, regime: str = "clean"):
        self.table = table if table is not None else E.load_table(E.REGIMES[regime][2])
        self._paper = regime == "clean"
        self._html = widgets.HTML(table_html(self.table, paper=self._paper))
        self._hyper = widgets.HTML(hyperparameter_html(self.table))
        self._button = widgets.Button(description="Recompute the table", icon="refresh",
                                      tooltip="retrain every cell from the saved config (minutes on 2 cores)",
                                      layout=widgets.Layout(width="220px"))
        self._bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="220px",
                                                                                              visibility="hidden"))
        self._status = widgets.HTML("<span style='color:#555'>showing the saved table</span>")
        self._button.on_click(self._recompute)
        super().__init__([widgets.HTML(panels.PANEL_CSS),
                          _title(self.TITLES[regime]),
                          self._html, widgets.HBox([self._button, self._bar, self._status]),
                          widgets.HTML("<b>Hyperparameters</b>"), self._hyper])
        self.add_class("lecture-panel")

    def _recompute(self, _button=None) -> None:
        self._button.disabled = True
        self._bar.layout.visibility = "visible"
        self._status.value = "<span style='color:#555'>training…</span>"
        threading.Thread(target=self.recompute, daemon=True).start()

    def recompute(self) -> dict:
        """Retrain the table from the saved config (blocking); updates the widget when done."""
        try:
            config = E.TableConfig.from_dict(self.table["config"])
            self._bar.value = 0.0
            new = E.headline_table(config, progress=lambda f: setattr(self._bar, "value", f))
            new["reduced"] = self.table.get("reduced")
            new["tuning"] = self.table.get("tuning")
            self._status.value = _recompute_status(self.table, new)
            self.table = new
            self._html.value = table_html(new, paper=self._paper)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, never a traceback
            self._status.value = f"<span style='color:#b34700'>recomputation failed: {html.escape(str(exc))}</span>"
        finally:
            self._button.disabled = False
            self._bar.layout.visibility = "hidden"
        return self.table


def headline_panel(regime: str = "clean") -> HeadlineTable:
    """Section 4: a saved table (``'clean'`` digits or ``'noisy'`` labels, :data:`E.REGIMES`) with a recompute button."""
    return HeadlineTable(regime=regime)


# =========================================================================== 5. large batches
LARGE_BATCH_SIZES = {False: dict(steps=1600, seeds=tuple(range(10))), True: dict(steps=160, seeds=(0, 1, 2), width=32)}


def large_batch_html(result: E.LargeBatchResult) -> str:
    """SGD at a small and a large batch, none vs weight decay, with the paired gaps and the part of it WD closes."""
    small, large = result.batch_sizes
    a = result.accuracy
    def lam(bs):
        grid = [v for v, _ in result.scores.get(bs, [])]
        edge = bool(grid) and result.weight_decay[bs] in (min(grid), max(grid))
        lead = _lead_text(E.grid_lead(result.scores.get(bs, [])), result.weight_decay[bs])
        return f"λ = {result.weight_decay[bs]:g}{' †' if edge else ''}{', ' + lead if lead else ''}"

    rows = "".join(
        f"<tr><th>B = {bs} ({result.steps[bs]} steps)</th><td>{a[(bs, 'none')].mean():.2f} ± {a[(bs, 'none')].std():.2f}"
        f"</td><td>{a[(bs, 'wd')].mean():.2f} ± {a[(bs, 'wd')].std():.2f} ({lam(bs)})</td>"
        f"{_diff_cell(result.gain(bs))}</tr>" for bs in (small, large))
    rows += (f"<tr><th>gap B = {small} − B = {large}</th>{_diff_cell(result.gap('none'))}{_diff_cell(result.gap('wd'))}"
             f"<td>gap closed by WD: {_diff_cell(result.closed())[4:-5]}</td></tr>")
    caption = (f"SGD (α fixed, momentum 0.9) on the clean digits, BN MLP; both batch sizes see the same number of "
               f"examples; λ per batch size chosen on a validation split (its lead over the next best λ of the grid: "
               f"mean validation accuracy, points; a small lead is a near-tie). Mean ± std over {len(result.seeds)} seeds; "
               "differences paired over seeds with Student-t 95% intervals (bold: the interval excludes 0). † the best "
               "validation score sat at an end of the λ grid.")
    return (f"<table class='lecture-table'><tr><th></th><th>no decay</th><th>weight decay</th>"
            f"<th>WD − none<br><small>paired, 95% CI</small></th></tr>{rows}</table>"
            f"<div style='color:#4a5563;font-size:0.92em;max-width:1000px'>{html.escape(caption)}</div>")


def large_batch_panel(fast: bool | None = None) -> widgets.VBox:
    """Section 4: the large-batch comparison (computed on first use, then cached)."""
    fast = fast_mode() if fast is None else fast
    result = E.large_batch_experiment(**LARGE_BATCH_SIZES[fast])
    box = widgets.VBox([widgets.HTML(panels.PANEL_CSS), _title("Does weight decay close a large-batch gap?"),
                        widgets.HTML(large_batch_html(result))])
    box.add_class("lecture-panel")
    return box
