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

* **statistics** -- :func:`layer_taps` (forward hooks in a context manager that always
  removes them) and :func:`estimate_factors` (``curvature='fisher' | 'empirical' | 'ggn'``);
* **solve** -- :func:`kron_damped_solve`, a pure function;
* **optimizer** -- :func:`kfac_precondition`, a :class:`~lecture_lib.optim.base.Transform`, so
  that L2 versus decoupled weight decay is the order of a chain, exactly as for Adam::

      kfac_l2 = chain(add_decayed_weights(wd), kfac_precondition(model, "mse"), scale_by_lr(lr))
      kfac_wd = chain(kfac_precondition(model, "mse"), add_decayed_weights(wd), scale_by_lr(lr))

  (:func:`kfac` builds either.)

The statistics need the mini-batch, which a gradient transformation never sees. The
transform therefore exposes ``hparams["observer"]``, whose pure method
``observe(state, params, x, y) -> state`` a training loop calls once per step *before*
``update``, most simply as :func:`observe` ``(transform, state, params, x, y)``, a no-op for
transforms without an observer (the engine does this every step). It re-estimates the
factors every ``stat_interval`` steps with its own forward/backward pass through
:func:`torch.func.functional_call` (so the model's parameters, gradients and normalization
buffers are left untouched).

Symbols and arguments: :math:`\gamma` ``damping`` (float or one value per run), running
average decay ``stat_decay``, factor re-estimation every ``stat_interval`` steps,
eigendecompositions every ``inv_interval`` steps (defaults 10 and 100, as in Zhang et al. 2019).

References: Martens & Grosse (2015), *Optimizing neural networks with Kronecker-factored
approximate curvature*; Grosse & Martens (2016), *A Kronecker-factored approximate Fisher
matrix for convolution layers*; Zhang, Wang, Xu & Grosse (2019), *Three mechanisms of weight
decay regularization*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import losses as _losses
from .._validate import check_choice, check_int, check_nonnegative, check_seed, check_tensor, check_unit_interval
from ..models import BatchedLinear
from .base import Params, Transform, chain, per_run
from .transforms import add_decayed_weights, scale_by_lr

CURVATURES = ("fisher", "empirical", "ggn")
FALLBACKS = ("identity", "diagonal")


# ----------------------------------------------------------------------------- statistics
class Tap(NamedTuple):
    """What a forward hook saw at one linear layer: its input ``a`` ``(R, B, in)`` and output ``s`` ``(R, B, out)``."""

    a: torch.Tensor
    s: torch.Tensor


def kfac_layers(model: nn.Module) -> dict[str, BatchedLinear]:
    """The layers K-FAC preconditions: every :class:`BatchedLinear` submodule, by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BatchedLinear)}


@contextlib.contextmanager
def layer_taps(model: nn.Module) -> Iterator[dict[str, Tap]]:
    """Record each :class:`BatchedLinear` layer's input and output during forward passes.

    Yields a dict ``{layer name: Tap(a, s)}`` filled by forward hooks (the latest pass wins).
    The hooks are removed when the block exits, also when it exits with an exception::

        with layer_taps(model) as taps:
            out = model(x)
        ds = torch.autograd.grad(loss(out, y).sum(), [t.s for t in taps.values()])
    """
    taps: dict[str, Tap] = {}
    handles = []

    def hook_for(name, layer):
        def hook(module, inputs, output):
            a = inputs[0]
            if a.dim() == 2:  # inputs shared by all runs
                a = a.unsqueeze(0).expand(layer.runs, -1, -1)
            taps[name] = Tap(a.detach(), output)

        return hook

    try:
        for name, layer in kfac_layers(model).items():
            handles.append(layer.register_forward_hook(hook_for(name, layer)))
        yield taps
    finally:
        for h in handles:
            h.remove()


def _loss_name(loss) -> str:
    if isinstance(loss, str):
        return check_choice("loss", loss, _losses.LOSSES)
    for name, fn in _losses.LOSSES.items():
        if loss is fn:
            return name
    raise ValueError(f"loss must be one of {', '.join(map(repr, _losses.LOSSES))} (a name or the function "
                     "from lecture_lib.losses): K-FAC needs to know the model's predictive distribution")


def sample_targets(loss: str, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Targets drawn from the model's predictive distribution :math:`y \sim p(y \mid f(x))`.

    ``mse``: :math:`y = f + \epsilon`, :math:`\epsilon \sim \mathcal N(0, I)` (unit noise, so the
    Fisher equals the Gauss-Newton matrix); ``cross_entropy``: :math:`y \sim \mathrm{softmax}(f)`;
    ``logistic``: :math:`y \sim \mathrm{Bernoulli}(\sigma(f))`.
    """
    loss = _loss_name(loss)
    out = out.detach()
    if loss == "mse":
        return out + torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
    if loss == "cross_entropy":
        p = torch.softmax(out, -1).reshape(-1, out.shape[-1]).cpu()
        p = torch.where(torch.isfinite(p).all(-1, keepdim=True), p, 1.0 / p.shape[-1])  # a diverging run
        return torch.multinomial(p, 1, generator=generator).reshape(out.shape[:-1]).to(out.device)
    p = torch.nan_to_num(torch.sigmoid(out.squeeze(-1)), nan=0.5).cpu()
    return torch.bernoulli(p, generator=generator).to(out.device)


