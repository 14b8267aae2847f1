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
        check(name, torch.as_tensor(value) if isinstance(value, np.ndarray) else value)
        return value
    return run


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
    w2 = np.asarray(param_norm, dtype=np.float64) ** 2
    g2 = np.asarray(grad_norm, dtype=np.float64) ** 2
    return 2.0 * a * wd * w2, a ** 2 * g2
