"""Shared fixtures: the notebook list, the venv's kernel, a Voila server, a headless Chromium.

Nothing here skips: a missing browser or kernel is a failure with a message
saying how to get it, because a suite that skips its browser tests proves nothing
about the app.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = REPO / "test-artifacts"
if str(REPO) not in sys.path:      # voila_app/ is run from the checkout, not installed
    sys.path.insert(0, str(REPO))
KERNEL_NAME = "python3"

# The result cache (lecture_lib.cache): one fresh folder for the whole session, inherited by every
# kernel, Voila app and hub the tests start; never the user's own ~/.cache/lecture5.
SESSION_CACHE = tempfile.mkdtemp(prefix="lecture-test-cache-")
os.environ["LECTURE_CACHE_DIR"] = SESSION_CACHE
os.environ.pop("LECTURE_CACHE_SIZE", None)
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)

from browser_helpers import CHROMIUM, RestartingBrowser  # noqa: E402
from voila_app.server import fast_env, running_app  # noqa: E402  (needs REPO on sys.path)


def notebook_paths() -> list[Path]:
    """Every notebook the project ships: ``notebooks/*.ipynb``, sorted (new ones are picked up automatically)."""
    return sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if not p.name.startswith("."))


@pytest.fixture(scope="session")
def kernel_name() -> str:
    """The ``python3`` kernelspec, made to run this interpreter (the venv's) if it does not already."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def runs_this_python() -> bool:
        try:
            argv0 = KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
        except NoSuchKernel:
            return False
        # jupyter_client replaces a bare "python" by sys.executable when it launches the kernel
        return argv0 in {"python", "python3"} or Path(argv0).resolve() == Path(sys.executable).resolve()

    if not runs_this_python():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME],
                       check=True, capture_output=True)
    assert runs_this_python(), (f"kernelspec {KERNEL_NAME!r} does not run {sys.executable}; "
                                f"run `{sys.executable} -m ipykernel install --sys-prefix --name python3`")
    return KERNEL_NAME


@contextlib.contextmanager
def running_voila(notebooks: Path, log_name: str, **kwargs):
    with running_app(notebooks, ARTIFACTS / f"{log_name}.log", **kwargs) as app:
        yield app


@pytest.fixture(scope="session")
def voila_app(kernel_name):
    """The app as students get it (``notebooks/``), pre-heated, LECTURE_FAST=1."""
    with running_voila(NOTEBOOKS_DIR, log_name="voila-notebooks") as server:
        yield server


@pytest.fixture(scope="session")
def voila_fixture_app(kernel_name):
    """The app serving ``tests/fixtures/`` (a tiny panel notebook that exercises the panel contract)."""
    with running_voila(FIXTURES_DIR, log_name="voila-fixtures") as server:
        yield server


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium driven by Playwright (no browser download ever)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `sudo apt-get install chromium` "
                    "(or point LECTURE_CHROMIUM at a Chromium binary). The browser tests never skip.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = RestartingBrowser(p)
        yield browser
        if browser.browser.is_connected():
            browser.browser.close()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# ---------------------------------------------------------------------------- science fixtures shared by test modules
# (torch and lecture_lib are imported inside the fixtures: the browser and app tests never need them)

@pytest.fixture
def gen():
    """A CPU random generator seeded with 0: a test draws the same numbers whatever ran before it."""
    import torch

    return torch.Generator().manual_seed(0)


@pytest.fixture
def float64():
    """float64 as torch's default dtype for one test (identities checked to ~1e-12), restored afterwards.
    A module uses it for all its tests with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as :func:`lecture_lib.data.digits` gives them by default (float32, seed 0).
    Shared by the session: tests must not modify it (``Dataset.to`` returns a copy)."""
    from lecture_lib import data

    return data.digits()


@pytest.fixture(scope="session")
def digits64():
    """The digits in float64 (built in float64, not cast from float32). Shared: do not modify."""
    import torch

    from lecture_lib import data

    return data.digits(dtype=torch.float64)


@pytest.fixture
def page(monkeypatch):
    """A fresh page for each test (panels number from 1), outside Voila unless a test says otherwise."""
    from lecture_lib.viz import url_state
    for name in ("VOILA_PREHEAT", "VOILA_KERNEL_ID", "QUERY_STRING"):
        monkeypatch.delenv(name, raising=False)
    fresh = url_state.PageState()
    monkeypatch.setattr(url_state, "PAGE", fresh)
    return fresh
