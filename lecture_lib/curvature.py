r"""Exact curvature of tiny networks, matrix-free products for larger ones, and K-FAC factors.

Everything works on one run of a batched model (``run=r``), in float64, on the run's
parameters flattened into one vector :math:`\theta` (parameters in ``named_parameters``
order, each tensor row-major). With the batch loss :math:`J = \tfrac1B\sum_b \ell(f_b, y_b)`
and :math:`J_b = \partial f_b / \partial \theta`:

================  =====================================================================
``hessian``       :math:`H = \nabla^2_\theta J`
``gauss_newton``  :math:`G = \tfrac1B\sum_b J_b^\top H_{\text{out},b} J_b` with
                  :math:`H_{\text{out}} = I` (mse), :math:`\mathrm{diag}(p) - pp^\top` (softmax CE),
                  :math:`\sigma(1-\sigma)` (logistic)
``fisher``        :math:`F = \tfrac1B\sum_b \mathbb{E}_{y\sim p(\cdot\mid f_b)}[g_b g_b^\top]`,
                  :math:`g_b = J_b^\top \nabla_f \ell(f_b, y)`: targets from the *model*
``empirical_fisher`` the same with the *training* targets :math:`y_b`
================  =====================================================================

The true Fisher's expectation is exact: a sum over the classes for cross-entropy and
logistic losses, and for the unit-variance Gaussian of ``mse`` a sum over the :math:`2K`
points :math:`f \pm \sqrt{K} e_k` (weights :math:`1/2K`), which reproduce the Gaussian's
first two moments and hence the expectation of any quadratic in :math:`y` exactly. So for
mse, :math:`F = G` is a theorem the tests check, not a definition.

The Kronecker factors themselves (hooks, sampled targets, output-Hessian square roots) are
estimated in :mod:`lecture_lib.kfac_statistics`, which the K-FAC optimizer uses too;
:func:`kfac_factors` is its one-run, float64 view for comparisons with the exact matrices.

Per-layer blocks: :func:`layer_block` takes a layer's rows and columns in the order of
:math:`\bar W = [W\; b]` flattened row-major, the order in which the K-FAC block is
:func:`kfac_block` = ``kron(S, A)`` (the lecture's :math:`A \otimes S` for column-stacking vec).

References: Martens (2020), *New insights and perspectives on the natural gradient method*;
Kunstner, Balles & Hennig (2019), *Limitations of the empirical Fisher approximation*;
Martens & Grosse (2015); Grosse, CSC 2541 Lectures 4-5 (2022).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp

from . import losses as _losses
from ._validate import (Choice, Function, Instance, Int, Matrix, Seed, Tensor, accepts, one_of,
                        one_target_per_example, run_of)
from .kfac_statistics import CURVATURES, INPUTS, LOSS, MODEL, estimate_factors, output_hessian_sqrt, targets_match

__all__ = ["FlatModel", "flatten", "hessian", "gauss_newton", "fisher", "empirical_fisher", "blocks",
           "layer_block", "kfac_factors", "kfac_block", "hvp", "gnvp", "lanczos", "top_eigenvalues"]


class FlatModel(NamedTuple):
    """One run of a model as a function of a flat float64 parameter vector."""

    theta: torch.Tensor                      # (P,) the run's parameters, float64
    names: list[str]
    slices: dict[str, slice]                 # name -> positions in theta
    shapes: dict[str, tuple[int, ...]]       # name -> shape without the run dimension
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # fn(theta, x) -> outputs (B, K)


# ----------------------------------------------------------------------------- declarations
run_of_model = run_of("run")         # relation: run indexes one of the model's runs


def _vector_of_one_run(arguments: Mapping) -> None:
    size = sum(p[0].numel() for p in arguments["model"].parameters())
    if tuple(arguments["v"].shape) != (size,):
        raise ValueError(f"v must have shape ({size},) (the run's parameters, flattened), got {tuple(arguments['v'].shape)}")


def _hessian_needs_targets(arguments: Mapping) -> None:
    if arguments["matrix"] == "hessian" and arguments["y"] is None:
        raise ValueError("matrix='hessian' needs the targets y")


_layer_of = one_of("layer", lambda arguments: [n[:-len(".weight")] for n in arguments["flat"].slices
                                                  if n.endswith(".weight")], "a linear layer of the model")


RUN = Int(0)                                     # with the relation run_of_model
BATCH = (run_of_model, targets_match)            # the relations of a (model, x, y, run) function


@accepts(run_of_model, model=MODEL, run=RUN)
def flatten(model: nn.Module, run: int = 0) -> FlatModel:
    """Run ``run`` of ``model`` as ``fn(theta, x) -> (B, K)`` in float64 (other runs held fixed, no grad).

    The model is evaluated functionally (:func:`torch.func.functional_call`) on float64 copies of
    its parameters and buffers, so the model itself is never modified.
    """
    named = dict(model.named_parameters())
    names = list(named)
    shapes = {n: tuple(p.shape[1:]) for n, p in named.items()}
    slices, start = {}, 0
    for n in names:
        size = math.prod(shapes[n])
        slices[n] = slice(start, start + size)
        start += size
    full = {n: p.detach().to(torch.float64) for n, p in named.items()}
    buffers = {n: b.detach().to(torch.float64) if b.is_floating_point() else b for n, b in model.named_buffers()}
    theta = torch.cat([full[n][run].reshape(-1) for n in names])

    def fn(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        state = {k: v.clone() for k, v in buffers.items()}
        for n in names:
            piece = theta[slices[n]].reshape(1, *shapes[n])
            state[n] = torch.cat([full[n][:run], piece, full[n][run + 1:]], 0)
        return functional_call(model, state, (x.to(torch.float64),))[run]

    return FlatModel(theta, names, slices, shapes, fn)


def _per_example_loss(loss_name: str):
    fn = _losses.LOSSES[loss_name]

    def ell(f_b: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
        return fn(f_b.reshape(1, 1, -1), y_b.reshape(1, 1, *y_b.shape))[0]

    return ell


def _batch_loss(loss_name: str, flat: FlatModel, x, y):
    fn = _losses.LOSSES[loss_name]

    def J(theta):
        return fn(flat.fn(theta, x).unsqueeze(0), y)[0]

    return J


@accepts(*BATCH, model=MODEL, x=INPUTS, y=Tensor(), loss=LOSS, run=RUN)
def hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, run: int = 0) -> torch.Tensor:
    r"""Full Hessian :math:`\nabla^2_\theta J` of the batch loss, ``(P, P)`` float64."""
    flat = flatten(model, run)
    return torch.func.hessian(_batch_loss(loss, flat, x, y))(flat.theta)


def _jacobian(flat: FlatModel, x) -> torch.Tensor:
    return jacrev(flat.fn)(flat.theta, x)                       # (B, K, P)


def _output_hessian(loss_name: str, f: torch.Tensor) -> torch.Tensor:
    L = output_hessian_sqrt(loss_name, f.unsqueeze(0))[0]       # (B, K, K)
    return L @ L.transpose(-1, -2)


@accepts(run_of_model, model=MODEL, x=INPUTS, loss=LOSS, run=RUN)
def gauss_newton(model: nn.Module, x: torch.Tensor, loss, run: int = 0) -> torch.Tensor:
    r"""Gauss-Newton matrix :math:`G = \tfrac1B\sum_b J_b^\top H_{\text{out},b} J_b`, ``(P, P)`` float64."""
    flat = flatten(model, run)
    Jac = _jacobian(flat, x)
    H = _output_hessian(loss, flat.fn(flat.theta, x))
    return torch.einsum("bkp,bkl,blq->pq", Jac, H, Jac) / Jac.shape[0]


def _target_distribution(loss_name: str, f_b: torch.Tensor):
    """Points and weights whose weighted sums give E over p(y | f_b) exactly (for quadratics in y for mse)."""
    K = f_b.shape[-1]
    if loss_name == "cross_entropy":
        return torch.arange(K), torch.softmax(f_b, -1)
    if loss_name == "logistic":
        p1 = torch.sigmoid(f_b[0])
        return torch.tensor([0, 1]), torch.stack([1 - p1, p1])
    eye = torch.eye(K, dtype=f_b.dtype, device=f_b.device) * math.sqrt(K)
    points = torch.cat([f_b + eye, f_b - eye])                  # (2K, K): moments of N(f_b, I)
    return points, torch.full((2 * K,), 1.0 / (2 * K), dtype=f_b.dtype, device=f_b.device)


def _gradient_outer(model, x, loss_name, run, targets_of) -> torch.Tensor:
    flat = flatten(model, run)
    Jac = _jacobian(flat, x)
    f = flat.fn(flat.theta, x).detach()
    dl = torch.func.grad(_per_example_loss(loss_name))           # d ell / d f_b
    P = flat.theta.numel()
    F = torch.zeros(P, P, dtype=torch.float64, device=Jac.device)
    for b in range(f.shape[0]):
        ys, ws = targets_of(loss_name, f[b], b)
        for y_b, w in zip(ys, ws):
            g = Jac[b].T @ dl(f[b], y_b)
            F += w * torch.outer(g, g)
    return F / f.shape[0]


@accepts(run_of_model, model=MODEL, x=INPUTS, loss=LOSS, run=RUN)
def fisher(model: nn.Module, x: torch.Tensor, loss, run: int = 0) -> torch.Tensor:
    r"""True Fisher :math:`\tfrac1B\sum_b \mathbb{E}_{y\sim p(\cdot|f_b)}[g_b g_b^\top]`, expectation computed exactly."""
    return _gradient_outer(model, x, loss, run, lambda name, f_b, b: _target_distribution(name, f_b))


@accepts(run_of_model, one_target_per_example(per_run=False), model=MODEL, x=Tensor(dim=2), y=Tensor(),
         loss=LOSS, run=RUN)
def empirical_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, run: int = 0) -> torch.Tensor:
    r"""Empirical Fisher :math:`\tfrac1B\sum_b g_b g_b^\top` with the training targets :math:`y_b`."""
    return _gradient_outer(model, x, loss, run, lambda name, f_b, b: ([y[b]], [1.0]))


@accepts(matrix=Tensor(dim=2, finite=False), flat=Instance(FlatModel))
def blocks(matrix: torch.Tensor, flat: FlatModel) -> dict[tuple[str, str], torch.Tensor]:
    """All parameter-by-parameter blocks ``{(name_i, name_j): matrix[i, j]}`` of a ``(P, P)`` matrix."""
    return {(a, b): matrix[flat.slices[a], flat.slices[b]] for a in flat.names for b in flat.names}


@accepts(_layer_of, flat=Instance(FlatModel))
def layer_indices(flat: FlatModel, layer: str) -> torch.Tensor:
    """Positions in ``theta`` of a layer's :math:`\\bar W = [W\\; b]`, flattened row-major."""
    w = f"{layer}.weight"
    out, n_in = flat.shapes[w]
    W = torch.arange(flat.slices[w].start, flat.slices[w].stop).reshape(out, n_in)
    b = f"{layer}.bias"
    if b in flat.slices:
        W = torch.cat([W, torch.arange(flat.slices[b].start, flat.slices[b].stop).unsqueeze(1)], 1)
    return W.reshape(-1)


