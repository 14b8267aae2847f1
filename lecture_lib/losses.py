r"""Per-run losses: each takes outputs ``(R, B, K)`` and returns one loss per run, shape ``(R,)``.

Summing the per-run losses before ``backward()`` gives every run exactly the
gradient of its own loss, because runs share no parameters.
Targets are ``(B, ...)`` (shared by all runs) or ``(R, B, ...)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_choice


def _expand(y: torch.Tensor, runs: int, dims: int) -> torch.Tensor:
    return y.unsqueeze(0).expand(runs, *y.shape) if y.dim() == dims else y


def _check(name: str, out, y) -> None:
    """Outputs ``(R, B, K)`` and targets, both tensors (no data-dependent checks: no device sync)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise (TypeError if not isinstance(out, torch.Tensor) else ValueError)(
            f"{name} must be a tensor of shape (runs, batch, outputs), got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.numel() == 0:   # a mean over no examples is NaN
        raise ValueError(f"{name} must not be empty (no runs or no examples), got shape {tuple(out.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"targets y must be a torch.Tensor, got {type(y).__name__}")


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Half squared error :math:`\tfrac12 \lVert f(x) - y \rVert^2`, averaged over the batch (output Hessian I)."""
    _check("out", out, y)
    if y.dim() == 1:  # (B,) scalar targets
        y = y.unsqueeze(-1)
    y = _expand(y, out.shape[0], 2)
    if y.shape != out.shape:
        raise ValueError(f"targets y of shape {tuple(y.shape)} do not match outputs of shape {tuple(out.shape)}")
    return 0.5 * (out - y).pow(2).sum(-1).mean(-1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Softmax cross-entropy with integer class labels, averaged over the batch.

    :math:`-\log \mathrm{softmax}(z)_y = \log \sum_c e^{z_c} - z_y`, written with
    :func:`torch.logsumexp` (stable, and several times faster on CPU than
    ``F.cross_entropy`` for the few classes used here).
    """
    _check("logits", logits, y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels y must be integer class indices (torch.long), got dtype {y.dtype}; "
                        "cross_entropy is the loss of classification tasks")
    y = _expand(y, logits.shape[0], 1)
    if y.shape != logits.shape[:2]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match logits of shape {tuple(logits.shape)}")
    try:
        picked = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    except RuntimeError:  # an out-of-range label (on the CPU; a GPU asserts on the device)
        raise ValueError(f"labels y must be class indices in [0, {logits.shape[-1] - 1}] for {logits.shape[-1]} "
                         f"logits, got values from {int(y.min())} to {int(y.max())}") from None
    return (torch.logsumexp(logits, dim=-1) - picked).mean(-1)


def logistic(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary logistic loss for one logit per example and labels in {0, 1}."""
    _check("logits", logits, y)
    if logits.shape[-1] != 1:
        raise ValueError(f"logits must hold one logit per example, shape (runs, batch, 1), got {tuple(logits.shape)}")
    y = _expand(y, logits.shape[0], 1).to(logits.dtype)
    if y.shape != logits.shape[:2]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match logits of shape {tuple(logits.shape)}")
    return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y, reduction="none").mean(-1)


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction correct per run: argmax for several outputs, sign for one logit."""
    if out.shape[-1] == 1:
        pred = (out.squeeze(-1) > 0).long()
    else:
        pred = out.argmax(-1)
    y = _expand(y, out.shape[0], 1)
    return (pred == y).to(out.dtype).mean(-1)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy, "logistic": logistic}


def get(name: str):
    return LOSSES[check_choice("loss", name, LOSSES)]
