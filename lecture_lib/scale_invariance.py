r"""Implicit learning-rate decay: what scale invariance does to gradient descent.

A normalizer after a linear layer makes the cost *scale invariant* in each
unit's incoming weights: :math:`\mathcal J(\gamma w) = \mathcal J(w)` for every
:math:`\gamma > 0` (homogeneous of degree 0). Euler's theorem for homogeneous
functions then gives two identities,

.. math::

    \nabla\mathcal J(\gamma w) = \gamma^{-1}\,\nabla\mathcal J(w), \qquad
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
  \propto \sqrt{1 + k/k_0}` and :math:`\hat\alpha_k = \hat\alpha_0/\sqrt{1 + k/k_0}`.

Remedies (each a few lines here): weight decay, an exponentially increasing
learning rate (Li & Arora 2020, :func:`exponential_lr`), or projecting the
weights back to the unit sphere after each step.

This module is pure science: tensors and numpy arrays in, small dataclasses out.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from .optim.kfac import check_inputs

from ._validate import check_choice, check_int, check_nonnegative, check_positive, check_range, check_tensor

__all__ = [
    "EulerCheck", "euler_identities", "pythagorean_residual", "SqrtLawFit", "fit_sqrt_law",
    "exponential_lr", "sqrt_law_k0",
]


# --------------------------------------------------------------------------------------
# 1. Scale invariance and Euler's identities
# --------------------------------------------------------------------------------------

@dataclass
class EulerCheck:
    r"""Scale invariance measured on one parameter tensor ``name`` over a grid of :math:`\gamma`.

    All arrays have shape ``(G,)``, one entry per :math:`\gamma` in ``gammas``:

    ``loss``               :math:`\mathcal J(\gamma w)`
    ``grad_norm``          :math:`\lVert\nabla\mathcal J(\gamma w)\rVert`
    ``loss_change``        :math:`|\mathcal J(\gamma w) - \mathcal J(w)| / |\mathcal J(w)|` (0 if invariant)
    ``euler_error``        :math:`\lVert\gamma\nabla\mathcal J(\gamma w) - \nabla\mathcal J(w)\rVert / \lVert\nabla\mathcal J(w)\rVert`
    ``cosine``             :math:`\cos\angle(w, \nabla\mathcal J(\gamma w))` (0 if invariant)
    ``unit_cosine``        the largest :math:`|\cos|` over the rows (units) of a weight matrix
    """

    name: str
    gammas: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    loss_change: np.ndarray
    euler_error: np.ndarray
    cosine: np.ndarray
    unit_cosine: np.ndarray
    scale_invariant: bool

    def at(self, gamma: float) -> dict[str, float]:
        """The row of the table nearest to ``gamma``, as plain floats (for a panel's notes)."""
        i = int(np.argmin(np.abs(np.log(self.gammas) - math.log(gamma))))
        return {k: float(getattr(self, k)[i]) for k in
                ("gammas", "loss", "grad_norm", "loss_change", "euler_error", "cosine", "unit_cosine")}


def _loss_and_grad(model, loss_fn, x, y, params, buffers, name):
    p = dict(params)
    leaf = p[name].detach().clone().requires_grad_(True)
    p[name] = leaf
    # fresh copies of the buffers: batch norm's running averages are updated in place
    state = {**p, **{k: v.clone() for k, v in buffers.items()}}
    loss = loss_fn(functional_call(model, state, (x,)), y).sum()
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad.detach()


def euler_identities(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                     name: str, gammas: Sequence[float] | torch.Tensor) -> EulerCheck:
    r"""Rescale one parameter tensor, :math:`w \to \gamma w`, and measure the Euler identities.

    For a scale-invariant tensor (``model.scale_invariant[name]``) the loss is flat in
    :math:`\gamma`, :math:`\gamma\nabla\mathcal J(\gamma w) = \nabla\mathcal J(w)` and
    :math:`w \perp \nabla\mathcal J(w)`, up to rounding (and, for batch norm, up to its
    :math:`\epsilon`). For any other tensor (an output layer) none of this holds, which is
    the contrast the notebook draws. The model itself is left untouched (batch norm's
    running statistics included). Quantities are summed over the run dimension.

    Args:
        model: a ``lecture_lib.models`` model (parameters with a leading run dimension).
        loss_fn: per-run loss ``(outputs, y) -> (R,)``, e.g. ``lecture_lib.losses.mse``.
        x, y: one batch (the batch statistics of batch norm are this batch's).
        name: the parameter to rescale, e.g. ``"linears.0.weight"`` or ``"w"``.
        gammas: the scale factors :math:`\gamma > 0`.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    if not isinstance(name, str) or name not in params:
        raise ValueError(f"name must be one of the model's parameters {sorted(params)}, got {name!r}")
    try:
        g = torch.as_tensor(gammas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"gammas must be a sequence of scale factors, got {gammas!r}") from None
    g = g.reshape(1) if g.dim() == 0 else g
    check_tensor("gammas", g, dim=1)
    check_inputs(x, y)
    check_positive("gammas", g)
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    w = params[name]
    loss0, grad0 = _loss_and_grad(model, loss_fn, x, y, params, buffers, name)
    rows = {k: [] for k in ("loss", "grad_norm", "loss_change", "euler_error", "cosine", "unit_cosine")}
    tiny = torch.finfo(w.dtype).tiny
    for gamma in g.tolist():
        scaled = dict(params)
        scaled[name] = w * gamma
        loss, grad = _loss_and_grad(model, loss_fn, x, y, scaled, buffers, name)
        gn = grad.norm()
        rows["loss"].append(float(loss))
        rows["grad_norm"].append(float(gn))
        rows["loss_change"].append(float((loss - loss0).abs() / loss0.abs().clamp_min(tiny)))
        rows["euler_error"].append(float((gamma * grad - grad0).norm() / grad0.norm().clamp_min(tiny)))
        rows["cosine"].append(float((w * grad).sum() / (w.norm() * gn).clamp_min(tiny)))
        if w.dim() >= 3:  # (R, out, in): one incoming weight vector per unit
            unit = (w * grad).sum(-1) / (w.norm(dim=-1) * grad.norm(dim=-1)).clamp_min(tiny)
            rows["unit_cosine"].append(float(unit.abs().max()))
        else:
            rows["unit_cosine"].append(abs(rows["cosine"][-1]))
    flags = getattr(model, "scale_invariant", {})
    return EulerCheck(name=name, gammas=g.numpy(), scale_invariant=bool(flags.get(name, False)),
                      **{k: np.asarray(v) for k, v in rows.items()})


def _array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; a ``TypeError`` naming ``name`` if it holds no numbers."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None


def _per_run_array(name: str, value, runs: int) -> np.ndarray:
    """A positive hyperparameter: a float or one value per run (``(R,)``), as an array that broadcasts to ``(K, R)``."""
    if isinstance(value, (list, tuple, np.ndarray)):
        value = torch.as_tensor(_array(name, value))
    check_positive(name, value)
    a = _array(name, value)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, runs)):
        raise ValueError(f"{name} must be a float or one value per run ({runs},), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------------------
# 2. Pythagorean growth and the square-root law
# --------------------------------------------------------------------------------------

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
    pn, gn = _array("param_norm", param_norm), _array("grad_norm", grad_norm)
    if pn.shape != gn.shape or pn.ndim != 2 or pn.shape[0] < 2:
        raise ValueError(f"param_norm and grad_norm must both have shape (K, R) with K >= 2, "
                         f"got {pn.shape} and {gn.shape}")
    if np.any(pn[np.isfinite(pn)] <= 0):
        raise ValueError("param_norm must be positive (the relative residual divides by ||w_{k+1}||^2)")
    alpha = _per_run_array("lr", lr, pn.shape[1])
    grow = pn[1:] ** 2 - pn[:-1] ** 2 - alpha ** 2 * gn[:-1] ** 2
    return grow / pn[1:] ** 2


def sqrt_law_k0(sq_norm0: float, lr: float, grad_norm_hat: float) -> float:
    r"""The time scale :math:`k_0 = \lVert w_0\rVert^4 / (2\alpha^2\lVert\nabla\mathcal J(\hat w)\rVert^2)`.

    Squaring the Pythagorean recursion :math:`x_{k+1} = x_k + \alpha^2 G^2 / x_k`
    (with :math:`x = \lVert w\rVert^2`, :math:`G = \lVert\nabla\mathcal J(\hat w)\rVert`) gives
    :math:`x_{k+1}^2 \approx x_k^2 + 2\alpha^2 G^2`, so :math:`x_k^2 \approx x_0^2 (1 + k/k_0)`.
    Late in training (:math:`k \gg k_0`) the effective learning rate
    :math:`\alpha/x_k \approx 1/(G\sqrt{2k})` no longer depends on :math:`\alpha`.
    """
    check_positive("sq_norm0", sq_norm0)
    check_positive("lr", lr)
    check_positive("grad_norm_hat", grad_norm_hat)
    return sq_norm0 ** 2 / (2.0 * lr ** 2 * grad_norm_hat ** 2)


@dataclass
class SqrtLawFit:
    r"""A fit :math:`\lVert w_k\rVert^2 \approx c\,\sqrt{1 + k/k_0}` (``scale`` :math:`c`, ``k0``).

    ``r2`` is the coefficient of determination of the fitted curve against the data
    (1 = the square-root law explains all the growth).
    """

    scale: float
    k0: float
    r2: float

    @property
    def slope(self) -> float:
        r"""Growth of :math:`\lVert w\rVert^4` per step, :math:`c^2/k_0`; theory: :math:`2\alpha^2\lVert\nabla\mathcal J(\hat w)\rVert^2`."""
        return self.scale ** 2 / self.k0

    def predict(self, steps) -> np.ndarray:
        """:math:`c\\sqrt{1 + k/k_0}` at the given steps."""
        k = np.asarray(steps, dtype=np.float64)
        return self.scale * np.sqrt(1.0 + k / self.k0) if math.isfinite(self.k0) else np.full_like(k, self.scale)

    def effective_lr(self, steps, lr: float) -> np.ndarray:
        r"""The implied schedule :math:`\hat\alpha_k = \alpha/\lVert w_k\rVert^2 = \hat\alpha_0/\sqrt{1 + k/k_0}`."""
        return lr / self.predict(steps)


def fit_sqrt_law(steps, sq_norm) -> SqrtLawFit:
    r"""Fit :math:`\lVert w_k\rVert^2 = c\sqrt{1 + k/k_0}` to one run's squared norms.

    The law is linear in disguise: :math:`\lVert w_k\rVert^4 = c^2 + (c^2/k_0)\,k`, so an
    ordinary least-squares line through :math:`(k, \lVert w_k\rVert^4)` gives intercept
    :math:`c^2` and slope :math:`c^2/k_0` in closed form (no iterative fitting, no
    starting guess). A non-positive slope (no growth) gives :math:`k_0 = \infty`.
    ``r2`` is computed on :math:`\lVert w_k\rVert^2` itself.
    """
    k = _array("steps", steps).ravel()
    x = _array("sq_norm", sq_norm).ravel()
    if k.shape != x.shape or k.size < 3:
        raise ValueError(f"steps and sq_norm must be 1-D of equal length >= 3, got {k.shape} and {x.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError("steps must be finite")
    ok = np.isfinite(x)
    k, x = k[ok], x[ok]
    if k.size < 3:
        raise ValueError("sq_norm has fewer than 3 finite values (did the run diverge at once?)")
    if np.any(x <= 0):
        raise ValueError("sq_norm must be positive")
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

def exponential_lr(lr, weight_decay) -> Callable[[int], float | torch.Tensor]:
    r"""The exponentially increasing learning rate equivalent to weight decay (Li & Arora 2020).

    For a scale-invariant cost, SGD with weight decay :math:`\lambda`,
    :math:`w_{k+1} = (1-\alpha\lambda)w_k - \alpha\nabla\mathcal J(w_k)`, and SGD *without*
    weight decay but with learning rate

    .. math:: \alpha_k = \alpha\,\varrho^{-(2k+1)}, \qquad \varrho = 1 - \alpha\lambda,

    produce the same directions :math:`\hat w_k` at every step: substituting
    :math:`\tilde w_k = w_k/\varrho^k` and using :math:`\nabla\mathcal J(\varrho^k\tilde w) =
    \varrho^{-k}\nabla\mathcal J(\tilde w)` turns one recursion into the other. Returns a
    schedule ``step -> lr`` (``step`` counts from 0) for ``scale_by_lr``; ``lr`` and
    ``weight_decay`` may be floats or per-run ``(R,)`` tensors.
    """
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    decay = 1.0 - lr * weight_decay
    if bool(torch.as_tensor(decay <= 0).any()):
        raise ValueError("lr * weight_decay must be below 1 for the equivalent schedule to exist")

    def schedule(step: int):
        return lr * decay ** (-(2 * int(step) + 1))

    return schedule


# --------------------------------------------------------------------------------------
# 4. The experiments: a toy scale-invariant model and a batch-norm network
# --------------------------------------------------------------------------------------

REMEDIES = ("none", "weight_decay", "exp_schedule", "unit_norm")
OPTIMIZERS = ("sgd", "adam", "kfac")


def toy_setup(runs: int = 1, dim: int = 20, n: int = 512, noise: float = 1.0, scale: float = 1.0,
              init_norm: float = 1.0, seed: int = 0, dtype=torch.float64):
    r"""The toy scale-invariant model :math:`f(x) = c\,x^\top w/\lVert w\rVert` on noisy linear regression.

    Every run starts from the same :math:`w_0` (``seed``) so that a learning-rate sweep
    compares like with like. With label noise the minibatch gradient never vanishes, so
    :math:`\lVert\nabla\mathcal J(\hat w)\rVert` stays roughly constant: the regime in which
    the square-root law holds. Returns ``(model, data)``.
    """
    from .data import linear_regression
    from .models import ScaleInvariantLinear

    model = ScaleInvariantLinear(dim, scale=scale, runs=runs, seed=seed, init_norm=init_norm, dtype=dtype)
    data = linear_regression(n=n, dim=dim, noise=noise, seed=seed, dtype=dtype)
    return model, data


def bn_setup(runs: int = 1, width: int = 64, depth: int = 2, seed: int = 0, eps: float = 1e-5,
             dtype=torch.float32):
    r"""A batch-norm MLP on the scikit-learn digits: ``[64, width × depth, 10]``, returns ``(model, data)``.

    The hidden weights ``linears.{0..depth-1}.weight`` are scale invariant; the output
    layer ``linears.{depth}`` (weight and bias) is not. ``eps`` is batch norm's
    :math:`\epsilon`, which makes the invariance approximate (exact as :math:`\epsilon \to 0`).
    """
    from .data import digits
    from .models import MLP

    width, depth = check_int("width", width), check_int("depth", depth)
    model = MLP([64] + [width] * depth + [10], norm="batch", activation="relu", runs=runs, seed=seed, eps=eps,
                dtype=dtype)
    return model, digits(seed=0, dtype=dtype)


def remedy_optimizer(lr, remedy: str = "none", weight_decay=0.0, mask=None) -> "Transform":
    r"""SGD with one remedy for implicit learning-rate decay, applied to the tensors in ``mask``.

    ==================  =====================================================================
    ``remedy``          update of a tensor in ``mask`` (all others: :math:`w - \alpha\nabla\mathcal J`)
    ==================  =====================================================================
    ``'none'``          :math:`w - \alpha\nabla\mathcal J(w)`
    ``'weight_decay'``  :math:`(1-\alpha\lambda)w - \alpha\nabla\mathcal J(w)`
    ``'exp_schedule'``  :math:`w - \alpha\varrho^{-(2k+1)}\nabla\mathcal J(w)`, :math:`\varrho = 1-\alpha\lambda`
                        (Li & Arora 2020; see :func:`exponential_lr`)
    ``'unit_norm'``     :math:`(w - \alpha\nabla\mathcal J)/\lVert w - \alpha\nabla\mathcal J\rVert`
                        (effective learning rate exactly :math:`\alpha` once :math:`\lVert w\rVert = 1`)
    ==================  =====================================================================

    ``lr`` (:math:`\alpha`) and ``weight_decay`` (:math:`\lambda`) are floats or ``(R,)``
    tensors. ``hparams['lr']`` is the learning rate *of the masked tensors*, so a
    training record's ``effective_lr`` of a scale-invariant tensor is :math:`\alpha_k/\lVert w_k\rVert^2`.
    """
    from .optim.base import Transform, chain
    from .optim.transforms import add_decayed_weights, masked, project_to_unit_norm, scale_by_lr

    check_choice("remedy", remedy, REMEDIES)
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    if remedy == "none":
        return scale_by_lr(lr)
    if remedy == "weight_decay":
        return chain(add_decayed_weights(weight_decay, mask=mask), scale_by_lr(lr))
    if remedy == "unit_norm":
        return chain(scale_by_lr(lr), project_to_unit_norm(mask))
    schedule = exponential_lr(lr, weight_decay)
    if mask is None:
        inside, outside = (lambda name: True), (lambda name: False)
    elif callable(mask):
        inside, outside = mask, (lambda name: not mask(name))
    else:
        inside, outside = dict(mask), {k: not v for k, v in mask.items()}

    t = chain(masked(scale_by_lr(schedule), inside), masked(scale_by_lr(lr), outside))
    return Transform(t.init, t.update, {**t.hparams, "lr": schedule})


def optimizer_for(name: str, model, loss: str, lr, weight_decay=0.0, damping=1e-3, remedy: str = "none"):
    r"""The optimizer of the comparison panel: ``'sgd'`` (with ``remedy``), ``'adam'`` or ``'kfac'``.

    Adam: :math:`w \leftarrow w - \alpha\,\hat m/(\sqrt{\hat v}+\epsilon)` (Kingma & Ba 2015), no weight decay.
    K-FAC: :math:`w \leftarrow w - \alpha(\hat G + \gamma I)^{-1}\nabla\mathcal J(w)` with
    :math:`\hat G = A\otimes S` (Martens & Grosse 2015), ``damping`` :math:`\gamma`.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    check_choice("remedy", remedy, REMEDIES)
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("damping", damping)
    mask = {k: bool(v) for k, v in model.scale_invariant.items()}
    if name == "sgd":
        return remedy_optimizer(lr, remedy, weight_decay, mask)
    if name == "adam":
        from .optim import adam

        return adam(lr)
    from .optim.kfac import kfac

    return kfac(model, loss, lr, damping=damping, weight_decay=weight_decay, curvature="ggn",
                stat_interval=1, inv_interval=5)


def _normalize_(model, mask) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if mask.get(name, False):
                p.div_(p.flatten(1).norm(dim=1).reshape(-1, *([1] * (p.dim() - 1))))


def _rescale_(model, mask, init_scale) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if mask.get(name, False):
                p.mul_(per_run_scale(init_scale, p))


def per_run_scale(value, like: torch.Tensor):
    """A float, or an ``(R,)`` tensor shaped to broadcast against a parameter with a leading run dim."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.to(like).reshape(-1, *([1] * (like.dim() - 1)))
    return float(value)


def run(setup: str, lr, steps: int, batch_size: int | None = None, remedy: str = "none",
        weight_decay=0.0, optimizer: str = "sgd", damping=1e-3, seed: int = 0, record_every: int = 1,
        init_scale=1.0, **setup_kwargs):
    r"""Train the toy model (``setup='toy'``) or the BN network (``'bn'``) and return its Record.

    ``lr`` may be an ``(R,)`` tensor: R runs, one per learning rate, trained as one
    computation from the same initial weights. With ``remedy='unit_norm'`` the
    scale-invariant weights start on the unit sphere too, so :math:`\lVert w_k\rVert = 1`
    at every step. Default batch sizes: 16 (toy), 64 (BN network).

    ``init_scale`` (a float or one value per run) multiplies the scale-invariant weights
    before training: the same function, a different starting norm, so a different
    effective learning rate for SGD (:math:`\propto 1/c^2`) and Adam (:math:`\propto 1/c`),
    and none for undamped K-FAC. An ``(R,)`` ``init_scale`` with a float ``lr`` gives R runs.
    """
    from .engine import train

    check_choice("setup", setup, ("toy", "bn"))
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive("lr", lr)
    check_positive("init_scale", init_scale)
    runs = {int(v.numel()) for v in (lr, init_scale) if isinstance(v, torch.Tensor) and v.dim() == 1}
    if len(runs) > 1:
        raise ValueError(f"lr and init_scale hold different numbers of per-run values: {sorted(runs)}")
    runs = runs.pop() if runs else 1
    if setup == "toy":
        model, data = toy_setup(runs=runs, seed=seed, **setup_kwargs)
        loss, batch_size = "mse", 16 if batch_size is None else batch_size
    else:
        model, data = bn_setup(runs=runs, seed=seed, **setup_kwargs)
        loss, batch_size = "cross_entropy", 64 if batch_size is None else batch_size
    if isinstance(lr, torch.Tensor):
        lr = lr.to(next(model.parameters()).dtype)
    opt = optimizer_for(optimizer, model, loss, lr, weight_decay, damping, remedy)
    if optimizer == "sgd" and remedy == "unit_norm":
        _normalize_(model, model.scale_invariant)
    else:
        _rescale_(model, model.scale_invariant, init_scale)
    return train(model, data, loss, opt, steps, batch_size=batch_size, seed=seed, record_every=record_every,
                 diverge_above=1e4)


def _check_name(record, name) -> None:
    if not isinstance(name, str) or name not in record.param_norm:
        raise ValueError(f"name must be one of the record's parameters {sorted(record.param_norm)}, got {name!r}")


def direction_grad_norm(record, name: str) -> np.ndarray:
    r""":math:`\lVert\nabla\mathcal J(\hat w_k)\rVert = \lVert w_k\rVert\,\lVert\nabla\mathcal J(w_k)\rVert` (Euler), ``(K, R)``."""
    return record.param_norm[name] * record.grad_norm[name]


def late_asymptote(record, name: str, tail: float = 0.5) -> np.ndarray:
    r"""The :math:`\alpha`-free late-time effective learning rate :math:`1/(G\sqrt{2k})`, shape ``(K,)``.

    :math:`G` is the root-mean-square of :math:`\lVert\nabla\mathcal J(\hat w)\rVert` over the last
    ``tail`` fraction of training, pooled over runs (see :func:`sqrt_law_k0`).
    """
    _check_name(record, name)
    check_range("tail", tail, 0.0, 1.0, low_inclusive=False)
    g = direction_grad_norm(record, name)
    start = min(int(len(record.steps) * (1 - tail)), len(record.steps) - 1)
    G = float(np.sqrt(np.nanmean(g[start:] ** 2)))
    k = np.maximum(record.steps.astype(np.float64), 1.0)
    return 1.0 / (G * np.sqrt(2.0 * k))


def spread(values: np.ndarray, row: int) -> float:
    """max / min over runs of a positive ``(K, R)`` quantity at one row (how far apart the runs are)."""
    values = _array("values", values)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (K, R), got {values.shape}")
    row = check_int("row", row, -values.shape[0], values.shape[0] - 1)
    v = values[row]
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min()) if v.size else float("nan")


def layer_learning_rates(record, lr) -> dict[str, np.ndarray]:
    r"""The learning rate each parameter tensor effectively trains with, ``name -> (K, R)``.

    A scale-invariant tensor moves its direction with :math:`\alpha_k/\lVert w_k\rVert^2`
    (``record.effective_lr``), which Pythagorean growth keeps lowering; every other tensor
    (the output layer, batch norm's gain and shift) feels the explicit :math:`\alpha_k`
    itself. Their ratio is how much faster the output layer trains, relative to the
    hidden layers, as training goes on (Lecture 5: the output layer escapes the decay).
    ``lr`` is the explicit :math:`\alpha` of the other tensors: a float or one value per run.
    """
    alpha = _per_run_array("lr", lr, record.runs)
    rates = {}
    for name, eff in record.effective_lr.items():
        if record.scale_invariant.get(name, False):
            rates[name] = eff
        else:
            rates[name] = np.where(np.isnan(eff), np.nan, np.broadcast_to(alpha, eff.shape))
    return rates
