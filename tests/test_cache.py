"""The shared result cache (lecture_lib.cache): keys, misses, the bound, concurrent writers, the LRU in front,
and ``./lecture warm``.

Each test points ``LECTURE_CACHE_DIR`` at its own folder; conftest keeps the session's kernels on a
temporary one, never the user's ``~/.cache/lecture5``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from conftest import NOTEBOOKS_DIR, REPO
from lecture_lib import cache
from lecture_lib.viz import panels

CALLS: list[float] = []


@cache.cached
def square(x: float, scale: float = 1.0, progress=None) -> dict:
    """A stand-in experiment that counts its calls (results must survive a pickle round trip)."""
    CALLS.append(x)
    if progress is not None:
        progress(1.0)
    return {"x": x, "y": scale * x * x, "curve": np.full(4, x)}


@cache.cached
def slow_square(x: float, marker: str) -> float:
    """For the concurrent-writers test: records each computation in ``marker`` and takes a second."""
    with open(marker, "a") as f:
        f.write("computed\n")
    time.sleep(1.0)
    return x * x


@cache.cached
def name_of(function) -> str:
    CALLS.append(0.0)
    return function.__name__


@cache.cached
def big(i: int) -> np.ndarray:
    return np.full(5000, float(i))        # 40 kB


def entries(folder: Path) -> list[Path]:
    """The cache's entries (one folder per stored result)."""
    return sorted(p.parent for p in folder.rglob("output.pkl"))


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LECTURE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURE_CACHE_SIZE", raising=False)
    CALLS.clear()
    return tmp_path / "cache"


def test_same_arguments_hit_without_calling_again(folder):
    first = square(2.0)
    assert square(2.0)["y"] == square(x=2.0, scale=1.0)["y"] == first["y"] == 4.0   # defaults filled in: one key
    np.testing.assert_array_equal(square(2.0)["curve"], first["curve"])
    assert CALLS == [2.0] and len(entries(folder)) == 1


def test_different_arguments_or_library_miss(folder, monkeypatch):
    square(2.0)
    square(3.0)
    square(2.0, scale=2.0)
    assert CALLS == [2.0, 3.0, 2.0]
    monkeypatch.setattr(cache, "library_key", lambda: "0.0.0+edited")
    assert square(2.0)["y"] == 4.0 and CALLS == [2.0, 3.0, 2.0, 2.0]
    assert len(entries(folder)) == 4


def test_library_key_follows_the_science_source_not_the_figures(tmp_path, monkeypatch):
    (tmp_path / "viz").mkdir()
    (tmp_path / "optim.py").write_text("LR = 0.1\n")
    (tmp_path / "viz" / "figures.py").write_text("COLOR = 'red'\n")
    monkeypatch.setattr(cache, "PACKAGE_DIR", tmp_path)
    key = cache.library_key.__wrapped__
    before = key()
    assert before.startswith(cache.__version__ + "+")
    (tmp_path / "viz" / "figures.py").write_text("COLOR = 'blue'\n")
    assert key() == before
    (tmp_path / "optim.py").write_text("LR = 0.2\n")
    assert key() != before


def test_progress_is_not_part_of_the_key_and_reports_only_when_computing(folder):
    reports = []
    square(2.0, progress=reports.append)
    square(2.0, progress=reports.append)
    square(2.0)
    assert CALLS == [2.0] and reports == [1.0]


def test_off_and_unhashable_arguments_compute_every_time(folder, monkeypatch):
    def step():                          # a function is keyed by its name only: never cached
        pass

    assert [name_of(step), name_of(step), name_of(lambda: None)] == ["step", "step", "<lambda>"]
    assert len(CALLS) == 3 and entries(folder) == []
    monkeypatch.setenv("LECTURE_CACHE_DIR", "off")
    square(2.0)
    square(2.0)
    assert CALLS[3:] == [2.0, 2.0] and entries(folder) == []


