"""Where tensors live: CUDA when available, CPU otherwise, overridable.

Set ``LECTURE_LIB_DEVICE=cpu`` (or ``cuda``, ``cuda:1``) to choose explicitly.
"""
from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """The device every constructor uses unless told otherwise."""
    name = os.environ.get("LECTURE_LIB_DEVICE", "").strip()
    if name:
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise ValueError(f"LECTURE_LIB_DEVICE must name a torch device such as 'cpu' or 'cuda', got {name!r}") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("LECTURE_LIB_DEVICE asks for 'cuda' but no CUDA device is available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(device=None) -> torch.device:
    return default_device() if device is None else torch.device(device)
