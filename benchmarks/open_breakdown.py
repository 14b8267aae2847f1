"""Where the time goes while a dashboard opens: server, widget state, plotly's bundle, the browser's main thread.

Starts the app (``python -m voila_app``, one pre-heated kernel per notebook, ``--fast`` unless
``--full``, the result cache ``--cache-dir`` names) on a free loopback port and waits until Voila
logs every pool as filled (``--first-at filled``, the default: its pool kernels have *started*, and
are still executing their notebooks), or only until the server answers HTTP (``--first-at answers``:
a visitor who arrives the moment the app is up, before any pool kernel exists). The first dashboard
after start-up is opened once and timed (``first_open_s``, from its navigation; ``start_to_first_plot_s``
from the server's start: the one-time costs). Then, for each dashboard, once the server is quiet (its pre-heated kernels
have executed their notebooks), one visitor opens it in headless Chromium with Chrome's tracing
on, and the script reports, in seconds from the navigation:

- ``ttfb``: the first byte of the page (Voila's work before sending anything); ``html``: the last
  byte of the page (Voila streams the pre-heated kernel's rendered cells); ``dom``: DOMContentLoaded;
- ``ws_open``: the kernel websocket's first frame; ``state``: the frame carrying every widget's
  state (ipywidgets' ``update_states`` reply), with its size, the number of widget models, and
  how much of it is figure data (plotly ``FigureWidget`` models: traces and layout);
- ``http_kb_before_first_plot``: what the page downloaded over HTTP (as sent: compressed or not)
  before its first plot; the widget state comes over the websocket, apart;
- ``bundle``: plotly's front end (``widgetbundle.js``) fetched (start, end, bytes on the wire)
  and the main-thread time spent compiling and running it;
- ``first_plot``: the first plot trace drawn (the open time of the README); ``all_plots``: every
  figure of the page drawn;
- main-thread time before the first plot, split into scripting by source (Voila's and the
  widget managers' JavaScript, plotly's bundle, MathJax, ...), style and layout, paint, HTML
  parsing, garbage collection, and idle time (waiting for the server or the kernel).

``--beyond-pool``: then, for each dashboard, a visitor beyond its pool: one page holds the
pre-heated kernel (drawn), and a second visitor opens the dashboard at once, so Voila starts a fresh
kernel that imports everything and executes the notebook (reading results from the cache) while the
page waits; the pool's refill (``--refill-delay``, 1 s) starts beside it, as in class.
``beyond_pool_s``: that visitor's first plot, from its navigation.

Prints one block per dashboard; last line a JSON object. Usage::

    .venv/bin/python benchmarks/open_breakdown.py [--full] [--cache-dir DIR|off] [--only 05_weight_decay_equilibrium]
                                                   [--first-at filled|answers] [--beyond-pool]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))    # the browser helpers the tests use

from benchmarks._common import cache_entries, emit  # noqa: E402
from benchmarks.concurrent_visitors import close_contexts, settle  # noqa: E402
from browser_helpers import CHROMIUM, HAS_DRAWN_PATH_JS, PLOT_PATH, launch, new_page  # noqa: E402

TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink.user_timing",
                    "v8"]
# In the page before its scripts run: performance marks when the first plot and every figure have drawn.
MARKS_JS = """(() => {
  const drawn = """ + HAS_DRAWN_PATH_JS + """;
  // every figure of the panels (.lecture-figure: drawn or not yet, voila_app.figure_widget draws lazily)
  const all = () => { const figs = Array.from(document.querySelectorAll('.lecture-figure, .js-plotly-plot'));
    return figs.length > 0 && figs.every(f => Array.from(f.querySelectorAll('.scatterlayer .trace path, .heatmaplayer image, .barlayer path'))
      .some(p => (p.getAttribute('d') || p.getAttribute('href') || '').length > 8)); };
  const poll = () => {
    if (!performance.getEntriesByName('lecture-first-plot').length && drawn(""" + json.dumps(PLOT_PATH) + """))
      performance.mark('lecture-first-plot');
    if (performance.getEntriesByName('lecture-first-plot').length && all()) {
      performance.mark('lecture-all-plots'); return; }
    setTimeout(poll, 20);
  };
  poll();
})();"""
TIMES_JS = """() => { const nav = performance.getEntriesByType('navigation')[0];
  const mark = (n) => (performance.getEntriesByName(n)[0] || {}).startTime ?? null;
  return {ttfb: nav.responseStart, html: nav.responseEnd, dom: nav.domContentLoadedEventEnd,
          first_plot: mark('lecture-first-plot'), all_plots: mark('lecture-all-plots'),
          figures: document.querySelectorAll('.lecture-figure, .js-plotly-plot').length,
          html_bytes: nav.decodedBodySize, html_wire: nav.transferSize,
          resources: performance.getEntriesByType('resource').map(r => ({url: r.name, start: r.startTime,
            end: r.responseEnd, wire: r.transferSize, bytes: r.decodedBodySize}))}; }"""


# -- the widget state, read off the kernel websocket ------------------------------------------

def decode_frame(payload: str, opcode: int) -> dict | None:
    """A kernel websocket frame as ``{channel, msg_type, content, size}``: JSON text frames, or
    Jupyter's ``v1.kernel.websocket.jupyter.org`` binary frames (offsets, then the message parts)."""
    try:
        if opcode == 1:
            msg = json.loads(payload)
            return {"channel": msg.get("channel"), "msg_type": msg["header"]["msg_type"],
                    "content": msg.get("content", {}), "size": len(payload)}
        raw = base64.b64decode(payload)
        n = int.from_bytes(raw[:8], "little")
        offsets = [int.from_bytes(raw[8 * (i + 1):8 * (i + 2)], "little") for i in range(n)]
        parts = [raw[offsets[i]:offsets[i + 1]] for i in range(n - 1)]
        header, content = json.loads(parts[1]), json.loads(parts[4])
        return {"channel": parts[0].decode(), "msg_type": header["msg_type"], "content": content, "size": len(raw)}
    except (ValueError, KeyError, IndexError):
        return None