@accepts(_layer_of, matrix=Tensor(dim=2, finite=False), flat=Instance(FlatModel))
def layer_block(matrix: torch.Tensor, flat: FlatModel, layer: str) -> torch.Tensor:
    """The diagonal block of one linear layer in :math:`\\bar W` row-major order (comparable to :func:`kfac_block`)."""
    idx = layer_indices(flat, layer)
    return matrix[idx][:, idx]


@accepts(*BATCH, model=MODEL, x=INPUTS, y=Tensor(optional=True), loss=LOSS, curvature=Choice(CURVATURES),
         run=RUN, seed=Seed())
def kfac_factors(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss, curvature: str = "ggn",
                 run: int = 0, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """K-FAC factors ``{layer: (A, S)}`` of one run on one batch, float64 (see :func:`~lecture_lib.kfac_statistics.estimate_factors`)."""
    params = {n: p.detach().to(torch.float64) for n, p in model.named_parameters()}
    params.update({n: b.detach().to(torch.float64) if b.is_floating_point() else b
                   for n, b in model.named_buffers()})
    factors = estimate_factors(model, params, x.to(torch.float64), y, loss, curvature,
                               torch.Generator().manual_seed(seed))
    return {n: (A[run], S[run]) for n, (A, S) in factors.items()}


@accepts(A=Matrix(), S=Matrix())
def kfac_block(A: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    r"""The explicit K-FAC block in :math:`\bar W` row-major order: ``kron(S, A)`` (= :math:`A\otimes S` for column-stacking vec)."""
    return torch.kron(S, A)


# ----------------------------------------------------------------------------- matrix-free
@accepts(*BATCH, _vector_of_one_run, model=MODEL, x=INPUTS, y=Tensor(), loss=LOSS, v=Tensor(dim=1), run=RUN)
def hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, v: torch.Tensor, run: int = 0) -> torch.Tensor:
    r"""Hessian-vector product :math:`Hv` (forward-over-reverse), never forming :math:`H`."""
    flat = flatten(model, run)
    J = _batch_loss(loss, flat, x, y)
    return jvp(torch.func.grad(J), (flat.theta,), (v.to(device=flat.theta.device, dtype=torch.float64),))[1]


@accepts(run_of_model, _vector_of_one_run, model=MODEL, x=INPUTS, loss=LOSS, v=Tensor(dim=1), run=RUN)
def gnvp(model: nn.Module, x: torch.Tensor, loss, v: torch.Tensor, run: int = 0) -> torch.Tensor:
    r"""Gauss-Newton-vector product :math:`\tfrac1B\sum_b J_b^\top H_{\text{out},b} (J_b v)`: one jvp and one vjp."""
    flat = flatten(model, run)
    f, Jv = jvp(lambda t: flat.fn(t, x), (flat.theta,), (v.to(device=flat.theta.device, dtype=torch.float64),))
    HJv = (_output_hessian(loss, f.detach()) @ Jv.unsqueeze(-1)).squeeze(-1) / f.shape[0]
    _, pullback = vjp(lambda t: flat.fn(t, x), flat.theta)
    return pullback(HJv)[0]


@accepts(matvec=Function(), dim=Int(1), k=Int(1), iters=Int(1, optional=True), seed=Seed())
def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int = 6, iters: int | None = None,
            seed: int = 0) -> torch.Tensor:
    """Top-``k`` eigenvalues (largest first) of a symmetric operator by Lanczos with full reorthogonalization."""
    iters = max(3 * k, 30) if iters is None else iters
    m = min(dim, iters)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=g, dtype=torch.float64)
    Q = [q / q.norm()]
    alpha, beta = [], []
    for j in range(m):
        w = matvec(Q[j])
        if not isinstance(w, torch.Tensor) or w.shape != (dim,):
            raise ValueError(f"matvec must return a vector of shape ({dim},) (dim), got "
                             f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
        w = w.to(device=Q[j].device, dtype=torch.float64)     # the Lanczos vectors stay on the CPU
        if not torch.isfinite(w).all():
            raise ValueError("matvec returned non-finite values (NaN or inf): check the model and the batch")
        alpha.append(torch.dot(w, Q[j]))
        Qm = torch.stack(Q)
        w = w - Qm.T @ (Qm @ w)
        w = w - Qm.T @ (Qm @ w)               # twice is enough (Kahan)
        nb = w.norm()
        if j == m - 1 or nb < 1e-12:
            break
        beta.append(nb)
        Q.append(w / nb)
    T = torch.diag(torch.stack(alpha))
    if beta:
        off = torch.stack(beta[:len(alpha) - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T).flip(0)[:k]


@accepts(*BATCH, _hessian_needs_targets, model=MODEL, x=INPUTS, y=Tensor(optional=True), loss=LOSS,
         matrix=Choice(("hessian", "ggn")), k=Int(1), run=RUN, iters=Int(1, optional=True))
def top_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss, matrix: str = "ggn",
                    k: int = 6, run: int = 0, iters: int | None = None) -> torch.Tensor:
    """Top-``k`` eigenvalues of the Hessian (``matrix='hessian'``) or Gauss-Newton matrix (``'ggn'``) by Lanczos."""
    P = flatten(model, run).theta.numel()
    if matrix == "hessian":
        return lanczos(lambda v: hvp(model, x, y, loss, v, run), P, k, iters)
    return lanczos(lambda v: gnvp(model, x, loss, v, run), P, k, iters)
