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
:func:`~lecture_lib.optim.add_decayed_weights` on either side of the preconditioner, so one
batched computation trains *both* (and no regularization): run ``r`` gets an L2 coefficient
``l2[r]`` before the preconditioner and a decay ``wd[r]`` after it (:func:`regularized`).

1. **Effective learning rate** (SGD, Adam, BN networks): :func:`decay_schemes`, :func:`graft_norms_`.
   A scale-invariant weight's direction moves with :math:`\alpha/\lVert w\rVert^2` (van Laarhoven 2017;
   Hoffer et al. 2018); decay keeps :math:`\lVert w\rVert` small and so the effective rate high.
2. **Jacobian regularization** (K-FAC-G, no BN): :func:`kfac_gn_norm`, :func:`jacobian_norm`,
   :func:`gn_norm`, :func:`linear_identity`. For a deep linear network of K matrices with
   whitened inputs and output Hessian I, :math:`\sum_\ell \operatorname{vec}(W_\ell)^\top
   (A_{\ell-1}\otimes S_\ell)\operatorname{vec}(W_\ell) = K\lVert J_x\rVert_F^2` (paper Theorem 1).
3. **Effective damping** (K-FAC, BN networks): :func:`direction_update`, :func:`direction_cosine`.
   For a scale-invariant layer :math:`G(w) = G(\hat w)/\lVert w\rVert^2`, so the damped step on
   the direction is :math:`\Delta\hat w \approx -\alpha (G(\hat w) + \gamma\lVert w\rVert^2 I)^{-1}\nabla J(\hat w)`.

The experiments that train networks to show each mechanism, and the headline table (SGD, Adam,
K-FAC-F, K-FAC-G × {none, L2, weight decay} on the digits), live in
:mod:`lecture_lib.experiments.mechanisms`; their comparisons carry the paired-seed intervals of
:func:`paired_interval`. K-FAC enters through :func:`_kfac_preconditioner` and the
factor estimates of :func:`kfac_gn_norm` and :func:`direction_update` only.

References: Zhang, Wang, Xu & Grosse (2019), *Three mechanisms of weight decay regularization*;
van Laarhoven (2017), *L2 regularization versus batch and weight normalization*; Hoffer, Banner,
Golan & Soudry (2018), *Norm matters*; Martens & Grosse (2015), *K-FAC*; Loshchilov & Hutter
(2019), *Decoupled weight decay regularization*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

import torch
from torch import nn

from ._validate import (Array, Choice, Inputs, Instance, Int, NonNegative, Positive, Seed, Sizes, Spec, Tensor, Unit, Where,
                        accepts, one_of, one_target_per_example, run_of, sequence_of)
from .losses import LOSSES
from .models import ACTIVATIONS, MLP, DeepLinear
from .optim.base import Transform, chain, check_runs
from .kfac_statistics import CURVATURES, estimate_factors, kfac_layers
from .optim import eigh_factor, kfac_precondition, kron_damped_solve
from .optim.transforms import LR, add_decayed_weights, scale_by_adam, scale_by_lr, trace

OPTIMIZERS = ("sgd", "adam", "kfac-f", "kfac-g")
REGULARIZERS = ("none", "l2", "wd")
LABELS = {"sgd": "SGD", "adam": "Adam", "kfac-f": "K-FAC-F", "kfac-g": "K-FAC-G",
          "none": "no regularization", "l2": "L2", "wd": "weight decay"}


# ============================================================================ declarations
BATCH = Inputs()
SEEDS = sequence_of(Seed(), bad=((), (-1,), (0.5,), "a"))
RUN_INDICES = sequence_of(Int(0), bad=([-4], [0.5], "a", ["a"]))