def widget_state(frames: list[dict], t0: float) -> dict:
    """What the widget state the page received weighs: models, bytes, figure data."""
    out = {"ws_open": None, "state": None, "state_bytes": 0, "models": 0, "figure_models": 0,
           "figure_bytes": 0, "largest_figure_bytes": 0, "comm_msgs": 0, "ws_bytes": 0, "models_by_kind": {}}
    kinds, kind_bytes = Counter(), Counter()
    for f in frames:
        out["ws_bytes"] += len(f["payload"])
        if out["ws_open"] is None:
            out["ws_open"] = f["t"] - t0
        msg = decode_frame(f["payload"], f["opcode"])
        if msg is None or not msg["msg_type"].startswith("comm"):
            continue
        out["comm_msgs"] += 1
        data = msg["content"].get("data", {})
        states = data.get("states") if data.get("method") == "update_states" else None
        if states is None and msg["msg_type"] == "comm_open":
            states = {msg["content"].get("comm_id"): {"state": data.get("state", {})}}
        if not states:
            continue
        if data.get("method") == "update_states":
            out["state"], out["state_bytes"] = f["t"] - t0, msg["size"]
        for model in states.values():
            state = model.get("state", model)
            kind = state.get("_model_name", "?")
            kinds[kind] += 1
            kind_bytes[kind] += len(json.dumps(state))
            out["models"] += 1
            if "_widget_data" in state:            # plotly's FigureWidget (binary buffers not counted)
                size = len(json.dumps([state.get("_widget_data"), state.get("_widget_layout")]))
                out["figure_models"] += 1
                out["figure_bytes"] += size
                out["largest_figure_bytes"] = max(out["largest_figure_bytes"], size)
    out["models_by_kind"] = dict(kinds.most_common(8))
    out["kb_by_kind"] = {k: round(v / 1024) for k, v in kind_bytes.most_common(4)}   # JSON; binary buffers not counted
    return out


# -- the main thread, read off Chrome's trace --------------------------------------------------

SCRIPT = {"FunctionCall", "EvaluateScript", "v8.compile", "v8.compileModule", "v8.evaluateModule", "TimerFire",
          "EventDispatch", "RunMicrotasks", "FireAnimationFrame", "v8.run", "V8.Execute", "CompileScript",
          "CompileCode", "ParseOnBackground", "XHRReadyStateChange", "XHRLoad", "FireIdleCallback"}
