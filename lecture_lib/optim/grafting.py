r"""Grafting: one optimizer's step size with another optimizer's direction.

Grafting separates the two things an optimizer decides each step, *how far* and
*which way*, so that they can be studied apart. Running Adam's direction with
SGD's per-layer step size (or the reverse) shows which of the two makes Adam
behave differently from SGD.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._validate import Instance, NonNegative, accepts
from .base import Transform, run_norm


class GraftState(NamedTuple):
    magnitude: Any
    direction: Any


@accepts(magnitude=Instance(Transform), direction=Instance(Transform), eps=NonNegative())
def graft(magnitude: Transform, direction: Transform, eps: float = 1e-16) -> Transform:
    r"""Run two transformations on the same gradient; keep the direction of one and the norm of the other.

    .. math:: u = \frac{\lVert u_M \rVert}{\lVert u_D \rVert + \epsilon}\, u_D

    with norms taken per tensor (per layer) and per run. Both transformations
    should leave out the learning rate; add it after::

        chain(graft(identity(), scale_by_adam()), scale_by_lr(lr))   # SGD's step size, Adam's direction

    =============  ================  =======================================
    argument       symbol            meaning
    =============  ================  =======================================
    ``magnitude``  :math:`M`         gives each tensor's step norm
    ``direction``  :math:`D`         gives each tensor's step direction
    ``eps``        :math:`\epsilon`  :math:`\ge 0`, guards :math:`u_D = 0`
    =============  ================  =======================================

    Reference: Agarwal, Anil, Hazan, Koren & Zhang, "Disentangling Adaptive
    Gradient Methods from Learning Rates" (AdaGraft), arXiv:2002.11803, 2020;
    google-research/precondition, ``tearfree/grafting.py``.
    """
    def init(params):
        return GraftState(magnitude.init(params), direction.init(params))

    def update(updates, state, params=None, **extra):
        u_m, state_m = magnitude.update(updates, state.magnitude, params, **extra)
        u_d, state_d = direction.update(updates, state.direction, params, **extra)
        out = {k: run_norm(u_m[k]) / (run_norm(u_d[k]) + eps) * u_d[k] for k in u_d}
        return out, GraftState(state_m, state_d)

    hparams = {f"magnitude.{k}": v for k, v in magnitude.hparams.items()}
    hparams.update({f"direction.{k}": v for k, v in direction.hparams.items()})
    return Transform(init, update, hparams)
