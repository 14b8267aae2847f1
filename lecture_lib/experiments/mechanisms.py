r"""The experiments of notebook 06, "Three mechanisms of weight decay" (Zhang et al. 2019).

Each function trains real networks on the scikit-learn digits, every configuration of a figure as
one batched run, and returns a small result dataclass; the mathematics they build on is in
:mod:`lecture_lib.mechanisms`.

* :func:`effective_lr_experiment` (mechanism 1): decay schemes and norm grafting on a BN MLP.
* :func:`jacobian_experiment` (mechanism 2): SGD and K-FAC-G over a grid of decays, Jacobian norms.
* :func:`architecture_experiment` (mechanism 2 across widths and depths): does the K-FAC norm track
  :math:`\lVert J_x\rVert_F^2` beyond the weight scale both share? (saved by ``scripts/make_architecture_table.py``)
* :func:`damping_experiment` (mechanism 3): K-FAC's relative damping on a BN MLP.
* :func:`headline_table` (the paper's Table 1, in kind): {SGD, Adam, K-FAC-F, K-FAC-G} ×
  {none, L2, weight decay}, several seeds, with the λ chosen on a validation split (:func:`tune`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .. import mechanisms as M
from .._validate import Choice, Function, Int, NonNegative, Positive, Real, Seed, Spec, Unit, Where, accepts
from ..cache import Recent, cached
from ..data import Dataset, digits
from ..engine import train
from ..mechanisms import (OPTIMIZERS, REGULARIZERS, SCHEME_LIST, SCHEMES, SEEDS, LABELS, bn_mlp, decay_schemes,
                          gn_norm, graft_norms_, jacobian_norm, kfac_gn_norm, preconditioner, regularized, relu_net,
                          sequence_of)
from ..optim.base import Transform, chain, find_state
from ..kfac_statistics import estimate_factors, ggn_factor_traces
from ..optim import KFACState, eigh_factor, kron_damped_solve
from ..optim.transforms import add_decayed_weights, scale_by_lr
from ..record import Record, Stream

FRACTION = Real(0.0, 1.0, low_open=True, high_open=True)
SIZES = dict(steps=Int(1), batch_size=Int(1, optional=True), width=Int(1), depth=Int(1), test_fraction=FRACTION)


def _decayed_by_scheme(pre: Transform, lr, schemes: Sequence[str], weight_decay, mask: Mapping[str, bool]) -> Transform:
    r"""``pre`` with decoupled decay per scheme (:func:`~lecture_lib.mechanisms.decay_schemes`):

    :math:`w \leftarrow w - \alpha(C^{-1}\nabla J + \lambda_{BN} w_{BN} + \lambda_{FC} w_{FC})`.
    """
    lam_bn, lam_fc = decay_schemes(schemes, weight_decay)
    others = {k: not v for k, v in mask.items()}
    return chain(pre, add_decayed_weights(lam_bn, mask), add_decayed_weights(lam_fc, others), scale_by_lr(lr))


# ============================================================================ mechanism 1
@dataclass
class EffectiveLrResult:
    """Mechanism 1: ``record`` of every (scheme, seed) trained as one batched run, scheme-major.

    Run ``i * len(seeds) + j`` is scheme ``schemes[i]`` with seed ``seeds[j]``; runs with the same seed share
    their initialization and minibatches, so schemes compare paired by seed.
    """

    record: Record
    schemes: list[str]
    layers: list[str]                  # the scale-invariant weight tensors
    seeds: list[int] = field(default_factory=lambda: [0])

    def columns(self, scheme: str) -> slice:
        """The record columns (runs) of ``scheme``, one per seed."""
        i, n = self.schemes.index(scheme), len(self.seeds)
        return slice(i * n, (i + 1) * n)

    def final_accuracy(self, scheme: str) -> np.ndarray:
        """Per seed: test accuracy in %, the mean of the last three evaluations (NaN if the run diverged)."""
        return 100.0 * self.record.test_accuracy[-3:, self.columns(scheme)].mean(0)

    def difference(self, a: str, b: str) -> M.Interval:
        """Accuracy of scheme ``a`` minus scheme ``b`` (points), paired over seeds, with its 95% interval."""
        return M.paired_interval(self.final_accuracy(a) - self.final_accuracy(b))


def _graft_donor_is_trained(args: Mapping) -> None:
    if any(s.startswith("graft") for s in args["schemes"]) and args["graft_from"] not in args["schemes"]:
        raise ValueError(f"graft_from={args['graft_from']!r} must be one of the schemes trained: "
                         f"{list(args['schemes'])}")


@cached
@accepts(_graft_donor_is_trained, optimizer=Choice(("sgd", "adam")), lr=Positive(optional=True),
         weight_decay=NonNegative(optional=True), schemes=SCHEME_LIST, seeds=SEEDS, eval_every=Int(1),
         record_every=Int(1), graft_from=Choice(SCHEMES), progress=Function(optional=True), **SIZES)
def effective_lr_experiment(optimizer: str = "sgd", lr: float | None = None, weight_decay: float | None = None,
                            schemes: Sequence[str] = SCHEMES, steps: int = 1500, batch_size: int = 128,
                            width: int = 128, depth: int = 2, seeds: Sequence[int] = (0,), eval_every: int = 50,
                            record_every: int = 10, test_fraction: float = 0.5,
                            graft_from: str = "wd-all", progress=None) -> EffectiveLrResult:
    r"""Train the decay schemes of :func:`~lecture_lib.mechanisms.decay_schemes` side by side on one BN MLP
    (per seed: same start, same batches for every scheme).

    ``optimizer`` ``'sgd'`` (momentum 0.9, default :math:`\alpha = 0.05, \lambda = 0.02`) or ``'adam'``
    (defaults :math:`\alpha = 10^{-3}, \lambda = 1`); the decay is decoupled,
    :math:`w \leftarrow (1-\alpha\lambda)w - \alpha C^{-1}\nabla J` (for SGD outside the momentum buffer).
    After every step the ``'graft'`` runs get the normalized layers' norms of the ``graft_from`` run with the
    same seed (:func:`~lecture_lib.mechanisms.graft_norms_`): their :math:`\alpha/\lVert w\rVert^2` equals the
    donor's by construction, so only their accuracy is evidence. ``progress(fraction, partial)``: the runs so far.
    """
    lr = (0.05 if optimizer == "sgd" else 1e-3) if lr is None else lr
    weight_decay = (0.02 if optimizer == "sgd" else 1.0) if weight_decay is None else weight_decay
    return _effective_lr_runs(optimizer, lr, [weight_decay], schemes, steps, batch_size, width, depth, seeds,
                              eval_every, record_every, test_fraction, graft_from,
                              None if progress is None else lambda f, *family: progress(f, *(m[0] for m in family)))[0]


NON_NEGATIVE_SEQUENCE = sequence_of(NonNegative(), bad=([], [-1.0], [math.nan], "d", None))


@cached
@accepts(_graft_donor_is_trained, optimizer=Choice(("sgd", "adam")), lr=Positive(), weight_decay=NON_NEGATIVE_SEQUENCE,
         schemes=SCHEME_LIST, seeds=SEEDS, eval_every=Int(1), record_every=Int(1), graft_from=Choice(SCHEMES),
         progress=Function(optional=True), **SIZES)
def effective_lr_family(optimizer: str = "sgd", lr: float = 0.05, weight_decay: Sequence[float] = (0.02,),
                        schemes: Sequence[str] = SCHEMES, steps: int = 1500, batch_size: int = 128,
                        width: int = 128, depth: int = 2, seeds: Sequence[int] = (0,), eval_every: int = 50,
                        record_every: int = 10, test_fraction: float = 0.5,
                        graft_from: str = "wd-all", progress=None) -> list[EffectiveLrResult]:
    """:func:`effective_lr_experiment` for every λ of ``weight_decay`` (a sequence): all len(λ) × schemes × seeds
    runs trained as one batched run (λ-major), one result per λ. A seed gives every λ and scheme the same start
    and minibatches, so member ``p`` is the run of ``weight_decay[p]`` alone. ``progress(fraction, partial)``:
    the family so far."""
    return _effective_lr_runs(optimizer, lr, list(weight_decay), schemes, steps, batch_size, width, depth, seeds,
                              eval_every, record_every, test_fraction, graft_from, progress)


def _effective_lr_runs(optimizer, lr, weight_decays, schemes, steps, batch_size, width, depth, seeds, eval_every,
                       record_every, test_fraction, graft_from, progress) -> list[EffectiveLrResult]:
    schemes, seeds = list(schemes), list(seeds)
    runs = [(p, sc, sd) for p in range(len(weight_decays)) for sc in schemes for sd in seeds]
    model = bn_mlp(width, depth, runs=len(runs), seed=[sd for _, _, sd in runs])
    mask = model.scale_invariant
    per_position = [decay_schemes(schemes, float(wd)) for wd in weight_decays]
    lam = (torch.repeat_interleave(torch.cat([bn for bn, _ in per_position]), len(seeds)),
           torch.repeat_interleave(torch.cat([fc for _, fc in per_position]), len(seeds)))
    others = {k: not v for k, v in mask.items()}
    opt = chain(preconditioner(optimizer, model), add_decayed_weights(lam[0], mask), add_decayed_weights(lam[1], others),
                scale_by_lr(lr))
    receivers = [i for i, (_, sc, _) in enumerate(runs) if sc.startswith("graft")]
    donors = [runs.index((runs[i][0], graft_from, runs[i][2])) for i in receivers]

    def callback(step, m):
        if receivers:
            graft_norms_(m, receivers, donors, mask)

    data = digits(test_fraction=test_fraction, seed=0)
    layers = [n for n, v in mask.items() if v]
    width_p = len(schemes) * len(seeds)
    family = lambda r: [EffectiveLrResult(r.select(range(p * width_p, (p + 1) * width_p)), schemes, layers, seeds)
                        for p in range(len(weight_decays))]
    rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=[sd for _, _, sd in runs],
                record_every=record_every, eval_every=eval_every, callback=callback, diverge_above=1e4,
                report=Stream(progress).stage(family))
    return family(rec)


# ============================================================================ mechanism 2
# Table 2 of the paper: squared Frobenius norm of the input-output Jacobian, without -> with weight decay.
PAPER_JACOBIAN = {"VGG16": {"sgd": (564, 142), "kfac-g": (498, 51.44)},
                  "ResNet32": {"sgd": (2765, 1074), "kfac-g": (2115, 64.16)}}


@dataclass
class JacobianResult:
    """Mechanism 2: one row per trained network (``optimizer``, ``decay_per_step``, ``seed``) and its measures.

    Runs with the same ``seed`` share their initialization and their minibatch order across optimizers and
    decays, so comparisons are paired by seed (:func:`~lecture_lib.mechanisms.paired_interval`).
    """

    optimizer: np.ndarray          # (N,) 'sgd' | 'kfac-g'
    decay_per_step: np.ndarray     # (N,) αλ, the factor by which decay shrinks w each step
    weight_decay: np.ndarray       # (N,) λ = decay_per_step / α of that optimizer
    seed: np.ndarray               # (N,)
    jacobian_norm: np.ndarray      # (N,) E ||J_x||_F^2 on the test inputs
    kfac_norm: np.ndarray          # (N,) K-FAC Gauss-Newton norm on the training inputs
    test_accuracy: np.ndarray      # (N,)
    train_loss: np.ndarray         # (N,)
    diverged: np.ndarray           # (N,) bool
    lr: dict = field(default_factory=dict)   # α per optimizer

    def correlation(self) -> float:
        """Pearson correlation of log K-FAC norm and log Jacobian norm over the finite rows."""
        ok = ~self.diverged & np.isfinite(self.jacobian_norm) & np.isfinite(self.kfac_norm)
        if ok.sum() < 3:
            return float("nan")
        return float(np.corrcoef(np.log(self.jacobian_norm[ok]), np.log(self.kfac_norm[ok]))[0, 1])

    def _log_cut(self, optimizer: str, decay_per_step: float) -> np.ndarray:
        """Per seed: log(‖J‖² without decay / ‖J‖² with ``decay_per_step``), in seed order (NaN if diverged)."""
        rows = self.optimizer == optimizer
        j = np.where(self.diverged, np.nan, self.jacobian_norm)
        base = {s: v for s, v in zip(self.seed[rows & (self.decay_per_step == 0)], j[rows & (self.decay_per_step == 0)])}
        dec = rows & np.isclose(self.decay_per_step, decay_per_step)
        return np.array([np.log(base[s] / v) for s, v in zip(self.seed[dec], j[dec])])

    def reduction(self, optimizer: str, decay_per_step: float) -> M.Interval:
        """How many times smaller ‖J‖² is with decay than without, per seed: geometric mean and 95% interval."""
        return M.paired_interval(self._log_cut(optimizer, decay_per_step)).map(math.exp)

    def relative_reduction(self, decay_per_step: float) -> M.Interval:
        """K-FAC-G's reduction over SGD's at the same αλ and seed (> 1: decay cuts ‖J‖² more under K-FAC-G)."""
        diff = self._log_cut("kfac-g", decay_per_step) - self._log_cut("sgd", decay_per_step)
        return M.paired_interval(diff).map(math.exp)

    def decays(self) -> list[float]:
        return sorted(set(self.decay_per_step.tolist()) - {0.0})


#: Inputs the first streamed frame of :func:`jacobian_experiment` (the networks at initialization) measures its norms on
PREVIEW_INPUTS = 256


@cached
@accepts(seeds=SEEDS, damping=NonNegative(), lr_sgd=Positive(), lr_kfac=Positive(), momentum=Unit(),
         decays_per_step=sequence_of(Real(0.0, 0.5), bad=((), (-0.1,), (float("nan"),), (0.9,), "w")),
         progress=Function(optional=True), **SIZES)
def jacobian_experiment(steps: int = 600, width: int = 64, depth: int = 2, seeds: Sequence[int] = tuple(range(8)),
                        batch_size: int = 128, damping: float = 1e-2, lr_sgd: float = 0.05, lr_kfac: float = 0.01,
                        momentum: float = 0.9, decays_per_step: Sequence[float] = (0.0, 3e-4, 1e-3, 3e-3),
                        test_fraction: float = 0.5,
                        progress: Callable[[float], None] | None = None) -> JacobianResult:
    r"""Train bias-free ReLU networks (no BN) with SGD and K-FAC-G at the same decays *per step* :math:`\alpha\lambda`.

    The two optimizers run at different learning rates, so equal :math:`\lambda` would mean different
    shrinking: each run gets :math:`\lambda = (\alpha\lambda)/\alpha` of its optimizer. The decay is decoupled
    and applied after SGD's momentum buffer (SGDW), so every step multiplies :math:`w` by exactly
    :math:`1-\alpha\lambda` under both optimizers. Seed ``s`` fixes the initialization and the minibatch order
    of every run with that seed, whatever its optimizer and decay. For each trained network:
    :math:`\mathbb E\lVert J_x\rVert_F^2` on the test inputs and the K-FAC Gauss-Newton norm on the training
    inputs (:func:`~lecture_lib.mechanisms.kfac_gn_norm`). ``progress(fraction, partial)``: first every network
    at initialization (fraction 0; where both optimizers start), its two norms estimated on the first
    :data:`PREVIEW_INPUTS` test and training inputs (a quarter of the full measurement's time: the panel draws it
    within 150 ms of a slider's release), then the optimizers trained so far, measured as the result is.
    """
    data = digits(test_fraction=test_fraction, seed=0)
    if 0.0 not in decays_per_step:
        decays_per_step = (0.0, *decays_per_step)       # the reference every reduction is measured against
    runs = [(d, s) for d in decays_per_step for s in seeds]
    cols = {k: [] for k in ("optimizer", "decay_per_step", "weight_decay", "seed", "jacobian_norm", "kfac_norm",
                            "test_accuracy", "train_loss", "diverged")}
    lrs = {"sgd": lr_sgd, "kfac-g": lr_kfac}
    if progress is not None:      # partial: every network at initialization (both optimizers start from it)
        # seed s gives every run the same start whatever its decay: one network per seed, measured once
        model = relu_net([64] + [width] * depth + [10], runs=len(seeds), seed=[1000 + s for s in seeds])
        model.eval()
        with torch.no_grad():
            kn_seed = dict(zip(seeds, kfac_gn_norm(model, data.x_train[:PREVIEW_INPUTS]).tolist()))
        jn_seed = dict(zip(seeds, jacobian_norm(model, data.x_test[:PREVIEW_INPUTS]).tolist()))
        jn, kn, n = [jn_seed[s] for _, s in runs], [kn_seed[s] for _, s in runs], len(runs) * len(lrs)
        progress(0.0, JacobianResult(
            optimizer=np.repeat(list(lrs), len(runs)), decay_per_step=np.array([d for d, _ in runs] * len(lrs)),
            weight_decay=np.array([d / lr for lr in lrs.values() for d, _ in runs]),
            seed=np.array([s for _, s in runs] * len(lrs)), jacobian_norm=np.array(jn * len(lrs)),
            kfac_norm=np.array(kn * len(lrs)), test_accuracy=np.full(n, np.nan), train_loss=np.full(n, np.nan),
            diverged=np.zeros(n, dtype=bool), lr=lrs))
    for i, (name, lr) in enumerate(lrs.items()):
        model = relu_net([64] + [width] * depth + [10], runs=len(runs), seed=[1000 + s for _, s in runs])
        wd = torch.tensor([d / lr for d, _ in runs])
        opt = regularized(preconditioner(name, model, damping=damping, momentum=momentum), lr, wd=wd)
        rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=[s for _, s in runs],
                    record_every=max(steps // 20, 1), eval_every=steps, diverge_above=1e3)
        model.eval()
        with torch.no_grad():
            kn = kfac_gn_norm(model, data.x_train)
        cols["optimizer"] += [name] * len(runs)
        cols["decay_per_step"] += [d for d, _ in runs]
        cols["weight_decay"] += wd.tolist()
        cols["seed"] += [s for _, s in runs]
        cols["jacobian_norm"] += jacobian_norm(model, data.x_test).tolist()
        cols["kfac_norm"] += kn.tolist()
        cols["test_accuracy"] += rec.test_accuracy[-1].tolist()
        cols["train_loss"] += rec.loss[-1].tolist()
        cols["diverged"] += (rec.diverged_at >= 0).tolist()
        if progress is not None and i + 1 < len(lrs):     # partial: the optimizers trained so far
            progress((i + 1) / len(lrs), JacobianResult(**{k: np.asarray(v) for k, v in cols.items()}, lr=lrs))
    return JacobianResult(**{k: np.asarray(v) for k, v in cols.items()}, lr=lrs)


# ---------------------------------------------------------------------------- mechanism 2 across architectures
@dataclass
class ArchitectureResult:
    r"""Mechanism 2 across architectures: one row per trained network (``width``, ``depth``, ``seed``) and checkpoint.

    Every network is a bias-free ReLU MLP trained with K-FAC-G and the same decay per step; seed ``s`` fixes the
    minibatch order of every architecture. ``weight_scale`` is :math:`\prod_\ell \lVert W_\ell\rVert_F^2`: scaling
    every weight by :math:`c` multiplies it, ``kfac_norm`` and ``jacobian_norm`` all by :math:`c^{2K}`.
    """

    step: np.ndarray               # (N,) the checkpoint: updates taken when measured
    width: np.ndarray              # (N,)
    depth: np.ndarray              # (N,) hidden layers; K = depth + 1 weight matrices
    seed: np.ndarray               # (N,)
    jacobian_norm: np.ndarray      # (N,) E ||J_x||_F^2 on the test inputs
    kfac_norm: np.ndarray          # (N,) K-FAC Gauss-Newton norm on the training inputs
    gn_norm: np.ndarray            # (N,) exact Gauss-Newton norm theta^T G theta on the training inputs
    weight_scale: np.ndarray       # (N,) prod_l ||W_l||_F^2
    test_accuracy: np.ndarray      # (N,)
    diverged: np.ndarray           # (N,) bool

    def steps(self) -> list[int]:
        return sorted(set(self.step.tolist()))

    def _rows(self, step: int | None) -> np.ndarray:
        """The finite rows measured at ``step`` (default: the last checkpoint)."""
        step = self.steps()[-1] if step is None else step
        return (self.step == step) & ~self.diverged & np.isfinite(self.kfac_norm) & np.isfinite(self.jacobian_norm)

    def correlation(self, control: str | None = None, times_k: bool = True, step: int | None = None) -> M.Interval:
        r"""Correlation across architectures of the log K-FAC norm and :math:`\log K\lVert J_x\rVert_F^2`
        (``times_k=False``: :math:`\log\lVert J_x\rVert_F^2`) at checkpoint ``step``, one value per seed; mean and
        95% interval over seeds, taken on Fisher's :math:`z = \operatorname{artanh} r` and mapped back.

        ``control``: a *partial* correlation, both logs first regressed on ``'scale'`` (the log weight scale
        :math:`\log\prod_\ell\lVert W_\ell\rVert_F^2`, which both share within one architecture) or on ``'depth'``
        (one mean per depth: what is left compares widths at equal depth, where :math:`K` is the same).
        """
        z = []
        for s in np.unique(self.seed):
            rows = self._rows(step) & (self.seed == s)
            a = np.log(self.kfac_norm[rows])
            b = np.log(self.jacobian_norm[rows] * ((self.depth[rows] + 1) if times_k else 1))
            if control == "scale":
                X = np.stack([np.ones(rows.sum()), np.log(self.weight_scale[rows])], 1)
            elif control == "depth":
                X = (self.depth[rows][:, None] == np.unique(self.depth)[None]).astype(float)
            else:
                X = np.zeros((rows.sum(), 0))
            if X.shape[1]:
                a = a - X @ np.linalg.lstsq(X, a, rcond=None)[0]
                b = b - X @ np.linalg.lstsq(X, b, rcond=None)[0]
            z.append(np.arctanh(np.clip(np.corrcoef(a, b)[0, 1], -0.999999, 0.999999)))
        return M.paired_interval(np.array(z)).map(math.tanh)

    def architectures(self) -> list[tuple[int, int]]:
        """(width, depth) pairs, depth-major."""
        return sorted({(int(w), int(d)) for w, d in zip(self.width, self.depth)}, key=lambda wd: (wd[1], wd[0]))

    def geometric_mean(self, quantity: str, step: int | None = None) -> dict[tuple[int, int], float]:
        r"""Per architecture, the geometric mean over seeds of ``quantity``: a column name, or ``'ratio'``, the K-FAC
        norm over :math:`K\lVert J_x\rVert_F^2` (1 for a linear network with whitened inputs)."""
        rows = self._rows(step)
        v = (self.kfac_norm / ((self.depth + 1) * self.jacobian_norm) if quantity == "ratio"
             else getattr(self, quantity))
        return {(w, d): float(np.exp(np.mean(np.log(v[rows & (self.width == w) & (self.depth == d)]))))
                for w, d in self.architectures()}

    def spread(self, quantity: str = "ratio", step: int | None = None) -> float:
        """Max / min over architectures of :meth:`geometric_mean`."""
        values = list(self.geometric_mean(quantity, step).values())
        return max(values) / min(values)


def _checkpoints_fit(args: Mapping) -> None:
    if args["checkpoints"] is not None and max(args["checkpoints"]) > args["steps"]:
        raise ValueError(f"checkpoints must not exceed steps={args['steps']}, got {list(args['checkpoints'])}")


def _network_measures(model, data: Dataset) -> dict[str, list]:
    """What :func:`architecture_experiment` measures on a trained network, one value per run."""
    model.eval()
    with torch.no_grad():
        kfac = kfac_gn_norm(model, data.x_train)
        scale = torch.stack([lin.weight.flatten(1).square().sum(1) for lin in model.linears]).prod(0)
        accuracy = (model(data.x_test).argmax(-1) == data.y_test).double().mean(-1)
    out = {"kfac_norm": kfac, "gn_norm": gn_norm(model, data.x_train), "weight_scale": scale,
           "jacobian_norm": jacobian_norm(model, data.x_test), "test_accuracy": accuracy}
    model.train()
    out = {k: v.double().tolist() for k, v in out.items()}
    out["diverged"] = [not all(math.isfinite(out[k][r]) for k in out) for r in range(len(out["kfac_norm"]))]
    return out


@cached
@accepts(_checkpoints_fit, widths=sequence_of(Int(1), bad=((), (0,), "w")),
         depths=sequence_of(Int(1), bad=((), (0,), "d")), seeds=SEEDS, damping=NonNegative(), lr=Positive(),
         decay_per_step=Real(0.0, 0.5), checkpoints=sequence_of(Int(1), bad=((), (0,), "c"), optional=True),
         progress=Function(optional=True),
         **{k: v for k, v in SIZES.items() if k not in ("width", "depth")})
def architecture_experiment(widths: Sequence[int] = (16, 32, 64, 128), depths: Sequence[int] = (1, 2, 3),
                            seeds: Sequence[int] = tuple(range(5)), steps: int = 600, batch_size: int = 128,
                            lr: float = 0.01, damping: float = 1e-2, decay_per_step: float = 1e-3,
                            checkpoints: Sequence[int] | None = None, test_fraction: float = 0.5,
                            progress: Callable[[float], None] | None = None) -> ArchitectureResult:
    r"""Does the K-FAC Gauss-Newton norm track :math:`\lVert J_x\rVert_F^2` across *architectures*?

    Trains a bias-free ReLU MLP (no BN) of every width × depth with K-FAC-G and decoupled decay
    :math:`\lambda = (\alpha\lambda)/\alpha` (one batched computation per architecture, its runs the seeds), and
    after ``checkpoints`` updates (default: ``steps`` only) measures :math:`\mathbb E\lVert J_x\rVert_F^2` on the
    test inputs, the K-FAC Gauss-Newton norm (:func:`~lecture_lib.mechanisms.kfac_gn_norm`) and the exact one
    (:func:`~lecture_lib.mechanisms.gn_norm`) on the training inputs, and the weight scale
    :math:`\prod_\ell\lVert W_\ell\rVert_F^2` (:class:`ArchitectureResult`).
    """
    data = digits(test_fraction=test_fraction, seed=0)
    checkpoints = sorted(set(checkpoints or ())) or [steps]
    arch = [(w, d) for d in depths for w in widths]
    cols = {k: [] for k in ("step", "width", "depth", "seed", "jacobian_norm", "kfac_norm", "gn_norm",
                            "weight_scale", "test_accuracy", "diverged")}

    def measure(k, model, w, d):
        if k + 1 in checkpoints:            # the callback runs after update k: k + 1 updates taken
            for key, values in _network_measures(model, data).items():
                cols[key] += values
            cols["step"] += [k + 1] * len(seeds)
            cols["width"] += [w] * len(seeds)
            cols["depth"] += [d] * len(seeds)
            cols["seed"] += list(seeds)

    for i, (w, d) in enumerate(arch):
        model = relu_net([64] + [w] * d + [10], runs=len(seeds), seed=[1000 + s for s in seeds])
        opt = regularized(preconditioner("kfac-g", model, damping=damping), lr, wd=decay_per_step / lr)
        train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=list(seeds),
              record_every=steps, eval_every=None, diverge_above=1e3,
              callback=functools.partial(measure, w=w, d=d))
        if progress is not None:
            progress((i + 1) / len(arch))
    return ArchitectureResult(**{k: np.asarray(v) for k, v in cols.items()})


# ============================================================================ mechanism 3
@dataclass
class DampingResult:
    """Mechanism 3: K-FAC runs without and with weight decay (and on the BN layers only), scheme-major.

    Run ``i * len(seeds) + j`` is scheme ``schemes[i]`` with seed ``seeds[j]``; runs with the same seed share their
    initialization, their minibatches and (under K-FAC-F) the random streams of the targets sampled for the Fisher,
    so schemes compare paired by seed: at step 0 their statistics are identical.
    """

    record: Record
    schemes: list[str]
    layers: list[str]
    relative_damping: np.ndarray   # (K, R, L) γ / mean eigenvalue of A ⊗ S
    cosine: np.ndarray             # (K, R, L) cos(K-FAC step, gradient): → 1 when first order
    fisher_trace: np.ndarray       # (K, R) tr F(ŵ) of the first layer (K-FAC blocks)
    gn_trace: np.ndarray           # (K, R) tr G(ŵ)
    seeds: list[int] = field(default_factory=lambda: [0])

    def columns(self, scheme: str) -> slice:
        """The runs of ``scheme``, one per seed."""
        i, n = self.schemes.index(scheme), len(self.seeds)
        return slice(i * n, (i + 1) * n)

    def first_seed(self) -> list[int]:
        """One run per scheme (the first seed's), in scheme order: what the panel draws."""
        return [i * len(self.seeds) for i in range(len(self.schemes))]

    def final(self, quantity: str, scheme: str, layer: int = 0, last: int = 4) -> np.ndarray:
        """Per seed: ``quantity`` (``'relative_damping'`` or ``'cosine'``) of ``layer``, mean of the last ``last`` records."""
        return getattr(self, quantity)[-last:, self.columns(scheme), layer].mean(0)

    def damping_ratio(self, a: str, b: str, layer: int = 0) -> M.Interval:
        """How many times larger the final relative damping is under scheme ``a`` than ``b``: geometric mean over
        seeds with its paired 95% interval."""
        log = np.log(self.final("relative_damping", a, layer)) - np.log(self.final("relative_damping", b, layer))
        return M.paired_interval(log).map(math.exp)

    def cosine_difference(self, a: str, b: str, layer: int = 0) -> M.Interval:
        """Final cos(K-FAC step, gradient) under ``a`` minus under ``b``, paired over seeds, 95% interval."""
        return M.paired_interval(self.final("cosine", a, layer) - self.final("cosine", b, layer))


#: Step 0's statistics of :func:`damping_experiment`, the last few, keyed on the contents of their inputs
#: (:func:`_step0_key`). At step 0 the runs' weights, their buffers and the probe batch are the same for every
#: damping, weight decay and learning rate, and so are the probe's Kronecker factors (their eigenbases) and
#: curvature traces: a move of those sliders would compute them again, ~80 ms of the first streamed row's ~140 ms
#: (full settings, 2-core machine).
_INITIAL = Recent(4)


def _step0_key(tag: tuple, tensors) -> tuple:
    """``tag`` and a hash of the tensors' bytes: a hit is the same computation's result, never a neighbour's."""
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return tag, digest.digest()


def _kfac_tracks(damping, layers: Sequence[str], probe: torch.Tensor, curvature: str,
                 seeds: Sequence[int]) -> dict[str, Callable]:
    r"""What :func:`damping_experiment` records each step; the one place here that reads K-FAC's state.

    ``'damping'`` ``(R, L, 2)``: :math:`\gamma` over the mean eigenvalue of :math:`A\otimes S`, and the cosine of
    the K-FAC step with the gradient, per layer. ``'traces'`` ``(R, 2)``: :math:`\operatorname{tr}` of the first
    layer's K-FAC Fisher and Gauss-Newton blocks for :math:`\hat w`, i.e.
    :math:`\lVert w\rVert^2\operatorname{tr}A\,\operatorname{tr}S` with output Hessian
    :math:`\mathrm{diag}(p) - pp^\top` (the Fisher's exact expectation over the model's labels) or :math:`I`.
    Step 0's probe statistics are shared by requests with the same initial weights (:data:`_INITIAL`); run ``r``
    samples its probe targets from a generator seeded ``seeds[r]``, so runs that share a seed share them.
    """
    kind = ("cross_entropy", "fisher") if curvature == "kfac-f" else ("mse", "ggn")

    def inputs(model, params):
        return [*params.values(), *(b for _, b in sorted(model.named_buffers())), probe]

    def eigenbases(factors):
        """Per layer: the eigenbases of A and S, and the mean eigenvalue of A ⊗ S."""
        out = {}
        for name in layers:
            A, S = factors[name]
            mean_eig = A.diagonal(dim1=-2, dim2=-1).mean(-1) * S.diagonal(dim1=-2, dim2=-1).mean(-1)
            out[name] = (*eigh_factor(A), *eigh_factor(S), mean_eig)
        return out

    def relative_damping(model, params, grads, opt_state):
        state = find_state(opt_state, KFACState)
        if state.A:
            bases = eigenbases({n: (state.A[n], state.S[n]) for n in layers})
        else:
            # before the first update K-FAC holds no statistics yet (it estimates them inside the update, from that
            # step's batch): the probe batch's factors stand in at step 0, their sampled targets drawn from the runs'
            # seeded generators (from the global RNG, the first row depended on whatever had drawn from it before)
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            bases = _INITIAL.get(_step0_key(("bases", kind, tuple(layers), tuple(seeds)), inputs(model, params)),
                                 lambda: eigenbases(estimate_factors(model, params, probe, None, *kind, gens)))
        rel, cos = [], []
        for name in layers:
            QA, dA, QS, dS, mean_eig = bases[name]
            rel.append(damping / mean_eig.clamp_min(1e-30))
            g = grads[f"{name}.weight"]
            step = kron_damped_solve.__wrapped__(QA, dA, QS, dS, g, damping)  # NaN passes
            cos.append(torch.nn.functional.cosine_similarity(step.flatten(1), g.flatten(1), dim=1))
        return torch.stack([torch.stack(rel, -1), torch.stack(cos, -1)], -1)

    def curvature_traces(model, params, grads, opt_state):
        def traces():
            sq = params[f"{layers[0]}.weight"].flatten(1).square().sum(1)
            return sq.unsqueeze(-1) * ggn_factor_traces(model, params, probe, layers[0], ("cross_entropy", "mse"))

        if find_state(opt_state, KFACState).A:
            return traces()
        return _INITIAL.get(_step0_key(("traces", layers[0]), inputs(model, params)), traces)

    return {"damping": relative_damping, "traces": curvature_traces}


@cached
@accepts(curvature=Choice(("kfac-f", "kfac-g")), damping=Positive(), weight_decay=NonNegative(), lr=Positive(),
         seeds=SEEDS, record_every=Int(1), eval_every=Int(1), schemes=SCHEME_LIST, probe_size=Int(2),
         progress=Function(optional=True), **SIZES)
def damping_experiment(curvature: str = "kfac-f", damping: float = 1e-3, weight_decay: float = 0.01,
                       lr: float = 0.02, steps: int = 1000, batch_size: int = 128, width: int = 128,
                       depth: int = 2, seeds: Sequence[int] = (0,), record_every: int = 25, eval_every: int = 50,
                       schemes: Sequence[str] = ("none", "wd-bn", "wd-all"), test_fraction: float = 0.5,
                       probe_size: int = 256, progress=None) -> DampingResult:
    r"""K-FAC (``'kfac-f'`` or ``'kfac-g'``) on a BN MLP with the decay schemes of
    :func:`~lecture_lib.mechanisms.decay_schemes`.

    Tracks per hidden (normalized) layer the relative damping :math:`\gamma/\operatorname{mean\,eig}(A\otimes S)`
    (:math:`\propto \gamma\lVert w\rVert^2` against the direction's curvature), the cosine between the
    K-FAC step and the gradient, and the first layer's Fisher and Gauss-Newton traces for :math:`\hat w`.
    Decay is decoupled: :math:`w \leftarrow (1-\alpha\lambda)w - \alpha(\hat G + \gamma I)^{-1}\nabla J`.
    Every (scheme, seed) is one run of one batched computation, paired by seed (:class:`DampingResult`): K-FAC-F
    samples each run's targets from its seed's stream, so the schemes differ by their decay, not by Fisher noise.
    """
    schemes, seeds = list(schemes), list(seeds)
    runs = [(sc, sd) for sc in schemes for sd in seeds]
    run_seeds = [sd for _, sd in runs]
    model = bn_mlp(width, depth, runs=len(runs), seed=run_seeds)
    mask = model.scale_invariant
    opt = _decayed_by_scheme(preconditioner(curvature, model, damping=damping, seed=run_seeds), lr,
                             [sc for sc, _ in runs], weight_decay, mask)
    layers = [n.rsplit(".", 1)[0] for n, v in mask.items() if v]
    data = digits(test_fraction=test_fraction, seed=0)
    def result(rec):
        d, t = rec.extras["damping"], rec.extras["traces"]
        return DampingResult(rec, schemes, layers, d[..., 0], d[..., 1], t[..., 0], t[..., 1], seeds)

    rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=run_seeds,
                record_every=record_every, eval_every=eval_every, diverge_above=1e4,
                track=_kfac_tracks(damping, layers, data.x_train[:probe_size], curvature, run_seeds),
                report=Stream(progress).stage(result, first=0))   # draw the initial row before K-FAC's first update
    return result(rec)


# ============================================================================ the headline table
def _per_optimizer(spec: Spec, bad: tuple) -> Where:
    """The declaration of a table ``{optimizer: value}`` whose values ``name['sgd']`` each satisfy ``spec``."""

    def rule(name, values):
        if not isinstance(values, Mapping):
            raise TypeError(f"{name} must be a dict {{optimizer: value}}, got {values!r}")
        for k, v in values.items():
            spec.check(f"{name}[{k!r}]", v, {})

    return Where(rule, bad=bad)


def _every_optimizer_has_values(args: Mapping) -> None:
    for table in ("lr", "l2", "wd", "damping"):
        needed = [o for o in args["optimizers"] if table != "damping" or o.startswith("kfac")]
        for name in needed:
            if name not in args[table]:
                raise ValueError(f"{table} has no value for optimizer {name!r}: {dict(args[table])}")


@dataclass
class TableConfig:
    r"""Everything that fixes the headline table: data, model, training, and per-optimizer hyperparameters.

    ``lr`` :math:`\alpha`, ``l2`` and ``wd`` :math:`\lambda` (chosen on a validation split by
    :func:`tune`), ``damping`` :math:`\gamma` for K-FAC; SGD uses momentum ``momentum`` :math:`\rho`.
    """

    optimizers: tuple = OPTIMIZERS
    seeds: tuple = tuple(range(10))
    width: int = 128
    depth: int = 2
    steps: int = 800
    batch_size: int = 128
    test_fraction: float = 0.5
    split_seed: int = 0
    n_train: int | None = None      # data options of :func:`~lecture_lib.data.digits` (None / 0: the whole
    label_noise: float = 0.0        # training split, clean labels); see NOISY_CONFIG
    momentum: float = 0.9
    lr: dict = field(default_factory=lambda: {"sgd": 0.05, "adam": 1e-3, "kfac-f": 0.01, "kfac-g": 0.01})
    damping: dict = field(default_factory=lambda: {"kfac-f": 1e-2, "kfac-g": 1e-3})
    # chosen by tune() (scripts/make_headline_table.py --tune): best mean validation accuracy over TUNE_SEEDS on the
    # grids TUNE_L2_GRID / TUNE_WD_GRID
    l2: dict = field(default_factory=lambda: {"sgd": 1e-2, "adam": 3e-2, "kfac-f": 1e-1, "kfac-g": 3e-2})
    wd: dict = field(default_factory=lambda: {"sgd": 1e-1, "adam": 3.0, "kfac-f": 1e-1, "kfac-g": 1e-1})

    def __post_init__(self):
        self.validate(**vars(self))

    @staticmethod
    @accepts(_every_optimizer_has_values, optimizers=sequence_of(Choice(OPTIMIZERS), bad=(("nope",), (), "sgd")),
             seeds=SEEDS, width=Int(1), depth=Int(1), steps=Int(1), batch_size=Int(1), test_fraction=FRACTION,
             split_seed=Seed(), n_train=Int(10, optional=True), label_noise=Real(0.0, 1.0, high_open=True),
             momentum=Unit(),
             lr=_per_optimizer(Positive(), bad=({"sgd": -1.0}, {"sgd": 0.0}, {"sgd": float("nan")}, 0.1)),
             l2=_per_optimizer(NonNegative(), bad=({"sgd": -1.0}, [0.1])),
             wd=_per_optimizer(NonNegative(), bad=({"sgd": float("nan")},)),
             damping=_per_optimizer(NonNegative(), bad=({"kfac-f": -1.0}, "0.1")))
    def validate(optimizers, seeds, width, depth, steps, batch_size, test_fraction, split_seed, n_train, label_noise,
                 momentum, lr, damping, l2, wd) -> None:
        """The fields' declarations, checked when a config is made (the dataclass writes ``__init__``)."""

    def data(self) -> Dataset:
        """The digits this table trains and tests on (the test labels are clean even with ``label_noise``)."""
        return digits(test_fraction=self.test_fraction, seed=self.split_seed, n_train=self.n_train,
                      label_noise=self.label_noise)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizers"], d["seeds"] = list(self.optimizers), list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "TableConfig":
        d = dict(d)
        d["optimizers"], d["seeds"] = tuple(d["optimizers"]), tuple(d["seeds"])
        return cls(**d)


REDUCED = dict(seeds=(0, 1), width=32, steps=30, batch_size=64)


def reduced_config(config: TableConfig | None = None) -> TableConfig:
    """The CI-sized version of ``config`` (2 seeds, width 32, 30 steps): same hyperparameters, seconds to run."""
    return dataclasses.replace(config or TableConfig(), **REDUCED)


@accepts(fraction=FRACTION, seed=Seed())
def validation_split(data: Dataset, fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Hold out ``fraction`` of the *training* set as the evaluation split (the test set is never looked at)."""
    n = data.n_train
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    nv = max(int(round(n * fraction)), 1)
    va, tr = perm[:nv], perm[nv:]
    return Dataset(data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va], data.task,
                   f"{data.name}, validation split", dict(data.meta))


def _one_entry_per_run(args: Mapping) -> None:
    if not len(args["l2"]) == len(args["wd"]) == len(args["seeds"]):
        raise ValueError(f"l2, wd and seeds must have one entry per run, got lengths {len(args['l2'])}, "
                         f"{len(args['wd'])}, {len(args['seeds'])}")


@accepts(_one_entry_per_run, name=Choice(OPTIMIZERS), l2=sequence_of(NonNegative(), bad=([-0.1, 0.0], [float("nan"), 0.0], "l2")),
         wd=sequence_of(NonNegative(), bad=([0.0, -1.0], "wd")), seeds=SEEDS)
def train_family(name: str, config: TableConfig, data: Dataset, l2: Sequence[float], wd: Sequence[float],
                 seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Train one optimizer's runs ``(l2[r], wd[r], seeds[r])`` as one batched computation on ``data``.

    L2 enters the gradient before the preconditioner (for SGD: inside the momentum buffer, PyTorch's
    ``weight_decay``); weight decay is applied after it (for SGD: outside the buffer, SGDW). Returns the final
    accuracy on ``data``'s test split, the final training loss, ``(R,)`` each (NaN for a run that diverged),
    and which test examples each run classifies correctly, ``(R, n_test)`` bool. Runs with the same seed share
    their initialization, their minibatches and (K-FAC-F) the stream of targets sampled for the Fisher.
    """
    model = bn_mlp(config.width, config.depth, runs=len(seeds), seed=list(seeds))
    pre = preconditioner(name, model, damping=config.damping.get(name, 1e-3), momentum=config.momentum,
                         seed=list(seeds))
    opt = regularized(pre, config.lr[name], l2=torch.tensor(l2, dtype=torch.float32),
                      wd=torch.tensor(wd, dtype=torch.float32))
    rec = train(model, data, "cross_entropy", opt, config.steps, batch_size=config.batch_size, seed=list(seeds),
                record_every=max(config.steps // 10, 1), eval_every=config.steps, diverge_above=1e4)
    model.eval()
    with torch.no_grad():
        correct = (model(data.x_test).argmax(-1) == data.y_test).numpy()
    return rec.test_accuracy[-1], rec.loss[-1], correct & np.isfinite(rec.test_accuracy[-1])[:, None]


def _pack(correct: np.ndarray) -> str:
    """A run's per-example correctness as a hex string (8 test examples per byte)."""
    return np.packbits(correct.astype(np.uint8)).tobytes().hex()


def _unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def headline_table(config: TableConfig | None = None, progress: Callable[[float], None] | None = None) -> dict:
    r"""Test accuracy of every optimizer × {none, L2, weight decay} × seed, each optimizer one batched run.

    Seed ``s`` fixes the initialization and minibatch order of all three regularizers' runs, so they
    pair up (:func:`paired_differences`). Returns a JSON-ready dict: ``config``, ``version`` (lecture_lib,
    torch, numpy, python), ``accuracy[opt][reg]`` (one value per seed, in %), ``mean`` and ``std``
    (population std over seeds, in %), ``train_loss``, and ``correct[opt][reg]`` (per seed, which test
    images were classified correctly, packed by :func:`_pack`; ``n_test`` of them).
    """
    config = config or TableConfig()
    data = config.data()
    out = {"config": config.to_dict(), "version": versions(), "accuracy": {}, "mean": {}, "std": {},
           "train_loss": {}, "n_test": int(data.n_test), "correct": {}}
    for i, name in enumerate(config.optimizers):
        cells = [(reg, s) for reg in REGULARIZERS for s in config.seeds]
        l2 = [config.l2[name] if reg == "l2" else 0.0 for reg, _ in cells]
        wd = [config.wd[name] if reg == "wd" else 0.0 for reg, _ in cells]
        acc, loss, correct = train_family(name, config, data, l2, wd, [s for _, s in cells])
        n = len(config.seeds)
        for table in ("accuracy", "mean", "std", "train_loss", "correct"):
            out[table][name] = {}
        for j, reg in enumerate(REGULARIZERS):
            a = 100.0 * np.asarray(acc[j * n:(j + 1) * n], dtype=float)
            out["accuracy"][name][reg] = [round(float(v), 4) for v in a]
            out["mean"][name][reg] = round(float(np.mean(a)), 4)
            out["std"][name][reg] = round(float(np.std(a)), 4)
            out["train_loss"][name][reg] = [float(f"{v:.6g}") for v in loss[j * n:(j + 1) * n]]
            out["correct"][name][reg] = [_pack(c) for c in correct[j * n:(j + 1) * n]]
        if progress is not None:
            progress((i + 1) / len(config.optimizers))
    return out


COMPARISONS = (("wd", "l2"), ("wd", "none"), ("l2", "none"))


def paired_differences(table: Mapping) -> dict[str, dict[tuple[str, str], M.Interval]]:
    r"""Per optimizer, accuracy differences (points) between regularizers on the same seeds, with 95% intervals.

    ``out[opt][('wd', 'l2')]`` is the mean over seeds of :math:`a_{WD,s} - a_{L2,s}` with its Student-t
    interval (:func:`~lecture_lib.mechanisms.paired_interval`); likewise WD − none and L2 − none.
    """
    return {name: {(a, b): M.paired_interval(np.subtract(acc[a], acc[b])) for a, b in COMPARISONS}
            for name, acc in table["accuracy"].items()}


def winner(differences: Mapping[tuple[str, str], M.Interval]) -> str | None:
    """The regularizer whose paired intervals against *both* others lie above 0, or None (no resolved winner)."""
    for reg in REGULARIZERS:
        against = [d if a == reg else -d for (a, b), d in differences.items() if reg in (a, b)]
        if against and all(i.low > 0 for i in against):
            return reg
    return None


def new_test_set_se(table: Mapping, name: str, a: str, b: str) -> float | None:
    r"""Standard error (points) of the seed-averaged difference :math:`a - b` over a *new* test set of the same size.

    Per test image :math:`i`, :math:`\delta_i` = mean over seeds of (correct under ``a``) − (correct under ``b``);
    the difference is :math:`\bar\delta`, and a fresh test set would move it by about :math:`s_\delta/\sqrt n`.
    None when the table holds no per-example results.
    """
    if "correct" not in table:
        return None
    n = table["n_test"]
    ca = np.array([_unpack(t, n) for t in table["correct"][name][a]], dtype=float)
    cb = np.array([_unpack(t, n) for t in table["correct"][name][b]], dtype=float)
    delta = (ca - cb).mean(0)
    return float(100.0 * delta.std(ddof=1) / math.sqrt(n))


#: :func:`tune`'s seeds: as many as a table's, and other ones (the table's runs are not the tuning's).
TUNE_SEEDS = tuple(range(100, 110))


def tune(config: TableConfig | None = None, l2_grid: Mapping[str, Sequence[float]] | None = None,
         wd_grid: Mapping[str, Sequence[float]] | None = None, seeds: Sequence[int] = TUNE_SEEDS,
         fraction: float = 0.25) -> dict:
    r"""Choose each optimizer's L2 and weight-decay :math:`\lambda` on a validation split of the training set.

    Every grid value × seed is a run of one batched computation per optimizer; the best mean validation
    accuracy wins (ties: the smaller :math:`\lambda`). The default :data:`TUNE_SEEDS` are ten, none of them a
    table seed. With four, another CPU's float32 rounding changed 3 of 16 choices: K-FAC-G's L2 moved 0.03 → 0.1
    on the clean digits (where one table seed in ten then collapsed to 85%) and 0.1 → 0.01 with noisy labels.
    Returns ``{'l2': {...}, 'wd': {...}, 'scores': ..., 'at_edge': [...], 'version': ...}``; ``at_edge`` lists the
    choices that sit at an end of their grid (the grid does not bracket the optimum there), ``version`` what the
    scores were computed with (:func:`versions`, its CPU instruction set included).
    """
    config = config or TableConfig()
    l2_grid = l2_grid or TUNE_L2_GRID
    wd_grid = wd_grid or TUNE_WD_GRID
    data = validation_split(config.data(), fraction)
    chosen = {"l2": {}, "wd": {}, "scores": {}, "at_edge": [], "seeds": list(seeds), "fraction": fraction,
              "version": versions()}
    for name in config.optimizers:
        cells = ([("none", 0.0)] + [("l2", v) for v in l2_grid[name]] + [("wd", v) for v in wd_grid[name]])
        runs = [(reg, v, s) for reg, v in cells for s in seeds]
        acc, _, _ = train_family(name, config, data, [v if r == "l2" else 0.0 for r, v, _ in runs],
                                 [v if r == "wd" else 0.0 for r, v, _ in runs], [s for *_, s in runs])
        acc = np.nan_to_num(np.asarray(acc, dtype=float).reshape(len(cells), len(seeds)), nan=0.0).mean(1)
        chosen["scores"][name] = [[reg, v, round(100 * float(a), 3)] for (reg, v), a in zip(cells, acc)]
        for reg, grid in (("l2", l2_grid[name]), ("wd", wd_grid[name])):
            best = max((a, -v, v) for (r, v), a in zip(cells, acc) if r == reg)
            chosen[reg][name] = best[2]
            if best[2] in (min(grid), max(grid)):
                chosen["at_edge"].append(f"{name} {reg} {best[2]:g}")
    return chosen


def grid_lead(scores: Iterable[tuple[float, float]]) -> tuple[float, float, float] | None:
    """``(chosen λ, runner-up λ, lead)`` of a grid's ``(λ, mean validation accuracy)`` scores: the best λ (a tie goes
    to the smaller, as in :func:`tune`), the next best, and by how many points it led; None for fewer than two."""
    rows = sorted(((a, -v, v) for v, a in scores), reverse=True)
    if len(rows) < 2:
        return None
    (best, _, chosen), (second, _, runner_up) = rows[:2]
    return chosen, runner_up, round(best - second, 3)


def tuning_lead(tuning: Mapping, name: str, reg: str) -> tuple[float, float, float] | None:
    """:func:`grid_lead` of the λ that :func:`tune` chose for ``name`` and ``reg``."""
    return grid_lead((v, a) for r, v, a in (tuning or {}).get("scores", {}).get(name, []) if r == reg)


TUNE_L2_GRID = {"sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1), "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                "kfac-f": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1), "kfac-g": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)}
TUNE_WD_GRID = {"sgd": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), "adam": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
                "kfac-f": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), "kfac-g": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)}


