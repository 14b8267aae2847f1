"""A class opens one dashboard: N browser sessions arriving within S seconds, each moves a slider; open time, latency, memory, CPU.

Starts the app as ``./lecture app`` runs it (``python -m voila_app``, every notebook of
``notebooks/``, ``--pool-size`` pre-heated kernels per notebook; ``--fast`` unless ``--full``) on a
free loopback port, with the result cache ``--cache-dir`` names (``off``: every kernel computes; a
folder filled by ``./lecture warm``: kernels read their notebook's defaults from disk), and waits
until the pools have executed their notebooks. Then N visitors (separate Playwright browser
contexts in one headless Chromium: separate cookies, separate kernels) start loading the same
dashboard, spread evenly over ``--arrive-within`` seconds (0: all at once), and each moves the first
slider of the first panel that has one, ``--moves`` times, all visitors at the same moment. Reports,
per visitor and over all:

- ``open``: seconds from the visitor's navigation to the first drawn plot (measured in the page), and
  the page's last byte (``page_done``: Voila streams the page while a new kernel runs the notebook, so
  this is the server's part; the rest, to the first plot, is the browser's);
- ``slider -> plot``: seconds from the key press to the panel having drawn the new result
  with nothing pending (its hidden ``lecture-state`` element), measured in the page, so the
  figures do not depend on the order in which this script looks at the pages;
- whether every visitor's plot data changed after each move;
- each visitor's kernel, after its moves: resident memory (RSS), its private part (USS: what the
  machine would free if that kernel went; RSS also counts the shared libraries every kernel maps),
  and CPU seconds (user + system: starting, executing the notebook, the moves). These are the
  figures to plan a server with (README, "Serving a class");
- resident memory (RSS) of the Voila process plus all its kernels: before (pool only),
  at the peak, and after every visitor closed the tab (kernels shut down, pool refilled).

Prints figures; last line a JSON object (``cache_dir`` and ``cache_entries`` say which cache it ran
with). The helpers (``open_visitors``, ``move_all``, ``close_visitors``, ``server_memory``, ``settle``)
are also used by ``tests/test_load.py``. On one machine the visitors' browsers compete with the
server for its CPUs, which students' browsers on their own laptops do not; ``--server-nice 10``
gives the browsers the CPUs first. Usage::

    .venv/bin/python benchmarks/concurrent_visitors.py [--visitors 10] [--arrive-within 0] [--moves 3]
        [--notebook 01_adaptive_methods] [--pool-size 1] [--preheat N] [--refill-delay S] [--server-nice 10] [--full]
        [--cache-dir DIR|off]

A class of 30 at classroom settings with a warm cache (the issue's target)::

    ./lecture warm --cache-dir /tmp/lecture-cache
    .venv/bin/python benchmarks/concurrent_visitors.py --full --cache-dir /tmp/lecture-cache \
        --visitors 30 --arrive-within 10 --moves 2 --server-nice 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))    # the browser helpers the tests use

from benchmarks._common import cache_entries, emit  # noqa: E402
from benchmarks.wire_visitor import WireClass, static_paths  # noqa: E402
from browser_helpers import (CHROMIUM, close_context, HAS_DRAWN_PATH_JS, PANEL_PLOT_PATH, PANEL_STATE_JS, SETTLED_JS,  # noqa: E402
                             SLIDER_HANDLE, kernel_id, launch, new_page, slider_panels, slider_state)

MB = 1024 * 1024

# Installed in every page before its scripts run: the time (performance.now(), ms since the
# navigation started) at which the first plot trace is drawn, and the time of every key press.
PROBE_JS = """(() => {
  const probe = window.__lectureProbe = {firstPlot: null, keys: []};
  const drawn = """ + HAS_DRAWN_PATH_JS + """;
  const poll = () => {
    if (drawn(""" + json.dumps(PANEL_PLOT_PATH) + """)) {
      probe.firstPlot = performance.now();
    } else { setTimeout(poll, 25); }
  };
  poll();
  document.addEventListener('keydown', () => probe.keys.push(performance.now()), true);
})();"""
FIRST_PLOT_JS = "() => window.__lectureProbe && window.__lectureProbe.firstPlot !== null"
# Records every change of a panel's lecture-state element with its time: {t, generation, busy, outcome}.
WATCH_STATE_JS = """(panel) => {
  const box = panel.querySelector('.lecture-state');
  const log = panel.__lectureStates = [];
  const state = """ + PANEL_STATE_JS + """;
  const read = () => { if (box.querySelector('span')) log.push({t: performance.now(), ...state(panel)}); };
  new MutationObserver(read).observe(box, {subtree: true, childList: true, attributes: true, characterData: true});
  read();
}"""
# The data every plot of the panel draws (plotly keeps it on the graph div), as one string.
PLOT_DATA_JS = """(panel) => JSON.stringify(Array.from(panel.querySelectorAll('.js-plotly-plot')).map(gd =>
  (gd.data || []).map(t => ['x', 'y', 'z'].map(k => t[k] && t[k].length !== undefined ? Array.from(t[k]) : t[k]))))"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- server side: memory of Voila and its kernels ----------------------------------------

