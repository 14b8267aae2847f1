"""The Voila web app that serves the notebooks as dashboards.

- :mod:`voila_app.landing`: the landing page's cards, read from each
  notebook's metadata (``{"lecture": {"title", "question"}}``) or, failing
  that, from its first markdown cell (``# Title`` then an italic question).
- :mod:`voila_app.config`: the Voila configuration (template, code hidden,
  pre-heated kernels, idle-kernel culling, loopback binding).
- ``python -m voila_app``: start the server (see ``--help``).
- ``share/jupyter/voila/templates/lecture/``: the Jinja templates (landing
  page ``tree.html`` and the dashboard page ``index.html.j2``).
"""
