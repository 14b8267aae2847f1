"""Tiny helpers shared by the benchmark scripts: timing, the result cache's state, and the JSON summary on the last line."""
from __future__ import annotations

import contextlib
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


def served_dashboards(only, log_name: str, fast: bool = False, prefix: str = "lecture-bench-"):
    """For the benchmarks that open every dashboard: the app (``python -m voila_app``, full settings unless
    ``fast``) serving the notebooks (all, or the stems in ``only``) copied to a temporary folder, and one headless
    Chromium. Yields ``(browser, notebook, url)`` per notebook once its kernel pool is pre-heated; the app's log
    goes to ``benchmarks/out/<log_name>``."""
    import os
    import shutil
    import sys
    import tempfile

    from playwright.sync_api import sync_playwright

    from dashboard_latency import ARGS, CHROMIUM
    from voila_app.server import running_app

    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    repo = Path(__file__).resolve().parent.parent
    notebooks = [nb for nb in sorted((repo / "notebooks").glob("[0-9]*.ipynb")) if not only or nb.stem in only]
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, sync_playwright() as p:
        for nb in notebooks:
            shutil.copy(nb, Path(tmp) / nb.name)
        with running_app(Path(tmp), repo / "benchmarks" / "out" / log_name, fast=fast) as app:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                for nb in notebooks:
                    app.wait_preheated([nb.name], timeout=900)
                    yield browser, nb, f"{app.url}/voila/render/{nb.name}"
            finally:
                browser.close()


@contextlib.contextmanager
def opened_dashboard(browser, url: str, wait: float):
    """A page of its own browser context on ``url``, once a panel's plot is drawn and ``wait`` seconds more (the
    page's other figures drawn); exits with the page's JavaScript errors, if it logged any, after the block."""
    from dashboard_latency import PLOT

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url, wait_until="commit", timeout=300_000)
        page.wait_for_function("(sel) => document.querySelectorAll(sel).length > 0", arg=PLOT, timeout=300_000)
        page.wait_for_timeout(wait * 1000)
        yield page
        if errors:
            raise SystemExit(f"JavaScript errors on {url}: {errors}")
    finally:
        context.close()


def panel_title(panel, i: int) -> str:
    """A panel's title in the page (its ``.lecture-title``), or ``panel i+1``. The text of the DOM, not the rendered
    text: a cell off screen is not rendered (``content-visibility: auto``) and its ``innerText`` is empty."""
    title = panel.locator(".lecture-title")
    text = " ".join((title.first.text_content() or "").split()) if title.count() else ""
    return text or f"panel {i + 1}"
