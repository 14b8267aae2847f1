"""``./lecture export``: the explorables as a static site, real training runs precomputed, no server.

    python -m voila_app.export [--out site/] [--fast] [--jobs 2] [--app-url URL] [NOTEBOOK ...]

Each notebook runs headless (nbclient, the ``python3`` kernel, the shared result cache on), then
:func:`voila_app.static_site.capture.capture` runs in the same kernel: every panel is computed over the
grid of the controls :data:`PLAN` names (a ScrubPanel's scrub positions come as one batched family), and
its figures' data are written compactly (float32, thinned to the pixels they occupy, each distinct array
once). Then each page is written: the notebook's prose with its math typeset as MathML, code hidden as
in the app, each panel a figure with one range input per precomputed control
(``static_site/assets/scrub.js``), and a note naming the controls left at their defaults with a link to
the panel in the live app. plotly.js is copied once into ``assets/`` (its cartesian partial bundle where
that draws every trace the pages use); every link is relative: the folder
works from ``file://`` (double-click ``index.html``) and from any static host.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from .config import NOTEBOOKS_DIR, REPO_DIR, describe_cache
from .landing import read_card
from .plotly_partial import PARTIAL_TRACE_TYPES, PLOTLY_PARTIAL, partial_matches
from .warm import CELL_TIMEOUT, warm_environment

STATIC_DIR = Path(__file__).with_name("static_site")

# Which controls each panel precomputes beyond its scrub positions: notebook stem -> {panel number: [control]};
# "control:n" takes at most n values (each value of a plain control is a training run of its own: the cold build).
# A panel not listed gets its first control (a ScrubPanel only its scrub); [] means the default figure only.
# Chosen for what each panel teaches: the control its caption asks the reader to move.
PLAN: dict[str, dict[str, list[str]]] = {
    "01_adaptive_methods": {"3": ["weight_decay"]},
    "04_implicit_lr_decay": {"2": ["lr"]},
    # 2: the equilibrium point needs both: λ is the family (scrubbed), α the second dimension
    "05_weight_decay_equilibrium": {"1": ["weight_decay"], "2": ["lr:5"], "5": ["batch_size"]},
    # 3 (architectures): the default figure only (its grid would cost minutes of a cold build)
    "06_three_mechanisms": {"1": ["decay_per_step:5"], "3": [], "4": ["damping"]},
}
# values per precomputed control (the default value always among them)
POINTS = {"fast": 3, "full": 7}


def grid_code(out_dir: Path, plan: dict, points: int) -> str:
    return ("from voila_app.static_site.capture import capture as _capture\n"
            f"_capture({str(out_dir)!r}, {plan!r}, {points!r})\n")


def run_notebook(path: Path, data_dir: Path, env: dict, points: int, on_cell):
    """Execute ``path`` and capture its panels into ``data_dir``; the executed notebook, capture cell removed."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(grid_code(data_dir, PLAN.get(path.stem, {}), points)))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_executed=lambda cell, cell_index, execute_reply: on_cell())
    client.execute(env=env)
    nb.cells.pop()
    return nb


class Progress:
    """One line on stderr: notebooks done, cells run, grid points computed, elapsed time."""

    def __init__(self, names: list[str], stream=sys.stderr):
        self.names, self.stream, self.start = names, stream, time.monotonic()
        self.cells = {n: [0, 0] for n in names}       # run, total
        self.grid_dirs: dict[str, Path] = {}
        self.done: set[str] = set()
        self._lock, self._last = threading.Lock(), 0.0
        self.tty = stream.isatty()

    def draw(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < (0.2 if self.tty else 15):
                return
            self._last = now
            frac, parts = 0.0, []
            for n in self.names:
                run, total = self.cells[n]
                f = 0.3 * run / max(total, 1)
                grid = self._grid(n)
                if grid:
                    f = 0.3 + 0.7 * grid[0] / max(grid[1], 1)
                    if n not in self.done:
                        parts.append(f"{n[:2]} {grid[0]}/{grid[1]}")
                elif run and n not in self.done:
                    parts.append(f"{n[:2]} cell {run}/{total}")
                frac += 1.0 if n in self.done else f
            frac /= max(len(self.names), 1)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            line = (f"export [{bar}] {100 * frac:3.0f}%  {len(self.done)}/{len(self.names)} notebooks"
                    f"  {' · '.join(parts)}  {int(now - self.start) // 60}:{int(now - self.start) % 60:02d}")
            self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
            self.stream.flush()

    def _grid(self, name):
        d = self.grid_dirs.get(name)
        try:
            p = json.loads((d / "progress.json").read_text()) if d else None
        except (OSError, ValueError):
            return None
        return (p["done"], p["total"]) if p else None


def device_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores; OMP_NUM_THREADS=1 per kernel), PyTorch {_torch_version()}"


