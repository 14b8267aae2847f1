"""Pre-heated kernels start a few at a time, the first dashboard first (voila_app.pool)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import random
import re
import time

import pytest
import traitlets

from voila_app.pool import Place, PoolQueue, _handed_over, dashboard_rank, ordered_pools

NAMES = [f"0{i}_nb.ipynb" for i in range(1, 7)]


def run(coro):
    """``run(coro)`` in a thread of its own: after a browser test, Playwright's event loop still runs
    in the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def rank(preheated=()):
    return lambda name: (name not in preheated, name)


async def start_all(queue: PoolQueue, names, hold: float = 0.01):
    """Every name asks for a place in shuffled arrival order, holds it ``hold`` s; the most holders seen at once."""
    peak = 0

    async def one(name):
        nonlocal peak
        await asyncio.sleep(0)               # as Voila's wait_before(0, ...): all arrive in one turn
        await queue.acquire(name)
        peak = max(peak, queue.active)
        await asyncio.sleep(hold)
        queue.release()

    await asyncio.gather(*(one(n) for n in names))
    return peak


def test_pool_kernels_start_in_landing_order_at_most_limit_at_once():
    names = NAMES[:]
    random.Random(5).shuffle(names)              # Voila fills pools in the file system's order
    queue = PoolQueue(2, rank())
    peak = run(start_all(queue, names))
    assert queue.started == NAMES and peak == 2 and queue.active == 0


def test_preheated_dashboard_starts_first_with_all_its_kernels():
    names = NAMES[::-1] + ["03_nb.ipynb"] * 3    # --preheat 03_nb.ipynb=4: three more of it
    queue = PoolQueue(3, rank({"03_nb.ipynb"}))
    peak = run(start_all(queue, names))
    assert queue.started[:4] == ["03_nb.ipynb"] * 4
    assert queue.started[4:] == [n for n in NAMES if n != "03_nb.ipynb"] and peak == 3


def test_refills_wait_for_every_dashboards_first_kernel_unless_preheated():
    async def scenario(preheated):
        queue = PoolQueue(1)
        queue.rank = dashboard_rank(queue, preheated)
        await queue.acquire("01_nb.ipynb")                  # a visitor takes it: its refill queues ...
        waiters = [asyncio.create_task(queue.acquire(n)) for n in ("01_nb.ipynb", "03_nb.ipynb", "02_nb.ipynb")]
        await asyncio.sleep(0.01)
        for _ in waiters:
            queue.release()
            await asyncio.sleep(0.01)
        return queue.started[1:]

    assert run(scenario(set())) == ["02_nb.ipynb", "03_nb.ipynb", "01_nb.ipynb"]
    assert run(scenario({"01_nb.ipynb"})) == ["01_nb.ipynb", "02_nb.ipynb", "03_nb.ipynb"]


def test_a_visitor_promotes_a_queued_dashboard_beyond_the_limit():
    async def scenario():
        queue = PoolQueue(1, rank())
        await queue.acquire("01_nb.ipynb")                  # a refill holds the only place
        waiters = [asyncio.create_task(queue.acquire(n)) for n in ("02_nb.ipynb", "05_nb.ipynb")]
        await asyncio.sleep(0.01)
        assert queue.started == ["01_nb.ipynb"]            # both queued behind 01
        assert queue.promote("05_nb.ipynb")                # a visitor opens 05: its kernel starts now
        assert await asyncio.wait_for(waiters[1], 1) is True   # let in for a visitor
        assert queue.active == 2 and queue.visitors == 1 and not waiters[0].done()
        assert not queue.promote("06_nb.ipynb")            # not queued yet: the next 06 joins the visitors' queue
        later = asyncio.create_task(queue.acquire("06_nb.ipynb"))
        await asyncio.sleep(0.01)
        assert not later.done()                            # ... behind 05's visitor, the limit of visitors' places
        queue.release(True)                                # 05's notebook has run for its page
        assert await asyncio.wait_for(later, 1) is True
        assert not waiters[0].done()                       # the refill of 02 waits while places are taken
        queue.release(True)
        queue.release()
        assert await asyncio.wait_for(waiters[0], 1) is False
        return queue.started, queue.active, queue.visitors

    assert run(scenario()) == (["01_nb.ipynb", "05_nb.ipynb", "06_nb.ipynb", "02_nb.ipynb"], 1, 0)


