r"""Per-run losses: each takes outputs ``(R, B, K)`` and returns one loss per run, shape ``(R,)``.

Summing the per-run losses before ``backward()`` gives every run exactly the
gradient of its own loss, because runs share no parameters.
Targets are ``(B, ...)`` (shared by all runs) or ``(R, B, ...)``.

The declarations check shapes and dtypes only, never values on a GPU: a loss runs every
training step, and reading a tensor's values there would wait for the device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import Choice, Labels, Tensor, accepts, fits, labels_below

OUTPUTS = Tensor(dim=3, finite=False)     # (R, B, K); NaN outputs are the engine's divergence test, not an error
ONE_LOGIT = Tensor(shape=(None, None, 1), finite=False)


def _targets(out_shape):
    """``(R, B, K)`` or ``(B, K)``; ``(B,)`` for one output."""
    R, B, K = out_shape
    return [(R, B, K), (B, K)] + [(B,)] * (K == 1)


def _labels(out_shape):
    """One label per example: ``(R, B)`` or ``(B,)``."""
    return [out_shape[:2], out_shape[1:2]]


def _expand(y: torch.Tensor, runs: int, dims: int) -> torch.Tensor:
    return y.unsqueeze(0).expand(runs, *y.shape) if y.dim() == dims else y


@accepts(fits("y", "out", _targets), out=OUTPUTS, y=Tensor(finite=False))
def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Half squared error :math:`\tfrac12 \lVert f(x) - y \rVert^2`, averaged over the batch (output Hessian I)."""
    if y.dim() == 1:  # (B,) scalar targets
        y = y.unsqueeze(-1)
    return 0.5 * (out - _expand(y, out.shape[0], 2)).pow(2).sum(-1).mean(-1)


@accepts(fits("y", "logits", _labels), labels_below("y", "logits"), logits=OUTPUTS, y=Labels())
def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Softmax cross-entropy with integer class labels, averaged over the batch.

    :math:`-\log \mathrm{softmax}(z)_y = \log \sum_c e^{z_c} - z_y`, written with
    :func:`torch.logsumexp` (stable, and several times faster on CPU than
    ``F.cross_entropy`` for the few classes used here).
    """
    picked = logits.gather(-1, _expand(y, logits.shape[0], 1).unsqueeze(-1)).squeeze(-1)
    return (torch.logsumexp(logits, dim=-1) - picked).mean(-1)


@accepts(fits("y", "logits", _labels), logits=ONE_LOGIT, y=Tensor(finite=False))
def logistic(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary logistic loss for one logit per example and labels in {0, 1}."""
    y = _expand(y, logits.shape[0], 1).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y, reduction="none").mean(-1)


@accepts(fits("y", "out", _labels), out=OUTPUTS, y=Tensor(finite=False))
def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction correct per run: argmax for several outputs, sign for one logit."""
    if out.shape[-1] == 1:
        pred = (out.squeeze(-1) > 0).long()
    else:
        pred = out.argmax(-1)
    y = _expand(y, out.shape[0], 1)
    return (pred == y).to(out.dtype).mean(-1)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy, "logistic": logistic}


@accepts(loss=Choice(tuple(LOSSES)))
def get(loss: str):
    """The loss function called ``loss``."""
    return LOSSES[loss]
