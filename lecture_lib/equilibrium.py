r"""The weight-decay equilibrium of scale-invariant weights (Lecture 5; Myrtle / Page 2019; Labatie 2020).

A weight :math:`w` feeding a normalizer is *scale invariant*: :math:`J(\gamma w) = J(w)`,
so its gradient :math:`g = \nabla J(w)` is orthogonal to :math:`w` and scales as
:math:`1/\lVert w \rVert`. One SGD step :math:`w \leftarrow (1 - \alpha\lambda) w - \alpha g`
then changes the squared norm by two terms of opposite sign (Pythagoras):

.. math::

    \lVert w' \rVert^2 = \underbrace{(1-\alpha\lambda)^2 \lVert w\rVert^2}_{\text{decay: } -2\alpha\lambda\lVert w\rVert^2}
                        + \underbrace{\alpha^2 \lVert g \rVert^2}_{\text{gradient: growth}} .

Small weights grow, large weights shrink, and the norm settles where the two balance,

.. math::

    \frac{\lVert w\rVert}{\lVert g\rVert} \to \sqrt{\frac{\alpha}{2\lambda(1-\rho)}}, \qquad
    \frac{\alpha\lVert g\rVert}{\lVert w\rVert} \to \sqrt{2\alpha\lambda(1-\rho)},

so that SGD with weight decay takes the steps of LARS (You et al. 2017) with trust
coefficient :math:`\eta = \sqrt{2\alpha\lambda(1-\rho)}`. Momentum :math:`\rho` enters through
the "resummation" of Myrtle / Page (2019): a gradient (or a decay term) added to the
momentum buffer is applied over the following steps with total weight
:math:`\alpha/(1-\rho)`, so every formula below uses :math:`\alpha' = \alpha/(1-\rho)`
in place of :math:`\alpha` (this needs gradients of successive batches to be
orthogonal on average, which :func:`momentum_correlation` measures).

Notation (the lecture's; code names in brackets):

==========================  =====================  =============
lecture                     Myrtle post            code
==========================  =====================  =============
learning rate α             λ                      ``lr``
weight decay λ              α                      ``weight_decay``
momentum ρ                  ρ                      ``momentum``
batch size B                N                      ``batch_size``
==========================  =====================  =============

This module is science only (torch and numpy); figures live in
:mod:`lecture_lib.viz.equilibrium_panels`.

References: Myrtle.ai / D. Page (2019), "How to Train Your ResNet 6: Weight Decay";
A. Labatie (2020), "The Serendipitous Effectiveness of Weight Decay in Deep Learning";
T. van Laarhoven (2017), "L2 Regularization versus Batch and Weight Normalization";
E. Hoffer et al. (2018), "Norm Matters"; G. Zhang et al. (2019), "Three Mechanisms of
Weight Decay Regularization"; Y. You et al. (2017), "Large Batch Training of
Convolutional Networks" (LARS); P. Goyal et al. (2017), "Accurate, Large Minibatch SGD".
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import _validate
from ._validate import check_int

__all__ = [
    "resummed_lr", "equilibrium_ratio", "equilibrium_angular_step", "relaxation_steps",
    "equilibrium_sq_norm", "sq_norm_map", "norm_balance",
]


def _checked(check):
    """Wrap a :mod:`._validate` check so that it also accepts numpy arrays of per-run values."""
    def run(name, value):
        is_array = isinstance(value, (np.ndarray, list, tuple))
        check(name, torch.as_tensor(_array(name, value)) if is_array else value)
        return value
    return run


def _array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; a ``TypeError`` naming ``name`` if it holds no numbers."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from None


check_positive = _checked(_validate.check_positive)
check_nonnegative = _checked(_validate.check_nonnegative)
check_unit_interval = _checked(_validate.check_unit_interval)


def _np(x) -> np.ndarray:
    """Hyperparameters arrive as floats or ``(R,)`` tensors; the formulas work on arrays."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def resummed_lr(lr, momentum=0.0):
    r"""The total weight :math:`\alpha' = \alpha / (1-\rho)` with which SGD + momentum applies one gradient.

    ``lr`` = α, ``momentum`` = ρ (floats or per-run arrays/tensors). Myrtle / Page (2019), eq. (7).
    """
    check_positive("lr", lr)
    check_unit_interval("momentum", momentum)
    return _out(_np(lr) / (1.0 - _np(momentum)))


