"""``./lecture export``: the static site, built at fast settings, opened from ``file://`` in Chromium.

Every page: no request leaves the site (each is blocked and counted), every figure draws, the math is
typeset (no raw ``$...$``), no console errors, and each range input moved by keyboard shows exactly the
data the page carries for that position. A sample of grid points is recomputed here with the library and
compared with what the pages carry.
"""
from __future__ import annotations

import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import SESSION_CACHE, notebook_paths

RAW_MATH = re.compile(r"\$[^$\s][^$]*\$")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from voila_app import export

    out = tmp_path_factory.mktemp("site")
    summary = export.export(out, fast=True, notebooks=notebook_paths(), jobs=2, cache_dir=SESSION_CACHE,
                            command="./lecture export --fast")
    return out, summary


def pages(out: Path) -> list[Path]:
    return sorted(out.glob("*.html"))


def panel_specs(page: Path) -> list[dict]:
    from voila_app.static_site.page import read_data_script

    files = re.findall(r"data-src='([^']*)'", page.read_text(encoding="utf-8"))
    return [read_data_script((page.parent / html.unescape(f)).read_text(encoding="utf-8")) for f in files]


def decode(item):
    from voila_app.static_site.capture import decode as decode_text
    return np.asarray(item) if not isinstance(item, str) else decode_text(item)


def test_site_has_every_page_assets_once_and_relative_links(site):
    out, summary = site
    names = {p.name for p in pages(out)}
    assert names == {"index.html"} | {p.stem + ".html" for p in notebook_paths()}
    assert sorted(f.name for f in out.rglob("plotly*.js")) == ["plotly.min.js"]
    for page in pages(out):
        text = page.read_text(encoding="utf-8")
        for attr, target in re.findall(r"\b(src|href)='([^']*)'", text):
            if attr == "href" and target.startswith("http://localhost:8866/"):
                continue                                # the link to the live app, never loaded by the page
            assert not re.match(r"^([a-z]+:|//|/)", target) or target.startswith("data:image/"), \
                f"{page.name}: {attr}={target} is not relative"
        assert "Precomputed" in text and "lecture_lib" in text and "./lecture export --fast" in text
    assert summary["unconverted_math"] == 0
    assert summary["total_bytes"] < 25e6


def test_site_ships_the_partial_plotly_bundle_of_plotlys_own_version(site):
    """The pages draw only cartesian traces: the site carries plotly.js's cartesian bundle (a third of the full
    one's size and evaluation time), of the plotly.js version plotly (Python) bundles, with the trace types
    export.py believes it registers; a trace type outside it falls back to the full bundle."""
    from plotly.offline.offline import get_plotlyjs_version

    from voila_app import export, plotly_partial
    out, summary = site
    text = export.PLOTLY_PARTIAL.read_text(encoding="utf-8")
    assert plotly_partial.partial_version(text) == get_plotlyjs_version()
    assert set(re.findall(r'moduleType:"trace",name:"([a-z0-9]+)"', text)) == export.PARTIAL_TRACE_TYPES
    assert summary["plotly_bundle"] == export.PLOTLY_PARTIAL.name
    assert (out / "assets" / "plotly.min.js").read_bytes() == export.PLOTLY_PARTIAL.read_bytes()
    assert export.plotly_bundle({"scatter", "scattergl"}).name == "plotly.min.js"
    assert export.plotly_bundle({"scatter", "heatmap", "bar"}) == export.PLOTLY_PARTIAL


def test_every_panel_has_a_static_figure(site):
    out, _ = site
    for nb in notebook_paths():
        page = out / (nb.stem + ".html")
        specs = panel_specs(page)
        assert specs, f"{page.name} has no panel"
        assert [s["number"] for s in specs] == list(range(1, len(specs) + 1)), page.name
        for s in specs:
            assert len(s["frames"]) == int(np.prod(s["shape"])) and s["figures"]
            assert "in the live app" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [p.stem + ".html" for p in notebook_paths()] + ["index.html"])