GROUPS = {"style+layout": {"UpdateLayoutTree", "Layout", "RecalculateStyles", "HitTest", "PrePaint",
                           "ScheduleStyleRecalculation", "InvalidateLayout", "IntersectionObserverController::computeIntersections"},
          "paint": {"Paint", "PaintImage", "Commit", "Layerize", "CompositeLayers", "UpdateLayer", "RasterTask"},
          "html parse": {"ParseHTML", "ParseAuthorStyleSheet"},
          "gc": {"MinorGC", "MajorGC", "V8.GCScavenger", "V8.GCFinalizeMC", "BlinkGC.AtomicPhase", "GCEvent",
                 "V8.GC_MC_BACKGROUND_MARKING", "V8.GCIncrementalMarking"}}


# Main-thread work Chrome's trace gives no script URL for: ES modules evaluated (plotly's widgetbundle.js,
# imported by every figure, and anywidget's small per-figure modules) and promise jobs (where the widget
# managers create models and views from the received state and plotly draws each figure).
UNNAMED = {"v8.evaluateModule": "ES module evaluation (widgetbundle.js, figure modules)",
           "RunMicrotasks": "promise jobs (widget models and views, plotly drawing)"}


def source_of(url: str) -> str:
    """A script URL's owner, in words."""
    if not url:
        return "inline/other"
    if "widgetbundle" in url:
        return "plotly bundle (widgetbundle.js)"
    if "mathjax" in url.lower():
        return "MathJax"
    if "anywidget" in url:
        return "anywidget"
    if "jupyterlab-plotly" in url:
        return "jupyterlab-plotly extension"
    if "widgets-manager" in url or "jupyter-widgets" in url or "jupyterlab-manager" in url:
        return "widget managers (ipywidgets)"
    if "lecture-dashboard" in url:
        return "lecture-dashboard.js"
    if "/voila/static/" in url or "voila" in url:
        return "Voila + JupyterLab core"
    return url.rsplit("/", 1)[-1][:40]


