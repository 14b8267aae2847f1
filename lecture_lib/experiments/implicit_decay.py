r"""The experiments of notebook 04, "Implicit learning-rate decay from normalization".

Two models whose cost is scale invariant in some weights: the toy model
:math:`f(x) = c\,x^\top w/\lVert w\rVert` on noisy linear regression (:func:`toy_setup`) and a
batch-norm MLP on the digits (:func:`bn_setup`). :func:`run` trains either with SGD (and one
remedy), Adam or K-FAC, many runs as one batched computation. Each section of the notebook is
one function ``params -> result dataclass``, which its panel calls in one line:

==========================  ===================================================  =====================
function                    what it measures                                     result
==========================  ===================================================  =====================
:func:`euler_check`         Euler's identities over a grid of rescalings          :class:`EulerResult`
:func:`growth`              Pythagorean growth of ‖w‖² and its √ law              :class:`GrowthResult`
:func:`collapse`            effective learning rates of an α sweep converging     :class:`CollapseResult`
:func:`output_layer`        the learning rate each layer trains with              :class:`OutputLayerResult`
:func:`remedies`            weight decay, exponential schedule, unit norm         :class:`RemediesResult`
:func:`optimizers`          SGD, Adam and K-FAC from rescaled starting weights    :class:`OptimizersResult`
==========================  ===================================================  =====================

The mathematics (the identities, the fit, the remedies) is in :mod:`lecture_lib.scale_invariance`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .. import losses, optim
from .._validate import Array, Choice, Instance, Int, NonNegative, Positive, Real, Seed, Where, accepts
from ..cache import cached
from ..data import digits, linear_regression
from ..engine import train
from ..models import MLP, ScaleInvariantLinear
from ..optim.base import per_run, run_norm, stack_runs
from ..record import Record
from ..scale_invariance import (REMEDIES, EulerCheck, SqrtLawFit, decay_factor_positive,
                                direction_grad_norm, euler_identities, fit_sqrt_law, layer_learning_rates,
                                pythagorean_residual, remedy_optimizer)

F64 = torch.float64
SETUPS = ("toy", "bn")
OPTIMIZERS = ("sgd", "adam", "kfac")
LOSS = {"toy": "mse", "bn": "cross_entropy"}
BATCH_SIZE = {"toy": 16, "bn": 64}
DTYPE = {"toy": torch.float64, "bn": torch.float32}
HIDDEN = ("linears.0.weight", "linears.1.weight")   # the BN network's scale-invariant layers (depth 2)
OUTPUT = "linears.2.weight"                         # its output layer: no normalizer after it


# =========================================================================== the two models

@accepts(runs=Int(1), dim=Int(1), n=Int(1), noise=NonNegative(), scale=Positive(), init_norm=Positive(), seed=Seed())
def toy_setup(runs: int = 1, dim: int = 20, n: int = 512, noise: float = 1.0, scale: float = 1.0,
              init_norm: float = 1.0, seed: int = 0, dtype=torch.float64):
    r"""The toy scale-invariant model :math:`f(x) = c\,x^\top w/\lVert w\rVert` on noisy linear regression.

    Every run starts from the same :math:`w_0` (``seed``) so that a learning-rate sweep
    compares like with like. With label noise the minibatch gradient never vanishes, so
    :math:`\lVert\nabla\mathcal J(\hat w)\rVert` stays roughly constant: the regime in which
    the square-root law holds. Returns ``(model, data)``.
    """
    model = ScaleInvariantLinear(dim, scale=scale, runs=runs, seed=seed, init_norm=init_norm, dtype=dtype)
    return model, linear_regression(n=n, dim=dim, noise=noise, seed=seed, dtype=dtype)


@accepts(runs=Int(1), width=Int(1), depth=Int(1), seed=Seed(), eps=Positive())
def bn_setup(runs: int = 1, width: int = 64, depth: int = 2, seed: int = 0, eps: float = 1e-5,
             dtype=torch.float32):
    r"""A batch-norm MLP on the scikit-learn digits: ``[64, width × depth, 10]``, returns ``(model, data)``.

    The hidden weights ``linears.{0..depth-1}.weight`` are scale invariant; the output
    layer ``linears.{depth}`` (weight and bias) is not. ``eps`` is batch norm's
    :math:`\epsilon`, which makes the invariance approximate (exact as :math:`\epsilon \to 0`).
    """
    model = MLP([64] + [width] * depth + [10], norm="batch", activation="relu", runs=runs, seed=seed, eps=eps,
                dtype=dtype)
    return model, digits(seed=0, dtype=dtype)


# =========================================================================== training

def _optimizer(name: str, model, loss: str, lr, remedy: str, weight_decay, damping):
    r"""SGD with ``remedy`` on the scale-invariant tensors, Adam, or K-FAC.

    Adam: :math:`w \leftarrow w - \alpha\,\hat m/(\sqrt{\hat v}+\epsilon)` (Kingma & Ba 2015), no weight decay.
    K-FAC: :math:`w \leftarrow w - \alpha(\hat G + \gamma I)^{-1}\nabla\mathcal J(w)` with
    :math:`\hat G = A\otimes S` (Martens & Grosse 2015), ``damping`` :math:`\gamma`.
    """
    if name == "sgd":
        return remedy_optimizer(lr, remedy, weight_decay, mask=dict(model.scale_invariant))
    if name == "kfac":
        return optim.get("kfac", model=model, loss=loss, lr=lr, damping=damping, weight_decay=weight_decay,
                         curvature="ggn", stat_interval=1, inv_interval=5)
    return optim.get(name, lr=lr)


def _rescale_(model, init_scale, unit_norm: bool) -> None:
    """Multiply the scale-invariant weights by ``init_scale``, or put them on the unit sphere: the same function."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not model.scale_invariant.get(name, False):
                continue
            if unit_norm:
                p.div_(run_norm(p))
            else:
                p.mul_(per_run(init_scale, p, "init_scale"))


