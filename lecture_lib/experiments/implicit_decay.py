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
:func:`growth`              Pythagorean growth of ‖w‖², the predicted √ law       :class:`GrowthResult`
:func:`growth_family`       the same for many α, one batched run                  list of :class:`GrowthResult`
:func:`collapse`            effective learning rates of an α sweep converging     :class:`CollapseResult`
:func:`output_layer`        the learning rate each layer trains with              :class:`OutputLayerResult`
:func:`remedies`            weight decay, exponential schedule, unit norm         :class:`RemediesResult`
:func:`optimizers`          SGD, Adam and K-FAC from rescaled starting weights    :class:`OptimizersResult`
:func:`kfac_rescaling`      K-FAC's directions from w and c·w, damping γ and c²γ  :class:`KFACRescalingResult`
==========================  ===================================================  =====================

The mathematics (the identities, the √ law, the remedies) is in :mod:`lecture_lib.scale_invariance`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .. import losses, optim
from .._validate import Array, Choice, Function, Instance, Int, NonNegative, Positive, Real, Seed, Where, accepts
from ..cache import cached
from ..data import digits, linear_regression
from ..engine import train
from ..models import MLP, ScaleInvariantLinear
from ..optim.base import chain, per_run, run_norm, stack_runs
from ..optim.transforms import masked
from ..record import Record, Stream
from ..scale_invariance import (REMEDIES, EulerCheck, decay_factor_positive, direction_grad_norm, euler_identities,
                                layer_learning_rates, pythagorean_residual, remedy_optimizer, sqrt_law, sqrt_law_k0)

F64 = torch.float64
SETUPS = ("toy", "bn")
OPTIMIZERS = ("sgd", "adam", "kfac")
LOSS = {"toy": "mse", "bn": "cross_entropy"}
BATCH_SIZE = {"toy": 16, "bn": 64}
DTYPE = {"toy": torch.float64, "bn": torch.float32}
HIDDEN = ("linears.0.weight", "linears.1.weight")   # the BN network's scale-invariant layers (depth 2)
OUTPUT = "linears.2.weight"                         # its output layer: no normalizer after it


# =========================================================================== the two models

@accepts(runs=Int(1), dim=Int(1), n=Int(1), noise=NonNegative(), scale=Positive(), init_norm=Positive(), seed=Seed(),
         data_seed=Seed())
def toy_setup(runs: int = 1, dim: int = 20, n: int = 512, noise: float = 1.0, scale: float = 1.0,
              init_norm: float = 1.0, seed: int = 0, data_seed: int = 0, dtype=torch.float64):
    r"""The toy scale-invariant model :math:`f(x) = s\,x^\top w/\lVert w\rVert` on noisy linear regression.

    ``scale`` is the output gain :math:`s`. Every run starts from the same :math:`w_0`
    (``seed``) so that a learning-rate sweep compares like with like; the data set is fixed by
    ``data_seed``, so a run with another ``seed`` (another :math:`w_0`, another minibatch order)
    is an independent run on the same problem. With label noise the minibatch gradient never
    vanishes: :math:`\lVert\nabla\mathcal J(\hat w)\rVert` falls over the first steps, while the
    direction is learned, then settles on a floor set by the noise, close to the regime in
    which the square-root law holds. Returns ``(model, data)``.
    """
    model = ScaleInvariantLinear(dim, scale=scale, runs=runs, seed=seed, init_norm=init_norm, dtype=dtype)
    return model, linear_regression(n=n, dim=dim, noise=noise, seed=data_seed, dtype=dtype)


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
         damping=NonNegative(), seed=Seed(), record_every=Int(1), init_scale=Positive(per_run=True),
         report=Function(optional=True))
