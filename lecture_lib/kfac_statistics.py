r"""K-FAC's statistics: the Kronecker factors :math:`A` and :math:`S` of every linear layer on one batch.

For a linear layer :math:`s = \bar W \bar a` with :math:`\bar W = [W \; b]` and :math:`\bar a = [a; 1]`,
K-FAC approximates the layer's block of the curvature by :math:`A \otimes S` (Martens & Grosse 2015):

.. math::  A = \mathbb{E}[\bar a \bar a^\top], \qquad S = \mathbb{E}[\mathcal{D}s\, \mathcal{D}s^\top].

Which curvature depends on where :math:`\mathcal{D}s` comes from (``curvature``, as in kfac-jax's
named estimator modes): targets sampled from the model (``'fisher'``), the training targets
(``'empirical'``), or the columns of a square root of the output Hessian (``'ggn'``).

* :func:`layer_taps` -- forward hooks, in a context manager that always removes them;
* :func:`sample_targets`, :func:`output_hessian_sqrt` -- the model's predictive distribution and
  the loss's curvature in the outputs;
* :func:`estimate_factors` -- ``{layer: (A, S)}`` on one batch.

Both the exact curvature (:mod:`lecture_lib.curvature`) and the optimizer
(:mod:`lecture_lib.optim.kfac_transform`) import these; this module imports neither.
The declarations of a batch (:data:`INPUTS`, :func:`targets_match`, :data:`LOSS`) live here too.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from . import losses as _losses
from ._validate import (Choice, Inputs, Loss, Model, Tensor, Where, accepts, one_target_per_example,
                        sequence_of)
from .models import BatchedLinear

CURVATURES = ("fisher", "empirical", "ggn")
Params = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- declarations of a batch
targets_match = one_target_per_example()   # y (if given): one target per example of x, (B, ...) or (R, B, ...)
LOSS = Loss(_losses.LOSSES)                # a loss name (or function) -> its name
INPUTS = Inputs()                          # a batch x: (B, features) or (R, B, features)
MODEL = Model()


@accepts(targets_match, x=INPUTS, y=Tensor(optional=True))
def check_inputs(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """A batch for a batched model: ``x`` ``(B, features)`` or ``(R, B, features)``, finite; ``y`` with ``B`` rows.

    For functions that check a batch inside their body; public functions declare ``x=INPUTS`` and
    the relation :func:`targets_match` instead.
    """


# ----------------------------------------------------------------------------- hooks
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


# ----------------------------------------------------------------------------- the loss in the outputs
def _generators(name: str, value):
    """A ``torch.Generator``, or a non-empty list/tuple of them (one per run)."""
    if isinstance(value, torch.Generator):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(g, torch.Generator) for g in value):
        return tuple(value)
    raise TypeError(f"{name} must be a torch.Generator or a list of them (one per run), got {value!r}")


#: ``generator=``: one stream for all runs, or one per run (then run ``r`` draws what a single run would draw from
#: ``generator[r]``, so runs that share a seed and their outputs share their samples)
GENERATORS = Where(_generators, bad=(0, "g", (), [0], [torch.Generator(), 1]), optional=True)


@accepts(loss=LOSS, out=Tensor(dim=3, finite=False), generator=GENERATORS)
def sample_targets(loss: str, out: torch.Tensor,
                   generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    r"""Targets drawn from the model's predictive distribution :math:`y \sim p(y \mid f(x))`.

    ``mse``: :math:`y = f + \epsilon`, :math:`\epsilon \sim \mathcal N(0, I)` (unit noise, so the
    Fisher equals the Gauss-Newton matrix); ``cross_entropy``: :math:`y \sim \mathrm{softmax}(f)`;
    ``logistic``: :math:`y \sim \mathrm{Bernoulli}(\sigma(f))`. ``out`` is ``(R, B, K)``.
    ``generator``: one for all runs, or a sequence of ``R`` (run ``r`` draws from ``generator[r]`` exactly what a
    one-run model would draw from it, so two runs with the same outputs and equally seeded generators get the same
    targets: common random numbers, for comparisons paired by seed).
    """
    out = out.detach()
    if isinstance(generator, tuple):
        if len(generator) != out.shape[0]:
            raise ValueError(f"generator holds {len(generator)} generators (one per run) but out holds "
                             f"{out.shape[0]} runs")
        return torch.cat([_sample(loss, out[r:r + 1], g) for r, g in enumerate(generator)])
    return _sample(loss, out, generator)


def _sample(loss: str, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if loss == "mse":
        return out + torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
    if loss == "cross_entropy":
        p = torch.softmax(out, -1).reshape(-1, out.shape[-1]).cpu()
        p = torch.where(torch.isfinite(p).all(-1, keepdim=True), p, 1.0 / p.shape[-1])  # a diverging run
        return torch.multinomial(p, 1, generator=generator).reshape(out.shape[:-1]).to(out.device)
    p = torch.nan_to_num(torch.sigmoid(out.squeeze(-1)), nan=0.5).cpu()
    return torch.bernoulli(p, generator=generator).to(out.device)


@accepts(loss=LOSS, out=Tensor(dim=3, finite=False))
def output_hessian_sqrt(loss: str, out: torch.Tensor) -> torch.Tensor:
    r"""A factor :math:`L` with :math:`L L^\top = H_{\text{out}}`, the Hessian of the loss in the outputs.

    ``out`` ``(R, B, K)``; shape ``(R, B, K, K)``. ``mse``: :math:`L = I`; ``cross_entropy``:
    :math:`L = \mathrm{diag}(\sqrt p) - p \sqrt p^\top` (then :math:`LL^\top = \mathrm{diag}(p) - pp^\top`
    because :math:`\sum_k p_k = 1`); ``logistic``: :math:`\sqrt{\sigma(1-\sigma)}`.
    """
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


# ----------------------------------------------------------------------------- the factors
def _with_bias_column(a: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([a, torch.ones_like(a[..., :1])], -1) if bias else a


def _second_moment(v: torch.Tensor) -> torch.Tensor:
    """``E_b[v v^T]`` per run for ``v`` of shape ``(R, B, n)``."""
    return v.transpose(1, 2) @ v / v.shape[1]


def _empirical_needs_targets(arguments: Mapping) -> None:
    if arguments["curvature"] == "empirical" and arguments["y"] is None:
        raise ValueError("curvature='empirical' needs the training targets y")


def _ggn_columns(loss: str, out: torch.Tensor, s: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
    r"""For each column :math:`L_k` of :func:`output_hessian_sqrt`: :math:`J_s^\top L_k`, the derivative in each of
    ``s`` (a layer's pre-activations) along that column; :math:`S_{\text{GGN}} = \sum_k \mathbb{E}[ds_k ds_k^\top]`."""
    L = output_hessian_sqrt(loss, out)
    for k in range(L.shape[-1]):
        # the vector-Jacobian product with L's k-th column, as the gradient of <out, L_k>: the same backward pass,
        # without the grad_outputs tensor whose first use imports sympy (0.27 s, 34 MB)
        yield torch.autograd.grad((out * L[..., k]).sum(), s, retain_graph=True)


def _tapped_forward(model: nn.Module, params: Params | None, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Tap]]:
    """The model's outputs on ``x`` with ``params`` (``None``: its own) and every linear layer's :class:`Tap`.

    Through :func:`torch.func.functional_call` with copies of the buffers, so the model is not modified; call it
    with gradients enabled to differentiate the outputs in the taps' ``s``.
    """
    params = dict(model.named_parameters()) if params is None else params
    state = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in params.items()}
    for k, b in model.named_buffers():      # copies: the statistics pass must not move running averages
        state[k] = params[k].detach().clone() if k in params else b.detach().clone()
    with layer_taps(model) as taps:
        out = torch.func.functional_call(model, state, (x,))
    return out, taps


