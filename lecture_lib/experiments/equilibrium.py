r"""Experiments of notebook 05, "The weight-decay equilibrium": real batched runs through :mod:`lecture_lib.engine`.

The formulas they are compared with live in :mod:`lecture_lib.equilibrium`. Two models:

* the toy scale-invariant model :math:`f(x) = c\,x^\top w/\lVert w\rVert` on logistic regression with
  label noise (:func:`train_toy`), where every prediction can be checked to a few percent;
* a batch-normalized MLP on the 8x8 digits (:func:`train_bn_network`), whose hidden weight matrices are
  the scale-invariant "layers" of the Myrtle post.

Each notebook section has one experiment ``params -> result dataclass`` (:func:`layer_balance`,
:func:`ratio_family`, :func:`sgd_vs_lars`, :func:`plane_runs`, :func:`batch_scaling`,
:func:`decay_strengths`); sizes (steps, examples) are ordinary parameters, so the panels choose small
ones in fast mode. Nothing here imports plotly or ipywidgets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import engine, optim
from .. import equilibrium as eq
from .._validate import (Bool, Choice, Function, Int, NonNegative, Positive, Seed, Tensor, Unit, Where, accepts,
                         check_int, check_sizes)
from ..cache import cached
from ..data import digits, logistic_regression
from ..losses import logistic
from ..models import MLP, ScaleInvariantLinear
from ..optim.base import stack_runs
from ..record import Record, Stream, smooth

PER_RUN = eq.PER_RUN
TOY_N = 4000            # training examples of the toy task (toy_data's default)


# ------------------------------------------------------------------ what the parameters accept
def _hidden_sizes(name, value):
    return check_sizes(name, value, min_len=1)


def _factors(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integer batch-size multipliers, got {value!r}")
    return [check_int(f"{name}[{i}]", n) for i, n in enumerate(value)]


def _one_momentum(arguments) -> None:
    if isinstance(arguments["momentum"], torch.Tensor):
        raise TypeError("momentum must be a float (one momentum for the moving average), got a tensor")


def _batch_fits_data(arguments) -> None:
    data = arguments["data"]
    check_int("batch_size", arguments["batch_size"], high=TOY_N if data is None else data.n_train)


HIDDEN = Where(_hidden_sizes, bad=((0,), (-2,), (2.5,), "ab", None))
FACTORS = Where(_factors, bad=((0,), (-1,), (1.5,), ("a",), None))


# ------------------------------------------------------------------ the toy model
@accepts(dim=Int(1), n=Int(1), seed=Seed(), teacher_scale=NonNegative())
def toy_data(dim: int = 20, n: int = TOY_N, seed: int = 0, teacher_scale: float = 3.0, dtype=torch.float64):
    """The toy task: logistic regression with label noise, from :mod:`lecture_lib.data`.

    ``teacher_scale`` is the standard deviation of the teacher's logit (3: a learnable
    direction with noisy labels; 0: pure-noise labels, so that the direction random-walks).
    """
    return logistic_regression(n=n, dim=dim, weight_scale=teacher_scale, seed=seed, n_test=1000, dtype=dtype)


@accepts(_one_momentum, momentum=Unit())
def gradient_momentum_correlation(momentum: float = 0.9, names=None):
    r"""A ``track=`` function: cosine between :math:`g_t` and :math:`v_{t-1} = \sum_{s\ge1} \rho^{s-1} g_{t-s}`.

    :math:`v` is an exponential moving average of the previous *loss* gradients (without the
    decay term), as in the Myrtle post's check that successive batch gradients are orthogonal
    on average. Parameters in ``names`` (default: all) are concatenated per run. The first
    step, with no history, gives NaN.
    """
    buffer: dict[str, torch.Tensor] = {}

    def track(model, params, grads, state):
        keys = list(names or grads)
        g = torch.cat([grads[k].flatten(1) for k in keys], dim=1)
        if "v" not in buffer:
            buffer["v"] = torch.zeros_like(g)
        v = buffer["v"]
        denom = g.norm(dim=1) * v.norm(dim=1)
        cos = torch.where(denom > 0, (g * v).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan))
        buffer["v"] = momentum * v + g
        return cos

    return track


@accepts(lr=Positive(**PER_RUN), weight_decay=NonNegative(**PER_RUN), momentum=Unit(**PER_RUN),
         init_norm=Positive(**PER_RUN), optimizer=Choice(("sgd", "sgdw", "lars")))
def train_toy(lr, weight_decay=0.0, momentum=0.0, batch_size: int = 32, steps: int = 2000,
              optimizer: str = "sgd", init_norm=1.0, dim: int = 20, scale: float = 4.0, seed: int = 0,
              record_every: int = 1, track_weights: bool = False, track_correlation: bool = False,
              data=None, report=None) -> Record:
    r"""Train the toy scale-invariant model :math:`f(x) = c\,x^\top w/\lVert w\rVert` with logistic loss.

    R runs in one computation: ``lr`` (α), ``weight_decay`` (λ), ``momentum`` (ρ) and
    ``init_norm`` (:math:`\lVert w_0\rVert`) are floats or length-R sequences/tensors; every
    run starts from the same direction and sees the same minibatches (``batch_size`` B).

    * ``optimizer='sgd'``: ``lecture_lib.optim.sgd`` in torch semantics (the L2 term joins the
      momentum buffer, as in the Myrtle experiments):
      :math:`v \leftarrow \rho v + g + \lambda w,\ w \leftarrow w - \alpha v`.
    * ``optimizer='sgdw'``: decoupled decay, ``lecture_lib.optim.sgdw``:
      :math:`v \leftarrow \rho v + g,\ w \leftarrow w - \alpha (v + \lambda w)`; the same
      algorithm as ``'sgd'`` when ``momentum`` is 0.
    * ``optimizer='lars'``: LARS in the Myrtle post's form,
      :math:`v \leftarrow \rho v + (\lVert w\rVert/\lVert g\rVert)\, g,\ w \leftarrow w - \eta v`,
      with ``lr`` playing η (``lecture_lib.optim.lars`` with trust coefficient 1, no decay).

    ``track_weights`` records ``extras['w']`` and ``extras['g']`` (``(K, R, dim)``);
    ``track_correlation`` records ``extras['grad_momentum_cos']`` (:func:`gradient_momentum_correlation`).
    Returns the :class:`~lecture_lib.record.Record` of :func:`lecture_lib.engine.train` (``report``: its partial
    records, :class:`~lecture_lib.record.Stream`).
    """
    dtype = torch.float64
    hp, runs = stack_runs({"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "init_norm": init_norm},
                          dtype)
    data = toy_data(dim=dim, seed=seed, dtype=dtype) if data is None else data
    model = ScaleInvariantLinear(dim, scale=scale, runs=runs, seed=seed, dtype=dtype)
    with torch.no_grad():
        norm0 = hp["init_norm"]
        model.w.mul_(norm0.unsqueeze(1) if isinstance(norm0, torch.Tensor) else norm0)
    if optimizer in ("sgd", "sgdw"):
        opt = optim.get(optimizer, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    else:
        opt = optim.lars(hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], trust_coefficient=1.0)
    track = {}
    if track_weights:
        track["w"] = lambda model, params, grads, state: params["w"].clone()
        track["g"] = lambda model, params, grads, state: grads["w"].clone()
    if track_correlation:
        track["grad_momentum_cos"] = gradient_momentum_correlation(0.9)
    return engine.train(model, data, "logistic", opt, steps=steps, batch_size=batch_size, seed=seed + 1,
                        record_every=record_every, track=track or None, diverge_above=None, report=report)


@accepts(_batch_fits_data, batch_size=Int(1), batches=Int(1), scale=Positive(), seed=Seed())
def toy_grad_scale(batch_size: int, dim: int = 20, scale: float = 4.0, seed: int = 0, batches: int = 64,
                   data=None) -> float:
    r"""Estimate :math:`G = \lVert\nabla J(\hat w)\rVert` at unit norm, near the optimum, for minibatches of size B.

    Evaluated at the teacher's direction (``data.meta['w_true']``) on ``batches`` random
    minibatches (RMS of the norms). Used to start runs at the predicted equilibrium norm
    :math:`\sqrt{G}\,(\alpha'/2\lambda)^{1/4}` (:func:`~lecture_lib.equilibrium.equilibrium_sq_norm`) so
    that they need no burn-in; when the minibatch gradient is dominated by noise, :math:`G \propto 1/\sqrt{B}`.
    """
    data = toy_data(dim=dim, seed=seed) if data is None else data
    model = ScaleInvariantLinear(dim, scale=scale, runs=batches, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        model.w.copy_(data.meta["w_true"].to(torch.float64).expand(batches, -1))
    gen = torch.Generator().manual_seed(seed + 12345)
    idx = torch.randint(0, data.n_train, (batches, batch_size), generator=gen)
    x = data.x_train.to(torch.float64)[idx]
    y = data.y_train[idx]
    (g,) = torch.autograd.grad(logistic(model(x), y).sum(), model.w)
    return float(g.norm(dim=1).square().mean().sqrt() * data.meta["w_true"].norm())


# ------------------------------------------------------------------ the batch-normalized network
@accepts(lr=Positive(**PER_RUN), weight_decay=NonNegative(**PER_RUN), momentum=Unit(**PER_RUN), hidden=HIDDEN,
         label_noise=Unit(), return_model=Bool(), decay_scale_invariant_only=Bool())
def train_bn_network(lr, weight_decay=5e-4, momentum=0.9, batch_size: int = 128, steps: int = 1000,
                     hidden=(32, 32, 32), seed: int = 0, eval_every: int | None = None, record_every: int = 1,
                     return_model: bool = False, label_noise: float = 0.0, decay_scale_invariant_only: bool = False,
                     report=None):
    r"""Train a batch-normalized MLP on the 8x8 digits with SGD (torch semantics) and weight decay on every tensor.

    ``decay_scale_invariant_only``: decay only the weights feeding batch norm (Zhang et al.'s
    "wd-conv"), so that the decay cannot constrain capacity anywhere (the output layer and the
    normalizer gains are left alone).
    ``label_noise``: fraction of training labels replaced by uniformly random classes (seeded),
    so that the network cannot fit the training set and minibatch gradients stay noisy, as they
    do on an augmented data set (the regime in which the equilibrium holds; without it the
    gradients fade once the 1347 training images are fitted, and the norms drift).

    Its hidden weight matrices feed batch norm, so they are scale invariant
    (``record.scale_invariant``): these are the "layers" whose norms settle in equilibrium.
    ``lr`` (α), ``weight_decay`` (λ), ``momentum`` (ρ) are floats or length-R sequences; R runs
    share the initialization and the minibatch order, so they differ only in the
    hyperparameters. Returns the :class:`~lecture_lib.record.Record` (float32 runs), or
    ``(record, model, data)`` with ``return_model``; ``report`` goes to :func:`lecture_lib.engine.train`.
    """
    hp, runs = stack_runs({"lr": lr, "weight_decay": weight_decay, "momentum": momentum}, torch.float32)
    data = digits()          # the shared split of the digits (data.DIGITS_*); the seed sets init and batches
    if label_noise > 0:
        gen = torch.Generator().manual_seed(seed + 4242)
        flip = torch.rand(data.n_train, generator=gen) < label_noise
        noisy = torch.randint(0, data.n_outputs, (data.n_train,), generator=gen).to(data.y_train)
        data = replace(data, y_train=torch.where(flip.to(data.y_train.device), noisy, data.y_train))
    model = MLP([data.n_features, *hidden, data.n_outputs], norm="batch", activation="relu", runs=runs, seed=seed)
    mask = model.scale_invariant if decay_scale_invariant_only else None
    opt = optim.sgd(hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], weight_decay_mask=mask)
    rec = engine.train(model, data, "cross_entropy", opt, steps=steps, batch_size=batch_size, seed=seed,
                       eval_every=eval_every, record_every=record_every, report=report)
    return (rec, model, data) if return_model else rec


def scale_invariant_names(record) -> list[str]:
    """The parameter tensors of a record that are scale invariant (hidden weights feeding a normalizer)."""
    return [n for n, flag in record.scale_invariant.items() if flag]


@accepts(x=Tensor(), factor=Positive())
def rescaled_output_gap(model, x: torch.Tensor, factor: float) -> np.ndarray:
    r"""Relative change of the outputs, per run, when every scale-invariant tensor is multiplied by ``factor``.

    Returns :math:`\max|f_{\text{rescaled}} - f| / \max|f|` over the inputs and outputs.
    For a batch-normalized network this is zero up to the normalizer's :math:`\epsilon`: the
    weight norm carries no capacity (Labatie 2020). Evaluated with batch statistics (train
    mode) on the inputs ``x``; the model's weights and running statistics are left unchanged.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            before = model(x)
            for name, on in model.scale_invariant.items():
                if on:
                    params[name].mul_(factor)
            after = model(x)
    finally:
        model.load_state_dict(saved)  # weights and running statistics exactly as they were
    scale = before.abs().flatten(1).amax(1).clamp_min(torch.finfo(before.dtype).tiny)  # all-zero outputs: no NaN
    change = (after - before).abs().flatten(1).amax(1) / scale
    return change.double().cpu().numpy()