def run(setup: str, lr, steps: int, batch_size: int | None = None, remedy: str = "none",
        weight_decay=0.0, optimizer: str = "sgd", damping=1e-3, seed: int = 0, record_every: int = 1,
        init_scale=1.0, report=None, **setup_kwargs) -> Record:
    r"""Train the toy model (``setup='toy'``) or the BN network (``'bn'``) and return its Record.

    ``lr`` may be an ``(R,)`` tensor: R runs, one per learning rate, trained as one
    computation from the same initial weights. With ``remedy='unit_norm'`` the
    scale-invariant weights start on the unit sphere too, so :math:`\lVert w_k\rVert = 1`
    at every step. Default batch sizes: 16 (toy), 64 (BN network).

    ``init_scale`` (a float or one value per run) multiplies the scale-invariant weights
    before training: the same function, a different starting norm, so a different
    effective learning rate for SGD (:math:`\propto 1/c^2`) and Adam (:math:`\propto 1/c`),
    and none for undamped K-FAC. An ``(R,)`` ``init_scale`` with a float ``lr`` gives R runs.
    ``setup_kwargs`` go to :func:`toy_setup` or :func:`bn_setup` (e.g. ``width``, ``dtype``);
    ``report`` to :func:`~lecture_lib.engine.train` (partial records, :class:`~lecture_lib.record.Stream`).
    """
    dtype = setup_kwargs.setdefault("dtype", DTYPE[setup])
    hp, runs = stack_runs({"lr": lr, "init_scale": init_scale}, dtype)
    model, data = (toy_setup if setup == "toy" else bn_setup)(runs=runs, seed=seed, **setup_kwargs)
    opt = _optimizer(optimizer, model, LOSS[setup], hp["lr"], remedy, weight_decay, damping)
    _rescale_(model, hp["init_scale"], unit_norm=optimizer == "sgd" and remedy == "unit_norm")
    return train(model, data, LOSS[setup], opt, steps, batch_size=batch_size or BATCH_SIZE[setup], seed=seed,
                 record_every=record_every, diverge_above=1e4, report=report)


# =========================================================================== 1. Euler's identities

FACTOR_GRID = np.logspace(-2, 2, 33)


@dataclass
class EulerResult:
    """Euler's identities on each tensor of ``model`` (``checks``: name -> table over the rescaling factors c),
    at the chosen factor ``factor``."""

    model: str
    factor: float
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
@accepts(model=Choice(SETUPS), factor=Positive())
def euler_check(model: str = "bn", factor: float = 3.0) -> EulerResult:
    """Rescale each tensor of the chosen model by every factor c of a grid (and by ``factor``); measure Euler
    (float64)."""
    net, loss_fn, x, y, names = _euler_problem(model)
    grid = np.unique(np.append(FACTOR_GRID, factor))
    return EulerResult(model, float(factor), {n: euler_identities(net, loss_fn, x, y, n, grid) for n in names})


# =========================================================================== 2. Pythagorean growth

def _rms(values: np.ndarray) -> float:
    """Root mean square of the finite entries (a diverged run's NaN tail left out)."""
    return float(np.sqrt(np.nanmean(np.asarray(values, dtype=np.float64) ** 2)))


@dataclass
class GrowthResult:
    r"""One SGD run without weight decay (``record``) and an independent run (``probe``: another
    initial direction and minibatch order, same data and :math:`\alpha`). Per scale-invariant tensor
    (``names``):

    ``G``          :math:`G = \lVert\nabla\mathcal J(\hat w)\rVert`, root mean square over the *probe* run
    ``predicted``  the square-root law :math:`\lVert w_0\rVert^2\sqrt{1 + k/k_0}`, :math:`k_0 =
                   \lVert w_0\rVert^4/(2\alpha^2G^2)`, at the plotted run's steps (nothing fitted)
    ``ratio``      measured :math:`\lVert w_k\rVert^2` over predicted, ``(K,)``
    ``residual``   the largest Pythagorean residual of the plotted run
    ``monotone``   whether :math:`\lVert w\rVert` never shrank (up to the rounding of the dtype)
    """

    model: str
    lr: float
    record: Record
    probe: Record
    names: list[str]
    G: dict[str, float]
    predicted: dict[str, np.ndarray]
    ratio: dict[str, np.ndarray]
    residual: dict[str, float]
    monotone: dict[str, bool]

    def k0(self, name: str) -> float:
        """The predicted time scale :math:`k_0` of tensor ``name``."""
        return sqrt_law_k0(float(self.record.param_norm[name][0, 0]) ** 2, self.lr, self.G[name])

    def end_ratio(self, name: str) -> float:
        """Measured over predicted :math:`\\lVert w\\rVert^2` at the last finite step."""
        r = self.ratio[name][np.isfinite(self.ratio[name])]
        return float(r[-1]) if r.size else float("nan")