def test_page_works_offline_from_disk(site, chromium, name):
    out, _ = site
    from browser_helpers import close_context, new_page

    context, page, watcher = new_page(chromium)
    outside = []
    site_url = (out.resolve().as_uri() + "/")

    def route(r):
        if r.request.url.startswith(site_url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    try:
        page.goto(site_url + name)
        if name == "index.html":
            assert page.locator(".static-card a").count() == len(notebook_paths())
        else:
            check_page(page, out / name)
        assert not RAW_MATH.search(page.inner_text("body")), f"{name}: raw $...$ in the page"
        assert outside == [], f"{name}: requests outside the site: {outside}"
        assert watcher.errors == [], f"{name}: {watcher.errors}"
    finally:
        close_context(context)


def check_page(page, path: Path) -> None:
    specs = {s["number"]: s for s in panel_specs(path)}
    page.wait_for_function("() => document.querySelectorAll('section.static-panel[data-ready]').length === "
                           f"{len(specs)}", timeout=60_000)
    page.wait_for_function("() => Array.from(document.querySelectorAll('.static-figure'))"
                           ".every(d => d.dataset.drawn === '1' && d.querySelector('.main-svg'))", timeout=60_000)
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('.static-figure')).map(d =>
        Array.from(d.querySelectorAll('.scatterlayer .trace path, .heatmaplayer image, .barlayer path'))
             .some(p => (p.getAttribute('d') || p.getAttribute('href') || 'xxxxxxxxx').length > 8))""")
    assert all(drawn), f"{path.name}: figures without a drawn trace: {[i for i, d in enumerate(drawn) if not d]}"
    assert page.locator("math").count() > 0, f"{path.name}: no typeset math"
    assert page.locator("code.static-tex").count() == 0
    # every family decoded and its axes fixed before the first move (in idle time): from then on, a move of a panel
    # whose positions share their layout swaps data only, with no relayout (no jump of the axes, no new ticks)
    page.wait_for_function("() => Array.from(document.querySelectorAll('section.static-panel'))"
                           ".every(s => s.dataset.prepared === '1')", timeout=30_000)
    page.evaluate("""() => document.querySelectorAll('.static-figure').forEach(d => {
        d.dataset.relayouts = '0';
        d.on('plotly_relayout', () => { d.dataset.relayouts = String(+d.dataset.relayouts + 1); }); })""")
    for number, spec in specs.items():
        if len(spec["dims"]) > 1:
            assert_axes_fit_the_family(page.locator(f"section#panel-{number}"), spec, f"{path.name} panel {number}")
    moved = 0
    for number, spec in specs.items():
        section = page.locator(f"section#panel-{number}")
        for d, dim in enumerate(spec["dims"]):
            if d == 1 and not spec["layouts"]:
                relayouts = section.evaluate("(s) => Array.from(s.querySelectorAll('.static-figure'), "
                                             "d => +d.dataset.relayouts)")
                assert not any(relayouts), f"{path.name} panel {number}: moves relayouted its figures {relayouts}"
            box = section.locator(f".static-scrub[data-dim='{d}']")
            slider = box.locator("input")
            slider.scroll_into_view_if_needed()
            slider.focus()
            at_end = dim["index"] >= len(dim["labels"]) - 1
            page.keyboard.press("ArrowLeft" if at_end else "ArrowRight")
            want = dim["index"] + (-1 if at_end else 1)
            assert int(box.get_attribute("data-index")) == want
            assert box.locator(".static-scrub-value").inner_text() == dim["labels"][want]
            position = int(section.get_attribute("data-position"))
            assert_shows(section, spec, position, f"{path.name} panel {number} {dim['name']}")
            moved += 1
            page.keyboard.press("ArrowRight" if at_end else "ArrowLeft")        # back to the default
            assert int(section.get_attribute("data-position")) == spec["default"]
            assert_shows(section, spec, spec["default"], f"{path.name} panel {number} {dim['name']} back")
        if len(spec["dims"]) == 1 and not spec["layouts"]:
            relayouts = section.evaluate("(s) => Array.from(s.querySelectorAll('.static-figure'), "
                                         "d => +d.dataset.relayouts)")
            assert not any(relayouts), f"{path.name} panel {number}: moves relayouted its figures {relayouts}"
    assert moved > 0, f"{path.name}: no panel has a slider"


def assert_axes_fit_the_family(section, spec: dict, what: str) -> None:
    """Each figure's autoranged linear y axis spans the family shown (the first slider's positions, the others at
    their defaults), padded as plotly pads, not every precomputed position (the live app's axes: another control
    computes a new family)."""
    shape, default = spec["shape"], np.unravel_index(spec["default"], spec["shape"])
    family = [int(np.ravel_multi_index((i, *default[1:]), shape)) for i in range(shape[0])]
    ranges = section.evaluate("(s) => Array.from(s.querySelectorAll('.static-figure'), d => "
                              "d.layout.yaxis && d.layout.yaxis.autorange === false ? d.layout.yaxis.range : null)")
    checked = 0
    for k, fig in enumerate(spec["figures"]):
        axis = fig["layout"].get("yaxis", {})
        if axis.get("type") != "linear" or "range" in axis or ranges[k] is None:
            continue
        on_y = {t for t, trace in enumerate(fig["data"]) if trace.get("yaxis", "y") == "y"}
        values = [np.asarray(trace["y"], dtype=float) for t, trace in enumerate(fig["data"])
                  if t in on_y and isinstance(trace.get("y"), list) and trace["y"]]
        for p in family:
            f = spec["frames"][p][k]
            values += [decode(spec["arrays"][a]) for t, a in zip(f["traces"], f["y"]) if t in on_y]
        v = np.concatenate([np.ravel(x) for x in values])
        v = v[np.isfinite(v)]
        low, high = v.min(), v.max()
        pad = 0.05 * (high - low)
        assert ranges[k][0] == pytest.approx(low - pad, abs=0.01 * pad + 1e-9), f"{what} figure {k}: {ranges[k]}"
        assert ranges[k][1] == pytest.approx(high + pad, abs=0.01 * pad + 1e-9), f"{what} figure {k}: {ranges[k]}"
        checked += 1
    assert checked, f"{what}: no autoranged linear y axis to check"


def assert_shows(section, spec: dict, position: int, what: str) -> None:
    """The section's figures hold exactly the page's data for ``position`` (and not the default's, when they differ)."""
    shown = section.evaluate("""(s) => Array.from(s.querySelectorAll('.static-figure')).map(d =>
        d.data.map(t => ({x: t.x ? Array.from(t.x) : null, y: t.y ? Array.from(t.y) : null,
                          z: t.z ? Array.from(t.z, r => Array.from(r)) : null})))""")
    arrays = spec["arrays"]
    differs = False
    for k, f in enumerate(spec["frames"][position]):
        base = spec["frames"][spec["default"]][k]
        for j, t in enumerate(f["traces"]):
            for axis in ("x", "y"):
                item = arrays[f[axis][j]]
                if not isinstance(item, str):           # categories, carried as JSON
                    assert shown[k][t][axis] == item, f"{what}: figure {k} trace {t} {axis}"
                    continue
                want = decode(item)
                got = np.asarray([np.nan if v is None else v for v in shown[k][t][axis]], dtype=float)
                assert got.shape == want.shape, f"{what}: figure {k} trace {t} {axis} has {got.shape}, not {want.shape}"
                assert np.allclose(got, want, equal_nan=True, rtol=0, atol=0), f"{what}: figure {k} trace {t} {axis}"
            differs |= t in base["traces"] and f["y"][j] != base["y"][base["traces"].index(t)]
        for j, t in enumerate(f.get("ztraces", [])):
            want = decode(arrays[f["z"][j]])
            got = np.asarray([np.nan if v is None else v for row in shown[k][t]["z"] for v in row], dtype=float)
            assert np.array_equal(got, want, equal_nan=True), f"{what}: figure {k} trace {t} z"
            differs |= f["z"][j] != base["z"][base["ztraces"].index(t)]
    assert differs or spec["frames"][position] == spec["frames"][spec["default"]], what


# panels whose grid is recomputed here: (notebook stem, module, panel function)
SAMPLES = [("05_weight_decay_equilibrium", "equilibrium_panels", "ratio_panel"),
           ("01_adaptive_methods", "adaptive_panels", "trajectories_panel")]


@pytest.mark.parametrize("stem,module,function", SAMPLES)
def test_recomputed_grid_points_match_the_page(site, monkeypatch, stem, module, function):
    import importlib

    from voila_app.static_site import capture

    out, _ = site
    monkeypatch.setenv("LECTURE_FAST", "1")
    monkeypatch.setenv("LECTURE_PANEL_RAISE", "1")
    panel = getattr(importlib.import_module(f"lecture_lib.viz.{module}"), function)()
    title = re.search(r"<h3>(.*?)</h3>", panel.title_html).group(1)
    spec = next(s for s in panel_specs(out / f"{stem}.html") if s["title"] == title)
    assert spec["dims"], f"{stem} {function} precomputes nothing"
    rng = np.random.default_rng(0)
    shape = spec["shape"]
    points = {spec["default"], int(np.prod(shape)) - 1, int(rng.integers(np.prod(shape)))}
    scrub_dims = 1 if hasattr(panel, "scrub") else 0
    for p in sorted(points):
        idx = np.unravel_index(p, shape)
        values = dict(panel.values)
        values.update({d["name"]: d["values"][i] for d, i in zip(spec["dims"][scrub_dims:], idx[scrub_dims:])})
        figs, _ = capture.position_figures(panel, values)
        figs = figs[idx[0]] if scrub_dims else figs[0]
        for k, f in enumerate(spec["frames"][p]):
            for j, t in enumerate(f["traces"]):
                name = spec["figures"][k]["data"][t].get("name")
                trace = next(tr for tr in figs[k].data if tr.name == name)
                for axis in ("x", "y"):
                    item = spec["arrays"][f[axis][j]]
                    if not isinstance(item, str):
                        assert list(getattr(trace, axis)) == item, f"{function} position {p} trace {t} {axis}"
                        continue
                    values = [np.nan if v is None else v for v in np.ravel(getattr(trace, axis))]
                    want = np.asarray(values, dtype=float).astype("<f2" if item[0] == "h" else "<f4")
                    got = decode(item)
                    assert np.array_equal(got, want.astype(float), equal_nan=True), \
                        f"{function} position {p} trace {t} {axis}"


def test_live_app_links_land_on_the_panel(site, chromium, voila_fixture_app):
    """The static page's "Panel N in the live app" link ends in ``#panel-N``; the Voilà page has that anchor."""
    from browser_helpers import close_context, open_page, wait_for_dashboard

    out, _ = site
    links = 0
    for path in pages(out):
        for number, href in re.findall(r"<section[^>]*id='panel-(\d+)'.*?<a href='([^']*)'>Panel \1 in the live app",
                                       path.read_text(encoding="utf-8"), flags=re.S):
            assert html.unescape(href).endswith(f"/voila/render/{path.stem}.ipynb#panel-{number}"), (path.name, href)
            links += 1
    assert links >= len(notebook_paths()), f"only {links} live-app links"
    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/scrub_demo.ipynb#panel-1")
    try:
        wait_for_dashboard(page)
        page.wait_for_selector(".lecture-panel#panel-1", state="attached", timeout=10_000)
        assert page.locator("[id^=panel-]").count() == page.locator(".lecture-panel").count()
        assert watcher.errors == [], watcher.errors
    finally:
        close_context(context)


def test_frames_swap_only_what_moves(site):
    """A heatmap or contour equal at every position stays in its figure (a z swap redraws the whole contour)."""
    out, _ = site
    contours = 0
    for path in pages(out):
        for spec in panel_specs(path):
            for k, fig in enumerate(spec["figures"]):
                for t, trace in enumerate(fig["data"]):
                    if trace.get("type") not in ("contour", "heatmap"):
                        continue
                    contours += 1
                    zs = {f[k]["z"][f[k]["ztraces"].index(t)] for f in spec["frames"] if t in f[k].get("ztraces", [])}
                    assert len(zs) != 1 or len(spec["frames"]) == 1, f"{path.name} panel {spec['number']}: constant z swapped"
                    assert zs or trace.get("z") is not None, f"{path.name} panel {spec['number']}: z nowhere"
    assert contours > 0


def test_tick_labels_stay_put_along_a_family(site):
    """The page fixes autoranged axes to the extent of the family shown (the first slider's positions), so a log
    axis gets one set of ticks for all of them (figures.unify_log_ticks), not one per position's data: no change
    of label style while scrubbing."""
    out, _ = site
    log_axes = 0
    for path in pages(out):
        for spec in panel_specs(path):
            rest = len(spec["frames"]) // spec["shape"][0] if spec["shape"] else 1
            for c, k in itertools.product(range(rest), range(len(spec["figures"]))):
                ticks = {json.dumps({key: v for key, v in spec["layouts"][f[k]["layout"]].items()
                                     if key.endswith((".tickvals", ".ticktext"))} if "layout" in f[k] else {},
                                    sort_keys=True) for f in spec["frames"][c::rest]}
                assert len(ticks) <= 1, \
                    f"{path.name} panel {spec['number']} figure {k}: ticks change along a family: {ticks}"
            log_axes += sum(1 for fig in spec["figures"] for key, axis in fig["layout"].items()
                            if key[1:5] == "axis" and isinstance(axis, dict) and axis.get("type") == "log")
    assert log_axes > 0


@pytest.mark.parametrize("log", [False, True])
def test_lines_are_thinned_to_the_pixels_they_cover(log):
    import plotly.graph_objects as go

    from voila_app.static_site.capture import MAX_MARKERS, pixel_buckets, thin_to_pixels

    x = np.arange(1.0, 3001.0)
    y = np.sin(x / 40.0) + np.random.default_rng(0).normal(0.0, 0.1, x.size)
    fig = go.Figure([go.Scatter(x=x, y=y, mode="lines", text=[str(v) for v in x]), go.Scatter(x=x, y=y, mode="markers")])
    fig.update_xaxes(type="log" if log else "linear")
    buckets = pixel_buckets(fig)
    thin_to_pixels(fig, buckets)
    line, markers = fig.data
    assert len(line.x) <= 2 * buckets + 2
    assert MAX_MARKERS // 2 < len(markers.x) <= MAX_MARKERS and np.array_equal(markers.y, y[::len(y) // len(markers.x)])
    assert np.all(np.diff(line.x) > 0) and line.x[0] == x[0] and line.x[-1] == x[-1]
    assert line.y.max() == y.max() and line.y.min() == y.min()
    assert list(line.text) == [str(v) for v in line.x]                      # per-point values follow the points
    # every slice of the axis keeps its extremes: the line covers the same pixels
    pos = np.log10(x) if log else x
    edges = np.linspace(pos[0], pos[-1], buckets + 1)
    kept = np.log10(line.x) if log else line.x
    for lo, hi in zip(edges[:-1:37], edges[1::37]):
        inside = (pos >= lo) & (pos < hi)
        if inside.any():
            k = (kept >= lo) & (kept < hi)
            assert line.y[k].max() == y[inside].max() and line.y[k].min() == y[inside].min()