def equilibrium_ratio(lr, weight_decay, momentum=0.0):
    r"""Equilibrium :math:`\lVert w\rVert / \lVert g\rVert = \sqrt{\alpha / (2\lambda(1-\rho))}`.

    Setting the decay shrink :math:`2\alpha'\lambda\lVert w\rVert^2` equal to the gradient growth
    :math:`\alpha'^2\lVert g\rVert^2` with :math:`\alpha' = \alpha/(1-\rho)`.
    ``lr`` = α, ``weight_decay`` = λ > 0, ``momentum`` = ρ. Myrtle / Page (2019), eqs. (5), (7).
    """
    check_positive("weight_decay", weight_decay)
    a = resummed_lr(lr, momentum)
    return _out(np.sqrt(_np(a) / (2.0 * _np(weight_decay))))


def equilibrium_angular_step(lr, weight_decay, momentum=0.0):
    r"""Equilibrium angular step :math:`\alpha\lVert g\rVert/\lVert w\rVert = \sqrt{2\alpha\lambda(1-\rho)}`.

    This is the LARS trust coefficient :math:`\eta` for which LARS,
    :math:`w \leftarrow w - \eta\,(\lVert w\rVert/\lVert g\rVert)\, g`, takes the same steps as
    SGD with weight decay at equilibrium. Per step the direction :math:`\hat w` turns by about
    this many radians. ``lr`` = α, ``weight_decay`` = λ ≥ 0, ``momentum`` = ρ.
    Myrtle / Page (2019), eq. (6); You et al. (2017).
    """
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    check_unit_interval("momentum", momentum)
    return _out(np.sqrt(2.0 * _np(lr) * _np(weight_decay) * (1.0 - _np(momentum))))


def relaxation_steps(lr, weight_decay, momentum=0.0):
    r"""Steps for the squared norm to relax to equilibrium: :math:`(1-\rho)/(4\alpha\lambda)`.

    Linearizing the map of :func:`sq_norm_map` around its fixed point :math:`x^*`:
    :math:`x_{k+1} - x^* \approx (1 - 4\alpha'\lambda)(x_k - x^*)`, so deviations decay by
    :math:`e^{-1}` every :math:`1/(4\alpha'\lambda)` steps. ``lr`` = α, ``weight_decay`` = λ > 0,
    ``momentum`` = ρ.
    """
    check_positive("weight_decay", weight_decay)
    a = resummed_lr(lr, momentum)
    return _out(1.0 / (4.0 * _np(a) * _np(weight_decay)))


def equilibrium_sq_norm(lr, weight_decay, grad_scale, momentum=0.0):
    r"""Equilibrium squared norm :math:`\lVert w\rVert^{2\,*} = G\sqrt{\alpha'/(2\lambda)}`.

    For a scale-invariant weight :math:`\lVert g\rVert = G/\lVert w\rVert`, where
    ``grad_scale`` :math:`G = \lVert\nabla J(\hat w)\rVert` is the gradient norm at unit weight
    norm. Balancing :math:`2\alpha'\lambda x = \alpha'^2 G^2 / x` for :math:`x = \lVert w\rVert^2`
    gives the formula: the squared norm scales as :math:`\sqrt{\alpha/\lambda}` (van Laarhoven
    2017; Labatie 2020, Fig. 2), and the effective learning rate :math:`\alpha/\lVert w\rVert^2`
    as :math:`\sqrt{\alpha\lambda}`.
    """
    check_positive("grad_scale", grad_scale)
    return _out(_np(grad_scale) * _np(equilibrium_ratio(lr, weight_decay, momentum)))


