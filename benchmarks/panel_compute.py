"""How long each panel's computation takes: which panels are heavy enough to stream (issue 16, item 4).

Builds every panel of the notebooks (the calls in their code cells, e.g. ``panels.growth_panel()``) with the
result cache off (unless ``LECTURE_CACHE_DIR`` names one: a cache of the defaults only, from ``./lecture warm``,
builds the panels as a kernel whose notebook came from the cache does), and prints, per panel, the seconds its default computation took (the runner's own timing
of the one computation a panel makes when built); then moves the panel's first control one step (as a
slider release would, in the kernel, no browser) and prints the seconds to the final result and to the
first partial frame drawn, if the computation streams. Panels over ``--heavy`` seconds (0.3) must
stream. Last line: a JSON object.

Usage: ``python benchmarks/panel_compute.py [--full] [--only 04_implicit_lr_decay]``
(``--full``: classroom settings; default fast, ``LECTURE_FAST=1``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import emit  # noqa: E402

CALL = re.compile(r"^\s*((?:\w+\.)?\w+_panel\(.*\))\s*$")


def panel_cells(notebook: Path) -> tuple[list[str], list[str]]:
    """The notebook's import lines and its panel calls (``P.headline_panel("noisy")``)."""
    cells = [("".join(c["source"])) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    imports = [line for cell in cells for line in cell.splitlines() if line.startswith(("from ", "import "))]
    calls = [m.group(1) for cell in cells for line in cell.splitlines() if (m := CALL.match(line))]
    return imports, calls


def _moved(w):
    """Another value of control ``w``: one step of a slider (back if at its end), the next option, the other state."""
    import ipywidgets as widgets

    if isinstance(w, widgets.FloatLogSlider):
        up = w.value * w.base ** w.step
        return up if math.log(up, w.base) <= w.max + 1e-9 else w.value / w.base ** w.step
    if isinstance(w, (widgets.FloatSlider, widgets.IntSlider)):
        return w.value + w.step if w.value + w.step <= w.max else w.value - w.step
    if isinstance(w, widgets.Checkbox):
        return not w.value
    options = [o[1] if isinstance(o, tuple) else o for o in w.options]
    return options[(options.index(w.value) + 1) % len(options)]


def measure(notebook: Path) -> list[dict]:
    """Per panel of ``notebook``: its default computation when built, then one move of its first control:
    seconds to the first partial frame drawn (``first_partial_s``; ``first_reported_s``: the computation handed it
    over, to be built and drawn) and to the final result (``move_s``)."""
    imports, calls = panel_cells(notebook)
    scope: dict = {}
    exec("\n".join(imports), scope)
    rows = []
    for call in calls:
        start = time.monotonic()
        panel = eval(call, scope)
        built = time.monotonic() - start
        runner = getattr(panel, "runner", None)
        row = {"notebook": notebook.stem, "panel": call, "build_s": built,
               "compute_s": runner.durations[-1] if runner is not None and runner.durations else None,
               "move_s": None, "first_partial_s": None, "partials": 0, "streams": False}
        if runner is not None and panel.controls:
            name, w = next(iter(panel.controls.items()))
            partials, reported = [], []
            show = runner._on_partial                    # the panel's _show_partial: time each partial drawn
            runner._on_partial = lambda g, p: (reported.append(time.monotonic()), show(g, p),
                                               partials.append(time.monotonic()))
            start = time.monotonic()
            panel.set(**{name: _moved(w)})
            panel.wait(600)
            row.update(move_s=time.monotonic() - start, partials=len(partials), streams=bool(partials),
                       first_partial_s=(partials[0] - start) if partials else None, moved=name,
                       first_reported_s=(reported[0] - start) if reported else None)
        rows.append(row)
        shown = "-" if row["compute_s"] is None else f"{row['compute_s']:7.2f}"
        move = "" if row["move_s"] is None else f"move {row['move_s']:6.2f} s"
        first = ("" if not row["partials"] else
                 f"first partial {1000 * row['first_partial_s']:5.0f} ms (computed at "
                 f"{1000 * row['first_reported_s']:4.0f} ms, then built and drawn; {row['partials']} partials)")
        print(f"  {notebook.stem[:28]:<28s} {call:<40s} {shown:>7s} s  {move}  {first}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="classroom settings (default: LECTURE_FAST=1)")
    parser.add_argument("--only", action="append", default=[], help="notebook stem(s) to measure")
    parser.add_argument("--heavy", type=float, default=0.3, help="seconds above which a panel must stream")
    args = parser.parse_args()
    os.environ.setdefault("LECTURE_CACHE_DIR", "off")
    if args.full:
        os.environ.pop("LECTURE_FAST", None)
    else:
        os.environ["LECTURE_FAST"] = "1"
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in args.only)]
    print(f"panel compute times ({'--full' if args.full else 'fast'}, cache off); heavy > {args.heavy} s")
    rows = [row for nb in notebooks for row in measure(nb)]
    heavy = [r for r in rows if r["compute_s"] is not None and r["compute_s"] > args.heavy]
    print(f"heavy panels: {len(heavy)}; streaming: {sum(r['streams'] for r in heavy)}")
    for r in heavy:
        if not r["streams"]:
            print(f"  does not stream: {r['notebook']} {r['panel']} ({r['compute_s']:.2f} s)")
    emit({"settings": "full" if args.full else "fast", "heavy_s": args.heavy, "panels": rows})


if __name__ == "__main__":
    main()
