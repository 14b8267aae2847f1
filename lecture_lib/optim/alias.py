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
kfac       K-FAC -> decay -> lr (or decay -> K-FAC -> lr for L2)       Zhang et al. 2019
=========  ==========================================================  =========================

Every hyperparameter may be a float or an ``(R,)`` tensor (one value per run).
:func:`get` builds any of them by name; ``kfac`` also needs the model and its loss
(``get("kfac", model=model, loss="mse", lr=0.1, curvature="ggn")``) and the mini-batch at
every update (``update(grads, state, params, batch=(x, y))``; the training engine passes it).
``weight_decay_mask`` is ``{param name: bool}`` or a predicate ``name -> bool``,
e.g. ``model.scale_invariant`` to decay only the weights that feed a normalizer,
or ``lambda name: name.startswith("linears.2")`` for the top layer only.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from torch import nn

from .._validate import Bool, Choice, Int, NonNegative, Positive, Seed, Unit, Where, accepts, check_range
from ..kfac_statistics import CURVATURES, LOSS, MODEL
from .base import MASK, Mask, Transform, chain
from .kfac_transform import FALLBACKS, kfac_precondition
from .transforms import (LR, add_decayed_weights, scale_by_adam, scale_by_lr, scale_by_rms, scale_by_trust_ratio,
                         trace)


