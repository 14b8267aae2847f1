"""HTML of the static site: a notebook's page (prose with math as MathML, outputs, panels) and the landing page.

Math is typeset when the site is built (LaTeX -> MathML, ``latex2mathml``), which every current browser draws
natively: no renderer to ship, nothing to load, nothing to wait for. Code cells are hidden as in the app;
their outputs are shown, and a panel's output becomes a static panel (``assets/page.js`` draws it).
"""
from __future__ import annotations

import html
import json

from latex2mathml.converter import convert as _latex_to_mathml
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ASSETS = ("plotly.min.js", "scrub.js", "page.js", "page.css")
unconverted: list[str] = []          # LaTeX that latex2mathml could not read (shown as text, reported)


def mathml(tex: str, display: bool) -> str:
    try:
        return _latex_to_mathml(tex.strip(), display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - shown as source, listed by the exporter
        unconverted.append(tex)
        return f"<code class='static-tex'>{html.escape(tex)}</code>"


class _MathRenderer(IPythonRenderer):
    def block_math(self, body: str) -> str:
        return mathml(body, True)

    def inline_math(self, body: str) -> str:
        return mathml(body, False)

    def latex_environment(self, name: str, body: str) -> str:
        return mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)


def markdown(source: str) -> str:
    return MarkdownWithMath(renderer=_MathRenderer(escape=False, exclude_anchor_links=True)).render(source)


def _json_script(data) -> str:
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")            # no early end of the <script> element


def data_script(spec: dict) -> str:
    """A panel's data as a script file: loads from ``file://`` (a fetch of JSON would not), parsed only when run."""
    return f"window.LecturePanelData.push({_json_script(spec)});\n"


def read_data_script(text: str) -> dict:
    """The panel data a :func:`data_script` file carries (for tests and the benchmark)."""
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


def panel_html(spec: dict, live_href: str, data_src: str) -> str:
    """A panel: title, caption, one range input per precomputed control, its figures, notes, the live-app note."""
    n = spec["number"]
    scrubs = "".join(
        f"<label class='static-scrub' data-dim='{d}'>{html.escape(dim['label'])} "
        f"<input aria-label='{html.escape(dim['label'], quote=True)}'> <span class='static-scrub-value'></span></label>"
        for d, dim in enumerate(spec["dims"]))
    figures = "".join(f"<div class='static-figure' data-figure='{k}'></div>" for k in range(len(spec["figures"])))
    grid = " × ".join(f"{html.escape(d['label'])} ({len(d['labels'])} values)" for d in spec["dims"])
    if spec["fixed"]:
        fixed = ", ".join(f"{html.escape(c['label'])} = {html.escape(c['value'])}" for c in spec["fixed"])
        left = f"Left at the notebook's defaults here: {fixed}."
    else:
        left = "Every control of this panel is precomputed here."
    what = f"Precomputed over {grid}." if grid else "Shown at its default settings (this panel only makes sense live)."
    note = (f"<div class='static-live-note'>{what} {left} "
            f"<a href='{html.escape(live_href, quote=True)}'>Panel {n} in the live app</a> moves every control.</div>")
    # its height before it is drawn (it is laid out only near the screen: page.css), so the page does not jump
    height = sum(f.get("layout", {}).get("height") or 450 for f in spec["figures"]) + 260
    return (f"<section class='static-panel' id='panel-{n}' data-panel='{n}' style='contain-intrinsic-size: auto {height}px' "
            f"data-src='{html.escape(data_src, quote=True)}'>"
            f"<h3>{spec['title']}</h3><div class='static-caption'>{spec['caption']}</div>"
            f"<div class='static-controls'>{scrubs}</div>{figures}<div class='static-notes'></div>{note}"
            f"</section>")


def widget_html(model_id: str, states: dict) -> str:
    """A widget that is not a panel (a saved table, a box of HTML), drawn from the notebook's widget state:
    boxes and HTML/labels are kept, live-only controls (buttons, progress bars) left out."""
    model = states.get(model_id)
    if model is None:
        return ""
    name, state = model.get("model_name", ""), model.get("state", {})
    classes = " ".join(html.escape(c, quote=True) for c in state.get("_dom_classes", []))
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div class='{classes}'>{state.get('value', '')}</div>"
    if name == "LabelModel":
        return f"<div class='{classes}'>{html.escape(state.get('value', ''))}</div>"
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        inner = "".join(widget_html(ref.removeprefix("IPY_MODEL_"), states) for ref in state.get("children", []))
        row = " style='display:flex;gap:12px;align-items:center'" if name == "HBoxModel" else ""
        return f"<div class='{classes}'{row}>{inner}</div>" if inner.strip() else ""
    return ""


def output_html(output: dict, panel_specs: dict, live_href, data_src, states: dict | None = None) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return f"<pre>{html.escape(''.join(output.get('text', '')))}</pre>"
    data = output.get("data", {})
    view = data.get(WIDGET_VIEW)
    if view is not None:
        spec = panel_specs.get(view.get("model_id"))
        if spec is None:
            return widget_html(view.get("model_id"), states or {})
        return panel_html(spec, live_href(spec), data_src(spec))
    if "text/html" in data:
        value = data["text/html"]
        return "".join(value) if isinstance(value, list) else value
    if "text/markdown" in data:
        value = data["text/markdown"]
        return f"<div class='static-md'>{markdown(''.join(value) if isinstance(value, list) else value)}</div>"
    if "image/png" in data:
        return f"<img alt='' src='data:image/png;base64,{data['image/png'].strip()}'>"
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def notebook_body(nb, panel_specs: dict, live_href, data_src) -> str:
    states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f"<div class='static-md'>{markdown(cell.source)}</div>")
        elif cell.cell_type == "code":
            outs = "".join(output_html(o, panel_specs, live_href, data_src, states) for o in cell.get("outputs", []))
            if outs:
                parts.append(f"<div class='static-output'>{outs}</div>")
    return "\n".join(parts)


def document(title: str, body: str, provenance: str, scripts: bool) -> str:
    js = ("<script>window.LecturePanelData = [];</script><script src='assets/plotly.min.js'></script>"
          "<script src='assets/scrub.js'></script><script src='assets/page.js'></script>") if scripts else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><link rel='stylesheet' href='assets/page.css'></head><body><main>"
            f"<nav class='static-top'><a href='index.html'>← all notebooks</a></nav>"
            f"{provenance}{body}{provenance if scripts else ''}</main>{js}</body></html>")


def landing(cards: list[dict], provenance: str) -> str:
    items = "".join(
        f"<div class='static-card'><a class='title' href='{html.escape(c['href'], quote=True)}'>"
        f"{html.escape(c['number'])} · {html.escape(c['title'])}</a>"
        f"<div class='question'>{html.escape(c['question'])}</div></div>" for c in cards)
    body = (f"<h1>Lecture 5 Explorables</h1><p>Real training runs, precomputed and scrubbed in your browser: "
            f"no server, no kernel. Each panel notes which controls it covers; the live app moves them all.</p>"
            f"<div class='static-cards'>{items}</div>")
    return document("Lecture 5 Explorables", body, provenance, scripts=False).replace(
        "<nav class='static-top'><a href='index.html'>← all notebooks</a></nav>", "")
