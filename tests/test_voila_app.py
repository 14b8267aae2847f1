"""The Voila app's pieces without a server: landing cards, configuration, template files."""
from __future__ import annotations

import json

import nbformat
import pytest

from conftest import NOTEBOOKS_DIR, notebook_paths
from voila_app import config, landing


def write_notebook(path, first_markdown: str, metadata: dict | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(first_markdown), nbformat.v4.new_code_cell("1 + 1"),
                nbformat.v4.new_markdown_cell("# Not the title\n\n*not the question*")]
    if metadata:
        nb.metadata["lecture"] = metadata
    nbformat.write(nb, path)


def test_card_from_first_markdown_cell(tmp_path):
    write_notebook(tmp_path / "07_new_topic.ipynb",
                   "# Momentum and **weight decay**\n\n*How does ρ change the equilibrium `‖w‖`?*\n\nMore text.")
    card = landing.read_card(tmp_path / "07_new_topic.ipynb")
    assert card == {"title": "Momentum and weight decay", "question": "How does ρ change the equilibrium ‖w‖?",
                    "number": "07", "path": "07_new_topic.ipynb"}


def test_card_metadata_wins_over_markdown(tmp_path):
    write_notebook(tmp_path / "01_a.ipynb", "# Markdown title\n\n*Markdown question?*",
                   {"title": "Metadata title", "question": "Metadata question?"})
    card = landing.read_card(tmp_path / "01_a.ipynb")
    assert (card["title"], card["question"]) == ("Metadata title", "Metadata question?")


def test_card_falls_back_to_file_name(tmp_path):
    write_notebook(tmp_path / "03_kronecker_spectra.ipynb", "Just prose, no heading.")
    card = landing.read_card(tmp_path / "03_kronecker_spectra.ipynb")
    assert card["title"] == "Kronecker spectra" and card["question"] == ""


