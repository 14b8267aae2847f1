"""Pre-heated kernels that start a few at a time, in the order a class opens the dashboards.

Voila's ``VoilaKernelManager`` starts every pool kernel of every notebook at once when the server
starts (and every refill the moment it is due). Each one imports torch, plotly and the library and
executes its notebook: on a 2-core machine six of them shared the CPUs, so each finished only when
all had, and the first visitor's dashboard waited for all six (15-16 s to its first plot,
docs/performance.md, "Opening a dashboard"). :func:`ordered_pools` makes them queue instead:

- at most ``pool_concurrency`` pool kernels start and execute their notebook at a time (default:
  the CPUs this process may use); one leaves the queue when its notebook has executed (or a visitor
  took it);
- the queue is ordered: the kernels of the notebooks given their own pool size (``--preheat``: the
  one a class opens at once) first, then every other dashboard's first kernel before any's second (a
  refill), each time by file name, the landing page's order (``01_...`` first);
- a visitor waiting for a dashboard whose pool kernel is still queued promotes it: it starts at
  once, beside those running, instead of waiting for a free place; a visitor who takes a pool kernel
  still executing keeps its place until Voila has executed the rest of the notebook for the page.

Kernels a visitor beyond the pool gets (Voila starts those itself) never queue.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
from collections import Counter


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:        # not Linux
        return os.cpu_count() or 1


class PoolQueue:
    """At most ``limit`` holders at a time; waiters go in by ``rank`` (lowest first), then arrival.

    Waiters that arrive in one turn of the event loop are ordered before any of them goes in, so
    the order does not depend on which task happened to run first.
    """

    def __init__(self, limit: int, rank=lambda key: 0):
        if limit < 1:
            raise ValueError(f"pool_concurrency must be >= 1, got {limit}")
        self.limit, self.rank = limit, rank
        self.active = 0
        self.started: list[str] = []          # keys in the order they went in (for the tests and the log)
        self.counts: Counter[str] = Counter()  # how many went in, per key
        self._waiting: list[tuple] = []       # heap of (rank, arrival, key, future)
        self._arrival = itertools.count()
        self._dispatch_scheduled = False
        self._wanted: dict[str, int] = {}     # keys a visitor waits for that have no waiter yet

    async def acquire(self, key: str) -> None:
        future = asyncio.get_running_loop().create_future()
        if self._wanted.get(key):
            self._wanted[key] -= 1
            self._let_in(key, future)
            return
        heapq.heappush(self._waiting, (self.rank(key), next(self._arrival), key, future))
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():   # let in, then cancelled: give the place back
                self.release()
            raise

    def release(self) -> None:
        self.active -= 1
        self._schedule()

    def promote(self, key: str) -> bool:
        """Let the first waiter for ``key`` in now, beyond the limit (a visitor is waiting for it); if
        none is waiting yet (a refill still in its delay), the next one to arrive goes in at once."""
        for i, (_, _, waiting_key, future) in enumerate(self._waiting):
            if waiting_key == key and not future.done():
                self._waiting.pop(i)
                heapq.heapify(self._waiting)
                self._let_in(key, future)
                return True
        self._wanted[key] = self._wanted.get(key, 0) + 1
        return False

    def _let_in(self, key: str, future: asyncio.Future) -> None:
        self.active += 1
        self.started.append(key)
        self.counts[key] += 1
        future.set_result(None)

    def _schedule(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while self._waiting and self.active < self.limit:
            _, _, key, future = heapq.heappop(self._waiting)
            if not future.done():                     # a cancelled waiter is skipped
                self._let_in(key, future)


class Place:
    """A pool kernel's place in the :class:`PoolQueue`, given back once."""

    def __init__(self, queue: PoolQueue):
        self.queue, self.taken, self.released = queue, False, False

    def release(self, unless_taken: bool = False) -> None:
        if self.released or (unless_taken and self.taken):
            return
        self.released = True
        self.queue.release()


async def _handed_over(render_task: asyncio.Task, place: Place):
    """``render_task``'s result with its generator of the remaining cells wrapped: ``place`` is released
    when the visitor's page has had every cell (or the handler gave up on it)."""
    try:
        rendered, rendering = await render_task
    except BaseException:
        place.release()
        raise

    async def rest():
        try:
            async for item in rendering:
                yield item
        finally:
            place.release()

    return rendered, rest()


def dashboard_rank(queue: PoolQueue, preheated=frozenset()):
    """The order of pool kernels: those of the ``preheated`` dashboards first (refills too), then each
    dashboard's first kernel, then second kernels (a refill of a taken one), ...; by file name within each."""
    return lambda name: (name not in preheated, queue.counts[name], name)


