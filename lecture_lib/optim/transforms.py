r"""The gradient transformations every optimizer in this package is built from.

Each function returns a :class:`~lecture_lib.optim.base.Transform`: an
``init``/``update`` pair with its own state ``NamedTuple``. They are composed with
:func:`~lecture_lib.optim.base.chain`; see :mod:`lecture_lib.optim.alias` for the
familiar optimizers written as such chains.

Every hyperparameter is a Python float or a tensor of shape ``(R,)`` with one
value per run, so a sweep over R settings trains as one computation. Every
tensor in ``params``/``updates`` has a leading run dimension ``R``; the norms
used by LARS, projection and grafting are taken *per tensor per run*.

Symbols follow the lecture (Grosse, CSC 2541 Lecture 5): :math:`\alpha` learning
rate, :math:`\lambda` weight decay, :math:`\rho` momentum, :math:`\beta_2` (the
lecture's :math:`\beta`) second-moment decay, :math:`g` the incoming update
(the gradient at the head of a chain), :math:`u` the outgoing update.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .._validate import Bool, Instance, NonNegative, Positive, Unit, Where, accepts, check_nonnegative
from .base import (EmptyState, MASK, Mask, Params, Transform, check_runs, need_params, per_run, resolve_mask,
                   run_norm, stateless)


def _lr_or_schedule(name, lr):
    """A learning rate >= 0 (float or per-run tensor), or a schedule ``step -> lr``."""
    return lr if callable(lr) else check_nonnegative(name, lr)


LR = Where(_lr_or_schedule, bad=(-0.1, float("nan"), "0.1", None))


# --------------------------------------------------------------------------- learning rate

class ScaleByLrState(NamedTuple):
    step: int  # number of updates so far; the schedule is called with it


@accepts(lr=LR)
def scale_by_lr(lr: float | torch.Tensor | Callable[[int], Any]) -> Transform:
    r"""Multiply by minus the learning rate: the last link of every optimizer chain.

    .. math:: u = -\alpha_t\, g

    ========  ================  ==========================================================
    argument  symbol            value
    ========  ================  ==========================================================
    ``lr``    :math:`\alpha_t`  :math:`\ge 0`: float, ``(R,)`` tensor, or a schedule
                                ``step -> lr`` returning either (``step`` counts from 0)
    ========  ================  ==========================================================

    Sets ``hparams = {"lr": lr}`` so a training loop can read the learning rate back.
    """
    schedule = lr if callable(lr) else None

    def init(params):
        check_runs(params, lr=lr if schedule is None else schedule(0))
        return ScaleByLrState(0)

    def update(updates, state, params=None, **extra):
        alpha = lr if schedule is None else check_nonnegative("lr", schedule(state.step))
        return ({k: -per_run(alpha, g, "lr") * g for k, g in updates.items()},
                ScaleByLrState(state.step + 1))

    return Transform(init, update, {"lr": lr})


# --------------------------------------------------------------------------- momentum

class TraceState(NamedTuple):
    velocity: Params  # v, the momentum buffer


@accepts(momentum=Unit(per_run=True), nesterov=Bool())
def trace(momentum: float | torch.Tensor, nesterov: bool = False) -> Transform:
    r"""Heavy-ball momentum, exactly as ``torch.optim.SGD`` (with ``dampening=0``).

    .. math::
        v \leftarrow \rho\, v + g, \qquad
        u = v \quad\text{or, with Nesterov,}\quad u = g + \rho\, v

    ============  ============  ===================================
    argument      symbol        range
    ============  ============  ===================================
    ``momentum``  :math:`\rho`  :math:`[0, 1)`
    ``nesterov``  --            look ahead along the new velocity
    ============  ============  ===================================

    Reference: Polyak (1964); Sutskever et al., ICML 2013 (Nesterov form as in PyTorch).
    """
    def init(params):
        check_runs(params, momentum=momentum)
        return TraceState({k: torch.zeros_like(p) for k, p in params.items()})

    def update(updates, state, params=None, **extra):
        velocity, out = dict(state.velocity), {}
        for k, g in updates.items():
            rho = per_run(momentum, g, "momentum")
            velocity[k] = rho * state.velocity[k] + g
            out[k] = g + rho * velocity[k] if nesterov else velocity[k]
        return out, TraceState(velocity)

    return Transform(init, update, {"momentum": momentum})


# --------------------------------------------------------------------------- adaptive preconditioners

def _one_minus_power(beta, power: int = 1):
    r""":math:`1 - \beta^t` in the hyperparameter's own precision (float64 for floats and float64 tensors).

    Computed before :func:`per_run` casts to the parameters' dtype: in float32 a valid
    :math:`\beta = 1 - 10^{-9}` rounds to 1, and :math:`1 - \beta` to 0 (then the bias
    correction divides 0 by 0).
    """
    if isinstance(beta, torch.Tensor):
        return 1 - beta.double() ** power
    return 1.0 - beta ** power


class ScaleByRmsState(NamedTuple):
    s: Params  # running average of g^2: the diagonal of the empirical Fisher


@accepts(beta2=Unit(per_run=True), eps=Positive(per_run=True), eps_in_sqrt=Bool())
def scale_by_rms(beta2: float | torch.Tensor = 0.99, eps: float | torch.Tensor = 1e-8,
                 eps_in_sqrt: bool = False) -> Transform:
    r"""RMSprop's preconditioner, as ``torch.optim.RMSprop`` (whose ``alpha`` is :math:`\beta_2`).

    .. math::
        s \leftarrow \beta_2\, s + (1 - \beta_2)\, g \odot g, \qquad
        u = g \oslash (\sqrt{s} + \epsilon)
        \quad\text{or, with } \texttt{eps\_in\_sqrt},\quad u = g \oslash \sqrt{s + \epsilon}

    The second form is the lecture's. :math:`s` starts at zero and is not bias corrected.

    ===============  ================  ===============
    argument         symbol            range
    ===============  ================  ===============
    ``beta2``        :math:`\beta_2`   :math:`[0, 1)`
    ``eps``          :math:`\epsilon`  :math:`> 0`
    ``eps_in_sqrt``  --                where :math:`\epsilon` goes
    ===============  ================  ===============

    Reference: Tieleman & Hinton, Coursera NN lecture 6.5 (2012).
    """
    def init(params):
        check_runs(params, beta2=beta2, eps=eps)
        return ScaleByRmsState({k: torch.zeros_like(p) for k, p in params.items()})

    def update(updates, state, params=None, **extra):
        s_new, out = dict(state.s), {}
        one_minus_b2 = _one_minus_power(beta2)
        for k, g in updates.items():
            b2, e = per_run(beta2, g, "beta2"), per_run(eps, g, "eps")
            s = s_new[k] = b2 * state.s[k] + per_run(one_minus_b2, g, "beta2") * g * g
            out[k] = g / torch.sqrt(s + e) if eps_in_sqrt else g / (torch.sqrt(s) + e)
        return out, ScaleByRmsState(s_new)

    return Transform(init, update, {"beta2": beta2, "eps": eps})


class ScaleByAdamState(NamedTuple):
    step: int
    m: Params  # first moment (the momentum)
    s: Params  # second moment, as in RMSprop (Kingma & Ba's v)


@accepts(beta1=Unit(per_run=True), beta2=Unit(per_run=True), eps=Positive(per_run=True))
def scale_by_adam(beta1: float | torch.Tensor = 0.9, beta2: float | torch.Tensor = 0.999,
                  eps: float | torch.Tensor = 1e-8) -> Transform:
    r"""Adam's preconditioned momentum, as ``torch.optim.Adam``: RMSprop plus momentum plus bias correction.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad
        s \leftarrow \beta_2 s + (1-\beta_2)\, g \odot g, \qquad
        u = \frac{m / (1-\beta_1^t)}{\sqrt{s / (1-\beta_2^t)} + \epsilon}

    ==========  ================  ===============
    argument    symbol            range
    ==========  ================  ===============
    ``beta1``   :math:`\beta_1`   :math:`[0, 1)`
    ``beta2``   :math:`\beta_2`   :math:`[0, 1)`
    ``eps``     :math:`\epsilon`  :math:`> 0`
    ==========  ================  ===============

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """
    def init(params):
        check_runs(params, beta1=beta1, beta2=beta2, eps=eps)
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return ScaleByAdamState(0, zeros, dict(zeros))

    def update(updates, state, params=None, **extra):
        t = state.step + 1
        m_new, s_new, out = dict(state.m), dict(state.s), {}
        # 1 - beta and the bias corrections 1 - beta^t in float64, before the cast to the parameters' dtype
        omb1, omb2, c1, c2 = (_one_minus_power(beta1), _one_minus_power(beta2), _one_minus_power(beta1, t),
                              _one_minus_power(beta2, t))
        for k, g in updates.items():
            b1, b2 = per_run(beta1, g, "beta1"), per_run(beta2, g, "beta2")
            m = m_new[k] = b1 * state.m[k] + per_run(omb1, g, "beta1") * g
            s = s_new[k] = b2 * state.s[k] + per_run(omb2, g, "beta2") * g * g
            m_hat, s_hat = m / per_run(c1, g, "beta1"), s / per_run(c2, g, "beta2")  # bias correction: m, s start at 0
            out[k] = m_hat / (torch.sqrt(s_hat) + per_run(eps, g, "eps"))
        return out, ScaleByAdamState(t, m_new, s_new)

    return Transform(init, update, {"beta1": beta1, "beta2": beta2, "eps": eps})


# --------------------------------------------------------------------------- weight decay

@accepts(weight_decay=NonNegative(per_run=True), mask=MASK)
def add_decayed_weights(weight_decay: float | torch.Tensor, mask: Mask = None) -> Transform:
    r"""Add :math:`\lambda w` to the update (only for tensors where ``mask`` is true).

    .. math:: u = g + \lambda\, w

    *Where* it sits in a chain is the algorithm: before a preconditioner it is
    L2 regularization (the penalty's gradient gets preconditioned too); after it,
    decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", ICLR 2019). For plain SGD the two coincide.

    ================  ===============  ================================================
    argument          symbol           range
    ================  ===============  ================================================
    ``weight_decay``  :math:`\lambda`  :math:`\ge 0`
    ``mask``          --               ``{name: bool}``, ``name -> bool`` or None (all)
    ================  ===============  ================================================
    """
    def init(params):
        check_runs(params, weight_decay=weight_decay)
        resolve_mask(mask, params)  # fail early on a mask naming unknown parameters
        return EmptyState()

    def update(updates, state, params=None, **extra):
        if not isinstance(weight_decay, torch.Tensor) and weight_decay == 0:
            return updates, state  # no decay: skip two full-size ops per tensor (g + 0 * w == g)
        params = need_params(params, "add_decayed_weights")
        on = resolve_mask(mask, params)
        return {k: g + per_run(weight_decay, g, "weight_decay") * params[k] if on[k] else g
                for k, g in updates.items()}, state

    return Transform(init, update, {"weight_decay": weight_decay})


# --------------------------------------------------------------------------- layer-wise rescaling

@accepts(trust_coefficient=Positive(per_run=True), mask=MASK)
def scale_by_trust_ratio(trust_coefficient: float | torch.Tensor = 1e-3, mask: Mask = None) -> Transform:
    r"""LARS's layer-wise rescaling: each tensor's step gets length :math:`\eta \lVert w \rVert`.

    .. math:: u = \eta\, \frac{\lVert w \rVert}{\lVert g \rVert}\, g
        \qquad\text{(per tensor, per run; ratio 1 where either norm is 0)}

    Placed after :func:`add_decayed_weights`, :math:`g = \nabla J + \lambda w` as in
    You et al. Tensors where ``mask`` is false (e.g. biases, normalizer gains) pass through.

    =====================  ============  ===========
    argument               symbol        range
    =====================  ============  ===========
    ``trust_coefficient``  :math:`\eta`  :math:`> 0`
    =====================  ============  ===========

    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks" (LARS), 2017.
    """
    def rescale(updates, params):
        params = need_params(params, "scale_by_trust_ratio")
        on = resolve_mask(mask, params)
        out = {}
        for k, g in updates.items():
            if not on[k]:
                out[k] = g
                continue
            w_norm, g_norm = run_norm(params[k]), run_norm(g)
            ratio = per_run(trust_coefficient, g, "trust_coefficient") * w_norm / g_norm
            out[k] = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio)) * g
        return out

    return stateless(rescale, {"trust_coefficient": trust_coefficient})


@accepts(mask=MASK)
def project_to_unit_norm(mask: Mask = None) -> Transform:
    r"""Keep scale-invariant weights on the unit sphere: place last in a chain.

    .. math:: u = \frac{w + g}{\lVert w + g \rVert} - w
        \qquad\text{so that}\qquad w + u = \frac{w + g}{\lVert w + g \rVert}

    (per tensor, per run; only where ``mask`` is true, e.g. ``model.scale_invariant``).
    For a scale-invariant weight the effective learning rate is :math:`\alpha/\lVert w\rVert^2`
    (Zhang et al. 2019); with :math:`\lVert w \rVert = 1` it stays exactly :math:`\alpha`,
    which removes the effect weight decay has through the weight norm.
    """
    def project(updates, params):
        params = need_params(params, "project_to_unit_norm")
        on = resolve_mask(mask, params)
        out = {}
        for k, g in updates.items():
            if on[k]:
                new = params[k] + g
                norm = run_norm(new)
                g = torch.where(norm > 0, new / norm, new) - params[k]
            out[k] = g
        return out

    return stateless(project)


# --------------------------------------------------------------------------- combinators

class MaskedState(NamedTuple):
    inner: Any


@accepts(transform=Instance(Transform), mask=MASK)
def masked(transform: Transform, mask: Mask) -> Transform:
    """Apply ``transform`` only to the tensors where ``mask`` is true; pass the others through.

    The inner transformation sees (and keeps state for) the selected tensors only.
    """
    def select(tree, on):
        return None if tree is None else {k: v for k, v in tree.items() if on[k]}

    def init(params):
        return MaskedState(transform.init(select(params, resolve_mask(mask, params))))

    def update(updates, state, params=None, **extra):
        on = resolve_mask(mask, updates if params is None else params)
        inner, inner_state = transform.update(select(updates, on), state.inner, select(params, on), **extra)
        return {k: inner[k] if on[k] else g for k, g in updates.items()}, MaskedState(inner_state)

    return Transform(init, update, transform.hparams)


def identity() -> Transform:
    """Leave the update unchanged (plain gradient direction, e.g. SGD as a grafting magnitude)."""
    return Transform(lambda params: EmptyState(), lambda updates, state, params=None, **extra: (updates, state))