def _torch_version() -> str:
    try:
        from importlib.metadata import version
        return version("torch")
    except Exception:  # noqa: BLE001
        return "?"


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_DIR,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance_html(fast: bool, command: str) -> str:
    import html

    import lecture_lib
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = "fast (LECTURE_FAST=1: small models, few steps; for CI)" if fast else "full (classroom settings)"
    return (f"<div class='static-provenance'>Precomputed {when} at <b>{settings}</b> by lecture_lib "
            f"{html.escape(lecture_lib.__version__)} (commit {html.escape(_git_commit())}) on "
            f"{html.escape(device_description())}. Rebuild: <code>{html.escape(command)}</code>.</div>")


def plotly_bundle(trace_types: set[str]) -> Path:
    """The plotly.js a site needs: the partial bundle when it draws every trace type the pages use, else plotly's full one."""
    import plotly
    if trace_types <= PARTIAL_TRACE_TYPES and partial_matches():
        return PLOTLY_PARTIAL
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def trace_types(spec: dict) -> set[str]:
    return {trace.get("type", "scatter") for fig in spec["figures"] for trace in fig.get("data", [])}


def copy_assets(out: Path) -> None:
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("page.js", "page.css"):
        shutil.copyfile(STATIC_DIR / "assets" / name, assets / name)
    (assets / "scrub.js").write_text(classic_scrub_script())


def classic_scrub_script() -> str:
    """The app's scrub mechanism (lecture_lib/viz/scrub.js, an ES module) as a classic script defining
    ``window.LectureScrub``: a page opened from file:// may not load modules (Chromium refuses them there)."""
    from lecture_lib.viz import scrub
    source = scrub.SCRUB_JS.read_text()
    names = re.findall(r"^export function (\w+)", source, flags=re.M)
    body = re.sub(r"^export ", "", source, flags=re.M)
    return (f"(function () {{\n{body}\nwindow.LectureScrub = {{ {', '.join(names)} }};\n}})();\n")


def page_name(path: Path) -> str:
    return path.stem + ".html"


