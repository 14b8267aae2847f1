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
import sys

# The server (jupyter_server -> jupyter_events) and every kernel's first figure (plotly's FigureWidget ->
# plotly.io -> nbformat's validator) import jsonschema, whose format checkers import rfc3987_syntax when it
# is installed: a lark grammar of IRIs built at import, 0.9 s of CPU on a quiet core and 6-14 s with the
# machine loaded (python -X importtime), the largest single import of the server's start and of a kernel's.
# Nothing here validates IRIs: marked missing, the module is skipped and jsonschema leaves that check out.
sys.modules.setdefault("rfc3987_syntax", None)
