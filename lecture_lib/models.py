r"""Models whose parameters carry a leading run dimension.

Every model here holds ``R`` independent copies of its weights (``runs=R``), so a
family of configurations trains as one computation: a linear layer's weight has
shape ``(R, out, in)`` and a forward pass is one batched matrix product
(:func:`torch.baddbmm`). Inputs are ``(B, in)`` (shared by all runs) or
``(R, B, in)``; outputs are ``(R, B, out)``.

Each model exposes ``scale_invariant``: ``{parameter name: bool}``, true for the
weights that feed into a normalizer, for which :math:`J(\gamma w) = J(w)`.

Seeds: ``seed`` is an ``int`` (every run starts from the same weights, e.g. for
a learning-rate sweep from one start) or a sequence of ``R`` ints (one per run;
run ``r`` then starts exactly where a single-run model with ``seed[r]`` would).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._validate import Bool, Choice, Int, Positive, Scalar, Seed, Sizes, accepts, check_batch
from .device import resolve

NORMS = ("none", "batch", "center")
ACTIVATIONS = ("relu", "tanh", "logistic", "linear")


def _seeds(seed, runs: int) -> list[int]:
    """One seed per run (``seed`` is declared ``Seed(runs="runs")``: an int or ``runs`` ints)."""
    return [seed] * runs if isinstance(seed, int) else list(seed)


def _uniform(shape, bound: float, seeds: list[int], dtype, device) -> torch.Tensor:
    """One independent U(-bound, bound) draw of ``shape`` per run, seeded per run."""
    draws = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        draws.append((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound)
    return torch.stack(draws).to(dtype=dtype, device=device)


def _as_runs(x: torch.Tensor, runs: int, like: torch.Tensor | None = None, features: int | None = None,
             size_name: str = "in_features") -> torch.Tensor:
    """A model's input ``(B, in)`` (shared by all runs) or ``(R, B, in)``, checked, as ``(R, B, in)``."""
    check_batch("input", x, runs, features, like, size_name=size_name)
    return x.unsqueeze(0).expand(runs, -1, -1) if x.dim() == 2 else x


class BatchedLinear(nn.Module):
    r"""``R`` independent affine maps :math:`s = W a + b`, weight ``(R, out, in)``, bias ``(R, out)``.

    Initialised like :class:`torch.nn.Linear`: :math:`U(-1/\sqrt{in}, 1/\sqrt{in})`.
    """

    @accepts(in_features=Int(1), out_features=Int(1), runs=Int(1), bias=Bool(), seed=Seed(runs="runs"))
    def __init__(self, in_features: int, out_features: int, runs: int = 1, bias: bool = True,
                 seed=0, dtype=torch.float32, device=None):
        super().__init__()
        self.in_features, self.out_features, self.runs = in_features, out_features, runs
        seeds = _seeds(seed, runs)
        device = resolve(device)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(_uniform((out_features, in_features), bound, seeds, dtype, device))
        if bias:
            self.bias = nn.Parameter(_uniform((out_features,), bound, [s + 7919 for s in seeds], dtype, device))
        else:
            self.register_parameter("bias", None)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = _as_runs(a, self.runs, self.weight, self.in_features)
        w_t = self.weight.transpose(1, 2)
        if self.bias is None:
            return torch.bmm(a, w_t)
        return torch.baddbmm(self.bias.unsqueeze(1), a, w_t)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, runs={self.runs}, bias={self.bias is not None}"


