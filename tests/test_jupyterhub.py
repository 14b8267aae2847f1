"""The JupyterHub deployment (deploy/jupyterhub): two users, each with their own copy of the app.

One hub for the module, started with ``deploy/jupyterhub/jupyterhub_config.py`` in trial mode
(shared password, every server runs as this user) on free loopback ports, its database and
cookie secret in a temporary folder, the Python configurable-http-proxy, LECTURE_FAST=1
(deploy/jupyterhub/localhub.py). Alice and Bob log in through the hub's login form at the same
time; each user's server (jupyterhub-singleuser) opens on the app at /user/<name>/lecture/
(jupyter-server-proxy running ``python -m voila_app``): the landing page lists every notebook,
a dashboard comes from our template and its kernel answers over the websocket route through
both proxies. Neither user can reach the other's server, pages or kernel, and nobody logged out
can; stopping the hub leaves no process behind.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest
from markupsafe import escape
from traitlets.config import Config

from conftest import ARTIFACTS, REPO, fast_env, notebook_paths
from voila_app import landing

sys.path.insert(0, str(REPO / "deploy" / "jupyterhub"))
from localhub import HubProcess  # noqa: E402

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

USERS = ("alice", "bob")


def run_coroutine(coroutine):
    """``asyncio.run`` on a thread of its own: the session's sync Playwright (browser tests run
    earlier in the same pytest session) keeps an event loop running on the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
KERNEL_WS_PROTOCOL = "v1.kernel.websocket.jupyter.org"    # what JupyterLab's and Voila's front ends ask for
SERVER_CONFIG = REPO / "deploy" / "jupyter-config" / "jupyter_server_config.py"


@pytest.fixture(scope="module")
def hub(kernel_name, tmp_path_factory):
    hub = HubProcess(tmp_path_factory.mktemp("hub"), ARTIFACTS / "jupyterhub.log", fast=True)
    try:
        hub.wait_ready()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def sessions(hub):
    """Each user logged in (the hub's login form, with its _xsrf token) and their server started."""
    sessions = {name: hub.login(name) for name in USERS}
    with ThreadPoolExecutor(len(USERS)) as pool:       # as a class does: at the same time
        list(pool.map(lambda name: hub.open_server(sessions[name], name), USERS))
    return sessions


def quickest_notebook() -> Path:
    """The notebook that runs quickest (Kronecker spectra), so the suite stays short."""
    paths = notebook_paths()
    return next((p for p in paths if "kronecker" in p.name), paths[0])


@pytest.fixture(scope="module")
def dashboards(hub, sessions):
    """Each user's dashboard page for the same notebook, opened at the same time: name -> response."""
    notebook = quickest_notebook().name

    def open_dashboard(name):
        return sessions[name].get(f"{hub.app_url(name)}voila/render/{notebook}", timeout=300)

    with ThreadPoolExecutor(len(USERS)) as pool:
        return dict(zip(USERS, pool.map(open_dashboard, USERS)))


def kernel_id(page) -> str:
    return re.search(r'"kernelId": "([0-9a-f-]{36})"', page.text).group(1)


async def kernel_info(hub: HubProcess, session, owner: str, kernel_id: str) -> dict:
    """Open ``owner``'s kernel websocket through the hub's proxy with ``session``'s cookies, as
    a dashboard's front end does (the v1 kernel protocol: its subprotocol, binary frames), and
    ask for kernel_info; the reply's content."""
    from jupyter_server.services.kernels.connection.base import (deserialize_msg_from_ws_v1,
                                                                 serialize_msg_to_ws_v1)
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    url = hub.app_url(owner).replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookies}, request_timeout=30),
                                   subprotocols=[KERNEL_WS_PROTOCOL])
    try:
        # a browser drops a websocket whose handshake does not name the subprotocol it asked for
        assert conn.selected_subprotocol == KERNEL_WS_PROTOCOL
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "",
                  "session": uuid.uuid4().hex, "date": "", "version": "5.3"}
        parts = [json.dumps(part).encode() for part in (header, {}, {}, {})]
        await conn.write_message(serialize_msg_to_ws_v1(parts, "shell"), binary=True)
        while True:
            raw = await asyncio.wait_for(conn.read_message(), 60)
            assert raw is not None, "the kernel websocket closed without a reply"
            channel, parts = deserialize_msg_from_ws_v1(raw)
            reply_header, parent = json.loads(parts[0]), json.loads(parts[1])
            if reply_header["msg_type"] == "kernel_info_reply" and parent.get("msg_id") == msg_id:
                return json.loads(parts[3])
    finally:
        conn.close()


