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
- a visitor waiting for a dashboard whose pool kernel is still queued promotes that kernel: it leaves
  the refills' queue for the visitors', which goes in first come, first served and ahead of every
  refill: at once when no visitor holds a place (the places then hold refills nobody waits for), else
  when fewer than ``pool_concurrency`` places are held; a visitor who takes a pool kernel still
  executing keeps its place until Voila has executed the rest of the notebook for the page;
- a visitor who finds the dashboard's pool empty (a crowd arriving faster than it refills) gets a new
  pool kernel (no delay) and waits for it in the visitors' queue, where Voila would have started a
  kernel of its own, outside any queue: 30 visitors on 2 cores then shared the cores and all waited
  ~1 min; queued, the median waits 25-30 s and the first seconds (docs/performance.md, "Visitors
  beyond the pool queue");
- a visitor who pops a refill still in its ``--refill-delay`` ends the delay.

Without a pool (``--pool-size 0``) visitors keep Voila's own kernels.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import weakref
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:        # not Linux
        return os.cpu_count() or 1


class PoolQueue:
    """At most ``limit`` holders at a time; waiters go in by ``rank`` (lowest first), then arrival.

    Waiters that arrive in one turn of the event loop are ordered before any of them goes in, so
    the order does not depend on which task happened to run first. A waiter a visitor waits for
    (:meth:`promote`) goes in ahead of them all, in the visitors' own order, as soon as fewer than
    ``limit`` places are held, or at once when no visitor holds one (the places then hold refills
    nobody waits for): a lone visitor never waits behind refills, a crowd runs ``limit`` at a time.
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
        self.visitors = 0                     # places held for visitors (promoted), among ``active``
        self._visitors_waiting: deque = deque()   # (key, future, token) promoted, first come first served
        self._wanted_tokens = weakref.WeakSet()   # waiters a visitor waits for that have not arrived yet
        self._entered = weakref.WeakSet()         # tokens let in
        self._for_visitors = weakref.WeakSet()    # tokens whose place counts among the visitors'

    async def acquire(self, key: str, token=None) -> bool:
        """Wait for a place for ``key``; returns whether it went in for a visitor (give it back with
        ``release(visitor)``). ``token`` (weak-referenceable: the pool kernel's task) names this waiter for
        :meth:`promote`."""
        future = asyncio.get_running_loop().create_future()
        if token is not None and token in self._wanted_tokens:
            self._wanted_tokens.discard(token)
            self._visitors_waiting.append((key, future, token))
        elif token is None and self._wanted.get(key):
            self._wanted[key] -= 1
            self._visitors_waiting.append((key, future, token))
        else:
            heapq.heappush(self._waiting, (self.rank(key), next(self._arrival), key, future, token))
        self._schedule()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():   # let in, then cancelled: give the place back
                self.release(future.result())
            raise

    def release(self, visitor: bool = False) -> None:
        self.active -= 1
        self.visitors -= bool(visitor)
        self._schedule()

    def promote(self, key: str, token=None) -> bool:
        """A visitor waits for the waiter ``token`` (``None``: the first for ``key``): it joins the visitors'
        queue, which goes in ahead of every other, at most ``limit`` visitors' places at a time. If it has not
        arrived yet (a refill still in its delay), it joins that queue when it does; if it is in already,
        nothing changes."""
        for i, (_, _, waiting_key, future, waiting_token) in enumerate(self._waiting):
            if (waiting_token is token if token is not None else waiting_key == key) and not future.done():
                self._waiting.pop(i)
                heapq.heapify(self._waiting)
                self._visitors_waiting.append((key, future, waiting_token))
                self._schedule()
                return True
        if token is None:
            self._wanted[key] = self._wanted.get(key, 0) + 1
        elif token in self._entered:
            if token not in self._for_visitors:     # a refill let in before a visitor wanted it: now it is theirs
                self._for_visitors.add(token)
                self.visitors += 1
                return True
        elif all(t is not token for _, _, t in self._visitors_waiting):
            self._wanted_tokens.add(token)
        return False

    def for_visitor(self, token) -> bool:
        """Whether ``token``'s place counts among the visitors' (give it back with ``release(True)``)."""
        return token is not None and token in self._for_visitors

    def _let_in(self, key: str, future: asyncio.Future, visitor: bool = False, token=None) -> None:
        if token is not None:
            self._entered.add(token)
            if visitor:
                self._for_visitors.add(token)
        self.active += 1
        self.visitors += visitor
        self.started.append(key)
        self.counts[key] += 1
        future.set_result(visitor)

    def _schedule(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        # visitors first; one goes in beyond the limit when no visitor holds a place (refills nobody waits for
        # hold them all), the rest as places free up: a crowd runs ``limit`` kernels at a time, not all at once
        while self._visitors_waiting and self.visitors < self.limit and (self.active < self.limit or not self.visitors):
            key, future, token = self._visitors_waiting.popleft()
            if not future.done():
                self._let_in(key, future, visitor=True, token=token)
        while self._waiting and self.active < self.limit:
            _, _, key, future, token = heapq.heappop(self._waiting)
            if not future.done():                     # a cancelled waiter is skipped
                self._let_in(key, future, token=token)


class Place:
    """A pool kernel's place in the :class:`PoolQueue` (``visitor``: one let in for a visitor), given back once."""

    def __init__(self, queue: PoolQueue, visitor: bool = False):
        self.queue, self.visitor, self.taken, self.released = queue, visitor, False, False

    def release(self, unless_taken: bool = False) -> None:
        if self.released or (unless_taken and self.taken):
            return
        self.released = True
        self.queue.release(self.visitor)


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


@dataclass
class PoolBook:
    """What the kernel manager keeps besides Voila's own pools: per dashboard, the delays of refills asked for
    and not yet begun, and the event that ends a begun one's delay early; per pool kernel, its :class:`Place`
    (``taken``: by a visitor while its notebook still executes)."""

    refill_delays: defaultdict = field(default_factory=lambda: defaultdict(deque))   # {dashboard: deque[float]}
    wake_events: dict = field(default_factory=dict)                                  # {dashboard: asyncio.Event}
    places: dict = field(default_factory=dict)                                       # {kernel id: Place}
    taken: dict = field(default_factory=dict)                                        # {kernel id: Place}


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

        @property
        def pool_book(self) -> PoolBook:
            if getattr(self, "_pool_book", None) is None:
                self._pool_book = PoolBook()
            return self._pool_book

        def fill_if_needed(self, delay: float | None = None, notebook_name: str | None = None, **kwargs) -> None:
            """Voila's refill, whose ``delay`` (``fill_delay`` by default) is waited in :meth:`_initialize` instead,
            where a visitor who waits for one of this dashboard's refills cuts it short (``_wake``)."""
            delay = self.fill_delay if delay is None else delay
            pool = self._pools.get(notebook_name, [])
            before = len(pool)
            super().fill_if_needed(0, notebook_name, **kwargs)
            added = len(self._pools.get(notebook_name, [])) - before
            self.pool_book.refill_delays[notebook_name].extend([delay] * added)

        def _wake(self, notebook_name: str) -> None:
            """End the delay of every refill of ``notebook_name`` now, also of those not begun: a visitor waits
            for one."""
            self.pool_book.refill_delays[notebook_name].clear()
            event = self.pool_book.wake_events.pop(notebook_name, None)
            if event is not None:
                event.set()

        async def _initialize(self, notebook_path: str, kernel_id: str | None = None, **kwargs):
            if kernel_id is not None:            # a restart of a running kernel: no new process
                return await super()._initialize(notebook_path, kernel_id, **kwargs)
            book = self.pool_book
            delays = book.refill_delays[notebook_path]
            delay = delays.popleft() if delays else 0.0
            if delay > 0:
                event = book.wake_events.setdefault(notebook_path, asyncio.Event())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), delay)
            queue = self.pool_queue
            # the pool's task runs this (Voila's wait_before awaits it): the token a visitor who pops it promotes
            await queue.acquire(notebook_path, asyncio.current_task())
            try:
                content = await super()._initialize(notebook_path, kernel_id, **kwargs)
            except BaseException:
                queue.release(queue.for_visitor(asyncio.current_task()))
                raise
            self.log.info("Pool kernel %s for %s executing its notebook (%d of at most %d at once)",
                          content["kernel_id"], notebook_path, queue.active, queue.limit)
            place = Place(queue, queue.for_visitor(asyncio.current_task()))   # let in for a visitor, or adopted since
            book.places[content["kernel_id"]] = place

            def executed(task, kernel_id=content["kernel_id"]) -> None:
                place.release(unless_taken=True)
                outcome = "cancelled" if task.cancelled() else "failed" if task.exception() is not None else "done"
                self.log.info("Pool kernel %s for %s finished executing its notebook (%s)", kernel_id, notebook_path,
                              outcome)

            content["task"].add_done_callback(executed)
            return content

        def _configured_pool_size(self, notebook_name: str) -> int:
            default = self.kernel_pools_config.get("default", {})
            return self.kernel_pools_config.get(notebook_name, default).get("pool_size", default.get("pool_size", 1))

        def get_pool_size(self, notebook_name: str) -> int:
            """At least 1 for a dashboard with a pool, also while visitors have emptied it: Voila's handler would
            start a kernel of its own for the next one, outside the queue (:meth:`get_rendered_notebook` refills
            the pool for them instead)."""
            size = super().get_pool_size(notebook_name)
            if size == 0 and notebook_name in self._pools and self._configured_pool_size(notebook_name) > 0:
                return 1
            return size

        async def get_rendered_notebook(self, notebook_name: str, extra_kernel_env_variables: dict | None = None,
                                        **kwargs):
            extra = extra_kernel_env_variables or {}
            if notebook_name in self._pools and not self._pools[notebook_name]:
                # a visitor beyond the pool: a new pool kernel, no delay, whose place this visitor waits for below
                self.fill_if_needed(delay=0, notebook_name=notebook_name, extra_kernel_env_variables=extra, **kwargs)
                self.log.info("Visitor beyond the pool of %s: a new pool kernel, queued for visitors", notebook_name)
            pool = self._pools.get(notebook_name) or []
            if pool and not pool[0].done():        # the kernel this visitor gets (Voila pops the first) is not ready
                self._wake(notebook_name)          # a refill in its delay: it comes now
                if self.pool_queue.promote(notebook_name, pool[0]):
                    self.log.info("Visitor waiting: pool kernel for %s joins the visitors' queue (%d of at most %d "
                                  "visitors' kernels running)", notebook_name, self.pool_queue.visitors,
                                  self.pool_queue.limit)
            render_task, rendered_cache, kernel_id = await super().get_rendered_notebook(
                notebook_name, extra_kernel_env_variables=extra, **kwargs)
            place = self.pool_book.places.pop(kernel_id, None)
            if place is None or render_task.done():
                return render_task, rendered_cache, kernel_id
            # taken while still executing: Voila's handler executes the rest of the notebook for this visitor;
            # the place stays taken until it has (or the kernel shuts down), so no queued kernel competes with it
            place.taken = True
            self.pool_book.taken[kernel_id] = place
            return asyncio.ensure_future(_handed_over(render_task, place)), rendered_cache, kernel_id

        async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
            for places in (self.pool_book.places, self.pool_book.taken):
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
