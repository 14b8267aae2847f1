"""A trial JupyterHub on this machine's loopback: for the tests, the benchmark, and a quick look.

    .venv/bin/python deploy/jupyterhub/localhub.py [--port 8000] [--fast] [--proxy-command PATH]

starts ``jupyterhub -f deploy/jupyterhub/jupyterhub_config.py`` in trial mode (one shared
password, printed; every user's server runs as you), its state in a temporary folder, and
stops it, with every user's server and kernel, on Ctrl-C. In Python::

    with running_hub(log_path) as hub:
        session = hub.login("alice")          # a requests.Session holding alice's hub cookies
        landing = hub.open_server(session, "alice")   # GET /user/alice/lecture/
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "jupyterhub_config.py"
REPO = HERE.parent.parent
BIN = Path(sys.executable).parent
if str(REPO) not in sys.path:       # run as a script: voila_app is imported from the checkout
    sys.path.insert(0, str(REPO))

from voila_app.server import wait_until_answers  # noqa: E402


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class HubProcess:
    """``jupyterhub`` with our configuration in trial mode, on free loopback ports.

    The hub's database, cookie secret, proxy pid file and the users' home folders live in
    ``data_dir``; its log goes to ``log_path``. ``fast`` sets LECTURE_FAST=1 for the users' kernels;
    ``args`` are more jupyterhub options (e.g. ``--ConfigurableHTTPProxy.command=...``).
    """

    def __init__(self, data_dir: Path, log_path: Path, password: str | None = None, pool_size: int = 0,
                 fast: bool = True, port: int | None = None, server_idle: int = 3600, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.password = password or secrets.token_urlsafe(12)
        port, hub_port, api_port = ([port] if port else free_ports(1)) + free_ports(2)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        run_env = dict(os.environ if env is None else env)
        run_env.update(LECTURE_HUB_PASSWORD=self.password, LECTURE_HUB_DATA_DIR=str(self.data_dir),
                       LECTURE_POOL_SIZE=str(pool_size), LECTURE_HUB_SERVER_IDLE=str(server_idle))
        if fast:
            run_env["LECTURE_FAST"] = "1"
        else:
            run_env.pop("LECTURE_FAST", None)
        cmd = [str(BIN / "jupyterhub"), "-f", str(CONFIG), "--ip", "127.0.0.1", "--port", str(port),
               f"--JupyterHub.hub_port={hub_port}",
               f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{api_port}", *args]
        self._log = open(self.log_path, "w")
        # its own session: a signal to the test run never reaches the hub half-way
        self.proc = subprocess.Popen(cmd, cwd=self.data_dir, env=run_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.hub = psutil.Process(self.proc.pid)
        self._seen: dict[int, psutil.Process] = {}

    # --- state ---------------------------------------------------------------------------------
    def log(self, tail: int | None = 6000) -> str:
        if not self._log.closed:          # stop() closes it; the log is still read afterwards
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def processes(self) -> list[psutil.Process]:
        """The hub and everything it started (proxy, culler, users' servers, Voila, kernels)."""
        try:
            procs = [self.hub] + self.hub.children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:                      # remembered, so stop() can check each one is gone
            self._seen.setdefault(p.pid, p)
        return procs

    def user_processes(self, name: str) -> list[psutil.Process]:
        """The processes of ``name``'s server: jupyterhub-singleuser, Voila and its kernels."""
        for p in self.processes():
            try:
                if p.environ().get("JUPYTERHUB_USER") == name and "jupyterhub-singleuser" in " ".join(p.cmdline()):
                    return [p] + p.children(recursive=True)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return []

    # --- HTTP ----------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until_answers(self.proc, self.url + "/hub/api", "jupyterhub", self.log, timeout)
        self.processes()

    def login(self, name: str, password: str | None = None) -> requests.Session:
        """Log in through the hub's form (with its _xsrf token), as a browser does."""
        session = requests.Session()
        form = session.get(self.url + "/hub/login", timeout=30)
        form.raise_for_status()
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', form.text)
        if not match:
            raise RuntimeError("no _xsrf field in the hub's login form")
        response = session.post(self.url + "/hub/login?next=", timeout=60, allow_redirects=False,
                                data={"username": name, "password": password or self.password,
                                      "_xsrf": match.group(1)})
        if response.status_code != 302 or "jupyterhub-hub-login" not in session.cookies:
            raise PermissionError(f"login as {name!r} failed: HTTP {response.status_code}")
        return session

    def app_url(self, name: str) -> str:
        """Where ``name``'s copy of the app is: the landing page; dashboards are under voila/render/."""
        return f"{self.url}/user/{name}/lecture/"

    def open_server(self, session: requests.Session, name: str, timeout: float = 120.0) -> requests.Response:
        """Start ``name``'s server if needed and return the app's landing page (following the
        hub's spawn-pending page and the server's OAuth handshake, as a browser does)."""
        deadline = time.monotonic() + timeout
        target = self.app_url(name)
        # where the login form sends a browser: spawns the server (it has no options form)
        session.get(f"{self.url}/hub/spawn/{name}", timeout=timeout, allow_redirects=False).raise_for_status()
        while time.monotonic() < deadline:
            response = session.get(target, timeout=timeout)
            if response.url == target and response.status_code == 200:
                self.processes()
                return response
            if response.status_code >= 400:
                raise RuntimeError(f"{target}: HTTP {response.status_code} at {response.url}; log:\n{self.log()}")
            time.sleep(0.5)                  # the hub's spawn-pending page: the server is starting
        raise RuntimeError(f"{name}'s server did not open within {timeout} s; log:\n{self.log()}")

    # --- shutdown ------------------------------------------------------------------------------
    def stop(self, timeout: float = 90.0) -> list[str]:
        """Stop the hub (SIGTERM: it stops every user's server and its proxy) and wait until every
        process it ever started is gone. Returns a description of each that had to be killed.
        (90 s: under a loaded 2-core machine the hub's shutdown took over 30 s, stuck after "Cleaning up 1
        services"; then the hub was killed and its servers orphaned.)"""
        self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        survivors = []
        deadline = time.monotonic() + timeout
        for p in self._seen.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                try:
                    survivors.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            except psutil.NoSuchProcess:
                pass
        self._log.close()
        return survivors


@contextlib.contextmanager
def running_hub(log_path: Path, data_dir: Path | None = None, **kwargs):
    """A started :class:`HubProcess`, stopped on exit (with a temporary ``data_dir`` if none is given)."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lecture-hub-")))
        hub = HubProcess(data_dir, log_path, **kwargs)
        try:
            hub.wait_ready()
            yield hub
        finally:
            hub.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="A trial JupyterHub serving the app per user, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8000, help="the hub's public port (default 8000)")
    parser.add_argument("--pool-size", type=int, default=0, help="pre-heated kernels per notebook per user")
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST=1 in every user's kernels")
    parser.add_argument("--proxy-command", default=None,
                        help="the hub's proxy, e.g. Node.js's configurable-http-proxy (default: the Python port)")
    args = parser.parse_args(argv)
    extra = (f"--ConfigurableHTTPProxy.command={args.proxy_command}",) if args.proxy_command else ()
    with tempfile.TemporaryDirectory(prefix="lecture-hub-") as data:
        log = Path(data) / "jupyterhub.log"
        with running_hub(log, Path(data), port=args.port, pool_size=args.pool_size, fast=args.fast,
                         args=extra) as hub:
            print(f"JupyterHub at {hub.url}/ : log in with any user name and the password {hub.password}\n"
                  f"(log: {log}); Ctrl-C stops it and every user's server.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while hub.proc.poll() is None:
                    time.sleep(1)


if __name__ == "__main__":
    main()