def ordered_pool_class(base: type) -> type:
    """``base`` (Voila's ``VoilaKernelManager``) whose pool kernels queue in a :class:`PoolQueue`."""
    from traitlets import Int

    class LecturePoolKernelManager(base):
        pool_concurrency = Int(0, config=True,
                               help="pool kernels that start and execute their notebook at once (0: the CPU count)")

        @property
        def pool_queue(self) -> PoolQueue:
            if getattr(self, "_pool_queue", None) is None:
                own = {name for name, conf in self.kernel_pools_config.items()
                       if name != "default" and conf.get("pool_size", 0) > 0}
                self._pool_queue = queue = PoolQueue(self.pool_concurrency or cpu_count())
                queue.rank = dashboard_rank(queue, own)
            return self._pool_queue

        async def _initialize(self, notebook_path: str, kernel_id: str | None = None, **kwargs):
            if kernel_id is not None:            # a restart of a running kernel: no new process
                return await super()._initialize(notebook_path, kernel_id, **kwargs)
            queue = self.pool_queue
            await queue.acquire(notebook_path)
            starting = self.__dict__.setdefault("_pool_starting", {})     # let in, kernel not started yet
            starting[notebook_path] = starting.get(notebook_path, 0) + 1
            try:
                content = await super()._initialize(notebook_path, kernel_id, **kwargs)
            except BaseException:
                queue.release()
                raise
            finally:
                starting[notebook_path] -= 1
            self.log.info("Pool kernel %s for %s executing its notebook (%d of at most %d at once)",
                          content["kernel_id"], notebook_path, queue.active, queue.limit)
            place = Place(queue)
            self.__dict__.setdefault("_pool_places", {})[content["kernel_id"]] = place

            def executed(task, kernel_id=content["kernel_id"]) -> None:
                place.release(unless_taken=True)
                outcome = "cancelled" if task.cancelled() else "failed" if task.exception() is not None else "done"
                self.log.info("Pool kernel %s for %s finished executing its notebook (%s)", kernel_id, notebook_path,
                              outcome)

            content["task"].add_done_callback(executed)
            return content

        async def get_rendered_notebook(self, notebook_name: str, *args, **kwargs):
            pool = self._pools.get(notebook_name) or []
            starting = self.__dict__.get("_pool_starting", {}).get(notebook_name, 0)
            if pool and not pool[0].done() and not starting:   # the visitor's kernel is queued: no waiting for it
                self.pool_queue.promote(notebook_name)
                self.log.info("Visitor waiting: pool kernel for %s starts now, ahead of the queue", notebook_name)
            render_task, rendered_cache, kernel_id = await super().get_rendered_notebook(notebook_name, *args, **kwargs)
            place = self.__dict__.get("_pool_places", {}).pop(kernel_id, None)
            if place is None or render_task.done():
                return render_task, rendered_cache, kernel_id
            # taken while still executing: Voila's handler executes the rest of the notebook for this visitor;
            # the place stays taken until it has (or the kernel shuts down), so no queued kernel competes with it
            place.taken = True
            self.__dict__.setdefault("_pool_places_taken", {})[kernel_id] = place
            return asyncio.ensure_future(_handed_over(render_task, place)), rendered_cache, kernel_id

        async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
            for places in (self.__dict__.get("_pool_places", {}), self.__dict__.get("_pool_places_taken", {})):
                place = places.pop(kernel_id, None)
                if place is not None:
                    place.release()
            return await super().shutdown_kernel(kernel_id, *args, **kwargs)

    return LecturePoolKernelManager


@contextlib.contextmanager
def ordered_pools():
    """While active, the Voila app builds its pre-heating kernel manager as :func:`ordered_pool_class`
    (``voila.app`` builds it in ``Voila.init_settings`` through ``voila_kernel_manager_factory``)."""
    import voila.app

    factory = getattr(voila.app, "voila_kernel_manager_factory", None)
    if factory is None:
        raise RuntimeError("voila.app.voila_kernel_manager_factory not found: pool kernels would all start at once")

    def lecture_factory(base_class, preheat_kernel, *args, **kwargs):
        manager = factory(base_class, preheat_kernel, *args, **kwargs)
        return ordered_pool_class(manager) if preheat_kernel else manager

    voila.app.voila_kernel_manager_factory = lecture_factory
    try:
        yield
    finally:
        voila.app.voila_kernel_manager_factory = factory