def test_a_crowd_beyond_the_pool_is_served_first_come_first_served_ahead_of_refills():
    """30 visitors of one dashboard on a 2-place queue while two refills of other dashboards hold both places: the
    first visitor goes in at once, the others as places free up, in the order they came, two at a time once the
    refills are done, and all before a refill queued meanwhile. Before, each promotion went in at once: all 30
    kernels shared the CPUs (each waited ~55 s)."""
    async def scenario():
        queue = PoolQueue(2, rank())
        for name in NAMES[1:3]:
            await queue.acquire(name)                      # two refills hold both places for 10 ms

        async def refills_finish():
            await asyncio.sleep(0.01)
            queue.release()
            queue.release()

        peak_active, peak_visitors, order = 0, 0, []

        async def visitor(i):
            nonlocal peak_active, peak_visitors
            await asyncio.sleep(0.0005 * i)                # arrive in order i
            place = asyncio.create_task(queue.acquire(NAMES[0]))
            await asyncio.sleep(0)
            queue.promote(NAMES[0])
            assert await place is True
            order.append(i)
            peak_active, peak_visitors = max(peak_active, queue.active), max(peak_visitors, queue.visitors)
            await asyncio.sleep(0.005)                     # executes its notebook
            queue.release(True)

        visitors = [asyncio.create_task(visitor(i)) for i in range(30)]
        await asyncio.sleep(0.003)
        late_refill = asyncio.create_task(queue.acquire(NAMES[5]))   # queued while the visitors come
        await asyncio.gather(refills_finish(), *visitors)
        assert await asyncio.wait_for(late_refill, 1) is False
        return order, peak_active, peak_visitors, queue.started

    order, peak_active, peak_visitors, started = run(scenario())
    assert order == list(range(30)) and peak_visitors == 2 and peak_active == 3   # 2 refills + the first visitor
    visitor_places = [i for i, n in enumerate(started) if n == NAMES[0]]
    assert len(visitor_places) == 30 and started.index(NAMES[5]) > visitor_places[-1]


def test_a_cancelled_waiter_gives_its_place_on():
    async def scenario():
        queue = PoolQueue(1, rank())
        await queue.acquire("01_nb.ipynb")
        gone = asyncio.create_task(queue.acquire("02_nb.ipynb"))
        later = asyncio.create_task(queue.acquire("03_nb.ipynb"))
        await asyncio.sleep(0.01)
        gone.cancel()
        queue.release()
        await asyncio.wait_for(later, 1)
        return queue.started, queue.active

    assert run(scenario()) == (["01_nb.ipynb", "03_nb.ipynb"], 1)


def test_a_kernel_taken_mid_notebook_keeps_its_place_until_the_page_has_every_cell():
    """A visitor takes a pool kernel still executing: its place is given back when Voila's handler has run
    the remaining cells for the page, not when the pre-heating stops (which let the next queued kernel compete)."""
    async def scenario():
        queue = PoolQueue(1)
        await queue.acquire("01_nb.ipynb")
        place = Place(queue)
        place.taken = True
        nxt = asyncio.create_task(queue.acquire("02_nb.ipynb"))

        async def remaining_cells():
            for cell in ("<cell 3>", "<cell 4>"):
                await asyncio.sleep(0.01)
                yield cell, None

        async def render():                      # Voila's pre-heating, stopped after the current cell
            await asyncio.sleep(0.01)
            return ["<cell 1>", "<cell 2>"], remaining_cells()

        render_task = asyncio.create_task(render())
        render_task.add_done_callback(lambda _: place.release(unless_taken=True))
        rendered, rest = await _handed_over(render_task, place)
        await asyncio.sleep(0.02)
        seen = [queue.active, nxt.done()]       # pre-heating over, the page's cells not yet: still held
        cells = [c async for c, _ in rest]
        await asyncio.wait_for(nxt, 1)           # every cell sent: 02 goes in
        place.release()                          # a later shutdown of the kernel gives nothing back twice
        return rendered + cells, seen, queue.active

    cells, seen, active = run(scenario())
    assert cells == ["<cell 1>", "<cell 2>", "<cell 3>", "<cell 4>"] and seen == [1, False] and active == 1