def output_hessian_sqrt(loss: str, out: torch.Tensor) -> torch.Tensor:
    r"""A factor :math:`L` with :math:`L L^\top = H_{\text{out}}`, the Hessian of the loss in the outputs.

    Shape ``(R, B, K, K)``. ``mse``: :math:`L = I`; ``cross_entropy``:
    :math:`L = \mathrm{diag}(\sqrt p) - p \sqrt p^\top` (then :math:`LL^\top = \mathrm{diag}(p) - pp^\top`
    because :math:`\sum_k p_k = 1`); ``logistic``: :math:`\sqrt{\sigma(1-\sigma)}`.
    """
    loss = _loss_name(loss)
    out = out.detach()
    R, B, K = out.shape
    if loss == "mse":
        return torch.eye(K, dtype=out.dtype, device=out.device).expand(R, B, K, K)
    if loss == "cross_entropy":
        p = torch.softmax(out, -1)
        sq = p.sqrt()
        return torch.diag_embed(sq) - p.unsqueeze(-1) * sq.unsqueeze(-2)
    p = torch.sigmoid(out)
    return (p * (1 - p)).sqrt().unsqueeze(-1)


def _with_bias_column(a: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([a, torch.ones_like(a[..., :1])], -1) if bias else a


def _second_moment(v: torch.Tensor) -> torch.Tensor:
    """``E_b[v v^T]`` per run for ``v`` of shape ``(R, B, n)``."""
    return v.transpose(1, 2) @ v / v.shape[1]


def check_inputs(x, y=None) -> None:
    """A batch for a batched model: ``x`` ``(B, features)`` or ``(R, B, features)``, finite; ``y`` with ``B`` rows."""
    check_tensor("x", x)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must have shape (batch, features) or (runs, batch, features), got {tuple(x.shape)}")
    if y is not None:
        check_tensor("y", y)
        batch = x.shape[-2]
        if y.shape[0] != batch and not (y.dim() >= 2 and y.shape[1] == batch):   # (B, ...) or per run (R, B, ...)
            raise ValueError(f"y must hold one target per example of x ({batch}), got shape {tuple(y.shape)}")


def estimate_factors(model: nn.Module, params: Params | None, x: torch.Tensor, y: torch.Tensor | None,
                     loss, curvature: str = "fisher",
                     generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    r"""Kronecker factors ``{layer: (A, S)}`` of every :class:`BatchedLinear` layer on one batch.

    :math:`A = \tfrac1B\sum_b \bar a_b \bar a_b^\top` (``(R, in+1, in+1)``, the 1 for the bias) and
    :math:`S = \tfrac1B\sum_b \mathcal{D}s_b \mathcal{D}s_b^\top` (``(R, out, out)``), where
    :math:`\mathcal{D}s_b` is the derivative of example ``b``'s loss with respect to the layer's
    pre-activations, back-propagated from

    * ``'fisher'``: a target sampled from the model (true Fisher, K-FAC-F);
    * ``'empirical'``: the training target ``y`` (empirical Fisher);
    * ``'ggn'``: each column of :math:`L` with :math:`LL^\top = H_{\text{out}}` (exact Gauss-Newton,
      K-FAC-G; the contributions of the columns are summed).

    ``params`` (``None``: the model's own; may also hold buffers) are used through
    :func:`torch.func.functional_call`, with copies of the buffers, so the model is not modified. With batch norm the examples of a batch
    interact, and :math:`\mathcal{D}s` is the derivative of the batch's loss (times ``B``).
    """
    curvature = check_choice("curvature", curvature, CURVATURES)
    loss_name = _loss_name(loss)
    loss_fn = _losses.LOSSES[loss_name]
    check_inputs(x, y)
    if curvature == "empirical" and y is None:
        raise ValueError("curvature='empirical' needs the training targets y")
    params = dict(model.named_parameters()) if params is None else params
    state = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in params.items()}
    for k, b in model.named_buffers():      # copies: the statistics pass must not move running averages
        state[k] = params[k].detach().clone() if k in params else b.detach().clone()
    layers = kfac_layers(model)
    with torch.enable_grad(), layer_taps(model) as taps:
        out = torch.func.functional_call(model, state, (x,))
    names = [n for n in layers if n in taps]
    s_list = [taps[n].s for n in names]
    B = out.shape[1]
    S = {n: 0.0 for n in names}
    if curvature == "ggn":
        L = output_hessian_sqrt(loss_name, out)
        for k in range(L.shape[-1]):
            ds = torch.autograd.grad(out, s_list, grad_outputs=L[..., k], retain_graph=True)
            for n, d in zip(names, ds):
                S[n] = S[n] + _second_moment(d)
    else:
        targets = y if curvature == "empirical" else sample_targets(loss_name, out, generator)
        ds = torch.autograd.grad(loss_fn(out, targets).sum() * B, s_list)
        for n, d in zip(names, ds):
            S[n] = _second_moment(d)
    factors = {}
    for n in names:
        a = _with_bias_column(taps[n].a, layers[n].bias is not None)
        factors[n] = (_second_moment(a).detach(), S[n].detach())
    return factors


# ----------------------------------------------------------------------------- solve
def kron_damped_solve(QA: torch.Tensor, dA: torch.Tensor, QS: torch.Tensor, dS: torch.Tensor,
                      G: torch.Tensor, damping) -> torch.Tensor:
    r"""Solve :math:`(A \otimes S + \gamma I)\operatorname{vec}(X) = \operatorname{vec}(G)` through the eigenbases.

    :math:`X = Q_S \big[(Q_S^\top G Q_A) \oslash (d_S d_A^\top + \gamma)\big] Q_A^\top`, where
    :math:`A = Q_A\,\mathrm{diag}(d_A)\,Q_A^\top` is ``(…, n, n)``, :math:`S = Q_S\,\mathrm{diag}(d_S)\,Q_S^\top`
    is ``(…, m, m)`` and ``G`` is ``(…, m, n)``; ``vec`` stacks columns, so
    :math:`(A\otimes S)\operatorname{vec}(X) = \operatorname{vec}(S X A)`. ``damping`` :math:`\gamma` is a
    float or one value per leading index (``(R,)``). Cost :math:`O(n^3 + m^3)` for the
    decompositions instead of :math:`O((nm)^3)` for the explicit matrix; pure function.
    """
    for name, t, d in (("QA", QA, 2), ("dA", dA, 1), ("QS", QS, 2), ("dS", dS, 1), ("G", G, 2)):
        check_tensor(name, t)
        if t.dim() < d:
            raise ValueError(f"{name} must have at least {d} dimensions, got shape {tuple(t.shape)}")
    n, m = QA.shape[-1], QS.shape[-1]
    for name, got, want in (("QA", QA.shape[-2:], (n, n)), ("dA", dA.shape[-1:], (n,)), ("QS", QS.shape[-2:], (m, m)),
                            ("dS", dS.shape[-1:], (m,)), ("G", G.shape[-2:], (m, n))):
        if tuple(got) != want:
            raise ValueError(f"{name} must end in shape {want} (QA is n x n = {n} x {n}, QS is m x m = {m} x {m}, "
                             f"G is m x n), got {tuple(got)}")
    try:
        lead = torch.broadcast_shapes(QA.shape[:-2], dA.shape[:-1], QS.shape[:-2], dS.shape[:-1], G.shape[:-2])
    except RuntimeError:
        raise ValueError("the leading (run) dimensions of QA, dA, QS, dS and G do not match: "
                         f"{tuple(QA.shape)}, {tuple(dA.shape)}, {tuple(QS.shape)}, {tuple(dS.shape)}, "
                         f"{tuple(G.shape)}") from None
    check_nonnegative("damping", damping)
    if not G.is_floating_point():
        raise TypeError(f"G must be a floating-point tensor, got dtype {G.dtype}")
    QA, dA, QS, dS = (t.to(G) for t in (QA, dA, QS, dS))     # the factors in G's precision
    if isinstance(damping, torch.Tensor) and damping.dim() == 1 and (not lead or damping.shape[0] not in (1, lead[0])):
        raise ValueError(f"damping holds {damping.shape[0]} per-run values but G has leading dimensions {tuple(lead)}")
    return _damped_solve(QA, dA, QS, dS, G, damping)


def _damped_solve(QA, dA, QS, dS, G, damping) -> torch.Tensor:
    """:func:`kron_damped_solve` without the argument checks (the optimizer's inner loop)."""
    if isinstance(damping, torch.Tensor) and damping.dim() == 1:
        damping = damping.to(G).reshape(-1, *([1] * (G.dim() - 1)))
    G_eig = QS.transpose(-1, -2) @ G @ QA                               # into the eigenbasis Q_A ⊗ Q_S
    G_eig = G_eig / (dS.unsqueeze(-1) * dA.unsqueeze(-2) + damping)     # there A ⊗ S + γI is diagonal
    return QS @ G_eig @ QA.transpose(-1, -2)                            # and back


def eigh_factor(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenbasis ``(Q, d)`` of a symmetric PSD factor, eigenvalues clipped at 0 (round-off)."""
    M = torch.nan_to_num(0.5 * (M + M.transpose(-1, -2)), nan=0.0, posinf=0.0, neginf=0.0)  # diverged runs
    d, Q = torch.linalg.eigh(M)
    return Q, d.clamp_min(0.0)


# ----------------------------------------------------------------------------- optimizer
class KFACState(NamedTuple):
    step: int                                   # updates done so far
    key: int                                    # which kfac_precondition this state belongs to
    A: dict[str, torch.Tensor]                  # running averages of the factors, (R, n, n)
    S: dict[str, torch.Tensor]                  # (R, m, m)
    eig: dict[str, tuple]                       # layer -> (QA, dA, QS, dS), refreshed every inv_interval
    diag: dict[str, torch.Tensor]               # fallback='diagonal': running average of g^2


_keys = itertools.count()


class BatchObserver:
    """``hparams["observer"]`` of a transform that must see the mini-batch: ``.observe(state, params, x, y) -> state``.

    Deliberately not callable: a training loop reads callable hyperparameters as schedules.
    """

    def __init__(self, fn):
        self._fn = fn

    def observe(self, state, params, x, y):
        return self._fn(state, params, x, y)

    def __repr__(self) -> str:
        return "BatchObserver(K-FAC curvature statistics)"


def kfac_precondition(model: nn.Module, loss, curvature: str = "fisher", damping=0.1,
                      stat_decay: float = 0.95, stat_interval: int = 10, inv_interval: int = 100,
                      fallback: str = "identity", seed: int = 0) -> Transform:
    r"""Precondition each linear layer's gradient by :math:`(A \otimes S + \gamma I)^{-1}`.

    ``update``: :math:`\nabla_{\bar W} \mapsto` :func:`kron_damped_solve` of the layer's
    :math:`[\nabla_W \; \nabla_b]` in the eigenbases of the running factors. The state's factors
    come from :func:`observe` ``(transform, state, params, x, y)``, to be called before ``update`` on
    each step: on steps ``k`` with ``k % stat_interval == 0`` it estimates the factors on the
    batch (:func:`estimate_factors`) and folds them into running averages
    :math:`\bar A \leftarrow \beta_s \bar A + (1-\beta_s) A` (the first estimate is taken as is);
    ``update`` recomputes the eigendecompositions on steps ``k % inv_interval == 0``.

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
    run is reproducible and the state holds no generator.
    """
    curvature = check_choice("curvature", curvature, CURVATURES)
    loss_name = _loss_name(loss)
    check_nonnegative("damping", damping)
    check_unit_interval("stat_decay", stat_decay)
    stat_interval = check_int("stat_interval", stat_interval)
    inv_interval = check_int("inv_interval", inv_interval)
    fallback = check_choice("fallback", fallback, FALLBACKS)
    seed = check_seed("seed", seed)
    layers = kfac_layers(model)
    key = next(_keys)

    def parts(name):
        return f"{name}.weight", (f"{name}.bias" if layers[name].bias is not None else None)

    def init(params):
        return KFACState(0, key, {}, {}, {}, {})

    def observe_own(state: KFACState, params, x, y) -> KFACState:
        if state.step % stat_interval:
            return state
        gen = torch.Generator().manual_seed(seed + state.step)
        factors = estimate_factors(model, params, x, y, loss_name, curvature, gen)
        A, S = dict(state.A), dict(state.S)
        for n, (a, s) in factors.items():
            if n in A:
                A[n] = stat_decay * A[n] + (1 - stat_decay) * a
                S[n] = stat_decay * S[n] + (1 - stat_decay) * s
            else:
                A[n], S[n] = a, s
        return state._replace(A=A, S=S)

    def observe_nested(state, params, x, y):
        """Refresh the factors of this transform's state, wherever it sits in a (nested) chain state."""
        if isinstance(state, KFACState):
            return observe_own(state, params, x, y) if state.key == key else state
        if isinstance(state, tuple):
            items = [observe_nested(s, params, x, y) for s in state]
            return type(state)._make(items) if hasattr(state, "_make") else tuple(items)
        return state

    def update(updates, state: KFACState, params=None):
        if not state.A:
            raise ValueError("K-FAC has no curvature statistics yet: call observe(transform, state, params, x, y) "
                             "before update (lecture_lib.engine.train does this)")
        eig = state.eig
        if state.step % inv_interval == 0 or not eig:
            eig = {}
            for n in state.A:
                QA, dA = eigh_factor(state.A[n])
                QS, dS = eigh_factor(state.S[n])
                eig[n] = (QA, dA, QS, dS)
        out = dict(updates)
        done = set()
        for n, (QA, dA, QS, dS) in eig.items():
            w, b = parts(n)
            G = updates[w] if b is None else torch.cat([updates[w], updates[b].unsqueeze(-1)], -1)
            X = _damped_solve(QA.to(G), dA.to(G), QS.to(G), dS.to(G), G, damping)
            if b is None:
                out[w] = X
            else:
                out[w], out[b] = X[..., :-1], X[..., -1]
            done.update({w, b} - {None})
        diag = dict(state.diag)
        if fallback == "diagonal":
            for k, g in updates.items():
                if k in done:
                    continue
                v = g * g if k not in diag else stat_decay * diag[k] + (1 - stat_decay) * g * g
                diag[k] = v
                out[k] = g / (v + per_run(damping, g))
        return out, state._replace(step=state.step + 1, eig=eig, diag=diag)

    hparams = {"damping": damping, "curvature": curvature, "observer": BatchObserver(observe_nested)}
    return Transform(init, update, hparams)


def kfac(model: nn.Module, loss, lr, damping=0.1, weight_decay=0.0, decoupled: bool = True,
         curvature: str = "fisher", weight_decay_mask=None, **kwargs) -> Transform:
    r"""K-FAC with weight decay, decoupled or as L2 regularization (Zhang et al. 2019).

    * ``decoupled=True``: :math:`w \leftarrow (1-\alpha\lambda) w - \alpha (\hat G + \gamma I)^{-1}\nabla J(w)`
      = ``chain(kfac_precondition, add_decayed_weights, scale_by_lr)``;
    * ``decoupled=False`` (L2): :math:`w \leftarrow w - \alpha (\hat G + \gamma I)^{-1}(\nabla J(w) + \lambda w)`
      = ``chain(add_decayed_weights, kfac_precondition, scale_by_lr)``.

    ``lr`` :math:`\alpha`, ``weight_decay`` :math:`\lambda`, ``damping`` :math:`\gamma`; the other keyword
    arguments go to :func:`kfac_precondition`.
    """
    pre = kfac_precondition(model, loss, curvature=curvature, damping=damping, **kwargs)
    wd = add_decayed_weights(weight_decay, mask=weight_decay_mask)
    parts = (pre, wd) if decoupled else (wd, pre)
    t = chain(*parts, scale_by_lr(lr))
    return Transform(t.init, t.update, {**t.hparams, "weight_decay_mode": "decoupled" if decoupled else "l2"})


def observe(transform: Transform, state: Any, params: Params, x: torch.Tensor, y: torch.Tensor | None) -> Any:
    """Let a transform that needs the mini-batch (K-FAC) see it; a no-op for every other transform."""
    observer = (getattr(transform, "hparams", None) or {}).get("observer")
    return state if observer is None else observer.observe(state, params, x, y)
