r"""Tools for TAs: exercise cells with nbgrader markup, and student versions of the notebooks.

The instructor notebooks in ``notebooks/`` are the source of truth. An exercise is three
cells (see CONTRIBUTING.md), made by :func:`exercise_cells`:

* a markdown prompt;
* a solution cell whose answer sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``,
  with nbgrader metadata (``solution: true``);
* a check cell calling :func:`lecture_lib.exercises.check`, locked and graded in nbgrader's
  metadata.

:func:`make_student_versions` writes every notebook with each solution region replaced by
``raise NotImplementedError()`` (at the region's indentation) and outputs cleared: the same
transformation as nbgrader's ``ClearSolutions``, and the metadata nbgrader reads is kept, so
``nbgrader generate_assignment`` can consume the instructor notebooks directly. We do not
install nbgrader itself alongside the app: its JupyterLab extensions raise JavaScript errors
inside Voila dashboards.

Command line::

    python -m lecture_lib.teaching student-versions [--src notebooks] [--out student]

Standard library only (notebooks are JSON).
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"
EXERCISE_TAG = "exercise"
_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.M | re.S)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def clear_solutions(source: str) -> str:
    """Replace every solution region of a code cell by a stub at the region's indentation."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers ({source.count(BEGIN)} BEGIN, {source.count(END)} END) in:\n{source}")
    return _REGION.sub(lambda m: f"{m.group(1)}{STUB}{m.group(2)}", source)


def student_notebook(nb: dict) -> dict:
    """The student version of a notebook (a JSON dict): solutions stubbed, outputs cleared."""
    out = copy.deepcopy(nb)
    for cell in out.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        cell["source"] = clear_solutions(_source(cell))
        cell["outputs"], cell["execution_count"] = [], None
    return out


def make_student_versions(src: str | Path = "notebooks", out: str | Path = "student") -> list[Path]:
    """Write the student version of every ``*.ipynb`` in ``src`` into ``out``; return the paths written."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"src must be a folder of notebooks, got {str(src)!r}")
    if src.resolve() == out.resolve():
        raise ValueError("out must differ from src: the instructor notebooks are the source of truth")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        target = out / path.name
        target.write_text(json.dumps(student_notebook(nb), indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def exercise_cells(key: str, prompt: str, solution: str, check: str | None = None, points: int = 1) -> list[dict]:
    """The three cells of an exercise, with nbgrader metadata.

    ``key`` is the checker's name in :data:`lecture_lib.exercises.EXERCISES` (``"05.equilibrium_ratio"``);
    ``solution`` must contain a ``### BEGIN SOLUTION`` / ``### END SOLUTION`` region; ``check``
    defaults to calling the checker on the function the solution defines.
    """
    if BEGIN not in solution or END not in solution:
        raise ValueError("solution must contain a '### BEGIN SOLUTION' ... '### END SOLUTION' region")
    grade_id = key.replace(".", "_")
    if check is None:
        fn = re.search(r"^def (\w+)", solution, re.M)
        if not fn:
            raise ValueError("solution must define a function (def name(...)) for the default check")
        check = f'from lecture_lib.exercises import check\ncheck("{key}", {fn.group(1)})'

    def meta(**nbgrader):
        return {"tags": [EXERCISE_TAG], "nbgrader": {"schema_version": 3, "grade_id": grade_id + nbgrader.pop("suffix"),
                                                     **nbgrader}}

    return [
        {"cell_type": "markdown", "id": f"{grade_id}-prompt", "source": prompt,
         "metadata": meta(suffix="_prompt", solution=False, grade=False, locked=True)},
        {"cell_type": "code", "id": f"{grade_id}-solution", "source": solution, "outputs": [], "execution_count": None,
         "metadata": meta(suffix="", solution=True, grade=False, locked=False)},
        {"cell_type": "code", "id": f"{grade_id}-check", "source": check, "outputs": [], "execution_count": None,
         "metadata": meta(suffix="_check", solution=False, grade=True, locked=True, points=points)},
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecture_lib.teaching", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sv = sub.add_parser("student-versions", help="write student versions of the notebooks (solutions stubbed)")
    sv.add_argument("--src", default="notebooks")
    sv.add_argument("--out", default="student")
    args = parser.parse_args(argv)
    try:
        paths = make_student_versions(args.src, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
