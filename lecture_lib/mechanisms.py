r"""Three mechanisms of weight decay (Zhang, Wang, Xu & Grosse, ICLR 2019), at a scale a laptop can run.

Notation (the lecture's; the paper writes :math:`\eta` for the learning rate, :math:`\beta` for
the weight decay and :math:`\lambda` for the damping):

=====================  ===========  ========  ==================
quantity               lecture      paper     code
=====================  ===========  ========  ==================
learning rate          :math:`\alpha`   :math:`\eta`    ``lr``
weight decay           :math:`\lambda`  :math:`\beta`   ``weight_decay``
K-FAC damping          :math:`\gamma`   :math:`\lambda` ``damping``
=====================  ===========  ========  ==================

Weight decay means the *decoupled* update :math:`w \leftarrow (1-\alpha\lambda)w - \alpha C^{-1}\nabla J(w)`;
L2 regularization preconditions the penalty's gradient too,
:math:`w \leftarrow w - \alpha C^{-1}(\nabla J(w) + \lambda w)`. Both are the same chain with
:func:`~lecture_lib.optim.add_decayed_weights` on either side of the preconditioner, so this
module trains *both* (and no regularization) as one batched computation: run ``r`` gets an L2
coefficient ``l2[r]`` before the preconditioner and a decay ``wd[r]`` after it (:func:`regularized`).

1. **Effective learning rate** (SGD, Adam, BN networks): :func:`decay_schemes`, :func:`graft_norms_`,
   :func:`effective_lr_experiment`. A scale-invariant weight's direction moves with
   :math:`\alpha/\lVert w\rVert^2` (van Laarhoven 2017; Hoffer et al. 2018); decay keeps
   :math:`\lVert w\rVert` small and so the effective rate high.
2. **Jacobian regularization** (K-FAC-G, no BN): :func:`kfac_gn_norm`, :func:`jacobian_norm`,
   :func:`gn_norm`, :func:`jacobian_experiment`. For a deep linear network of K matrices with
   whitened inputs and output Hessian I, :math:`\sum_\ell \operatorname{vec}(W_\ell)^\top
   (A_{\ell-1}\otimes S_\ell)\operatorname{vec}(W_\ell) = K\lVert J_x\rVert_F^2` (paper Theorem 1).
3. **Effective damping** (K-FAC, BN networks): :func:`direction_update`, :func:`damping_experiment`.
   For a scale-invariant layer :math:`G(w) = G(\hat w)/\lVert w\rVert^2`, so the damped step on
   the direction is :math:`\Delta\hat w \approx -\alpha (G(\hat w) + \gamma\lVert w\rVert^2 I)^{-1}\nabla J(\hat w)`.

And the headline table (:func:`headline_table`): test accuracy of {SGD, Adam, K-FAC-F, K-FAC-G} ×
{none, L2, weight decay} on the scikit-learn digits with a BN MLP, several seeds as batched runs.

References: Zhang, Wang, Xu & Grosse (2019), *Three mechanisms of weight decay regularization*;
van Laarhoven (2017), *L2 regularization versus batch and weight normalization*; Hoffer, Banner,
Golan & Soudry (2018), *Norm matters*; Martens & Grosse (2015), *K-FAC*; Loshchilov & Hutter
(2019), *Decoupled weight decay regularization*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from ._validate import (check_choice, check_int, check_nonnegative, check_positive, check_range, check_seed,
                        check_sizes, check_unit_interval)
from .data import Dataset, digits
from .engine import train
from .models import MLP
from .optim.base import Transform, chain, check_runs
from .optim.kfac import (KFACState, _damped_solve, check_inputs, eigh_factor, estimate_factors, kfac_layers,
                         kfac_precondition)
from .optim.transforms import add_decayed_weights, scale_by_adam, scale_by_lr, trace
from .record import Record

OPTIMIZERS = ("sgd", "adam", "kfac-f", "kfac-g")
REGULARIZERS = ("none", "l2", "wd")
LABELS = {"sgd": "SGD", "adam": "Adam", "kfac-f": "K-FAC-F", "kfac-g": "K-FAC-G",
          "none": "no regularization", "l2": "L2", "wd": "weight decay"}


# ============================================================================ optimizers
def preconditioner(name: str, model: nn.Module, damping=1e-3, momentum: float = 0.9, **kfac_kwargs) -> Transform:
    r"""The :math:`C^{-1}` of each optimizer, as one transformation (no learning rate, no decay).

    ``'sgd'``: momentum :math:`v \leftarrow \rho v + g` (``momentum`` :math:`\rho`);
    ``'adam'``: :math:`\hat m/(\sqrt{\hat v}+\epsilon)`; ``'kfac-f'``: :math:`(A\otimes S_F + \gamma I)^{-1}`
    with :math:`S_F` from targets sampled from the model (Fisher); ``'kfac-g'``: the same with the
    Gauss-Newton matrix of the *logits*, output Hessian :math:`I` (the paper's K-FAC-G), whatever the
    training loss. ``damping`` :math:`\gamma`.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    check_nonnegative("damping", damping)
    check_unit_interval("momentum", momentum)
    if name == "sgd":
        return trace(momentum)
    if name == "adam":
        return scale_by_adam()
    kw = {"stat_interval": 10, "inv_interval": 50, **kfac_kwargs}
    if name == "kfac-f":
        return kfac_precondition(model, "cross_entropy", curvature="fisher", damping=damping, **kw)
    # K-FAC-G: Gauss-Newton with output Hessian I, i.e. the curvature of 1/2 ||f(x) - y||^2 in the logits
    return kfac_precondition(model, "mse", curvature="ggn", damping=damping, **kw)


def regularized(pre: Transform, lr, l2=0.0, wd=0.0, l2_mask=None, wd_mask=None) -> Transform:
    r"""``chain(L2, preconditioner, decoupled decay, lr)``: both kinds of regularization in one chain.

    :math:`w \leftarrow w - \alpha\,[C^{-1}(\nabla J + \lambda_{L2} w) + \lambda_{WD} w]`. With
    ``l2`` and ``wd`` tensors of shape ``(R,)`` each run picks its own kind: ``(0, 0)`` none,
    ``(λ, 0)`` L2, ``(0, λ)`` weight decay (Loshchilov & Hutter 2019; Zhang et al. 2019, eqs. 5-6).
    """
    check_nonnegative("l2", l2)      # checked here so that the messages name l2 / wd, not weight_decay
    check_nonnegative("wd", wd)
    t = chain(add_decayed_weights(l2, l2_mask), pre, add_decayed_weights(wd, wd_mask), scale_by_lr(lr))

    def init(params):
        check_runs(params, l2=l2, wd=wd)
        return t.init(params)

    return Transform(init, t.update, t.hparams)


def bn_mlp(width: int = 128, depth: int = 2, runs: int = 1, seed=0, dtype=torch.float32) -> MLP:
    """A batch-norm ReLU MLP for the 8x8 digits: ``[64, width × depth, 10]``; hidden weights scale invariant."""
    width, depth = check_int("width", width), check_int("depth", depth)
    return MLP([64] + [width] * depth + [10], norm="batch", activation="relu", runs=runs, seed=seed, dtype=dtype)


def relu_net(sizes: Sequence[int], runs: int = 1, seed=0, dtype=torch.float32, activation: str = "relu") -> MLP:
    r"""An MLP *without biases* and without normalization: :math:`f(x) = W_K\phi(\cdots\phi(W_1 x))`.

    With ReLU it is positively homogeneous, :math:`f(cx) = cf(x)` and :math:`f(x;c\theta) = c^K f(x;\theta)`,
    which gives the paper's Lemma 1: :math:`f(x) = J_x x` and :math:`J_\theta\theta = K f(x)`.
    """
    model = MLP(sizes, norm="none", activation=activation, runs=runs, seed=seed, dtype=dtype)
    for lin in model.linears:
        lin.bias = None          # unregisters the parameter: BatchedLinear then computes W a
    return model


def _mask_not(mask: Mapping[str, bool]) -> dict[str, bool]:
    return {k: not v for k, v in mask.items()}


# ============================================================================ mechanism 1
SCHEMES = ("none", "wd-bn", "wd-fc", "wd-all", "graft", "graft+wd-fc")
SCHEME_LABELS = {"none": "no decay", "wd-bn": "decay on BN layers", "wd-fc": "decay on top layer",
                 "wd-all": "decay everywhere", "graft": "norm graft (no decay)",
                 "graft+wd-fc": "norm graft + decay on top layer"}


def decay_schemes(schemes: Sequence[str], weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-run decays ``(λ on the normalized layers, λ on the others)`` for the paper's schemes.

    ``'none'``; ``'wd-bn'`` (the paper's wd-conv: decay only where batch norm makes it meaningless);
    ``'wd-fc'`` (only the top layer, where it constrains the function); ``'wd-all'``; ``'graft'`` and
    ``'graft+wd-fc'``: no decay on the normalized layers, whose norms :func:`graft_norms_` copies instead.
    """
    check_nonnegative("weight_decay", weight_decay)
    if isinstance(schemes, str) or not hasattr(schemes, "__iter__"):
        raise TypeError(f"schemes must be a sequence of decay schemes from {SCHEMES}, got {schemes!r}")
    schemes = list(schemes)
    if not schemes:
        raise ValueError(f"schemes must name at least one decay scheme from {SCHEMES}")
    for s in schemes:
        check_choice("scheme", s, SCHEMES)
    bn = torch.tensor([weight_decay if s in ("wd-bn", "wd-all") else 0.0 for s in schemes])
    fc = torch.tensor([weight_decay if s in ("wd-fc", "wd-all", "graft+wd-fc") else 0.0 for s in schemes])
    return bn, fc


@torch.no_grad()
def graft_norms_(model: nn.Module, receivers: Sequence[int], donors: Sequence[int],
                 mask: Mapping[str, bool] | None = None) -> None:
    r"""Norm grafting, in place: rescale run ``receivers[i]``'s tensors to the norms of run ``donors[i]``.

    :math:`w^{(r)} \leftarrow \lVert w^{(d)}\rVert\, w^{(r)}/\lVert w^{(r)}\rVert` for every tensor
    in ``mask`` (default ``model.scale_invariant``). On a scale-invariant tensor this changes no
    prediction, only the effective learning rate :math:`\alpha/\lVert w\rVert^2` of the next steps
    (Zhang et al. 2019, Sec. 4.1, "effective learning rate transfer").
    """
    runs = next(model.parameters()).shape[0]
    for name, runs_list in (("receivers", receivers), ("donors", donors)):
        if isinstance(runs_list, (str, bytes)) or not hasattr(runs_list, "__iter__"):
            raise TypeError(f"{name} must be a sequence of run indices, got {runs_list!r}")
    receivers = [check_int(f"receivers[{i}]", r, 0, runs - 1) for i, r in enumerate(receivers)]
    donors = [check_int(f"donors[{i}]", d, 0, runs - 1) for i, d in enumerate(donors)]
    if len(receivers) != len(donors):
        raise ValueError(f"receivers and donors must pair up, got {len(receivers)} and {len(donors)}")
    mask = dict(model.scale_invariant if mask is None else mask)
    r = torch.as_tensor(receivers, dtype=torch.long)
    d = torch.as_tensor(donors, dtype=torch.long)
    for name, p in model.named_parameters():
        if mask.get(name, False):
            norms = p.flatten(1).norm(dim=1)
            factor = (norms[d] / norms[r]).reshape(-1, *([1] * (p.dim() - 1)))
            p[r] = p[r] * factor


@dataclass
class EffectiveLrResult:
    """Mechanism 1: ``record`` of the schemes trained as one batched run, in the order of ``schemes``."""

    record: Record
    schemes: list[str]
    layers: list[str]                  # the scale-invariant weight tensors


def effective_lr_experiment(optimizer: str = "sgd", lr: float | None = None, weight_decay: float | None = None,
                            schemes: Sequence[str] = SCHEMES, steps: int = 1500, batch_size: int = 128,
                            width: int = 128, depth: int = 2, seed: int = 0, eval_every: int = 50,
                            record_every: int = 10, test_fraction: float = 0.5,
                            graft_from: str = "wd-all") -> EffectiveLrResult:
    r"""Train the decay schemes of :func:`decay_schemes` side by side on one BN MLP (same start, same batches).

    ``optimizer`` ``'sgd'`` (momentum 0.9, default :math:`\alpha = 0.05, \lambda = 0.02`) or ``'adam'``
    (defaults :math:`\alpha = 10^{-3}, \lambda = 1`); the decay is decoupled,
    :math:`w \leftarrow (1-\alpha\lambda)w - \alpha C^{-1}\nabla J`. After every step the ``'graft'`` runs
    get the normalized layers' norms of the ``graft_from`` run (:func:`graft_norms_`).
    """
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    lr = (0.05 if optimizer == "sgd" else 1e-3) if lr is None else lr
    weight_decay = (0.02 if optimizer == "sgd" else 1.0) if weight_decay is None else weight_decay
    check_positive("lr", lr)
    check_int("eval_every", eval_every)
    lam_bn, lam_fc = decay_schemes(schemes, weight_decay)     # checks schemes and weight_decay
    schemes = list(schemes)
    if any(s.startswith("graft") for s in schemes) and graft_from not in schemes:
        raise ValueError(f"graft_from={graft_from!r} must be one of the schemes trained: {schemes}")
    R = len(schemes)
    model = bn_mlp(width, depth, runs=R, seed=seed)
    mask = model.scale_invariant
    opt = chain(preconditioner(optimizer, model),
                add_decayed_weights(lam_bn, mask), add_decayed_weights(lam_fc, _mask_not(mask)),
                scale_by_lr(lr))
    receivers = [i for i, s in enumerate(schemes) if s.startswith("graft")]
    donors = [schemes.index(graft_from)] * len(receivers)

    def callback(step, m):
        if receivers:
            graft_norms_(m, receivers, donors, mask)

    data = digits(test_fraction=test_fraction, seed=0)
    rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=seed,
                record_every=record_every, eval_every=eval_every, callback=callback, diverge_above=1e4)
    return EffectiveLrResult(rec, schemes, [n for n, v in mask.items() if v])


def smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Moving average over the leading (step) axis, ``(K, ...)`` -> ``(K, ...)`` (shorter windows at the start)."""
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"values must be an array of numbers, got {type(values).__name__}") from None
    if v.ndim == 0 or v.shape[0] == 0:
        raise ValueError(f"values must have at least one row, got shape {v.shape}")
    window = check_int("window", window)
    c = np.cumsum(np.concatenate([np.zeros((1,) + v.shape[1:]), v]), axis=0)
    k = np.arange(1, len(v) + 1)
    lo = np.maximum(k - window, 0)
    n = (k - lo).reshape(-1, *([1] * (v.ndim - 1)))
    return (c[k] - c[lo]) / n


# ============================================================================ mechanism 2
def whitened_inputs(n: int, dim: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    r"""``n`` inputs with :math:`\tfrac1n\sum_b x_b x_b^\top = I` exactly (``n >= dim``): :math:`\sqrt n` times orthonormal columns."""
    n, dim = check_int("n", n), check_int("dim", dim)
    if n < dim:
        raise ValueError(f"n must be at least dim to whiten exactly, got n={n}, dim={dim}")
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    q, _ = torch.linalg.qr(torch.randn(n, dim, generator=g, dtype=torch.float64))
    return (q * math.sqrt(n)).to(dtype)


def _runs_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    runs = next(model.parameters()).shape[0]
    return x.unsqueeze(0).expand(runs, *x.shape) if x.dim() == 2 else x


def input_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""Per-example input-output Jacobians :math:`J_x = \partial f(x)/\partial x`, shape ``(R, B, K, D)``.

    One backward pass per output: runs and examples do not interact (no batch norm in training mode).
    """
    check_inputs(x)
    x = _runs_input(model, x).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        rows = [torch.autograd.grad(out[..., k].sum(), x, retain_graph=k < out.shape[-1] - 1)[0]
                for k in range(out.shape[-1])]
    return torch.stack(rows, dim=2)


def jacobian_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbb E_x \lVert J_x\rVert_F^2`, the mean squared Frobenius norm of the input-output Jacobian, ``(R,)``."""
    was = model.training
    model.eval()
    try:
        return input_jacobian(model, x).square().sum((-1, -2)).mean(1).detach()
    finally:
        model.train(was)


def kfac_gn_norm(model: nn.Module, x: torch.Tensor, factors=None) -> torch.Tensor:
    r"""The K-FAC Gauss-Newton norm :math:`\sum_\ell \operatorname{vec}(\bar W_\ell)^\top (A_{\ell-1}\otimes S_\ell)\operatorname{vec}(\bar W_\ell)`, ``(R,)``.

    Each term is :math:`\operatorname{tr}(S_\ell \bar W_\ell A_{\ell-1} \bar W_\ell^\top)`, with the factors
    estimated on ``x`` for the logits' Gauss-Newton matrix (output Hessian :math:`I`) by
    :func:`~lecture_lib.optim.kfac.estimate_factors`; :math:`\bar W = [W\; b]` when the layer has a bias.
    """
    check_inputs(x)
    if factors is None:
        factors = estimate_factors(model, None, x, None, "mse", curvature="ggn")
    total = 0.0
    for name, layer in kfac_layers(model).items():
        A, S = factors[name]
        W = layer.weight.detach()
        if layer.bias is not None:
            W = torch.cat([W, layer.bias.detach().unsqueeze(-1)], -1)
        total = total + torch.einsum("rij,rjk,rlk,ril->r", S.to(W), W, A.to(W), W)
    return total


def gn_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""The exact Gauss-Newton norm :math:`\theta^\top G\theta = \mathbb E_x\lVert J_\theta\theta\rVert^2` (output Hessian I), ``(R,)``.

    :math:`J_\theta\theta` is the derivative of :math:`f(x; (1+t)\theta)` at :math:`t = 0`, one
    forward-mode pass (:func:`torch.func.jvp`). For a bias-free ReLU network of K layers it is
    :math:`K f(x)` (Lemma 1), so :math:`\theta^\top G\theta = K^2\,\mathbb E\lVert f(x)\rVert^2`.
    """
    check_inputs(x)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p):
        return torch.func.functional_call(model, {**p, **buffers}, (x,))

    _, dout = torch.func.jvp(f, (params,), (params,))
    return dout.square().sum(-1).mean(-1)


def linear_identity(sizes: Sequence[int] = (6, 5, 4, 3), n: int = 64, seed: int = 0) -> dict[str, float]:
    r"""Both sides of Theorem 1 for a deep linear network in float64: ``{'kfac_norm', 'k_jacobian', 'gn_norm', 'k2_jacobian'}``.

    ``kfac_norm`` :math:`=\sum_\ell \operatorname{vec}(W_\ell)^\top(A_{\ell-1}\otimes S_\ell)\operatorname{vec}(W_\ell)`
    and ``k_jacobian`` :math:`= K\lVert J_x\rVert_F^2` agree exactly for whitened inputs; so do the exact
    Gauss-Newton norm and :math:`K^2\lVert J_x\rVert_F^2`.
    """
    from .models import DeepLinear

    sizes = check_sizes("sizes", sizes)
    model = DeepLinear(sizes, seed=seed, dtype=torch.float64)
    x = whitened_inputs(n, sizes[0], seed=seed)
    K = len(sizes) - 1
    J = model.linears[0].weight[0].detach()
    for lin in model.linears[1:]:
        J = lin.weight[0].detach() @ J
    jf = float(J.square().sum())
    return {"kfac_norm": float(kfac_gn_norm(model, x)[0]), "k_jacobian": K * jf,
            "gn_norm": float(gn_norm(model, x)[0]), "k2_jacobian": K * K * jf, "K": K, "jacobian_sq": jf}


@dataclass
class JacobianResult:
    """Mechanism 2: one row per trained network (``optimizer``, ``weight_decay``, ``seed``) and its measures."""

    optimizer: np.ndarray          # (N,) 'sgd' | 'kfac-g'
    weight_decay: np.ndarray       # (N,)
    seed: np.ndarray               # (N,)
    jacobian_norm: np.ndarray      # (N,) E ||J_x||_F^2 on the test inputs
    kfac_norm: np.ndarray          # (N,) K-FAC Gauss-Newton norm on the training inputs
    test_accuracy: np.ndarray      # (N,)
    train_loss: np.ndarray         # (N,)
    diverged: np.ndarray           # (N,) bool

    def correlation(self) -> float:
        """Pearson correlation of log K-FAC norm and log Jacobian norm over the finite rows."""
        ok = ~self.diverged & np.isfinite(self.jacobian_norm) & np.isfinite(self.kfac_norm)
        if ok.sum() < 3:
            return float("nan")
        return float(np.corrcoef(np.log(self.jacobian_norm[ok]), np.log(self.kfac_norm[ok]))[0, 1])

    def ratio(self, optimizer: str, weight_decay: float) -> float:
        """Mean Jacobian norm without decay / with ``weight_decay``, for one optimizer (finite rows)."""
        rows = (self.optimizer == optimizer) & ~self.diverged
        base = self.jacobian_norm[rows & (self.weight_decay == 0)].mean()
        dec = self.jacobian_norm[rows & np.isclose(self.weight_decay, weight_decay)].mean()
        return float(base / dec)


def _sequence(name: str, values, check) -> list:
    """A non-empty sequence, each entry checked as ``name[i]``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return [check(f"{name}[{i}]", v) for i, v in enumerate(values)]


def jacobian_experiment(steps: int = 800, width: int = 64, depth: int = 2, seeds: Sequence[int] = (0, 1),
                        batch_size: int = 128, damping: float = 1e-2, lr_sgd: float = 0.05,
                        lr_kfac: float = 0.01, weight_decays: Sequence[float] = (0.0, 3e-3, 1e-2, 3e-2, 1e-1),
                        test_fraction: float = 0.5,
                        progress: Callable[[float], None] | None = None) -> JacobianResult:
    r"""Train bias-free ReLU networks (no BN) with SGD and K-FAC-G, each over a grid of decoupled decays.

    Every (decay, seed) pair of one optimizer is a run of one batched computation. For each trained
    network: :math:`\mathbb E\lVert J_x\rVert_F^2` on the test inputs and the K-FAC Gauss-Newton norm on
    the training inputs (:func:`kfac_gn_norm`). SGD uses momentum 0.9; K-FAC-G the logits' Gauss-Newton
    matrix with damping ``damping`` :math:`\gamma`.
    """
    check_int("steps", steps)
    check_positive("lr_sgd", lr_sgd)
    check_positive("lr_kfac", lr_kfac)
    check_nonnegative("damping", damping)
    seeds = _sequence("seeds", seeds, lambda name, s: check_seed(name, s))
    wds = _sequence("weight_decays", weight_decays, lambda name, w: float(check_nonnegative(name, w)))
    data = digits(test_fraction=test_fraction, seed=0)
    sizes = [64] + [check_int("width", width)] * check_int("depth", depth) + [10]
    cols = {k: [] for k in ("optimizer", "weight_decay", "seed", "jacobian_norm", "kfac_norm", "test_accuracy",
                            "train_loss", "diverged")}
    for i, (name, lr) in enumerate((("sgd", lr_sgd), ("kfac-g", lr_kfac))):
        runs = [(w, s) for w in wds for s in seeds]
        model = relu_net(sizes, runs=len(runs), seed=[1000 + s for _, s in runs])
        wd = torch.tensor([w for w, _ in runs])
        opt = regularized(preconditioner(name, model, damping=damping), lr, wd=wd)
        rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=[s for _, s in runs],
                    record_every=max(steps // 20, 1), eval_every=steps, diverge_above=1e3)
        model.eval()
        with torch.no_grad():
            kn = kfac_gn_norm(model, data.x_train)
        jn = jacobian_norm(model, data.x_test)
        cols["optimizer"] += [name] * len(runs)
        cols["weight_decay"] += [w for w, _ in runs]
        cols["seed"] += [s for _, s in runs]
        cols["jacobian_norm"] += jn.tolist()
        cols["kfac_norm"] += kn.tolist()
        cols["test_accuracy"] += rec.test_accuracy[-1].tolist()
        cols["train_loss"] += rec.loss[-1].tolist()
        cols["diverged"] += (rec.diverged_at >= 0).tolist()
        if progress is not None:
            progress((i + 1) / 2)
    return JacobianResult(**{k: np.asarray(v) for k, v in cols.items()})


# ============================================================================ mechanism 3
def find_kfac_state(state) -> KFACState | None:
    """The first :class:`~lecture_lib.optim.kfac.KFACState` inside a (nested) chain state, or ``None``."""
    if isinstance(state, KFACState):
        return state
    if isinstance(state, tuple):
        for s in state:
            found = find_kfac_state(s)
            if found is not None:
                return found
    return None


def direction_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, damping: float,
                     scale: float = 1.0, curvature: str = "ggn", loss: str = "cross_entropy") -> torch.Tensor:
    r"""The K-FAC step on the *direction* :math:`\hat w` of a scale-invariant layer, after scaling its weights by ``scale``.

    Computes :math:`\Delta w = -(A\otimes S + \gamma I)^{-1}\nabla_w J` at :math:`c\,w` (``scale`` :math:`c`) on
    the batch ``(x, y)`` and returns the tangential part of :math:`\Delta w/\lVert w\rVert`,
    :math:`(I - \hat w\hat w^\top)\Delta w/\lVert w\rVert`, shape ``(R, out, in)``. Since
    :math:`S(cw) = S(w)/c^2` and :math:`\nabla J(cw) = \nabla J(w)/c`, the result at :math:`(c, \gamma)`
    equals the result at :math:`(1, c^2\gamma)`: the effective damping is :math:`\gamma\lVert w\rVert^2`
    (Zhang et al. 2019, eq. 14). ``model`` is not modified.
    """
    check_nonnegative("damping", damping)
    check_positive("scale", scale)
    check_choice("curvature", curvature, ("fisher", "empirical", "ggn"))
    from .losses import LOSSES

    check_choice("loss", loss, LOSSES)
    check_inputs(x, y)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    w_name = f"{layer}.weight"
    if w_name not in params or not model.scale_invariant.get(w_name, False):
        raise ValueError(f"layer must name a scale-invariant linear layer, e.g. 'linears.0'; got {layer!r}")
    params[w_name] = params[w_name] * scale
    state = {**params, **{k: b.clone() for k, b in model.named_buffers()}}
    factors = estimate_factors(model, state, x, y, loss, curvature=curvature)
    A, S = factors[layer]
    with torch.enable_grad():
        p = {k: v.requires_grad_(k == w_name) for k, v in state.items()}
        from .losses import LOSSES

        out = torch.func.functional_call(model, p, (x,))
        g = torch.autograd.grad(LOSSES[loss](out, y).sum(), p[w_name])[0]
    QA, dA = eigh_factor(A)
    QS, dS = eigh_factor(S)
    step = -_damped_solve(QA, dA, QS, dS, g, damping)
    w = params[w_name]
    norm = w.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    w_hat = w / norm
    tangential = step - (step * w_hat).sum((1, 2), keepdim=True) * w_hat
    return tangential / norm


def _relative_damping(model, damping, layers):
    """Track fn: γ over the mean eigenvalue of A⊗S, per K-FAC layer ``(R, L)``; and the cosine of step and gradient."""

    def fn(_model, params, grads, opt_state):
        st = find_kfac_state(opt_state)
        rel, cos = [], []
        for name in layers:
            A, S = st.A[name], st.S[name]
            mean_eig = (A.diagonal(dim1=-2, dim2=-1).mean(-1) * S.diagonal(dim1=-2, dim2=-1).mean(-1))
            rel.append(damping / mean_eig.clamp_min(1e-30))
            QA, dA = eigh_factor(A)
            QS, dS = eigh_factor(S)
            g = grads[f"{name}.weight"]
            step = _damped_solve(QA, dA, QS, dS, g, damping)   # a diverged run's NaN must not stop training
            cos.append(torch.nn.functional.cosine_similarity(step.flatten(1), g.flatten(1), dim=1))
        return torch.stack([torch.stack(rel, -1), torch.stack(cos, -1)], -1)   # (R, L, 2)

    return fn


def _curvature_traces(probe: torch.Tensor, layer: str):
    r"""Track fn: :math:`\operatorname{tr}` of the layer's K-FAC Fisher and Gauss-Newton blocks for :math:`\hat w`, ``(R, 2)``.

    :math:`\operatorname{tr}(A\otimes S) = \operatorname{tr}A\,\operatorname{tr}S`, times :math:`\lVert w\rVert^2`
    (curvature in the direction's coordinates). Fisher: output Hessian :math:`\mathrm{diag}(p) - pp^\top`
    (its exact expectation over the model's labels); Gauss-Newton: output Hessian :math:`I`.
    """

    def fn(model, params, grads, opt_state):
        sq = params[f"{layer}.weight"].flatten(1).square().sum(1)
        out = []
        for loss in ("cross_entropy", "mse"):
            A, S = estimate_factors(model, params, probe, None, loss, curvature="ggn")[layer]
            out.append(sq * A.diagonal(dim1=-2, dim2=-1).sum(-1) * S.diagonal(dim1=-2, dim2=-1).sum(-1))
        return torch.stack(out, -1)

    return fn


@dataclass
class DampingResult:
    """Mechanism 3: a K-FAC run without and with weight decay (and on the BN layers only)."""

    record: Record
    schemes: list[str]
    layers: list[str]
    relative_damping: np.ndarray   # (K, R, L) γ / mean eigenvalue of A ⊗ S
    cosine: np.ndarray             # (K, R, L) cos(K-FAC step, gradient): → 1 when first order
    fisher_trace: np.ndarray       # (K, R) tr F(ŵ) of the first layer (K-FAC blocks)
    gn_trace: np.ndarray           # (K, R) tr G(ŵ)


def damping_experiment(curvature: str = "kfac-f", damping: float = 1e-3, weight_decay: float = 0.01,
                       lr: float = 0.02, steps: int = 1000, batch_size: int = 128, width: int = 128,
                       depth: int = 2, seed: int = 0, record_every: int = 25, eval_every: int = 50,
                       schemes: Sequence[str] = ("none", "wd-bn", "wd-all"), test_fraction: float = 0.5,
                       probe_size: int = 256) -> DampingResult:
    r"""K-FAC (``'kfac-f'`` or ``'kfac-g'``) on a BN MLP with the decay schemes of :func:`decay_schemes`.

    Tracks per hidden (normalized) layer the relative damping :math:`\gamma/\bar\lambda(A\otimes S)`
    (:math:`\propto \gamma\lVert w\rVert^2` against the direction's curvature), the cosine between the
    K-FAC step and the gradient, and the first layer's Fisher and Gauss-Newton traces for :math:`\hat w`.
    Decay is decoupled: :math:`w \leftarrow (1-\alpha\lambda)w - \alpha(\hat G + \gamma I)^{-1}\nabla J`.
    """
    check_choice("curvature", curvature, ("kfac-f", "kfac-g"))
    check_positive("damping", damping)
    check_positive("lr", lr)
    check_int("eval_every", eval_every)
    lam_bn, lam_fc = decay_schemes(schemes, weight_decay)
    schemes = list(schemes)
    probe_size = check_int("probe_size", probe_size, low=2)
    model = bn_mlp(width, depth, runs=len(schemes), seed=seed)
    mask = model.scale_invariant
    opt = chain(preconditioner(curvature, model, damping=damping),
                add_decayed_weights(lam_bn, mask), add_decayed_weights(lam_fc, _mask_not(mask)), scale_by_lr(lr))
    layers = [n.rsplit(".", 1)[0] for n, v in mask.items() if v]
    data = digits(test_fraction=test_fraction, seed=0)
    probe = data.x_train[:probe_size]
    rec = train(model, data, "cross_entropy", opt, steps, batch_size=batch_size, seed=seed,
                record_every=record_every, eval_every=eval_every, diverge_above=1e4,
                track={"damping": _relative_damping(model, damping, layers),
                       "traces": _curvature_traces(probe, layers[0])})
    d = rec.extras["damping"]
    t = rec.extras["traces"]
    return DampingResult(rec, schemes, layers, d[..., 0], d[..., 1], t[..., 0], t[..., 1])


# ============================================================================ the headline table
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
    momentum: float = 0.9
    lr: dict = field(default_factory=lambda: {"sgd": 0.05, "adam": 1e-3, "kfac-f": 0.01, "kfac-g": 0.01})
    damping: dict = field(default_factory=lambda: {"kfac-f": 1e-2, "kfac-g": 1e-3})
    # chosen by tune() (scripts/make_headline_table.py --tune): best mean validation accuracy over 4 seeds
    l2: dict = field(default_factory=lambda: {"sgd": 1e-2, "adam": 3e-3, "kfac-f": 3e-2, "kfac-g": 3e-2})
    wd: dict = field(default_factory=lambda: {"sgd": 3e-2, "adam": 3e-2, "kfac-f": 3e-2, "kfac-g": 1e-1})

    def __post_init__(self):
        for name in ("optimizers", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not list(value):
                raise ValueError(f"{name} must be a non-empty sequence, got {value!r}")
        for name in self.optimizers:
            check_choice("optimizers", name, OPTIMIZERS)
        for i, s in enumerate(self.seeds):
            check_seed(f"seeds[{i}]", s)
        for name in ("width", "depth", "steps", "batch_size"):
            check_int(name, getattr(self, name))
        check_seed("split_seed", self.split_seed)
        check_range("test_fraction", self.test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_unit_interval("momentum", self.momentum)
        for table, check, needed in (("lr", check_positive, self.optimizers), ("l2", check_nonnegative, self.optimizers),
                                     ("wd", check_nonnegative, self.optimizers),
                                     ("damping", check_nonnegative, [o for o in self.optimizers if o.startswith("kfac")])):
            values = getattr(self, table)
            if not isinstance(values, Mapping):
                raise TypeError(f"{table} must be a dict {{optimizer: value}}, got {values!r}")
            for name in needed:
                if name not in values:
                    raise ValueError(f"{table} has no value for optimizer {name!r}: {dict(values)}")
                check(f"{table}[{name!r}]", values[name])

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
    import dataclasses

    return dataclasses.replace(config or TableConfig(), **REDUCED)


def validation_split(data: Dataset, fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Hold out ``fraction`` of the *training* set as the evaluation split (the test set is never looked at)."""
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    n = data.n_train
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(check_seed("seed", seed)))
    nv = max(int(round(n * fraction)), 1)
    va, tr = perm[:nv], perm[nv:]
    return Dataset(data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va], data.task,
                   f"{data.name}, validation split", dict(data.meta))


def train_family(name: str, config: TableConfig, data: Dataset, l2: Sequence[float], wd: Sequence[float],
                 seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    r"""Train one optimizer's runs ``(l2[r], wd[r], seeds[r])`` as one batched computation on ``data``.

    Returns the final accuracy on ``data``'s test split and the final training loss, ``(R,)`` each
    (NaN for a run that diverged).
    """
    check_choice("optimizer", name, OPTIMIZERS)
    seeds = _sequence("seeds", seeds, lambda n, s: check_seed(n, s))
    l2 = _sequence("l2", l2, lambda n, v: float(check_nonnegative(n, v)))
    wd = _sequence("wd", wd, lambda n, v: float(check_nonnegative(n, v)))
    if not len(l2) == len(wd) == len(seeds):
        raise ValueError(f"l2, wd and seeds must have one entry per run, got lengths {len(l2)}, {len(wd)}, "
                         f"{len(seeds)}")
    model = bn_mlp(config.width, config.depth, runs=len(seeds), seed=[int(s) for s in seeds])
    pre = preconditioner(name, model, damping=config.damping.get(name, 1e-3), momentum=config.momentum)
    opt = regularized(pre, config.lr[name], l2=torch.tensor(list(l2), dtype=torch.float32),
                      wd=torch.tensor(list(wd), dtype=torch.float32))
    rec = train(model, data, "cross_entropy", opt, config.steps, batch_size=config.batch_size,
                seed=[int(s) for s in seeds], record_every=max(config.steps // 10, 1), eval_every=config.steps,
                diverge_above=1e4)
    return rec.test_accuracy[-1], rec.loss[-1]


def headline_table(config: TableConfig | None = None, progress: Callable[[float], None] | None = None) -> dict:
    r"""Test accuracy of every optimizer × {none, L2, weight decay} × seed, each optimizer one batched run.

    Returns a JSON-ready dict: ``config``, ``version`` (lecture_lib and torch), ``accuracy[opt][reg]``
    (one value per seed, in %), ``mean`` and ``std`` (population std over seeds, in %), ``train_loss``.
    """
    config = config or TableConfig()
    data = digits(test_fraction=config.test_fraction, seed=config.split_seed)
    out = {"config": config.to_dict(), "version": versions(), "accuracy": {}, "mean": {}, "std": {},
           "train_loss": {}}
    for i, name in enumerate(config.optimizers):
        check_choice("optimizer", name, OPTIMIZERS)
        cells = [(reg, s) for reg in REGULARIZERS for s in config.seeds]
        l2 = [config.l2[name] if reg == "l2" else 0.0 for reg, _ in cells]
        wd = [config.wd[name] if reg == "wd" else 0.0 for reg, _ in cells]
        acc, loss = train_family(name, config, data, l2, wd, [s for _, s in cells])
        n = len(config.seeds)
        out["accuracy"][name], out["mean"][name], out["std"][name], out["train_loss"][name] = {}, {}, {}, {}
        for j, reg in enumerate(REGULARIZERS):
            a = 100.0 * np.asarray(acc[j * n:(j + 1) * n], dtype=float)
            out["accuracy"][name][reg] = [round(float(v), 4) for v in a]
            out["mean"][name][reg] = round(float(np.mean(a)), 4)
            out["std"][name][reg] = round(float(np.std(a)), 4)
            out["train_loss"][name][reg] = [float(f"{v:.6g}") for v in loss[j * n:(j + 1) * n]]
        if progress is not None:
            progress((i + 1) / len(config.optimizers))
    return out


def tune(config: TableConfig | None = None, l2_grid: Mapping[str, Sequence[float]] | None = None,
         wd_grid: Mapping[str, Sequence[float]] | None = None, seeds: Sequence[int] = (0, 1, 2, 3),
         fraction: float = 0.25) -> dict:
    r"""Choose each optimizer's L2 and weight-decay :math:`\lambda` on a validation split of the training set.

    Every grid value × seed is a run of one batched computation per optimizer; the best mean validation
    accuracy wins (ties: the smaller :math:`\lambda`). Returns ``{'l2': {...}, 'wd': {...}, 'scores': ...}``.
    """
    config = config or TableConfig()
    l2_grid = l2_grid or {k: (3e-4, 1e-3, 3e-3, 1e-2, 3e-2) for k in OPTIMIZERS}
    wd_grid = wd_grid or {"sgd": (1e-2, 3e-2, 1e-1, 3e-1, 1.0), "adam": (0.03, 0.1, 0.3, 1.0, 3.0),
                          "kfac-f": (1e-2, 3e-2, 1e-1, 3e-1, 1.0), "kfac-g": (1e-2, 3e-2, 1e-1, 3e-1, 1.0)}
    data = validation_split(digits(test_fraction=config.test_fraction, seed=config.split_seed), fraction)
    chosen = {"l2": {}, "wd": {}, "scores": {}}
    for name in config.optimizers:
        cells = ([("none", 0.0)] + [("l2", v) for v in l2_grid[name]] + [("wd", v) for v in wd_grid[name]])
        runs = [(reg, v, s) for reg, v in cells for s in seeds]
        acc, _ = train_family(name, config, data, [v if r == "l2" else 0.0 for r, v, _ in runs],
                              [v if r == "wd" else 0.0 for r, v, _ in runs], [s for *_, s in runs])
        acc = np.nan_to_num(np.asarray(acc, dtype=float).reshape(len(cells), len(seeds)), nan=0.0).mean(1)
        chosen["scores"][name] = [[reg, v, round(100 * float(a), 3)] for (reg, v), a in zip(cells, acc)]
        for reg in ("l2", "wd"):
            best = max((a, -v, v) for (r, v), a in zip(cells, acc) if r == reg)
            chosen[reg][name] = best[2]
    return chosen


def format_table(table: Mapping) -> str:
    """Plain-text rendering of a headline table: one row per optimizer, mean ± std (%) per regularizer."""
    head = f"{'optimizer':10s}" + "".join(f"{LABELS[r]:>22s}" for r in REGULARIZERS)
    lines = [head]
    for name in table["mean"]:
        cells = "".join(f"{table['mean'][name][r]:>14.2f} ± {table['std'][name][r]:5.2f}" for r in REGULARIZERS)
        lines.append(f"{LABELS[name]:10s}{cells}")
    return "\n".join(lines)


def versions() -> dict:
    return {"lecture_lib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


TABLE_PATH = Path(__file__).resolve().parent / "data_files" / "headline_table.json"


def save_table(table: dict, path: str | Path = TABLE_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def load_table(path: str | Path = TABLE_PATH) -> dict:
    """The saved headline table (see ``scripts/make_headline_table.py``)."""
    return json.loads(Path(path).read_text())


# The paper's numbers (Zhang et al. 2019, Table 1, CIFAR-10): baseline -> weight decay, in %.
# Its L2 column appears only in Figure 1 (not in a table), so it is not quoted here.
PAPER_TABLE = {
    "ResNet32, BN + augmentation": {"sgd": (92.95, 95.14), "adam": (93.63, 94.66), "kfac-f": (93.80, 95.35),
                                    "kfac-g": (93.44, 95.04)},
    "VGG16, BN + augmentation": {"sgd": (91.71, 93.39), "adam": (92.89, 93.62), "kfac-f": (93.12, 93.90),
                                 "kfac-g": (93.19, 93.80)},
    "VGG16, no BN": {"sgd": (83.20, 84.87), "adam": (83.16, 84.12), "kfac-f": (85.58, 89.60),
                     "kfac-g": (83.85, 89.81)},
}
# Table 2: squared Frobenius norm of the input-output Jacobian, without -> with weight decay.
PAPER_JACOBIAN = {"VGG16": {"sgd": (564, 142), "kfac-g": (498, 51.44)},
                  "ResNet32": {"sgd": (2765, 1074), "kfac-g": (2115, 64.16)}}