# The second regime, where regularization matters: the same network and training, but 30% of the training labels
# replaced by a wrong class (the test labels stay clean). Memorizing the wrong labels costs accuracy; the lambdas
# below were chosen by tune() on NOISY_L2_GRID / NOISY_WD_GRID (whose validation labels are noisy too).
NOISY_L2_GRID = {"sgd": (1e-2, 3e-2, 1e-1, 3e-1), "adam": (3e-2, 1e-1, 3e-1, 1.0, 3.0),
                 "kfac-f": (3e-2, 1e-1, 3e-1, 1.0), "kfac-g": (1e-2, 3e-2, 1e-1, 3e-1)}
NOISY_WD_GRID = {"sgd": (0.1, 0.3, 1.0, 3.0), "adam": (1.0, 3.0, 10.0, 30.0),
                 "kfac-f": (0.1, 0.3, 1.0, 3.0), "kfac-g": (0.1, 0.3, 1.0, 3.0)}
NOISY_CONFIG = TableConfig(label_noise=0.3,
                           l2={"sgd": 1e-1, "adam": 1.0, "kfac-f": 3e-1, "kfac-g": 1e-1},
                           wd={"sgd": 1.0, "adam": 10.0, "kfac-f": 1.0, "kfac-g": 1.0})


def format_table(table: Mapping) -> str:
    """Plain-text rendering of a headline table: one row per optimizer, mean ± std (%) per regularizer."""
    head = f"{'optimizer':10s}" + "".join(f"{LABELS[r]:>22s}" for r in REGULARIZERS)
    lines = [head]
    for name in table["mean"]:
        cells = "".join(f"{table['mean'][name][r]:>14.2f} ± {table['std'][name][r]:5.2f}" for r in REGULARIZERS)
        lines.append(f"{LABELS[name]:10s}{cells}")
    return "\n".join(lines)


