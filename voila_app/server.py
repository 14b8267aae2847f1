"""Run the app in a subprocess on a free loopback port: for tests and benchmarks.

    with running_app(notebooks_dir, log_path=Path("voila.log")) as app:
        print(app.url)          # http://127.0.0.1:<port>

:func:`wait_until_answers` is the one start-and-wait-until-ready loop of every server the tests
start: this app, JupyterLab / Notebook 7 (``tests/test_frontends.py``) and the trial JupyterHub
(``deploy/jupyterhub/localhub.py``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .config import REPO_DIR


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_env(**extra: str) -> dict:
    """Environment for kernels under test: fast settings, strict panels, one BLAS thread each."""
    env = dict(os.environ)
    env.update(LECTURE_FAST="1", LECTURE_PANEL_RAISE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.update(extra)
    return env


def wait_until_answers(proc: subprocess.Popen, url: str, what: str, log, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers HTTP 200; fail with ``log()`` (the server's log tail) if ``proc``
    exits first or ``timeout`` seconds pass. ``what`` names the server in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; log:\n{log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout} s; log:\n{log()}")


class AppProcess:
    """``python -m voila_app`` serving one folder on a free 127.0.0.1 port (``--fast`` unless ``fast=False``)."""

    def __init__(self, notebooks: Path, log_path: Path, pool_size: int = 1, env: dict | None = None,
                 fast: bool = True, extra_args: tuple[str, ...] = ()):
        self.notebooks = Path(notebooks)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "voila_app", "--port", str(self.port), "--notebooks", str(notebooks),
               "--pool-size", str(pool_size)] + (["--fast"] if fast else []) + list(extra_args)
        if env is None:
            env = fast_env() if fast else {k: v for k, v in os.environ.items() if k != "LECTURE_FAST"}
        self._log = open(self.log_path, "w")
        # a session of its own, so that stop() ends Voila and the kernels it started, and nothing else
        self.proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until_answers(self.proc, self.url + "/", "Voila", self.log, timeout)

    def wait_preheated(self, names: list[str], timeout: float = 300.0) -> bool:
        """Wait until Voila reports a filled kernel pool for every notebook in ``names``.

        Voila logs this once the pool's kernels have *started*; they may still be executing
        their notebook, and a page opened now waits for that.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log(tail=None)
            if all(f"Kernel pool of {name} is filled" in text for name in names):
                return True
            time.sleep(0.5)
        return False

    def log(self, tail: int | None = 4000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@contextlib.contextmanager
def running_app(notebooks: Path, log_path: Path, **kwargs):
    app = AppProcess(notebooks, log_path, **kwargs)
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()