# =========================================================================== 1. shrink vs growth, per layer
@dataclass
class LayerBalance:
    """Per scale-invariant layer (``names``), ``(K,)`` curves divided by the layer's ‖w₀‖²."""

    steps: np.ndarray
    names: list[str]
    shrink: dict[str, np.ndarray]          # 2α′λ‖w‖² per step
    growth: dict[str, np.ndarray]          # α′²‖g‖² per step
    growth_smooth: dict[str, np.ndarray]   # the same, moving average over 25 steps
    sq_norm: dict[str, np.ndarray]         # ‖w‖²
    relaxation: float                      # (1−ρ)/(4αλ) steps; inf without decay
    record: Record


@cached
@accepts(lr=Positive(), weight_decay=NonNegative(), momentum=Unit(), steps=Int(1), batch_size=Int(1),
         label_noise=Unit(), progress=Function(optional=True))
def layer_balance(lr: float, weight_decay: float, momentum: float, steps: int = 600, batch_size: int = 32,
                  label_noise: float = 0.3, progress=None) -> LayerBalance:
    """Train the BN network once; per scale-invariant layer, the per-step shrink and growth of ‖w‖²."""
    report = Stream(progress).stage(lambda r: _balance_of(r, lr, weight_decay, momentum))
    rec = train_bn_network(lr, weight_decay, momentum, steps=steps, batch_size=batch_size, label_noise=label_noise,
                           report=report)
    return _balance_of(rec, lr, weight_decay, momentum)


