"""The notebooks in JupyterLab and in Notebook 7, in a real browser, as ``./lecture lab`` / ``./lecture notebook`` serve them.

For each front end: start it on a free loopback port with a token, serving a temporary copy of
``notebooks/`` (running cells must not write outputs into the repository), kernels with
LECTURE_FAST=1; open one notebook, run all cells from the Run menu, wait until every figure has
drawn, move a slider in two panels with the keyboard (focus the handle, press ArrowRight, as a
new user would) and see each panel's plot change; no console errors.

What these tests caught:
- Notebook 7 handles shortcuts in the capture phase (JupyterLab lets the focused element see a
  key first), and ArrowLeft/ArrowRight on a focused slider handle matched "collapse/expand the
  heading" (``.jp-Notebook.jp-mod-commandMode :focus``): sliders never moved by keyboard
  (``lecture_lib.viz.panel_view.KeysStayInControls``).
- Outside Voila every figure carried plotly's 5 MB front end in its widget state, evaluated per
  figure within anywidget's 2 seconds (``voila_app.jupyter_extension`` serves it once per page).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from browser_helpers import (close_context, PANEL_STATE_JS, new_page, slider_panels, slider_state, move_slider, SLIDER_HANDLE,
                             wait_until_settled)
from conftest import ARTIFACTS, NOTEBOOKS_DIR, REPO
from voila_app.jupyter_extension import BUNDLE_ROUTE, JUPYTER_ARGS
from voila_app.server import fast_env, free_port, wait_until_answers

pytestmark = pytest.mark.browser

TOKEN = "lecture-test-token"
NEWS_SETTINGS = "@jupyterlab/apputils-extension:notification"      # JupyterLab's plugin that asks about news
RUN_TIMEOUT_MS = 240_000      # every cell of a notebook with fast settings, on a busy 2-core machine
# Notebook 7 (7.6) raises this at every page load, on an empty notebook too and with every third-party
# front-end extension disabled: its shortcuts plugin reads its own settings before they are loaded when
# another plugin's settings change first (@jupyterlab/docmanager-extension). Upstream, not ours.
UPSTREAM_ERRORS = {"notebook": {"pageerror: Cannot read properties of undefined (reading 'schema')"}}

# each front end opens the notebook that exercises it most: 05 has the most figure kinds, 01 the
# panels whose sliders did not move in Notebook 7
CASES = [("lab", "05_weight_decay_equilibrium.ipynb"), ("notebook", "01_adaptive_methods.ipynb")]

# A figure has drawn when its plotly SVG holds a trace with real geometry (an empty trace draws "M0,0").
FIGURES_DRAWN_JS = """() => { const figs = Array.from(document.querySelectorAll('.lecture-figure'));
    const drawn = figs.filter(f => f.querySelector('.main-svg') && Array.from(f.querySelectorAll('.trace path'))
        .some(p => (p.getAttribute('d') || '').length > 8));
    return {figures: figs.length, drawn: drawn.length,
            panels: document.querySelectorAll('.lecture-panel').length,
            bare_panels: Array.from(document.querySelectorAll('.lecture-panel'))
                .filter(p => !p.querySelector('.lecture-figure')).length}; }"""
# The code cells' prompts: "[3]:" once run, "[*]:" while queued or running, "[ ]:" or "" before.
PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
    .map(e => e.textContent.trim())"""
PLOTS_JS = """(panel) => Array.from(panel.querySelectorAll('.js-plotly-plot .trace path'))
    .map(p => p.getAttribute('d')).join('|')"""