@accepts(setup=Choice(SETUPS), lr=Positive(per_run=True), steps=Int(1), batch_size=Int(1, optional=True),
         remedy=Choice(REMEDIES), weight_decay=NonNegative(per_run=True), optimizer=Choice(OPTIMIZERS),
         damping=NonNegative(), seed=Seed(), record_every=Int(1), init_scale=Positive(per_run=True))
def run(setup: str, lr, steps: int, batch_size: int | None = None, remedy: str = "none",
        weight_decay=0.0, optimizer: str = "sgd", damping=1e-3, seed: int = 0, record_every: int = 1,
        init_scale=1.0, **setup_kwargs) -> Record:
    r"""Train the toy model (``setup='toy'``) or the BN network (``'bn'``) and return its Record.

    ``lr`` may be an ``(R,)`` tensor: R runs, one per learning rate, trained as one
    computation from the same initial weights. With ``remedy='unit_norm'`` the
    scale-invariant weights start on the unit sphere too, so :math:`\lVert w_k\rVert = 1`
    at every step. Default batch sizes: 16 (toy), 64 (BN network).

    ``init_scale`` (a float or one value per run) multiplies the scale-invariant weights
    before training: the same function, a different starting norm, so a different
    effective learning rate for SGD (:math:`\propto 1/c^2`) and Adam (:math:`\propto 1/c`),
    and none for undamped K-FAC. An ``(R,)`` ``init_scale`` with a float ``lr`` gives R runs.
    ``setup_kwargs`` go to :func:`toy_setup` or :func:`bn_setup` (e.g. ``width``, ``dtype``).
    """
    dtype = setup_kwargs.setdefault("dtype", DTYPE[setup])
    hp, runs = stack_runs({"lr": lr, "init_scale": init_scale}, dtype)
    model, data = (toy_setup if setup == "toy" else bn_setup)(runs=runs, seed=seed, **setup_kwargs)
    opt = _optimizer(optimizer, model, LOSS[setup], hp["lr"], remedy, weight_decay, damping)
    _rescale_(model, hp["init_scale"], unit_norm=optimizer == "sgd" and remedy == "unit_norm")
    return train(model, data, LOSS[setup], opt, steps, batch_size=batch_size or BATCH_SIZE[setup], seed=seed,
                 record_every=record_every, diverge_above=1e4)


# =========================================================================== 1. Euler's identities

GAMMA_GRID = np.logspace(-2, 2, 33)


@dataclass
class EulerResult:
    """Euler's identities on each tensor of ``model`` (``checks``: name -> table over γ), at the chosen γ."""

    model: str
    gamma: float
    checks: dict[str, EulerCheck]


@functools.lru_cache(maxsize=2)
def _euler_problem(model: str):
    """One batch and the tensors to rescale: the toy model's ``w``, or a BN hidden layer and the output layer."""
    if model == "toy":
        net, data = toy_setup(dim=20, dtype=F64)
        return net, losses.mse, data.x_train[:64], data.y_train[:64], ("w",)
    net, data = bn_setup(width=32, dtype=F64)
    return net, losses.cross_entropy, data.x_train[:128], data.y_train[:128], (HIDDEN[0], OUTPUT)