def server_memory(pid: int) -> tuple[int, int]:
    """(RSS in bytes of the Voila process plus every process it started, number of those processes)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total, len(procs) - 1


def settle(pid: int, kernels: int | None = None, timeout: float = 180.0, quiet_cpu: float = 10.0) -> tuple[int, int]:
    """Wait until the server has ``kernels`` kernels (any number if None) and they are idle
    (each under ``quiet_cpu`` % CPU over two 1-second windows); return ``server_memory``."""
    import psutil

    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            raise RuntimeError("the Voila process is gone") from None
        if kernels is not None and len(children) != kernels:
            quiet = 0
            time.sleep(0.5)
            continue
        for c in children:
            with _ignore_gone():
                c.cpu_percent(None)
        time.sleep(1.0)
        busy = False
        for c in children:
            with _ignore_gone():
                busy |= c.cpu_percent(None) > quiet_cpu
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return server_memory(pid)
    rss, n = server_memory(pid)
    raise TimeoutError(f"server did not settle within {timeout:.0f} s: {n} kernels (want {kernels}), "
                       f"RSS {rss / MB:.0f} MB")


def kernel_usage(pid: int, kernel_ids: list[str]) -> dict[str, dict]:
    """For each kernel id, its process's resident memory (``rss_mb``), private memory (``uss_mb``: not
    shared with any other process, what its shutdown frees) and CPU seconds so far (``cpu_s``)."""
    import psutil

    by_id = {}
    for p in psutil.Process(pid).children(recursive=True):
        with _ignore_gone():
            line = " ".join(p.cmdline())
            for kid in kernel_ids:
                if f"kernel-{kid}.json" in line:
                    info, cpu = p.memory_full_info(), p.cpu_times()
                    by_id[kid] = {"rss_mb": round(info.rss / MB), "uss_mb": round(info.uss / MB),
                                  "cpu_s": round(cpu.user + cpu.system, 1)}
    return by_id


class _ignore_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import psutil

        return kind is not None and issubclass(kind, psutil.NoSuchProcess)


def renice(pid: int, niceness: int) -> None:
    """Set the niceness of the Voila process and every process it started."""
    import psutil

    if niceness:
        root = psutil.Process(pid)
        for p in [root] + root.children(recursive=True):
            with _ignore_gone():
                p.nice(niceness)


class MemorySampler:
    """Samples ``server_memory(pid)`` every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.peak_rss, self.peak_kernels = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, n = server_memory(self.pid)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_kernels = max(self.peak_kernels, n)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- browser side: visitors ------------------------------------------------------------------

@dataclass
class Visitor:
    """One visitor: a browser context of its own (own cookies, own kernel) with one page."""

    index: int
    context: object
    page: object
    panel: object = None
    arrival_s: float = 0.0
    open_s: float | None = None
    page_s: float | None = None
    kernel: dict = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    updated: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)       # every URL the page asked for

    @property
    def handle(self):
        return self.panel.locator(SLIDER_HANDLE).first


# Starts a navigation without waiting for it (page.goto waits for the response to begin, and Voila
# may hold that back while a kernel starts): the visitors' arrival times are then the ones asked for.
NAVIGATE_JS = "(url) => { setTimeout(() => { window.location.href = url; }, 0); }"