class JupyterProcess:
    """``jupyter lab`` or ``jupyter notebook`` on a free 127.0.0.1 port, with the lecture server extension."""

    def __init__(self, front: str, root: Path, log_path: Path):
        self.front, self.port = front, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = "LabApp" if front == "lab" else "JupyterNotebookApp"
        state = root.parent / "jupyter-state"       # settings, workspaces, config: none of the user's
        cmd = [sys.executable, "-m", "jupyter", front, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={root}", f"--{app}.user_settings_dir={state / 'settings'}",
               f"--{app}.workspaces_dir={state / 'workspaces'}", *JUPYTER_ARGS]
        env = fast_env(JUPYTER_CONFIG_DIR=str(state / "config"),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")
        # a session of its own, so that stop() ends the server and its kernels, and nothing else
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until_answers(self.proc, f"{self.url}/api/status?token={TOKEN}", f"jupyter {self.front}", self.log, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        self._log.close()

    def notebook_url(self, name: str) -> str:
        path = "lab/tree" if self.front == "lab" else "notebooks"
        return f"{self.url}/{path}/{name}?token={TOKEN}"


@contextlib.contextmanager
def running_jupyter(front: str, tmp_path: Path):
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = JupyterProcess(front, root, ARTIFACTS / f"jupyter-{front}.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def run_all_cells(page) -> None:
    """Run > Run All Cells once the kernel is idle, then wait until every code cell has run (its prompt shows a number).

    Clicked while the notebook is still connecting its kernel, the menu item can do nothing: after 15 s with no
    cell started it is clicked once more (nothing has run then, so nothing runs twice).
    """
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
    started = f"() => ({PROMPTS_JS})().some(p => p.includes('*') || /\\d/.test(p))"
    for attempt in range(2):
        page.keyboard.press("Escape")          # a menu left open by a first try
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(started, timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt:
                raise AssertionError("Run > Run All Cells started no cell") from None
    page.wait_for_function(f"() => {{ const p = ({PROMPTS_JS})(); return p.length > 0 && p.every(x => /\\[\\d+\\]/.test(x)); }}",
                           timeout=RUN_TIMEOUT_MS)


@pytest.mark.parametrize("front, name", CASES, ids=[front for front, _ in CASES])
def test_notebook_draws_and_sliders_redraw(chromium, kernel_name, tmp_path, front, name):
    with running_jupyter(front, tmp_path) as server:
        context, page, watcher = new_page(chromium)
        bundle_requests = []
        page.on("request", lambda r: bundle_requests.append(r.url) if r.url.endswith(BUNDLE_ROUTE) else None)
        try:
            page.goto(server.notebook_url(name), wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
            run_all_cells(page)
            page.screenshot(path=str(ARTIFACTS / f"jupyter-{front}-{Path(name).stem}.png"))
            text = page.inner_text(".jp-Notebook")
            assert "Traceback" not in text, f"{front}: a cell of {name} raised:\n{text[-3000:]}"

            # every figure draws (each panel has at least one)
            page.wait_for_function(f"() => {{ const s = ({FIGURES_DRAWN_JS})(); "
                                   "return s.figures > 0 && s.drawn === s.figures; }", timeout=120_000)
            state = page.evaluate(FIGURES_DRAWN_JS)
            assert state["panels"] >= 2 and state["bare_panels"] == 0, state
            # plotly's front end came once for the whole page, from the server extension
            assert len(bundle_requests) == 1, bundle_requests

            # two panels' sliders, moved by keyboard, change their plots
            panels = slider_panels(page)
            assert panels.count() >= 2, f"{name} has fewer than two panels with a slider"
            for i in range(2):
                panel = panels.nth(i)
                handle = panel.locator(SLIDER_HANDLE).first
                before_value, before_plots = slider_state(handle)[0], panel.evaluate(PLOTS_JS)
                generation = panel.evaluate(PANEL_STATE_JS)["generation"]
                # the panel's keys are its controls' once its KeysStayInControls has attached (the DOM hook)
                panel.locator(".lecture-controls[data-lm-suppress-shortcuts]").wait_for(state="attached",
                                                                                       timeout=30_000)
                move_slider(page, panel)
                assert slider_state(handle)[0] != before_value, (
                    f"{front}: panel {i}'s slider did not move: the keys went to "
                    + page.evaluate("document.activeElement.className"))
                outcome = wait_until_settled(page, panel, generation)
                assert outcome["outcome"] == "ok", outcome
                page.wait_for_function(f"([panel, before]) => ({PLOTS_JS})(panel) !== before",
                                       arg=[panel.element_handle(), before_plots], timeout=30_000)

            # no prompt about Jupyter's news over the notebook (deploy/jupyter-config/lab-settings): left to ask,
            # the front end shows it once the app has restored, long before the cells above have run
            assert page.get_by_text("official Jupyter news").count() == 0, f"{front}: the news prompt shows"
            if front == "lab":
                with urllib.request.urlopen(f"{server.url}/lab/api/settings/{NEWS_SETTINGS}?token={TOKEN}") as r:
                    fetch_news = json.load(r)["schema"]["properties"]["fetchNews"]["default"]
                assert fetch_news == "false", fetch_news

            errors = [e for e in watcher.errors if e not in UPSTREAM_ERRORS.get(front, set())]
            assert errors == [], f"{front}: JavaScript errors: {errors}"
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"jupyter-{front}-{Path(name).stem}-failed.png"))
            raise
        finally:
            close_context(context)
