"""Fill the result cache before class: ``python -m voila_app.warm [--fast] [--cache-dir DIR] [NOTEBOOK ...]``.

Executes every notebook headless (nbclient, the ``python3`` kernel), with the result cache on, at
classroom settings unless ``--fast``: each panel's default computation, and every experiment a
notebook calls directly, lands in :mod:`lecture_lib.cache`'s folder, so that a kernel warming up
(a pre-heated Voila kernel, a student's JupyterLab) later reads them from disk in a few seconds.
One line per notebook on stderr; the exit status is 1 if any notebook failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import NOTEBOOKS_DIR, describe_cache, kernel_environment

CELL_TIMEOUT = 1800       # a classroom-settings cell on a cold cache may train for minutes


def execute(path: Path, env: dict, kernel_name: str = "python3") -> None:
    """Run every cell of ``path`` in a fresh kernel with environment ``env``; a failing cell raises."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)


def warm_environment(fast: bool, cache_dir: str | None = None, cache_size: str | None = None) -> dict:
    """The kernels' environment: the app's (:func:`kernel_environment`), the cache on, panels strict."""
    env = kernel_environment(cache_dir=cache_dir, cache_size=cache_size)
    env.pop("LECTURE_FIGURE_WIDGET", None)      # no page here: plain plotly figures
    env.update(LECTURE_PANEL_RAISE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    if fast:
        env["LECTURE_FAST"] = "1"
    else:
        env.pop("LECTURE_FAST", None)
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./lecture warm", description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path,
                   help=f"notebooks to execute (default: every notebook in {NOTEBOOKS_DIR})")
    p.add_argument("--fast", action="store_true", help="LECTURE_FAST=1: the small settings of CI and --fast apps")
    p.add_argument("--cache-dir", default=None, help="the cache folder (default: $LECTURE_CACHE_DIR, else ~/.cache/lecture5)")
    p.add_argument("--cache-size", default=None, help="its bound, e.g. 500M (default: $LECTURE_CACHE_SIZE, else 500M)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = args.notebooks or sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if not p.name.startswith("."))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"error: no such notebook: {', '.join(missing)}")
    try:
        env = warm_environment(args.fast, args.cache_dir, args.cache_size)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if env["LECTURE_CACHE_DIR"] == "off":
        sys.exit("error: the result cache is off (LECTURE_CACHE_DIR=off): there is nothing to warm")
    settings = "fast settings" if args.fast else "classroom settings"
    print(f"warm: {len(paths)} notebook(s) at {settings} into {describe_cache(env)}", file=sys.stderr, flush=True)
    failed = []
    for i, path in enumerate(paths, 1):
        start = time.monotonic()
        try:
            execute(path.resolve(), env)
        except Exception as exc:  # noqa: BLE001 - one broken notebook must not stop the others
            failed.append(path.name)
            line = f"FAILED ({type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''})"
        else:
            line = "done"
        print(f"warm: [{i}/{len(paths)}] {path.name}: {line} in {time.monotonic() - start:.1f} s",
              file=sys.stderr, flush=True)
    if failed:
        print(f"warm: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
