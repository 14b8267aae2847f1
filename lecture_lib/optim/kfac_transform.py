r"""K-FAC: Kronecker-factored approximate curvature as a gradient transformation.

For a linear layer :math:`s = \bar W \bar a` with :math:`\bar W = [W \; b]` and
:math:`\bar a = [a; 1]`, K-FAC approximates the layer's block of the curvature
(Fisher or Gauss-Newton) by a Kronecker product (Martens & Grosse 2015):

.. math::  G_{\ell\ell} \approx A_{\ell-1} \otimes S_\ell, \qquad
           A = \mathbb{E}[\bar a \bar a^\top], \quad S = \mathbb{E}[\mathcal{D}s\, \mathcal{D}s^\top],

and preconditions the layer's gradient :math:`\nabla_{\bar W}` with the damped inverse

.. math::  (A \otimes S + \gamma I)^{-1} \operatorname{vec}(\nabla_{\bar W})
           = \operatorname{vec}\!\Big(Q_S \big[ (Q_S^\top \nabla_{\bar W} Q_A) \oslash
             (d_S d_A^\top + \gamma) \big] Q_A^\top\Big),

with :math:`A = Q_A \operatorname{diag}(d_A) Q_A^\top`, :math:`S = Q_S \operatorname{diag}(d_S) Q_S^\top`:
two small eigendecompositions, never the Kronecker product (:func:`kron_damped_solve`).

Three concerns, three pieces (as in kfac-jax):

* **statistics** -- :mod:`lecture_lib.kfac_statistics`: forward hooks in a context manager
  that always removes them, and :func:`~lecture_lib.kfac_statistics.estimate_factors`
  (``curvature='fisher' | 'empirical' | 'ggn'``);
* **solve** -- :func:`kron_damped_solve`, a pure function;
* **optimizer** -- :func:`kfac_precondition`, a :class:`~lecture_lib.optim.base.Transform`, so
  that L2 versus decoupled weight decay is the order of a chain, exactly as for Adam::

      kfac_l2 = chain(add_decayed_weights(wd), kfac_precondition(model, "mse"), scale_by_lr(lr))
      kfac_wd = chain(kfac_precondition(model, "mse"), add_decayed_weights(wd), scale_by_lr(lr))

  (:func:`lecture_lib.optim.kfac` builds either.)

The statistics need the mini-batch. As in optax's "extra args" transformations, it is an
argument of the update: ``update(grads, state, params, batch=(x, y))``. Every transformation
of :mod:`lecture_lib.optim` accepts (and ``chain``, ``masked``, ``graft`` pass on) such keyword
arguments, so a training loop simply passes the batch to every update (``lecture_lib.engine``
and :class:`~lecture_lib.optim.TransformOptimizer` ``.step(batch=(x, y))`` do). The factors are
re-estimated every ``stat_interval`` steps with their own forward/backward pass through
:func:`torch.func.functional_call` (the model's parameters, gradients and normalization buffers
are left untouched).

Symbols and arguments: :math:`\gamma` ``damping`` (float or one value per run), running
average decay ``stat_decay``, factor re-estimation every ``stat_interval`` steps,
eigendecompositions every ``inv_interval`` steps (defaults 10 and 100, as in Zhang et al. 2019).

References: Martens & Grosse (2015), *Optimizing neural networks with Kronecker-factored
approximate curvature*; Grosse & Martens (2016), *A Kronecker-factored approximate Fisher
matrix for convolution layers*; Zhang, Wang, Xu & Grosse (2019), *Three mechanisms of weight
decay regularization*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .._validate import Choice, Int, Matrix, NonNegative, Seed, Tensor, Unit, accepts, one_per_run
from ..kfac_statistics import CURVATURES, LOSS, MODEL, estimate_factors, kfac_layers
from .base import Transform, check_runs, need_params, per_run

FALLBACKS = ("identity", "diagonal")


# ----------------------------------------------------------------------------- solve
def _eigenbases_fit_gradient(arguments: Mapping) -> None:
    """Relation of :func:`kron_damped_solve`: QA ``(…, n, n)``, dA ``(…, n)``, QS ``(…, m, m)``, dS ``(…, m)``,
    G ``(…, m, n)`` floating point with the factors in its dtype, leading (run) dimensions that broadcast."""
    t = {k: arguments[k] for k in ("QA", "dA", "QS", "dS", "G")}
    n, m = t["QA"].shape[-1], t["QS"].shape[-1]
    ends = {"QA": (n, n), "dA": (n,), "QS": (m, m), "dS": (m,), "G": (m, n)}
    bad = [k for k, end in ends.items() if t[k].dim() < len(end) or tuple(t[k].shape[-len(end):]) != end]
    try:
        torch.broadcast_shapes(*(t[k].shape[:-len(end)] for k, end in ends.items()))
    except RuntimeError:
        bad = bad or ["the leading (run) dimensions of QA, dA, QS, dS and G"]
    if bad:
        raise ValueError(f"{bad[0]}: shapes {[tuple(v.shape) for v in t.values()]} do "
                         f"not fit QA (…, n, n), dA (…, n), QS (…, m, m), dS (…, m), G (…, m, n)")
    if not t["G"].is_floating_point() or any(v.dtype != t["G"].dtype for v in t.values()):
        raise TypeError(f"G must be floating point and QA, dA, QS, dS of its dtype, got {[v.dtype for v in t.values()]}")


_damping_per_run = one_per_run("damping", runs=lambda arguments: len(G) if (G := arguments["G"]).dim() >= 3 else 0,
                               of="G (its leading dimension; a 2-D G has none)")


@accepts(_eigenbases_fit_gradient, _damping_per_run, QA=Tensor(), dA=Tensor(), QS=Tensor(), dS=Tensor(), G=Tensor(),
         damping=NonNegative(per_run=True))
def kron_damped_solve(QA: torch.Tensor, dA: torch.Tensor, QS: torch.Tensor, dS: torch.Tensor,
                      G: torch.Tensor, damping) -> torch.Tensor:
    r"""Solve :math:`(A \otimes S + \gamma I)\operatorname{vec}(X) = \operatorname{vec}(G)` through the eigenbases.

    :math:`X = Q_S \big[(Q_S^\top G Q_A) \oslash (d_S d_A^\top + \gamma)\big] Q_A^\top`, where
    :math:`A = Q_A\,\mathrm{diag}(d_A)\,Q_A^\top` is ``(…, n, n)``, :math:`S = Q_S\,\mathrm{diag}(d_S)\,Q_S^\top`
    is ``(…, m, m)`` and ``G`` is ``(…, m, n)``; ``vec`` stacks columns, so
    :math:`(A\otimes S)\operatorname{vec}(X) = \operatorname{vec}(S X A)`. ``damping`` :math:`\gamma` is a
    float or one value per leading index (``(R,)``). Cost :math:`O(n^3 + m^3)` for the
    decompositions instead of :math:`O((nm)^3)` for the explicit matrix; pure function.
    Inner loops that must let a diverged run's NaN through call ``kron_damped_solve.__wrapped__``
    (the same lines without the argument checks).
    """
    gamma = per_run(damping, G, "damping")                               # a float, or (R,) -> (R, 1, 1)
    G_eig = QS.mT @ G @ QA                                               # into the eigenbasis Q_A ⊗ Q_S
    G_eig = G_eig / (dS.unsqueeze(-1) * dA.unsqueeze(-2) + gamma)        # there A ⊗ S + γI is diagonal
    return QS @ G_eig @ QA.mT                                            # and back


@accepts(M=Matrix(batched=True, finite=False))
def eigh_factor(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenbasis ``(Q, d)`` of a symmetric PSD factor, eigenvalues clipped at 0 (round-off)."""
    M = torch.nan_to_num(0.5 * (M + M.mT), nan=0.0, posinf=0.0, neginf=0.0)  # a diverged run's factor
    d, Q = torch.linalg.eigh(M)
    return Q, d.clamp_min(0.0)


