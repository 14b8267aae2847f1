"""A Jupyter server extension: plotly's figure front end once per page in JupyterLab and Notebook 7.

plotly >= 6 puts its FigureWidget front end (5 MB of JavaScript) into every figure's widget
state, and anywidget evaluates it once per figure, within 2 seconds: a notebook with eight
figures sends 40 MB over the kernel's websocket and compiles the bundle eight times, and on a
busy machine a figure fails with ``[anywidget] Failed to initialize model`` and never follows
its sliders. Loaded into the server of ``./lecture lab`` / ``./lecture notebook``, this extension

- serves the bundle at ``<base_url>lecture-static/widgetbundle.js`` (a prefix of its own: ``<base_url>lecture/``
  is where jupyter-server-proxy puts the app under JupyterHub; gzip-compressed once, with an
  ETag: :class:`voila_app.bundle.BundleHandler`, as the Voila app does under ``/voila/static/``);
- sets ``LECTURE_FIGURE_WIDGET`` (and ``PYTHONPATH``) for the kernels the server starts
  (:func:`voila_app.config.kernel_environment`), so that their panels build
  :class:`voila_app.figure_widget.SharedBundleFigureWidget`\\ s, which import the bundle by URL:
  fetched and evaluated once per page, outside anywidget's 2-second deadline.

Enable it with ``--ServerApp.jpserver_extensions`` (see :data:`JUPYTER_ARGS`) and the checkout on
``PYTHONPATH``; a server without it still works, with plotly's own FigureWidget.

:data:`JUPYTER_ARGS` also points JupyterLab's and Notebook 7's application settings at
``deploy/jupyter-config/lab-settings`` (the hub's servers read the same folder: ``jupyter_server_config.py``).
Its ``overrides.json`` turns off fetching Jupyter's news. Left to ask, JupyterLab opens every new user's first
notebook with a "get notified about official Jupyter news?" prompt over the bottom right of the page, over a panel's
notes.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

BUNDLE_ROUTE = "lecture-static/widgetbundle.js"
LAB_SETTINGS = Path(__file__).resolve().parent.parent / "deploy" / "jupyter-config" / "lab-settings"
# the command-line options of `jupyter lab` / `jupyter notebook` (./lecture lab) that load this extension and the
# project's settings overrides
JUPYTER_ARGS = ("--ServerApp.jpserver_extensions", "voila_app.jupyter_extension=True",
                "--LabServerApp.app_settings_dir", str(LAB_SETTINGS))


def _jupyter_server_extension_points():
    return [{"module": "voila_app.jupyter_extension"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    from .bundle import BundleHandler, figure_bundles
    from .config import kernel_environment

    route = url_path_join(serverapp.web_app.settings["base_url"], BUNDLE_ROUTE)
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(route.rsplit("/", 1)[0], re.escape(name)), BundleHandler, {"bundle": bundle})
        for name, bundle in figure_bundles(serverapp.log).items()])
    # kernels inherit the server's environment when they start
    os.environ.update(kernel_environment())
    serverapp.log.info("lecture: plotly's front end served once per page at %s", route)
