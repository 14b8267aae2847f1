r"""Implicit learning-rate decay: what scale invariance does to gradient descent.

A normalizer after a linear layer makes the cost *scale invariant* in each
unit's incoming weights: :math:`\mathcal J(c\,w) = \mathcal J(w)` for every
rescaling factor :math:`c > 0` (homogeneous of degree 0). The lecture's :math:`\gamma` is K-FAC's
damping, so the rescaling factor is :math:`c` throughout. Euler's theorem for homogeneous
functions then gives two identities,

.. math::

    \nabla\mathcal J(c\,w) = c^{-1}\,\nabla\mathcal J(w), \qquad
    w^\top \nabla\mathcal J(w) = 0 ,

and with them the whole story of the lecture's "implicit learning-rate decay"
(Lecture 5 slides, Grosse 2022; van Laarhoven 2017; Hoffer et al. 2018; Arora,
Li & Lyu 2019):

* the direction :math:`\hat w = w/\lVert w\rVert` moves with the *effective*
  learning rate :math:`\alpha/\lVert w\rVert^2`;
* plain SGD steps are orthogonal to :math:`w`, so by Pythagoras
  :math:`\lVert w_{k+1}\rVert^2 = \lVert w_k\rVert^2 + \alpha^2\lVert\nabla\mathcal J(w_k)\rVert^2`:
  the norm only grows, and the effective learning rate only falls;
* if :math:`\lVert\nabla\mathcal J(\hat w)\rVert` were constant, :math:`\lVert w_k\rVert^2
  \approx \lVert w_0\rVert^2\sqrt{1 + k/k_0}` with :math:`k_0 = \lVert w_0\rVert^4/(2\alpha^2 G^2)`
  (:func:`sqrt_law`, :func:`sqrt_law_k0`) and :math:`\hat\alpha_k = \hat\alpha_0/\sqrt{1 + k/k_0}`.

Remedies (each a few lines here): weight decay, an exponentially increasing
learning rate (Li & Arora 2020, :func:`exponential_lr`), or projecting the
weights back to the unit sphere after each step.

This module is pure science: tensors and numpy arrays in, small dataclasses out. The
experiments of notebook 04 (the toy model, the batch-norm network, the sweeps) live in
:mod:`lecture_lib.experiments.implicit_decay`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from . import optim
from ._validate import (Array, Choice, Function, Inputs, Instance, NonNegative, Positive, Tensor, Where, accepts, as_array,
                        one_of, one_per_run, one_target_per_example)
from .optim.base import MASK, chain
from .optim.transforms import masked, project_to_unit_norm
from .record import Record

__all__ = [
    "EulerCheck", "euler_identities", "pythagorean_residual", "SqrtLawFit", "fit_sqrt_law", "exponential_lr",
    "sqrt_law_k0", "sqrt_law", "remedy_optimizer", "direction_grad_norm", "layer_learning_rates", "REMEDIES",
]


# --------------------------------------------------------------------------------------
# 0. What the functions below accept (checked once, at entry: see lecture_lib._validate)
# --------------------------------------------------------------------------------------

def _scale_factors(name: str, value) -> torch.Tensor:
    """The grid of rescaling factors c > 0, as a 1-D float64 tensor."""
    try:
        g = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a sequence of scale factors, got {value!r}") from None
    return Positive(per_run=True).check(name, g, {}).reshape(-1)  # 1-D, non-empty, finite, > 0


_known_parameter = one_of("name", lambda arguments: sorted(k for k, _ in arguments["model"].named_parameters()),
                          "a parameter of model")


def decay_factor_positive(arguments) -> None:
    r"""The decay factor of one step, :math:`q = 1 - \alpha\lambda`, must stay positive."""
    if bool(torch.as_tensor(arguments["lr"] * arguments["weight_decay"] >= 1).any()):
        raise ValueError("lr * weight_decay must be below 1 (else weight decay flips the sign of w)")


FACTORS = Where(_scale_factors, bad=([], [0.0], [-1.0], [float("nan")], [[1.0, 2.0], [1.0, 2.0]], "ab", None))
LR = Positive(per_run=True)


# --------------------------------------------------------------------------------------
# 1. Scale invariance and Euler's identities
# --------------------------------------------------------------------------------------

@dataclass
class EulerCheck:
    r"""Scale invariance measured on one parameter tensor ``name`` over a grid of rescaling factors :math:`c`.

    All arrays have shape ``(F,)``, one entry per factor :math:`c` in ``factors``:

    ``loss``               :math:`\mathcal J(c\,w)`
    ``grad_norm``          :math:`\lVert\nabla\mathcal J(c\,w)\rVert`
    ``loss_change``        :math:`|\mathcal J(c\,w) - \mathcal J(w)| / |\mathcal J(w)|` (0 if invariant)
    ``euler_error``        :math:`\lVert c\,\nabla\mathcal J(c\,w) - \nabla\mathcal J(w)\rVert / \lVert\nabla\mathcal J(w)\rVert`
    ``cosine``             :math:`\cos\angle(w, \nabla\mathcal J(c\,w))` (0 if invariant)
    ``unit_cosine``        the largest :math:`|\cos|` over the rows (units) of a weight matrix
    """

    name: str
    factors: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    loss_change: np.ndarray
    euler_error: np.ndarray
    cosine: np.ndarray
    unit_cosine: np.ndarray
    scale_invariant: bool

    def at(self, factor: float) -> dict[str, float]:
        """The row of the table nearest to the rescaling factor ``factor``, as plain floats (for a panel's notes)."""
        i = int(np.argmin(np.abs(np.log(self.factors) - math.log(factor))))
        return {k: float(getattr(self, k)[i]) for k in
                ("factors", "loss", "grad_norm", "loss_change", "euler_error", "cosine", "unit_cosine")}


def _loss_and_grad(model, loss_fn, x, y, params, buffers, name):
    p = dict(params)
    leaf = p[name].detach().clone().requires_grad_(True)
    p[name] = leaf
    # fresh copies of the buffers: batch norm's running averages are updated in place
    state = {**p, **{k: v.clone() for k, v in buffers.items()}}
    loss = loss_fn(functional_call(model, state, (x,)), y).sum()
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad.detach()


@accepts(one_target_per_example(), _known_parameter, model=Instance(torch.nn.Module), loss_fn=Function(), x=Inputs(),
         y=Tensor(), factors=FACTORS)
def euler_identities(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                     name: str, factors: Sequence[float] | torch.Tensor) -> EulerCheck:
    r"""Rescale one parameter tensor, :math:`w \to c\,w`, and measure the Euler identities.

    For a scale-invariant tensor (``model.scale_invariant[name]``) the loss is flat in
    :math:`c`, :math:`c\,\nabla\mathcal J(c\,w) = \nabla\mathcal J(w)` and
    :math:`w \perp \nabla\mathcal J(w)`, up to rounding (and, for batch norm, up to its
    :math:`\epsilon`). For any other tensor (an output layer) none of this holds, which is
    the contrast the notebook draws. The model itself is left untouched (batch norm's
    running statistics included). Quantities are summed over the run dimension.

    Args:
        model: a ``lecture_lib.models`` model (parameters with a leading run dimension).
        loss_fn: per-run loss ``(outputs, y) -> (R,)``, e.g. ``lecture_lib.losses.mse``.
        x, y: one batch (the batch statistics of batch norm are this batch's).
        name: the parameter to rescale, e.g. ``"linears.0.weight"`` or ``"w"``.
        factors: the rescaling factors :math:`c > 0`.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    w = params[name]
    loss0, grad0 = _loss_and_grad(model, loss_fn, x, y, params, buffers, name)
    rows = {k: [] for k in ("loss", "grad_norm", "loss_change", "euler_error", "cosine", "unit_cosine")}
    tiny = torch.finfo(w.dtype).tiny
    for c in factors.tolist():
        scaled = dict(params)
        scaled[name] = w * c
        loss, grad = _loss_and_grad(model, loss_fn, x, y, scaled, buffers, name)
        gn = grad.norm()
        rows["loss"].append(float(loss))
        rows["grad_norm"].append(float(gn))
        rows["loss_change"].append(float((loss - loss0).abs() / loss0.abs().clamp_min(tiny)))
        rows["euler_error"].append(float((c * grad - grad0).norm() / grad0.norm().clamp_min(tiny)))
        rows["cosine"].append(float((w * grad).sum() / (w.norm() * gn).clamp_min(tiny)))
        if w.dim() >= 3:  # (R, out, in): one incoming weight vector per unit
            unit = (w * grad).sum(-1) / (w.norm(dim=-1) * grad.norm(dim=-1)).clamp_min(tiny)
            rows["unit_cosine"].append(float(unit.abs().max()))
        else:
            rows["unit_cosine"].append(abs(rows["cosine"][-1]))
    flags = getattr(model, "scale_invariant", {})
    return EulerCheck(name=name, factors=factors.numpy(), scale_invariant=bool(flags.get(name, False)),
                      **{k: np.asarray(v) for k, v in rows.items()})


# --------------------------------------------------------------------------------------
# 2. Pythagorean growth and the square-root law
# --------------------------------------------------------------------------------------

def _same_table_shape(arguments) -> None:
    if arguments["param_norm"].shape != arguments["grad_norm"].shape:
        raise ValueError(f"param_norm and grad_norm must both have shape (K, R), "
                         f"got {arguments['param_norm'].shape} and {arguments['grad_norm'].shape}")


@accepts(_same_table_shape, one_per_run("lr", runs=lambda arguments: arguments["param_norm"].shape[1],
                                        of="param_norm", single=True),
         param_norm=Array(ndim=2, min_rows=2, positive=True), grad_norm=Array(ndim=2, min_rows=2),
         lr=Positive(per_run=True, sequences=True))
def pythagorean_residual(param_norm: np.ndarray, grad_norm: np.ndarray, lr) -> np.ndarray:
    r"""How far each SGD step is from Pythagoras, relative to :math:`\lVert w_{k+1}\rVert^2`.

    .. math::

        r_k = \frac{\lVert w_{k+1}\rVert^2 - \lVert w_k\rVert^2 - \alpha^2\lVert\nabla\mathcal J(w_k)\rVert^2}
                   {\lVert w_{k+1}\rVert^2}

    ``param_norm[k]`` is :math:`\lVert w_k\rVert` and ``grad_norm[k]`` the norm of the
    gradient taken *at* :math:`w_k` (the step from :math:`w_k` to :math:`w_{k+1}`);
    arrays ``(K, R)`` as in :class:`lecture_lib.record.Record` (every recorded step,
    ``record_every=1``); ``lr`` a float or one value per run. Returns ``(K-1, R)``,
    zero up to rounding for a scale-invariant tensor trained by SGD without weight decay.
    """
    pn, gn, alpha = param_norm, grad_norm, as_array("lr", lr)
    grow = pn[1:] ** 2 - pn[:-1] ** 2 - alpha ** 2 * gn[:-1] ** 2
    return grow / pn[1:] ** 2


@accepts(sq_norm0=Positive(), lr=Positive(), grad_norm_hat=Positive())
def sqrt_law_k0(sq_norm0: float, lr: float, grad_norm_hat: float) -> float:
    r"""The time scale :math:`k_0 = \lVert w_0\rVert^4 / (2\alpha^2\lVert\nabla\mathcal J(\hat w)\rVert^2)`.

    Squaring the Pythagorean recursion :math:`x_{k+1} = x_k + \alpha^2 G^2 / x_k`
    (with :math:`x = \lVert w\rVert^2`, :math:`G = \lVert\nabla\mathcal J(\hat w)\rVert`) gives
    :math:`x_{k+1}^2 \approx x_k^2 + 2\alpha^2 G^2`, so :math:`x_k^2 \approx x_0^2 (1 + k/k_0)`.
    Late in training (:math:`k \gg k_0`) the effective learning rate
    :math:`\alpha/x_k \approx 1/(G\sqrt{2k})` no longer depends on :math:`\alpha`.
    """
    return sq_norm0 ** 2 / (2.0 * lr ** 2 * grad_norm_hat ** 2)


def _steps_counted(arguments) -> None:
    if np.any(arguments["steps"] < 0):
        raise ValueError("steps must be step counts k >= 0")


@accepts(_steps_counted, steps=Array(ndim=1, finite=True, also_bad=(np.array([-2.0, 0.0, 1.0]),)),
         sq_norm0=Positive(), lr=Positive(), grad_norm_hat=Positive())
def sqrt_law(steps, sq_norm0: float, lr: float, grad_norm_hat: float) -> np.ndarray:
    r"""The square-root law's *prediction* :math:`\lVert w_k\rVert^2 = \lVert w_0\rVert^2\sqrt{1 + k/k_0}`.

    No parameter is fitted: :math:`k_0 = \lVert w_0\rVert^4/(2\alpha^2G^2)` (:func:`sqrt_law_k0`)
    from the initial squared norm ``sq_norm0``, the learning rate ``lr`` and
    :math:`G = \lVert\nabla\mathcal J(\hat w)\rVert` (``grad_norm_hat``), which should come
    from somewhere other than the run the prediction is compared with (an independent run,
    or a probe of the gradient on separate minibatches). Returns an array shaped like ``steps``.
    """
    return sq_norm0 * np.sqrt(1.0 + steps / sqrt_law_k0(sq_norm0, lr, grad_norm_hat))


@dataclass
class SqrtLawFit:
    r"""A two-parameter fit :math:`\lVert w_k\rVert^2 \approx a\,\sqrt{1 + k/k_0}` (``scale`` :math:`a`, ``k0``).

    A fit to the very run it is drawn over explains that run by construction; it is a
    diagnostic (is the growth √-shaped at all?), not a test of the law. The law's prediction
    is :func:`sqrt_law` with :math:`G` from an independent run or probe.

    ``r2`` is the coefficient of determination of the fitted curve against the data
    (1 = the square-root law explains all the growth).
    """

    scale: float
    k0: float
    r2: float

    @property
    def slope(self) -> float:
        r"""Growth of :math:`\lVert w\rVert^4` per step, :math:`a^2/k_0`; theory: :math:`2\alpha^2\lVert\nabla\mathcal J(\hat w)\rVert^2`."""
        return self.scale ** 2 / self.k0

    def predict(self, steps) -> np.ndarray:
        """:math:`a\\sqrt{1 + k/k_0}` at the given steps."""
        k = np.asarray(steps, dtype=np.float64)
        return self.scale * np.sqrt(1.0 + k / self.k0) if math.isfinite(self.k0) else np.full_like(k, self.scale)

    def effective_lr(self, steps, lr: float) -> np.ndarray:
        r"""The implied schedule :math:`\hat\alpha_k = \alpha/\lVert w_k\rVert^2 = \hat\alpha_0/\sqrt{1 + k/k_0}`."""
        return lr / self.predict(steps)


def _enough_points(arguments) -> None:
    k, x = arguments["steps"], arguments["sq_norm"]
    if k.shape != x.shape or k.size < 3:
        raise ValueError(f"steps and sq_norm must be 1-D of equal length >= 3, got {k.shape} and {x.shape}")
    x = x[np.isfinite(x)]
    if x.size < 3:
        raise ValueError("sq_norm has fewer than 3 finite values (did the run diverge at once?)")
    if np.any(x <= 0):
        raise ValueError("sq_norm must be positive")


@accepts(_enough_points, steps=Array(ndim=1, finite=True, also_bad=(np.arange(2.0),)),
         sq_norm=Array(ndim=1, also_bad=(np.ones(3), np.array([1.0, -1.0, 1.0, 1.0, 1.0]), np.full(5, np.nan))))
def fit_sqrt_law(steps, sq_norm) -> SqrtLawFit:
    r"""Fit :math:`\lVert w_k\rVert^2 = a\sqrt{1 + k/k_0}` to one run's squared norms.

    The law is linear in disguise: :math:`\lVert w_k\rVert^4 = a^2 + (a^2/k_0)\,k`, so an
    ordinary least-squares line through :math:`(k, \lVert w_k\rVert^4)` gives intercept
    :math:`a^2` and slope :math:`a^2/k_0` in closed form (no iterative fitting, no
    starting guess). A non-positive slope (no growth) gives :math:`k_0 = \infty`.
    ``r2`` is computed on :math:`\lVert w_k\rVert^2` itself.
    """
    ok = np.isfinite(sq_norm)  # a run that diverged: fit the steps before it did
    k, x = steps[ok], sq_norm[ok]
    slope, intercept = np.polyfit(k, x ** 2, 1)
    intercept = max(float(intercept), float(np.min(x)) ** 2 * 1e-12)
    scale = math.sqrt(intercept)
    span = float(k.max() - k.min())
    k0 = intercept / slope if slope * span > 1e-9 * intercept else math.inf  # no growth beyond rounding
    fit = SqrtLawFit(scale=scale, k0=float(k0), r2=float("nan"))
    resid = x - fit.predict(k)
    total = np.sum((x - x.mean()) ** 2)
    fit.r2 = float(1.0 - np.sum(resid ** 2) / total) if total > 0 else 1.0
    return fit


# --------------------------------------------------------------------------------------
# 3. Remedies
# --------------------------------------------------------------------------------------

@accepts(decay_factor_positive, lr=LR, weight_decay=NonNegative(per_run=True))
def exponential_lr(lr, weight_decay) -> Callable[[int], float | torch.Tensor]:
    r"""The exponentially increasing learning rate equivalent to weight decay (Li & Arora 2020).

    For a scale-invariant cost, SGD with weight decay :math:`\lambda`,
    :math:`w_{k+1} = (1-\alpha\lambda)w_k - \alpha\nabla\mathcal J(w_k)`, and SGD *without*
    weight decay but with learning rate

    .. math:: \alpha_k = \alpha\,q^{-(2k+1)}, \qquad q = 1 - \alpha\lambda,

    produce the same directions :math:`\hat w_k` at every step: substituting
    :math:`\tilde w_k = w_k/q^k` and using :math:`\nabla\mathcal J(q^k\tilde w) =
    q^{-k}\nabla\mathcal J(\tilde w)` turns one recursion into the other. Returns a
    schedule ``step -> lr`` (``step`` counts from 0) for ``scale_by_lr``; ``lr`` and
    ``weight_decay`` may be floats or per-run ``(R,)`` tensors.
    """
    decay = 1.0 - lr * weight_decay

    def schedule(step: int):
        return lr * decay ** (-(2 * int(step) + 1))

    return schedule


REMEDIES = ("none", "weight_decay", "exp_schedule", "unit_norm")


def _complement(mask):
    """The tensors a mask leaves out (``None`` means all tensors, so nothing is left out)."""
    if mask is None:
        return lambda name: False
    inside = mask if callable(mask) else (lambda name: bool(mask.get(name, False)))
    return lambda name: not inside(name)


@accepts(lr=LR, remedy=Choice(REMEDIES), weight_decay=NonNegative(per_run=True), mask=MASK)
def remedy_optimizer(lr, remedy: str = "none", weight_decay=0.0, mask=None) -> optim.Transform:
    r"""SGD with one remedy for implicit learning-rate decay, applied to the tensors in ``mask``.

    ==================  =====================================================================
    ``remedy``          update of a tensor in ``mask`` (all others: :math:`w - \alpha\nabla\mathcal J`)
    ==================  =====================================================================
    ``'none'``          :math:`w - \alpha\nabla\mathcal J(w)`
    ``'weight_decay'``  :math:`(1-\alpha\lambda)w - \alpha\nabla\mathcal J(w)`
    ``'exp_schedule'``  :math:`w - \alpha\,q^{-(2k+1)}\nabla\mathcal J(w)`, :math:`q = 1-\alpha\lambda`
                        (Li & Arora 2020; see :func:`exponential_lr`)
    ``'unit_norm'``     :math:`(w - \alpha\nabla\mathcal J)/\lVert w - \alpha\nabla\mathcal J\rVert`
                        (effective learning rate exactly :math:`\alpha` once :math:`\lVert w\rVert = 1`)
    ==================  =====================================================================

    ``lr`` (:math:`\alpha`) and ``weight_decay`` (:math:`\lambda`) are floats or ``(R,)``
    tensors. ``hparams['lr']`` is the learning rate *of the masked tensors*, so a
    training record's ``effective_lr`` of a scale-invariant tensor is :math:`\alpha_k/\lVert w_k\rVert^2`.
    """
    if remedy == "weight_decay":  # (1 - αλ)w - α∇J on the masked tensors
        return optim.get("sgd", lr=lr, weight_decay=weight_decay, weight_decay_mask=mask)
    sgd = optim.get("sgd", lr=lr)
    if remedy == "unit_norm":  # the SGD step, then back onto the unit sphere
        return chain(sgd, project_to_unit_norm(mask))
    if remedy == "exp_schedule":  # α ϱ^-(2k+1) on the masked tensors: last, so it is the chain's hparams['lr']
        return chain(masked(sgd, _complement(mask)),
                     masked(optim.get("sgd", lr=exponential_lr(lr, weight_decay)), mask))
    return sgd


# --------------------------------------------------------------------------------------
# 4. Reading a training record
# --------------------------------------------------------------------------------------

def direction_grad_norm(record, name: str) -> np.ndarray:
    r""":math:`\lVert\nabla\mathcal J(\hat w_k)\rVert = \lVert w_k\rVert\,\lVert\nabla\mathcal J(w_k)\rVert` (Euler), ``(K, R)``."""
    return record.param_norm[name] * record.grad_norm[name]


@accepts(one_per_run("lr", runs=lambda arguments: arguments["record"].runs, of="record", single=True),
         record=Instance(Record), lr=Positive(per_run=True, sequences=True))
def layer_learning_rates(record, lr) -> dict[str, np.ndarray]:
    r"""The learning rate each parameter tensor effectively trains with, ``name -> (K, R)``.

    A scale-invariant tensor moves its direction with :math:`\alpha_k/\lVert w_k\rVert^2`
    (``record.effective_lr``), which Pythagorean growth keeps lowering; every other tensor
    (the output layer, batch norm's gain and shift) feels the explicit :math:`\alpha_k`
    itself. Their ratio is how much faster the output layer trains, relative to the
    hidden layers, as training goes on (Lecture 5: the output layer escapes the decay).
    ``lr`` is the explicit :math:`\alpha` of the other tensors: a float or one value per run.
    """
    alpha = as_array("lr", lr)
    rates = {}
    for name, eff in record.effective_lr.items():
        if record.scale_invariant.get(name, False):
            rates[name] = eff
        else:
            rates[name] = np.where(np.isnan(eff), np.nan, np.broadcast_to(alpha, eff.shape))
    return rates