@cached
@accepts(model=Choice(SETUPS), lr=Positive(), steps=Int(2), probe_seed=Seed(), progress=Function(optional=True))
def growth(model: str = "bn", lr: float = 1.0, steps: int = 600, probe_seed: int = 1,
           progress=None) -> GrowthResult:
    r"""One SGD run (no weight decay, seed 0); ‖w‖² per scale-invariant tensor against the predicted √ law.

    :math:`G` comes from an independent run with seed ``probe_seed`` (its own initial weights
    and minibatch order), never from the plotted run. ``progress(fraction, partial)``: the plotted run so far,
    without the prediction (the probe has not run yet).
    """
    one = None if progress is None else (lambda fraction, partial=None:
                                         progress(fraction, None if partial is None else partial[0]))
    return growth_family(model, [lr], steps, probe_seed, progress=one)[0]


@cached
@accepts(model=Choice(SETUPS), lr=Positive(sequences=True), steps=Int(2), probe_seed=Seed(),
         progress=Function(optional=True))
def growth_family(model: str = "bn", lr=(0.1, 1.0), steps: int = 600, probe_seed: int = 1,
                  progress=None) -> list[GrowthResult]:
    """:func:`growth` for every learning rate of ``lr`` (a sequence): all runs trained as ONE batched run, and all
    their independent runs (seed ``probe_seed``, one per learning rate) as another. ``progress(fraction,
    partial)``: every position's plotted run so far, without the prediction (the probes have not run yet)."""
    lrs = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    rate = torch.as_tensor(lrs, dtype=DTYPE[model])
    stream = Stream(progress)
    partial = lambda r: [GrowthResult(model, float(a), r.select([i]), r.select([i]),
                                      [n for n, on in r.scale_invariant.items() if on], {}, {}, {}, {}, {})
                         for i, a in enumerate(lrs)]
    runs = run(model, rate, steps, report=stream.stage(partial, 0.0, 0.5))
    probes = run(model, rate, steps, seed=probe_seed, report=stream.stage(None, 0.5, 1.0))
    return [_growth_of(model, float(a), runs.select([r]), probes.select([r])) for r, a in enumerate(lrs)]