class FakeVoilaManager(traitlets.HasTraits):
    """What :func:`ordered_pool_class` uses of Voila's ``VoilaKernelManager``, as Voila 0.5 does it: per notebook
    a list of tasks; ``fill_if_needed`` appends one per missing kernel, started after ``delay``;
    ``get_rendered_notebook`` pops the first, waits for it, then refills. A kernel "executes its notebook"
    for ``EXECUTE`` s, during which ``executing`` counts it."""

    EXECUTE = 0.02

    def __init__(self, pool_size: int):
        super().__init__()
        self.kernel_pools_config = {"default": {"pool_size": pool_size}}
        self._pools: dict[str, list] = {}
        self.fill_delay = 0.05
        self.log = logging.getLogger("test_pool")
        self.executing = self.peak = 0
        self.ids = itertools.count()

    def get_pool_size(self, notebook_name):
        return len(self._pools.get(notebook_name, []))

    def fill_if_needed(self, delay=None, notebook_name=None, extra_kernel_env_variables={}, **kwargs):
        delay = self.fill_delay if delay is None else delay
        pool = self._pools.setdefault(notebook_name, [])
        size = self.kernel_pools_config["default"]["pool_size"]

        async def later():
            await asyncio.sleep(delay)
            return await self._initialize(notebook_name, None)

        pool.extend(asyncio.ensure_future(later()) for _ in range(size - len(pool)))

    async def _initialize(self, notebook_path, kernel_id, **kwargs):
        await asyncio.sleep(0.001)                            # the kernel process starts

        async def execute():
            self.executing += 1
            self.peak = max(self.peak, self.executing)
            await asyncio.sleep(self.EXECUTE)
            self.executing -= 1

            async def rest():
                return
                yield

            return ["<cells>"], rest()

        return {"kernel_id": f"kernel-{next(self.ids)}", "task": asyncio.ensure_future(execute())}

    async def get_rendered_notebook(self, notebook_name, extra_kernel_env_variables={}, **kwargs):
        content = await self._pools[notebook_name].pop(0)
        self.fill_if_needed(notebook_name=notebook_name)
        return content["task"], [], content["kernel_id"]

    async def shutdown_kernel(self, kernel_id, *args, **kwargs):
        pass


def test_visitors_beyond_the_pool_queue_for_pool_kernels_instead_of_starting_their_own():
    """Twelve visitors open a dashboard with a pool of 1 at once: Voila's handler (as simulated here) takes the
    pool's path while ``get_pool_size`` is not 0 and starts a kernel of its own, outside any queue, otherwise
    (before: eleven kernels of their own, all executing at once). Every visitor gets a pool kernel through the
    queue, no more than ``pool_concurrency`` execute at once, and in the order the visitors came."""
    from voila_app.pool import ordered_pool_class

    async def scenario():
        manager = ordered_pool_class(FakeVoilaManager)(pool_size=1)
        manager.pool_concurrency, manager.fill_delay = 2, 0.0
        manager.fill_if_needed(notebook_name="01_nb.ipynb")
        await asyncio.sleep(0.2)                              # the pool is filled and its kernel has executed
        own_kernels, got = [], []

        async def visitor(i):
            await asyncio.sleep(0.002 * i)
            if manager.get_pool_size("01_nb.ipynb") == 0:    # Voila's handler: a kernel of its own
                own_kernels.append(i)
                return
            render_task, _, _ = await manager.get_rendered_notebook("01_nb.ipynb")
            got.append(i)
            _, rest = await render_task
            async for _ in rest:
                pass

        await asyncio.gather(*(visitor(i) for i in range(12)))
        return own_kernels, got, manager.peak, manager.pool_queue.visitors

    own_kernels, got, peak, visitors_left = run(scenario())
    assert own_kernels == [] and got == list(range(12))
    assert peak <= 2 + 1 and visitors_left == 0            # one beyond the limit: the first visitor, ahead of refills


