"""The FigureWidget that the app's kernels build: plotly's front end loaded once per page.

plotly >= 6 ships its FigureWidget front end (~5 MB of JavaScript) inside every widget's
state, and anywidget evaluates it once per figure. In the app's kernels a figure instead
carries the small module :data:`SHARED_BUNDLE_ESM`, which imports the bundle from Voila's
static files (served by :class:`voila_app.bundle.BundleHandler`): fetched and evaluated once
per page (the browser caches it), so a dashboard with many figures opens fast.

anywidget gives a model's initialize() 2 seconds; past that the figure is drawn but never
follows its model again. The bundle can take longer to arrive and evaluate (a slow line, ten
visitors' kernels starting on the same laptop), so initialize() only starts plotly's own
initialisation and render() waits for it, without a deadline.

How kernels get it: ``python -m voila_app`` sets ``LECTURE_FIGURE_WIDGET`` to
:data:`FIGURE_WIDGET` (and puts the checkout on ``PYTHONPATH``) for the kernels Voila starts
(:func:`voila_app.config.kernel_environment`); :func:`lecture_lib.viz.live_figures.figure_widget`
builds the class it names. JupyterLab and Notebook 7 started by ``./lecture lab`` /
``./lecture notebook`` load the server extension :mod:`voila_app.jupyter_extension`, which serves
the bundle and sets the same for their kernels. Elsewhere (nbclient, a Jupyter server without
the extension) figures are plain ``go.FigureWidget``\\ s. This module imports only plotly: it
is loaded inside kernels.
"""
from __future__ import annotations

import plotly.graph_objects as go

FIGURE_WIDGET = "voila_app.figure_widget:SharedBundleFigureWidget"

# Where the bundle is: Voila's page names its base URL on <body> (our template: "<base>voila/"); a
# JupyterLab or Notebook 7 page has its base URL in #jupyter-config-data, and the server extension
# voila_app.jupyter_extension serves the bundle at "<base>lecture/static/widgetbundle.js".
SHARED_BUNDLE_ESM = """function bundleUrl() {
  const here = window.location.href;
  const voila = document.body && document.body.dataset.baseUrl;
  if (voila) return new URL("static/widgetbundle.js", new URL(voila, here)).href;
  const config = document.getElementById("jupyter-config-data");
  const base = (config && JSON.parse(config.textContent).baseUrl) || "/";
  return new URL("lecture/static/widgetbundle.js", new URL(base, here)).href;
}
const bundle = import(bundleUrl());
export default () => {
  let plotly;
  return {
    initialize(ctx) {
      plotly = bundle.then((m) => { const widget = m.default(); widget.initialize(ctx); return widget; });
    },
    async render(ctx) {
      return (await plotly).render(ctx);
    },
  };
};
"""


class SharedBundleFigureWidget(go.FigureWidget):
    """A FigureWidget whose front end is loaded by URL from Voila (see SHARED_BUNDLE_ESM)."""

    _esm = SHARED_BUNDLE_ESM
