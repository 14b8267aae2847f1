// Lecture 5 Explorables: what the dashboard page adds to Voila, for instructors.
//
// 1. The address bar follows the controls. Each LivePanel publishes its number and its
//    non-default control values in a hidden state element (data-panel, data-link, data-synced,
//    see lecture_lib/viz/panels.py); this script writes them into the URL
//    (?p3.lr=0.4&p3.weight_decay=0.005), so bookmarking the page bookmarks the plot. The kernel
//    reads the same URL when a page opens (lecture_lib/viz/url_state.py).
// 2. Export: every panel gets PNG / SVG buttons (plotly's own image export, one file per figure)
//    and a Link button that copies the URL of exactly this panel in its current state.
// 3. Presenter mode (?present=1): one panel at a time, fitted to the screen without scrolling,
//    large fonts; the kernel lays the figures out for a 1280x720 projector. Keys: PageDown,
//    Right, Space or N for the next panel; PageUp, Left or P for the previous one; Home/End;
//    C shows or hides the caption and the notes' tables and detail lines; Esc leaves presenter mode. PageUp/PageDown and Esc work even
//    while a slider has the focus (presentation clickers send PageUp/PageDown).
// 4. The markdown's math is typeset after the first plot, not before it (see "4. math" below).
// 5. plotly's front end is evaluated while the kernel prepares the widget state (see "5. plotly" below).
(function () {
  "use strict";
  const params = new URLSearchParams(window.location.search);
  const presenting = params.has("present") && !["0", "false", "no", "off"].includes(params.get("present"));
  const BAR_HEIGHT = 52;
  const POLL_MS = 300;
  const notebookStem = decodeURIComponent(window.location.pathname.split("/").pop() || "dashboard")
    .replace(/\.ipynb$/, "");
  let current = Math.max(1, parseInt(params.get("panel") || "1", 10) || 1);
  let scrolledToPanel = false;

  // -- panels and their published state --------------------------------------------------------
  function stateOf(panel) {
    const span = panel.querySelector(".lecture-state span");
    if (!span) return null;
    return { number: parseInt(span.dataset.panel || "0", 10), link: span.dataset.link || "",
             synced: span.dataset.synced === "1" };
  }

  // Every panel on the page in page order; `position` (1-based) is what presenter mode and
  // ?panel= count, `state` is null for panels that are not LivePanels (no URL state).
  function panels() {
    return Array.from(document.querySelectorAll(".lecture-panel"))
      .map((el, i) => ({ el, state: stateOf(el), position: i + 1 }));
  }

  function panelUrl(position, link, present) {
    const q = new URLSearchParams();
    if (present) q.set("present", "1");
    q.set("panel", String(position));
    new URLSearchParams(link).forEach((v, k) => q.append(k, v));
    return window.location.origin + window.location.pathname + "?" + q.toString();
  }

  // -- 1. the address bar follows the controls ---------------------------------------------------
  function syncUrl(list) {
    // wait until every LivePanel has applied the URL it was opened with, or we would erase it
    const live = list.filter((p) => p.state);
    if (!live.length || !live.every((p) => p.state.synced)) return;
    const q = new URLSearchParams(window.location.search);
    Array.from(q.keys()).filter((k) => /^p\d+\./.test(k)).forEach((k) => q.delete(k));
    live.forEach((p) => new URLSearchParams(p.state.link).forEach((v, k) => q.append(k, v)));
    if (presenting) q.set("panel", String(current));
    const next = q.toString() ? "?" + q.toString() : "";
    if (next !== window.location.search) {
      window.history.replaceState(null, "", window.location.pathname + next + window.location.hash);
    }
  }

  // -- 2. export buttons ---------------------------------------------------------------------------
  function button(label, title, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "lecture-tool";
    b.textContent = label;
    b.title = title;
    b.dataset.action = action;
    return b;
  }

  function addTools(p) {
    if (p.el.querySelector(":scope > .lecture-tools")) return;
    const bar = document.createElement("div");
    bar.className = "lecture-tools";
    bar.append(button("PNG", "Download the figures of this panel as PNG (2x, for slides)", "png"),
               button("SVG", "Download the figures of this panel as SVG", "svg"),
               button("Link", "Copy a link to this panel with its current settings", "link"));
    p.el.prepend(bar);
  }

  function positionOf(panelEl) {
    return Array.from(document.querySelectorAll(".lecture-panel")).indexOf(panelEl) + 1;
  }

  async function exportFigures(panelEl, format) {
    const figures = Array.from(panelEl.querySelectorAll(".js-plotly-plot"));
    const number = positionOf(panelEl);
    if (!window.Plotly || !figures.length) return;
    for (let i = 0; i < figures.length; i++) {
      const gd = figures[i];
      const layout = gd._fullLayout || {};
      const suffix = figures.length > 1 ? `-${i + 1}` : "";
      await window.Plotly.downloadImage(gd, {
        format, filename: `${notebookStem}-panel${number}${suffix}`,
        width: layout.width, height: layout.height, scale: format === "png" ? 2 : 1 });
    }
  }

  async function copyLink(panelEl, b) {
    const st = stateOf(panelEl) || { link: "" };
    const url = panelUrl(positionOf(panelEl), st.link, presenting);
    b.dataset.url = url;
    try {
      await navigator.clipboard.writeText(url);
      b.textContent = "Copied ✓";
    } catch (e) {                       // no clipboard outside https/localhost: show it to copy by hand
      window.prompt("Copy this link:", url);
    }
    setTimeout(() => { b.textContent = "Link"; }, 1500);
  }

  document.addEventListener("click", (event) => {
    const b = event.target.closest && event.target.closest(".lecture-tools .lecture-tool");
    if (!b) return;
    const panelEl = b.closest(".lecture-panel");
    if (b.dataset.action === "link") copyLink(panelEl, b);
    else exportFigures(panelEl, b.dataset.action);
  });

  // -- 3. presenter mode ---------------------------------------------------------------------------
  let bar = null;

  function headingText(h) {
    const clone = h.cloneNode(true);
    clone.querySelectorAll(".anchor-link, .jp-InternalAnchorLink").forEach((a) => a.remove());
    return clone.textContent.trim();
  }

  function sectionOf(panelEl) {
    // the last h1/h2 before the panel in document order
    let section = "";
    for (const el of document.querySelectorAll("#rendered_cells h1, #rendered_cells h2, .lecture-panel")) {
      if (el === panelEl) break;
      if (el.tagName === "H1" || el.tagName === "H2") section = headingText(el);
    }
    return section;
  }

  function buildBar() {
    bar = document.createElement("div");
    bar.className = "lecture-present-bar";
    bar.innerHTML = `
      <button type="button" class="lecture-present-prev" title="Previous panel (PageUp, Left)">&#9664;</button>
      <span class="lecture-present-count"></span>
      <button type="button" class="lecture-present-next" title="Next panel (PageDown, Right, Space)">&#9654;</button>
      <span class="lecture-present-section"></span>
      <span class="lecture-present-keys">PgDn/&rarr; next &middot; PgUp/&larr; back &middot; C caption &amp; details &middot; Esc exit</span>
      <button type="button" class="lecture-present-exit" title="Leave presenter mode (Esc)">Exit &#10005;</button>`;
    bar.querySelector(".lecture-present-prev").addEventListener("click", () => go(current - 1));
    bar.querySelector(".lecture-present-next").addEventListener("click", () => go(current + 1));
    bar.querySelector(".lecture-present-exit").addEventListener("click", exitPresenter);
    document.body.prepend(bar);
  }

  function fit(panelEl) {
    // offsetWidth/offsetHeight are layout sizes: the transform does not change them
    const w = panelEl.offsetWidth, h = panelEl.offsetHeight;
    if (!w || !h) return;
    const scale = Math.min((window.innerWidth - 16) / w, (window.innerHeight - BAR_HEIGHT - 12) / h, 1.75);
    const x = Math.max(0, (window.innerWidth - w * scale) / 2);
    const transform = `translate(${x.toFixed(1)}px, 0px) scale(${scale.toFixed(4)})`;
    if (panelEl.style.transform !== transform) panelEl.style.transform = transform;
    document.body.dataset.presentScale = scale.toFixed(3);
  }

  function show(list) {
    if (!list.length) return;
    current = Math.min(Math.max(current, 1), list.length);
    list.forEach((p, i) => {
      const on = i + 1 === current;
      p.el.classList.toggle("lecture-current", on);
      const cell = p.el.closest("[cell-index]");
      if (cell) cell.classList.toggle("lecture-current-cell", on || cell.contains(list[current - 1].el));
    });
    const el = list[current - 1].el;
    bar.querySelector(".lecture-present-count").textContent = `${current} / ${list.length}`;
    bar.querySelector(".lecture-present-section").textContent = sectionOf(el);
    document.body.dataset.presentPanel = String(current);
    fit(el);
  }

  function go(n) {
    const list = panels();
    if (!list.length) return;
    current = Math.min(Math.max(n, 1), list.length);
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    show(list);
    syncUrl(list);
  }

  function exitPresenter() {
    const q = new URLSearchParams(window.location.search);
    q.delete("present");
    q.set("panel", String(current));
    window.location.search = q.toString();
  }

  function onKey(event) {
    const inControl = event.target.closest && event.target.closest(".lecture-control, input, textarea, select");
    const key = event.key;
    let handled = true;
    if (key === "PageDown") go(current + 1);
    else if (key === "PageUp") go(current - 1);
    else if (key === "Escape") exitPresenter();
    else if (inControl || event.altKey || event.ctrlKey || event.metaKey) handled = false;
    else if (["ArrowRight", "ArrowDown", " ", "n", "N"].includes(key)) go(current + 1);
    else if (["ArrowLeft", "ArrowUp", "p", "P"].includes(key)) go(current - 1);
    else if (key === "Home") go(1);
    else if (key === "End") go(panels().length);
    else if (key === "c" || key === "C") { document.body.classList.toggle("lecture-show-captions"); go(current); }
    else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); }
  }

  // -- 4. math: the markdown's LaTeX, typeset after the first plot -----------------------------------
  // Voila typesets every markdown cell with MathJax as its app starts, before the widget state arrives:
  // 0.3-0.65 s of main thread (MathJax measures its fonts and lays the page out, once per cell) ahead of
  // the first plot (docs/performance.md, "Opening a dashboard"). The template renames those cells'
  // jp-MarkdownOutput class, which Voila looks for, to lecture-math-deferred; here they get it back and
  // are typeset with the page's own typesetter once the first figure is plotted (voila_app/figure_widget.py
  // sets window.lectureFirstFigurePlotted) and painted, or MATH_WAIT_MS after the app has started.
  const MATH_WAIT_MS = 10000;        // a page whose figures never plot (or that has none) still gets its math
  function typesetDeferredMath() {
    const app = window.jupyterapp;
    const rendermime = app && app.widgetManager && app.widgetManager.rendermime;
    const typesetter = rendermime && rendermime.latexTypesetter;
    document.querySelectorAll(".lecture-math-deferred").forEach((el) => {
      el.classList.replace("lecture-math-deferred", "jp-MarkdownOutput");
      if (typesetter) typesetter.typeset(el);
    });
  }

  function deferMath() {
    if (!document.querySelector(".lecture-math-deferred")) return;
    let started = null;             // when the app (and its typesetter) was first seen
    const wait = () => {
      const app = window.jupyterapp;
      if (app && app.widgetManager) {
        started = started ?? performance.now();
        if (window.lectureFirstFigurePlotted || performance.now() - started > MATH_WAIT_MS) {
          requestAnimationFrame(() => setTimeout(typesetDeferredMath, 0));      // after the plot is painted
          return;
        }
      }
      setTimeout(wait, 50);
    };
    wait();
  }

  // -- 5. plotly: the figures' front end, evaluated while the kernel prepares the widget state -------
  // A page opens the kernel's websocket, asks for every widget's state, and waits 0.1-0.3 s for it. The
  // figures' front end (widgetbundle.js, voila_app/figure_widget.py; 0.4 s of evaluation) used to be
  // imported only once the first figure's model existed, after the state: evaluation on the path to the
  // first plot (docs/performance.md, "Opening a dashboard"). Its import now starts as the kernel's
  // websocket opens, and the websocket's widget messages (from the first comm message the kernel sends)
  // wait until it has been evaluated, so that no widget model is being restored while it runs: anywidget
  // gives a model 2 seconds to initialise, and a long task in the middle of a restore used it up
  // (the reason an earlier import at page load was not kept). Messages before the first comm message
  // (the kernel's info, status) pass at once: the page's request for the state waits for them. The
  // figures' own import of the same URL gets the evaluated module (one module per URL and page). A bundle
  // slower than BUNDLE_HOLD_MS (a slow line) stops holding messages and arrives as before.
  const BUNDLE_HOLD_MS = 3000;
  const KERNEL_CHANNELS = /\/api\/kernels\/[^/?]+\/channels/;
  const decoder = new TextDecoder();

  // msg_type of a kernel websocket message: v1 binary frames (offsets, channel, header, ...) or legacy JSON
  function messageType(data) {
    try {
      if (data instanceof ArrayBuffer) {
        const view = new DataView(data);
        const count = Number(view.getBigUint64(0, true));
        if (count < 4 || 8 * count > data.byteLength) return null;
        const start = Number(view.getBigUint64(16, true)), end = Number(view.getBigUint64(24, true));
        return JSON.parse(decoder.decode(new Uint8Array(data, start, end - start))).msg_type;
      }
      if (typeof data === "string") {
        const match = /"msg_type"\s*:\s*"([a-z_]+)"/.exec(data.slice(0, 2000));
        return match && match[1];
      }
    } catch (error) { /* not a kernel message: pass it on */ }
    return null;
  }

  function holdWidgetMessagesUntil(ws, ready) {
    let handler = null, holding = false, released = false;
    const held = [];
    Object.defineProperty(ws, "onmessage", { configurable: true, get: () => handler, set: (h) => { handler = h; } });
    const deliver = (event) => { if (handler) handler.call(ws, event); };
    const release = () => {
      released = true;
      while (held.length) deliver(held.shift());
    };
    ready.then(release, release);
    setTimeout(release, BUNDLE_HOLD_MS);
    ws.addEventListener("message", (event) => {
      if (!released && !holding) {
        const type = messageType(event.data);
        holding = type === "comm_msg" || type === "comm_open";
      }
      if (holding && !released) held.push(event);
      else deliver(event);
    });
  }

  function importBundleWithKernel() {
    const Native = window.WebSocket, base = document.body && document.body.dataset.baseUrl;
    if (!Native || !base || window.lectureBundleWithKernel) return;
    window.lectureBundleWithKernel = true;
    window.WebSocket = new Proxy(Native, {
      construct(target, args, newTarget) {
        const ws = Reflect.construct(target, args, newTarget);
        if (KERNEL_CHANNELS.test(String(args[0])) && !window.lectureBundleEarly) {
          const url = new URL("static/widgetbundle.js", new URL(base, window.location.href)).href;
          performance.mark("lecture-bundle-import");
          window.lectureBundleEarly = import(url);
          window.lectureBundleEarly.then(() => performance.mark("lecture-bundle-evaluated"), () => {});
          holdWidgetMessagesUntil(ws, window.lectureBundleEarly);
        }
        return ws;
      },
    });
  }

  // -- the loop: panels appear while the notebook runs, states change when controls move -----------
  function tick() {
    const list = panels();
    list.forEach(addTools);
    if (presenting && list.length) show(list);
    if (!presenting && !scrolledToPanel && params.has("panel") && list.length >= current) {
      scrolledToPanel = true;
      list[current - 1].el.scrollIntoView({ block: "start" });
    }
    syncUrl(list);
  }

  function start() {
    importBundleWithKernel();
    if (presenting) {
      document.body.classList.add("lecture-present");
      buildBar();
      window.addEventListener("keydown", onKey, true);      // capture: before a focused slider sees it
      window.addEventListener("resize", () => go(current));
    }
    tick();
    setInterval(tick, POLL_MS);
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", deferMath);
    else deferMath();
  }

  start();           // loaded right after <body>: cells (and panels) stream in after this
})();