def main_thread(trace: dict, start_us: float, end_us: float) -> dict:
    """Self time (ms) on the renderer's main thread between two trace times, by group and script source."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
            and e.get("args", {}).get("name") == "CrRendererMain"}
    spans = sorted((e for e in events if (e.get("pid"), e.get("tid")) in main and e.get("ph") == "X"
                    and "dur" in e and e["ts"] + e["dur"] > start_us and e["ts"] < end_us),
                   key=lambda e: (e["ts"], -e["dur"]))
    totals, by_source = defaultdict(float), defaultdict(float)
    stack: list[dict] = []               # open events, each with its self time still being reduced

    def close(upto: float):
        while stack and stack[-1]["end"] <= upto:
            top = stack.pop()
            totals[top["group"]] += top["self"]
            if top["group"] == "scripting":
                by_source[top["source"]] += top["self"]

    for e in spans:
        begin, end = max(e["ts"], start_us), min(e["ts"] + e["dur"], end_us)
        close(begin)
        name = e["name"]
        group = ("scripting" if name in SCRIPT else
                 next((g for g, names in GROUPS.items() if name in names), None))
        parent = stack[-1] if stack else None
        data = e.get("args", {}).get("data", {}) or {}
        url = data.get("url") or data.get("scriptName") or (e.get("args", {}).get("fileName") or "")
        if parent is not None:
            parent["self"] -= end - begin
        if group is None:                   # RunTask and other containers: their self time is "other"
            group = parent["group"] if parent and parent["group"] != "other" else "other"
        inherited = parent["source"] if parent else "inline/other"
        if url:
            source = source_of(url)
        elif inherited == "inline/other" and name in UNNAMED:
            source = UNNAMED[name]
        else:
            source = inherited
        stack.append({"end": end, "self": end - begin, "group": group, "source": source})
    close(float("inf"))
    busy = sum(totals.values())
    out = {k: round(v / 1000) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    out["busy"] = round(busy / 1000)
    out["idle"] = round((end_us - start_us - busy) / 1000)
    return {"ms": out, "scripting_ms_by_source": {k: round(v / 1000) for k, v in
                                                 sorted(by_source.items(), key=lambda kv: -kv[1]) if v >= 1000}}


def trace_mark(trace: dict, name: str) -> float | None:
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    times = [e["ts"] for e in events if e.get("name") == name and "blink.user_timing" in e.get("cat", "")]
    return min(times) if times else None


# -- one visit ---------------------------------------------------------------------------------

def profile_open(browser, url: str, timeout_ms: int = 300_000, save_trace: Path | None = None) -> dict:
    context, page, watcher = new_page(browser, init_script=MARKS_JS)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    frames, t_nav = [], []
    cdp.on("Network.webSocketFrameReceived", lambda ev: frames.append(
        {"t": ev["timestamp"], "opcode": ev["response"]["opcode"], "payload": ev["response"]["payloadData"]}))
    cdp.on("Network.requestWillBeSent", lambda ev: t_nav.append(ev["timestamp"]) if ev.get("type") == "Document" else None)
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    try:
        page.goto(url, wait_until="commit", timeout=timeout_ms)
        page.wait_for_function("() => performance.getEntriesByName('lecture-all-plots').length > 0", timeout=timeout_ms)
        time.sleep(0.5)
        times = page.evaluate(TIMES_JS)
    finally:
        raw = browser.stop_tracing()
        trace = json.loads(raw)
        if save_trace is not None:           # open it in https://ui.perfetto.dev or chrome://tracing
            save_trace.parent.mkdir(parents=True, exist_ok=True)
            save_trace.write_bytes(raw)
        page.close(run_before_unload=True)        # the tab closes: Voila shuts its kernel down
        time.sleep(1.0)
        context.close()
    seconds = {k: round(times[k] / 1000, 2) for k in ("ttfb", "html", "dom", "first_plot", "all_plots")}
    bundle = next((r for r in times["resources"] if r["url"].endswith("widgetbundle.js")), None)
    state = widget_state(frames, t_nav[0]) if t_nav else {}
    for key in ("ws_open", "state"):
        if state.get(key) is not None:
            seconds[key] = round(state[key], 2)
    # trace times of the navigation start and the first plot, as the page marked them
    nav_us, first_us = trace_mark(trace, "navigationStart"), trace_mark(trace, "lecture-first-plot")
    thread = main_thread(trace, nav_us, first_us) if nav_us and first_us else {}
    # bytes over HTTP before the first plot (compressed as sent; the kernel websocket's widget state is apart)
    wire = times["html_wire"] + sum(r["wire"] for r in times["resources"]
                                    if r["url"].startswith("http") and r["end"] <= times["first_plot"])
    return {"seconds": seconds, "figures": times["figures"], "html_bytes": times["html_bytes"],
            "http_kb_before_first_plot": round(wire / 1024),
            "bundle": None if bundle is None else {"start_s": round(bundle["start"] / 1000, 2),
                                                   "end_s": round(bundle["end"] / 1000, 2),
                                                   "wire_kb": round(bundle["wire"] / 1024)},
            "widget_state": {k: v for k, v in state.items() if k not in ("ws_open", "state")},
            "main_thread_before_first_plot": thread, "errors": watcher.errors}


def hold_kernel(browser, url: str, timeout_ms: int = 300_000):
    """A visitor who opens ``url`` and stays (its kernel stays taken) until the returned context is closed."""
    context, page, _ = new_page(browser, init_script=MARKS_JS)
    page.goto(url, wait_until="commit", timeout=timeout_ms)
    page.wait_for_function("() => performance.getEntriesByName('lecture-first-plot').length > 0", timeout=timeout_ms)
    return context


def beyond_pool(browser, url: str, pool_size: int = 1) -> dict:
    """:func:`profile_open` of a visitor who finds ``url``'s pool empty: ``pool_size`` visitors hold its
    pre-heated kernels (each drawn), then the timed one arrives and gets a fresh kernel."""
    holders = [hold_kernel(browser, url) for _ in range(pool_size)]
    try:
        return profile_open(browser, url)
    finally:
        close_contexts(holders)                  # as a person closes a tab: its kernel is shut down


def show(name: str, r: dict) -> None:
    s, w, b = r["seconds"], r["widget_state"], r["bundle"] or {}
    print(f"{name}: first plot {s['first_plot']:.2f} s, all {r['figures']} figures {s['all_plots']:.2f} s")
    print(f"  page: first byte {s['ttfb']:.2f} s, last byte {s['html']:.2f} s ({r['html_bytes'] / 1024:.0f} kB), "
          f"DOMContentLoaded {s['dom']:.2f} s; {r['http_kb_before_first_plot']} kB over HTTP before the first plot")
    print(f"  widget state: websocket {s.get('ws_open', float('nan')):.2f} s, all states {s.get('state', float('nan')):.2f} s, "
          f"{w.get('state_bytes', 0) / 1024:.0f} kB, {w.get('models', 0)} models, "
          f"{w.get('figure_models', 0)} figures holding {w.get('figure_bytes', 0) / 1024:.0f} kB "
          f"(largest {w.get('largest_figure_bytes', 0) / 1024:.0f} kB); kB by model kind {w.get('kb_by_kind')}")
    if b:
        print(f"  plotly bundle: fetched {b['start_s']:.2f} -> {b['end_s']:.2f} s ({b['wire_kb']} kB on the wire)")
    t = r["main_thread_before_first_plot"]
    if t:
        print(f"  main thread before the first plot (ms): {t['ms']}")
        print(f"  scripting by source (ms): {t['scripting_ms_by_source']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full settings (no LECTURE_FAST): classroom figures")
    parser.add_argument("--cache-dir", default="off", metavar="DIR|off",
                        help="the result cache the kernels share: 'off' (default) or a folder (./lecture warm fills it)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems to open (default: all)")
    parser.add_argument("--first-at", choices=("filled", "answers"), default="filled",
                        help="open the first dashboard once Voila logs every pool filled (default), or as soon as "
                             "the server answers (a visitor arriving with the app, before the pools exist)")
    parser.add_argument("--beyond-pool", action="store_true",
                        help="also time, per dashboard, a visitor who finds its pre-heated kernel taken (a fresh kernel)")
    parser.add_argument("--save-traces", type=Path, default=None, metavar="DIR",
                        help="also write each visit's Chrome trace to DIR/<notebook>.json (Perfetto opens them)")
    args = parser.parse_args(argv)
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    chosen = [p for p in notebooks if not args.only or p.stem in args.only]
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    cache_dir = args.cache_dir if args.cache_dir == "off" else str(Path(args.cache_dir).resolve())
    entries = cache_entries(cache_dir)
    from playwright.sync_api import sync_playwright

    from voila_app.server import running_app

    log = REPO / "benchmarks" / "out" / "open_breakdown_voila.log"
    results = {}
    started = time.perf_counter()
    with running_app(REPO / "notebooks", log, fast=not args.full, extra_args=("--cache-dir", cache_dir)) as app, \
            sync_playwright() as p:
        browser = launch(p)          # before the clock of the first visit matters: Chromium's start is not the app's
        if args.first_at == "filled":
            app.wait_preheated([nb.name for nb in notebooks])
        load_at_first = os.getloadavg()[0]
        beyond = {}
        try:
            first = profile_open(browser, f"{app.url}/voila/render/{chosen[0].name}")
            first_after_start_s = time.perf_counter() - started
            print(f"app at {app.url} ({'full' if args.full else 'LECTURE_FAST=1'} settings, result cache {cache_dir}: "
                  f"{entries} entries); first dashboard after start-up (opened when {args.first_at}): "
                  f"{first['seconds']['first_plot']:.2f} s (server started {first_after_start_s:.0f} s before it "
                  f"had drawn; load average {load_at_first:.1f})", flush=True)
            for nb in chosen:
                settle(app.proc.pid, kernels=len(notebooks), timeout=600)   # every pre-heated kernel has executed
                trace = args.save_traces / f"{nb.stem}.json" if args.save_traces else None
                results[nb.stem] = r = profile_open(browser, f"{app.url}/voila/render/{nb.name}", save_trace=trace)
                show(nb.stem, r)
                if args.beyond_pool:
                    settle(app.proc.pid, kernels=len(notebooks), timeout=600)
                    beyond[nb.stem] = b = beyond_pool(browser, f"{app.url}/voila/render/{nb.name}")
                    print(f"{nb.stem} beyond the pool (a fresh kernel): first plot {b['seconds']['first_plot']:.2f} s, "
                          f"all figures {b['seconds']['all_plots']:.2f} s, first byte {b['seconds']['ttfb']:.2f} s "
                          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            browser.close()
    summary = {"benchmark": "open_breakdown", "lecture_fast": not args.full, "cpus": os.cpu_count(),
               "cache_dir": cache_dir, "cache_entries": entries, "load_average_1min": round(os.getloadavg()[0], 1),
               "first_at": args.first_at, "load_average_at_first_open": round(load_at_first, 1),
               "first_open_s": first["seconds"]["first_plot"], "start_to_first_plot_s": round(first_after_start_s, 1),
               "dashboards": results}
    if args.beyond_pool:
        summary["beyond_pool_s"] = {stem: b["seconds"]["first_plot"] for stem, b in beyond.items()}
        summary["beyond_pool"] = beyond
    emit(summary)


if __name__ == "__main__":
    main()
