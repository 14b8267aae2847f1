r"""Internal covariate shift (ICS) and the outlier eigenvalues it creates.

Lecture 5 (Grosse 2022), "Internal Covariate Shift" to "A Wrinkle". The chain of
reasoning this module makes computable:

1. **Uncentered inputs give an outlier.** For inputs :math:`a` with mean :math:`m`
   and covariance :math:`\Sigma = I` the second moment is
   :math:`A = \mathbb E[a a^\top] = I + m m^\top`: one eigenvalue
   :math:`\nu = \lVert m\rVert^2 + 1` in direction :math:`m`, the rest 1
   (:func:`moment_spectrum`). For linear regression :math:`A` *is* the Hessian, so
   gradient descent slows down by the condition number (LeCun et al. 1998,
   "Efficient BackProp", §4.3; hence tanh rather than logistic units,
   :func:`unit_features`).
2. **ICS Conditioning Hypothesis.** K-FAC writes the Gauss-Newton block of a layer
   as :math:`G_{\ell\ell} \approx A_{\ell-1} \otimes S_\ell` (Martens & Grosse 2015),
   whose eigenvalues are products :math:`\lambda_j(A)\lambda_i(S)`. An outlier
   :math:`\nu` in :math:`A` therefore gives up to :math:`M` large eigenvalues
   :math:`\nu\lambda_i(S)` with eigenvectors :math:`m \otimes v_i`
   (:func:`conditioning_report`).
3. **The fix by reparameterization.** With :math:`\tilde a = \Sigma^{-1/2}(a - m)`,
   :math:`\tilde W = W\Sigma^{1/2}`, :math:`\tilde b = b + Wm` the network computes
   the same function (:func:`reparameterize`); gradient descent in the new
   coordinates is preconditioned descent in the old ones with the quasi-diagonal
   matrix :math:`RR^\top` (:func:`quasi_diagonal`).
4. **The wrinkle.** If the next layer batch-normalizes its pre-activations, the
   network is invariant to shifting (and rescaling) :math:`a_{\ell-1}`, so the
   training trajectory does not change (:class:`ShiftedMLP`), although
   :math:`A_{\ell-1}` has the outlier.
5. **Batch centering.** Backprop through :math:`\hat s = s - \mu_B(s)` turns the
   weight gradient :math:`\bar W = \bar S^\top A` into :math:`\bar S^\top \tilde A`
   with centered activations; the statistics path does it (:func:`centering_gradient`).

Conventions: a weight matrix is ``(out, in)``. The lecture's :math:`\mathrm{vec}` stacks
columns, so its :math:`A\otimes S` is ``kron(S, A)`` for the row-major flattening that
:mod:`lecture_lib.curvature` uses; :func:`quasi_diagonal` keeps the lecture's
column-stacking order to match the slide. Curvature and identities are float64.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import curvature, data
from ._validate import (check_callable, check_choice, check_int, check_nonnegative, check_positive, check_range,
                        check_seed, check_sizes, check_tensor)
from .data import Dataset
from .engine import train
from .optim import sgd
from .optim.kfac import check_inputs
from .record import Record
from .models import MLP, BatchNorm, _as_runs, activation as get_activation

F64 = torch.float64


# ---------------------------------------------------------------------------
# 1. the outlier eigenvalue of A = E[a a^T]
# ---------------------------------------------------------------------------

def second_moment(a: torch.Tensor) -> torch.Tensor:
    r"""The uncentered second moment :math:`A = \frac1n \sum_n a_n a_n^\top` of rows ``a`` ``(n, D)``."""
    check_tensor("a", a, dim=2)
    a = a.to(F64)
    return a.T @ a / a.shape[0]


def predicted_outlier(mean: torch.Tensor) -> float:
    r""":math:`\nu = \lVert m\rVert^2 + 1`: the top eigenvalue of :math:`I + mm^\top` (inputs with covariance I)."""
    check_tensor("mean", mean, dim=1)
    return float(mean.to(F64).pow(2).sum()) + 1.0


@dataclass
class MomentSpectrum:
    """Eigen-analysis of :math:`A = E[aa^\top]` against the outlier prediction."""

    eigenvalues: torch.Tensor   # (D,) descending
    top_vector: torch.Tensor    # (D,) unit eigenvector of the largest eigenvalue
    mean: torch.Tensor          # (D,) sample mean m
    variance: float             # average per-coordinate variance tr(Sigma)/D
    predicted: float            # ||m||^2 + variance  (= ||m||^2 + 1 when Sigma = I)
    alignment: float            # |cos(top_vector, m)|, nan when m = 0

    @property
    def condition_number(self) -> float:
        return float(self.eigenvalues[0] / self.eigenvalues[-1])


def moment_spectrum(a: torch.Tensor) -> MomentSpectrum:
    r"""Spectrum of :math:`A = E[aa^\top]` for samples ``a`` ``(n, D)``, with the predicted outlier.

    For :math:`a \sim \mathcal N(m, \sigma^2 I)`, :math:`A = \sigma^2 I + mm^\top` has top
    eigenvalue :math:`\lVert m\rVert^2 + \sigma^2` along :math:`m` and :math:`D-1`
    eigenvalues :math:`\sigma^2`. ``predicted`` uses the measured :math:`\sigma^2`
    (average variance), which is 1 for the lecture's case :math:`\Sigma = I`.
    """
    A = second_moment(a)
    evals, evecs = torch.linalg.eigh(A)
    evals, evecs = evals.flip(0), evecs.flip(1)
    a = a.to(F64)
    mean = a.mean(0)
    variance = float(a.var(0, unbiased=False).mean())
    top = evecs[:, 0]
    mnorm = float(mean.norm())
    align = float((top @ mean).abs() / mnorm) if mnorm > 0 else math.nan
    return MomentSpectrum(evals, top, mean, variance, mnorm ** 2 + variance, align)


UNITS = ("logistic", "tanh", "relu")


def unit_features(activation: str, dim: int, samples: int, seed: int = 0,
                  preactivation_mean: float = 0.0) -> torch.Tensor:
    r"""Activations :math:`a = \phi(z)`, :math:`z \sim \mathcal N(\mu, I)` of ``dim`` independent hidden units.

    The classical argument for tanh (LeCun et al. 1998, §4.4): logistic units output
    values in (0, 1) with mean :math:`\approx 1/2`, so :math:`\lVert m\rVert^2 \approx D/4`
    and :math:`A` has an outlier growing with the width; tanh is odd, its outputs have
    mean 0 when :math:`\mu = 0`. Returns ``(samples, dim)`` float64.
    """
    check_choice("activation", activation, UNITS)
    check_int("dim", dim)
    check_int("samples", samples, low=2)
    check_range("preactivation_mean", preactivation_mean)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    z = torch.randn(samples, dim, generator=g, dtype=F64) + float(preactivation_mean)
    return get_activation(activation)(z)


def regression_hessian(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    r"""Hessian of the half mean squared error of a linear model :math:`w^\top x + b`: :math:`E[\tilde x\tilde x^\top]`.

    With ``bias`` the inputs are augmented, :math:`\tilde x = (x, 1)`, so for
    :math:`x \sim \mathcal N(m, \Sigma)`:
    :math:`H = \begin{pmatrix}\Sigma + mm^\top & m\\ m^\top & 1\end{pmatrix}`, whose
    determinant is :math:`\det\Sigma`: the outlier :math:`\approx\lVert m\rVert^2 + 1`
    comes with a small eigenvalue :math:`\approx 1/(\lVert m\rVert^2+1)`, so the condition
    number grows like :math:`\nu^2`.
    """
    check_tensor("x", x, dim=2)
    x = x.to(F64)
    if bias:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=F64, device=x.device)], 1)
    return second_moment(x)


# ---------------------------------------------------------------------------
# 2. ICS Conditioning Hypothesis: exact GN block vs the predicted outliers
# ---------------------------------------------------------------------------

@dataclass
class ConditioningReport:
    r"""The exact GN block of a layer against the ICS Conditioning Hypothesis."""

    exact: torch.Tensor        # (P,) eigenvalues of the exact GN block, descending
    kfac: torch.Tensor         # (P,) eigenvalues of A (x) S, descending
    predicted: torch.Tensor    # (M',) predicted outliers nu * lambda_i(S), descending
    nu: float                  # ||m||^2 + 1
    alignment: torch.Tensor    # (k,) fraction of each top eigenvector inside span{m (x) v}
    A: torch.Tensor            # (D, D) input second moment
    S: torch.Tensor            # (H, H) output-side second moment


def kronecker_alignment(vectors: torch.Tensor, direction: torch.Tensor, out_features: int) -> torch.Tensor:
    r"""Fraction of each unit vector ``vectors[:, k]`` lying in :math:`\{\hat m \otimes v : v \in \mathbb R^H\}`.

    Vectors are weight matrices flattened row-major (the order of
    :mod:`lecture_lib.curvature`): reshaped to ``(H, D)``, :math:`\hat m\otimes v` is the
    rank-one matrix :math:`v\hat m^\top`, the projection of :math:`U` onto that subspace is
    :math:`(U\hat m)\hat m^\top`, and the fraction is :math:`\lVert U\hat m\rVert^2`.
    """
    check_tensor("vectors", vectors, dim=2)
    check_tensor("direction", direction, dim=1)
    H, D = check_int("out_features", out_features), direction.shape[0]
    if vectors.shape[0] != H * D:
        raise ValueError(f"vectors must have out_features * len(direction) = {H} * {D} = {H * D} rows (flattened "
                         f"(out, in) weight matrices), got shape {tuple(vectors.shape)}")
    norm = direction.to(F64).norm()
    if float(norm) == 0:
        raise ValueError("direction must not be the zero vector")
    m_hat = direction.to(F64) / norm
    U = vectors.to(F64).T.reshape(vectors.shape[1], H, D)
    return (U @ m_hat).pow(2).sum(1)


def conditioning_report(model: MLP, x: torch.Tensor, layer: int = 0) -> ConditioningReport:
    r"""The exact GN block of one weight matrix of ``model`` against the ICS prediction.

    :math:`G_{\ell\ell}` is the block of the exact Gauss-Newton matrix
    (:func:`lecture_lib.curvature.gauss_newton`, squared error so the output Hessian is I)
    belonging to ``linears.<layer>.weight``; :math:`m = E[a_{\ell-1}]` and
    :math:`A = E[a_{\ell-1} a_{\ell-1}^\top]` are taken from the layer's actual inputs and
    :math:`S = E[\mathcal Ds\,\mathcal Ds^\top]` from :func:`lecture_lib.curvature.kfac_factors`.
    Prediction (ICS Conditioning Hypothesis, Lecture 5): up to :math:`M` eigenvalues
    :math:`\nu\lambda_i(S)`, :math:`\nu = \lVert m\rVert^2 + 1`, with eigenvectors
    :math:`m\otimes v_i`. ``alignment[k]`` is the fraction of the k-th top eigenvector of
    the exact block inside :math:`\{\hat m\otimes v\}`. With a normalizer the exact block
    includes the statistics path (the examples of the batch interact).
    """
    name = f"linears.{check_int('layer', layer, low=0, high=len(model.linears) - 1)}"
    check_inputs(x)
    x = x.to(F64)
    G = curvature.gauss_newton(model, x, "mse")
    flat = curvature.flatten(model)
    w = flat.slices[f"{name}.weight"]
    G = G[w, w]
    A_aug, S = curvature.kfac_factors(model, x, None, "mse", curvature="ggn")[name]
    has_bias = model.linears[layer].bias is not None
    D = model.linears[layer].in_features
    A = A_aug[:D, :D] if has_bias else A_aug
    m = A_aug[:D, D] if has_bias else _layer_input_mean(model, x, layer)
    evals, evecs = torch.linalg.eigh(G)
    evals, evecs = evals.flip(0), evecs.flip(1)
    kfac = torch.linalg.eigvalsh(curvature.kfac_block(A, S)).flip(0)
    lam_s = torch.linalg.eigvalsh(S).flip(0)
    M = model.sizes[-1]
    k = min(M, lam_s.shape[0])
    nu = predicted_outlier(m)
    if float(m.norm()) > 0:
        align = kronecker_alignment(evecs[:, :k], m, S.shape[0])
    else:
        align = torch.full((k,), math.nan, dtype=F64)
    return ConditioningReport(evals, kfac, nu * lam_s[:k], nu, align, A, S)


def _layer_input_mean(model: MLP, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Mean over the batch of the inputs of ``linears[layer]`` (run 0), computed with a forward hook."""
    model = copy.deepcopy(model)            # a forward in train mode would move BN running averages
    seen = {}
    handle = model.linears[layer].register_forward_hook(lambda mod, inp, out: seen.setdefault("a", inp[0]))
    try:
        with torch.no_grad():
            model(x.to(next(model.parameters()).dtype))
    finally:
        handle.remove()
    a = seen["a"]
    return (a[0] if a.dim() == 3 else a).to(F64).mean(0)