@cached
@accepts(model=Choice(SETUPS), gamma=Positive())
def euler_check(model: str = "bn", gamma: float = 3.0) -> EulerResult:
    """Rescale each tensor of the chosen model by every γ of a grid (and by ``gamma``); measure Euler (float64)."""
    net, loss_fn, x, y, names = _euler_problem(model)
    grid = np.unique(np.append(GAMMA_GRID, gamma))
    return EulerResult(model, float(gamma), {n: euler_identities(net, loss_fn, x, y, n, grid) for n in names})


# =========================================================================== 2. Pythagorean growth

@dataclass
class GrowthResult:
    r"""One SGD run without weight decay. Per scale-invariant tensor (``names``): the fitted
    :math:`\sqrt{1 + k/k_0}` law (``None`` if fewer than 3 finite steps), the largest Pythagorean
    residual, and whether :math:`\lVert w\rVert` never shrank (up to the rounding of the dtype)."""

    model: str
    lr: float
    record: Record
    names: list[str]
    fits: dict[str, SqrtLawFit | None]
    residual: dict[str, float]
    monotone: dict[str, bool]


@cached
@accepts(model=Choice(SETUPS), lr=Positive(), steps=Int(1))
def growth(model: str = "bn", lr: float = 1.0, steps: int = 600) -> GrowthResult:
    """One SGD run (no weight decay); ‖w‖² per scale-invariant tensor with its square-root fit."""
    rec = run(model, lr, steps)
    names = [n for n, inv in rec.scale_invariant.items() if inv]
    eps = np.finfo(np.float64 if DTYPE[model] == torch.float64 else np.float32).eps
    out = GrowthResult(model, float(lr), rec, names, {}, {}, {})
    for n in names:
        sq = rec.param_norm[n][:, 0] ** 2
        valid = np.isfinite(sq)
        out.fits[n] = fit_sqrt_law(rec.steps[valid], sq[valid]) if valid.sum() >= 3 else None
        res = pythagorean_residual(rec.param_norm[n], rec.grad_norm[n], lr)
        out.residual[n] = float(np.nanmax(np.abs(res))) if np.isfinite(res).any() else float("nan")
        # float32: a step can add less than one ulp to ‖w‖², so "never shrank" allows a few ulps
        out.monotone[n] = bool(np.all(np.diff(sq[valid]) >= -4 * eps * sq[valid][1:]))
    return out


# =========================================================================== 3. the α sweep collapses

def _recorded(arguments) -> None:
    if not isinstance(arguments["name"], str) or arguments["name"] not in arguments["record"].param_norm:
        raise ValueError(f"name must be one of the record's parameters {sorted(arguments['record'].param_norm)}, "
                         f"got {arguments['name']!r}")


@accepts(_recorded, record=Instance(Record), tail=Real(0.0, 1.0, low_open=True))
def late_asymptote(record: Record, name: str, tail: float = 0.5) -> np.ndarray:
    r"""The :math:`\alpha`-free late-time effective learning rate :math:`1/(G\sqrt{2k})`, shape ``(K,)``.

    :math:`G` is the root-mean-square of :math:`\lVert\nabla\mathcal J(\hat w)\rVert` over the last
    ``tail`` fraction of training, pooled over runs (see :func:`lecture_lib.scale_invariance.sqrt_law_k0`).
    """
    g = direction_grad_norm(record, name)
    start = min(int(len(record.steps) * (1 - tail)), len(record.steps) - 1)
    G = float(np.sqrt(np.nanmean(g[start:] ** 2)))
    k = np.maximum(record.steps.astype(np.float64), 1.0)
    return 1.0 / (G * np.sqrt(2.0 * k))


def _row_of(arguments) -> None:
    rows = arguments["values"].shape[0]
    Int(-rows, rows - 1).check("row", arguments["row"], arguments)


@accepts(_row_of, values=Array(ndim=2))
def spread(values: np.ndarray, row: int) -> float:
    """max / min over runs of a positive ``(K, R)`` quantity at one row (how far apart the runs are)."""
    v = values[int(row)]
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min()) if v.size else float("nan")


@dataclass
class CollapseResult:
    """R learning rates ``lr`` of the toy model trained as one batch; the α-free ``asymptote`` ``(K,)``,
    and how far apart the effective rates are at the first and the last step (max / min)."""

    lr: np.ndarray
    record: Record
    asymptote: np.ndarray
    spread_start: float
    spread_end: float


