"""Tiny helpers shared by the benchmark scripts: timing, and the JSON summary on the last line."""
from __future__ import annotations

import json
import time
from collections.abc import Callable


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Fastest wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cuda_timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Like :func:`timeit`, synchronizing CUDA around each call so queued kernels are counted."""
    import torch

    def synced():
        torch.cuda.synchronize()
        fn()
        torch.cuda.synchronize()

    return timeit(synced, repeats, warmup)


def row(label: str, value, unit: str = "") -> None:
    """Print one aligned line of a side-by-side table."""
    shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
    print(f"  {label:<44s} {shown:>12s} {unit}")


def emit(summary: dict) -> None:
    """Print the machine-readable summary: always the script's LAST line."""
    print(json.dumps(summary, sort_keys=True))
