"""Tiny helpers shared by the benchmark scripts: timing, the result cache's state, and the JSON summary on the last line."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def cache_entries(cache_dir: str) -> int:
    """How many results the result cache folder holds (joblib keeps one ``output.pkl`` per entry); 0 when
    ``off``. The benchmarks that start the app report it next to ``cache_dir``: cold or warmed."""
    return 0 if cache_dir == "off" else sum(1 for _ in Path(cache_dir).rglob("output.pkl"))


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
