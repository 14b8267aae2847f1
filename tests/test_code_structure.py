"""The shape of the code: layers that never mix (the one layering test), and checks kept to the boundary.

Layers, bottom to top: the core (optimizers, models, losses, data, curvature, training), the topic
modules (one per lecture topic), ``lecture_lib.experiments``, the figure and widget layer
``lecture_lib.viz``, and the app ``voila_app``. A module imports from its own floor or below, never
from above; the science (everything in ``lecture_lib`` outside ``viz``) never imports plotly,
ipywidgets or other figure/widget packages (STYLE.md: layers that never mix).

Argument checks live at the boundary: statements that raise or call a check function are at most
10% of the function-body lines of ``lecture_lib`` (``scripts/check_ratio.py`` counts them).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import lecture_lib

ROOT = Path(lecture_lib.__file__).resolve().parent.parent
FORBIDDEN = ("plotly", "ipywidgets", "anywidget", "IPython", "matplotlib")
TOPICS = ("adaptive", "ics", "kronecker", "scale_invariance", "equilibrium", "mechanisms", "exercises", "teaching")
FLOORS = ("core", "topic modules", "experiments", "viz", "voila_app")
MAX_CHECK_RATIO = 0.10


def floor(module: str) -> int | None:
    """The layer of a module of this project (an index into :data:`FLOORS`); ``None`` for other packages."""
    parts = module.split(".")
    if parts[0] == "voila_app":
        return 4
    if parts[0] != "lecture_lib":
        return None
    if len(parts) > 1 and parts[1] == "viz":
        return 3
    if len(parts) > 1 and parts[1] == "experiments":
        return 2
    if len(parts) > 1 and parts[1] in TOPICS:
        return 1
    return 0


def science_modules() -> list[str]:
    """Every module of lecture_lib outside lecture_lib.viz, found on disk (new modules are covered automatically)."""
    names = ["lecture_lib"]
    for info in pkgutil.walk_packages(lecture_lib.__path__, prefix="lecture_lib."):
        if info.name == "lecture_lib.viz" or info.name.startswith("lecture_lib.viz."):
            continue
        names.append(info.name)
    return names


def source_files() -> dict[str, Path]:
    """Module name -> file, for every ``.py`` of ``lecture_lib`` and ``voila_app``."""
    files = {}
    for package in ("lecture_lib", "voila_app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import statement of a file, lazy imports inside functions included;
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return found


def test_science_modules_are_found():
    names = science_modules()
    for expected in ("lecture_lib.models", "lecture_lib.losses", "lecture_lib.record", "lecture_lib.data",
                     "lecture_lib.engine", "lecture_lib.optim", "lecture_lib.optim.base", "lecture_lib.device",
                     "lecture_lib.adaptive", "lecture_lib.ics", "lecture_lib.kronecker", "lecture_lib.curvature",
                     "lecture_lib.scale_invariance", "lecture_lib.equilibrium", "lecture_lib.mechanisms",
                     "lecture_lib.experiments", "lecture_lib.optim.kfac_transform", "lecture_lib.kfac_statistics"):
        assert expected in names
    assert not any(".viz" in n for n in names)


def test_importing_the_science_imports_no_figure_or_widget_package():
    """One interpreter imports every science module; none of plotly, ipywidgets, ... is loaded."""
    names = science_modules()
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"science modules imported the figure/widget layer: {leaked}"


def test_no_module_imports_up_a_floor():
    """Read, not run: every import (lazy ones too) of lecture_lib and voila_app goes to the same floor or below,
    and no science module names a figure/widget package."""
    files = source_files()
    known = set(files)
    assert {floor(m) for m in files} == set(range(len(FLOORS))), "every floor has modules"
    up, drawing = [], []
    for module, path in files.items():
        for imported, line in imports(module, path, known):
            where = f"{path.relative_to(ROOT)}:{line}"
            target = floor(imported)
            if target is not None and target > floor(module):
                up.append(f"{where}: {module} ({FLOORS[floor(module)]}) imports {imported} ({FLOORS[target]})")
            if floor(module) <= FLOORS.index("experiments") and imported.split(".")[0] in FORBIDDEN:
                drawing.append(f"{where}: {module} imports {imported}")
    assert up == [], "imports up a floor:\n" + "\n".join(up)
    assert drawing == [], "science modules import figure/widget packages:\n" + "\n".join(drawing)


def test_the_floor_check_sees_an_import_up_a_floor(tmp_path):
    """The reader resolves relative and lazy imports: a core module importing a panel is caught."""
    path = tmp_path / "models.py"
    path.write_text("from .optim import base\n\ndef f():\n    from .viz import panels\n    import plotly\n")
    found = imports("lecture_lib.models", path, {"lecture_lib.optim.base", "lecture_lib.viz.panels"})
    assert found == [("lecture_lib.optim.base", 1), ("lecture_lib.viz.panels", 4), ("plotly", 5)]
    assert [floor(m) for m, _ in found] == [0, 3, None]


# ============================================================================ checks at the boundary
def _check_ratio():
    spec = importlib.util.spec_from_file_location("check_ratio", ROOT / "scripts" / "check_ratio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_ratio_counts_checks_and_body_lines():
    source = '''
def f(x, y):
    """A docstring is not body."""
    check_positive("x", x)
    if y < 0:
        raise ValueError("y must be >= 0")   # the condition counts with its raise
    # a comment is not body

    z = x + y
    for _ in range(2):
        z = _check_shape(z)
    return z
'''
    assert _check_ratio().count(source) == (4, 7)


def test_argument_checks_are_at_most_a_tenth_of_the_function_bodies(capsys):
    result = _check_ratio().report()
    table = capsys.readouterr().out
    assert json.loads(table.strip().splitlines()[-1]) == result
    assert result["ratio"] <= MAX_CHECK_RATIO, f"checks are {result['ratio']:.1%} of function-body lines:\n{table}"
