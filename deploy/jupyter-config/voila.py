# Voila configuration for the app behind jupyter-server-proxy (see jupyter_server_config.py
# beside this file). Voila reads `voila.py` from every folder on JUPYTER_CONFIG_PATH; the proxy
# puts this folder there for the app it starts, `./lecture app` does not. Everything else stays
# in voila_app.config.build_config: this file only adds the URL prefix.
#
# The proxy passes the full path through (absolute_url), so Voila serves its routes, and builds
# its links, under the prefix the browser sees: /user/<name>/lecture/ (LECTURE_BASE_URL).
import os

prefix = os.environ.get("LECTURE_BASE_URL", "").strip("/")
if prefix:
    c.Voila.base_url = f"/{prefix}/"  # noqa: F821  (c: the traitlets config being loaded)
