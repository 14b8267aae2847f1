r"""Internal covariate shift (ICS) and the outlier eigenvalues it creates.

Lecture 5 (Grosse 2022), "Internal Covariate Shift" to "A Wrinkle". The chain of
reasoning this module makes computable:

1. **Uncentered inputs give an outlier.** For inputs :math:`a` with mean :math:`m`
   and covariance :math:`\Sigma = I` the second moment is
   :math:`A = \mathbb E[a a^\top] = I + m m^\top`: one eigenvalue
   :math:`\nu = \lVert m\rVert^2 + 1` in direction :math:`m`, the rest 1
   (:func:`moment_spectrum`). For linear regression with a bias the Hessian is the
   moment of :math:`(a, 1)`, whose outlier is :math:`\approx\lVert m\rVert^2 + 2`
   (exactly :func:`predicted_bias_outlier`), so
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

The experiments the notebook runs on this mathematics (training, sweeps, the data they use) live in
:mod:`lecture_lib.experiments.ics`.

Conventions: a weight matrix is ``(out, in)``. The lecture's :math:`\mathrm{vec}` stacks
columns, so its :math:`A\otimes S` is ``kron(S, A)`` for the row-major flattening that
:mod:`lecture_lib.curvature` uses; :func:`quasi_diagonal` keeps the lecture's
column-stacking order to match the slide. Curvature and identities are float64.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from . import curvature
from ._validate import (Bool, Choice, Function, Inputs, Int, Matrix, Real, Seed, Tensor, accepts, one_of, one_per_run,
                        run_of)
from .models import MLP, BatchNorm, _as_runs, activation as get_activation

F64 = torch.float64


# ---------------------------------------------------------------------------
# 1. the outlier eigenvalue of A = E[a a^T]
# ---------------------------------------------------------------------------

@accepts(a=Tensor(dim=2))
def second_moment(a: torch.Tensor) -> torch.Tensor:
    r"""The uncentered second moment :math:`A = \frac1n \sum_n a_n a_n^\top` of rows ``a`` ``(n, D)``."""
    a = a.to(F64)
    return a.T @ a / a.shape[0]


@accepts(mean=Tensor(dim=1))
def predicted_outlier(mean: torch.Tensor) -> float:
    r""":math:`\nu = \lVert m\rVert^2 + 1`: the top eigenvalue of :math:`I + mm^\top` (inputs with covariance I)."""
    return float(mean.to(F64).pow(2).sum()) + 1.0


@accepts(mean=Tensor(dim=1))
def predicted_bias_outlier(mean: torch.Tensor) -> tuple[float, float]:
    r"""The two eigenvalues that a bias column adds to :math:`I + mm^\top`: ``(top, partner)``.

    With a 1 appended, :math:`\tilde a = (a, 1)` and :math:`\Sigma = I`,
    :math:`\tilde A = E[\tilde a\tilde a^\top] = \begin{pmatrix}I + mm^\top & m\\ m^\top & 1\end{pmatrix}`.
    Vectors :math:`(u, 0)` with :math:`u\perp m` keep eigenvalue 1; on the plane spanned by
    :math:`(\hat m, 0)` and :math:`(0, 1)` the matrix is
    :math:`\begin{pmatrix}1 + \mu^2 & \mu\\ \mu & 1\end{pmatrix}`, :math:`\mu = \lVert m\rVert`,
    with trace :math:`\mu^2 + 2` and determinant 1. Hence

    .. math:: \nu_\pm = \tfrac12\big(\mu^2 + 2 \pm \mu\sqrt{\mu^2 + 4}\big),
        \qquad \nu_+\nu_- = 1, \qquad \nu_+ = \mu^2 + 2 - \mu^{-2} + O(\mu^{-4}),

    so the top eigenvalue is :math:`\approx\lVert m\rVert^2 + 2` (not :math:`+1`) and the condition
    number of :math:`\tilde A` is exactly :math:`\nu_+^2`.
    """
    mu2 = float(mean.to(F64).pow(2).sum())
    top = 0.5 * (mu2 + 2.0 + math.sqrt(mu2 * (mu2 + 4.0)))
    return top, 1.0 / top


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


@accepts(a=Tensor(dim=2))
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


@accepts(activation=Choice(UNITS), dim=Int(), samples=Int(2), seed=Seed(), preactivation_mean=Real())
def unit_features(activation: str, dim: int, samples: int, seed: int = 0,
                  preactivation_mean: float = 0.0) -> torch.Tensor:
    r"""Activations :math:`a = \phi(z)`, :math:`z \sim \mathcal N(\mu, I)` of ``dim`` independent hidden units.

    The classical argument for tanh (LeCun et al. 1998, §4.4): logistic units output
    values in (0, 1) with mean :math:`\approx 1/2`, so :math:`\lVert m\rVert^2 \approx D/4`
    and :math:`A` has an outlier growing with the width; tanh is odd, its outputs have
    mean 0 when :math:`\mu = 0`. Returns ``(samples, dim)`` float64.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, dim, generator=g, dtype=F64) + float(preactivation_mean)
    return get_activation(activation)(z)


