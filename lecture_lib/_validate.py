"""Argument checks shared by every public function.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the
parameter and the accepted range, so that a slider set to a bad value produces
a sentence a student can act on instead of a NaN three cells later.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real

import torch

Hyper = "float | torch.Tensor"  # a scalar, or one value per run (shape (R,))


def _values(name: str, value) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a real number or a 1-D tensor of per-run values, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor with one value per run, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def check_range(name: str, value, low: float = -math.inf, high: float = math.inf,
                low_inclusive: bool = True, high_inclusive: bool = True):
    """Check that a hyperparameter (scalar or per-run tensor) lies in a range; return it unchanged."""
    t = _values(name, value)
    lo_ok = (t >= low) if low_inclusive else (t > low)
    hi_ok = (t <= high) if high_inclusive else (t < high)
    if not bool((lo_ok & hi_ok).all()):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        shown = value if t.numel() == 1 else f"values {t.tolist()}"
        raise ValueError(f"{name} must be in {lb}{low:g}, {high:g}{hb}, got {shown}")
    return value


def check_nonnegative(name: str, value):
    return check_range(name, value, 0.0)


def check_positive(name: str, value):
    return check_range(name, value, 0.0, low_inclusive=False)


def check_unit_interval(name: str, value):
    """0 <= value < 1: decay rates such as momentum and betas."""
    return check_range(name, value, 0.0, 1.0, high_inclusive=False)


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {value}")
    return value


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_tensor(name: str, value, dim: int | None = None, finite: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{name} must contain only finite values")
    return value
