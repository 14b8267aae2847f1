r"""Experiments of notebook 02, "Internal covariate shift and outlier eigenvalues".

Each function takes the experiment's settings (sizes included, so a panel chooses fast or full
settings when it is called) and returns a plain result: a dataclass of tensors, arrays and
:class:`~lecture_lib.record.Record` objects. The mathematics they measure (the second moment and its
outlier, the Gauss-Newton block against the ICS Conditioning Hypothesis, the reparameterization,
:class:`~lecture_lib.ics.ShiftedMLP`, batch-centering gradients) lives in :mod:`lecture_lib.ics`.

=============================  ================================================================================
experiment                     what it shows
=============================  ================================================================================
``outlier_experiment``         the spectrum of :math:`A = E[aa^\top]` for Gaussian inputs or hidden units
``outlier_family``             the same for many input means at once, one batched eigendecomposition
``descent_experiment``         gradient descent on linear regression: uncentered, centered, whitened
``descent_family``             the same for many input means at once, all runs one batched computation
``conditioning_experiment``    the outliers of a first layer's exact GN block against :math:`\nu\lambda_i(S)`
``reparam_experiment``         an MLP trained in its original and in whitened first-layer coordinates
``quasi_diagonal_experiment``  the reparameterization as a preconditioner matrix :math:`RR^\top`
``wrinkle_experiment``         shifted activations before a normalizer change nothing
``centering_experiment``       batch centering turns :math:`\bar S^\top A` into :math:`\bar S^\top\tilde A`
=============================  ================================================================================
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import curvature, data
from .._validate import (Bool, Choice, Function, Int, NonNegative, Positive, Real, Seed, Sizes, Where, accepts,
                         check_choice, check_positive)
from ..cache import cached
from ..data import Dataset
from ..engine import train
from ..ics import (CenteringGradient, ConditioningReport, MomentSpectrum, ShiftedMLP, centering_gradient,
                   conditioning_report, moment_spectrum, predicted_bias_outlier, quasi_diagonal, regression_hessian,
                   reparameterize, second_moment, symmetric_power, unit_features, whiten)
from ..models import MLP
from ..losses import mse
from ..optim import sgd
from ..record import Record, Stream

F64 = torch.float64

FEATURES = ("gaussian", "logistic", "tanh", "relu")


def _record_every(steps: int, points: int = 100) -> int:
    """Record about ``points`` rows: the per-step statistics cost more than a tiny model's step."""
    return max(1, steps // points)


@cached
@accepts(features=Choice(FEATURES), mean_norm=NonNegative(), dim=Int(), samples=Int(2), seed=Seed())
def outlier_experiment(features: str = "gaussian", mean_norm: float = 3.0, dim: int = 20,
                       samples: int = 20000, seed: int = 0) -> MomentSpectrum:
    r"""Spectrum of :math:`A = E[aa^\top]` for ``features``: ``'gaussian'`` draws
    :math:`a\sim\mathcal N(m, I)` with :math:`\lVert m\rVert` = ``mean_norm`` (see
    :func:`lecture_lib.data.gaussian_inputs`); ``'logistic'``, ``'tanh'``, ``'relu'`` are
    hidden units :func:`~lecture_lib.ics.unit_features` (``mean_norm`` unused: the activation sets the mean).
    """
    if features == "gaussian":
        a, _, _ = data.gaussian_inputs(samples, dim, mean_norm, 1.0, seed=seed)
    else:
        a = unit_features(features, dim, samples, seed)
    return moment_spectrum(a)


@cached
@accepts(features=Choice(FEATURES), mean_norm=NonNegative(sequences=True), dim=Int(), samples=Int(2), seed=Seed())
def outlier_family(features: str = "gaussian", mean_norm=tuple(np.linspace(0.0, 6.0, 13)), dim: int = 20,
                   samples: int = 20000, seed: int = 0) -> list[MomentSpectrum]:
    r""":func:`outlier_experiment` for every :math:`\lVert m\rVert` of ``mean_norm`` (a sequence), computed together.

    The Gaussian inputs at :math:`\lVert m\rVert = \mu` are those at 0 moved by :math:`\mu\hat m` (the same
    draws), so with :math:`\bar x` the sample mean at 0,
    :math:`A_\mu = A_0 + \mu(\bar x\hat m^\top + \hat m\bar x^\top) + \mu^2\hat m\hat m^\top`: every
    :math:`A_\mu` at once, one batched eigendecomposition. Hidden units ignore ``mean_norm``: one spectrum, repeated.
    """
    if features != "gaussian":
        return [outlier_experiment(features, 0.0, dim, samples, seed)] * len(mean_norm)
    x, _, _ = data.gaussian_inputs(samples, dim, 0.0, 1.0, seed=seed)
    _, direction, _ = data.gaussian_inputs(2, dim, 1.0, 1.0, seed=seed)      # m̂: the same for every μ
    mu = torch.as_tensor(np.asarray(mean_norm, dtype=np.float64)).view(-1, 1, 1)
    x_bar = x.mean(0)
    cross = torch.outer(x_bar, direction)
    A = second_moment(x) + mu * (cross + cross.T) + mu ** 2 * torch.outer(direction, direction)     # (P, D, D)
    evals, evecs = torch.linalg.eigh(A)
    evals, tops = evals.flip(-1), evecs[..., -1]
    means = x_bar + mu.view(-1, 1) * direction
    variance = float(x.var(0, unbiased=False).mean())       # a shift leaves the variance alone
    family = []
    for ev, top, mean in zip(evals, tops, means):
        norm = float(mean.norm())
        align = float((top @ mean).abs() / norm) if norm > 0 else math.nan
        family.append(MomentSpectrum(ev, top, mean, variance, norm ** 2 + variance, align))
    return family


@dataclass
class DescentComparison:
    """Gradient descent on one regression problem in several input parameterizations."""

    labels: list[str]                 # e.g. ["uncentered", "centered", "whitened"]
    records: list[Record]             # one single-run record per parameterization
    excess_loss: list                 # (K,) arrays: J(w_k) - J(w*) per parameterization
    hessian_eigenvalues: list         # (D+1,) descending, per parameterization
    condition_numbers: list[float]
    lrs: list[float]                  # the alpha each run used
    predicted_outlier: float = math.nan  # (||m||^2 + 2 + ||m|| sqrt(||m||^2 + 4)) / 2 for the uncentered H; nan unless Sigma = I


@cached
@accepts(mean_norm=NonNegative(), cond=Real(1.0), dim=Int(), steps=Int(), lr_scale=Real(0.0, 2.0, low_open=True,
         high_open=True), n=Int(), seed=Seed())
def descent_experiment(mean_norm: float = 3.0, cond: float = 1.0, dim: int = 10, steps: int = 300,
                       lr_scale: float = 1.0, n: int = 512, seed: int = 0) -> DescentComparison:
    r"""Full-batch gradient descent on linear regression with uncentered, centered and whitened inputs.

    The model is an affine map :math:`w^\top x + b` (an :class:`~lecture_lib.models.MLP` with
    no hidden layer) trained with :func:`lecture_lib.optim.sgd` by :func:`lecture_lib.engine.train`.
    Each parameterization gets its own step :math:`\alpha = c/\lambda_{\max}(H)`
    (``lr_scale`` = c, stable for c < 2), so the comparison is fair: the error along
    eigenvector i contracts by :math:`|1 - \alpha\lambda_i|` per step, and the slowest
    mode needs :math:`\approx\kappa(H)/c` steps per e-fold (LeCun et al. 1998).
    Centering is the reparameterization :math:`\tilde x = x - m`; whitening also divides
    by :math:`\Sigma^{1/2}`. ``m`` and :math:`\Sigma` are the data's true moments.
    ``H`` includes the bias column, so for :math:`\Sigma = I` (``cond = 1``) its outlier is
    :func:`~lecture_lib.ics.predicted_bias_outlier` of the true mean, :math:`\approx\lVert m\rVert^2 + 2`,
    reported as ``predicted_outlier`` (computed from the generator's m, not from the runs).
    """
    ds = data.linear_regression(n=n, dim=dim, mean_norm=mean_norm, cond=cond, noise=0.1, seed=seed, dtype=F64)
    m, cov = ds.meta["mean"].to(ds.x_train.device), ds.meta["cov"].to(ds.x_train.device)
    variants = {
        "uncentered": lambda x: x,
        "centered": lambda x: x - m,
        "whitened": lambda x: whiten(x, m, cov),
    }
    out = DescentComparison([], [], [], [], [], [],
                            predicted_bias_outlier(m)[0] if cond == 1.0 else math.nan)
    for label, transform in variants.items():
        d = replace(ds, x_train=transform(ds.x_train), x_test=transform(ds.x_test))
        H = regression_hessian(d.x_train)
        evals = torch.linalg.eigvalsh(H).flip(0)
        lr = float(lr_scale) / float(evals[0])
        # the optimum J(w*) by least squares (bias column appended)
        X = torch.cat([d.x_train, torch.ones(d.n_train, 1, dtype=F64, device=d.x_train.device)], 1)
        coef = torch.linalg.lstsq(X, d.y_train).solution
        best = float(0.5 * (X @ coef - d.y_train).pow(2).sum(1).mean())
        model = MLP([dim, 1], runs=1, seed=seed, dtype=F64)
        rec = train(model, d, "mse", sgd(lr=lr), steps=steps, diverge_above=1e12,
                    record_every=_record_every(steps))
        out.labels.append(label)
        out.records.append(rec)
        out.excess_loss.append(np.maximum(rec.loss[:, 0] - best, 1e-14))   # floor: float64 rounding
        out.hessian_eigenvalues.append(evals.cpu().numpy())
        out.condition_numbers.append(float(evals[0] / evals[-1]))
        out.lrs.append(lr)
    return out


class _AffineOnMappedInputs(MLP):
    r"""``R`` affine models :math:`w_r^\top(P_r x + s_r) + b_r` on one shared input :math:`x`: run ``r`` sees its
    own affine image of the data (``matrix`` ``(R, D, D)``, ``shift`` ``(R, D)``), so runs on differently
    centered, whitened or shifted copies of one data set train as one batched computation.

    The map is folded into the weights, :math:`(P_r^\top w_r)^\top x + (b_r + w_r^\top s_r)`: a step costs what
    a step of the plain models does. Initialized as ``MLP([D, 1], seed=seed)``, every run alike.
    """

    def __init__(self, dim: int, matrix: torch.Tensor, shift: torch.Tensor, seed: int = 0):
        super().__init__([dim, 1], runs=shift.shape[0], seed=seed, dtype=F64)
        self.register_buffer("matrix", matrix.to(F64))
        self.register_buffer("shift", shift.to(F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.linears[0]
        weight = torch.bmm(layer.weight, self.matrix)                                     # (R, 1, D)
        bias = layer.bias + torch.bmm(layer.weight, self.shift.unsqueeze(2)).squeeze(2)    # (R, 1)
        return torch.baddbmm(bias.unsqueeze(1), x.expand(self.runs, -1, -1), weight.transpose(1, 2))


@cached
@accepts(mean_norm=NonNegative(sequences=True), cond=Real(1.0), dim=Int(), steps=Int(),
         lr_scale=Real(0.0, 2.0, low_open=True, high_open=True), n=Int(), seed=Seed(),
         progress=Function(optional=True))
def descent_family(mean_norm=tuple(np.linspace(0.0, 6.0, 13)), cond: float = 1.0, dim: int = 10, steps: int = 300,
                   lr_scale: float = 1.0, n: int = 512, seed: int = 0, progress=None) -> list[DescentComparison]:
    r""":func:`descent_experiment` for every :math:`\lVert m\rVert` of ``mean_norm`` (a sequence): all
    3·len(``mean_norm``) runs trained as ONE batched computation, member ``p`` the comparison at ``mean_norm[p]``.

    The data at :math:`\lVert m\rVert = \mu` are those at :math:`\mu = 0` moved along one direction
    :math:`\hat m` (the same draws: :func:`lecture_lib.data.gaussian_inputs`), and the teacher's targets move
    with them by :math:`\mu\,\hat m^\top w_*`. So one data set serves every run: run ``r`` sees its own
    affine image of the inputs (uncentered :math:`x + \mu\hat m`, centered :math:`x`, whitened
    :math:`\Sigma^{-1/2}x`) and fits its own shifted targets, with its own :math:`\alpha = c/\lambda_{\max}(H)`.
    ``progress(fraction, partial)``: the family so far, as it trains (:class:`~lecture_lib.record.Stream`).
    """
    mus = torch.as_tensor(np.atleast_1d(np.asarray(mean_norm, dtype=np.float64)))
    P = len(mus)
    ds = data.linear_regression(n=n, dim=dim, mean_norm=0.0, cond=cond, noise=0.1, seed=seed, dtype=F64)
    _, direction, cov = data.gaussian_inputs(2, dim, 1.0, cond, seed=seed)     # m̂ and Σ, shared by every μ
    means = mus[:, None] * direction                                            # (P, D)
    eye, root = torch.eye(dim, dtype=F64), symmetric_power(cov, -0.5)
    labels = ["uncentered", "centered", "whitened"]             # runs: every μ uncentered, then centered, whitened
    matrix = torch.stack([eye] * 2 * P + [root] * P)
    shift = torch.cat([means, torch.zeros(2 * P, dim, dtype=F64)])
    offset = (means @ ds.meta["w_true"]).repeat(3)                              # (3P,) run r fits y + offset[r]
    inputs = torch.baddbmm(shift.unsqueeze(1), ds.x_train.expand(3 * P, -1, -1), matrix.transpose(1, 2))
    evals, lrs, best = [], [], []
    for x, t in zip(inputs, offset):
        ev = torch.linalg.eigvalsh(regression_hessian(x)).flip(0)
        X = torch.cat([x, torch.ones(len(x), 1, dtype=F64)], 1)             # the optimum J(w*), bias appended
        coef = torch.linalg.lstsq(X, ds.y_train + t).solution
        evals.append(ev.numpy())
        lrs.append(float(lr_scale) / float(ev[0]))
        best.append(float(0.5 * (X @ coef - ds.y_train - t).pow(2).sum(1).mean()))

    def loss(out, y):
        return mse(out, y + offset.view(-1, 1, 1))

    def members(rec: Record) -> list[DescentComparison]:
        family = []
        for p in range(P):
            runs = [p, P + p, 2 * P + p]
            family.append(DescentComparison(
                list(labels), [rec.select([r]) for r in runs],
                [np.maximum(rec.loss[:, r] - best[r], 1e-14) for r in runs],           # floor: float64 rounding
                [evals[r] for r in runs], [float(evals[r][0] / evals[r][-1]) for r in runs], [lrs[r] for r in runs],
                predicted_bias_outlier(means[p])[0] if cond == 1.0 else math.nan))
        return family

    model = _AffineOnMappedInputs(dim, matrix, shift, seed=seed)
    rec = train(model, ds, loss, sgd(lr=torch.tensor(lrs, dtype=F64)), steps=steps, diverge_above=1e12,
                record_every=_record_every(steps), report=Stream(progress).stage(members))
    return members(rec)


@cached
@accepts(mean_norm=NonNegative(), outputs=Int(), n=Int(2), dim=Int(), hidden=Int(), seed=Seed(),
         progress=Function(optional=True))
def conditioning_experiment(mean_norm: float = 3.0, outputs: int = 3, n: int = 1000, dim: int = 6, hidden: int = 10,
                            seed: int = 0, progress=None) -> ConditioningReport:
    r"""The ICS Conditioning Hypothesis in a small tanh MLP ``dim -> hidden -> outputs`` at initialization.

    Its inputs :math:`x\sim\mathcal N(m, I)`, :math:`\lVert m\rVert` = ``mean_norm``, ``n`` samples,
    feed the first layer; :func:`lecture_lib.ics.conditioning_report` compares that layer's exact
    Gauss-Newton block with the predicted outliers :math:`\nu\lambda_i(S)`, one per output.
    ``progress(fraction, partial)``: the report of the first ``n/8`` inputs, then of the first ``n/2`` (each
    curvature is an average over the inputs, and the exact block costs about the square of their number: a
    first estimate is drawn at once, for about 1/64 of the whole).
    """
    x, _, _ = data.gaussian_inputs(n, dim, mean_norm, 1.0, seed=seed)
    model = MLP([dim, hidden, outputs], activation="tanh", seed=seed)
    if progress is not None:
        for k in (n // 8, n // 2):
            if k >= 2:
                progress((k / n) ** 2, conditioning_report(model, x[:k]))
    return conditioning_report(model, x)


@accepts(mean_norm=NonNegative(), cond=Real(1.0), dim=Int(), hidden=Int(), n=Int(), seed=Seed())
def shifted_inputs_dataset(mean_norm: float, cond: float, dim: int = 8, hidden: int = 16, n: int = 512,
                           seed: int = 0) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    r"""A teacher-MLP regression task whose inputs :math:`x = \Sigma^{1/2}z + m` are uncentered.

    The teacher (:func:`lecture_lib.data.teacher`, tanh) sees the standardized
    :math:`z\sim\mathcal N(0,I)`; the student sees :math:`x` with
    :math:`\lVert m\rVert` = ``mean_norm`` and :math:`\kappa(\Sigma)` = ``cond``.
    Returns ``(dataset, m, Sigma)`` (float64).
    """
    base = data.teacher(n=n, sizes=(dim, hidden, 1), activation="tanh", seed=seed, dtype=F64)
    _, m, cov = data.gaussian_inputs(2, dim, mean_norm, cond, seed=seed)
    root, shift = symmetric_power(cov, 0.5).to(base.x_train.device), m.to(base.x_train.device)
    return replace(base, x_train=base.x_train @ root + shift, x_test=base.x_test @ root + shift,
                   name=f"teacher MLP, inputs |m|={mean_norm:g}, cond={cond:g}"), m, cov


@dataclass
class ReparamComparison:
    """An MLP trained in its original and in the centred-and-whitened first-layer coordinates."""

    labels: list[str]               # ["original", "reparameterized"]
    lrs: np.ndarray                 # (R,) learning rates of the sweep
    records: list[Record]           # one R-run record per parameterization
    best: list[int]                 # index of the best final loss in each sweep
    gn_eigenvalues: list            # (D*H + H,) descending spectrum of the first layer's exact GN block at init
    max_output_gap: float           # max |f(x) - f~(x~)| at initialization


def _learning_rates(name: str, lrs) -> torch.Tensor:
    """A non-empty 1-D sequence of positive learning rates, as a float64 tensor."""
    try:
        lrs = torch.as_tensor(lrs, dtype=F64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a sequence of learning rates, got {lrs!r}") from None
    if lrs.dim() != 1 or lrs.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of learning rates, got shape {tuple(lrs.shape)}")
    return check_positive(name, lrs)


LEARNING_RATES = Where(_learning_rates, bad=([], [-0.1], [0.1, math.nan], [[0.1]], "lr", 0.0), optional=True)


@cached
@accepts(mean_norm=NonNegative(), cond=Real(1.0), dim=Int(), hidden=Int(), steps=Int(), n=Int(), lrs=LEARNING_RATES,
         seed=Seed(), progress=Function(optional=True))
def reparam_experiment(mean_norm: float = 3.0, cond: float = 10.0, dim: int = 8, hidden: int = 16,
                       steps: int = 300, n: int = 512, lrs=None, seed: int = 0, progress=None) -> ReparamComparison:
    r"""Train the same MLP from the same function in two coordinate systems.

    Original: inputs :math:`x`, weights :math:`(W, b)`. Reparameterized (Lecture 5, "ICS
    and Invariance"): inputs :math:`\tilde x = \Sigma^{-1/2}(x - m)`,
    :math:`\tilde W = W\Sigma^{1/2}`, :math:`\tilde b = b + Wm` — the same function
    (``max_output_gap`` ~ 1e-15), but gradient descent in :math:`\tilde\theta` is descent
    in :math:`\theta` preconditioned by the quasi-diagonal :math:`RR^\top`. Each is run
    over a sweep of learning rates (one batched run per rate) and the best is reported,
    so neither is handicapped by a bad :math:`\alpha`. ``gn_eigenvalues``: the spectrum of
    the first layer's block (W and b) of the exact Gauss-Newton matrix at initialization.
    ``progress(fraction, partial)``: the sweeps so far, as they train (:class:`~lecture_lib.record.Stream`).
    """
    lrs = torch.logspace(-2.5, 0.5, 7, dtype=F64) if lrs is None else lrs
    ds, m, cov = shifted_inputs_dataset(mean_norm, cond, dim, hidden, n, seed)
    R = lrs.shape[0]
    original = MLP([dim, hidden, 1], activation="tanh", runs=R, seed=seed, dtype=F64)
    tilde = reparameterize(original, m, cov)
    ds_tilde = replace(ds, x_train=whiten(ds.x_train, m, cov), x_test=whiten(ds.x_test, m, cov))
    with torch.no_grad():
        gap = float((original(ds.x_train) - tilde(ds_tilde.x_train)).abs().max())
    out = ReparamComparison(["original", "reparameterized"], lrs.numpy(), [], [], [], gap)
    # every run starts from the same weights (int seed), so run 0's curvature stands for all;
    # a one-run copy keeps the exact GN cheap
    single = MLP([dim, hidden, 1], activation="tanh", runs=1, seed=seed, dtype=F64)
    best = lambda rec: int(np.argmin(np.where(rec.diverged_at >= 0, np.inf, rec.loss[-1])))
    partial = lambda rec: replace(out, records=out.records + [rec], best=out.best + [best(rec)],
                                  gn_eigenvalues=list(out.gn_eigenvalues))
    stream = Stream(progress)
    for i, (model, single, d) in enumerate(((original, single, ds), (tilde, reparameterize(single, m, cov), ds_tilde))):
        rec = train(model, d, "mse", sgd(lr=lrs), steps=steps, diverge_above=1e6, record_every=_record_every(steps),
                    report=stream.stage(partial, i / 2, (i + 1) / 2))
        out.records.append(rec)
        out.best.append(best(rec))
        # after the training, so that a streamed panel draws the curves at once (the spectrum follows)
        G = curvature.gauss_newton(single, d.x_train, "mse")
        block = curvature.layer_block(G, curvature.flatten(single), "linears.0")
        out.gn_eigenvalues.append(torch.linalg.eigvalsh(block).flip(0).cpu().numpy())
    return out


@cached
@accepts(mean_norm=NonNegative(), cond=Real(1.0), dim=Int(), out_features=Int(), seed=Seed())
def quasi_diagonal_experiment(mean_norm: float = 2.0, cond: float = 10.0, dim: int = 3, out_features: int = 2,
                              seed: int = 0) -> dict[str, torch.Tensor]:
    r"""The quasi-diagonal matrices of :func:`lecture_lib.ics.quasi_diagonal` for the true moments of
    inputs with :math:`\lVert m\rVert` = ``mean_norm`` and :math:`\kappa(\Sigma)` = ``cond``
    (:func:`lecture_lib.data.gaussian_inputs`), for a layer with ``out_features`` outputs."""
    _, m, cov = data.gaussian_inputs(2, dim, mean_norm, cond, seed=seed)
    return quasi_diagonal(m, cov, out_features)


@dataclass
class WrinkleResult:
    """Training with the activations before each normalized layer shifted by 0 and by c."""

    norms: list[str]                  # ["none", "center", "batch"]
    shifts: tuple[float, float]       # (0, c)
    records: list[Record]             # per norm, a 2-run record (run 0: shift 0, run 1: shift c)
    max_gap: list[float]              # per norm, max |loss(shift 0) - loss(shift c)| over training
    kfac_top: np.ndarray              # (norms, 2) top eigenvalue of the K-FAC factor A of the shifted layer
    exact_top: np.ndarray             # (norms, 2) top eigenvalue of the exact GN block of that layer (NaN: not
                                      # computed, curvature_at_init=False or a streamed partial)


NORMS = ("none", "center", "batch")


def _normalizers(name: str, norms) -> list[str]:
    """A sequence of names from :data:`NORMS`."""
    if isinstance(norms, str) or not hasattr(norms, "__iter__"):
        raise TypeError(f"{name} must be a sequence of normalizers such as ('none', 'center', 'batch'), got {norms!r}")
    return [check_choice(name, norm, NORMS) for norm in norms]


def _hidden_layer(arguments: Mapping) -> None:
    last = len(arguments["sizes"]) - 2
    if arguments["layer"] > last:
        raise ValueError(f"layer must be an integer in [0, {last}] (a layer of sizes with a layer after it), "
                         f"got {arguments['layer']}")


@cached
@accepts(_hidden_layer, shift=Real(-100.0, 100.0), steps=Int(), sizes=Sizes(min_len=3), n=Int(), lr=Positive(),
         layer=Int(0), norms=Where(_normalizers, bad=(("batchy",), "none", (None,), 3)), curvature_at_init=Bool(),
         record_every=Int(optional=True), seed=Seed(), progress=Function(optional=True))
def wrinkle_experiment(shift: float = 5.0, steps: int = 200, sizes=(6, 16, 16, 1), n: int = 256, lr: float = 0.05,
                       layer: int = 1, norms=("none", "center", "batch"), curvature_at_init: bool = True,
                       record_every: int | None = None, seed: int = 0, progress=None) -> WrinkleResult:
    r"""The wrinkle (Lecture 5): shifting activations that feed a normalized layer changes nothing.

    For each ``norm``, a :class:`ShiftedMLP` with two runs from the same initialization,
    shift 0 and shift :math:`c`, is trained by full-batch gradient descent on a tanh
    teacher task. With ``'center'`` or ``'batch'`` the two loss curves coincide to
    rounding error, although the K-FAC factor :math:`A` of layer ``layer`` (whose inputs
    are shifted) has the outlier :math:`\approx\lVert m + c\mathbf 1\rVert^2`; the exact GN
    block, which includes the statistics path, does not change. With ``'none'`` the
    shift slows training. ``progress(fraction, partial)``: the norms' runs so far, as they train
    (:class:`~lecture_lib.record.Stream`).
    """
    ds = data.teacher(n=n, sizes=(sizes[0], 16, sizes[-1]), activation="tanh", seed=seed, dtype=F64)
    out = WrinkleResult(list(norms), (0.0, float(shift)), [], [], np.full((len(norms), 2), np.nan),
                        np.full((len(norms), 2), np.nan))
    name = f"linears.{layer}"
    record_every = _record_every(steps) if record_every is None else record_every
    partial = lambda rec: replace(out, records=out.records + [rec], max_gap=list(out.max_gap),
                                  kfac_top=out.kfac_top.copy(), exact_top=out.exact_top.copy())
    stream = Stream(progress)
    for i, norm in enumerate(norms):
        model = ShiftedMLP(sizes, norm=norm, activation="tanh", shift=torch.tensor([0.0, float(shift)]),
                           runs=2, seed=seed, dtype=F64)
        rec = train(model, ds, "mse", sgd(lr=lr), steps=steps, diverge_above=1e6, record_every=record_every,
                    report=stream.stage(partial, i / len(norms), (i + 1) / len(norms)))
        out.records.append(rec)
        out.max_gap.append(float(np.nanmax(np.abs(rec.loss[:, 0] - rec.loss[:, 1]))))
        if curvature_at_init:       # after the training, so that a streamed panel draws the curves at once
            for r, c in enumerate((0.0, float(shift))):
                single = ShiftedMLP(sizes, norm=norm, activation="tanh", shift=c, runs=1, seed=seed, dtype=F64)
                w = curvature.flatten(single).slices[f"{name}.weight"]
                G = curvature.gauss_newton(single, ds.x_train, "mse")[w, w]
                A, _ = curvature.kfac_factors(single, ds.x_train, None, "mse", curvature="ggn")[name]
                out.exact_top[i, r] = float(torch.linalg.eigvalsh(G)[-1])
                out.kfac_top[i, r] = float(torch.linalg.eigvalsh(A)[-1])
    return out


@dataclass
class CenteringSweep:
    """Batch-centering gradients for one shift, plus gradient norms over a grid of shifts."""

    shift: float                      # the chosen shift c
    gradient: CenteringGradient       # at the chosen shift
    shifts: np.ndarray                # (S,) grid
    norm_autograd: np.ndarray         # (S,) ||W̄|| through the centering layer
    norm_direct: np.ndarray           # (S,) ||S̄^T A|| (direct path only)


@cached
@accepts(shift=Real(-100.0, 100.0), batch_size=Int(2), dim=Int(), out_features=Int(), seed=Seed())
def centering_experiment(shift: float = 2.0, batch_size: int = 32, dim: int = 6, out_features: int = 4,
                         seed: int = 0) -> CenteringSweep:
    r"""Gradients of a batch-centered layer :math:`\hat S = \mathrm{BC}(AW^\top)` under shifted activations.

    Activations :math:`A = Z + c\mathbf 1\mathbf 1^\top` (``shift`` c), a fixed random
    readout and targets, loss :math:`\tfrac12\lVert \hat S V - Y\rVert^2/B`. Because the
    centering removes any constant, :math:`\bar W = \bar S^\top\tilde A` does not depend
    on c, while the direct-path term :math:`\bar S^\top A` grows linearly in c.
    """
    B = batch_size
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, dim, generator=g, dtype=F64)
    W = torch.randn(out_features, dim, generator=g, dtype=F64) / math.sqrt(dim)
    V = torch.randn(out_features, 2, generator=g, dtype=F64)
    Y = torch.randn(B, 2, generator=g, dtype=F64) + 1.0      # targets off-centre: the batch sum of S̄ is not 0

    def loss_fn(s_hat):
        return 0.5 * (s_hat @ V - Y).pow(2).sum() / s_hat.shape[0]

    grid = np.linspace(-5.0, 5.0, 21)
    na, nd = [], []
    for c in grid:
        r = centering_gradient(z + float(c), W, loss_fn)
        na.append(float(r.autograd.norm()))
        nd.append(float(r.direct.norm()))
    return CenteringSweep(float(shift), centering_gradient(z + float(shift), W, loss_fn), grid, np.array(na),
                          np.array(nd))
