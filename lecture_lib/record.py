"""The plain record a training run returns: arrays only, no plotting.

Shapes: ``K`` recorded steps, ``R`` runs. Entries of a run after it diverged are
NaN; ``diverged_at[r]`` is the step at which run ``r`` was stopped (``-1`` if it
never diverged). Figure builders draw each run only up to its divergence step.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Record:
    steps: np.ndarray                      # (K,) step index of each recorded row (0 = before the first update)
    loss: np.ndarray                       # (K, R) training loss on the step's minibatch
    accuracy: np.ndarray | None            # (K, R) training accuracy, classification only
    param_norm: dict[str, np.ndarray]      # name -> (K, R)  ||w|| per parameter tensor
    grad_norm: dict[str, np.ndarray]       # name -> (K, R)  ||grad J(w)||
    effective_lr: dict[str, np.ndarray]    # name -> (K, R)  alpha / ||w||^2
    angular_step: dict[str, np.ndarray]    # name -> (K, R)  angle (radians) between w_k and w_{k+1}
    diverged_at: np.ndarray                # (R,) int, -1 when the run never diverged
    scale_invariant: dict[str, bool] = field(default_factory=dict)
    eval_steps: np.ndarray | None = None   # (E,) steps at which the test set was evaluated
    test_loss: np.ndarray | None = None    # (E, R)
    test_accuracy: np.ndarray | None = None  # (E, R)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # anything a caller asked to track, (K, R, ...)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.loss.shape[1]

    def diverged(self, run: int) -> bool:
        return bool(self.diverged_at[run] >= 0)

    def divergence_note(self, run: int) -> str | None:
        """``"diverged at step k"`` for a diverged run, else ``None``."""
        return f"diverged at step {int(self.diverged_at[run])}" if self.diverged(run) else None

    def select(self, runs) -> "Record":
        """The record of the runs ``runs`` (indices, in order) only: one member of a batched family."""
        runs = np.asarray(runs, dtype=int)

        def cols(a):
            return None if a is None else np.asarray(a)[:, runs]

        return Record(self.steps, cols(self.loss), cols(self.accuracy),
                      {n: cols(a) for n, a in self.param_norm.items()}, {n: cols(a) for n, a in self.grad_norm.items()},
                      {n: cols(a) for n, a in self.effective_lr.items()},
                      {n: cols(a) for n, a in self.angular_step.items()}, self.diverged_at[runs],
                      dict(self.scale_invariant), self.eval_steps, cols(self.test_loss), cols(self.test_accuracy),
                      {n: cols(a) for n, a in self.extras.items()}, dict(self.config))

    def valid(self, run: int) -> slice:
        """Rows of the record that hold finite values for ``run``."""
        if not self.diverged(run):
            return slice(None)
        return slice(0, int(np.searchsorted(self.steps, self.diverged_at[run], side="left")))


def smooth(values, window: int = 5) -> np.ndarray:
    """Centred moving average along the step axis: ``(K, ...) -> (K, ...)``, shorter windows at both ends.

    The one smoother of the project (curves of noisy per-step quantities such as α‖g‖/‖w‖); NaN after a
    divergence stays NaN where the window reaches it.
    """
    v = np.asarray(values, dtype=float)
    window = max(1, min(int(window), v.shape[0]))
    kernel = np.ones(window)
    pad = [(window // 2, window - 1 - window // 2)] + [(0, 0)] * (v.ndim - 1)
    num = np.apply_along_axis(lambda col: np.convolve(col, kernel, "valid"), 0, np.pad(v, pad))
    den = np.convolve(np.pad(np.ones(v.shape[0]), pad[0]), kernel, "valid")
    return num / den.reshape(-1, *([1] * (v.ndim - 1)))


class Stream:
    """Partial results of a long experiment, for a panel that draws the runs as they train.

    ``progress`` is the experiment's ``progress`` argument: ``progress(fraction)``, or
    ``progress(fraction, partial)`` with ``partial`` a result of the experiment's own type whose
    curves stop at the steps trained so far (``None``: nothing is reported, nothing costs).
    :meth:`stage` makes the ``report`` argument of :func:`lecture_lib.engine.train` for one training
    of the experiment (or of :func:`lecture_lib.adaptive.descend`, whose ``so_far()`` is the iterates)::

        stream = Stream(progress)
        rec = train(..., report=stream.stage(lambda rec: OutputLayerResult(lr, rec, rates(rec)), 0.0, 1.0))

    A partial result is made (``make(record_so_far)``) once ``first`` updates are done (two: two rows when every
    step is recorded, so that each curve has a segment; zero: the initial row alone, before its update, for a
    builder that draws a lone point and whose rows are costly), then at most
    every ``interval`` seconds, and so that reporting (assembling the record and the result, and whatever
    ``progress`` does with it: a panel draws it) takes at most a ``1 / (1 + spacing)`` share of the time;
    ``fraction`` goes from ``start`` to ``end`` over the stage.
    """

    def __init__(self, progress: Callable[..., None] | None, interval: float = 0.1, spacing: float = 4.0):
        self.progress, self.interval, self.spacing = progress, interval, spacing
        self._next = 0.0                  # monotonic time after which the next partial result may be made

    def stage(self, make: Callable[[Record], Any] | None, start: float = 0.0, end: float = 1.0, first: int = 2):
        """The ``report(done, steps, so_far)`` of one training: fraction from ``start`` to ``end``, partial
        results ``make(record_so_far)`` from ``first`` updates done (``make=None``: the fraction only); ``None``
        without ``progress``."""
        if self.progress is None:
            return None

        def report(done: int, steps: int, so_far: Callable[[], Record]) -> None:
            fraction = start + (end - start) * done / steps
            now = time.monotonic()
            if make is None or now < self._next or done < first or done >= steps:
                self.progress(fraction)    # the final result follows at once after the last step
                return
            self.progress(fraction, make(so_far()))
            done_at = time.monotonic()
            self._next = done_at + max(self.interval, self.spacing * (done_at - now))

        return report