@accepts(x=Tensor(dim=2), bias=Bool())
def regression_hessian(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    r"""Hessian of the half mean squared error of a linear model :math:`w^\top x + b`: :math:`E[\tilde x\tilde x^\top]`.

    With ``bias`` the inputs are augmented, :math:`\tilde x = (x, 1)`, so for
    :math:`x \sim \mathcal N(m, \Sigma)`:
    :math:`H = \begin{pmatrix}\Sigma + mm^\top & m\\ m^\top & 1\end{pmatrix}`, whose
    determinant is :math:`\det\Sigma`. For :math:`\Sigma = I` its outlier is
    :math:`\nu_+ \approx \lVert m\rVert^2 + 2` and it comes with a partner eigenvalue
    :math:`1/\nu_+` (:func:`predicted_bias_outlier`), so the condition number is :math:`\nu_+^2`.
    """
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


def _flattened_weights(arguments: Mapping) -> None:
    """``vectors`` has one row per entry of an ``(out_features, len(direction))`` matrix; ``direction`` is not 0."""
    vectors, direction, H = arguments["vectors"], arguments["direction"], arguments["out_features"]
    D = direction.shape[0]
    if vectors.shape[0] != H * D:
        raise ValueError(f"vectors must have out_features * len(direction) = {H * D} rows, got {tuple(vectors.shape)}")
    if float(direction.norm()) == 0:
        raise ValueError("direction must not be the zero vector")


@accepts(_flattened_weights, vectors=Tensor(dim=2), direction=Tensor(dim=1), out_features=Int())
def kronecker_alignment(vectors: torch.Tensor, direction: torch.Tensor, out_features: int) -> torch.Tensor:
    r"""Fraction of each unit vector ``vectors[:, k]`` lying in :math:`\{\hat m \otimes v : v \in \mathbb R^H\}`.

    Vectors are weight matrices flattened row-major (the order of
    :mod:`lecture_lib.curvature`): reshaped to ``(H, D)``, :math:`\hat m\otimes v` is the
    rank-one matrix :math:`v\hat m^\top`, the projection of :math:`U` onto that subspace is
    :math:`(U\hat m)\hat m^\top`, and the fraction is :math:`\lVert U\hat m\rVert^2`.
    """
    H, D = out_features, direction.shape[0]
    m_hat = direction.to(F64) / direction.to(F64).norm()
    U = vectors.to(F64).T.reshape(vectors.shape[1], H, D)
    return (U @ m_hat).pow(2).sum(1)


_layer_exists = one_of("layer", lambda arguments: range(len(arguments["model"].linears)),
                       "a linear layer of model (an index of model.linears)")
BATCH = Inputs()


@accepts(_layer_exists, x=BATCH, layer=Int(0))
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
    name = f"linears.{layer}"
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

COVARIANCE = Matrix(definite=True)


def _moments_agree(arguments: Mapping, D: int) -> None:
    """``mean`` has D entries and ``cov`` is ``(D, D)``."""
    mean, cov = arguments["mean"], arguments["cov"]
    if mean.shape[0] != D:
        raise ValueError(f"mean must have {D} entries, one per input feature (x or model), got {tuple(mean.shape)}")
    if cov.shape != (D, D):
        raise ValueError(f"cov must have shape ({D}, {D}) to match mean's {D} entries, got {tuple(cov.shape)}")


def _moments_fit_x(arguments: Mapping) -> None:
    _moments_agree(arguments, arguments["x"].shape[1])


def _moments_fit_first_layer(arguments: Mapping) -> None:
    _moments_agree(arguments, arguments["model"].linears[0].in_features)


def _moments_fit_each_other(arguments: Mapping) -> None:
    _moments_agree(arguments, arguments["mean"].shape[0])


@accepts(cov=COVARIANCE, power=Real())
def symmetric_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    r""":math:`\Sigma^p = Q\,\mathrm{diag}(\lambda)^p\,Q^\top` of a symmetric positive definite ``cov`` (float64)."""
    evals, evecs = torch.linalg.eigh(cov.to(F64))
    return (evecs * evals.pow(power)) @ evecs.T


@accepts(_moments_fit_x, x=Tensor(dim=2), mean=Tensor(dim=1), cov=COVARIANCE)
def whiten(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r""":math:`\tilde a = \Sigma^{-1/2}(a - m)` row by row (symmetric square root)."""
    out = (x.to(F64) - mean.to(device=x.device, dtype=F64)) @ symmetric_power(cov, -0.5).to(x.device)
    return out.to(x.dtype)


def _absorbs_shift(arguments: Mapping) -> None:
    """The constant :math:`Wm` needs a bias to go to, or a normalizer after the first layer that removes it."""
    model = arguments["model"]
    if model.linears[0].bias is None and not (model.norm in ("batch", "center") and len(model.linears) > 1):
        raise ValueError("model: a first layer without bias can only absorb W m when a normalizer follows it")


@accepts(_moments_fit_first_layer, _absorbs_shift, mean=Tensor(dim=1), cov=COVARIANCE)
def reparameterize(model: MLP, mean: torch.Tensor, cov: torch.Tensor) -> MLP:
    r"""A copy of ``model`` that takes whitened inputs and computes the same function.

    First layer: :math:`\tilde W = W\Sigma^{1/2}`, :math:`\tilde b = b + Wm`, so that
    :math:`\tilde W\tilde a + \tilde b = Wa + b` for :math:`\tilde a = \Sigma^{-1/2}(a-m)`
    (Lecture 5, "ICS and Invariance"). Use with :func:`whiten`:
    ``reparameterize(model, m, S)(whiten(x, m, S)) == model(x)``. With ``norm='batch'``
    the first layer has no bias; the constant :math:`Wm` is removed by the normalizer
    anyway, so only :math:`W` is transformed.
    """
    new = copy.deepcopy(model)
    lin = new.linears[0]
    with torch.no_grad():
        W = lin.weight.to(F64)
        root = symmetric_power(cov, 0.5).to(W.device)
        shift = W @ mean.to(F64).to(W.device)                      # (R, out)
        lin.weight.copy_((W @ root).to(lin.weight.dtype))
        if lin.bias is not None:
            lin.bias.add_(shift.to(lin.bias.dtype))
    return new


@accepts(_moments_fit_each_other, mean=Tensor(dim=1), cov=COVARIANCE, out_features=Int())
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
    H, D = out_features, mean.shape[0]
    mean, cov = mean.to(F64), cov.to(F64)
    I = torch.eye(H, dtype=F64)
    R_inv = torch.zeros(D * H + H, D * H + H, dtype=F64)
    R_inv[:D * H, :D * H] = torch.kron(symmetric_power(cov, 0.5), I)
    R_inv[D * H:, :D * H] = torch.kron(mean.unsqueeze(0), I)
    R_inv[D * H:, D * H:] = I
    R = torch.linalg.inv(R_inv)
    return {"R_inv": R_inv, "R": R, "preconditioner": R @ R.T, "curvature": R_inv.T @ R_inv}


_run_exists = run_of("run")


@accepts(_run_exists, run=Int(0))
def flat_first_layer(model: MLP, run: int = 0) -> torch.Tensor:
    r""":math:`\theta = (\mathrm{vec}\,W, b)` of the first layer of run ``run`` (column-stacked vec)."""
    lin = model.linears[0]
    parts = [lin.weight[run].T.reshape(-1)]
    if lin.bias is not None:
        parts.append(lin.bias[run].reshape(-1))
    return torch.cat(parts)


# ---------------------------------------------------------------------------
# 4. the wrinkle: shifting activations that feed a normalizer changes nothing
# ---------------------------------------------------------------------------

_one_per_run = one_per_run("shift", "scale", runs=lambda arguments: arguments["runs"])


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

    @accepts(_one_per_run, shift=Real(per_run=True, sequences=True), scale=Real(per_run=True, sequences=True),
             runs=Int())
    def __init__(self, sizes, norm: str = "batch", activation: str = "tanh", shift=0.0, scale=1.0,
                 runs: int = 1, seed=0, affine: bool = True, eps: float = 1e-5, dtype=torch.float32, device=None):
        super().__init__(sizes, norm=norm, activation=activation, runs=runs, seed=seed, affine=affine,
                         eps=eps, dtype=dtype, device=device)
        for name, value in (("shift", shift), ("scale", scale)):       # one value per run
            per_run = torch.as_tensor(value, dtype=dtype).expand(runs).clone()
            self.register_buffer(name, per_run.to(self.linears[0].weight.device))

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


def _centering_batch(arguments: Mapping) -> None:
    a, weight = arguments["a"], arguments["weight"]
    if weight.shape[1] != a.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} inputs but a has {a.shape[1]} features")
    if a.shape[0] < 2:
        raise ValueError(f"a must hold a batch of at least 2 examples (batch centering), got {a.shape[0]}")


@accepts(_centering_batch, a=Tensor(dim=2), weight=Tensor(dim=2), loss_fn=Function())
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