def sq_norm_map(x0, lr, weight_decay, grad_scale, steps: int, momentum=0.0) -> np.ndarray:
    r"""Iterate the mean-field map of the squared norm :math:`x = \lVert w\rVert^2`.

    .. math:: x_{k+1} = (1 - \alpha'\lambda)^2 x_k + \alpha'^2 G^2 / x_k

    (decay shrinks, the orthogonal gradient :math:`\lVert g\rVert^2 = G^2/x` grows). With
    :math:`\lambda = 0` this is the Pythagorean growth of the implicit learning-rate decay,
    :math:`x_k \approx \sqrt{x_0^2 + 2\alpha^2G^2 k}`. Arguments may be per-run arrays;
    returns shape ``(steps + 1,)`` or ``(steps + 1, R)``.
    """
    steps = check_int("steps", steps, low=0)
    check_positive("x0", x0)
    check_nonnegative("weight_decay", weight_decay)
    check_positive("grad_scale", grad_scale)
    a = _np(resummed_lr(lr, momentum))
    wd, G2 = _np(weight_decay), _np(grad_scale) ** 2
    x = np.broadcast_to(_np(x0), np.broadcast(_np(x0), a, wd, G2).shape).astype(np.float64)
    out = np.empty((steps + 1,) + x.shape)
    out[0] = x
    for k in range(steps):
        x = (1.0 - a * wd) ** 2 * x + a ** 2 * G2 / x
        out[k + 1] = x
    return out