def _growth_of(model: str, lr: float, rec: Record, probe: Record) -> GrowthResult:
    names = [n for n, inv in rec.scale_invariant.items() if inv]
    eps = np.finfo(np.float64 if DTYPE[model] == torch.float64 else np.float32).eps
    out = GrowthResult(model, lr, rec, probe, names, {}, {}, {}, {}, {})
    for n in names:
        sq = rec.param_norm[n][:, 0] ** 2
        out.G[n] = _rms(direction_grad_norm(probe, n)[:, 0])
        out.predicted[n] = sqrt_law(rec.steps.astype(np.float64), float(sq[0]), lr, out.G[n])
        out.ratio[n] = sq / out.predicted[n]
        res = pythagorean_residual(rec.param_norm[n], rec.grad_norm[n], lr)
        out.residual[n] = float(np.nanmax(np.abs(res))) if np.isfinite(res).any() else float("nan")
        valid = np.isfinite(sq)
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
    ``tail`` fraction of ``record``, pooled over its runs (see
    :func:`lecture_lib.scale_invariance.sqrt_law_k0`). Pass an *independent* record (another seed),
    not the runs the asymptote is drawn over, or the comparison is circular.
    """
    g = direction_grad_norm(record, name)
    start = min(int(len(record.steps) * (1 - tail)), len(record.steps) - 1)
    G = _rms(g[start:])
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


#: The learning rates of the collapse sweep: a quarter decade apart, 0.01 to 10 (13 values, one batched run).
COLLAPSE_LRS = tuple(float(f"{10 ** (k / 4 - 2):.3g}") for k in range(13))


@dataclass(eq=False)
class CollapseResult:
    r"""R learning rates ``lr`` of the toy model trained as one batch (``record``), and the :math:`\alpha`-free
    ``asymptote`` :math:`1/(G\sqrt{2k})` ``(K,)`` with :math:`G` (``G``) from an independent run (``probe``:
    ``probe_lr``, another seed). ``spread_*``: how far apart the effective rates are at the first and the last
    step (max / min); ``ratio``: each run's last effective rate over the asymptote's; ``k_over_k0``: how far
    past its own predicted :math:`k_0` each run got (the asymptote needs :math:`k \gg k_0`). :meth:`at` is
    one learning rate of the sweep (what a scrubbed panel shows)."""

    lr: np.ndarray
    record: Record
    probe: Record
    probe_lr: float
    init_norm: float
    G: float
    asymptote: np.ndarray
    spread_start: float
    spread_end: float
    ratio: np.ndarray
    k_over_k0: np.ndarray

    def at(self, index: int) -> "CollapseAt":
        """The sweep seen from its learning rate number ``index``."""
        return CollapseAt(self, int(index))

    def positions(self) -> list["CollapseAt"]:
        """:meth:`at` every learning rate, in order."""
        return [self.at(i) for i in range(len(self.lr))]


@dataclass(eq=False)
class CollapseAt:
    """One learning rate (``sweep.lr[index]``) of a :class:`CollapseResult`; the others stay in ``sweep``."""

    sweep: CollapseResult
    index: int

    @property
    def lr(self) -> float:
        return float(self.sweep.lr[self.index])

    @property
    def effective_lr(self) -> np.ndarray:
        """``(K,)`` α/‖w_k‖² of this run."""
        return self.sweep.record.effective_lr["w"][:, self.index]


@cached
@accepts(lr=Positive(sequences=True), steps=Int(2), init_norm=Positive(), probe_lr=Positive(optional=True),
         probe_seed=Seed(), progress=Function(optional=True))
def collapse(lr=COLLAPSE_LRS, steps: int = 3000, init_norm: float = 1.0, probe_lr: float | None = None,
             probe_seed: int = 1, progress=None) -> CollapseResult:
    """ONE batched run of the toy model, one run per learning rate of ``lr`` (a sequence), every run from the
    same w₀ of norm ``init_norm``; plus one independent run (seed ``probe_seed``, learning rate ``probe_lr``,
    default the sweep's geometric middle, same ``init_norm``) that supplies the asymptote's G.
    ``progress(fraction, partial)``: the sweep so far, without the asymptote (it needs the probe)."""
    lr = torch.as_tensor(np.atleast_1d(np.asarray(lr, dtype=np.float64)), dtype=F64)
    probe_lr = float(torch.sqrt(lr.min() * lr.max())) if probe_lr is None else float(probe_lr)
    stream = Stream(progress)
    unknown = np.full(len(lr), np.nan)
    partial = lambda r: CollapseResult(lr.numpy(), r, r, probe_lr, float(init_norm), np.nan,
                                       np.full(len(r.steps), np.nan), np.nan, np.nan, unknown, unknown)
    rec = run("toy", lr, steps, init_norm=init_norm, report=stream.stage(partial, 0.0, 0.8))
    probe = run("toy", probe_lr, steps, seed=probe_seed, init_norm=init_norm, report=stream.stage(None, 0.8, 1.0))
    eff = rec.effective_lr["w"]
    asymptote = late_asymptote(probe, "w")
    tail = int(len(probe.steps) / 2)
    G = _rms(direction_grad_norm(probe, "w")[tail:])
    last = np.array([eff[np.isfinite(eff[:, r]), r][-1] if np.isfinite(eff[:, r]).any() else np.nan
                     for r in range(eff.shape[1])])
    sq0 = rec.param_norm["w"][0] ** 2
    k0 = np.array([sqrt_law_k0(float(x), float(a), G) for x, a in zip(sq0, lr.tolist())])
    return CollapseResult(lr.numpy(), rec, probe, probe_lr, float(init_norm), G, asymptote, spread(eff, 0),
                          spread(eff, -1), last / asymptote[-1], (steps - 1) / k0)


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
@accepts(lr=Positive(), steps=Int(1), progress=Function(optional=True))
def output_layer(lr: float = 1.0, steps: int = 600, progress=None) -> OutputLayerResult:
    """BN network, SGD: the learning rate each layer trains with over time."""
    result = lambda r: OutputLayerResult(float(lr), r, layer_learning_rates(r, lr))
    return result(run("bn", lr, steps, report=Stream(progress).stage(result)))


# =========================================================================== 5. remedies

@dataclass
class RemediesResult:
    """One BN-network run per chosen remedy (``runs``: remedy -> Record); ``lr_unit`` is the projected run's α;
    ``chosen``: the remedies asked for (in a streamed partial, some have no run yet)."""

    lr: float
    lr_unit: float
    weight_decay: float
    runs: dict[str, Record]
    chosen: tuple = ()


def _remedy_names(name, value):
    if isinstance(value, str) or not all(v in REMEDIES for v in value):
        raise ValueError(f"{name} must be a sequence of remedies from {REMEDIES}, got {value!r}")
    return tuple(value)


@cached
@accepts(decay_factor_positive, lr=Positive(), weight_decay=NonNegative(), lr_unit=Positive(), steps=Int(1),
         chosen=Where(_remedy_names, bad=("none", ("magic",), (None,))), progress=Function(optional=True))
def remedies(lr: float = 1.0, weight_decay: float = 5e-3, chosen=REMEDIES, lr_unit: float = 0.03,
             steps: int = 400, progress=None) -> RemediesResult:
    """BN network: one SGD run per remedy in ``chosen``, applied to the scale-invariant layers.

    The projected run has its own learning rate ``lr_unit``: on the unit sphere α *is* the
    effective rate, so it lives on a different scale from the α of the other runs.
    """
    runs, stream = {}, Stream(progress)     # partial: the runs done and the one training
    result = lambda extra: RemediesResult(float(lr), float(lr_unit), float(weight_decay), {**runs, **extra},
                                          tuple(chosen))
    for i, name in enumerate(chosen):
        report = stream.stage(lambda r, name=name: result({name: r}), i / len(chosen), (i + 1) / len(chosen))
        runs[name] = run("bn", lr_unit if name == "unit_norm" else lr, steps, remedy=name, weight_decay=weight_decay,
                         report=report)
    return result({})


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
@accepts(damping=NonNegative(), rescale=Real(1.0, 10.0), steps=Int(1), progress=Function(optional=True))
def optimizers(damping: float = 1e-4, rescale: float = 4.0, steps: int = 150, progress=None) -> OptimizersResult:
    """SGD, Adam and K-FAC, each from w₀/c, w₀ and c·w₀ (``rescale`` c; one batched run per optimizer)."""
    scales = torch.tensor([1.0 / rescale, 1.0, float(rescale)])
    records, stream = {}, Stream(progress)  # partial: the optimizers done and the one training
    result = lambda extra: OptimizersResult(float(damping), scales.numpy(), dict(OPT_LR), {**records, **extra})
    for i, (name, lr) in enumerate(OPT_LR.items()):
        report = stream.stage(lambda r, name=name: result({name: r}), i / len(OPT_LR), (i + 1) / len(OPT_LR))
        records[name] = run("bn", lr, steps, optimizer=name, damping=damping, init_scale=scales, report=report)
    return result({})


# =========================================================================== 7. K-FAC and the rescaling

PRECONDITIONED = ("all", "hidden")


@dataclass
class KFACRescalingResult:
    r"""Three K-FAC runs of a BN network, the same function, as one batched computation:

    ====  ======================  ==================
    run   start                   damping
    ====  ======================  ==================
    0     :math:`w_0`             :math:`c^2\gamma`
    1     :math:`c\,w_0`          :math:`\gamma`
    2     :math:`w_0`             :math:`\gamma`
    ====  ======================  ==================

    ``gap`` is the largest difference, over steps, units and hidden layers, between run 1's unit
    directions :math:`\hat w_j` and run 0's (theory: 0, up to rounding); ``control`` the same between
    run 1 and run 2 (0 only if :math:`\gamma = 0`); ``moved`` how far run 0's directions travel
    (the scale against which the gaps are small). ``directions``: layer -> ``(K, 3, units, inputs)``.
    """

    factor: float
    damping: float
    precondition: str
    gap: float
    control: float
    moved: float
    record: Record
    directions: dict[str, torch.Tensor]


@accepts(factor=Positive(), damping=NonNegative(), steps=Int(1), lr=Positive(), precondition=Choice(PRECONDITIONED),
         eps=Positive(), seed=Seed())
def kfac_rescaling(factor: float = 3.0, damping: float = 0.0, steps: int = 100, lr: float = 0.01,
                   precondition: str = "all", eps: float = 1e-14, seed: int = 0) -> KFACRescalingResult:
    r"""K-FAC from :math:`w_0` and :math:`c\,w_0` (``factor`` :math:`c`): the directions agree when the damping is
    rescaled by :math:`c^2`.

    For a scale-invariant layer the K-FAC factor :math:`S` scales as :math:`c^{-2}` and the gradient as
    :math:`c^{-1}`, so the step from :math:`c\,w` with damping :math:`\gamma` is
    :math:`-\alpha c\,(A\otimes S + c^2\gamma I)^{-1}\nabla\mathcal J(w)`: :math:`c` times the step from
    :math:`w` with damping :math:`c^2\gamma`. Undamped (:math:`\gamma = 0`) K-FAC is therefore invariant;
    damped K-FAC from :math:`(c\,w, \gamma)` follows :math:`(w, c^2\gamma)` exactly. The equivalence needs
    :math:`c^2\gamma` on every preconditioned layer, so with ``damping > 0`` use ``precondition='hidden'``
    (K-FAC on the BN layers, plain SGD with the same :math:`\alpha` on the output layer and BN's gain and
    shift); ``'all'`` preconditions the output layer too (where the damping differs between runs 0 and 1).

    The network is a ``[8, 16, 16, 1]`` BN MLP on Gaussian linear regression in float64, with batch norm's
    ``eps`` tiny (its :math:`\epsilon` breaks the invariance) and inputs of full rank (the digits have pixels
    that are always 0, which makes the undamped factor :math:`A` singular). Gauss-Newton curvature, factors
    and their inverses refreshed every step.
    """
    c = float(factor)
    model = MLP([8, 16, 16, 1], norm="batch", activation="relu", runs=3, seed=seed, eps=eps, dtype=F64)
    data = linear_regression(n=256, dim=8, noise=0.5, seed=seed, dtype=F64)
    with torch.no_grad():
        for name in HIDDEN:
            dict(model.named_parameters())[name].mul_(torch.tensor([1.0, c, 1.0], dtype=F64).view(3, 1, 1))
    damp = torch.tensor([c * c * damping, damping, damping], dtype=F64)
    kfac = optim.get("kfac", model=model, loss="mse", lr=lr, damping=damp, curvature="ggn", stat_interval=1,
                     inv_interval=1)
    if precondition == "hidden":
        hidden = {n: n in HIDDEN for n, _ in model.named_parameters()}
        kfac = chain(masked(kfac, hidden), masked(optim.get("sgd", lr=lr), {n: not h for n, h in hidden.items()}))
    directions = {n: [] for n in HIDDEN}

    def keep_directions(step, net):
        params = dict(net.named_parameters())
        for n in HIDDEN:
            w = params[n].detach()
            directions[n].append(w / w.norm(dim=-1, keepdim=True))

    keep_directions(-1, model)
    rec = train(model, data, "mse", kfac, steps, batch_size=64, seed=seed, callback=keep_directions,
                diverge_above=None)
    d = {n: torch.stack(v) for n, v in directions.items()}
    gap = max(float((v[:, 1] - v[:, 0]).abs().max()) for v in d.values())
    control = max(float((v[:, 1] - v[:, 2]).abs().max()) for v in d.values())
    moved = max(float((v[:, 0] - v[0, 0]).abs().max()) for v in d.values())
    return KFACRescalingResult(c, float(damping), precondition, gap, control, moved, rec, d)
