"""The science layer never imports the figure/widget layer (STYLE.md: layers that never mix)."""
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import lecture_lib

ROOT = Path(lecture_lib.__file__).resolve().parent.parent
FORBIDDEN = ("plotly", "ipywidgets", "anywidget", "IPython", "matplotlib")


def core_modules() -> list[str]:
    """Every module of lecture_lib outside lecture_lib.viz, found on disk (new modules are covered automatically)."""
    names = ["lecture_lib"]
    for info in pkgutil.walk_packages(lecture_lib.__path__, prefix="lecture_lib."):
        if info.name == "lecture_lib.viz" or info.name.startswith("lecture_lib.viz."):
            continue
        names.append(info.name)
    return names


def test_core_modules_are_found():
    names = core_modules()
    for expected in ("lecture_lib.models", "lecture_lib.losses", "lecture_lib.record", "lecture_lib.data",
                     "lecture_lib.engine", "lecture_lib.optim", "lecture_lib.optim.base", "lecture_lib.device"):
        assert expected in names


def test_importing_the_core_does_not_import_plotting_or_widgets():
    names = core_modules()
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"core modules imported the figure/widget layer: {leaked}"