def test_each_user_gets_the_landing_page_with_every_notebook(hub, sessions):
    for name, session in sessions.items():
        page = session.get(f"{hub.url}/user/{name}/", timeout=60)      # the server opens on the app
        assert page.status_code == 200 and page.url == hub.app_url(name)
        assert 'id="lecture-cards"' in page.text, "our template's landing page (voila_app.landing cards)"
        for path in notebook_paths():
            assert str(escape(landing.read_card(path)["title"])) in page.text, (name, path.name)
            # each card links into this user's own server
            assert f'href="/user/{name}/lecture/voila/render/{path.name}"' in page.text, (name, path.name)


def test_each_user_gets_a_live_dashboard_from_our_template(hub, sessions, dashboards):
    notebook = quickest_notebook().name
    for name, page in dashboards.items():
        assert page.status_code == 200 and page.url == f"{hub.app_url(name)}voila/render/{notebook}"
        text = page.text
        assert 'class="lecture-nav"' in text and f'data-base-url="/user/{name}/lecture/voila/"' in text
        assert "from lecture_lib" not in text, "strip_sources: the page carries no code"
        # the page's kernel answers over the websocket route through the hub's proxy
        reply = run_coroutine(kernel_info(hub, sessions[name], name, kernel_id(page)))
        assert reply["status"] == "ok" and reply["implementation"] == "ipython"
    assert kernel_id(dashboards["alice"]) != kernel_id(dashboards["bob"])
    # each user's server runs Voila with that user's own kernel
    for name in USERS:
        cmdlines = [p.cmdline() for p in hub.user_processes(name)]
        assert sum(c[1:3] == ["-m", "voila_app"] for c in cmdlines) == 1, cmdlines
        assert sum("ipykernel_launcher" in c for c in cmdlines) == 1, cmdlines


def test_a_user_cannot_reach_another_users_server(hub, sessions, dashboards):
    import requests
    from tornado.httpclient import HTTPClientError

    alice = sessions["alice"]
    bobs_server = f"{hub.url}/user/bob/"
    for path in ("", "lecture/", f"lecture/voila/render/{quickest_notebook().name}", "lecture/api/kernels",
                 "api/kernels", "lab"):
        response = alice.get(bobs_server + path, timeout=60)
        assert response.status_code == 403, (path, response.status_code, response.url)
        assert "lecture-card" not in response.text and "kernelId" not in response.text
    with pytest.raises(PermissionError):
        hub.login("mallory", password="not the password")
    bobs_kernel = kernel_id(dashboards["bob"])
    with pytest.raises(HTTPClientError) as refused:       # bob's kernel, with alice's cookies
        run_coroutine(kernel_info(hub, alice, "bob", bobs_kernel))
    assert refused.value.code == 403, refused.value
    # nobody logged in: pages send to the hub's login page, the kernel's websocket is refused
    anonymous = requests.Session()
    page = anonymous.get(hub.app_url("alice"), timeout=60)
    assert page.url.startswith(f"{hub.url}/hub/login") and "lecture-card" not in page.text
    with pytest.raises(HTTPClientError) as refused:
        run_coroutine(kernel_info(hub, anonymous, "bob", bobs_kernel))
    assert refused.value.code == 403, refused.value


def test_idle_servers_are_culled_by_the_standard_service(hub):
    cmdlines = [" ".join(p.cmdline()) for p in hub.processes()]
    assert any("-m jupyterhub_idle_culler --timeout=3600" in c for c in cmdlines), cmdlines
    # it has the scopes it needs: the hub answered its first look at the users' servers
    assert re.search(r"200 GET /hub/api/users\S* \(jupyterhub-idle-culler-service@", hub.log(None))


def test_stopping_the_hub_stops_every_server_and_kernel(hub, sessions):
    started = hub.processes()
    # the hub, its proxy, the culler, and per user: jupyterhub-singleuser, Voila, a kernel
    assert len(started) >= 3 + 2 * 3, [p.cmdline() for p in started]
    survivors = hub.stop()
    assert survivors == [], f"processes left after the hub stopped: {survivors}\n{hub.log()}"
    assert hub.proc.returncode is not None


def test_the_suite_installs_the_hub_extra():
    """``./lecture test`` installs [app,test]: [test] must carry every [hub] requirement."""
    from test_environment import pyproject, requirement

    extras = pyproject()["project"]["optional-dependencies"]
    assert {requirement(r) for r in extras["hub"]} <= {requirement(r) for r in extras["test"]}


# --- Binder: postBuild and the README's badge ------------------------------------------------------

BINDER_BADGE = re.compile(r"\(https://mybinder\.org/v2/gh/[^/\s]+/[^/\s]+/HEAD\?urlpath=([^)\s]+)\)")


