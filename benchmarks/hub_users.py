"""Per-user cost of the JupyterHub deployment: memory and CPU of one student's server.

Starts the hub (deploy/jupyterhub/jupyterhub_config.py, trial mode, LECTURE_POOL_SIZE=0 as
deployed) on free loopback ports, logs one student in with headless Chromium through the hub's
login form, and measures that student's server, i.e. jupyterhub-singleuser, the Voila app it
proxies and Voila's kernels, all as psutil sees them:

- memory (RSS, and PSS: shared library pages split among the processes that map them) after
  the landing page, after opening one dashboard (notebook 01), and with all six open at once;
- CPU seconds (user + system, summed over the server's processes) to open each dashboard
  (a kernel starts and runs the notebook: no pre-heated kernels per user) until its first plot
  is drawn, and per slider move (``--moves`` fresh values on the first panel with a slider,
  until the panel has drawn the result);
- the hub's own processes (hub, proxy, idle culler), paid once per hub;
- whether closing the tabs shuts the kernels down (Voila's unload beacon, through both proxies).

Prints a table and, last, a JSON object. Usage:
``.venv/bin/python benchmarks/hub_users.py [--fast] [--moves 5] [--only 01_adaptive_methods] [--cache-dir DIR|off]``
(default: the notebooks' full classroom settings; ``--fast``: LECTURE_FAST=1, as in the tests; the result
cache off, the cold case, unless ``--cache-dir`` names a folder; the JSON says which).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "deploy" / "jupyterhub"))
sys.path.insert(0, str(REPO / "tests"))    # the browser helpers the tests use

from browser_helpers import (CHROMIUM, PANEL_STATE_JS, SETTLED_JS, SLIDER_HANDLE, launch,  # noqa: E402
                             slider_panels, slider_state, wait_for_dashboard)
from localhub import running_hub  # noqa: E402

from benchmarks._common import cache_entries  # noqa: E402

MB = 2 ** 20


def memory(procs: list[psutil.Process]) -> dict:
    """Summed RSS and PSS (MB) of ``procs``, and how many are kernels."""
    rss = pss = 0
    kernels = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            kernels += "ipykernel_launcher" in p.cmdline()
        except psutil.NoSuchProcess:
            continue
    return {"rss_mb": round(rss / MB), "pss_mb": round(pss / MB), "processes": len(procs), "kernels": kernels}


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def login(context, hub, name: str):
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login", timeout=60_000)
    page.fill("#username_input", name)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_selector("#lecture-cards", timeout=300_000)   # spawn-pending, then the app's landing page
    return page


def open_dashboard(context, hub, name: str, notebook: str) -> tuple[object, dict]:
    """Open one dashboard in a new tab; CPU seconds and wall seconds until its first plot."""
    before = cpu_seconds(hub.user_processes(name))
    page = context.new_page()
    start = time.perf_counter()
    page.goto(f"{hub.app_url(name)}voila/render/{notebook}", wait_until="commit", timeout=600_000)
    wait_for_dashboard(page, timeout_ms=600_000)
    wall = time.perf_counter() - start
    time.sleep(1.0)                           # let the kernel finish sending the first draws
    return page, {"open_wall_s": round(wall, 2),
                  "open_cpu_s": round(cpu_seconds(hub.user_processes(name)) - before, 2)}


def slider_moves(page, hub, name: str, moves: int) -> dict:
    """``moves`` fresh slider values on the first panel with a slider: CPU and wall per move."""
    panel = slider_panels(page).first
    if moves == 0 or panel.count() == 0:
        return {}
    handle = panel.locator(SLIDER_HANDLE).first
    handle.scroll_into_view_if_needed()
    cpu, wall = [], []
    for _ in range(moves):
        now, low, high = slider_state(handle)
        key = "ArrowRight" if now < high else "ArrowLeft"     # always a value not computed before
        generation = panel.evaluate(PANEL_STATE_JS)["generation"]
        before = cpu_seconds(hub.user_processes(name))
        handle.focus()
        start = time.perf_counter()
        page.keyboard.press(key)
        page.wait_for_function(SETTLED_JS, arg=[panel.element_handle(), generation], timeout=300_000)
        wall.append(time.perf_counter() - start)
        time.sleep(0.3)                       # the last messages of the update
        cpu.append(cpu_seconds(hub.user_processes(name)) - before)
    return {"move_cpu_s": round(statistics.median(cpu), 3), "move_wall_s": round(statistics.median(wall), 3),
            "moves": moves}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST=1 (the tests' small settings)")
    parser.add_argument("--moves", type=int, default=5, help="slider moves per dashboard (default 5)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems (default: all)")
    parser.add_argument("--cache-dir", default="off", metavar="DIR|off",
                        help="the result cache every user's kernels share (the hub's LECTURE_CACHE_DIR): 'off' "
                             "(default; every kernel computes, the cold case) or a folder `./lecture warm` filled")
    args = parser.parse_args(argv)
    notebooks = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if not p.name.startswith("."))
    if args.only:
        notebooks = [p for p in notebooks if p.stem in args.only]
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    name = "student1"
    log = REPO / "benchmarks" / "out" / "hub_users_jupyterhub.log"
    cache_dir = args.cache_dir if args.cache_dir == "off" else str(Path(args.cache_dir).resolve())
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LECTURE_CACHE_DIR=cache_dir)
    result = {"benchmark": "hub_users", "lecture_fast": args.fast, "cpus": os.cpu_count(),
              "memory_total_gb": round(psutil.virtual_memory().total / 2 ** 30, 1), "pool_size": 0,
              "cache_dir": cache_dir, "cache_entries": cache_entries(cache_dir)}
    with running_hub(log, fast=args.fast, pool_size=0, env=env) as hub, sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            start = time.perf_counter()
            landing = login(context, hub, name)
            result["login_to_landing_s"] = round(time.perf_counter() - start, 1)
            time.sleep(2)
            result["hub_processes"] = memory([q for q in hub.processes() if q not in hub.user_processes(name)])
            result["server_idle"] = memory(hub.user_processes(name))
            print(f"hub: {result['hub_processes']['rss_mb']} MB RSS (hub, proxy, culler); "
                  f"{name}'s server after the landing page: {result['server_idle']['rss_mb']} MB RSS, "
                  f"{result['server_idle']['pss_mb']} MB PSS", flush=True)
            pages, dashboards = [], {}
            for i, nb in enumerate(notebooks):
                page, figures = open_dashboard(context, hub, name, nb.name)
                figures.update(slider_moves(page, hub, name, args.moves))
                pages.append(page)
                time.sleep(1)
                figures["server_after"] = memory(hub.user_processes(name))
                dashboards[nb.stem] = figures
                print(f"{nb.stem:32s} open {figures['open_wall_s']:6.1f} s wall {figures['open_cpu_s']:6.1f} CPU-s"
                      f"   slider move {figures.get('move_wall_s', float('nan')):5.2f} s wall"
                      f" {figures.get('move_cpu_s', float('nan')):5.2f} CPU-s   server now"
                      f" {figures['server_after']['rss_mb']} MB RSS / {figures['server_after']['pss_mb']} MB PSS"
                      f" ({figures['server_after']['kernels']} kernels)", flush=True)
                if i == 0:
                    result["server_one_dashboard"] = figures["server_after"]
            result["dashboards"] = dashboards
            result["server_all_dashboards"] = memory(hub.user_processes(name))
            # close the tabs: Voila's unload beacon should shut each kernel down
            for page in pages:
                page.close(run_before_unload=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and memory(hub.user_processes(name))["kernels"]:
                time.sleep(1)
            result["kernels_after_closing_tabs"] = memory(hub.user_processes(name))["kernels"]
            landing.close()
            context.close()
        finally:
            browser.close()
    kernels = [d["server_after"]["rss_mb"] for d in dashboards.values()]
    result["summary"] = {
        "server_idle_rss_mb": result["server_idle"]["rss_mb"],
        "one_dashboard_rss_mb": result.get("server_one_dashboard", {}).get("rss_mb"),
        "one_dashboard_pss_mb": result.get("server_one_dashboard", {}).get("pss_mb"),
        "all_dashboards_rss_mb": result["server_all_dashboards"]["rss_mb"],
        "all_dashboards_pss_mb": result["server_all_dashboards"]["pss_mb"],
        "open_cpu_s_median": round(statistics.median(d["open_cpu_s"] for d in dashboards.values()), 2),
        "move_cpu_s_median": round(statistics.median(d["move_cpu_s"] for d in dashboards.values()
                                                      if "move_cpu_s" in d), 3) if args.moves else None,
        "hub_rss_mb": result["hub_processes"]["rss_mb"],
    }
    print(f"{name}'s server: landing {result['server_idle']['rss_mb']} MB, one dashboard "
          f"{result['summary']['one_dashboard_rss_mb']} MB, all {len(kernels)} open "
          f"{result['summary']['all_dashboards_rss_mb']} MB RSS ({result['summary']['all_dashboards_pss_mb']} MB PSS);"
          f" kernels left after closing the tabs: {result['kernels_after_closing_tabs']}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
