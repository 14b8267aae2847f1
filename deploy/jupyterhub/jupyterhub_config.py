# JupyterHub for a class: every user gets their own copy of the Lecture 5 dashboards.
#
#   jupyterhub -f deploy/jupyterhub/jupyterhub_config.py          # system accounts (PAM), port 8000
#
# Trial on one machine without system accounts (every user's server runs as the hub's user):
#
#   LECTURE_HUB_PASSWORD='a shared password' jupyterhub -f deploy/jupyterhub/jupyterhub_config.py
#
# Run it from the project's environment (.venv/bin/jupyterhub, or the conda environment): the
# users' servers run this same Python. Ports and addresses are JupyterHub's own options
# (--ip, --port, --JupyterHub.hub_port, --ConfigurableHTTPProxy.api_url); see docs/deployment.md.
#
# A user's server is jupyterhub-singleuser (Jupyter Server, with the hub's OAuth: only the
# server's owner gets in) opening on /user/<name>/lecture/, where jupyter-server-proxy serves the
# app itself, `python -m voila_app`, with its whole configuration (voila_app.config: our
# `lecture` template, hidden code, the front-end extension allowlist, the landing cards,
# pre-heating, kernel culling). See deploy/jupyter-config/jupyter_server_config.py, shared with
# Zero to JupyterHub and Binder. Voila as a server extension instead would lose pre-heating and
# the plotly bundle route (voila_app.config adds it to standalone Voila only);
# jupyter-server-proxy's `jupyter-standaloneproxy` (4.6) does not authenticate websockets.
#
# Environment variables (all optional):
#   LECTURE_HUB_PASSWORD    trial mode: SharedPasswordAuthenticator (JupyterHub's replacement for
#                           DummyAuthenticator's password, at least 8 characters) and
#                           SimpleLocalProcessSpawner, home folders under LECTURE_HUB_DATA_DIR/home
#   LECTURE_HUB_DATA_DIR    the hub's sqlite database, cookie secret and proxy pid file
#                           (default: the current directory, as JupyterHub does)
#   LECTURE_POOL_SIZE       pre-heated kernels per notebook *per user* (default 0: a user's
#                           server starts a kernel when a dashboard opens; 1 keeps six idle
#                           kernels per user, see docs/deployment.md)
#   LECTURE_KERNEL_IDLE     seconds after which Voila shuts down an idle kernel (default 1800)
#   LECTURE_HUB_SERVER_IDLE seconds without traffic after which jupyterhub-idle-culler stops a
#                           user's server (default 3600; 0: no culler service)
#   LECTURE_CACHE_DIR       the result cache every user's kernels share (lecture_lib.cache):
#                           default LECTURE_HUB_DATA_DIR/lecture-cache (the current directory's
#                           without it); `off` disables it. Fill it before class with
#                           `./lecture warm --cache-dir DIR`. Under system accounts the hub (root)
#                           makes it writable by every account (mode 1777, as /tmp).
#   LECTURE_CACHE_SIZE      its bound (default 500M; least recently used results are evicted)
#   LECTURE_FAST=1          small settings in every notebook (tests)
import os
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent
BIN = Path(sys.executable).parent            # the environment's scripts: singleuser, proxy, culler


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"jupyterhub_config: {name} must be an integer, got {value!r}") from None


def _script(name: str) -> str:
    """A console script of this environment (the users' servers run the hub's own Python)."""
    path = BIN / name
    if not path.exists():
        raise SystemExit(f"jupyterhub_config: {path} not found: install the project's [hub] extra "
                         f"(pip install -e '.[app,hub]')")
    return str(path)


password = os.environ.get("LECTURE_HUB_PASSWORD", "")
data_dir = os.environ.get("LECTURE_HUB_DATA_DIR", "")
server_idle = _int_env("LECTURE_HUB_SERVER_IDLE", 3600)
cache_dir = os.environ.get("LECTURE_CACHE_DIR", "").strip() or str(Path(data_dir or ".") / "lecture-cache")