def versions() -> dict:
    """What a saved table was computed with; ``cpu`` is the instruction set torch's kernels use (AVX2, AVX512, ...),
    which sets float32's rounding: a table reproduces bit for bit only where it matches."""
    return {"lecture_lib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": torch.backends.cpu.get_cpu_capability()}


TABLE_PATH = Path(__file__).resolve().parent.parent / "data_files" / "headline_table.json"
NOISY_TABLE_PATH = TABLE_PATH.with_name("headline_table_noisy.json")

#: The saved tables: ``{regime: (config, tuning grids (l2, wd), path)}`` (``scripts/make_headline_table.py --regime``).
REGIMES = {"clean": (TableConfig(), (TUNE_L2_GRID, TUNE_WD_GRID), TABLE_PATH),
           "noisy": (NOISY_CONFIG, (NOISY_L2_GRID, NOISY_WD_GRID), NOISY_TABLE_PATH)}


def save_table(table: dict, path: str | Path = TABLE_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def load_table(path: str | Path = TABLE_PATH) -> dict:
    """The saved headline table (see ``scripts/make_headline_table.py``)."""
    return json.loads(Path(path).read_text())


# ============================================================================ large batches
@dataclass
class LargeBatchResult:
    """Test accuracy (%) of SGD without and with weight decay at a small and a large batch, paired by seed.

    ``accuracy[(batch_size, reg)]`` holds one value per seed (``reg`` ``'none'`` or ``'wd'``); seed ``s`` gives
    every run the same initialization. ``weight_decay[batch_size]`` is the λ chosen on the validation split.
    """

    batch_sizes: tuple
    seeds: list[int]
    steps: dict                     # {batch_size: steps}
    weight_decay: dict              # {batch_size: λ}
    accuracy: dict                  # {(batch_size, reg): (S,) array}
    scores: dict = field(default_factory=dict)   # {batch_size: [(λ, mean validation accuracy)]}

    def gap(self, reg: str) -> M.Interval:
        """Small-batch minus large-batch accuracy (points) under ``reg``, paired over seeds, 95% interval."""
        small, large = self.batch_sizes
        return M.paired_interval(self.accuracy[(small, reg)] - self.accuracy[(large, reg)])

    def gain(self, batch_size: int) -> M.Interval:
        """Weight decay minus none at ``batch_size`` (points), paired over seeds."""
        return M.paired_interval(self.accuracy[(batch_size, "wd")] - self.accuracy[(batch_size, "none")])

    def closed(self) -> M.Interval:
        """How much of the large-batch gap weight decay closes: gap without decay minus gap with it (points)."""
        small, large = self.batch_sizes
        a = self.accuracy
        return M.paired_interval((a[(small, "none")] - a[(large, "none")]) - (a[(small, "wd")] - a[(large, "wd")]))


def _small_then_large(args: Mapping) -> None:
    if len(args["batch_sizes"]) != 2 or not args["batch_sizes"][0] < args["batch_sizes"][1]:
        raise ValueError(f"batch_sizes must be (small, large) with small < large, got {args['batch_sizes']}")


@cached
@accepts(_small_then_large, batch_sizes=sequence_of(Int(1), bad=((512, 32), (32,), (0, 512), "b")), seeds=SEEDS,
         tune_seeds=SEEDS, lr=Positive(), wd_grid=sequence_of(Positive(), bad=((), (-0.1,), "w")),
         equal=Choice(("steps", "epochs")), progress=Function(optional=True),
         **{k: v for k, v in SIZES.items() if k != "batch_size"})
def large_batch_experiment(batch_sizes: Sequence[int] = (32, 512), seeds: Sequence[int] = tuple(range(10)),
                           steps: int = 1600, lr: float = 0.05, wd_grid: Sequence[float] = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
                           tune_seeds: Sequence[int] = TUNE_SEEDS, equal: str = "epochs", width: int = 128,
                           depth: int = 2, test_fraction: float = 0.5,
                           progress: Callable[[float], None] | None = None) -> LargeBatchResult:
    r"""The paper's large-batch comparison in kind (its Table 3): SGD (momentum 0.9, fixed α) on the BN MLP at a
    small and a large batch, without and with weight decay, on the clean digits.

    ``equal='steps'``: both batch sizes take ``steps`` updates (the large batch sees more epochs, and only its
    gradient noise is smaller); ``'epochs'``: the large batch takes ``steps · small / large`` updates, the same
    number of examples. Per batch size, λ is chosen from ``wd_grid`` on a validation split of the training set
    (``tune_seeds``, ten by default as for the headline table: with three, B = 32's λ and the conclusion changed with
    the seeds), then none and WD train with ``seeds``, one batched computation per batch size.
    """
    small, large = batch_sizes
    data = digits(test_fraction=test_fraction, seed=0)
    val = validation_split(data)
    n_steps = {small: steps, large: steps if equal == "steps" else max(1, round(steps * small / large))}
    wd, acc, scores = {}, {}, {}
    for i, bs in enumerate((small, large)):
        config = TableConfig(optimizers=("sgd",), seeds=tuple(seeds), width=width, depth=depth, steps=n_steps[bs],
                             batch_size=bs, test_fraction=test_fraction, lr={"sgd": lr})
        runs = [(v, s) for v in wd_grid for s in tune_seeds]
        a, _, _ = train_family("sgd", config, val, [0.0] * len(runs), [v for v, _ in runs], [s for _, s in runs])
        mean = np.nan_to_num(np.asarray(a, dtype=float), nan=0.0).reshape(len(wd_grid), len(tune_seeds)).mean(1)
        scores[bs] = [(float(v), round(100 * float(m), 3)) for v, m in zip(wd_grid, mean)]
        wd[bs] = float(max(zip(mean, [-v for v in wd_grid], wd_grid))[2])
        n = len(seeds)
        a, _, _ = train_family("sgd", config, data, [0.0] * 2 * n, [0.0] * n + [wd[bs]] * n, list(seeds) * 2)
        a = 100.0 * np.asarray(a, dtype=float)
        acc[(bs, "none")], acc[(bs, "wd")] = a[:n], a[n:]
        if progress is not None:
            progress((i + 1) / 2)
    return LargeBatchResult((small, large), list(seeds), n_steps, wd, acc, scores)


# The paper's numbers (Zhang et al. 2019, Table 1, CIFAR-10): baseline -> weight decay, in %.
# Its L2 column appears only in Figure 1 (not in a table), so it is not quoted here.
PAPER_TABLE = {
    "ResNet32, BN + augmentation": {"sgd": (92.95, 95.14), "adam": (93.63, 94.66), "kfac-f": (93.80, 95.35),
                                    "kfac-g": (93.44, 95.04)},
    "VGG16, BN + augmentation": {"sgd": (91.71, 93.39), "adam": (92.89, 93.62), "kfac-f": (93.12, 93.90),
                                 "kfac-g": (93.19, 93.80)},
    "VGG16, no BN, no augmentation": {"sgd": (83.20, 84.87), "adam": (83.16, 84.12), "kfac-f": (85.58, 89.60),
                                      "kfac-g": (83.85, 89.81)},
}


# ============================================================================ mechanism 2, saved across architectures
#: The saved architecture sweep (``scripts/make_architecture_table.py``) and its reduced CI version.
ARCHITECTURE_CONFIG = dict(widths=(16, 32, 64, 128), depths=(1, 2, 3), seeds=tuple(range(8)), steps=600,
                           checkpoints=(50, 150, 600))
ARCHITECTURE_REDUCED = dict(widths=(16, 64), depths=(1, 3), seeds=(0, 1, 2), steps=60, checkpoints=(20, 60))
ARCHITECTURE_PATH = TABLE_PATH.with_name("jacobian_architectures.json")
_ARCH_COLUMNS = ("step", "width", "depth", "seed", "jacobian_norm", "kfac_norm", "gn_norm", "weight_scale",
                 "test_accuracy", "diverged")


def architecture_table(config: Mapping, progress: Callable[[float], None] | None = None) -> dict:
    """:func:`architecture_experiment` run with ``config``, as a JSON-ready dict: ``config``, ``version``, and one
    list per column."""
    res = architecture_experiment(**config, progress=progress)
    cols = {k: [v.item() if hasattr(v, "item") else v for v in getattr(res, k)] for k in _ARCH_COLUMNS}
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, "version": versions(),
            **cols}


def architecture_result(table: Mapping) -> ArchitectureResult:
    """The :class:`ArchitectureResult` of a saved architecture table."""
    return ArchitectureResult(**{k: np.asarray(table[k]) for k in _ARCH_COLUMNS})
