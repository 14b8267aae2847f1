"""Every notebook in ``notebooks/`` executes headless, error-free, and is committed clean.

Kernels run this interpreter (the venv's, through the ``python3`` kernelspec)
with ``LECTURE_FAST=1`` (small step counts) and ``LECTURE_PANEL_RAISE=1`` (a
panel whose first computation fails raises instead of showing a message).
New notebooks are picked up automatically: the list is ``notebooks/*.ipynb``.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import FIXTURES_DIR, NOTEBOOKS_DIR, fast_env, notebook_paths

pytestmark = pytest.mark.notebook

NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.ipynb$")
CELL_TIMEOUT = 600


def execute(path: Path, kernel_name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=fast_env())        # passed on to the kernel manager: the kernel's environment
    return nb


def error_outputs(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr" and "Traceback" in out.get("text", ""):
                found.append(f"cell {i}: traceback on stderr:\n{out['text'][-1500:]}")
    return found


def test_there_are_notebooks():
    assert notebook_paths(), f"no notebooks in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_well_formed(path):
    assert NAME.match(path.name), f"{path.name}: notebooks are named NN_snake_case.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name", "python3") == "python3"
    first_markdown = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    assert first_markdown is not None and first_markdown.source.lstrip().startswith("# "), \
        f"{path.name}: the first markdown cell starts with '# Title' (the landing card reads it)"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_landing_card_has_title_and_question(path):
    from voila_app.landing import read_card

    card = read_card(path)
    assert card["title"] and card["question"], f"{path.name}: set metadata lecture.title/question or " \
                                               "start with '# Title' and an italic '*question?*' line"


@pytest.mark.parametrize("path", notebook_paths() + [FIXTURES_DIR / "panel_demo.ipynb"], ids=lambda p: p.stem)
def test_notebook_executes_without_errors(path, kernel_name):
    nb = execute(path, kernel_name)
    assert error_outputs(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    views = [o for c in code for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, f"{path.name} displays no widget: a dashboard needs at least one live panel"