class BatchNorm(nn.Module):
    r"""Per-run normalization over the batch dimension of ``(R, B, F)`` activations.

    ``kind='batch'``: :math:`\hat s = (s - \mu_B)/\sqrt{\sigma_B^2 + \epsilon}` (batch norm);
    ``kind='center'``: :math:`\hat s = s - \mu_B` (batch centering: center, don't scale).
    Then an optional per-feature affine map :math:`\gamma \hat s + \beta`. In eval mode the
    running averages of the statistics are used instead of the batch's.
    """

    @accepts(features=Int(1), kind=Choice(("batch", "center")), runs=Int(1), affine=Bool(), eps=Positive(),
             momentum=Scalar(0.0, 1.0))
    def __init__(self, features: int, kind: str = "batch", runs: int = 1, affine: bool = True,
                 eps: float = 1e-5, momentum: float = 0.1, dtype=torch.float32, device=None):
        super().__init__()
        self.kind, self.eps, self.momentum = kind, eps, float(momentum)
        device = resolve(device)
        shape = (runs, features)
        if affine:
            self.gain = nn.Parameter(torch.ones(shape, dtype=dtype, device=device)) if kind == "batch" else None
            self.shift = nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))
        else:
            self.gain = self.shift = None
        self.register_buffer("running_mean", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("running_var", torch.ones(shape, dtype=dtype, device=device))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        batch_statistics = self.training and self.kind == "batch"   # a variance needs two examples
        check_batch("input", s, *self.running_mean.shape, like=self.running_mean, shared=False,
                    min_batch=2 if batch_statistics else 1)
        if self.training:
            mean = s.mean(dim=1, keepdim=True)
            centered = s - mean
            # the variance from the centered values: one pass, and far faster than Tensor.var on CPU
            var = centered.square().mean(dim=1, keepdim=True) if self.kind == "batch" else None
            with torch.no_grad():
                self.running_mean.lerp_(mean.squeeze(1), self.momentum)
                if var is not None:
                    self.running_var.lerp_(var.squeeze(1), self.momentum)
        else:
            centered = s - self.running_mean.unsqueeze(1)
            var = self.running_var.unsqueeze(1)
        # fold 1/sqrt(var + eps) and the gain into one (R, 1, F) factor: a single full-size multiply
        scale = torch.rsqrt(var + self.eps) if self.kind == "batch" else None
        if self.gain is not None:
            scale = self.gain.unsqueeze(1) if scale is None else scale * self.gain.unsqueeze(1)
        if scale is None:
            return centered if self.shift is None else centered + self.shift.unsqueeze(1)
        if self.shift is None:
            return centered * scale
        return torch.addcmul(self.shift.unsqueeze(1), centered, scale)


@accepts(name=Choice(ACTIVATIONS))
def activation(name: str):
    """The nonlinearity called ``name`` (one of :data:`ACTIVATIONS`)."""
    return {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid, "linear": lambda s: s}[name]


class MLP(nn.Module):
    r"""Multilayer perceptron with optional normalization before each hidden nonlinearity.

    ``sizes = [in, h_1, ..., h_L, out]``. Hidden block ``l``: ``s = W a + b``, then the
    normalizer (``norm='none' | 'batch' | 'center'``), then the activation. With
    ``norm='batch'`` the hidden linear layers have no bias (the normalizer's shift
    replaces it) and their weights are scale invariant. The output layer is a plain
    affine map and never scale invariant. ``eps`` is the normalizer's
    :math:`\epsilon`; scale invariance is exact only as :math:`\epsilon \to 0`.
    """

    @accepts(sizes=Sizes(), norm=Choice(NORMS), activation=Choice(ACTIVATIONS), runs=Int(1), seed=Seed(runs="runs"),
             affine=Bool(), eps=Positive())
    def __init__(self, sizes: Sequence[int], norm: str = "none", activation: str = "relu",
                 runs: int = 1, seed=0, affine: bool = True, eps: float = 1e-5,
                 dtype=torch.float32, device=None):
        super().__init__()
        self.sizes, self.norm, self.runs = sizes, norm, runs
        self.activation_name = activation
        self._act = globals()["activation"](activation)
        seeds = _seeds(seed, runs)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            hidden = i < len(sizes) - 2
            normalized = hidden and norm != "none"
            layer_seeds = [s * 1000 + i for s in seeds]
            self.linears.append(BatchedLinear(n_in, n_out, runs, bias=not (normalized and norm == "batch"),
                                              seed=layer_seeds, dtype=dtype, device=device))
            if normalized:
                self.norms.append(BatchNorm(n_out, norm, runs, affine=affine, eps=eps, dtype=dtype,
                                            device=device))
            else:
                self.norms.append(nn.Identity())

    @property
    def scale_invariant(self) -> dict[str, bool]:
        flags = {}
        for name, _ in self.named_parameters():
            i = int(name.split(".")[1]) if name.startswith("linears.") else -1
            hidden = 0 <= i < len(self.sizes) - 2
            flags[name] = name.startswith("linears.") and hidden and self.norm == "batch"
        return flags

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        last = len(self.linears) - 1
        for i, (lin, nrm) in enumerate(zip(self.linears, self.norms)):
            s = lin(a)
            if i == last:
                return s
            a = self._act(nrm(s))
        return a  # pragma: no cover


class DeepLinear(nn.Module):
    """A deep linear network without biases: ``f(x) = W_K ... W_1 x`` (``sizes = [in, ..., out]``)."""

    @accepts(sizes=Sizes(), runs=Int(1), seed=Seed(runs="runs"))
    def __init__(self, sizes: Sequence[int], runs: int = 1, seed=0, dtype=torch.float32, device=None):
        super().__init__()
        self.sizes, self.runs = sizes, runs
        seeds = _seeds(seed, runs)
        self.linears = nn.ModuleList(
            BatchedLinear(a, b, runs, bias=False, seed=[s * 1000 + i for s in seeds], dtype=dtype, device=device)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    @property
    def scale_invariant(self) -> dict[str, bool]:
        return {name: False for name, _ in self.named_parameters()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.linears:
            x = lin(x)
        return x


class ScaleInvariantLinear(nn.Module):
    r"""The toy scale-invariant model :math:`f(x) = c\, x^\top w / \lVert w \rVert`.

    Its cost depends on the direction of ``w`` only, so :math:`J(\gamma w) = J(w)`
    for :math:`\gamma > 0`; ``scale`` ``c`` fixes the output scale (the role a
    normalizer's gain plays). Weight shape ``(R, dim)``; output ``(R, B, 1)``.
    """

    @accepts(dim=Int(1), scale=Positive(), runs=Int(1), seed=Seed(runs="runs"), init_norm=Positive())
    def __init__(self, dim: int, scale: float = 1.0, runs: int = 1, seed=0, init_norm: float = 1.0,
                 dtype=torch.float32, device=None):
        super().__init__()
        self.dim, self.runs, self.scale = dim, runs, float(scale)
        seeds = _seeds(seed, runs)
        w = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            v = torch.randn(dim, generator=g, dtype=torch.float64)
            w.append(v / v.norm() * init_norm)
        self.w = nn.Parameter(torch.stack(w).to(dtype=dtype, device=resolve(device)))

    @property
    def scale_invariant(self) -> dict[str, bool]:
        return {"w": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_runs(x, self.runs, self.w, self.dim, "dim")
        direction = self.w / self.w.norm(dim=1, keepdim=True)
        return self.scale * torch.bmm(x, direction.unsqueeze(-1))