def test_post_build_is_an_executable_bash_script():
    script = REPO / "postBuild"
    assert os.access(script, os.X_OK), "repo2docker runs postBuild only when it is executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_binder_badge_opens_the_app():
    match = BINDER_BADGE.search((REPO / "README.md").read_text())
    assert match, "README: a Binder badge (OWNER/REPO until the repository is on GitHub)"
    urlpath = unquote(match.group(1))
    namespace = {"c": Config(), "__file__": str(SERVER_CONFIG)}
    exec(SERVER_CONFIG.read_text(), namespace)                  # the file jupyter-server-proxy reads
    assert urlpath.strip("/") in namespace["c"].ServerProxy.servers, urlpath   # the app's own path


def test_binder_image_serves_the_app_after_post_build(tmp_path, artifacts_dir):
    """postBuild in a scratch copy of the repository, then a Jupyter Server set up as Binder's
    (the environment's config folder on the path, a /user/<name>/ prefix, token auth) serves the
    landing page at the badge's URL; stopping the server leaves no process behind."""
    import psutil
    import requests
    from localhub import free_ports

    scratch = tmp_path / "repo"
    shutil.copytree(REPO, scratch, ignore=shutil.ignore_patterns(
        ".git", ".venv", "test-artifacts", "__pycache__", "*.egg-info", "student", "out", ".ipynb_checkpoints"))
    prefix = tmp_path / "env"
    env = dict(fast_env(), NB_PYTHON_PREFIX=str(prefix))
    for _ in range(2):                                                   # idempotent
        result = subprocess.run(["bash", str(scratch / "postBuild")], cwd=scratch, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    config = (prefix / "etc" / "jupyter" / "jupyter_server_config.py").read_text()
    assert config.count("load_subconfig(") == 1 and str(scratch / "deploy") in config

    port, token, base = free_ports(1)[0], uuid.uuid4().hex, "/user/binder-test/"
    env["JUPYTER_CONFIG_PATH"] = str(prefix / "etc" / "jupyter")         # as the image's own prefix
    log_path = artifacts_dir / "binder-server.log"
    log = open(log_path, "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("jupyter-server")), "--no-browser",
                               "--allow-root", f"--port={port}", f"--ServerApp.base_url={base}",
                               f"--IdentityProvider.token={token}"],
                              cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = {}
    try:
        session = requests.Session()
        session.headers["Authorization"] = f"token {token}"
        url = f"http://127.0.0.1:{port}{base}lecture/"
        deadline = time.monotonic() + 120
        while True:
            try:
                page = session.get(url, timeout=120)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.5)
        started = {p.pid: p for p in psutil.Process(server.pid).children(recursive=True)}
        assert page.status_code == 200, (page.status_code, log_path.read_text()[-3000:])
        assert 'id="lecture-cards"' in page.text
        for path in notebook_paths():
            assert f'href="{base}lecture/voila/render/{path.name}"' in page.text
        assert any(p.cmdline()[1:3] == ["-m", "voila_app"] for p in started.values())
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()
        gone, alive = psutil.wait_procs(list(started.values()), timeout=30)
        for p in alive:
            p.kill()
    assert not alive, f"left running after the server stopped: {[p.cmdline() for p in alive]}"


# --- one app path everywhere: the hub, Zero to JupyterHub, Binder ----------------------------------

def quantity_bytes(text: str) -> float:
    """A Kubernetes memory quantity as Zero to JupyterHub writes it (800M, 3.5G) in bytes."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", str(text)).groups()
    return float(number) * 1000 ** " KMGT".index(unit or " ")


def test_hub_and_z2jh_open_the_app_that_the_server_config_serves():
    import yaml

    server = {"c": Config(), "__file__": str(SERVER_CONFIG)}
    exec(SERVER_CONFIG.read_text(), server)
    app_path = f"/{next(iter(server['c'].ServerProxy.servers))}/"
    assert server["c"].ServerApp.default_url == app_path

    hub_config = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
    hub = {"c": Config(), "__file__": str(hub_config)}
    exec(hub_config.read_text(), hub)
    assert hub["c"].Spawner.default_url == app_path
    assert hub["c"].Spawner.cmd[0].endswith("jupyterhub-singleuser")

    values = yaml.safe_load((REPO / "deploy" / "z2jh" / "config.yaml").read_text())
    single = values["singleuser"]
    assert single["cmd"] == "jupyterhub-singleuser" and single["defaultUrl"] == app_path
    assert single["storage"]["type"] == "none"
    assert 0 < quantity_bytes(single["memory"]["guarantee"]) < quantity_bytes(single["memory"]["limit"])
    assert 0 < single["cpu"]["guarantee"] <= single["cpu"]["limit"]
    assert values["cull"]["enabled"] is True
    # every LECTURE_ setting the chart passes is one the server configuration reads
    for name in single["extraEnv"]:
        if name.startswith("LECTURE_"):
            assert name in SERVER_CONFIG.read_text(), name
