// A static page's panels: each <section class="static-panel"> carries its data (voila_app/static_site/capture.py)
// in a <script type="application/json">; its figures are drawn from the default position and one range input
// per precomputed control swaps in another position with the app's own scrub mechanism (LectureScrub: the
// export's assets/scrub.js is lecture_lib/viz/scrub.js, made a classic script so that it loads from file://).
(function () {
  "use strict";
  var HALF = null;                                             // float16 bits -> value, built on first use
  function halfTable() {
    var t = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      t[h] = e === 0 ? s * Math.pow(2, -14) * (f / 1024)
           : e === 31 ? (f ? NaN : s * Infinity) : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
    return t;
  }
  // "h" + base64 float16 or "f" + base64 float32 (capture.encode); categories come as JSON lists
  function decode(item) {
    if (typeof item !== "string") return item;
    var bytes = atob(item.slice(1)), n = bytes.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = bytes.charCodeAt(i);
    if (item[0] === "f") return new Float32Array(u.buffer);
    HALF = HALF || halfTable();
    var bits = new Uint16Array(u.buffer), out = new Float32Array(bits.length);
    for (var j = 0; j < bits.length; j++) out[j] = HALF[bits[j]];
    return out;
  }
  // arrays are decoded when a position first needs them (the default position at once, the rest on a move)
  function resolver(data) {
    var cache = new Array(data.arrays.length), frames = new Array(data.frames.length);
    var get = function (a) { return cache[a] || (cache[a] = decode(data.arrays[a])); };
    return function (p) {
      if (!frames[p]) frames[p] = data.frames[p].map(function (f) {
        var out = { traces: f.traces, x: f.x.map(get), y: f.y.map(get) };
        if (f.layout !== undefined) out.layout = f.layout;
        if (f.ztraces) {                                        // heatmaps: rows of the flat z
          out.ztraces = f.ztraces;
          out.z = f.z.map(function (a, j) {
            var flat = get(a), n = f.zcols[j], rows = [];
            for (var i = 0; i < flat.length; i += n) rows.push(flat.subarray(i, i + n));
            return rows;
          });
        }
        return out;
      });
      return frames[p];
    };
  }
  // fn when the page is idle (at the latest after a second), so that a later panel's first figure comes first
  function idle(fn) {
    if (window.requestIdleCallback) window.requestIdleCallback(fn, { timeout: 1000 });
    else setTimeout(fn, 0);
  }
  function flatIndex(shape, idx) {
    var p = 0;
    for (var d = 0; d < shape.length; d++) p = p * shape[d] + idx[d];
    return p;
  }
  function setUp(section, data) {
    var frameAt = resolver(data);
    var divs = Array.prototype.slice.call(section.querySelectorAll(".static-figure"));
    var first = frameAt(data.default);
    var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };
    var drawn = divs.map(function (div, k) {
      var fig = data.figures[k], f = first[k];
      f.traces.forEach(function (t, j) { fig.data[t].x = f.x[j]; fig.data[t].y = f.y[j]; });
      (f.ztraces || []).forEach(function (t, j) { fig.data[t].z = f.z[j]; });
      return window.Plotly.newPlot(div, fig.data, fig.layout, config).then(function () {
        div.dataset.drawn = "1";
        if (window.__lectureFirstFigure === undefined) window.__lectureFirstFigure = performance.now();
      });
    });
    var idx = data.dims.map(function (d) { return d.index; });
    var notes = section.querySelector(".static-notes");
    // The axes are fixed to the ranges of the family shown: the positions along the first slider (a scrubbed
    // panel's batched family), the other sliders where they are. As in the live app, where the first slider
    // scrubs a family trained together and another control computes (and draws) a new family. The family's
    // positions are decoded and its axes fixed once the figures are drawn, in idle time, so that the first move is
    // a swap like any other and the axes do not jump on it; moving another slider fixes them for its family.
    var families = {};
    var family = function () {
      var key = idx.slice(1).join(",");
      if (!families[key]) {
        var rest = idx.slice(), members = [];
        for (var i = 0; i < (data.shape[0] || 1); i++) {
          rest[0] = i;
          members.push(frameAt(data.shape.length ? flatIndex(data.shape, rest) : 0));
        }
        families[key] = members;
      }
      return families[key];
    };
    var prepare = function () {
      LectureScrub.fixRanges(window.Plotly, divs, family());     // once per family; skips a figure not drawn yet
    };
    Promise.all(drawn).then(function () {
      idle(function () { prepare(); section.dataset.prepared = "1"; });
    });
    var show = function () {
      var p = flatIndex(data.shape, idx);
      prepare();
      LectureScrub.swap(window.Plotly, divs, frameAt(p), data.layouts);
      notes.innerHTML = data.note_texts[data.notes[p]] || "";
      section.dataset.position = p;
    };
    section.querySelectorAll(".static-scrub").forEach(function (box, d) {
      var input = box.querySelector("input"), value = box.querySelector(".static-scrub-value");
      var dim = data.dims[d];
      input.type = "range"; input.min = 0; input.max = Math.max(dim.labels.length - 1, 0); input.step = 1;
      input.value = dim.index;
      input.addEventListener("input", function () {
        var i = +input.value;
        idx[d] = i;
        value.textContent = dim.labels[i];
        box.dataset.index = i;
        show();
      });
      value.textContent = dim.labels[dim.index];
      box.dataset.index = dim.index;
    });
    notes.innerHTML = data.note_texts[data.notes[data.default]] || "";
    section.dataset.position = data.default;
    section.dataset.ready = "1";
  }
  // panels in page order, one at a time: each panel's data is a script of its own (<page>/panel-N.js, which
  // loads from file:// where a fetch would not), so the first figure paints before the later data even load
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.static-panel"));
  var next = function () {
    var section = sections.shift();
    if (!section) return;
    var script = document.createElement("script");
    script.src = section.dataset.src;
    script.onload = function () {
      setUp(section, window.LecturePanelData.pop());
      requestAnimationFrame(function () { setTimeout(next, 0); });    // this panel paints before the next loads
    };
    script.onerror = function () {
      section.querySelector(".static-notes").textContent = "This panel's data (" + section.dataset.src + ") is missing.";
      setTimeout(next, 0);
    };
    document.head.appendChild(script);
  };
  next();
})();