def test_an_unwritable_folder_never_breaks_a_computation(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LECTURE_CACHE_DIR", str(blocker / "cache"))
    CALLS.clear()
    assert square(3.0)["y"] == 9.0 and CALLS == [3.0]


def test_eviction_keeps_the_cache_within_its_bound(folder, monkeypatch):
    monkeypatch.setenv("LECTURE_CACHE_SIZE", "150K")
    for i in range(10):
        big(i)
        time.sleep(0.02)                  # distinct access times: the least recently used goes first
    sizes = sum(f.stat().st_size for e in entries(folder) for f in e.iterdir())
    assert 0 < sizes <= cache.size_limit() and 1 < len(entries(folder)) < 10
    assert big(9)[0] == 9.0


def test_bad_size_has_a_clear_message(monkeypatch):
    monkeypatch.setenv("LECTURE_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match="LECTURE_CACHE_SIZE must be a size such as 500M"):
        cache.size_limit()


def test_two_processes_computing_the_same_key_both_succeed_with_one_entry(folder, tmp_path):
    marker = tmp_path / "computations"
    code = (f"import os, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_cache; "
            f"os.environ['LECTURE_CACHE_DIR'] = {str(folder)!r}; "     # importing conftest chose its own
            f"print(test_cache.slow_square(3.0, {str(marker)!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["9.0", "9.0"]
    assert all("Traceback" not in err and "Warning" not in err for _, err in outs), [err for _, err in outs]
    assert marker.read_text().count("computed") == 2        # they did race: both computed
    assert len(entries(folder)) == 1
    assert slow_square(3.0, str(marker)) == 9.0 and marker.read_text().count("computed") == 2


def test_the_panels_lru_stays_in_front_of_the_disk(folder):
    def build(result):
        return go.Figure(go.Scatter(y=result["curve"], name="curve"))

    reached = []

    def compute(x):                      # every call that gets past the panel's in-memory LRU
        reached.append(x)
        return square(x)

    panel = panels.LivePanel(compute=compute, controls={"x": panels.slider("x", 0.0, 4.0, 1.0, step=0.5)},
                             build=build)
    panel.set(x=2.0)
    assert panel.wait(10)
    panel.set(x=1.0)                     # back to a value already computed: the LRU answers, no disk
    assert panel.wait(10) and reached == [1.0, 2.0] and CALLS == [1.0, 2.0]
    assert list(panel.figure.data[0].y) == [1.0] * 4
    # another kernel (a fresh panel, an empty LRU) reads the first one's results from disk
    second = panels.LivePanel(compute=compute, controls={"x": panels.slider("x", 0.0, 4.0, 1.0, step=0.5)},
                              build=build)
    assert reached == [1.0, 2.0, 1.0] and CALLS == [1.0, 2.0]
    assert list(second.figure.data[0].y) == [1.0] * 4


def test_warm_fills_the_cache_from_a_notebook(tmp_path, kernel_name):
    folder = tmp_path / "warm"
    notebook = NOTEBOOKS_DIR / "03_kronecker_spectra.ipynb"
    result = subprocess.run([sys.executable, "-m", "voila_app.warm", "--fast", "--cache-dir", str(folder),
                             str(notebook)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"[1/1] {notebook.name}: done" in result.stderr
    functions = {json.loads((e / "metadata.json").read_text())["input_args"]["function"] for e in entries(folder)}
    assert {"'lecture_lib.experiments.kronecker.spectrum_family'",
            "'lecture_lib.experiments.kronecker.kfac_checkpoint'"} <= functions


def test_lecture_script_lists_warm():
    help_text = subprocess.run([str(REPO / "lecture"), "help"], capture_output=True, text=True, timeout=30).stdout
    assert "./lecture warm" in help_text and "--cache-dir" in help_text


def test_deployments_share_one_cache_folder(monkeypatch, tmp_path):
    import yaml
    from traitlets.config import Config

    values = yaml.safe_load((REPO / "deploy" / "z2jh" / "config.yaml").read_text())["singleuser"]
    claim = yaml.safe_load((REPO / "deploy" / "z2jh" / "cache-volume.yaml").read_text())
    mounts = {m["name"]: m["mountPath"] for m in values["storage"]["extraVolumeMounts"]}
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in values["storage"]["extraVolumes"]}
    assert values["extraEnv"]["LECTURE_CACHE_DIR"] in mounts.values()           # every pod: one mounted folder
    assert claim["metadata"]["name"] in volumes.values() and "ReadWriteMany" in claim["spec"]["accessModes"]
    cache.size_limit(values["extraEnv"])                                        # a size the app accepts

    monkeypatch.setenv("LECTURE_CACHE_DIR", str(tmp_path / "shared"))
    hub_config = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
    hub = {"c": Config(), "__file__": str(hub_config)}
    exec(hub_config.read_text(), hub)
    assert hub["c"].Spawner.environment["LECTURE_CACHE_DIR"] == str(tmp_path / "shared")


def test_the_app_hands_every_kernel_one_absolute_cache_folder(tmp_path, monkeypatch):
    from voila_app import config
    from voila_app.__main__ import parse_args

    monkeypatch.chdir(tmp_path)
    args = parse_args(["--cache-dir", "shared", "--cache-size", "1G"])
    env = config.kernel_environment({}, cache_dir=args.cache_dir, cache_size=args.cache_size)
    assert env["LECTURE_CACHE_DIR"] == str(tmp_path / "shared") and env["LECTURE_CACHE_SIZE"] == "1G"
    assert config.kernel_environment({"LECTURE_CACHE_DIR": "OFF"})["LECTURE_CACHE_DIR"] == "off"
    assert "off" in config.describe_cache({"LECTURE_CACHE_DIR": "off"})
    with pytest.raises(ValueError, match="LECTURE_CACHE_SIZE"):
        config.kernel_environment({}, cache_size="big")


def test_recent_keeps_the_last_results_in_memory_keyed_without_progress():
    """cache.recent: a panel's fresh progress callback does not make every call a miss (functools.lru_cache's
    would), a hit computes and reports nothing, lists key as tuples, the oldest result goes beyond maxsize."""
    calls, reports = [], []

    @cache.recent(2)
    def run(a, sizes=(1, 2), progress=None):
        calls.append((a, sizes))
        if progress is not None:
            progress(1.0)
        return object()

    first = run(1, progress=reports.append)
    assert run(1, sizes=[1, 2], progress=reports.append) is first and run(a=1) is first
    assert calls == [(1, (1, 2))] and reports == [1.0]          # one computation, one report
    run(2)
    run(3)                                                      # 1 is now the oldest beyond 2 results: dropped
    assert run(1) is not first and len(calls) == 4 and len(run.results) == 2
    run.results.clear()
    run(3)
    assert len(calls) == 5