def test_a_visitor_cuts_short_the_delay_of_the_refill_it_waits_for():
    """The refill of a taken kernel waits ``fill_delay`` (the app's --refill-delay) before it queues; a visitor
    who pops it meanwhile had to wait out the delay (a benchmark's visitor waited 120 s). Now it comes at once."""
    from voila_app.pool import ordered_pool_class

    async def scenario():
        manager = ordered_pool_class(FakeVoilaManager)(pool_size=1)
        manager.pool_concurrency, manager.fill_delay = 2, 60.0
        manager.fill_if_needed(notebook_name="01_nb.ipynb", delay=0)
        await asyncio.sleep(0.2)
        first, _, _ = await manager.get_rendered_notebook("01_nb.ipynb")     # takes the kernel; refill in 60 s
        await asyncio.sleep(0.05)
        start = time.monotonic()
        second, _, _ = await asyncio.wait_for(manager.get_rendered_notebook("01_nb.ipynb"), 5)
        waited = time.monotonic() - start
        for task in (first, second):
            _, rest = await task
            async for _ in rest:
                pass
        return waited

    assert run(scenario()) < 1.0


def test_bad_concurrency_is_refused():
    with pytest.raises(ValueError, match="pool_concurrency"):
        PoolQueue(0)


def test_the_app_builds_its_pool_manager_through_ordered_pools():
    """The patch of Voila's factory is what makes the app's manager queue its kernels; outside it, Voila's own."""
    import voila.app
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    factory = voila.app.voila_kernel_manager_factory
    with ordered_pools():
        manager = voila.app.voila_kernel_manager_factory(AsyncMappingKernelManager, True, 1)
        plain = voila.app.voila_kernel_manager_factory(AsyncMappingKernelManager, False, 1)
    assert voila.app.voila_kernel_manager_factory is factory
    assert manager.__name__ == "LecturePoolKernelManager" and manager.__mro__[1].__name__ == "VoilaKernelManager"
    assert "pool_concurrency" in manager.class_trait_names() and plain.__name__ == "NormalKernelManager"


@pytest.mark.notebook
def test_app_starts_pool_kernels_two_at_a_time_first_dashboard_first(tmp_path):
    """The running app (six notebooks, one pre-heated kernel each, --fast): pool kernels start in the
    landing page's order and at most pool_concurrency (2 here) execute at once; every pool fills, and the
    log says when each pool kernel has executed its notebook, and how it ended."""
    from conftest import NOTEBOOKS_DIR

    from voila_app.server import fast_env, running_app

    names = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    env = fast_env()
    with running_app(NOTEBOOKS_DIR, tmp_path / "voila.log", env=env,
                     extra_args=("--cache-dir", str(tmp_path / "cache"), "--pool-concurrency", "2")) as app:
        assert app.wait_preheated(names, timeout=600), app.log()
        deadline = time.monotonic() + 600
        while app.log(tail=None).count("finished executing its notebook") < len(names) and time.monotonic() < deadline:
            time.sleep(0.5)
        log = app.log(tail=None)
    started = re.findall(r"Pool kernel \S+ for (\S+) executing its notebook \((\d) of at most 2 at once\)", log)
    assert [name for name, _ in started] == names, log[-3000:]
    assert max(int(n) for _, n in started) <= 2
    finished = re.findall(r"Pool kernel \S+ for (\S+) finished executing its notebook \((\w+)\)", log)
    assert sorted(finished) == [(name, "done") for name in names], log[-3000:]


def test_pool_concurrency_reaches_the_manager_and_is_checked():
    from voila_app import config
    from voila_app.__main__ import parse_args

    assert parse_args([]).pool_concurrency == 0
    assert config.build_config(pool_concurrency=3).LecturePoolKernelManager.pool_concurrency == 3
    with pytest.raises(ValueError, match="pool_concurrency"):
        config.build_config(pool_concurrency=-1)
