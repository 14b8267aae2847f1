# Jupyter Server configuration of a user's server under JupyterHub (deploy/jupyterhub), on
# Zero to JupyterHub (deploy/z2jh) and on Binder: it serves the Voila app at <server>/lecture/.
#
# Jupyter reads this file when this folder is on JUPYTER_CONFIG_PATH (the hub configuration
# and Binder's postBuild put it there). jupyter-server-proxy then starts `python -m voila_app`
# on a free loopback port on the first request to /lecture/ and proxies to it, HTTP and
# websockets, letting through only requests that the server's own authentication (the hub's
# OAuth, for the server's owner) accepts. The app keeps its whole configuration
# (voila_app.config: our `lecture` template, hidden code, the front-end extension allowlist,
# the landing cards, pre-heating, kernel culling); voila.py beside this file adds the URL prefix.
#
# Environment variables (optional):
#   LECTURE_POOL_SIZE    pre-heated kernels per notebook, per user's server (default 0: a kernel
#                        starts when a dashboard opens; 1 keeps six idle kernels per user)
#   LECTURE_KERNEL_IDLE  seconds after which Voila shuts down an idle kernel (default 1800)
#   LECTURE_CACHE_DIR    the result cache shared by every kernel (lecture_lib.cache; default
#                        ~/.cache/lecture5, `off` disables it); Zero to JupyterHub points it at a
#                        volume every pod mounts. The app passes it on to its kernels unchanged.
#   LECTURE_CACHE_SIZE   its bound (default 500M)
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _int_env(name: str, default: int) -> str:
    value = os.environ.get(name, "").strip() or str(default)
    if not value.isdigit():
        raise SystemExit(f"{__file__}: {name} must be a whole number, got {value!r}")
    return value


config_path = os.pathsep.join(dict.fromkeys(
    [str(HERE)] + [p for p in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]))

c.ServerProxy.servers = {  # noqa: F821  (c: the traitlets config being loaded)
    "lecture": {
        "command": [sys.executable, "-m", "voila_app", "--ip", "127.0.0.1", "--port", "{port}",
                    "--pool-size", _int_env("LECTURE_POOL_SIZE", 0),
                    "--cull-idle-timeout", _int_env("LECTURE_KERNEL_IDLE", 1800)],
        "environment": {
            "PYTHONPATH": str(REPO),                   # voila_app runs from the checkout
            "JUPYTER_CONFIG_PATH": config_path,        # voila.py: serve under LECTURE_BASE_URL
            "LECTURE_BASE_URL": "{base_url}lecture/",
        },
        "absolute_url": True,      # Voila sees /user/<name>/lecture/...: its links keep the prefix
        "timeout": 120,            # seconds for Voila to start answering (imports are slow on a busy node)
        "launcher_entry": {"title": "Lecture 5 dashboards"},
    },
}
c.ServerApp.default_url = "/lecture/"  # noqa: F821  a user's server opens on the landing page
# JupyterLab and Notebook 7 read lab-settings/overrides.json: no prompt about Jupyter's news over a student's first
# notebook (as `./lecture lab`: voila_app.jupyter_extension.JUPYTER_ARGS)
c.LabServerApp.app_settings_dir = str(HERE / "lab-settings")  # noqa: F821
# Voila's own server extension would serve the notebooks a second time at /voila/, without the
# app's configuration; the language server and the classic-notebook shim are of no use here.
c.ServerApp.jpserver_extensions = {"voila.server_extension": False, "jupyter_lsp": False,  # noqa: F821
                                  "notebook_shim": False,
                                  # JupyterLab / Notebook 7 in the user's server: plotly's figure front end
                                  # served once per page, the kernels' figures load it from there
                                  "voila_app.jupyter_extension": True}
if str(REPO) not in sys.path:          # the extension is imported from the checkout, as the app is
    sys.path.insert(0, str(REPO))