def arrival_times(n: int, spread_s: float) -> list[float]:
    """``n`` arrivals evenly spread over ``spread_s`` seconds (0: all at once), in seconds from the first."""
    return [spread_s * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def browser_indices(n: int, browsers: int) -> list[int]:
    """Which of ``n`` visitors (in order of arrival) are real browsers when ``browsers`` of them are:
    spread evenly over the arrivals (the rest are wire visitors, :mod:`benchmarks.wire_visitor`)."""
    if not 0 < browsers <= n:
        raise ValueError(f"browsers must be in [1, {n}] (the number of visitors), got {browsers}")
    return sorted({min(n - 1, int((j + 0.5) * n / browsers)) for j in range(browsers)})


def open_visitors(browser, url: str, n: int, spread_s: float = 0.0, arrivals: list[float] | None = None,
                  indices: list[int] | None = None) -> list[Visitor]:
    """``n`` visitors start loading ``url``, evenly spread over ``spread_s`` seconds (0: back to back), or at
    ``arrivals`` (seconds from now, one per visitor; ``indices`` numbers them); returns once every page has its
    response under way (navigation to the first plot is not awaited). Each visitor's ``arrival_s`` is when it
    started, from this call's start."""
    arrivals = arrival_times(n, spread_s) if arrivals is None else arrivals
    indices = list(range(len(arrivals))) if indices is None else indices
    visitors = []
    for i in indices:
        context, page, watcher = new_page(browser, init_script=PROBE_JS)
        visitors.append(Visitor(i, context, page, errors=watcher.errors, requests=watcher.requests))
    start = time.perf_counter()
    for at, v in zip(arrivals, visitors):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        v.arrival_s = time.perf_counter() - start
        v.page.evaluate(NAVIGATE_JS, url)
    for v in visitors:
        v.page.wait_for_url(url, wait_until="commit", timeout=300_000)
    return visitors


def wait_open(visitors: list[Visitor], timeout_ms: int = 300_000) -> None:
    """Wait until every visitor's first plot is drawn; ``open_s`` is measured in the page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_ms / 1000
    for v in visitors:
        try:                                # one deadline for the class: a page that never draws is reported
            v.page.wait_for_function(FIRST_PLOT_JS, timeout=max(deadline - time.monotonic(), 1.0) * 1000)
        except PlaywrightTimeout:
            v.errors.append(f"no plot drawn within {timeout_ms / 1000:.0f} s of the arrivals")
            continue
        v.open_s = v.page.evaluate("() => window.__lectureProbe.firstPlot") / 1000
        # the page's last byte: Voila streams the page while the kernel executes the notebook, so this is
        # the server's part of the open (kernel start and notebook run, or nothing for a pre-heated kernel)
        v.page_s = v.page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd") / 1000
        panels = slider_panels(v.page)
        if panels.count() == 0:
            raise RuntimeError("the dashboard has no panel with a slider")
        v.panel = panels.first
        v.panel.wait_for(state="attached")
        v.panel.evaluate(WATCH_STATE_JS)


def _key(handle) -> str:
    now, _, high = slider_state(handle)
    return "ArrowLeft" if now >= high else "ArrowRight"


def move_all(visitors: list[Visitor], moves: int, timeout_ms: int = 180_000) -> None:
    """Every visitor moves the slider one step, all at once, ``moves`` times; records in-page
    latencies (key press -> new result drawn, nothing pending) and whether the plot data changed."""
    visitors = [v for v in visitors if v.panel is not None]        # those whose dashboard opened
    for _ in range(moves):
        before = []
        for v in visitors:
            v.handle.scroll_into_view_if_needed()
            before.append((v.panel.evaluate(PANEL_STATE_JS)["generation"], v.panel.evaluate(PLOT_DATA_JS)))
        for v in visitors:                       # the presses go out back to back
            v.handle.focus()
            v.page.keyboard.press(_key(v.handle))
        for v, (g, data) in zip(visitors, before):
            v.page.wait_for_function(SETTLED_JS, arg=[v.panel.element_handle(), g], timeout=timeout_ms)
            key_t = v.page.evaluate("() => window.__lectureProbe.keys.at(-1)")
            log = v.panel.evaluate("(panel) => panel.__lectureStates")
            done = next(s["t"] for s in log if s["generation"] > g and not s["busy"])
            v.latencies.append((done - key_t) / 1000)
            v.updated.append(v.panel.evaluate(PLOT_DATA_JS) != data)
            state = v.panel.evaluate(PANEL_STATE_JS)
            if state["outcome"] != "ok":
                v.errors.append(f"panel outcome {state['outcome']!r} after a move")


def close_visitors(visitors: list[Visitor]) -> None:
    """Close every tab as a person does: the page's unload handler asks Voila to shut its kernel down."""
    close_contexts([v.context for v in visitors])


def close_contexts(contexts: list) -> None:
    """Close every page of each browser context as a person closes a tab (its unload handler asks Voila to shut
    its kernel down), then the contexts."""
    for context in contexts:
        for page in context.pages:
            page.close(run_before_unload=True)
    time.sleep(1.0)       # let the shutdown beacons leave before the contexts go
    for context in contexts:
        close_context(context)


def _stats(prefix: str, values: list[float], digits: int = 2) -> dict:
    if not values:
        return {f"{prefix}_median_s": None, f"{prefix}_p90_s": None, f"{prefix}_max_s": None}
    return {f"{prefix}_median_s": round(statistics.median(values), digits),
            f"{prefix}_p90_s": round(percentile(values, 0.9), digits), f"{prefix}_max_s": round(max(values), digits)}


def summary(visitors: list) -> dict:
    """Figures over ``visitors``: :class:`Visitor` (a browser: ``open`` is navigation -> first plot, in the page)
    and :class:`benchmarks.wire_visitor.WireVisitor` (``wire_open``: arrival -> every widget's state received,
    the server's whole part of an open) alike; slider latencies and kernels over both."""
    browsers = [v for v in visitors if isinstance(v, Visitor)]
    wires = [v for v in visitors if not isinstance(v, Visitor)]
    opened = [v for v in visitors if v.open_s is not None]
    kernels = [v.kernel for v in visitors if v.kernel]

    def median_of(key):
        return round(statistics.median(k[key] for k in kernels), 1) if kernels else None

    def slider(group):
        lat = [x for v in group for x in v.latencies]
        return (round(statistics.median(lat), 3) if lat else None), (round(percentile(lat, 0.9), 3) if lat else None)

    (b_med, b_p90), (w_med, w_p90) = slider(browsers), slider(wires)
    return {"visitors": len(visitors), "browsers": len(browsers), "wire_visitors": len(wires),
            "visitors_opened": len(opened),
            **_stats("open", [v.open_s for v in browsers if v.open_s is not None]),
            "page_done_median_s": round(statistics.median([v.page_s for v in browsers if v.open_s is not None]
                                                          or [float("nan")]), 2),
            **_stats("wire_open", [v.open_s for v in wires if v.open_s is not None]),
            "slider_median_s": b_med, "slider_p90_s": b_p90, "wire_slider_median_s": w_med, "wire_slider_p90_s": w_p90,
            "all_plots_updated": len(opened) == len(visitors) and all(v.updated and all(v.updated) for v in visitors),
            "visitors_without_errors": sum(not v.errors for v in visitors),
            "kernel_rss_median_mb": median_of("rss_mb"), "kernel_uss_median_mb": median_of("uss_mb"),
            "kernel_cpu_median_s": median_of("cpu_s"), "kernel_cpu_max_s": max((k["cpu_s"] for k in kernels), default=None),
            "per_visitor": [{"kind": "browser" if isinstance(v, Visitor) else "wire", "arrival_s": round(v.arrival_s, 2),
                             "open_s": None if v.open_s is None else round(v.open_s, 2),
                             "page_done_s": None if v.page_s is None else round(v.page_s, 2),
                             "slider_s": [round(x, 3) for x in v.latencies], "updated": v.updated,
                             "kernel": v.kernel, "errors": v.errors} for v in sorted(visitors, key=lambda v: v.index)]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=10)
    parser.add_argument("--arrive-within", type=float, default=0.0, metavar="S",
                        help="the visitors start loading the page evenly spread over S seconds (default 0: at once)")
    parser.add_argument("--browsers", type=int, default=None, metavar="K",
                        help="K of the visitors are real headless browsers, spread over the arrivals; the others are "
                             "wire visitors (benchmarks.wire_visitor: the same requests and widget messages, no drawing), "
                             "as the students' browsers run on their own laptops (default: every visitor a browser)")
    parser.add_argument("--moves", type=int, default=3, help="slider moves per visitor (all at once)")
    parser.add_argument("--notebook", default="01_adaptive_methods", help="stem of the dashboard to open")
    parser.add_argument("--pool-size", type=int, default=1, help="pre-heated kernels per notebook (the app's --pool-size)")
    parser.add_argument("--preheat", type=int, default=None, metavar="N",
                        help="N pre-heated kernels for the dashboard the visitors open (the app's "
                             "--preheat NOTEBOOK.ipynb=N), e.g. as many as there are visitors")
    parser.add_argument("--full", action="store_true", help="full settings (no LECTURE_FAST)")
    parser.add_argument("--cache-dir", default="off", metavar="DIR|off",
                        help="the result cache every kernel shares: 'off' (default; every kernel computes, the cold "
                             "case) or a folder, e.g. one filled by `./lecture warm --cache-dir DIR` (the warm case)")
    parser.add_argument("--server-nice", type=int, default=0,
                        help="run Voila and its kernels at this niceness (10: the browsers, which share this "
                             "machine's CPUs, get them first, as students' browsers on their own laptops would)")
    parser.add_argument("--refill-delay", type=float, default=None, metavar="SECONDS",
                        help="the app's --refill-delay: wait before replacing pre-heated kernels taken (Voila: 1 s)")
    args = parser.parse_args(argv)
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.notebook not in {p.stem for p in notebooks}:
        sys.exit(f"no notebook {args.notebook!r}; have {[p.stem for p in notebooks]}")
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    cache_dir = args.cache_dir if args.cache_dir == "off" else str(Path(args.cache_dir).resolve())
    entries = cache_entries(cache_dir)
    from playwright.sync_api import sync_playwright

    from voila_app.server import running_app

    log = REPO / "benchmarks" / "out" / "concurrent_visitors_voila.log"
    url_path = f"/voila/render/{args.notebook}.ipynb"
    extra = ("--cache-dir", cache_dir)
    pool = args.pool_size * len(notebooks)
    if args.preheat is not None:
        extra += ("--preheat", f"{args.notebook}.ipynb={args.preheat}")
        pool += args.preheat - args.pool_size
    if args.refill_delay is not None:
        extra += ("--refill-delay", str(args.refill_delay))
    with running_app(REPO / "notebooks", log, pool_size=args.pool_size, fast=not args.full,
                     extra_args=extra) as app, sync_playwright() as p:
        pid = app.proc.pid
        renice(pid, args.server_nice)             # kernels started from now on inherit it
        if pool:                                  # (with no pool at all, Voila logs no "pool filled")
            app.wait_preheated([nb.name for nb in notebooks if args.pool_size or nb.stem == args.notebook])
        renice(pid, args.server_nice)
        browser = launch(p)
        try:
            # one visitor first, alone: the one-time costs of the first page after start-up
            # (templates, Chromium compiling Voila's JavaScript) are not the class's
            warm = open_visitors(browser, app.url + url_path, 1)
            wait_open(warm)
            first_open_s = warm[0].open_s
            close_visitors(warm)
            base_rss, base_k = settle(pid, kernels=pool, timeout=600)
            server_cpu0 = _cpu_seconds(pid)
            print(f"app at {app.url}; {args.visitors} visitors on {args.notebook} arriving within "
                  f"{args.arrive_within:g} s ({'full' if args.full else 'LECTURE_FAST=1'} settings, "
                  f"{os.cpu_count()} CPUs, pool {args.pool_size}, {pool} pre-heated kernels in all, server niceness {args.server_nice}, "
                  f"result cache {cache_dir}: {entries} entries)")
            print(f"first dashboard after start-up: {first_open_s:.1f} s")
            print(f"before: {base_rss / MB:7.0f} MB RSS  (Voila + {base_k} pre-heated kernels)", flush=True)
            with MemorySampler(pid) as sampler:
                t0 = time.perf_counter()
                arrivals = arrival_times(args.visitors, args.arrive_within)
                real = browser_indices(args.visitors, args.browsers or args.visitors)
                on_wire = [i for i in range(args.visitors) if i not in real]
                wire = WireClass(app.url, url_path, static_paths(warm[0].requests, app.url, url_path), on_wire)
                wire_open = wire.start_open([arrivals[i] for i in on_wire])
                visitors = open_visitors(browser, app.url + url_path, len(real), arrivals=[arrivals[i] for i in real],
                                         indices=real)
                wait_open(visitors)
                wire_open.result(600)
                all_open_s = time.perf_counter() - t0
                for _ in range(args.moves):           # every visitor's move at the same moment, browsers and wire
                    moving = threading.Thread(target=wire.move_all)
                    moving.start()
                    move_all(visitors, 1)
                    moving.join()
                opened = [v for v in visitors if v.panel is not None]
                ids = [kernel_id(v.page) for v in opened] + [w.kernel_id for w in wire.visitors if w.kernel_id]
                usage = kernel_usage(pid, ids)
                for v, kid in zip(opened, ids):
                    v.kernel = usage.get(kid, {})
                for w in wire.visitors:
                    w.kernel = usage.get(w.kernel_id, {})
                server_cpu = _cpu_seconds(pid) - server_cpu0
                close_visitors(visitors)
                wire.close_all()
                after_rss, after_k = settle(pid, kernels=pool, timeout=600)
        finally:
            browser.close()
    s = summary(visitors + wire.visitors)
    print(f"{s['visitors_opened']} of {args.visitors} visitors opened (after {all_open_s:.1f} s); every visitor's plot "
          f"updated after every move: {s['all_plots_updated']}")
    print(f"browsers ({s['browsers']}): open -> first plot median {_s(s['open_median_s'])}, p90 {_s(s['open_p90_s'])}, "
          f"slowest {_s(s['open_max_s'])}; page's last byte (the server's part: kernel, notebook run) median "
          f"{s['page_done_median_s']:.1f} s; slider -> plot median {s['slider_median_s']} s, p90 {s['slider_p90_s']} s")
    if s["wire_visitors"]:
        print(f"wire visitors ({s['wire_visitors']}): arrival -> page, files and every widget's state received median "
              f"{_s(s['wire_open_median_s'])}, p90 {_s(s['wire_open_p90_s'])}, slowest {_s(s['wire_open_max_s'])}; "
              f"slider -> panel drawn (kernel side) median {s['wire_slider_median_s']} s, p90 {s['wire_slider_p90_s']} s")
    print(f"per visitor kernel (median): RSS {s['kernel_rss_median_mb']} MB, private (USS) "
          f"{s['kernel_uss_median_mb']} MB, CPU {s['kernel_cpu_median_s']} s (max {s['kernel_cpu_max_s']} s); "
          f"Voila + kernels used {server_cpu:.0f} CPU-s in all")
    # the memory a visitor's kernel adds: from the peak when visitors' kernels were started for them; with
    # every visitor on a pre-heated kernel (no kernel added), the kernels' own RSS above says it
    added = sampler.peak_kernels - base_k
    per_kernel = (sampler.peak_rss - base_rss) / added if added > 0 else None
    print(f"peak:   {sampler.peak_rss / MB:7.0f} MB RSS  ({sampler.peak_kernels} kernels; " + (
          f"{per_kernel / MB:.0f} MB per visitor kernel)" if per_kernel else "every visitor on a pre-heated kernel)"))
    print(f"after:  {after_rss / MB:7.0f} MB RSS  ({after_k} kernels, visitors gone; "
          f"{100 * (after_rss - base_rss) / base_rss:+.1f} % of before)")
    for i, v in enumerate(s["per_visitor"]):
        print(f"  visitor {i:2d} ({v['kind']:7s}): arrives {v['arrival_s']:5.1f} s  page {_s(v['page_done_s'])}  open {_s(v['open_s'])}  slider {v['slider_s']}  "
              f"updated {v['updated']}  kernel {v['kernel']}" + (f"  errors {v['errors']}" if v["errors"] else ""))
    emit({"benchmark": "concurrent_visitors", "notebook": args.notebook, "lecture_fast": not args.full,
          "cpus": os.cpu_count(), "browsers_asked": args.browsers, "pool_size": args.pool_size, "preheat": args.preheat, "refill_delay": args.refill_delay, "server_nice": args.server_nice, "moves": args.moves,
          "arrive_within_s": args.arrive_within, "cache_dir": cache_dir, "cache_entries": entries,
          "load_average_1min": round(os.getloadavg()[0], 1),
          **s,
          "first_open_s": round(first_open_s, 2), "all_open_s": round(all_open_s, 2),
          "server_cpu_s": round(server_cpu, 1),
          "rss_before_mb": round(base_rss / MB), "rss_peak_mb": round(sampler.peak_rss / MB),
          "rss_after_mb": round(after_rss / MB), "kernels_before": base_k, "kernels_peak": sampler.peak_kernels,
          "kernels_after": after_k, "mb_per_visitor_kernel": round(per_kernel / MB) if per_kernel else None})


def _s(seconds: float | None) -> str:
    return "  never" if seconds is None else f"{seconds:5.1f} s"


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the Voila process and every process it has now (kernels that already
    exited are not counted: read it while the visitors' kernels still run)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root] + root.children(recursive=True):
        with _ignore_gone():
            t = p.cpu_times()
            total += t.user + t.system
    return total


if __name__ == "__main__":
    main()