def test_cards_list_every_notebook_in_order_with_links(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", ".hidden.ipynb"):
        write_notebook(tmp_path / name, f"# {name}\n\n*q?*")
    (tmp_path / "notes.txt").write_text("not a notebook")
    cards = landing.notebook_cards(tmp_path, base_url="/base/")
    assert [c["path"] for c in cards] == ["01_a.ipynb", "02_b.ipynb"]
    assert cards[0]["href"] == "/base/voila/render/01_a.ipynb"


def test_page_config_hook_adds_cards_on_the_tree_page_only():
    class ContentsManager:
        root_dir = str(NOTEBOOKS_DIR)

    class Log:
        def warning(self, *args):
            raise AssertionError(args)

    settings = {"contents_manager": ContentsManager()}
    tree = landing.page_config_hook({}, "/", settings, Log(), None, notebook_path="")
    assert [c["path"] for c in tree["lectureCards"]] == [p.name for p in notebook_paths()]
    page = landing.page_config_hook({}, "/", settings, Log(), None, notebook_path="01_x.ipynb")
    assert "lectureCards" not in page


def test_config_defaults_are_classroom_safe():
    c = config.build_config()
    assert c.Voila.ip == "127.0.0.1" and c.Voila.open_browser is False
    assert c.VoilaConfiguration.strip_sources is True and c.VoilaConfiguration.show_tracebacks is False
    assert c.VoilaConfiguration.template == "lecture" and c.VoilaConfiguration.classic_tree is True
    assert c.VoilaConfiguration.preheat_kernel is True and c.VoilaConfiguration.default_pool_size == 1
    assert c.MappingKernelManager.cull_idle_timeout == 1800 and c.MappingKernelManager.cull_connected is True
    assert "@jupyter-widgets/jupyterlab-manager" in c.VoilaConfiguration.extension_allowlist
    # a second copy of plotly.js (4.7 MB, for static plotly outputs no dashboard has) is not sent to every page
    assert "jupyterlab-plotly" not in c.VoilaConfiguration.extension_allowlist
    assert config.build_config(pool_size=0).VoilaConfiguration.preheat_kernel is False
    with pytest.raises(ValueError):
        config.build_config(pool_size=-1)


def test_template_files_and_search_path():
    template = config.DATA_DIR / "voila" / "templates" / config.TEMPLATE
    assert json.loads((template / "conf.json").read_text())["base_template"] == "lab"
    for name in ("tree.html", "index.html.j2"):
        text = (template / name).read_text()
        assert "cdn." not in text, f"{name} must not load anything from a CDN (the app runs offline)"
    env = config.template_environment({"JUPYTER_PATH": "/elsewhere"})
    assert env["JUPYTER_PATH"].split(":") == [str(config.DATA_DIR), "/elsewhere"]


def test_launcher_arguments():
    from voila_app.__main__ import parse_args

    args = parse_args(["--port", "9000", "--fast", "--pool-size", "0"])
    assert (args.port, args.fast, args.pool_size, args.ip) == (9000, True, 0, "127.0.0.1")


def test_preheat_gives_one_dashboard_a_pool_of_its_own():
    """``--preheat 01_x.ipynb=30``: the dashboard a class opens at once gets 30 pre-heated kernels, the
    others keep ``--pool-size``; pre-heating is on even with ``--pool-size 0``."""
    from voila_app.__main__ import parse_args, preheat_sizes

    sizes = preheat_sizes(parse_args(["--preheat", "01_x.ipynb=30", "--preheat", "02_y.ipynb=0"]).preheat)
    assert sizes == {"01_x.ipynb": 30, "02_y.ipynb": 0}
    c = config.build_config(pool_size=0, preheat=sizes)
    assert c.VoilaConfiguration.preheat_kernel is True
    assert c.VoilaKernelManager.kernel_pools_config == {"default": {"pool_size": 0}, "01_x.ipynb": {"pool_size": 30},
                                                        "02_y.ipynb": {"pool_size": 0}}
    assert "kernel_pools_config" not in config.build_config(pool_size=1).VoilaKernelManager
    # taken pre-heated kernels are replaced after --refill-delay seconds (Voila's fill_delay, default 1)
    assert config.build_config().VoilaKernelManager.fill_delay == 1.0
    assert config.build_config(refill_delay=120).VoilaKernelManager.fill_delay == 120.0
    assert parse_args(["--refill-delay", "90"]).refill_delay == 90.0
    with pytest.raises(ValueError, match="refill_delay"):
        config.build_config(refill_delay=-1)
    for bad in (["01_x.ipynb"], ["01_x=3"], ["01_x.ipynb=-1"], ["01_x.ipynb=many"]):
        with pytest.raises(ValueError, match="NOTEBOOK.ipynb=N"):
            preheat_sizes(bad)


def test_kernels_get_one_blas_thread_unless_the_server_says_otherwise():
    """The app's kernels train many small models: one thread each, as lab and the hub give them."""
    env = config.kernel_environment({})
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert config.kernel_environment({"OMP_NUM_THREADS": "4"})["OMP_NUM_THREADS"] == "4"


def test_kernels_build_figures_that_load_plotly_from_the_app():
    """The viz layer has no Voila code: the app names its FigureWidget class in the kernels' environment."""
    env = config.kernel_environment({"PYTHONPATH": "/elsewhere"})
    assert env["LECTURE_FIGURE_WIDGET"] == "voila_app.figure_widget:SharedBundleFigureWidget"
    assert env["PYTHONPATH"].split(":") == [str(config.REPO_DIR), "/elsewhere"]   # kernels can import it
    from voila_app.figure_widget import SharedBundleFigureWidget

    esm = SharedBundleFigureWidget._esm
    assert 'new URL(`static/${name}`, new URL(voila, here))' in esm                 # Voila's /voila/static/
    assert 'new URL(`lecture-static/${name}`, new URL(base, here))' in esm          # voila_app.jupyter_extension
    assert '"widgetbundle.js"' in esm and '"widgetbundle-full.js"' in esm
    assert "__CARTESIAN_TRACE_TYPES__" not in esm and '"heatmap", "histogram"' in esm


def test_a_redraw_reaches_the_page_in_two_messages_edit_ids_with_the_update_then_its_reset():
    """Plotly sends a figure's update as four messages (two edit ids, the update, its reset to None); the app's
    figures send two, and plotly's kernel side still accepts the page's report of the newest edit."""
    import plotly.graph_objects as go
    from voila_app.figure_widget import SharedBundleFigureWidget

    fig = SharedBundleFigureWidget(data=[go.Scatter(x=[0, 1], y=[0, 1]), go.Scatter(x=[0, 1], y=[2, 3])])
    sent = []
    fig._send = lambda msg, buffers=None: sent.append(msg["state"])
    with fig.batch_update():
        fig.data[1].y = [5, 6]
        fig.layout.title.text = "new"
    assert [set(state) for state in sent] == [{"_last_trace_edit_id", "_last_layout_edit_id", "_py2js_update"},
                                              {"_py2js_update"}]
    update = sent[0]["_py2js_update"]
    assert update["style_traces"] == [1] and update["layout_data"] == {"title.text": "new"}
    assert (update["trace_edit_id"], update["layout_edit_id"]) == (sent[0]["_last_trace_edit_id"],
                                                                   sent[0]["_last_layout_edit_id"])
    assert sent[1]["_py2js_update"] is None and fig._py2js_update is None
    assert fig._trace_edit_in_process and fig._layout_edit_in_process
    report = {"trace_edit_id": update["trace_edit_id"], "trace_deltas": [{"uid": t.uid} for t in fig.data]}
    fig._handler_js2py_traceDeltas({"new": report})
    assert not fig._trace_edit_in_process                     # the page's report of the newest edit ends it


def test_figures_get_plotlys_front_end_with_the_cartesian_plotly_js():
    """widgetbundle.js as the app serves it: plotly's FigureWidget code unchanged around plotly.js's cartesian
    bundle of plotly's own plotly.js version (a third of the size; every figure of the lecture is cartesian)."""
    from voila_app import plotly_partial
    from voila_app.bundle import BUNDLE_NAME, FULL_BUNDLE_NAME, figure_bundles

    assert plotly_partial.partial_version() == plotly_partial.plotlyjs_version()
    bundles = figure_bundles()
    full = bundles[FULL_BUNDLE_NAME].raw.decode("utf-8")
    cartesian = bundles[BUNDLE_NAME].raw.decode("utf-8")
    assert full == (config.plotly_bundle_dir() / BUNDLE_NAME).read_text(encoding="utf-8")
    partial = plotly_partial.PLOTLY_PARTIAL.read_text(encoding="utf-8")
    assert partial in cartesian and len(cartesian) < 0.4 * len(full)
    # only plotly.js's wrapper changed: with a marker for the partial bundle, what is left is the full bundle's
    # widget code, before and after its plotly.js
    marked = plotly_partial.cartesian_widget_bundle(full, "/*PARTIAL*/")
    before, after = marked.split("\n/*PARTIAL*/\n")
    head = before[:before.rindex("var ")]
    tail = after[after.index("});") + 3:]
    assert full.startswith(head) and full.endswith(tail) and "window.Plotly=" not in head + tail
    assert len(full) - len(head) - len(tail) > 0.9 * len(full)        # what went is plotly.js (most of it)
    assert "export{" in tail and "FigureView" in tail
    with pytest.raises(ValueError, match="wrapper"):
        plotly_partial.cartesian_widget_bundle("var x=1;export{x as default};", partial)


def test_kernels_and_server_skip_jsonschemas_iri_grammar():
    """rfc3987_syntax builds a grammar at import (0.9 s of CPU; the largest import of the server's start and of a
    kernel's first figure): an app kernel's first FigureWidget and the server's import of Voila leave it out."""
    import os
    import subprocess
    import sys

    code = ("import os, sys\n"
            "os.environ['LECTURE_FIGURE_WIDGET'] = 'voila_app.figure_widget:SharedBundleFigureWidget'\n"
            "from lecture_lib.viz import live_figures\n"
            "assert live_figures.figure_widget_class().__name__ == 'SharedBundleFigureWidget'\n"
            "import jupyter_events.logger, voila.app\n"        # the server's jsonschema import
            "assert 'jsonschema' in sys.modules and 'plotly.io._renderers' in sys.modules\n"
            "print(sorted(m for m in sys.modules if m.startswith(('rfc3987_syntax', 'lark'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=config.REPO_DIR,
                         env={**os.environ, "PYTHONPATH": str(config.REPO_DIR)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['rfc3987_syntax']", out.stdout      # marked missing (None), grammar never built
