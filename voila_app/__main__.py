"""Start the Voila app: ``python -m voila_app [--port 8866] [--ip 127.0.0.1] [--fast] [--cache-dir DIR] [--preheat NB=N]``.

Serves every notebook in ``notebooks/`` as a dashboard with its code hidden,
behind a landing page of cards. ``--fast`` sets ``LECTURE_FAST=1`` (small
step counts; used by the tests and the benchmark). Every kernel shares one disk
cache of experiment results (:mod:`lecture_lib.cache`): ``--cache-dir`` chooses its
folder (``off`` disables it), ``--cache-size`` its bound. ``--pool-size`` pre-heated kernels wait
for each notebook; ``--preheat NOTEBOOK.ipynb=N`` gives the dashboard a whole class opens at once
N of them (README, "Serving a class").
"""
from __future__ import annotations

import argparse
import os
import sys

from .config import NOTEBOOKS_DIR, build_config, describe_cache, kernel_environment, template_environment


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m voila_app", description=__doc__.splitlines()[0])
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8866, help="port (default: 8866)")
    p.add_argument("--pool-size", type=int, default=1,
                   help="pre-heated kernels kept per notebook (0 disables pre-heating; default 1)")
    p.add_argument("--preheat", action="append", default=[], metavar="NOTEBOOK.ipynb=N",
                   help="keep N pre-heated kernels for this notebook instead of --pool-size (repeatable): "
                        "the dashboard a whole class opens at once, e.g. 01_adaptive_methods.ipynb=30")
    p.add_argument("--refill-delay", type=float, default=1.0, metavar="SECONDS",
                   help="wait this long before replacing a pre-heated kernel a visitor took (default 1; e.g. 120 "
                        "with --preheat: the class opens and starts before the replacements run their notebook)")
    p.add_argument("--pool-concurrency", type=int, default=0, metavar="N",
                   help="pre-heated kernels that start and execute their notebook at once, the first dashboard "
                        "first (default 0: the CPU count)")
    p.add_argument("--cull-idle-timeout", type=int, default=1800,
                   help="shut down kernels idle this many seconds, even with a tab open (default 1800)")
    p.add_argument("--cull-interval", type=int, default=60, help="seconds between idle checks (default 60)")
    p.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="folder of notebooks to serve")
    p.add_argument("--fast", action="store_true", help="LECTURE_FAST=1: small, quick settings in every notebook")
    p.add_argument("--cache-dir", default=None,
                   help="folder of the result cache shared by every kernel, or 'off' "
                        "(default: $LECTURE_CACHE_DIR, else ~/.cache/lecture5)")
    p.add_argument("--cache-size", default=None,
                   help="bound of the result cache, e.g. 500M or 2G (default: $LECTURE_CACHE_SIZE, else 500M)")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    return p.parse_args(argv)


def preheat_sizes(specs: list[str]) -> dict[str, int]:
    """``["01_x.ipynb=30"]`` -> ``{"01_x.ipynb": 30}``; a malformed entry raises ``ValueError``."""
    sizes = {}
    for spec in specs:
        name, _, size = spec.partition("=")
        if not name.endswith(".ipynb") or not size.isdigit():
            raise ValueError(f"--preheat wants NOTEBOOK.ipynb=N (N a whole number), got {spec!r}")
        sizes[name] = int(size)
    return sizes


def main(argv=None) -> None:
    args = parse_args(argv)
    if not os.path.isdir(args.notebooks):
        sys.exit(f"error: notebook folder {args.notebooks!r} does not exist")
    os.environ.update(template_environment())     # templates are found through JUPYTER_PATH
    if args.fast:
        os.environ["LECTURE_FAST"] = "1"
    # kernels inherit this: figures load plotly's front end from /voila/static/ (voila_app.figure_widget),
    # and every kernel reads and writes the same result cache
    try:
        os.environ.update(kernel_environment(cache_dir=args.cache_dir, cache_size=args.cache_size))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    # import after JUPYTER_PATH is set: jupyter_core reads it when voila collects its templates
    from .config import LectureVoila as Voila

    try:
        preheat = preheat_sizes(args.preheat)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    missing = [name for name in preheat if not os.path.isfile(os.path.join(args.notebooks, name))]
    if missing:
        sys.exit(f"error: --preheat names no notebook of {args.notebooks}: {', '.join(missing)}")
    config = build_config(ip=args.ip, port=args.port, pool_size=args.pool_size,
                          cull_idle_timeout=args.cull_idle_timeout, cull_interval=args.cull_interval,
                          open_browser=args.open, preheat=preheat, refill_delay=args.refill_delay,
                          pool_concurrency=args.pool_concurrency)
    host = "localhost" if args.ip in ("127.0.0.1", "localhost") else args.ip
    print(f"Lecture 5 explorables: serving {args.notebooks} at http://{host}:{args.port}/", flush=True)
    print(f"Result cache: {describe_cache()}", flush=True)
    Voila.launch_instance(argv=[args.notebooks], config=config)


if __name__ == "__main__":
    main()
