"""The project installs the same way everywhere: pyproject, environment.yml, README, CI agree."""
from __future__ import annotations

import os
import re
import subprocess

import yaml

from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement(line: str) -> str:
    return re.sub(r"\s+", "", line.split("#")[0]).lower()


def declared_requirements() -> set[str]:
    project = pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ("app", "test"):
        reqs += project["optional-dependencies"][extra]
    return {requirement(r) for r in reqs}


def conda_pip_lines() -> list[str]:
    """The ``pip:`` section of environment.yml, line by line."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def conda_pip_requirements() -> set[str]:
    return {requirement(r) for r in conda_pip_lines() if not r.startswith("-")}   # -e ., --extra-index-url are options


def test_conda_environment_takes_the_cpu_torch_wheel():
    # On Binder/conda, PyPI's torch==2.13.0 for Linux is a CUDA build of several GB; PyTorch's CPU index
    # offers 2.13.0+cpu, which ==2.13.0 matches and pip prefers (a local version sorts above the plain one).
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in conda_pip_lines()


def test_environment_yml_mirrors_pyproject():
    assert conda_pip_requirements() == declared_requirements()


def test_torch_is_pinned_exactly():
    # an unpinned torch pulls several GB of CUDA wheels
    assert "torch==2.13.0" in declared_requirements()


def test_readme_quick_start_commands_exist_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert "./lecture app" in readme and "./lecture test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\s*\./lecture test\b", ci, re.MULTILINE), ".ci/run must run the README's test command"
    assert "set -euo pipefail" in ci


def test_scripts_are_executable_bash():
    for script in (REPO / "lecture", REPO / ".ci" / "run"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_lecture_script_rejects_unknown_commands():
    result = subprocess.run([str(REPO / "lecture"), "frobnicate"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "unknown command" in result.stderr


def test_generated_files_are_ignored():
    ignored = (REPO / ".gitignore").read_text().split()
    assert "/test-artifacts/" in ignored and ".venv/" in ignored
