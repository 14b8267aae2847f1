"""Run a panel's computation off the widget thread: the newest request wins, results are cached.

:class:`ComputeRunner` knows nothing about widgets or figures; a panel gives it three callbacks:

- ``on_outcome(outcome)``: an :class:`Outcome` to show (a result, or a message);
- ``on_progress(fraction, elapsed)``: a computation has run longer than ``progress_after``
  seconds; called every 0.1 s until it ends (``fraction`` from ``compute``'s own
  ``progress`` reports, or estimated from earlier durations, never reaching 1);
- ``on_idle()``: the last pending computation has ended;
- ``on_partial(generation, partial)``: a partial result of the newest computation, to draw
  while it runs (a compute reports one with ``progress(fraction, partial)``, e.g. through
  :class:`lecture_lib.record.Stream`: its runs trained so far, of the result's own type).

What it guarantees:

- every request gets a *generation* number (1, 2, ...); an outcome is delivered only if no
  newer outcome was delivered before it: a stale result is cached, never drawn over a newer one;
- a request whose result is cached is answered at once, in the caller's thread;
- the others run one at a time in a daemon worker thread; a request that arrives while one is
  running replaces any request still waiting, and a ``progress`` callback of a superseded
  computation raises :class:`Superseded`, so that cooperative compute functions stop early;
- ``ValueError``/``TypeError`` from ``compute`` (bad hyperparameters) become a ``"bad"`` outcome
  carrying their message; any other exception an ``"error"`` outcome with a short line;
- partial results stream: only those of the newest request, in the order reported, the first at
  once and then at most one every ``stream_every`` seconds, never after its outcome (which replaces
  the last partial); a superseded computation's partials are dropped; a cached result, and the
  first computation (:meth:`ComputeRunner.run_now`: nothing is on the page yet), never stream.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Superseded(Exception):
    """Raised by a ``progress`` callback when a newer control value has arrived."""


@dataclass(frozen=True)
class Outcome:
    """What a request came to: ``kind`` is ``"ok"`` (``value`` is the result), ``"bad"`` or ``"error"``
    (``value`` is the message for the user)."""

    generation: int
    kind: str
    value: Any


def classify(exc: Exception) -> tuple[str, str]:
    """``("bad", message)`` for a ValueError/TypeError (the user's settings), ``("error", line)`` otherwise."""
    if isinstance(exc, (ValueError, TypeError)):
        return "bad", str(exc)
    log.error("panel computation failed", exc_info=exc)
    return "error", f"The computation failed ({type(exc).__name__}: {exc})."


#: What torch imports on a process's first reverse-mode ``torch.func`` transform (``grad``, ``jacrev``, ``vjp``,
#: ``hessian``: they enter ``torch._dynamo.compiled_autograd``; ``jvp`` and ``vmap`` do not): ``torch._dynamo`` with
#: sympy, some 800 modules, 1.1-1.6 s on a 2-core machine and ~70 MB. A kernel whose notebook came from the result
#: cache has computed nothing, so its first computed move on a curvature panel paid them (02's conditioning panel:
#: first frame 1.7 s). Panels whose computation needs them name them in ``preload``; other kernels do without.
TORCH_FUNC_IMPORTS = ("torch._dynamo",)
_WARMED: set[str] = set()               # modules a warm-up thread has been started for, in this process


def warm_when_idle(modules: Sequence[str], quiet: float = 2.0, shell=None,
                   tasks: Sequence[Callable[[], Any]] = ()) -> threading.Thread | None:
    """Import ``modules``, then run ``tasks``, in a daemon thread once the IPython kernel has run no cell for
    ``quiet`` seconds. A task fills an in-process store that the first computed move would otherwise fill (06's
    damping panel: step 0's statistics, ~0.1 s of its first streamed frame); one that raises is logged and skipped.

    Called as a panel is built (in a cell): the imports happen after the notebook has run (a server's pool
    kernel before any visitor arrives, a student's kernel while they read), not during its execution nor in the
    first slider move. Once per module and process (a task: each call's); returns the thread, or ``None``
    outside an IPython kernel (scripts, tests) and when there is nothing left to import or run.
    """
    if shell is None:
        shell = _ipython()
    todo = [m for m in modules if m not in sys.modules and m not in _WARMED]
    if shell is None or not (todo or tasks):
        return None
    _WARMED.update(todo)
    state = {"running": True, "last": time.monotonic()}     # called from a cell: it ends with post_execute

    def pre(*_):
        state["running"] = True

    def post(*_):
        state.update(running=False, last=time.monotonic())

    shell.events.register("pre_execute", pre)
    shell.events.register("post_execute", post)

    def work() -> None:
        while state["running"] or time.monotonic() - state["last"] < quiet:
            time.sleep(quiet / 8)
        for event, callback in (("pre_execute", pre), ("post_execute", post)):
            try:
                shell.events.unregister(event, callback)
            except ValueError:
                pass
        for name in todo:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - a warm-up only: the first computation imports it anyway
                log.debug("warm-up import of %s failed: %s", name, exc)
        for task in tasks:
            try:
                task()
            except Exception as exc:  # noqa: BLE001 - a warm-up only: the first computation does it anyway
                log.debug("warm-up task %r failed: %s", task, exc)

    thread = threading.Thread(target=work, name="lecture-warm-imports", daemon=True)
    thread.start()
    return thread


def _ipython():
    """The running IPython shell, or ``None`` (no IPython, or not in a kernel)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _flush_iopub(timeout: float = 0.05) -> bool:
    """In a kernel, wait (at most ``timeout`` seconds) until its IOPub thread has sent the messages queued so far.

    A worker thread's messages (a streamed partial's figures) are only queued for the IOPub thread, which needs the
    GIL to send them, and a worker that trains on at once holds the GIL for most of each step. ``False`` outside a
    kernel, on the IOPub thread itself, or on timeout."""
    shell = _ipython()
    io = getattr(getattr(getattr(shell, "kernel", None), "iopub_socket", None), "io_thread", None)
    if io is None or threading.current_thread() is getattr(io, "thread", None):
        return False
    sent = threading.Event()
    io.schedule(sent.set)              # runs after every message queued before it
    return sent.wait(timeout)


def _takes_progress(fn: Callable) -> bool:
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ComputeRunner:
    """``compute(**values)`` in a worker thread, newest request first, with an LRU cache of results."""

    def __init__(self, compute: Callable[..., Any], on_outcome: Callable[[Outcome], None],
                 on_progress: Callable[[float, float], None] | None = None,
                 on_idle: Callable[[], None] | None = None,
                 on_partial: Callable[[int, Any], None] | None = None,
                 cache_size: int = 32, progress_after: float = 0.5, stream_every: float = 0.1):
        if not callable(compute):
            raise TypeError("compute must be a callable")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._compute, self._takes_progress = compute, _takes_progress(compute)
        self._on_outcome = on_outcome
        self._on_progress = on_progress or (lambda fraction, elapsed: None)
        self._on_idle = on_idle or (lambda: None)
        self._on_partial = on_partial
        self.stream_every = stream_every
        self._streamed_at = -float("inf")           # when the last partial was drawn (monotonic)
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.progress_after = progress_after
        self.durations: list[float] = []          # of the last five computations, for the estimate

        self._lock = threading.Lock()             # guards generation, pending, running, cache
        self._deliver_lock = threading.RLock()    # one delivery at a time, newest wins
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Event()
        self._idle.set()
        self.generation = 0                       # of the newest request
        self.delivered = -1                       # generation of the outcome on screen
        self._pending: tuple | None = None        # (generation, key, values) waiting for the worker
        self._running = False
        self._worker: threading.Thread | None = None
        self._fraction: float | None = None

    @staticmethod
    def key(values: Mapping[str, Any]) -> tuple:
        """The cache key of ``values`` (they must be hashable: the panel freezes floats and lists)."""
        return tuple(sorted(values.items()))

    @property
    def busy(self) -> bool:
        """Whether a computation is running or waiting."""
        return self._pending is not None or self._running

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no computation is running or pending; ``False`` on timeout."""
        return self._idle.wait(timeout)

    def run_now(self, values: Mapping[str, Any], raise_errors: bool = False) -> Outcome:
        """Compute ``values`` in this thread as the newest request and deliver the outcome (a panel's
        first computation); with ``raise_errors`` an exception of ``compute`` propagates instead."""
        with self._lock:
            self.generation += 1
            generation = self.generation
        try:
            outcome = Outcome(generation, "ok", self._timed_call(dict(values), generation, stream=False))
        except Exception as exc:  # noqa: BLE001 - shown to the user, raised in tests
            if raise_errors:
                raise
            outcome = Outcome(generation, *classify(exc))
        self._deliver(outcome)
        return outcome

    def request(self, values: Mapping[str, Any]) -> int:
        """Ask for ``values``: delivered at once from the cache, else queued for the worker. Returns the generation."""
        key = self.key(values)
        with self._lock:
            self.generation += 1
            generation = self.generation
            cached = self._cache_get(key)
            if cached is None:
                self._pending = (generation, key, dict(values))
                self._idle.clear()
                self._ensure_worker()
                self._wake.notify()
            else:
                self._pending = None
        if cached is not None:
            self._deliver(Outcome(generation, "ok", cached[0]))
        return generation

    # -- internals ------------------------------------------------------------
    def _deliver(self, outcome: Outcome) -> None:
        with self._deliver_lock:
            if outcome.generation < self.delivered:
                return  # a newer outcome is already shown: never overwrite it
            self.delivered = outcome.generation
            self._on_outcome(outcome)

    def _deliver_partial(self, generation: int, partial) -> None:
        """Draw ``partial`` if its computation is still the newest and nothing newer is on screen."""
        with self._deliver_lock:
            if generation != self.generation or generation <= self.delivered:
                return
            if time.monotonic() - self._streamed_at < self.stream_every:
                return
            self._on_partial(generation, partial)
            self._streamed_at = time.monotonic()
        _flush_iopub()                     # the partial's messages leave the kernel before the worker trains on

    def _cache_get(self, key):
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        return None

    def _timed_call(self, values: dict, generation: int, stream: bool = True):
        start = time.monotonic()
        self._streamed_at = -float("inf")          # the first partial of a computation is drawn at once
        if self._takes_progress:
            def progress(fraction: float, partial=None) -> None:
                if generation != self.generation:
                    raise Superseded()
                self._fraction = min(max(float(fraction), 0.0), 1.0)
                if partial is not None and stream and self._on_partial is not None:
                    self._deliver_partial(generation, partial)

            result = self._compute(**values, progress=progress)
        else:
            result = self._compute(**values)
        self.durations = (self.durations + [time.monotonic() - start])[-5:]
        with self._lock:
            self.cache[self.key(values)] = (result,)
            self.cache.move_to_end(self.key(values))
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return result

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="LivePanel-worker", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None:
                    self._running = False
                    self._idle.set()
                    self._wake.wait()
                generation, key, values = self._pending
                self._pending = None
                self._running = True
            self._fraction = None
            done = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(done, time.monotonic()), daemon=True)
            ticker.start()
            try:
                outcome = Outcome(generation, "ok", self._timed_call(values, generation))
            except Superseded:
                outcome = None
            except Exception as exc:  # noqa: BLE001 - shown to the user instead of a traceback
                outcome = Outcome(generation, *classify(exc))
            finally:
                done.set()
                ticker.join()
            if outcome is not None and generation == self.generation:
                self._deliver(outcome)
            with self._lock:
                idle = self._pending is None
                if idle:
                    self._running = False
            if idle:
                self._on_idle()

    def _tick(self, done: threading.Event, start: float) -> None:
        expected = sorted(self.durations)[len(self.durations) // 2] if self.durations else 2.0
        if done.wait(self.progress_after):
            return
        while True:
            elapsed = time.monotonic() - start
            fraction = self._fraction
            if fraction is None:  # no report from compute: estimate from earlier runs, never reach 1
                fraction = elapsed / (elapsed + max(expected, 1e-3))
            self._on_progress(fraction, elapsed)
            if done.wait(0.1):
                return