def export(out: Path, fast: bool, notebooks: list[Path], jobs: int = 2, app_url: str = "http://localhost:8866/",
           cache_dir: str | None = None, command: str = "./lecture export") -> dict:
    """Build the site in ``out``; returns a summary (pages, sizes in bytes, seconds, per-panel timings)."""
    from .static_site import page

    start = time.monotonic()
    env = warm_environment(fast, cache_dir)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    points = POINTS["fast" if fast else "full"]
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    progress = Progress([p.stem for p in notebooks])
    provenance = provenance_html(fast, command)
    summary = {"pages": {}, "panel_seconds": {}}
    used_types: set[str] = set()
    print(f"export: {len(notebooks)} notebook(s) at {'fast' if fast else 'full'} settings into {out}, "
          f"result cache {describe_cache(env)}", file=sys.stderr, flush=True)

    def one(path: Path) -> None:
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="lecture-export-") as tmp:
            data_dir = Path(tmp)
            progress.grid_dirs[path.stem] = data_dir
            progress.cells[path.stem][1] = len(json.loads(path.read_text(encoding="utf-8"))["cells"]) + 1

            def on_cell():
                progress.cells[path.stem][0] += 1
                progress.draw()

            nb = run_notebook(path, data_dir, env, points, on_cell)
            specs = {}
            for f in data_dir.glob("*.json"):
                if f.name != "progress.json":
                    specs[f.stem] = json.loads(f.read_text())
            progress.done.add(path.stem)
            progress.draw(force=True)

        def live_href(spec):
            return f"{app_url.rstrip('/')}/voila/render/{quote(path.name)}#panel-{spec['number']}"

        data_dir_out = out / path.stem
        data_dir_out.mkdir(exist_ok=True)
        for spec in specs.values():
            (data_dir_out / f"panel-{spec['number']}.js").write_text(page.data_script(spec), encoding="utf-8")

        def data_src(spec):
            return f"{quote(path.stem)}/panel-{spec['number']}.js"

        card = read_card(path)
        body = page.notebook_body(nb, specs, live_href, data_src)
        html_text = page.document(f"{card['number']} · {card['title']}", body, provenance, scripts=True)
        target = out / page_name(path)
        target.write_text(html_text, encoding="utf-8")
        summary["pages"][target.name] = target.stat().st_size + sum(f.stat().st_size for f in data_dir_out.iterdir())
        summary["panel_seconds"][path.stem] = {s["number"]: s["seconds"] for s in specs.values()}
        used_types.update(*(trace_types(s) for s in specs.values()))
        summary.setdefault("notebook_seconds", {})[path.stem] = round(time.monotonic() - began, 1)
        summary.setdefault("panels", {})[path.stem] = {
            s["number"]: {"title": s["title"], "grid": [f"{d['name']}:{len(d['labels'])}" for d in s["dims"]],
                          "fixed": [c["name"] for c in s["fixed"]]} for s in specs.values()}

    # longest first (the last build's times, else the later notebooks, which train more): two kernels finish together
    try:
        before = json.loads((out / "build.json").read_text())["notebook_seconds"]
    except (OSError, ValueError, KeyError):
        before = {}
    order = sorted(notebooks, key=lambda p: (before.get(p.stem, 0.0), p.name), reverse=True)
    ticker_stop = threading.Event()

    def ticker():
        while not ticker_stop.wait(1.0):
            progress.draw()

    threading.Thread(target=ticker, daemon=True).start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for future in [pool.submit(one, p) for p in order]:
                future.result()
    finally:
        ticker_stop.set()
    if progress.tty:
        sys.stderr.write("\n")
    cards = []
    for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if len(notebooks) > 1 else notebooks:
        if (out / page_name(p)).exists():
            card = read_card(p)
            card["href"] = page_name(p)
            cards.append(card)
    (out / "index.html").write_text(page.landing(cards, provenance), encoding="utf-8")
    bundle = plotly_bundle(used_types)
    shutil.copyfile(bundle, out / "assets" / "plotly.min.js")
    summary["plotly_bundle"] = bundle.name
    if page.unconverted:
        print(f"export: {len(page.unconverted)} LaTeX fragment(s) shown as source: {page.unconverted[:5]}",
              file=sys.stderr)
    files = [f for f in out.rglob("*") if f.is_file()]
    summary.update(total_bytes=sum(f.stat().st_size for f in files), files=len(files),
                   seconds=round(time.monotonic() - start, 1), fast=fast, unconverted_math=len(page.unconverted))
    (out / "build.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lecture export", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to export (default: all in notebooks/)")
    parser.add_argument("--out", type=Path, default=Path("site"), help="output folder (default: site/)")
    parser.add_argument("--fast", action="store_true", help="small settings (CI): LECTURE_FAST=1 in every kernel")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks computed at once (default 2)")
    parser.add_argument("--app-url", default="http://localhost:8866/",
                        help="where the live app runs, for the 'panel N in the live app' links")
    parser.add_argument("--cache-dir", default=None, help="the result cache folder, or off (default: the app's)")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    command = "./lecture export" + (f" --out {args.out}" if str(args.out) != "site" else "") + \
        (" --fast" if args.fast else "")
    summary = export(args.out.resolve(), args.fast, notebooks, args.jobs, args.app_url, args.cache_dir, command)
    print(f"export: wrote {len(summary['pages'])} page(s) + index.html into {args.out}: "
          f"{summary['total_bytes'] / 1e6:.1f} MB in {summary['files']} files, {summary['seconds']:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