@accepts(targets_match, _empirical_needs_targets, model=MODEL, x=INPUTS, y=Tensor(optional=True), loss=LOSS,
         curvature=Choice(CURVATURES), generator=GENERATORS)
def estimate_factors(model: nn.Module, params: Params | None, x: torch.Tensor, y: torch.Tensor | None,
                     loss, curvature: str = "fisher",
                     generator: torch.Generator | Sequence[torch.Generator] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    r"""Kronecker factors ``{layer: (A, S)}`` of every :class:`BatchedLinear` layer on one batch.

    :math:`A = \tfrac1B\sum_b \bar a_b \bar a_b^\top` (``(R, in+1, in+1)``, the 1 for the bias) and
    :math:`S = \tfrac1B\sum_b \mathcal{D}s_b \mathcal{D}s_b^\top` (``(R, out, out)``), where
    :math:`\mathcal{D}s_b` is the derivative of example ``b``'s loss with respect to the layer's
    pre-activations, back-propagated from

    * ``'fisher'``: a target sampled from the model (true Fisher, K-FAC-F) with ``generator``, one for all runs
      or one per run (:func:`sample_targets`);
    * ``'empirical'``: the training target ``y`` (empirical Fisher);
    * ``'ggn'``: each column of :math:`L` with :math:`LL^\top = H_{\text{out}}` (exact Gauss-Newton,
      K-FAC-G; the contributions of the columns are summed).

    ``params`` (``None``: the model's own; may also hold buffers) are used through
    :func:`torch.func.functional_call`, with copies of the buffers, so the model is not modified
    (also inside ``torch.no_grad()``). With batch norm the examples of a batch interact, and
    :math:`\mathcal{D}s` is the derivative of the batch's loss (times ``B``).
    """
    loss_fn = _losses.LOSSES[loss]
    layers = kfac_layers(model)
    with torch.enable_grad():
        out, taps = _tapped_forward(model, params, x)
        names = [n for n in layers if n in taps]
        s_list = [taps[n].s for n in names]
        S = {n: 0.0 for n in names}
        if curvature == "ggn":
            for ds in _ggn_columns(loss, out, s_list):
                for n, d in zip(names, ds):
                    S[n] = S[n] + _second_moment(d)
        else:
            targets = y if curvature == "empirical" else sample_targets(loss, out, generator)
            ds = torch.autograd.grad(loss_fn(out, targets).sum() * out.shape[1], s_list)
            S = {n: _second_moment(d) for n, d in zip(names, ds)}
    factors = {}
    for n in names:
        a = _with_bias_column(taps[n].a, layers[n].bias is not None)
        factors[n] = (_second_moment(a).detach(), S[n].detach())
    return factors


@accepts(model=MODEL, x=INPUTS, losses=sequence_of(LOSS, bad=((), ("hinge",), "mse")))
def ggn_factor_traces(model: nn.Module, params: Params | None, x: torch.Tensor, layer: str,
                      losses=("cross_entropy", "mse")) -> torch.Tensor:
    r"""``(R, len(losses))``: :math:`\operatorname{tr}A \cdot \operatorname{tr}S` of ``layer``'s Gauss-Newton factors
    for each loss, i.e. the traces of :func:`estimate_factors` ``(..., loss, 'ggn')[layer]``, on one batch.

    The same quantity at a fraction of the cost: one forward pass for all ``losses``, back-propagation to
    ``layer`` alone, and :math:`\operatorname{tr}S = \mathbb{E}_b \sum_k \lVert \mathcal{D}s_b^{(k)} \rVert^2`
    without forming :math:`S` (a recorded row of 06's damping panel: 64 → ~45 ms).
    """
    layers = kfac_layers(model)
    if layer not in layers:
        raise ValueError(f"layer must be one of the model's linear layers {list(layers)}, got {layer!r}")
    with torch.enable_grad():
        out, taps = _tapped_forward(model, params, x)
        traces = [sum(ds.square().sum(-1).mean(-1) for ds, in _ggn_columns(loss, out, [taps[layer].s]))
                  for loss in losses]
    a = _with_bias_column(taps[layer].a, layers[layer].bias is not None)
    return (a.square().sum(-1).mean(-1).unsqueeze(-1) * torch.stack(traces, -1)).detach()