@cached
@accepts(lr_min=Positive(), decades=Int(1, 5), steps=Int(1), runs=Int(2))
def collapse(lr_min: float = 0.01, decades: int = 3, steps: int = 3000, runs: int = 5) -> CollapseResult:
    """ONE batched run of the toy model: ``runs`` learning rates log-spaced over ``decades`` decades."""
    lr = lr_min * torch.logspace(0, decades, runs, dtype=F64)
    rec = run("toy", lr, steps)
    eff = rec.effective_lr["w"]
    return CollapseResult(lr.numpy(), rec, late_asymptote(rec, "w"), spread(eff, 0), spread(eff, -1))


# =========================================================================== 4. the output layer escapes

@dataclass
class OutputLayerResult:
    """The learning rate each layer of the BN network trains with (``rates``: name -> ``(K, R)``)."""

    lr: float
    record: Record
    rates: dict[str, np.ndarray]

    @property
    def ratio(self) -> np.ndarray:
        r"""Output layer's rate over hidden layer 1's, ``(K,)``:
        :math:`\alpha / (\alpha/\lVert w_1\rVert^2) = \lVert w_1\rVert^2`."""
        return self.rates[OUTPUT][:, 0] / self.rates[HIDDEN[0]][:, 0]


@cached
@accepts(lr=Positive(), steps=Int(1))
def output_layer(lr: float = 1.0, steps: int = 600) -> OutputLayerResult:
    """BN network, SGD: the learning rate each layer trains with over time."""
    rec = run("bn", lr, steps)
    return OutputLayerResult(float(lr), rec, layer_learning_rates(rec, lr))


# =========================================================================== 5. remedies

@dataclass
class RemediesResult:
    """One BN-network run per chosen remedy (``runs``: remedy -> Record); ``lr_unit`` is the projected run's α."""

    lr: float
    lr_unit: float
    weight_decay: float
    runs: dict[str, Record]


def _remedy_names(name, value):
    if isinstance(value, str) or not all(v in REMEDIES for v in value):
        raise ValueError(f"{name} must be a sequence of remedies from {REMEDIES}, got {value!r}")
    return tuple(value)


@cached
@accepts(decay_factor_positive, lr=Positive(), weight_decay=NonNegative(), lr_unit=Positive(), steps=Int(1),
         chosen=Where(_remedy_names, bad=("none", ("magic",), (None,))))
def remedies(lr: float = 1.0, weight_decay: float = 5e-3, chosen=REMEDIES, lr_unit: float = 0.03,
             steps: int = 400) -> RemediesResult:
    """BN network: one SGD run per remedy in ``chosen``, applied to the scale-invariant layers.

    The projected run has its own learning rate ``lr_unit``: on the unit sphere α *is* the
    effective rate, so it lives on a different scale from the α of the other runs.
    """
    runs = {name: run("bn", lr_unit if name == "unit_norm" else lr, steps, remedy=name, weight_decay=weight_decay)
            for name in chosen}
    return RemediesResult(float(lr), float(lr_unit), float(weight_decay), runs)


# =========================================================================== 6. optimizers

OPT_LR = {"sgd": 0.3, "adam": 0.01, "kfac": 0.003}


@dataclass
class OptimizersResult:
    """Each optimizer (learning rate ``lrs[name]``) from the rescaled starts ``scales``·w₀;
    ``records``: name -> Record."""

    damping: float
    scales: np.ndarray
    lrs: dict[str, float]
    records: dict[str, Record]

    def early_spread(self, name: str, layer: str = HIDDEN[0], steps: int = 20) -> float:
        """max / min over the starts of the angular step of ``layer``, averaged over the first ``steps`` steps."""
        ang = self.records[name].angular_step[layer]
        early = np.nanmean(ang[1:min(steps, len(ang))], axis=0)
        return float(early.max() / early.min())


@cached
@accepts(damping=NonNegative(), rescale=Real(1.0, 10.0), steps=Int(1))
def optimizers(damping: float = 1e-4, rescale: float = 4.0, steps: int = 150) -> OptimizersResult:
    """SGD, Adam and K-FAC, each from w₀/c, w₀ and c·w₀ (``rescale`` c; one batched run per optimizer)."""
    scales = torch.tensor([1.0 / rescale, 1.0, float(rescale)])
    records = {name: run("bn", lr, steps, optimizer=name, damping=damping, init_scale=scales)
               for name, lr in OPT_LR.items()}
    return OptimizersResult(float(damping), scales.numpy(), dict(OPT_LR), records)