# ============================================================================ optimizers
@accepts(name=Choice(OPTIMIZERS), damping=NonNegative(), momentum=Unit())
def preconditioner(name: str, model: nn.Module, damping=1e-3, momentum: float = 0.9, **kfac_kwargs) -> Transform:
    r"""The :math:`C^{-1}` of each optimizer, as one transformation (no learning rate, no decay).

    ``'sgd'``: momentum :math:`v \leftarrow \rho v + g` (``momentum`` :math:`\rho`);
    ``'adam'``: :math:`\hat m/(\sqrt{\hat v}+\epsilon)`; ``'kfac-f'``: :math:`(A\otimes S_F + \gamma I)^{-1}`
    with :math:`S_F` from targets sampled from the model (Fisher); ``'kfac-g'``: the same with the
    Gauss-Newton matrix of the *logits*, output Hessian :math:`I` (the paper's K-FAC-G), whatever the
    training loss. ``damping`` :math:`\gamma`.
    """
    if name == "sgd":
        return trace(momentum)
    if name == "adam":
        return scale_by_adam()
    return _kfac_preconditioner(name, model, damping, **kfac_kwargs)


def _kfac_preconditioner(name: str, model: nn.Module, damping, **kfac_kwargs) -> Transform:
    """K-FAC-F or K-FAC-G as a preconditioner: the one place this module builds a K-FAC transformation."""
    kw = {"stat_interval": 10, "inv_interval": 50, **kfac_kwargs}
    if name == "kfac-f":
        return kfac_precondition(model, "cross_entropy", curvature="fisher", damping=damping, **kw)
    # K-FAC-G: Gauss-Newton with output Hessian I, i.e. the curvature of 1/2 ||f(x) - y||^2 in the logits
    return kfac_precondition(model, "mse", curvature="ggn", damping=damping, **kw)


@accepts(pre=Instance(Transform), lr=LR, l2=NonNegative(per_run=True), wd=NonNegative(per_run=True))
def regularized(pre: Transform, lr, l2=0.0, wd=0.0, l2_mask=None, wd_mask=None) -> Transform:
    r"""``chain(L2, preconditioner, decoupled decay, lr)``: both kinds of regularization in one chain.

    :math:`w \leftarrow w - \alpha\,[C^{-1}(\nabla J + \lambda_{L2} w) + \lambda_{WD} w]`. With
    ``l2`` and ``wd`` tensors of shape ``(R,)`` each run picks its own kind: ``(0, 0)`` none,
    ``(λ, 0)`` L2, ``(0, λ)`` weight decay (Loshchilov & Hutter 2019; Zhang et al. 2019, eqs. 5-6).
    """
    t = chain(add_decayed_weights(l2, l2_mask), pre, add_decayed_weights(wd, wd_mask), scale_by_lr(lr))

    def init(params):
        check_runs(params, l2=l2, wd=wd)     # so that a wrong run count names l2 / wd, not weight_decay
        return t.init(params)

    return Transform(init, t.update, t.hparams)


@accepts(width=Int(1), depth=Int(1), runs=Int(1), seed=Seed(runs="runs"))
def bn_mlp(width: int = 128, depth: int = 2, runs: int = 1, seed=0, dtype=torch.float32) -> MLP:
    """A batch-norm ReLU MLP for the 8x8 digits: ``[64, width × depth, 10]``; hidden weights scale invariant."""
    return MLP([64] + [width] * depth + [10], norm="batch", activation="relu", runs=runs, seed=seed, dtype=dtype)


@accepts(sizes=Sizes(), runs=Int(1), seed=Seed(runs="runs"), activation=Choice(ACTIVATIONS))
def relu_net(sizes: Sequence[int], runs: int = 1, seed=0, dtype=torch.float32, activation: str = "relu") -> MLP:
    r"""An MLP *without biases* and without normalization: :math:`f(x) = W_K\phi(\cdots\phi(W_1 x))`.

    With ReLU it is positively homogeneous, :math:`f(cx) = cf(x)` and :math:`f(x;c\theta) = c^K f(x;\theta)`,
    which gives the paper's Lemma 1: :math:`f(x) = J_x x` and :math:`J_\theta\theta = K f(x)`.
    """
    model = MLP(sizes, norm="none", activation=activation, runs=runs, seed=seed, dtype=dtype)
    for lin in model.linears:
        lin.bias = None          # unregisters the parameter: BatchedLinear then computes W a
    return model


