"""The hub's proxy: configurable-http-proxy's Python port, with its websockets fixed for Jupyter.

    python deploy/jupyterhub/python_chp.py [configurable-http-proxy options]

JupyterHub's proxy is configurable-http-proxy, a Node.js program; its Python port (PyPI
``configurable-http-proxy``, in the [hub] extra) is a drop-in that ``pip install`` brings, so a
hub needs no Node.js. Two gaps of the port (0.4.0) break a Jupyter kernel's websocket, which a
browser opens with the subprotocol ``v1.kernel.websocket.jupyter.org`` and binary frames:

- it passes the browser's ``Sec-WebSocket-Protocol`` on to the user's server but leaves it out
  of its own handshake reply, and a browser then drops the connection: here it accepts the
  first subprotocol offered, the one the user's server accepts in turn (jupyter-server-proxy
  does the same);
- it sends the browser's binary frames on as text frames, which the kernel's server cannot
  read: here a binary frame stays binary.

Without these no dashboard draws behind the hub (tests/test_jupyterhub.py speaks that protocol).
Everything else is the port's own command line, unchanged. The Node.js proxy needs none of
this: see docs/deployment.md.
"""
from configurable_http_proxy.cli import main
from configurable_http_proxy.handlers import ProxyHandler


def _first_offered(self, subprotocols):
    return subprotocols[0] if subprotocols else None


def _on_message(self, message):
    # ProxyHandler.on_message, sending binary frames as binary
    if self.ws_client:
        prefix = self.target["prefix"] if self.target else ""
        if prefix:
            self.proxy.update_last_activity(prefix)
        self.ws_client.write_message(message, binary=isinstance(message, bytes))


ProxyHandler.select_subprotocol = _first_offered
ProxyHandler.on_message = _on_message

if __name__ == "__main__":
    main()