def norm_balance(param_norm, grad_norm, lr, weight_decay, momentum=0.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-step shrink and growth of :math:`\lVert w\rVert^2`: :math:`2\alpha'\lambda\lVert w\rVert^2` and :math:`\alpha'^2\lVert g\rVert^2`.

    ``param_norm`` and ``grad_norm`` are recorded :math:`\lVert w\rVert`, :math:`\lVert g\rVert`
    arrays of shape ``(K, R)`` (``g`` the gradient of the loss, without the decay term);
    hyperparameters are floats or ``(R,)``. With momentum the terms are resummed over the
    momentum lifetime (:math:`\alpha' = \alpha/(1-\rho)`). At equilibrium the two are equal on
    average (Myrtle / Page 2019, eqs. (1')-(3)).
    """
    a = _np(resummed_lr(lr, momentum))
    check_nonnegative("weight_decay", weight_decay)
    wd = _np(weight_decay)
    w, g = _array("param_norm", param_norm), _array("grad_norm", grad_norm)
    if w.shape != g.shape:
        raise ValueError(f"param_norm and grad_norm must have the same shape (K, R), got {w.shape} and {g.shape}")
    w2, g2 = w ** 2, g ** 2
    return 2.0 * a * wd * w2, a ** 2 * g2


# ---------------------------------------------------------------------------------------------
# experiments: real batched runs through lecture_lib.engine
# ---------------------------------------------------------------------------------------------
class _single_thread:
    """Tiny models run faster on one thread (no thread hand-offs per 20-float op); restored on exit."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _per_run(values: dict, dtype) -> tuple[dict, int]:
    """Turn floats / sequences / tensors into floats or ``(R,)`` tensors and find R (all lengths must agree)."""
    runs, out = 1, {}
    for name, v in values.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        if isinstance(v, torch.Tensor):
            v = v.to(dtype)
            if v.dim() == 0:
                v = float(v)
            elif v.dim() == 1:
                if runs not in (1, v.shape[0]) and v.shape[0] != 1:
                    raise ValueError(f"{name} holds {v.shape[0]} per-run values but another hyperparameter "
                                     f"holds {runs}; give every per-run hyperparameter the same length")
                runs = max(runs, v.shape[0])
        out[name] = v
    for name, v in out.items():
        if isinstance(v, torch.Tensor) and v.shape[0] != runs:
            out[name] = v.expand(runs).clone()
    return out, runs


def toy_data(dim: int = 20, n: int = 4000, seed: int = 0, teacher_scale: float = 3.0, dtype=torch.float64):
    """The toy task: logistic regression with label noise, from :mod:`lecture_lib.data`.

    ``teacher_scale`` is the standard deviation of the teacher's logit (3: a learnable
    direction with noisy labels; 0: pure-noise labels, so that the direction random-walks).
    """
    from .data import logistic_regression

    _validate.check_nonnegative("teacher_scale", teacher_scale)
    return logistic_regression(n=n, dim=dim, weight_scale=teacher_scale, seed=seed, n_test=1000, dtype=dtype)


def gradient_momentum_correlation(momentum: float = 0.9, names=None):
    r"""A ``track=`` function: cosine between :math:`g_t` and :math:`v_{t-1} = \sum_{s\ge1} \rho^{s-1} g_{t-s}`.

    :math:`v` is an exponential moving average of the previous *loss* gradients (without the
    decay term), as in the Myrtle post's check that successive batch gradients are orthogonal
    on average. Parameters in ``names`` (default: all) are concatenated per run. The first
    step, with no history, gives NaN.
    """
    _validate.check_unit_interval("momentum", momentum)
    if isinstance(momentum, torch.Tensor):
        raise TypeError("momentum must be a float (one momentum for the moving average), got a tensor")
    buffer: dict[str, torch.Tensor] = {}

    def track(model, params, grads, state):
        keys = list(names or grads)
        g = torch.cat([grads[k].flatten(1) for k in keys], dim=1)
        if "v" not in buffer:
            buffer["v"] = torch.zeros_like(g)
        v = buffer["v"]
        denom = g.norm(dim=1) * v.norm(dim=1)
        cos = torch.where(denom > 0, (g * v).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan))
        buffer["v"] = momentum * v + g
        return cos

    return track


def train_toy(lr, weight_decay=0.0, momentum=0.0, batch_size: int = 32, steps: int = 2000,
              optimizer: str = "sgd", init_norm=1.0, dim: int = 20, scale: float = 4.0, seed: int = 0,
              record_every: int = 1, track_weights: bool = False, track_correlation: bool = False,
              data=None):
    r"""Train the toy scale-invariant model :math:`f(x) = c\,x^\top w/\lVert w\rVert` with logistic loss.

    R runs in one computation: ``lr`` (α), ``weight_decay`` (λ), ``momentum`` (ρ) and
    ``init_norm`` (:math:`\lVert w_0\rVert`) are floats or length-R sequences/tensors; every
    run starts from the same direction and sees the same minibatches (``batch_size`` B).

    * ``optimizer='sgd'``: ``lecture_lib.optim.sgd`` in torch semantics (the L2 term joins the
      momentum buffer, as in the Myrtle experiments):
      :math:`v \leftarrow \rho v + g + \lambda w,\ w \leftarrow w - \alpha v`.
    * ``optimizer='lars'``: LARS in the Myrtle post's form,
      :math:`v \leftarrow \rho v + (\lVert w\rVert/\lVert g\rVert)\, g,\ w \leftarrow w - \eta v`,
      with ``lr`` playing η (``lecture_lib.optim.lars`` with trust coefficient 1, no decay).

    ``track_weights`` records ``extras['w']`` and ``extras['g']`` (``(K, R, dim)``);
    ``track_correlation`` records ``extras['grad_momentum_cos']`` (:func:`gradient_momentum_correlation`).
    Returns the :class:`~lecture_lib.record.Record` of :func:`lecture_lib.engine.train`.
    """
    from . import engine, optim
    from ._validate import check_choice
    from .models import ScaleInvariantLinear

    check_choice("optimizer", optimizer, ("sgd", "lars"))
    dtype = torch.float64
    hp, runs = _per_run({"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "init_norm": init_norm},
                        dtype)
    check_positive("lr", hp["lr"])
    check_nonnegative("weight_decay", hp["weight_decay"])
    check_unit_interval("momentum", hp["momentum"])
    check_positive("init_norm", hp["init_norm"])
    data = toy_data(dim=dim, seed=seed, dtype=dtype) if data is None else data
    model = ScaleInvariantLinear(dim, scale=scale, runs=runs, seed=seed, dtype=dtype)
    with torch.no_grad():
        norm0 = hp["init_norm"]
        model.w.mul_(norm0.unsqueeze(1) if isinstance(norm0, torch.Tensor) else norm0)
    if optimizer == "sgd":
        opt = optim.sgd(hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    else:
        opt = optim.lars(hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], trust_coefficient=1.0)
    track = {}
    if track_weights:
        track["w"] = lambda model, params, grads, state: params["w"].clone()
        track["g"] = lambda model, params, grads, state: grads["w"].clone()
    if track_correlation:
        track["grad_momentum_cos"] = gradient_momentum_correlation(0.9)
    with _single_thread():
        return engine.train(model, data, "logistic", opt, steps=steps, batch_size=batch_size, seed=seed + 1,
                            record_every=record_every, track=track or None, diverge_above=None)


def late_median(values, fraction: float = 0.5) -> np.ndarray:
    """Median over the last ``1 - fraction`` of the recorded rows, per run (NaN rows ignored); ``(K, R) -> (R,)``."""
    values = _array("values", values)
    _check_fraction(fraction)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"values must have shape (K, R) with K >= 1, got {values.shape}")
    start = int(values.shape[0] * fraction)
    return np.nanmedian(values[start:], axis=0)


def _check_fraction(fraction) -> None:
    _validate.check_range("fraction", fraction, 0.0, 1.0, high_inclusive=False)


def _check_name(record, name) -> None:
    if not isinstance(name, str) or name not in record.param_norm:
        raise ValueError(f"name must be one of the record's parameters {sorted(record.param_norm)}, got {name!r}")


def grad_scale(record, name: str = "w", fraction: float = 0.5) -> np.ndarray:
    r"""Late-time RMS of :math:`G = \lVert w\rVert\,\lVert g\rVert` (the gradient norm at unit weight norm), per run.

    The balance :math:`2\alpha'\lambda x = \alpha'^2 E\lVert g\rVert^2` involves the *mean square*
    gradient, so the equilibrium :math:`x^* = G\sqrt{\alpha'/(2\lambda)}` uses the RMS (in low
    dimension the median of a noisy :math:`\lVert g\rVert` is far below it).
    """
    _check_name(record, name)
    _check_fraction(fraction)
    wg = np.asarray(record.param_norm[name], dtype=np.float64) * np.asarray(record.grad_norm[name], dtype=np.float64)
    start = int(wg.shape[0] * fraction)
    return np.sqrt(np.nanmean(wg[start:] ** 2, axis=0))


def equilibrium_check(record, lr, weight_decay, momentum=0.0, name: str = "w", fraction: float = 0.5) -> dict:
    r"""Measured late-time medians of :math:`\lVert w\rVert/\lVert g\rVert` and :math:`\alpha\lVert g\rVert/\lVert w\rVert` against the predictions.

    Returns ``(R,)`` arrays ``ratio``, ``ratio_pred``, ``step``, ``step_pred`` and the quotients
    ``ratio_rel`` = measured / predicted, ``step_rel`` likewise.
    """
    _check_name(record, name)
    w, g = record.param_norm[name], record.grad_norm[name]
    a = _np(lr)
    ratio = late_median(w / g, fraction)
    step = late_median(a * g / w, fraction)
    ratio_pred = np.broadcast_to(_np(equilibrium_ratio(lr, weight_decay, momentum)), ratio.shape)
    step_pred = np.broadcast_to(_np(equilibrium_angular_step(lr, weight_decay, momentum)), step.shape)
    return {"ratio": ratio, "ratio_pred": ratio_pred, "ratio_rel": ratio / ratio_pred,
            "step": step, "step_pred": step_pred, "step_rel": step / step_pred}


def toy_grad_scale(batch_size: int, dim: int = 20, scale: float = 4.0, seed: int = 0, batches: int = 64,
                   data=None) -> float:
    r"""Estimate :math:`G = \lVert\nabla J(\hat w)\rVert` at unit norm, near the optimum, for minibatches of size B.

    Evaluated at the teacher's direction (``data.meta['w_true']``) on ``batches`` random
    minibatches (RMS of the norms). Used to start runs at the predicted equilibrium norm
    :math:`\sqrt{G}\,(\alpha'/2\lambda)^{1/4}` (:func:`equilibrium_sq_norm`) so that they need no
    burn-in; when the minibatch gradient is dominated by noise, :math:`G \propto 1/\sqrt{B}`.
    """
    from .losses import logistic
    from .models import ScaleInvariantLinear

    data = toy_data(dim=dim, seed=seed) if data is None else data
    check_int("batch_size", batch_size, high=data.n_train)
    check_int("batches", batches)
    _validate.check_seed("seed", seed)
    model = ScaleInvariantLinear(dim, scale=scale, runs=batches, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        model.w.copy_(data.meta["w_true"].to(torch.float64).expand(batches, -1))
    gen = torch.Generator().manual_seed(seed + 12345)
    idx = torch.randint(0, data.n_train, (batches, batch_size), generator=gen)
    x = data.x_train.to(torch.float64)[idx]
    y = data.y_train[idx]
    (g,) = torch.autograd.grad(logistic(model(x), y).sum(), model.w)
    return float(g.norm(dim=1).square().mean().sqrt() * data.meta["w_true"].norm())


def train_bn_network(lr, weight_decay=5e-4, momentum=0.9, batch_size: int = 128, steps: int = 1000,
                     hidden=(32, 32, 32), seed: int = 0, eval_every: int | None = None, record_every: int = 1,
                     return_model: bool = False, label_noise: float = 0.0, decay_scale_invariant_only: bool = False):
    r"""Train a batch-normalized MLP on the 8x8 digits with SGD (torch semantics) and weight decay on every tensor.

    ``decay_scale_invariant_only``: decay only the weights feeding batch norm (Zhang et al.'s
    "wd-conv"), so that the decay cannot constrain capacity anywhere (the output layer and the
    normalizer gains are left alone).
    ``label_noise``: fraction of training labels replaced by uniformly random classes (seeded),
    so that the network cannot fit the training set and minibatch gradients stay noisy, as they
    do on an augmented data set (the regime in which the equilibrium holds; without it the
    gradients fade once the 1347 training images are fitted, and the norms drift).

    Its hidden weight matrices feed batch norm, so they are scale invariant
    (``record.scale_invariant``): these are the "layers" whose norms settle in equilibrium.
    ``lr`` (α), ``weight_decay`` (λ), ``momentum`` (ρ) are floats or length-R sequences; R runs
    share the initialization and the minibatch order, so they differ only in the
    hyperparameters. Returns the :class:`~lecture_lib.record.Record` (float32 runs), or
    ``(record, model, data)`` with ``return_model``.
    """
    from . import engine, optim
    from .data import digits
    from .models import MLP

    hp, runs = _per_run({"lr": lr, "weight_decay": weight_decay, "momentum": momentum}, torch.float32)
    check_positive("lr", hp["lr"])
    check_nonnegative("weight_decay", hp["weight_decay"])
    check_unit_interval("momentum", hp["momentum"])
    data = digits(seed=seed)
    if _validate.check_unit_interval("label_noise", label_noise) > 0:
        from dataclasses import replace
        gen = torch.Generator().manual_seed(seed + 4242)
        flip = torch.rand(data.n_train, generator=gen) < label_noise
        noisy = torch.randint(0, data.n_outputs, (data.n_train,), generator=gen).to(data.y_train)
        data = replace(data, y_train=torch.where(flip.to(data.y_train.device), noisy, data.y_train))
    sizes = [data.n_features, *_validate.check_sizes("hidden", hidden, min_len=1), data.n_outputs]
    model = MLP(sizes, norm="batch", activation="relu", runs=runs, seed=seed)
    mask = model.scale_invariant if decay_scale_invariant_only else None
    opt = optim.sgd(hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], weight_decay_mask=mask)
    with _single_thread():
        rec = engine.train(model, data, "cross_entropy", opt, steps=steps, batch_size=batch_size, seed=seed,
                           eval_every=eval_every, record_every=record_every)
    return (rec, model, data) if return_model else rec


def rescaled_output_gap(model, x: torch.Tensor, factor: float) -> np.ndarray:
    r"""Relative change of the outputs, per run, when every scale-invariant tensor is multiplied by ``factor``.

    Returns :math:`\max|f_{\text{rescaled}} - f| / \max|f|` over the inputs and outputs.
    For a batch-normalized network this is zero up to the normalizer's :math:`\epsilon`: the
    weight norm carries no capacity (Labatie 2020). Evaluated with batch statistics (train
    mode) on the inputs ``x``; the model's weights and running statistics are left unchanged.
    """
    _validate.check_positive("factor", factor)
    from .optim.kfac import check_inputs

    check_inputs(x)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            before = model(x)
            for name, on in model.scale_invariant.items():
                if on:
                    params[name].mul_(factor)
            after = model(x)
    finally:
        model.load_state_dict(saved)  # weights and running statistics exactly as they were
    scale = before.abs().flatten(1).amax(1).clamp_min(torch.finfo(before.dtype).tiny)  # all-zero outputs: no NaN
    change = (after - before).abs().flatten(1).amax(1) / scale
    return change.double().cpu().numpy()


def angle_to(w: np.ndarray, direction) -> np.ndarray:
    """Angle (radians) between each recorded weight vector ``w`` (``(..., D)``) and a fixed ``direction`` ``(D,)``."""
    d, w = _array("direction", direction), _array("w", w)
    if d.ndim != 1 or w.ndim == 0 or w.shape[-1] != d.shape[0]:
        raise ValueError(f"direction must be a vector as long as the last axis of w, got shapes {d.shape} and "
                         f"{w.shape}")
    if not np.all(np.isfinite(d)) or not np.any(d):
        raise ValueError("direction must be finite and not the zero vector")
    cos = (w @ d) / (np.linalg.norm(w, axis=-1) * np.linalg.norm(d))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def smooth(values, window: int) -> np.ndarray:
    """Moving average along the first axis (``(K, ...)``), same length (shorter windows at the ends)."""
    values = _array("values", values)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"values must have at least one row, got shape {values.shape}")
    window = min(check_int("window", window), values.shape[0])
    kernel = np.ones(window)
    pad = [(window // 2, window - 1 - window // 2)] + [(0, 0)] * (values.ndim - 1)
    ones = np.pad(np.ones(values.shape[0]), pad[0])
    num = np.apply_along_axis(lambda v: np.convolve(v, kernel, "valid"), 0, np.pad(values, pad))
    den = np.convolve(ones, kernel, "valid")
    return num / den.reshape(-1, *([1] * (values.ndim - 1)))


def scale_invariant_names(record) -> list[str]:
    """The parameter tensors of a record that are scale invariant (hidden weights feeding a normalizer)."""
    return [n for n, flag in record.scale_invariant.items() if flag]


def batch_scaling(factors=(1, 2, 4, 8), lr: float = 0.02, batch_size: int = 8, weight_decay: float = 5e-3,
                  momentum: float = 0.0, examples: int = 64000, seed: int = 0) -> dict:
    r"""The linear scaling rule (Goyal et al. 2017) on the toy model: B → nB and α → nα, same examples seen.

    For each factor n the toy model trains with batch size :math:`nB` and learning rate
    :math:`n\alpha` for ``examples // (n B)`` steps (start at the predicted equilibrium norm).
    At equilibrium the angular step is :math:`\sqrt{2 n\alpha\lambda}`: √n larger per step.
    If batch gradients are noise dominated, :math:`\lVert g\rVert \propto 1/\sqrt{nB}`, and one
    step of size √n·η in a random direction moves as far as n steps of size η: the runs then
    agree as functions of the number of examples seen.

    Returns ``{n: Record}`` and, under key ``"summary"``, ``(len(factors),)`` arrays: ``n``,
    ``step`` (late median of α‖g‖/‖w‖), ``step_pred`` :math:`\sqrt{2n\alpha\lambda(1-\rho)}`,
    ``grad_scale`` (late median of ‖g‖‖w‖, the gradient norm at unit weight norm, G) and
    ``correlation`` (mean cosine of :math:`g_t` with the EMA of earlier gradients).
    """
    if isinstance(factors, (str, bytes)) or not hasattr(factors, "__iter__"):
        raise TypeError(f"factors must be a sequence of integer batch-size multipliers, got {factors!r}")
    factors = [check_int(f"factors[{i}]", n) for i, n in enumerate(factors)]
    _validate.check_positive("lr", lr)
    _validate.check_positive("weight_decay", weight_decay)
    _validate.check_unit_interval("momentum", momentum)
    check_int("batch_size", batch_size)
    check_int("examples", examples)
    _validate.check_seed("seed", seed)
    out, rows = {}, []
    for n in factors:
        a, B = lr * n, batch_size * n
        steps = max(examples // B, 20)
        G = toy_grad_scale(B, seed=seed)
        rec = train_toy(a, weight_decay, momentum, batch_size=B, steps=steps, seed=seed, track_correlation=True,
                        init_norm=math.sqrt(equilibrium_sq_norm(a, weight_decay, G, momentum)))
        w, g = rec.param_norm["w"], rec.grad_norm["w"]
        rows.append((n, late_median(a * g / w)[0], equilibrium_angular_step(a, weight_decay, momentum),
                     late_median(w * g)[0], float(np.nanmean(rec.extras["grad_momentum_cos"][1:]))))
        out[n] = rec
    cols = list(zip(*rows))
    out["summary"] = {k: np.asarray(v, dtype=np.float64)
                      for k, v in zip(("n", "step", "step_pred", "grad_scale", "correlation"), cols)}
    return out