# ============================================================================ mechanism 1
SCHEMES = ("none", "wd-bn", "wd-fc", "wd-all", "graft", "graft+wd-fc")
SCHEME_LABELS = {"none": "no decay", "wd-bn": "decay on BN layers", "wd-fc": "decay on top layer",
                 "wd-all": "decay everywhere", "graft": "norm graft (no decay)",
                 "graft+wd-fc": "norm graft + decay on top layer"}
SCHEME_LIST = sequence_of(Choice(SCHEMES), bad=((), ("nope",), ("wd-conv",), "none", (None,)))


@accepts(schemes=SCHEME_LIST, weight_decay=NonNegative())
def decay_schemes(schemes: Sequence[str], weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-run decays ``(λ on the normalized layers, λ on the others)`` for the paper's schemes.

    ``'none'``; ``'wd-bn'`` (the paper's wd-conv: decay only where batch norm makes it meaningless);
    ``'wd-fc'`` (only the top layer, where it constrains the function); ``'wd-all'``; ``'graft'`` and
    ``'graft+wd-fc'``: no decay on the normalized layers, whose norms :func:`graft_norms_` copies instead.
    """
    bn = torch.tensor([weight_decay if s in ("wd-bn", "wd-all") else 0.0 for s in schemes])
    fc = torch.tensor([weight_decay if s in ("wd-fc", "wd-all", "graft+wd-fc") else 0.0 for s in schemes])
    return bn, fc


def _paired(args: Mapping) -> None:
    """graft_norms_: receivers and donors pair up."""
    if len(args["receivers"]) != len(args["donors"]):
        raise ValueError(f"receivers and donors must pair up, got {len(args['receivers'])} and {len(args['donors'])}")


@torch.no_grad()
@accepts(_paired, run_of("receivers", "donors"), receivers=RUN_INDICES, donors=RUN_INDICES)
def graft_norms_(model: nn.Module, receivers: Sequence[int], donors: Sequence[int],
                 mask: Mapping[str, bool] | None = None) -> None:
    r"""Norm grafting, in place: rescale run ``receivers[i]``'s tensors to the norms of run ``donors[i]``.

    :math:`w^{(r)} \leftarrow \lVert w^{(d)}\rVert\, w^{(r)}/\lVert w^{(r)}\rVert` for every tensor
    in ``mask`` (default ``model.scale_invariant``). On a scale-invariant tensor this changes no
    prediction, only the effective learning rate :math:`\alpha/\lVert w\rVert^2` of the next steps
    (Zhang et al. 2019, Sec. 4.1, "effective learning rate transfer").
    """
    mask = model.scale_invariant if mask is None else mask
    r, d = torch.as_tensor(receivers), torch.as_tensor(donors)
    for name, w in model.named_parameters():
        if mask.get(name, False):
            norms = w.flatten(1).norm(dim=1)
            w[r] = w[r] * (norms[d] / norms[r]).reshape(-1, *([1] * (w.dim() - 1)))


# ============================================================================ mechanism 2
def _enough_samples(args: Mapping) -> None:
    if args["n"] < args["dim"]:
        raise ValueError(f"n must be at least dim to whiten exactly, got n={args['n']}, dim={args['dim']}")


@accepts(_enough_samples, n=Int(1), dim=Int(1), seed=Seed())
def whitened_inputs(n: int, dim: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    r"""``n`` inputs with :math:`\tfrac1n\sum_b x_b x_b^\top = I` exactly (``n >= dim``): :math:`\sqrt n` times orthonormal columns."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, dim, generator=g, dtype=torch.float64))
    return (q * math.sqrt(n)).to(dtype)


def _runs_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    runs = next(model.parameters()).shape[0]
    return x.unsqueeze(0).expand(runs, *x.shape) if x.dim() == 2 else x


@accepts(x=BATCH)
def input_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""Per-example input-output Jacobians :math:`J_x = \partial f(x)/\partial x`, shape ``(R, B, K, D)``.

    One backward pass per output: runs and examples do not interact (no batch norm in training mode).
    """
    x = _runs_input(model, x).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        rows = [torch.autograd.grad(out[..., k].sum(), x, retain_graph=k < out.shape[-1] - 1)[0]
                for k in range(out.shape[-1])]
    return torch.stack(rows, dim=2)


@accepts(x=BATCH)
def jacobian_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbb E_x \lVert J_x\rVert_F^2`, the mean squared Frobenius norm of the input-output Jacobian, ``(R,)``."""
    was = model.training
    model.eval()
    try:
        return input_jacobian(model, x).square().sum((-1, -2)).mean(1).detach()
    finally:
        model.train(was)


@accepts(x=BATCH)
def kfac_gn_norm(model: nn.Module, x: torch.Tensor, factors=None) -> torch.Tensor:
    r"""The K-FAC Gauss-Newton norm :math:`\sum_\ell \operatorname{vec}(\bar W_\ell)^\top (A_{\ell-1}\otimes S_\ell)\operatorname{vec}(\bar W_\ell)`, ``(R,)``.

    Each term is :math:`\operatorname{tr}(S_\ell \bar W_\ell A_{\ell-1} \bar W_\ell^\top)`, with the factors
    estimated on ``x`` for the logits' Gauss-Newton matrix (output Hessian :math:`I`) by
    :func:`~lecture_lib.kfac_statistics.estimate_factors`; :math:`\bar W = [W\; b]` when the layer has a bias.
    """
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


@accepts(x=BATCH)
def gn_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""The exact Gauss-Newton norm :math:`\theta^\top G\theta = \mathbb E_x\lVert J_\theta\theta\rVert^2` (output Hessian I), ``(R,)``.

    :math:`J_\theta\theta` is the derivative of :math:`f(x; (1+t)\theta)` at :math:`t = 0`, one
    forward-mode pass (:func:`torch.func.jvp`). For a bias-free ReLU network of K layers it is
    :math:`K f(x)` (Lemma 1), so :math:`\theta^\top G\theta = K^2\,\mathbb E\lVert f(x)\rVert^2`.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p):
        return torch.func.functional_call(model, {**p, **buffers}, (x,))

    _, dout = torch.func.jvp(f, (params,), (params,))
    return dout.square().sum(-1).mean(-1)


@accepts(sizes=Sizes(), n=Int(1), seed=Seed())
def linear_identity(sizes: Sequence[int] = (6, 5, 4, 3), n: int = 64, seed: int = 0) -> dict[str, float]:
    r"""Both sides of Theorem 1 for a deep linear network in float64: ``{'kfac_norm', 'k_jacobian', 'gn_norm', 'k2_jacobian'}``.

    ``kfac_norm`` :math:`=\sum_\ell \operatorname{vec}(W_\ell)^\top(A_{\ell-1}\otimes S_\ell)\operatorname{vec}(W_\ell)`
    and ``k_jacobian`` :math:`= K\lVert J_x\rVert_F^2` agree exactly for whitened inputs; so do the exact
    Gauss-Newton norm and :math:`K^2\lVert J_x\rVert_F^2`.
    """
    model = DeepLinear(sizes, seed=seed, dtype=torch.float64)
    x = whitened_inputs(n, sizes[0], seed=seed)
    K = len(sizes) - 1
    J = model.linears[0].weight[0].detach()
    for lin in model.linears[1:]:
        J = lin.weight[0].detach() @ J
    jf = float(J.square().sum())
    return {"kfac_norm": float(kfac_gn_norm(model, x)[0]), "k_jacobian": K * jf,
            "gn_norm": float(gn_norm(model, x)[0]), "k2_jacobian": K * K * jf, "K": K, "jacobian_sq": jf}


# ============================================================================ mechanism 3
_scale_invariant_layer = one_of(        # direction_update: a linear layer whose weight feeds a normalizer
    "layer", lambda args: [n[:-len(".weight")] for n, flag in args["model"].scale_invariant.items()
                           if flag and n.endswith(".weight")], "a scale-invariant linear layer")


@accepts(_scale_invariant_layer, one_target_per_example(), x=BATCH, y=Tensor(),
         layer=Instance(str), damping=NonNegative(), scale=Positive(), curvature=Choice(CURVATURES),
         loss=Choice(tuple(LOSSES)))
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
    w_name = f"{layer}.weight"
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    params[w_name] = params[w_name] * scale
    state = {**params, **{k: b.clone() for k, b in model.named_buffers()}}
    A, S = estimate_factors(model, state, x, y, loss, curvature=curvature)[layer]
    with torch.enable_grad():
        p = {k: v.requires_grad_(k == w_name) for k, v in state.items()}
        out = torch.func.functional_call(model, p, (x,))
        g = torch.autograd.grad(LOSSES[loss](out, y).sum(), p[w_name])[0]
    step = -kron_damped_solve.__wrapped__(*eigh_factor(A), *eigh_factor(S), g, damping)
    w = params[w_name]
    norm = w.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    w_hat = w / norm
    tangential = step - (step * w_hat).sum((1, 2), keepdim=True) * w_hat
    return tangential / norm



def _cosine_inputs(args: Mapping) -> None:
    """direction_cosine: one gradient component per curvature eigenvalue."""
    if args["eigenvalues"].shape != args["gradient"].shape:
        raise ValueError(f"gradient must have one entry per eigenvalue, got {args['gradient'].shape} and "
                         f"{args['eigenvalues'].shape}")


@accepts(_cosine_inputs, eigenvalues=Array(ndim=1, finite=True), gradient=Array(ndim=1, finite=True),
         damping=NonNegative(), w_norm=Positive())
def direction_cosine(eigenvalues, gradient, damping: float, w_norm: float) -> float:
    r"""cos(K-FAC step on :math:`\hat w`, gradient) in the eigenbasis of the direction's curvature :math:`G(\hat w)`.

    By eq. 14 the step is :math:`-\alpha(G(\hat w) + \gamma\lVert w\rVert^2 I)^{-1}\nabla J(\hat w)`; in the
    eigenbasis its components are :math:`g_i/(\nu_i + \gamma\lVert w\rVert^2)`. As :math:`\gamma\lVert w\rVert^2`
    outgrows the eigenvalues :math:`\nu_i` the cosine tends to 1: K-FAC turns into gradient descent.
    """
    step = gradient / (eigenvalues + damping * w_norm ** 2)
    return float(step @ gradient / (np.linalg.norm(step) * np.linalg.norm(gradient)))


# ============================================================================ statistics of paired runs
# Student's t quantile t_{0.975, df} for df = 1..30; above 30 the normal quantile with a 1/df correction.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    return _T975[df - 1] if df <= len(_T975) else 1.95996 + 2.37 / df


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval ``[low, high]`` from ``n`` paired values."""

    mean: float
    low: float
    high: float
    n: int

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (the difference is resolved at the 5% level)."""
        return value < self.low or value > self.high

    def __neg__(self) -> "Interval":
        return Interval(-self.mean, -self.high, -self.low, self.n)

    def map(self, fn) -> "Interval":
        """The interval pushed through a monotone increasing ``fn`` (e.g. ``math.exp`` for log ratios)."""
        return Interval(fn(self.mean), fn(self.low), fn(self.high), self.n)

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _two_or_more(args: Mapping) -> None:
    if args["differences"].size < 2:
        raise ValueError(f"differences needs at least two paired values, got {args['differences'].size}")


@accepts(_two_or_more, differences=Array(ndim=1, finite=True))
def paired_interval(differences) -> Interval:
    r"""Mean of paired differences :math:`d_s = a_s - b_s` (one per shared seed) with a 95% Student-t interval.

    :math:`\bar d \pm t_{0.975,\,n-1}\, s_d/\sqrt n`. Pairing removes what the runs share (the
    initialization, the minibatch order, the test set), so the interval is much narrower than the
    spread of either column; it says nothing about a *new* test set (see
    :func:`~lecture_lib.experiments.mechanisms.test_sampling_se`).
    """
    n = differences.size
    mean = float(differences.mean())
    half = t975(n - 1) * float(differences.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
