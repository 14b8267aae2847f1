r"""The familiar optimizers, each a short chain of transformations.

Read the chains side by side: the only difference between L2 regularization and
decoupled weight decay is *where* :func:`add_decayed_weights` sits.

=========  ==========================================================  =========================
alias      chain                                                       matches
=========  ==========================================================  =========================
sgd        decay -> momentum -> lr                                     ``torch.optim.SGD``
sgdw       momentum -> decay -> lr                                     SGDW (Loshchilov & Hutter)
rmsprop    decay -> RMS -> momentum -> lr                              ``torch.optim.RMSprop``
adam       decay -> Adam -> lr                                         ``torch.optim.Adam``
adamw      Adam -> decay -> lr                                         ``torch.optim.AdamW``
lars       decay -> trust ratio -> momentum -> lr                      LARS (You et al. 2017)
=========  ==========================================================  =========================

Every hyperparameter may be a float or an ``(R,)`` tensor (one value per run).
``weight_decay_mask`` is ``{param name: bool}`` or a predicate ``name -> bool``,
e.g. ``model.scale_invariant`` to decay only the weights that feed a normalizer,
or ``lambda name: name.startswith("linears.2")`` for the top layer only.
"""
from __future__ import annotations

import inspect

from .base import Mask, Transform, chain
from .transforms import (add_decayed_weights, scale_by_adam, scale_by_lr, scale_by_rms, scale_by_trust_ratio,
                         trace)


def sgd(lr, momentum=0.0, nesterov: bool = False, weight_decay=0.0, weight_decay_mask: Mask = None) -> Transform:
    r"""SGD with L2 regularization, as ``torch.optim.SGD``: :math:`v \leftarrow \rho v + \nabla J + \lambda w,\ w \leftarrow w - \alpha v`."""
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # L2: the penalty's gradient joins the momentum
        trace(momentum, nesterov),
        scale_by_lr(lr),
    )


def sgdw(lr, momentum=0.0, nesterov: bool = False, weight_decay=0.0, weight_decay_mask: Mask = None) -> Transform:
    r"""SGD with decoupled weight decay: :math:`v \leftarrow \rho v + \nabla J,\ w \leftarrow w - \alpha (v + \lambda w)`.

    Identical to :func:`sgd` without momentum; with momentum the decay no longer accumulates in :math:`v`.
    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    return chain(
        trace(momentum, nesterov),
        add_decayed_weights(weight_decay, weight_decay_mask),  # decoupled: decay skips the momentum
        scale_by_lr(lr),
    )


def rmsprop(lr, beta2=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, weight_decay_mask: Mask = None,
            eps_in_sqrt: bool = False) -> Transform:
    r"""RMSprop with L2 regularization, as ``torch.optim.RMSprop`` (torch's ``alpha`` is ``beta2``).

    :math:`s \leftarrow \beta_2 s + (1-\beta_2) g^2,\ w \leftarrow w - \alpha\, g / (\sqrt{s} + \epsilon)`
    with :math:`g = \nabla J + \lambda w`; ``eps_in_sqrt=True`` gives the lecture's :math:`g/\sqrt{s + \epsilon}`.
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_rms(beta2, eps, eps_in_sqrt),
        trace(momentum),
        scale_by_lr(lr),
    )


def adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, weight_decay_mask: Mask = None) -> Transform:
    r"""Adam with L2 regularization, as ``torch.optim.Adam(weight_decay=...)``: the decay is preconditioned too.

    In the lecture's form: :math:`w \leftarrow (I - \alpha\lambda C^{-1}) w - \alpha C^{-1} \nabla J(w)`.
    """
    beta1, beta2 = _betas(betas)
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # L2: before the preconditioner
        scale_by_adam(beta1, beta2, eps),
        scale_by_lr(lr),
    )


def adamw(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, weight_decay_mask: Mask = None) -> Transform:
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    In the lecture's form: :math:`w \leftarrow (1 - \alpha\lambda) w - \alpha C^{-1} \nabla J(w)`.
    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    beta1, beta2 = _betas(betas)
    return chain(
        scale_by_adam(beta1, beta2, eps),
        add_decayed_weights(weight_decay, weight_decay_mask),  # decoupled: after the preconditioner
        scale_by_lr(lr),
    )


def lars(lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, nesterov: bool = False,
         weight_decay_mask: Mask = None, trust_ratio_mask: Mask = None) -> Transform:
    r"""LARS: momentum SGD whose per-layer step has length :math:`\alpha\eta\lVert w \rVert`.

    :math:`g = \nabla J + \lambda w,\ v \leftarrow \rho v + \eta \frac{\lVert w\rVert}{\lVert g\rVert} g,\
    w \leftarrow w - \alpha v`, per tensor. ``trust_ratio_mask`` false (e.g. biases) means plain SGD there.
    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_trust_ratio(trust_coefficient, trust_ratio_mask),
        trace(momentum, nesterov),
        scale_by_lr(lr),
    )


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return betas


OPTIMIZERS = {"sgd": sgd, "sgdw": sgdw, "rmsprop": rmsprop, "adam": adam, "adamw": adamw, "lars": lars}


def get(name: str, **hparams) -> Transform:
    """Build an optimizer by name, e.g. ``get("adamw", lr=1e-3, weight_decay=0.1)`` (for dropdowns)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    fn = OPTIMIZERS[name]
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"{name} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    missing = [p for p, spec in accepted.items() if spec.default is spec.empty and p not in hparams]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)}")
    return fn(**hparams)