# ---------------------------------------------------------------------------
# 3. the fix: reparameterize (centre and whiten) the layer's inputs
# ---------------------------------------------------------------------------

def _check_moments(mean: torch.Tensor, cov: torch.Tensor, dim: int | None = None) -> int:
    """``mean`` ``(D,)`` and a symmetric ``cov`` ``(D, D)``, finite; returns D (checked against ``dim`` if given)."""
    check_tensor("mean", mean, dim=1)
    D = mean.shape[0] if dim is None else dim
    if mean.shape[0] != D:
        raise ValueError(f"mean must have {D} entries, one per feature of the inputs x (or of the first layer), "
                         f"got shape {tuple(mean.shape)}")
    check_tensor("cov", cov, dim=2)
    if cov.shape != (D, D):
        raise ValueError(f"cov must have shape ({D}, {D}) to match mean's {D} entries, got {tuple(cov.shape)}")
    c = cov.to(F64)
    if not torch.allclose(c, c.T, rtol=1e-8, atol=1e-12 * float(c.abs().max())):
        raise ValueError("cov must be symmetric")
    return D


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(cov.to(F64))
    if float(evals.min()) <= 0:
        raise ValueError("cov must be positive definite")
    return (evecs * evals.pow(power)) @ evecs.T


def whiten(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r""":math:`\tilde a = \Sigma^{-1/2}(a - m)` row by row (symmetric square root)."""
    check_tensor("x", x, dim=2)
    _check_moments(mean, cov, x.shape[1])
    out = (x.to(F64) - mean.to(device=x.device, dtype=F64)) @ _sym_power(cov, -0.5).to(x.device)
    return out.to(x.dtype)


def reparameterize(model: MLP, mean: torch.Tensor, cov: torch.Tensor) -> MLP:
    r"""A copy of ``model`` that takes whitened inputs and computes the same function.

    First layer: :math:`\tilde W = W\Sigma^{1/2}`, :math:`\tilde b = b + Wm`, so that
    :math:`\tilde W\tilde a + \tilde b = Wa + b` for :math:`\tilde a = \Sigma^{-1/2}(a-m)`
    (Lecture 5, "ICS and Invariance"). Use with :func:`whiten`:
    ``reparameterize(model, m, S)(whiten(x, m, S)) == model(x)``. With ``norm='batch'``
    the first layer has no bias; the constant :math:`Wm` is removed by the normalizer
    anyway, so only :math:`W` is transformed.
    """
    _check_moments(mean, cov, model.linears[0].in_features)
    new = copy.deepcopy(model)
    lin = new.linears[0]
    with torch.no_grad():
        W = lin.weight.to(F64)
        root = _sym_power(cov, 0.5).to(W.device)
        shift = W @ mean.to(F64).to(W.device)                      # (R, out)
        lin.weight.copy_((W @ root).to(lin.weight.dtype))
        if lin.bias is not None:
            lin.bias.add_(shift.to(lin.bias.dtype))
        elif not (model.norm in ("batch", "center") and len(model.linears) > 1):
            raise ValueError("a first layer without bias can only absorb W m when a normalizer follows it")
    return new


def quasi_diagonal(mean: torch.Tensor, cov: torch.Tensor, out_features: int) -> dict[str, torch.Tensor]:
    r"""The reparameterization as a preconditioner for parameters :math:`\theta = (\mathrm{vec}\,W, b)`.

    :math:`\tilde\theta = R^{-1}\theta` with

    .. math:: R^{-1} = \begin{pmatrix}\Sigma^{1/2}\otimes I & 0\\ m^\top\otimes I & 1\end{pmatrix},
        \qquad [RR^\top]^{-1} = \begin{pmatrix}(\Sigma + mm^\top)\otimes I & m\otimes I\\
        m^\top\otimes I & 1\end{pmatrix},

    so a gradient step on :math:`\tilde\theta` is the step :math:`-\alpha RR^\top\nabla_\theta J`
    on :math:`\theta`. :math:`[RR^\top]^{-1}` is "quasi-diagonal" and, for a linear
    output layer with squared error, equals the exact Hessian (Lecture 5; Ollivier 2015).
    Returns ``{"R_inv", "R", "preconditioner" (RR^T), "curvature" ([RR^T]^{-1})}``.
    """
    H = check_int("out_features", out_features)
    D = _check_moments(mean, cov)
    mean, cov = mean.to(F64), cov.to(F64)
    I = torch.eye(H, dtype=F64)
    R_inv = torch.zeros(D * H + H, D * H + H, dtype=F64)
    R_inv[:D * H, :D * H] = torch.kron(_sym_power(cov, 0.5), I)
    R_inv[D * H:, :D * H] = torch.kron(mean.unsqueeze(0), I)
    R_inv[D * H:, D * H:] = I
    R = torch.linalg.inv(R_inv)
    return {"R_inv": R_inv, "R": R, "preconditioner": R @ R.T, "curvature": R_inv.T @ R_inv}


def flat_first_layer(model: MLP, run: int = 0) -> torch.Tensor:
    r""":math:`\theta = (\mathrm{vec}\,W, b)` of the first layer of run ``run`` (column-stacked vec)."""
    lin = model.linears[0]
    run = check_int("run", run, 0, lin.runs - 1)
    parts = [lin.weight[run].T.reshape(-1)]
    if lin.bias is not None:
        parts.append(lin.bias[run].reshape(-1))
    return torch.cat(parts)


# ---------------------------------------------------------------------------
# 4. the wrinkle: shifting activations that feed a normalizer changes nothing
# ---------------------------------------------------------------------------

class ShiftedMLP(MLP):
    r"""An :class:`~lecture_lib.models.MLP` whose normalized layers see shifted, rescaled inputs.

    Every activation that feeds a normalized layer (the network input and every
    hidden activation except the last) is replaced by :math:`\gamma a + c`, with
    ``shift`` :math:`c` and ``scale`` :math:`\gamma` given per run (float or ``(R,)``).
    This "adds ICS back in" (cf. the knock-out of Santurkar et al. 2018): the mean
    :math:`m` of those activations moves by :math:`c`, so :math:`A_{\ell-1}` gets an
    outlier. With ``norm='batch'`` or ``'center'`` on the next pre-activations,
    :math:`\mathrm{BN}(W(\gamma a + c)) = \mathrm{BN}(\gamma Wa + Wc)` does not depend on
    :math:`c` (and, for batch norm, up to :math:`\epsilon`, not on :math:`\gamma`): the
    function, the gradients and the whole training trajectory are unchanged.
    With ``norm='none'`` the shift matters.
    """

    def __init__(self, sizes, norm: str = "batch", activation: str = "tanh", shift=0.0, scale=1.0,
                 runs: int = 1, seed=0, affine: bool = True, eps: float = 1e-5, dtype=torch.float32, device=None):
        super().__init__(sizes, norm=norm, activation=activation, runs=runs, seed=seed, affine=affine,
                         eps=eps, dtype=dtype, device=device)
        for name, v in (("shift", shift), ("scale", scale)):
            if isinstance(v, (list, tuple)) and all(isinstance(e, (int, float)) for e in v):
                v = torch.tensor(v, dtype=torch.float64)
            check_range(name, v)          # a real number or one per run, finite
            t = torch.as_tensor(v, dtype=dtype)
            if t.dim() == 0:
                t = t.expand(runs).clone()
            if t.shape != (runs,):
                raise ValueError(f"{name} must be a float or a tensor of {runs} per-run values")
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} must be finite")
            self.register_buffer(name, t.to(self.linears[0].weight.device))

    def _knock(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.scale.view(-1, 1, 1) + self.shift.view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = _as_runs(x, self.runs, self.linears[0].weight)
        last = len(self.linears) - 1
        for i, (lin, nrm) in enumerate(zip(self.linears, self.norms)):
            if i < last:          # this layer's pre-activations are normalized (hidden layer)
                a = self._knock(a)
            s = lin(a)
            if i == last:
                return s
            a = self._act(nrm(s))
        return a  # pragma: no cover


# ---------------------------------------------------------------------------
# 5. batch centering: the statistics path centres the weight gradient
# ---------------------------------------------------------------------------

@dataclass
class CenteringGradient:
    r"""Weight gradients of a batch-centered layer, three ways (all ``(out, in)``, float64)."""

    autograd: torch.Tensor      # dL/dW by autograd through the centering layer
    centered: torch.Tensor      # S̄^T Ã  (the lecture's formula)
    direct: torch.Tensor        # S̄^T A  (what the direct path alone would give)
    direct_autograd: torch.Tensor  # autograd with the batch mean detached (direct path only)
    s_bar: torch.Tensor         # (B, out) dL/d ŝ, derivative at the centering layer's output
    a_centered: torch.Tensor    # (B, in)  Ã = A - 1 mean(A)^T


def centering_gradient(a: torch.Tensor, weight: torch.Tensor,
                       loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> CenteringGradient:
    r"""Differentiate :math:`L(\hat S)`, :math:`\hat S = \mathrm{BC}(AW^\top)`, with respect to :math:`W`.

    ``a`` is the batch of activations :math:`A` ``(B, in)``, ``weight`` :math:`W`
    ``(out, in)``, ``loss_fn`` maps :math:`\hat S` ``(B, out)`` to a scalar. Batch
    centering is :class:`lecture_lib.models.BatchNorm` with ``kind='center'``:
    :math:`\hat s_n = s_n - \frac1B\sum_k s_k`. Backprop through both paths gives
    :math:`\bar s_n = \bar{\hat s}_n - \frac1B\sum_k \bar{\hat s}_k`, hence

    .. math:: \bar W = \sum_n \bar s_n a_n^\top = \bar{\hat S}^\top \tilde A, \qquad
        \tilde A = A - \mathbf 1\,\bar a^\top,

    instead of :math:`\bar{\hat S}^\top A` from the direct path alone (Lecture 5,
    "A Wrinkle"). The statistics path subtracts :math:`\bar{\hat S}^\top\mathbf 1\bar a^\top`.
    """
    check_tensor("a", a, dim=2)
    check_tensor("weight", weight, dim=2)
    check_callable("loss_fn", loss_fn)
    if weight.shape[1] != a.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} inputs but a has {a.shape[1]} features")
    if a.shape[0] < 2:
        raise ValueError("batch centering needs a batch of at least 2 examples")
    A = a.to(F64)
    W = weight.to(F64).detach().clone().requires_grad_(True)
    bc = BatchNorm(W.shape[0], kind="center", runs=1, affine=False, dtype=F64, device=A.device)
    s_hat = bc((A @ W.T).unsqueeze(0))           # (1, B, out)
    s_hat.retain_grad()
    loss_fn(s_hat[0]).backward()
    s_bar = s_hat.grad[0].detach()
    # the direct path alone: the same layer with the batch statistics treated as constants
    W_direct = W.detach().clone().requires_grad_(True)
    s = A @ W_direct.T
    loss_fn(s - s.mean(0, keepdim=True).detach()).backward()
    A_tilde = A - A.mean(0, keepdim=True)
    return CenteringGradient(W.grad.detach(), s_bar.T @ A_tilde, s_bar.T @ A, W_direct.grad.detach(),
                             s_bar, A_tilde)


# ---------------------------------------------------------------------------
# experiments behind the notebook's panels (plain tensors and records out)
# ---------------------------------------------------------------------------

FEATURES = ("gaussian", "logistic", "tanh", "relu")


def _record_every(steps: int, points: int = 100) -> int:
    """Record about ``points`` rows: the per-step statistics cost more than a tiny model's step."""
    return max(1, steps // points)


def outlier_experiment(features: str = "gaussian", mean_norm: float = 3.0, dim: int = 20,
                       samples: int = 20000, seed: int = 0) -> MomentSpectrum:
    r"""Spectrum of :math:`A = E[aa^\top]` for ``features``: ``'gaussian'`` draws
    :math:`a\sim\mathcal N(m, I)` with :math:`\lVert m\rVert` = ``mean_norm`` (see
    :func:`lecture_lib.data.gaussian_inputs`); ``'logistic'``, ``'tanh'``, ``'relu'`` are
    hidden units :func:`unit_features` (``mean_norm`` unused: the activation sets the mean).
    """
    check_choice("features", features, FEATURES)
    check_nonnegative("mean_norm", mean_norm)
    check_int("dim", dim)
    check_int("samples", samples, low=2)
    if features == "gaussian":
        a, _, _ = data.gaussian_inputs(samples, dim, mean_norm, 1.0, seed=seed)
    else:
        a = unit_features(features, dim, samples, seed)
    return moment_spectrum(a)


@dataclass
class DescentComparison:
    """Gradient descent on one regression problem in several input parameterizations."""

    labels: list[str]                 # e.g. ["uncentered", "centered", "whitened"]
    records: list[Record]             # one single-run record per parameterization
    excess_loss: list                 # (K,) arrays: J(w_k) - J(w*) per parameterization
    hessian_eigenvalues: list         # (D+1,) descending, per parameterization
    condition_numbers: list[float]
    lrs: list[float]                  # the alpha each run used


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
    """
    check_nonnegative("mean_norm", mean_norm)
    steps = check_int("steps", steps)
    check_range("lr_scale", lr_scale, 0.0, 2.0, low_inclusive=False, high_inclusive=False)
    ds = data.linear_regression(n=n, dim=dim, mean_norm=mean_norm, cond=cond, noise=0.1, seed=seed, dtype=F64)
    m, cov = ds.meta["mean"].to(ds.x_train.device), ds.meta["cov"].to(ds.x_train.device)
    variants = {
        "uncentered": lambda x: x,
        "centered": lambda x: x - m,
        "whitened": lambda x: whiten(x, m, cov),
    }
    out = DescentComparison([], [], [], [], [], [])
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


def shifted_inputs_dataset(mean_norm: float, cond: float, dim: int = 8, hidden: int = 16, n: int = 512,
                           seed: int = 0) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    r"""A teacher-MLP regression task whose inputs :math:`x = \Sigma^{1/2}z + m` are uncentered.

    The teacher (:func:`lecture_lib.data.teacher`, tanh) sees the standardized
    :math:`z\sim\mathcal N(0,I)`; the student sees :math:`x` with
    :math:`\lVert m\rVert` = ``mean_norm`` and :math:`\kappa(\Sigma)` = ``cond``.
    Returns ``(dataset, m, Sigma)`` (float64).
    """
    check_int("dim", dim)
    check_int("hidden", hidden)
    base = data.teacher(n=n, sizes=(dim, hidden, 1), activation="tanh", seed=seed, dtype=F64)
    _, m, cov = data.gaussian_inputs(2, dim, mean_norm, cond, seed=seed)
    root, shift = _sym_power(cov, 0.5).to(base.x_train.device), m.to(base.x_train.device)
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


def reparam_experiment(mean_norm: float = 3.0, cond: float = 10.0, dim: int = 8, hidden: int = 16,
                       steps: int = 300, n: int = 512, lrs=None, seed: int = 0) -> ReparamComparison:
    r"""Train the same MLP from the same function in two coordinate systems.

    Original: inputs :math:`x`, weights :math:`(W, b)`. Reparameterized (Lecture 5, "ICS
    and Invariance"): inputs :math:`\tilde x = \Sigma^{-1/2}(x - m)`,
    :math:`\tilde W = W\Sigma^{1/2}`, :math:`\tilde b = b + Wm` — the same function
    (``max_output_gap`` ~ 1e-15), but gradient descent in :math:`\tilde\theta` is descent
    in :math:`\theta` preconditioned by the quasi-diagonal :math:`RR^\top`. Each is run
    over a sweep of learning rates (one batched run per rate) and the best is reported,
    so neither is handicapped by a bad :math:`\alpha`. ``gn_eigenvalues``: the spectrum of
    the first layer's block (W and b) of the exact Gauss-Newton matrix at initialization.
    """
    check_nonnegative("mean_norm", mean_norm)
    steps = check_int("steps", steps)
    check_int("dim", dim)
    check_int("hidden", hidden)
    if lrs is None:
        lrs = torch.logspace(-2.5, 0.5, 7, dtype=F64)
    else:
        try:
            lrs = torch.as_tensor(lrs, dtype=F64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"lrs must be a sequence of learning rates, got {lrs!r}") from None
        if lrs.dim() != 1 or lrs.numel() == 0:
            raise ValueError(f"lrs must be a non-empty 1-D sequence of learning rates, got shape {tuple(lrs.shape)}")
        check_positive("lrs", lrs)
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
    for model, single, d in ((original, single, ds), (tilde, reparameterize(single, m, cov), ds_tilde)):
        G = curvature.gauss_newton(single, d.x_train, "mse")
        block = curvature.layer_block(G, curvature.flatten(single), "linears.0")
        out.gn_eigenvalues.append(torch.linalg.eigvalsh(block).flip(0).cpu().numpy())
        rec = train(model, d, "mse", sgd(lr=lrs), steps=steps, diverge_above=1e6, record_every=_record_every(steps))
        final = np.where(rec.diverged_at >= 0, np.inf, rec.loss[-1])
        out.records.append(rec)
        out.best.append(int(np.argmin(final)))
    return out


@dataclass
class WrinkleResult:
    """Training with the activations before each normalized layer shifted by 0 and by c."""

    norms: list[str]                  # ["none", "center", "batch"]
    shifts: tuple[float, float]       # (0, c)
    records: list[Record]             # per norm, a 2-run record (run 0: shift 0, run 1: shift c)
    max_gap: list[float]              # per norm, max |loss(shift 0) - loss(shift c)| over training
    kfac_top: np.ndarray              # (norms, 2) top eigenvalue of the K-FAC factor A of the shifted layer
    exact_top: np.ndarray             # (norms, 2) top eigenvalue of the exact GN block of that layer


def wrinkle_experiment(shift: float = 5.0, steps: int = 200, sizes=(6, 16, 16, 1), n: int = 256, lr: float = 0.05,
                       layer: int = 1, norms=("none", "center", "batch"), curvature_at_init: bool = True,
                       record_every: int | None = None, seed: int = 0) -> WrinkleResult:
    r"""The wrinkle (Lecture 5): shifting activations that feed a normalized layer changes nothing.

    For each ``norm``, a :class:`ShiftedMLP` with two runs from the same initialization,
    shift 0 and shift :math:`c`, is trained by full-batch gradient descent on a tanh
    teacher task. With ``'center'`` or ``'batch'`` the two loss curves coincide to
    rounding error, although the K-FAC factor :math:`A` of layer ``layer`` (whose inputs
    are shifted) has the outlier :math:`\approx\lVert m + c\mathbf 1\rVert^2`; the exact GN
    block, which includes the statistics path, does not change. With ``'none'`` the
    shift slows training.
    """
    check_range("shift", shift, -100.0, 100.0)
    steps = check_int("steps", steps)
    sizes = check_sizes("sizes", sizes, min_len=3)
    check_positive("lr", lr)
    layer = check_int("layer", layer, 0, len(sizes) - 2)
    if isinstance(norms, str) or not hasattr(norms, "__iter__"):
        raise TypeError(f"norms must be a sequence of normalizers such as ('none', 'center', 'batch'), got {norms!r}")
    norms = [check_choice("norms", nm, ("none", "center", "batch")) for nm in norms]
    ds = data.teacher(n=n, sizes=(sizes[0], 16, sizes[-1]), activation="tanh", seed=seed, dtype=F64)
    out = WrinkleResult(list(norms), (0.0, float(shift)), [], [], np.zeros((len(norms), 2)),
                        np.zeros((len(norms), 2)))
    name = f"linears.{layer}"
    record_every = _record_every(steps) if record_every is None else check_int("record_every", record_every)
    for i, norm in enumerate(norms):
        model = ShiftedMLP(sizes, norm=norm, activation="tanh", shift=torch.tensor([0.0, float(shift)]),
                           runs=2, seed=seed, dtype=F64)
        if curvature_at_init:
            for r, c in enumerate((0.0, float(shift))):
                single = ShiftedMLP(sizes, norm=norm, activation="tanh", shift=c, runs=1, seed=seed, dtype=F64)
                w = curvature.flatten(single).slices[f"{name}.weight"]
                G = curvature.gauss_newton(single, ds.x_train, "mse")[w, w]
                A, _ = curvature.kfac_factors(single, ds.x_train, None, "mse", curvature="ggn")[name]
                out.exact_top[i, r] = float(torch.linalg.eigvalsh(G)[-1])
                out.kfac_top[i, r] = float(torch.linalg.eigvalsh(A)[-1])
        rec = train(model, ds, "mse", sgd(lr=lr), steps=steps, diverge_above=1e6, record_every=record_every)
        out.records.append(rec)
        out.max_gap.append(float(np.nanmax(np.abs(rec.loss[:, 0] - rec.loss[:, 1]))))
    return out


@dataclass
class CenteringSweep:
    """Batch-centering gradients for one shift, plus gradient norms over a grid of shifts."""

    shift: float                      # the chosen shift c
    gradient: CenteringGradient       # at the chosen shift
    shifts: np.ndarray                # (S,) grid
    norm_autograd: np.ndarray         # (S,) ||W̄|| through the centering layer
    norm_direct: np.ndarray           # (S,) ||S̄^T A|| (direct path only)


def centering_experiment(shift: float = 2.0, batch_size: int = 32, dim: int = 6, out_features: int = 4,
                         seed: int = 0) -> CenteringSweep:
    r"""Gradients of a batch-centered layer :math:`\hat S = \mathrm{BC}(AW^\top)` under shifted activations.

    Activations :math:`A = Z + c\mathbf 1\mathbf 1^\top` (``shift`` c), a fixed random
    readout and targets, loss :math:`\tfrac12\lVert \hat S V - Y\rVert^2/B`. Because the
    centering removes any constant, :math:`\bar W = \bar S^\top\tilde A` does not depend
    on c, while the direct-path term :math:`\bar S^\top A` grows linearly in c.
    """
    check_range("shift", shift, -100.0, 100.0)
    B = check_int("batch_size", batch_size, low=2)
    dim, out_features = check_int("dim", dim), check_int("out_features", out_features)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
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
