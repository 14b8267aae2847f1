"""The Voila configuration of the app, built in Python so it can be tested.

Every choice here is one a classroom deployment needs:

- ``template="lecture"`` (``share/jupyter/voila/templates/lecture``): the
  landing page of cards and a clean dashboard page; ``strip_sources`` hides
  all code, ``show_tracebacks=False`` keeps Python errors out of the page;
  ``allow_template_override``/``allow_theme_override="NO"``: a visitor cannot pick
  another template with ``?template=`` (Voila's ``lab``/``classic``/``reveal`` bypass ours,
  and ``?template=base`` left its response unfinished forever);
- ``extension_allowlist``: only the widget, anywidget and plotly front-end
  extensions are loaded, whatever else is installed in the environment;
- ``ip="127.0.0.1"``: only this machine can connect unless the instructor
  asks for another address (``--ip 0.0.0.0`` to serve a room, behind a proxy);
- pre-heated kernels (``preheat_kernel``, ``default_pool_size``): Voila keeps
  ``pool_size`` kernels per notebook that have already executed it, so a
  visitor sees a drawn dashboard at once; the pool refills in the background,
  ``refill_delay`` seconds after a kernel is taken; ``preheat`` gives one notebook
  (the one a class opens at once) a pool of its own size;
- the kernel websocket: Voila forwards only widget (comm) and kernel-info messages
  from a page to its kernel, so a visitor cannot execute code; ``LectureVoila`` also
  drops kernel ``error`` and ``stderr`` messages on their way to the page (they carry
  tracebacks with lines of the hidden code) and logs one line for each instead;
- static files go out gzip-compressed (Voila's and the extensions' JavaScript, about 3 MB
  uncompressed; not the pages, which hold kernel ids: see ``voila_app.static_gzip``);
- plotly's 5 MB figure front end goes out gzip-compressed, with an ETag
  (``voila_app.bundle``): it must arrive within anywidget's 2 seconds; the kernels build
  figures that import it by URL, once per page (:func:`kernel_environment`,
  ``voila_app.figure_widget``);
- idle-kernel culling (``MappingKernelManager.cull_*``): a kernel idle for
  ``cull_idle_timeout`` seconds is shut down even if a forgotten tab is still
  connected, so memory returns after visitors leave (pooled kernels are never
  culled; Voila also shuts a kernel down when its tab closes);
- kernels talk to the server over Unix sockets (``KernelManager.transport="ipc"``, where the
  system has them): with TCP, each kernel's five ports are picked by binding port 0 and letting
  go, and when a class's 30 kernels start at once another connection can take a port in between
  (``ZMQError: Address already in use``; the kernel dies and its pool slot is lost).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from traitlets.config import Config

from . import landing

# The only JupyterLab extensions the dashboards need. Voila loads every installed
# one by default, and a lab-only extension (nbgrader, notebook) fails in the
# Voila page with module-federation errors. Not jupyterlab-plotly: it renders static
# plotly outputs, which no dashboard has (every figure is a FigureWidget, drawn by the
# widgetbundle.js the page imports once), and its front end is a second copy of plotly.js
# that every page downloaded (4.7 MB, uncompressed) while opening (docs/performance.md,
# "Opening a dashboard"); the export buttons use the window.Plotly that widgetbundle.js sets.
# Not widgets-manager7 either: the kernels run ipywidgets 8.
FRONTEND_EXTENSIONS = ["@voila-dashboards/widgets-manager8", "@jupyter-widgets/jupyterlab-manager", "anywidget",
                       "jupyterlab_pygments"]

APP_DIR = Path(__file__).resolve().parent
REPO_DIR = APP_DIR.parent
NOTEBOOKS_DIR = REPO_DIR / "notebooks"
DATA_DIR = APP_DIR / "share" / "jupyter"   # holds voila/templates/lecture
TEMPLATE = "lecture"


def build_config(ip: str = "127.0.0.1", port: int = 8866, pool_size: int = 1,
                 cull_idle_timeout: int = 1800, cull_interval: int = 60,
                 open_browser: bool = False, preheat: dict[str, int] | None = None,
                 refill_delay: float = 1.0, pool_concurrency: int = 0) -> Config:
    """The traitlets ``Config`` the app runs with (see the module docstring).

    ``preheat`` maps a notebook's file name to the pool size it gets instead of ``pool_size``: the
    dashboard a whole class opens at the start of a lecture (``--preheat 01_adaptive_methods.ipynb=30``).
    ``refill_delay``: seconds before Voila replaces a pre-heated kernel a visitor took (Voila's own
    default is 1 s); a class taking 30 at once otherwise starts 30 replacements while it opens.
    ``pool_concurrency``: pool kernels that start and execute their notebook at once, the first
    dashboard first (``voila_app.pool``; 0: the CPU count).
    """
    preheat = dict(preheat or {})
    if pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size}")
    if refill_delay < 0:
        raise ValueError(f"refill_delay must be >= 0, got {refill_delay}")
    for name, size in preheat.items():
        if not name.endswith(".ipynb") or size < 0:
            raise ValueError(f"preheat needs NOTEBOOK.ipynb=N with N >= 0, got {name}={size}")
    if pool_concurrency < 0:
        raise ValueError(f"pool_concurrency must be >= 0 (0: the CPU count), got {pool_concurrency}")
    if cull_idle_timeout < 0 or cull_interval <= 0:
        raise ValueError("cull_idle_timeout must be >= 0 and cull_interval > 0")
    c = Config()
    c.Voila.ip = ip
    c.Voila.port = port
    c.Voila.port_retries = 0          # fail loudly instead of silently moving to another port
    c.Voila.open_browser = open_browser
    c.VoilaConfiguration.template = TEMPLATE
    c.VoilaConfiguration.classic_tree = True      # our jinja tree.html: the landing page
    c.VoilaConfiguration.theme = "light"
    c.VoilaConfiguration.strip_sources = True
    c.VoilaConfiguration.show_tracebacks = False
    c.VoilaConfiguration.allow_template_override = "NO"
    c.VoilaConfiguration.allow_theme_override = "NO"
    c.VoilaConfiguration.extension_allowlist = FRONTEND_EXTENSIONS
    c.VoilaConfiguration.page_config_hook = landing.page_config_hook
    c.VoilaConfiguration.preheat_kernel = pool_size > 0 or any(preheat.values())
    c.VoilaConfiguration.default_pool_size = pool_size
    c.VoilaKernelManager.fill_delay = float(refill_delay)
    c.LecturePoolKernelManager.pool_concurrency = pool_concurrency     # voila_app.pool
    if preheat:
        c.VoilaKernelManager.kernel_pools_config = {"default": {"pool_size": pool_size},
                                                    **{name: {"pool_size": n} for name, n in preheat.items()}}
    c.MappingKernelManager.cull_idle_timeout = cull_idle_timeout
    c.MappingKernelManager.cull_interval = cull_interval
    c.MappingKernelManager.cull_connected = True
    c.MappingKernelManager.cull_busy = False
    if os.name == "posix":
        c.KernelManager.transport = "ipc"
    return c


def plotly_bundle_dir() -> Path:
    """The folder holding plotly's FigureWidget front end, ``widgetbundle.js``."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data"


