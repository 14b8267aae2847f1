"""plotly.js's "cartesian" partial bundle, for the app's figures and the static site.

plotly's full plotly.js (4.8 MB) is the largest single item of opening a dashboard: the browser spends
0.8–1 s evaluating it once per page (docs/performance.md, "Opening a dashboard"). Every figure of the
lecture is a scatter, bar or heatmap, which plotly.js's cartesian bundle (1.5 MB, ``vendor/``, MIT; refresh
with ``scripts/update_plotly_partial.sh``) draws. The static site ships it as its plotly.js; the app serves
plotly's FigureWidget front end (``widgetbundle.js``) with its embedded plotly.js replaced by it
(:func:`cartesian_widget_bundle`), and the full bundle for a figure with another trace type.
The partial bundle must be the plotly.js version that plotly (Python) bundles: otherwise, or if plotly's
front end is not laid out as expected, the full bundle is used and a warning says why.
"""
from __future__ import annotations

import re
from pathlib import Path

PLOTLY_PARTIAL = Path(__file__).with_name("vendor") / "plotly-cartesian.min.js"
# the trace types the partial bundle registers (tests/test_export.py reads them out of the file)
PARTIAL_TRACE_TYPES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                                 "image", "pie", "scatter", "scatterternary", "violin"})


def partial_version(text: str | None = None) -> str | None:
    """The plotly.js version the partial bundle's header names."""
    text = PLOTLY_PARTIAL.read_text(encoding="utf-8")[:400] if text is None else text[:400]
    match = re.search(r"plotly\.js \(cartesian - minified\) v([0-9][0-9.]*)", text)
    return match.group(1) if match else None


def plotlyjs_version() -> str:
    """The plotly.js version plotly (Python) bundles."""
    from plotly.offline.offline import get_plotlyjs_version
    return get_plotlyjs_version()


def partial_matches() -> bool:
    return PLOTLY_PARTIAL.exists() and partial_version() == plotlyjs_version()


# plotly's widgetbundle.js is an esbuild ES module whose plotly.js is one CommonJS wrapper:
#   var LQ=fbe((DQ,hA)=>{(function(Q,ne){typeof hA=="object"&&hA.exports?hA.exports=ne():...})(..., ()=>{ ...
#   ... return window.Plotly=Q,Q})});
# (names minified). The wrapper is replaced by one that runs the partial bundle's UMD with module/exports.
_WRAPPER_START = re.compile(r"var (\w+)=(\w+)\(\((\w+),(\w+)\)=>\{\(function\(\w+,\w+\)\{typeof \4==\"object\"")
_WRAPPER_END = "})});"


def cartesian_widget_bundle(full: str, partial: str) -> str:
    """plotly's FigureWidget front end ``full`` with its plotly.js replaced by ``partial`` (a UMD bundle).
    Raises ValueError when ``full`` is not laid out as expected."""
    start = _WRAPPER_START.search(full)
    if start is None:
        raise ValueError("plotly.js's CommonJS wrapper was not found in widgetbundle.js")
    name, helper, exports, module = start.groups()
    if full.count("window.Plotly=") != 1:
        raise ValueError("widgetbundle.js does not set window.Plotly exactly once")
    end = full.find(_WRAPPER_END, full.index("window.Plotly=", start.end()))
    if end < 0 or full.count(f"{name}()") != 1:
        raise ValueError("the end of plotly.js's wrapper in widgetbundle.js was not found")
    wrapper = (f"var {name}={helper}(({exports},{module})=>{{(function(module,exports){{\n{partial}\n}})"
               f".call({exports},{module},{exports})}});")
    return full[:start.start()] + wrapper + full[end + len(_WRAPPER_END):]