_solve = kron_damped_solve.__wrapped__     # the optimizer's inner loop: NaN in (a diverged run), NaN out


# ----------------------------------------------------------------------------- optimizer
class KFACState(NamedTuple):
    step: int                                   # updates done so far
    A: dict[str, torch.Tensor]                  # running averages of the factors, (R, n, n)
    S: dict[str, torch.Tensor]                  # (R, m, m)
    eig: dict[str, tuple]                       # layer -> (QA, dA, QS, dS), refreshed every inv_interval
    diag: dict[str, torch.Tensor]               # fallback='diagonal': running average of g^2


def need_batch(batch, who: str):
    """``batch=(x, y)`` for a transformation that estimates statistics on the mini-batch (``y`` may be None)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):  # engine.train and TransformOptimizer.step pass it
        raise ValueError(f"{who} needs the mini-batch on this step: update(updates, state, params, batch=(x, y))")
    return batch


@accepts(model=MODEL, loss=LOSS, curvature=Choice(CURVATURES), damping=NonNegative(per_run=True),
         stat_decay=Unit(), stat_interval=Int(1), inv_interval=Int(1), fallback=Choice(FALLBACKS),
         seed=Seed(runs="model"))
def kfac_precondition(model: nn.Module, loss, curvature: str = "fisher", damping=0.1,
                      stat_decay: float = 0.95, stat_interval: int = 10, inv_interval: int = 100,
                      fallback: str = "identity", seed: int | Sequence[int] = 0) -> Transform:
    r"""Precondition each linear layer's gradient by :math:`(A \otimes S + \gamma I)^{-1}`.

    ``update(grads, state, params, batch=(x, y))``: on steps ``k`` with ``k % stat_interval == 0``
    it estimates the factors on the batch (:func:`~lecture_lib.kfac_statistics.estimate_factors`
    at ``params``) and folds them into running averages
    :math:`\bar A \leftarrow \beta_s \bar A + (1-\beta_s) A` (the first estimate is taken as is);
    on steps ``k % inv_interval == 0`` it recomputes the eigendecompositions; every step it maps
    :math:`\nabla_{\bar W} \mapsto` :func:`kron_damped_solve` of the layer's :math:`[\nabla_W \; \nabla_b]`.
    ``y`` may be ``None`` except for ``curvature='empirical'``; other steps need no batch.

    Parameters outside :class:`BatchedLinear` layers (batch-norm gain and shift, the toy
    scale-invariant model's ``w``) have no Kronecker structure. ``fallback='identity'`` passes
    their gradient through (a plain gradient step with the same ``lr``);
    ``fallback='diagonal'`` divides it by :math:`v + \gamma` with :math:`v` a running average of
    :math:`g^2` (a crude diagonal of the empirical Fisher, in the same units as K-FAC's curvature).

    =================  ===========================================
    argument           symbol
    =================  ===========================================
    ``damping``        :math:`\gamma` (float or ``(R,)`` tensor)
    ``stat_decay``     :math:`\beta_s`, running average of the factors
    ``curvature``      ``'fisher'`` (K-FAC-F), ``'empirical'``, ``'ggn'`` (K-FAC-G)
    =================  ===========================================

    Sampled targets (``'fisher'``) are drawn from a generator seeded with ``seed + step``, so a
    run is reproducible and the state holds no generator. ``seed`` is an int (one stream for all runs)
    or one per run: then run ``r`` samples exactly as a one-run model with seed ``seed[r]`` would, and
    runs that share a seed share their samples wherever their outputs agree (common random numbers:
    runs compared paired by seed differ by what their settings change, not by their Fisher's noise).
    """
    layers = kfac_layers(model)

    def parts(name):
        return f"{name}.weight", (f"{name}.bias" if layers[name].bias is not None else None)

    def init(params):
        check_runs(params, damping=damping)
        return KFACState(0, {}, {}, {}, {})

    def observe(state: KFACState, params, batch) -> KFACState:
        x, y = batch
        gen = ([torch.Generator().manual_seed(s + state.step) for s in seed] if isinstance(seed, list)
               else torch.Generator().manual_seed(seed + state.step))
        A, S = dict(state.A), dict(state.S)
        for n, (a, s) in estimate_factors(model, params, x, y, loss, curvature, gen).items():
            A[n] = a if n not in A else stat_decay * A[n] + (1 - stat_decay) * a
            S[n] = s if n not in S else stat_decay * S[n] + (1 - stat_decay) * s
        return state._replace(A=A, S=S)

    def update(updates, state: KFACState, params=None, *, batch=None, **extra):
        if state.step % stat_interval == 0:
            state = observe(state, need_params(params, "kfac_precondition"), need_batch(batch, "kfac_precondition"))
        eig = state.eig
        if state.step % inv_interval == 0 or not eig:
            eig = {n: (*eigh_factor(state.A[n]), *eigh_factor(state.S[n])) for n in state.A}
        out, done = dict(updates), set()
        for n, (QA, dA, QS, dS) in eig.items():
            w, b = parts(n)
            if w not in updates or (b is not None and b not in updates):
                continue                                                # a frozen layer (no gradient)
            G = updates[w] if b is None else torch.cat([updates[w], updates[b].unsqueeze(-1)], -1)
            X = _solve(QA.to(G), dA.to(G), QS.to(G), dS.to(G), G, damping)
            if b is None:
                out[w] = X
            else:
                out[w], out[b] = X[..., :-1], X[..., -1]
            done.update({w, b} - {None})
        diag = dict(state.diag)
        if fallback == "diagonal":
            for k in updates.keys() - done:
                g = updates[k]
                diag[k] = g * g if k not in diag else stat_decay * diag[k] + (1 - stat_decay) * g * g
                out[k] = g / (diag[k] + per_run(damping, g))
        return out, state._replace(step=state.step + 1, eig=eig, diag=diag)

    return Transform(init, update, {"damping": damping, "curvature": curvature})