# --- the hub, its state and its proxy -------------------------------------------------------
c.JupyterHub.ip = "127.0.0.1"        # noqa: F821  public address: --ip (behind TLS, see docs)
c.JupyterHub.hub_ip = "127.0.0.1"    # noqa: F821  users' servers are on this machine
if data_dir:
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"                 # noqa: F821
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")         # noqa: F821
    c.ConfigurableHTTPProxy.pid_file = str(data / "jupyterhub-proxy.pid")            # noqa: F821
# The proxy: configurable-http-proxy's Python port (PyPI, in the [hub] extra: `pip install` is
# all a machine needs), through python_chp.py beside this file, which makes it answer the
# websocket subprotocol browsers ask for. --proxy-timeout: the port otherwise gives up on a
# response after tornado's default 20 s, and a dashboard page returns once its notebook has run.
# For a class, Node.js's proxy is the tried one (npm install -g configurable-http-proxy, or
# Debian's node-configurable-http-proxy): --ConfigurableHTTPProxy.command=configurable-http-proxy
c.ConfigurableHTTPProxy.command = [sys.executable, str(Path(__file__).resolve().with_name("python_chp.py")),  # noqa: F821
                                   "--proxy-timeout=600000"]
c.JupyterHub.cleanup_servers = True     # noqa: F821  stopping the hub stops every user's server

# --- who may log in, and as whom their server runs --------------------------------------------
if password:
    # Trial mode: anyone who knows the shared password logs in under any name; every server runs
    # as the hub's own user. Not for a real class: use system accounts or an OAuthenticator.
    c.JupyterHub.authenticator_class = "shared-password"                              # noqa: F821
    c.SharedPasswordAuthenticator.user_password = password                            # noqa: F821
    c.Authenticator.allow_all = True                                                  # noqa: F821
    c.JupyterHub.spawner_class = "simple"                                             # noqa: F821
    if data_dir:
        c.SimpleLocalProcessSpawner.home_dir_template = str(data / "home" / "{username}")  # noqa: F821
else:
    # System accounts: PAM login, each server runs as that account (the hub runs as root).
    c.JupyterHub.authenticator_class = "pam"                                          # noqa: F821
    c.JupyterHub.spawner_class = "localprocess"                                       # noqa: F821

# --- each user's server: Jupyter Server with the app at /lecture/ ------------------------------
c.Spawner.cmd = [_script("jupyterhub-singleuser")]                                    # noqa: F821
c.Spawner.default_url = "/lecture/"                                                   # noqa: F821
c.Spawner.environment = {                                                             # noqa: F821
    "JUPYTER_CONFIG_PATH": str(DEPLOY / "jupyter-config"),   # the /lecture/ app (jupyter-server-proxy)
    # one BLAS thread per kernel: many students share a node's cores
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "LECTURE_POOL_SIZE", "LECTURE_KERNEL_IDLE",  # noqa: F821
                      "LECTURE_FAST", "LECTURE_PANEL_RAISE", "LECTURE_CACHE_SIZE"]
# --- one result cache for every user's kernels: the second student asking for α = 0.4 reads it ----
if cache_dir.lower() not in {"off", "0", "none", "false", "no"}:
    cache_dir = str(Path(cache_dir).expanduser().resolve())
    if not password and os.geteuid() == 0:
        from lecture_lib.cache import share   # servers run as each user's account: let all of them write
        share(Path(cache_dir))
c.Spawner.environment["LECTURE_CACHE_DIR"] = cache_dir                                # noqa: F821
if password and os.geteuid() == 0:
    # trial mode in a container running as root: Jupyter Server refuses root unless told
    c.Spawner.args = ["--allow-root"]                                                 # noqa: F821
c.Spawner.http_timeout = 60     # noqa: F821
c.Spawner.start_timeout = 120   # noqa: F821

# --- stop the servers of users who left: the standard jupyterhub-idle-culler service ------------
if server_idle > 0:
    c.JupyterHub.load_roles = [{                                                      # noqa: F821
        "name": "jupyterhub-idle-culler-role",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["jupyterhub-idle-culler-service"],
    }]
    c.JupyterHub.services = [{                                                        # noqa: F821
        "name": "jupyterhub-idle-culler-service",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={server_idle}",
                    f"--cull-every={max(60, min(600, server_idle // 6))}"],
    }]