def _beta_pair(name, betas):
    """``(beta1, beta2)``, each a float or ``(R,)`` tensor in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    for which, beta in zip(("beta1", "beta2"), betas):
        check_range(which, beta, 0.0, 1.0, high_inclusive=False)


BETAS = Where(_beta_pair, bad=((0.9,), 0.9, (1.0, 0.999), (0.9, float("nan")), (-0.1, 0.9), (0.9, 0.999, 0.9), "ab"))
RATE = NonNegative(per_run=True)      # weight decay
DECAY = Unit(per_run=True)            # momentum, beta2


@accepts(lr=LR, momentum=DECAY, nesterov=Bool(), weight_decay=RATE, weight_decay_mask=MASK)
def sgd(lr, momentum=0.0, nesterov: bool = False, weight_decay=0.0, weight_decay_mask: Mask = None) -> Transform:
    r"""SGD with L2 regularization, as ``torch.optim.SGD``: :math:`v \leftarrow \rho v + \nabla J + \lambda w,\ w \leftarrow w - \alpha v`."""
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # L2: the penalty's gradient joins the momentum
        trace(momentum, nesterov),
        scale_by_lr(lr),
    )


@accepts(lr=LR, momentum=DECAY, nesterov=Bool(), weight_decay=RATE, weight_decay_mask=MASK)
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


@accepts(lr=LR, beta2=DECAY, eps=Positive(per_run=True), momentum=DECAY, weight_decay=RATE,
         weight_decay_mask=MASK, eps_in_sqrt=Bool())
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


@accepts(lr=LR, betas=BETAS, eps=Positive(per_run=True), weight_decay=RATE, weight_decay_mask=MASK)
def adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, weight_decay_mask: Mask = None) -> Transform:
    r"""Adam with L2 regularization, as ``torch.optim.Adam(weight_decay=...)``: the decay is preconditioned too.

    In the lecture's form: :math:`w \leftarrow (I - \alpha\lambda C^{-1}) w - \alpha C^{-1} \nabla J(w)`.
    """
    beta1, beta2 = betas
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # L2: before the preconditioner
        scale_by_adam(beta1, beta2, eps),
        scale_by_lr(lr),
    )


@accepts(lr=LR, betas=BETAS, eps=Positive(per_run=True), weight_decay=RATE, weight_decay_mask=MASK)
def adamw(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, weight_decay_mask: Mask = None) -> Transform:
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    In the lecture's form: :math:`w \leftarrow (1 - \alpha\lambda) w - \alpha C^{-1} \nabla J(w)`.
    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    beta1, beta2 = betas
    return chain(
        scale_by_adam(beta1, beta2, eps),
        add_decayed_weights(weight_decay, weight_decay_mask),  # decoupled: after the preconditioner
        scale_by_lr(lr),
    )


@accepts(lr=LR, momentum=DECAY, weight_decay=RATE, trust_coefficient=Positive(per_run=True), nesterov=Bool(),
         weight_decay_mask=MASK, trust_ratio_mask=MASK)
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


@accepts(model=MODEL, loss=LOSS, lr=LR, damping=RATE, weight_decay=RATE, decoupled=Bool(),
         curvature=Choice(CURVATURES), weight_decay_mask=MASK, stat_decay=Unit(), stat_interval=Int(1),
         inv_interval=Int(1), fallback=Choice(FALLBACKS), seed=Seed(runs="model"))
def kfac(model: nn.Module, loss, lr, damping=0.1, weight_decay=0.0, decoupled: bool = True,
         curvature: str = "fisher", weight_decay_mask: Mask = None, stat_decay: float = 0.95,
         stat_interval: int = 10, inv_interval: int = 100, fallback: str = "identity",
         seed: int | Sequence[int] = 0) -> Transform:
    r"""K-FAC with weight decay, decoupled or as L2 regularization (Zhang et al. 2019).

    * ``decoupled=True``: :math:`w \leftarrow (1-\alpha\lambda) w - \alpha (\hat G + \gamma I)^{-1}\nabla J(w)`
      = ``chain(kfac_precondition, add_decayed_weights, scale_by_lr)``;
    * ``decoupled=False`` (L2): :math:`w \leftarrow w - \alpha (\hat G + \gamma I)^{-1}(\nabla J(w) + \lambda w)`
      = ``chain(add_decayed_weights, kfac_precondition, scale_by_lr)``.

    ``lr`` :math:`\alpha`, ``weight_decay`` :math:`\lambda`, ``damping`` :math:`\gamma`; ``curvature``
    and the remaining arguments are those of :func:`~lecture_lib.optim.kfac_transform.kfac_precondition`.
    Its updates need the mini-batch: ``update(grads, state, params, batch=(x, y))``.
    """
    pre = kfac_precondition(model, loss, curvature=curvature, damping=damping, stat_decay=stat_decay,
                            stat_interval=stat_interval, inv_interval=inv_interval, fallback=fallback, seed=seed)
    wd = add_decayed_weights(weight_decay, mask=weight_decay_mask)
    t = chain(*((pre, wd) if decoupled else (wd, pre)), scale_by_lr(lr))
    return Transform(t.init, t.update, {**t.hparams, "weight_decay_mode": "decoupled" if decoupled else "l2"})


OPTIMIZERS = {"sgd": sgd, "sgdw": sgdw, "rmsprop": rmsprop, "adam": adam, "adamw": adamw, "lars": lars}
CURVATURE_OPTIMIZERS = {"kfac": kfac}      # these also need the model and its loss
_BY_NAME = {**OPTIMIZERS, **CURVATURE_OPTIMIZERS}
NAMES = tuple(sorted(_BY_NAME))


def _hparams_fit(arguments: Mapping) -> None:
    """Relation of :func:`get`: the hyperparameters are arguments of the named optimizer, and all it needs."""
    name, hparams = arguments["name"], arguments["hparams"]
    accepted = inspect.signature(_BY_NAME[name]).parameters
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"{name} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    missing = [p for p, spec in accepted.items() if spec.default is spec.empty and p not in hparams]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)}")


@accepts(_hparams_fit, name=Choice(NAMES))
def get(name: str, **hparams) -> Transform:
    """Build an optimizer by name, e.g. ``get("adamw", lr=1e-3, weight_decay=0.1)`` (for dropdowns).

    ``get("kfac", model=model, loss="mse", lr=0.1, curvature="ggn")``: K-FAC needs the model and its loss.
    """
    return _BY_NAME[name](**hparams)