def _voila_class():
    from jupyter_server.utils import url_path_join
    from voila.app import Voila
    from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

    from .bundle import BundleHandler, figure_bundles
    from .kernel_socket import LectureKernelWebsocketHandler
    from .pool import ordered_pools
    from .static_gzip import StaticFilesGZip

    class LectureVoila(Voila):
        """Voila that also serves plotly's ``widgetbundle.js`` under ``/voila/static/``, and
        whose kernel websocket keeps tracebacks off the page (``voila_app.kernel_socket``).

        Every figure then imports plotly's front end by URL, once per page, instead of
        carrying 5 MB of JavaScript in its widget state (see ``voila_app.figure_widget``).
        The bundle goes out gzip-compressed, so that it arrives within anywidget's
        2 seconds (``voila_app.bundle``).
        """

        def init_settings(self):
            # gzip static files, each compressed once (Voila's 3 MB of JavaScript chunks, the extensions', the template's);
            # widgetbundle.js comes pre-compressed from BundleHandler. Given to tornado's Application
            # when it is built: it reads its transforms only then.
            with ordered_pools():       # pool kernels start a few at a time, the first dashboard first
                settings = super().init_settings()
            settings["transforms"] = [StaticFilesGZip]
            return settings

        def setup_template_dirs(self):
            super().setup_template_dirs()
            self.static_paths = [*self.static_paths, str(plotly_bundle_dir())]

        def init_handlers(self):
            handlers = super().init_handlers()
            if not any(h[1] is VoilaKernelWebsocketHandler for h in handlers):
                raise RuntimeError("Voila's kernel websocket route was not found: tracebacks would reach the page")
            bundles = figure_bundles(self.log)
            # first: tornado takes the first matching route, and /voila/static/(.*) would match too
            return [(url_path_join(self.server_url, "/voila/static/", re.escape(name)), BundleHandler, {"bundle": bundle})
                    for name, bundle in bundles.items()] + [
                (h[0], LectureKernelWebsocketHandler, *h[2:]) if h[1] is VoilaKernelWebsocketHandler else h
                for h in handlers]

    return LectureVoila