def _balance_of(rec: Record, lr: float, weight_decay: float, momentum: float) -> LayerBalance:
    names = scale_invariant_names(rec)
    out = LayerBalance(rec.steps, names, {}, {}, {}, {}, record=rec,
                       relaxation=eq.relaxation_steps(lr, weight_decay, momentum) if weight_decay > 0 else math.inf)
    for n in names:
        w, g = rec.param_norm[n][:, 0], rec.grad_norm[n][:, 0]
        shrink, growth = eq.norm_balance(w, g, lr, weight_decay, momentum)
        w0 = w[0] ** 2  # Myrtle normalizes every layer to ||w||^2 = 1 at the start
        out.shrink[n], out.growth[n], out.sq_norm[n] = shrink / w0, growth / w0, w ** 2 / w0
        out.growth_smooth[n] = smooth(growth / w0, 25)
    return out


# =========================================================================== 2. equilibrium ratio, collapse
def relaxation_budget(lr, weight_decay, momentum, min_steps: int, max_steps: int) -> int:
    """About five relaxation times of the slowest run, clipped to ``[min_steps, max_steps]``."""
    tau = float(np.max(eq.relaxation_steps(lr, weight_decay, momentum)))
    return int(min(max(5 * tau, min_steps), max_steps))


@dataclass
class RatioFamily:
    """Four toy runs (α, λ), (4α, λ), (α, 4λ), (4α, 4λ); ``(K, 4)`` curves and ``(4,)`` predictions."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: float
    steps: np.ndarray
    ratio: np.ndarray           # ‖w‖/‖g‖, smoothed
    ratio_pred: np.ndarray      # √(α/(2λ(1−ρ)))
    sq_norm_scaled: np.ndarray  # ‖w‖² / √(α/λ): one value for all four at equilibrium
    map_scaled: np.ndarray      # the mean-field map, scaled the same way, with G from the probe runs
    relaxation: np.ndarray      # (1−ρ)/(4αλ)
    check: dict                 # :func:`lecture_lib.equilibrium.equilibrium_check`
    record: Record
    grad_scale: np.ndarray      # (4,) G of the probe runs (another seed): what the map is drawn with
    sq_norm_late: np.ndarray    # (4,) late median of ‖w‖² of the plotted runs
    sq_norm_pred: np.ndarray    # (4,) late median of the map (→ G√(α′/(2λ)) at equilibrium), probe's G
    probe: Record               # the same four settings, another seed (initial direction and minibatches)

    @property
    def sq_norm_rel(self) -> np.ndarray:
        """Measured / predicted equilibrium squared norm, per run."""
        return self.sq_norm_late / self.sq_norm_pred


@cached
@accepts(lr=Positive(), weight_decay=Positive(), momentum=Unit(), batch_size=Int(1), min_steps=Int(1),
         max_steps=Int(1), seed=Seed(), probe_seed=Seed(optional=True))
def ratio_family(lr: float, weight_decay: float, momentum: float, batch_size: int = 32, min_steps: int = 800,
                 max_steps: int = 5000, seed: int = 0, probe_seed: int | None = None) -> RatioFamily:
    """A family of four (α, λ) runs around the chosen one, as one batched computation, and its mean-field map.

    The map needs :math:`G`, the RMS gradient norm at unit weight norm. It is measured on a *probe*:
    the same four settings trained from another seed (``probe_seed``, default ``seed + 1``: another
    initial direction and other minibatches of the same task), so the dashed prediction owes nothing
    to the runs it is drawn over.
    """
    return ratio_families(lr, [weight_decay], momentum, batch_size, min_steps, max_steps, seed, probe_seed)[0]


@cached
@accepts(lr=Positive(), weight_decay=Positive(sequences=True), momentum=Unit(), batch_size=Int(1), min_steps=Int(1),
         max_steps=Int(1), seed=Seed(), probe_seed=Seed(optional=True), progress=Function(optional=True))
def ratio_families(lr: float, weight_decay, momentum: float, batch_size: int = 32, min_steps: int = 800,
                   max_steps: int = 5000, seed: int = 0, probe_seed: int | None = None,
                   progress=None) -> list[RatioFamily]:
    """:func:`ratio_family` for every λ of ``weight_decay`` (a sequence), all 4·len(λ) runs (and their probes)
    trained as ONE batched computation for the same number of steps (the slowest run's budget).

    A panel can then switch between the λ values without computing again. ``progress(fraction, partial)``:
    the families so far, without the map (the probe has not run yet).
    """
    decays = np.atleast_1d(np.asarray(weight_decay, dtype=np.float64))
    lrs = np.tile([lr, 4 * lr, lr, 4 * lr], len(decays))
    wds = np.repeat(decays, 4) * np.tile([1.0, 1.0, 4.0, 4.0], len(decays))
    steps = relaxation_budget(lrs, wds, momentum, min_steps, max_steps)
    data = toy_data(seed=seed)
    columns = [np.arange(4 * i, 4 * i + 4) for i in range(len(decays))]
    families = lambda rec, probe: [_ratio_family_of(lrs[c], wds[c], momentum, rec.select(c),
                                                    None if probe is None else probe.select(c), steps) for c in columns]
    stream = Stream(progress)
    rec = train_toy(lrs, wds, momentum, batch_size=batch_size, steps=steps, seed=seed, data=data,
                    report=stream.stage(lambda r: families(r, None), 0.0, 0.5))
    probe = train_toy(lrs, wds, momentum, batch_size=batch_size, steps=steps, data=data,
                      seed=seed + 1 if probe_seed is None else probe_seed, report=stream.stage(None, 0.5, 1.0))
    return families(rec, probe)


def _ratio_family_of(lrs, wds, momentum, rec, probe, steps: int) -> RatioFamily:
    """The family's curves and predictions; ``probe=None``: a partial family (runs still training), no map."""
    G = eq.grad_scale(probe) if probe is not None else np.full(len(lrs), np.nan)
    w, g = rec.param_norm["w"], rec.grad_norm["w"]
    x_map = (eq.sq_norm_map(w[0] ** 2, lrs, wds, G, steps - 1, momentum) if probe is not None
             else np.empty((0, len(lrs))))
    return RatioFamily(lrs, wds, momentum, rec.steps, ratio=smooth(w / g, max(steps // 60, 1)),
                       ratio_pred=eq.equilibrium_ratio(lrs, wds, momentum),
                       sq_norm_scaled=w ** 2 / np.sqrt(lrs / wds), map_scaled=x_map / np.sqrt(lrs / wds),
                       relaxation=eq.relaxation_steps(lrs, wds, momentum),
                       check=eq.equilibrium_check(rec, lrs, wds, momentum), record=rec, grad_scale=G,
                       sq_norm_late=eq.late_median(w ** 2),
                       sq_norm_pred=eq.late_median(x_map[:len(rec.steps)]) if probe is not None else G,
                       probe=rec if probe is None else probe)


# =========================================================================== 3. SGD + WD is LARS
@dataclass
class LarsComparison:
    steps: np.ndarray
    eta: float                 # √(2αλ(1−ρ)): the LARS coefficient, multiplying the momentum buffer
    turn: float                # √(2αλ/(1+ρ)): the predicted RMS angle turned per step
    sgd_step: np.ndarray       # (K,) α‖g‖/‖w‖ of SGD + weight decay
    sgd_turn: np.ndarray       # (K,) recorded angle between w_k and w_{k+1}, SGD + weight decay
    lars_turn: np.ndarray      # (K,) the same for LARS
    sgd_turn_rms: float        # RMS of sgd_turn over the second half of the run
    lars_turn_rms: float
    sgd_angle: np.ndarray      # (K,) angle to the teacher's direction
    lars_angle: np.ndarray
    check: dict
    sgd: Record
    lars: Record


@cached
@accepts(lr=Positive(), weight_decay=Positive(), momentum=Unit(), min_steps=Int(1), max_steps=Int(1),
         progress=Function(optional=True))
def sgd_vs_lars(lr: float, weight_decay: float, momentum: float, min_steps: int = 800,
                max_steps: int = 3000, progress=None) -> LarsComparison:
    """SGD+WD and LARS with η = √(2αλ(1−ρ)) and the same ρ, same data order, both starting at the equilibrium norm.

    Records both the LARS coefficient α‖g‖/‖w‖ of SGD and the angle each optimizer actually turns
    ``w`` per step (the step is α times the momentum buffer: ≈ √(2αλ/(1+ρ)) at equilibrium).
    ``progress(fraction, partial)``: SGD's run so far, then LARS's (partials carry no late-time check).
    """
    steps = relaxation_budget(lr, weight_decay, momentum, min_steps, max_steps)
    eta = eq.equilibrium_angular_step(lr, weight_decay, momentum)
    data = toy_data()
    G = toy_grad_scale(32, data=data)
    norm0 = math.sqrt(eq.equilibrium_sq_norm(lr, weight_decay, G, momentum))
    w_true = data.meta["w_true"].numpy()

    def result(sgd: Record, lars: Record | None, final: bool = True) -> LarsComparison:
        wn, gn = sgd.param_norm["w"][:, 0], sgd.grad_norm["w"][:, 0]
        lars_turn = np.zeros(0) if lars is None else lars.angular_step["w"][:, 0]
        lars_angle = np.zeros(0) if lars is None else eq.angle_to(lars.extras["w"][:, 0], w_true)
        return LarsComparison(sgd.steps, eta, turn=eq.equilibrium_turn_angle(lr, weight_decay, momentum),
                              sgd_step=lr * gn / wn, sgd_turn=sgd.angular_step["w"][:, 0], lars_turn=lars_turn,
                              sgd_turn_rms=float(eq.late_rms(sgd.angular_step["w"])[0]) if final else math.nan,
                              lars_turn_rms=float(eq.late_rms(lars.angular_step["w"])[0]) if final else math.nan,
                              sgd_angle=eq.angle_to(sgd.extras["w"][:, 0], w_true), lars_angle=lars_angle,
                              check=eq.equilibrium_check(sgd, lr, weight_decay, momentum) if final else {},
                              sgd=sgd, lars=lars)

    stream = Stream(progress)
    sgd = train_toy(lr, weight_decay, momentum, steps=steps, init_norm=norm0, track_weights=True, data=data,
                    report=stream.stage(lambda r: result(r, None, final=False), 0.0, 0.5))
    lars = train_toy(eta, 0.0, momentum, steps=steps, optimizer="lars", init_norm=norm0, track_weights=True,
                     data=data, report=stream.stage(lambda r: result(sgd, r, final=False), 0.5, 1.0))
    return result(sgd, lars)


# =========================================================================== 4. the 2-D picture
@dataclass
class PlaneRuns:
    """Two runs of the 2-D toy model, without decay (run 0) and with decay λ (run 1)."""

    lr: float
    weight_decay: float
    w: np.ndarray        # (K, 2, 2) weights
    g: np.ndarray        # (K, 2, 2) loss gradients
    radius: float        # √ of the equilibrium squared norm G√(α/(2λ)), G from the probe run (NaN: a partial result)
    record: Record
    probe: Record | None  # the decayed run again from another seed: where G comes from (None: a partial result)

    def pieces(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The two pieces of step ``step`` per run, ``(2, 2)`` each: decay −αλw (inward) and gradient −αg (⊥ w)."""
        decays = np.array([0.0, self.weight_decay])
        return -self.lr * decays[:, None] * self.w[step], -self.lr * self.g[step]


@cached
@accepts(lr=Positive(), weight_decay=Positive(), steps=Int(1), progress=Function(optional=True))
def plane_runs(lr: float, weight_decay: float, steps: int = 300, progress=None) -> PlaneRuns:
    """The toy model in the plane on pure-noise labels (the direction random-walks), without and with decay.

    The circle's radius is a prediction: its :math:`G` comes from a probe run with decay from
    another seed (other initial direction, other minibatches), not from the drawn runs. ``progress``
    (:class:`~lecture_lib.record.Stream`) gets the drawn runs as they train, without the circle (``radius``
    NaN, ``probe`` None), then the fraction alone while the probe trains.
    """
    data = toy_data(dim=2, teacher_scale=0.0)
    stream = Stream(progress)
    rec = train_toy([lr, lr], [0.0, weight_decay], batch_size=8, steps=steps, dim=2, init_norm=0.5,
                    track_weights=True, data=data,
                    report=stream.stage(lambda r: PlaneRuns(lr, weight_decay, r.extras["w"], r.extras["g"],
                                                            radius=math.nan, record=r, probe=None), 0.0, 0.5))
    probe = train_toy(lr, weight_decay, batch_size=8, steps=steps, dim=2, init_norm=0.5, data=data, seed=1,
                      report=stream.stage(None, 0.5, 1.0))
    G = eq.grad_scale(probe)[0]
    return PlaneRuns(lr, weight_decay, rec.extras["w"], rec.extras["g"],
                     radius=math.sqrt(eq.equilibrium_sq_norm(lr, weight_decay, G)), record=rec, probe=probe)


# =========================================================================== 5. batch size and linear scaling
@dataclass
class BatchScaling:
    """One toy run per factor n (batch nB, learning rate nα); ``(len(factors),)`` summaries and per-n curves."""

    factors: list[int]
    batch_size: int
    lr: float
    records: dict[int, Record]
    n: np.ndarray
    step: np.ndarray          # late median of α‖g‖/‖w‖
    step_pred: np.ndarray     # (len(factors),) √(2nαλ(1−ρ)) for every factor, trained or not (needs no run)
    grad_scale: np.ndarray    # late median of ‖g‖‖w‖ (G, the gradient norm at unit weight norm)
    correlation: np.ndarray   # mean cos(gₜ, EMA of earlier g)
    examples: dict[int, np.ndarray]       # (K,) examples seen at each recorded step
    loss: dict[int, np.ndarray]           # (K,) training loss, smoothed
    cos: dict[int, np.ndarray]            # (K-1,) cos(gₜ, vₜ₋₁), smoothed (from step 1)


@cached
@accepts(factors=FACTORS, lr=Positive(), batch_size=Int(1), weight_decay=Positive(), momentum=Unit(),
         examples=Int(1), seed=Seed(), progress=Function(optional=True))
def batch_scaling(factors=(1, 2, 4, 8), lr: float = 0.02, batch_size: int = 8, weight_decay: float = 5e-3,
                  momentum: float = 0.0, examples: int = 64000, seed: int = 0, progress=None) -> BatchScaling:
    r"""The linear scaling rule (Goyal et al. 2017) on the toy model: B → nB and α → nα, same examples seen.

    For each factor n the toy model trains with batch size :math:`nB` and learning rate
    :math:`n\alpha` for ``examples // (n B)`` steps (start at the predicted equilibrium norm).
    At equilibrium the angle per step is :math:`\sqrt{2 n\alpha\lambda}` without momentum
    (:math:`\sqrt{2n\alpha\lambda/(1+\rho)}` with it): √n larger per step either way.
    If batch gradients are noise dominated, :math:`\lVert g\rVert \propto 1/\sqrt{nB}`, and one
    step of size √n·η in a random direction moves as far as n steps of size η: the runs then
    agree as functions of the number of examples seen.

    Returns a :class:`BatchScaling`: the records per n; ``(len(factors),)`` arrays ``n``,
    ``step`` (late median of the LARS coefficient α‖g‖/‖w‖, the angle per step when ρ = 0),
    ``step_pred`` :math:`\sqrt{2n\alpha\lambda(1-\rho)}` (for every factor, also in a partial result),
    ``grad_scale`` (late median of ‖g‖‖w‖, the gradient norm at unit weight norm, G) and
    ``correlation`` (mean cosine of :math:`g_t` with the EMA of earlier gradients); and per-n curves.
    ``progress(fraction, partial)``: the factors trained so far and the one training.
    """
    records, rows, stream = {}, [], Stream(progress)
    for i, n in enumerate(factors):
        a, B = lr * n, batch_size * n
        steps = max(examples // B, 20)
        G = toy_grad_scale(B, seed=seed)
        report = stream.stage(lambda r, n=n: _batch_scaling_of(factors, lr, batch_size, weight_decay, momentum,
                                                               {**records, n: r}, rows),
                              i / len(factors), (i + 1) / len(factors))
        rec = train_toy(a, weight_decay, momentum, batch_size=B, steps=steps, seed=seed, track_correlation=True,
                        init_norm=math.sqrt(eq.equilibrium_sq_norm(a, weight_decay, G, momentum)), report=report)
        w, g = rec.param_norm["w"], rec.grad_norm["w"]
        rows.append((n, eq.late_median(a * g / w)[0], eq.late_median(w * g)[0],
                     float(np.nanmean(rec.extras["grad_momentum_cos"][1:]))))
        records[n] = rec
    return _batch_scaling_of(factors, lr, batch_size, weight_decay, momentum, records, rows)


def _batch_scaling_of(factors, lr: float, batch_size: int, weight_decay: float, momentum: float, records: dict,
                      rows: list) -> BatchScaling:
    """The result from the ``records`` per n and the summary ``rows`` of the factors done."""
    n, step, G, corr = (np.asarray(col, dtype=np.float64) for col in (zip(*rows) if rows else [()] * 4))
    step_pred = np.array([eq.equilibrium_angular_step(lr * f, weight_decay, momentum) for f in factors])
    return BatchScaling(list(factors), batch_size, lr, records, n, step, step_pred, G, corr,
                        examples={n: r.steps * n * batch_size for n, r in records.items()},
                        loss={n: smooth(r.loss[:, 0], max(len(r.steps) // 30, 1)) for n, r in records.items()},
                        cos={n: smooth(r.extras["grad_momentum_cos"][1:, 0], max(len(r.steps) // 15, 1))
                             for n, r in records.items()})


# =========================================================================== 6. Labatie: effective LR, not capacity
@dataclass
class DecayStrengths:
    """BN networks with decay λ on the scale-invariant weights only, one run per λ (``decays``)."""

    decays: tuple
    steps: np.ndarray
    effective_lr: np.ndarray   # (K, R) α/‖w‖², averaged over the hidden layers
    angular_step: np.ndarray   # (K, R) angle per step, averaged over the hidden layers, smoothed
    output_gap: np.ndarray     # (R,) relative change of f when the hidden weights are multiplied by 10
    train_accuracy: np.ndarray  # (R,) late median
    test_accuracy: np.ndarray  # (R,) final
    test_loss: np.ndarray      # (R,) final
    record: Record


@cached
@accepts(lr=Positive(), momentum=Unit(), decays=NonNegative(sequences=True), steps=Int(1), batch_size=Int(1),
         label_noise=Unit(), progress=Function(optional=True))
def decay_strengths(lr: float, momentum: float, decays=(0.0, 1e-4, 1e-3, 1e-2), steps: int = 600,
                    batch_size: int = 32, label_noise: float = 0.3, progress=None) -> DecayStrengths:
    """Labatie (2020): what λ changes in a normalized network is α/‖w‖², not what the network can represent."""
    decays = [float(d) for d in np.atleast_1d(decays)]   # one run per λ

    def result(rec, gap):              # gap None: a partial result (still training), curves only
        names = scale_invariant_names(rec)
        eff = np.mean([rec.effective_lr[n] for n in names], axis=0)
        ang = np.mean([rec.angular_step[n] for n in names], axis=0)
        nan = np.full(len(decays), np.nan)
        return DecayStrengths(tuple(decays), rec.steps, eff, smooth(ang, max(steps // 40, 1)),
                              output_gap=nan if gap is None else gap,
                              train_accuracy=eq.late_median(rec.accuracy, 0.9),
                              test_accuracy=nan if gap is None else rec.test_accuracy[-1],
                              test_loss=nan if gap is None else rec.test_loss[-1], record=rec)

    rec, model, data = train_bn_network(lr, decays, momentum, steps=steps, batch_size=batch_size,
                                        label_noise=label_noise, decay_scale_invariant_only=True,
                                        eval_every=max(steps // 6, 1), return_model=True,
                                        report=Stream(progress).stage(lambda r: result(r, None)))
    return result(rec, rescaled_output_gap(model, data.x_train, 10.0))