def __getattr__(name):  # LectureVoila is built on first use: importing voila is slow
    if name == "LectureVoila":
        return _voila_class()
    raise AttributeError(name)


def kernel_environment(environ=None, cache_dir: str | None = None, cache_size: str | None = None) -> dict:
    """``environ`` plus what the kernels Voila starts need (they inherit the server's environment):
    ``LECTURE_FIGURE_WIDGET`` names :class:`voila_app.figure_widget.SharedBundleFigureWidget` as the
    class of every panel figure, and the checkout leads ``PYTHONPATH`` so that kernels can import it
    (and import the ``lecture_lib`` next to it).

    The result cache (:mod:`lecture_lib.cache`): ``cache_dir`` (a folder, or ``off``) and
    ``cache_size`` (``500M``) override ``LECTURE_CACHE_DIR``/``LECTURE_CACHE_SIZE``; the folder is
    made absolute (kernels run in the notebook's folder), so that every kernel shares one cache.

    One BLAS/OpenMP thread per kernel (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, unless ``environ`` sets them), as
    ``./lecture lab`` and the JupyterHub configurations give: the panels train many small models, and a second
    thread's hand-offs cost more than they save. With torch's default (a thread per core), 06's damping panel at
    classroom settings took 16.5 s instead of 12.6 s, and its first streamed row 0.20 s instead of 0.15 s, on the
    2-core machine (docs/performance.md)."""
    from lecture_lib import cache

    from .figure_widget import FIGURE_WIDGET

    env = dict(os.environ if environ is None else environ)
    parts = [str(REPO_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env["LECTURE_FIGURE_WIDGET"] = FIGURE_WIDGET
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(threads, "1")
    if cache_dir is not None:
        env[cache.DIR_ENV] = cache_dir
    if cache_size is not None:
        env[cache.SIZE_ENV] = cache_size
    cache.size_limit(env)                         # a bad size fails here, with its message, not in a kernel
    location = cache.cache_dir(env)
    env[cache.DIR_ENV] = "off" if location is None else str(location.resolve())
    return env


def describe_cache(environ=None) -> str:
    """One line on the result cache ``environ`` selects: its folder and bound, or that it is off."""
    from lecture_lib import cache

    env = os.environ if environ is None else environ
    location = cache.cache_dir(env)
    if location is None:
        return f"off ({cache.DIR_ENV}=off): every kernel computes its own results"
    return f"{location} (at most {cache.size_limit(env) / 2**20:.0f} MiB; ./lecture warm fills it)"


def template_environment(environ=None) -> dict:
    """``environ`` with ``JUPYTER_PATH`` extended so Voila finds the ``lecture`` template."""
    env = dict(os.environ if environ is None else environ)
    parts = [str(DATA_DIR)] + [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env
