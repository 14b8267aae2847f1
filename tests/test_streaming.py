"""Streaming long computations (issue 16, item 4): the engine reports its rows so far, an experiment turns
them into partial results (record.Stream), the runner forwards those of the newest request only, and the
panel draws them through the same builder until the final result replaces them."""
from __future__ import annotations

import dataclasses
import functools
import threading
import time

import numpy as np
import pytest
import plotly.graph_objects as go
import torch

from lecture_lib import data, engine
from lecture_lib.models import MLP
from lecture_lib.optim import sgd
from lecture_lib.record import Stream
from lecture_lib.viz import figures, panels
from lecture_lib.viz.live_figures import LiveFigures
from lecture_lib.viz.runner import ComputeRunner


# --------------------------------------------------------------------------- the engine's report hook
def _train(report=None, steps=30, record_every=1, lr=(0.1, 50.0)):
    """Two runs, the second diverging (α = 50)."""
    model = MLP([5, 8, 1], runs=2, seed=[0, 1], activation="tanh", dtype=torch.float64)
    task = data.linear_regression(n=64, dim=5, mean_norm=1.0, noise=0.1, seed=0, dtype=torch.float64)
    return engine.train(model, task, "mse", sgd(torch.tensor(lr, dtype=torch.float64)), steps, batch_size=16,
                        record_every=record_every, eval_every=10, report=report)


def test_report_gives_the_rows_so_far_and_changes_nothing():
    reports = []
    final = _train(report=lambda done, steps, so_far: reports.append((done, steps, so_far())), record_every=2)
    plain = _train(record_every=2)
    assert [d for d, _, _ in reports] == [0, *range(1, 30, 2)] and all(s == 30 for _, s, _ in reports)
    initial = reports[0][2]                     # before the first update: the initial row, no angular step yet
    assert initial.steps.tolist() == [0] and initial.angular_step == {} and initial.config["partial"] is True
    np.testing.assert_array_equal(initial.loss, final.loss[:1])
    for name in final.param_norm:
        np.testing.assert_array_equal(initial.param_norm[name], final.param_norm[name][:1])
    for done, _, rec in reports[1:]:
        k = len(rec.steps)
        assert k == (done + 1) // 2 and rec.config["partial"] is True
        np.testing.assert_array_equal(rec.steps, final.steps[:k])
        np.testing.assert_array_equal(rec.loss, final.loss[:k])        # NaN after a divergence, as in the final
        for name in final.param_norm:
            np.testing.assert_array_equal(rec.param_norm[name], final.param_norm[name][:k])
        assert len(rec.eval_steps) == len([s for s in final.eval_steps if s < done])
    for _, _, rec in reports:                   # the training's settings, known from the first row on (the plot's span)
        assert {k: v for k, v in rec.config.items() if k != "partial"} == final.config
    np.testing.assert_array_equal(final.loss, plain.loss)
    assert "partial" not in final.config and final.diverged(1) and reports[-1][2].diverged(1)


def test_initial_report_comes_before_step_0s_evaluation_which_still_sees_step_0s_buffers():
    """The initial row is handed over before the test set is evaluated at step 0; that evaluation runs after the
    step's forward pass has moved BN's running statistics, with the statistics of step 0 put back for it."""
    def run(report=None):
        model = MLP([64, 16, 10], norm="batch", runs=2, seed=[0, 1], dtype=torch.float64)
        task = data.digits(test_fraction=0.5, seed=0).to(dtype=torch.float64)
        return model, engine.train(model, task, "cross_entropy", sgd(0.1), 6, batch_size=32, eval_every=3,
                                   report=report)

    seen = []
    model, final = run(lambda done, steps, so_far: seen.append((done, so_far())))
    _, plain = run()
    assert seen[0][0] == 0 and seen[0][1].eval_steps is None          # the initial row, not evaluated yet
    assert seen[1][1].eval_steps.tolist() == [0]
    np.testing.assert_array_equal(final.test_loss, plain.test_loss)     # the same evaluation as without a report
    np.testing.assert_array_equal(final.test_accuracy, plain.test_accuracy)
    np.testing.assert_array_equal(final.loss, plain.loss)
    fresh = MLP([64, 16, 10], norm="batch", runs=2, seed=[0, 1], dtype=torch.float64)
    moved = [n for n, b in model.named_buffers() if b.is_floating_point()
             and not torch.equal(b, dict(fresh.named_buffers())[n])]
    assert moved                                                        # training did move the running statistics
    task = data.digits(test_fraction=0.5, seed=0).to(dtype=torch.float64)
    trainer = engine.Trainer(fresh, task, "cross_entropy", sgd(0.1))
    np.testing.assert_array_equal(trainer.evaluate()[0].numpy(), final.test_loss[0])   # step 0's, by a fresh model


def test_evaluate_with_other_buffers_restores_the_models_own():
    model = MLP([64, 16, 10], norm="batch", runs=2, seed=[0, 1], dtype=torch.float64)
    task = data.digits(test_fraction=0.5, seed=0).to(dtype=torch.float64)
    trainer = engine.Trainer(model, task, "cross_entropy", sgd(0.1))
    before, at_init = trainer.buffers(), trainer.evaluate()
    with torch.no_grad():
        model(trainer.data.x_train[:32])                                # training mode: moves the running statistics
    after = trainer.buffers()
    loss, acc = trainer.evaluate(buffers=before)
    np.testing.assert_array_equal(loss.numpy(), at_init[0].numpy())
    assert all(torch.equal(b, after[n]) for n, b in model.named_buffers())
    assert not torch.equal(trainer.evaluate()[0], loss)                 # with its own, moved statistics: different


def test_stream_reports_first_partial_at_once_then_throttles():
    calls = []
    stream = Stream(lambda fraction, partial=None: calls.append((fraction, partial)), interval=60.0)
    _train(report=stream.stage(lambda rec: len(rec.steps), 0.5, 1.0))
    partials = [(f, p) for f, p in calls if p is not None]
    assert partials == [(0.5 + 0.5 * 2 / 30, 2)]                    # two rows, then nothing for a minute
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) == 31   # and before step 0
    assert Stream(None).stage(len) is None                            # no progress: nothing to report


def test_stream_from_zero_updates_hands_over_the_initial_row_before_its_update():
    calls = []
    stream = Stream(lambda fraction, partial=None: calls.append((fraction, partial)), interval=60.0)
    _train(report=stream.stage(lambda rec: (rec.steps.tolist(), dict(rec.angular_step)), first=0))
    assert [(f, p) for f, p in calls if p is not None] == [(0.0, ([0], {}))]


def test_stream_of_a_fast_interval_reports_growing_partials():
    partials = []
    stream = Stream(lambda fraction, partial=None: partial is not None and partials.append(partial), interval=0.0)
    _train(report=stream.stage(lambda rec: rec))
    lengths = [len(p.steps) for p in partials]
    assert lengths == sorted(lengths) and lengths[0] == 2 and lengths[-1] < 30 and len(lengths) > 5


# --------------------------------------------------------------------------- the runner
def _streaming_compute(chunks=5, delay=0.02, gates=None):
    """``compute(x, progress)``: reports partial results (x, 1), (x, 2), ... then returns (x, 'final')."""

    def compute(x, progress):
        for i in range(1, chunks + 1):
            if gates is not None and x in gates:
                gates[x].wait(5)
            time.sleep(delay)
            progress(i / (chunks + 1), (x, i))
        return (x, "final")

    return compute


def test_partials_arrive_in_order_then_the_final_result_replaces_them():
    events = []
    runner = ComputeRunner(_streaming_compute(), on_outcome=lambda o: events.append(("final", o.value)),
                           on_partial=lambda g, p: events.append(("partial", p)), stream_every=0.0)
    runner.run_now({"x": "a"})                       # the first computation never streams: no page yet
    assert events == [("final", ("a", "final"))]
    events.clear()
    runner.request({"x": "b"})
    assert runner.wait(10)
    assert events == [("partial", ("b", i)) for i in range(1, 6)] + [("final", ("b", "final"))]


def test_partials_are_throttled_first_at_once():
    events = []
    runner = ComputeRunner(_streaming_compute(chunks=10, delay=0.03), on_outcome=lambda o: events.append(o.value),
                           on_partial=lambda g, p: events.append(p), stream_every=0.1)
    runner.request({"x": "b"})
    assert runner.wait(10)
    partials = [e[1] for e in events[:-1]]
    assert partials[0] == 1 and 2 <= len(partials) <= 5 and partials == sorted(partials)
    assert events[-1] == ("b", "final")


def test_cached_results_do_not_stream():
    events = []
    runner = ComputeRunner(_streaming_compute(), on_outcome=lambda o: events.append(("final", o.value)),
                           on_partial=lambda g, p: events.append(("partial", p)), stream_every=0.0)
    for x in ("b", "c"):
        runner.request({"x": x})
        assert runner.wait(10)
    events.clear()
    runner.request({"x": "b"})                       # from the cache: delivered at once, no partial
    assert events == [("final", ("b", "final"))]


def test_a_superseded_computations_partials_are_dropped():
    gates = {"slow": threading.Event()}
    events = []
    runner = ComputeRunner(_streaming_compute(gates=gates), on_outcome=lambda o: events.append(("final", o.value)),
                           on_partial=lambda g, p: events.append(("partial", g, p)), stream_every=0.0)
    runner.request({"x": "slow"})                    # generation 1, waits at its first chunk
    time.sleep(0.05)
    runner.request({"x": "fast"})                    # generation 2: the slow one stops at its next report
    gates["slow"].set()
    assert runner.wait(10)
    assert all(e[2][0] == "fast" and e[1] == 2 for e in events if e[0] == "partial")
    assert events[-1] == ("final", ("fast", "final"))
    assert ("final", ("slow", "final")) not in events and runner.key({"x": "slow"}) not in runner.cache


def test_a_partial_never_draws_over_a_newer_cached_result():
    started, release, reported = threading.Event(), threading.Event(), threading.Event()
    events = []

    def compute(x, progress):
        if x == "slow":
            started.set()
            release.wait(5)
            try:
                progress(0.5, (x, 1))
            finally:
                reported.set()
        return (x, "final")

    runner = ComputeRunner(compute, on_outcome=lambda o: events.append(("final", o.value)),
                           on_partial=lambda g, p: events.append(("partial", p)), stream_every=0.0)
    runner.request({"x": "a"})
    assert runner.wait(10)
    runner.request({"x": "slow"})
    assert started.wait(5)
    runner.request({"x": "a"})                       # cached, newer: on screen at once
    release.set()
    assert reported.wait(5) and runner.wait(10)
    assert events == [("final", ("a", "final")), ("final", ("a", "final"))]


# --------------------------------------------------------------------------- the panel
def _curve_figure(result) -> go.Figure:
    steps, values = result
    return go.Figure([go.Scatter(x=steps, y=values, name="curve", mode="lines")])


def test_panel_draws_partials_then_the_final_result(monkeypatch):
    drawn_lengths, first_frame = [], threading.Event()

    def compute(n, progress):
        k = np.arange(n, dtype=float)
        for done in (5, 10, 20):
            time.sleep(0.05)
            progress(done / n, (k[:done], np.sqrt(k[:done])))
            if done == 5 and n != 30:                   # (30: the first computation, which never streams)
                assert first_frame.wait(5)              # the panel drew it before training goes on
        return k, np.sqrt(k)

    panel = panels.LivePanel(compute=compute, controls={"n": panels.int_slider("n", 30, 60, 30)},
                             build=_curve_figure, progress_after=10.0)
    panel.runner.stream_every = 0.0
    original = panel.live.draw

    def watched(result, transient=False):
        original(result, transient)
        drawn_lengths.append((len(panel.figure.data[0].y), transient))
        if transient and len(result[0]) == 5:
            first_frame.set()

    def watched_notes(stale):
        notes_stale.append((stale, len(panel.figure.data[0].y)))
        original_notes(stale)

    notes_stale, original_notes = [], panel.mark_notes_stale
    monkeypatch.setattr(panel, "mark_notes_stale", watched_notes)
    monkeypatch.setattr(panel.live, "draw", watched)
    panel.set(n=40)
    assert panel.wait(10)
    assert drawn_lengths == [(5, True), (10, True), (20, True), (40, False)]
    # the notes are dimmed from the first partial drawn to the final result (they describe the previous values)
    assert notes_stale[0] == (True, 5) and notes_stale[-1] == (False, 40)
    assert "lecture-stale" not in panel._notes._dom_classes
    np.testing.assert_allclose(panel.figure.data[0].y, np.sqrt(np.arange(40)))
    state = panel._state.value
    assert "data-partial-generation='2'" in state and "data-partials='3'" in state and "data-generation='2'" in state
    assert panel.result[0].shape == (40,) and "lecture-stale" not in panel.figure._dom_classes
    drawn_lengths.clear()
    panel.set(n=30)                                   # cached: drawn at once, no partial
    assert panel.wait(10) and drawn_lengths == [(30, False)]
    assert "data-partials='3'" in panel._state.value


def test_partial_figures_do_not_push_finished_results_out_of_the_built_figures():
    builds = []

    def build(result):
        builds.append(len(result[0]))
        return _curve_figure(result)

    def compute(n, progress):
        k = np.arange(n, dtype=float)
        for done in range(2, n, 2):                    # 49 partials: more than the 32 built figures kept
            progress(done / n, (k[:done], k[:done]))
        return k, k

    panel = panels.LivePanel(compute=compute, controls={"n": panels.int_slider("n", 10, 100, 10)}, build=build)
    panel.runner.stream_every = 0.0
    panel.set(n=100)
    assert panel.wait(10) and len(builds) == 1 + 49 + 1
    panel.set(n=10)                                    # back to the first result: its figure is still built
    assert panel.wait(10) and len(builds) == 51 and len(panel.figure.data[0].y) == 10


def test_plane_panel_streams_the_drawn_runs_then_adds_the_predicted_circle(monkeypatch):
    """05's plane panel (0.5 s at full settings) streams: partial frames show the runs so far, at the chosen step
    or their last one, with no circle (its radius needs the probe run) and no NaN; the final one has the circle."""
    monkeypatch.setenv("LECTURE_CACHE_DIR", "off")
    from lecture_lib.viz import equilibrium_panels as ep

    panel = ep.plane_panel(fast=True)
    panel.runner.stream_every = 0.0
    frames = []
    original = panel.live.draw

    def watched(result, transient=False):
        original(result, transient)
        circle, path = panel.figure.data[0], panel.figure.data[1]
        drawn = sum(v is not None for v in circle.x)          # a partial holds its legend entry with a missing point
        frames.append((transient, len(result[0].w), result[1], drawn, len(path.x)))

    monkeypatch.setattr(panel.live, "draw", watched)
    panel.set(lr=0.5)
    assert panel.wait(30)
    partials, final = [f for f in frames if f[0]], frames[-1]
    assert partials and not final[0]
    for _, trained, k, circle, path in partials:
        assert k == min(panel.controls["step"].value, trained - 1) and circle == 0 and path == k + 1
    assert final[3] == 200 and final[2] == panel.controls["step"].value
    assert all(np.isfinite(np.asarray(t.x, dtype=float)).all() for t in panel.figure.data if t.x is not None)


def test_scrub_panel_streams_its_current_position_only():
    from lecture_lib.viz import scrub

    def compute(shift, scale, progress):
        k = np.arange(20, dtype=float)
        for done in (4, 8):
            progress(done / 20, [(k[:done], s * k[:done] + shift) for s in scale])
        return [(k, s * k + shift) for s in scale]

    panel = scrub.ScrubPanel(compute=compute, controls={"shift": panels.slider("shift", 0.0, 1.0, 0.0, step=0.5)},
                             build=_curve_figure, scrub=scrub.Scrub("scale", (1.0, 2.0, 3.0), "scale", index=1))
    panel.runner.stream_every = 0.0
    seen = []
    original = panel.live.draw
    panel.live.draw = lambda result, transient=False: (seen.append((result, transient)), original(result, transient))
    frames_before = panel.scrubber.frames
    panel.set(shift=0.5)
    assert panel.wait(10)
    partials = [r for r, transient in seen if transient]
    assert [len(r[0]) for r in partials] == [4, 8]
    np.testing.assert_allclose(partials[0][1], 2.0 * np.arange(4) + 0.5)      # position 1 of the family
    assert panel.scrubber.frames is not frames_before and len(panel.scrubber.frames) == 3
    np.testing.assert_allclose(panel.figure.data[0].y, 2.0 * np.arange(20) + 0.5)


def test_a_partial_that_cannot_be_drawn_is_skipped():
    def compute(n, progress):
        progress(0.5, "not a result")
        return np.arange(n, dtype=float), np.ones(n)

    panel = panels.LivePanel(compute=compute, controls={"n": panels.int_slider("n", 10, 60, 10)},
                             build=_curve_figure)
    panel.set(n=20)
    assert panel.wait(10) and panel.message == "" and len(panel.figure.data[0].y) == 20


def test_a_page_connecting_after_partials_starts_from_what_is_on_screen():
    """A partial draw leaves the state a connecting page starts from alone (copying it would delay the first
    frame); the final draw brings it up to date, and so does the end of a computation that failed after its
    partials, whose last partial stays on screen."""
    partial_drawn, release = threading.Event(), threading.Event()

    def compute(n, progress):
        k = np.arange(n, dtype=float)
        if n == 10:                                     # the first computation, which never streams
            return k, 3.0 * k
        progress(0.5, (k[:5], 3.0 * k[:5]))
        assert partial_drawn.wait(5) and release.wait(5)
        if n == 50:
            raise RuntimeError("failed after its partial")
        return k, 3.0 * k

    panel = panels.LivePanel(compute=compute, controls={"n": panels.int_slider("n", 10, 60, 10)},
                             build=_curve_figure, progress_after=10.0)
    panel.runner.stream_every = 0.0
    original = panel.live.draw
    panel.live.draw = lambda result, **kw: (original(result, **kw), kw.get("transient") and partial_drawn.set())

    def connecting_page_y():
        return np.asarray(panel.figure._widget_data[0]["y"])

    first = connecting_page_y().copy()
    for n, final in ((20, 20), (50, 5)):
        partial_drawn.clear(), release.clear()
        panel.set(n=n)
        assert partial_drawn.wait(5)
        assert len(panel.figure.data[0].y) == 5                       # the page shows the partial ...
        np.testing.assert_array_equal(connecting_page_y(), first)     # ... a connecting page the last final result
        release.set()
        assert panel.wait(10)
        assert len(panel.figure.data[0].y) == final
        np.testing.assert_array_equal(connecting_page_y(), np.asarray(panel.figure.data[0].y))
        first = connecting_page_y().copy()
    assert "failed after its partial" in panel.message


# --------------------------------------------------------------------------- in the browser
# The fixture tests/fixtures/stream_demo.ipynb: y = a·√k over 200 steps, computed in 2 s and reported 20 steps
# at a time. The page records every state of the plot's data (polled each animation frame), then a key moves a.
RECORD_PLOT_JS = """(panel) => {
  const gd = panel.querySelector('.js-plotly-plot');
  window.__seen = [];
  let last = null;
  const poll = () => {
    const y = gd.data && gd.data[0] && gd.data[0].y;
    if (y && y !== last) {
      last = y;
      const s = panel.querySelector('.lecture-state span');
      window.__seen.push({y: Array.from(y), partial: s ? +s.dataset.partialGeneration : -1});
    }
    requestAnimationFrame(poll);
  };
  poll();
}"""


def test_a_slow_panel_draws_partial_curves_then_the_final_one(chromium, voila_fixture_app):
    from browser_helpers import (close_context, PANEL_STATE_JS, REDRAW_TIMEOUT_MS, SLIDER_HANDLE, open_page, wait_for_dashboard,
                                 wait_until_settled)

    context, page, watcher = open_page(chromium, f"{voila_fixture_app.url}/voila/render/stream_demo.ipynb")
    try:
        wait_for_dashboard(page)
        panel = page.locator(".lecture-panel").first
        before = panel.evaluate(PANEL_STATE_JS)["generation"]
        panel.evaluate(RECORD_PLOT_JS)
        handle = panel.locator(SLIDER_HANDLE).first
        handle.focus()
        page.keyboard.press("ArrowRight")                     # a: 1 -> 1.5, a 2 s computation
        state = wait_until_settled(page, panel, before, timeout_ms=REDRAW_TIMEOUT_MS)
        assert state["outcome"] == "ok"
        seen = page.evaluate("window.__seen")
        k = np.arange(200, dtype=float)
        growing = [s["y"] for s in seen if 0 < len(s["y"]) < 200]
        assert len(growing) >= 1 and len(seen) >= 2, f"the plot changed {len(seen)} times: {[len(s['y']) for s in seen]}"
        for y in growing:                                     # each partial is the new curve, truncated
            np.testing.assert_allclose(y, 1.5 * np.sqrt(k[:len(y)]), rtol=1e-9)
        lengths = [len(y) for y in growing]
        assert lengths == sorted(lengths)
        np.testing.assert_allclose(seen[-1]["y"], 1.5 * np.sqrt(k), rtol=1e-9)   # the final replaced them
        stream_state = panel.locator(".lecture-state span")
        assert int(stream_state.get_attribute("data-partial-generation")) == state["generation"]
        assert int(stream_state.get_attribute("data-partials")) >= 1
        panel.locator(".lecture-notes", has_text="200 steps").wait_for(timeout=REDRAW_TIMEOUT_MS)
        assert watcher.errors == [], f"JavaScript errors: {watcher.errors}"
    finally:
        close_context(context)


# --------------------------------------------------------------------------- the experiments that stream
def _experiment_cases():
    from lecture_lib.experiments import equilibrium as eqx
    from lecture_lib.experiments import implicit_decay as imp
    from lecture_lib.experiments import mechanisms as mech
    from lecture_lib.viz import equilibrium_panels as ep
    from lecture_lib.viz import implicit_panels as ip
    from lecture_lib.viz import mechanisms_panels as mp

    from lecture_lib.experiments import adaptive as adx
    from lecture_lib.viz import adaptive_panels as ap

    from lecture_lib.experiments import ics as icx
    from lecture_lib.viz import ics_panels as icp

    from lecture_lib.experiments import kronecker as kx
    from lecture_lib.viz import kronecker_panels as kp

    return {
        "descent_family": (lambda p: icx.descent_family((0.0, 3.0), steps=40, n=64, progress=p),
                           lambda fam: icp.descent_figures(fam[1])),
        "reparam": (lambda p: icx.reparam_experiment(steps=40, n=64, progress=p), icp.reparam_figures),
        "wrinkle": (lambda p: icx.wrinkle_experiment(steps=40, n=64, record_every=1, progress=p), icp.wrinkle_figures),
        "conditioning": (lambda p: icx.conditioning_experiment(outputs=2, n=64, progress=p), icp.conditioning_figures),
        "inverse_timing": (lambda p: kx.time_inverses_up_to(8, widths=(2, 4, 8), repeats=1, progress=p),
                           kp.cost_figure),
        "kfac_checkpoint": (lambda p: (kx.kfac_vs_exact.results.clear(),          # the runs are kept in memory too: train again
                                       kx.kfac_checkpoint("linears.0", 2, steps=20, checkpoints=4, progress=p))[1],
                            functools.partial(kp.kfac_figures, steps=20)),
        "decay_comparisons": (lambda p: adx.decay_comparisons(weight_decay=(0.01, 0.1, 1.0), steps=40, progress=p),
                              lambda fam: ap.decay_figure(fam[1])),
        "grafting": (lambda p: adx.grafting_experiment("rmsprop", "sgd", steps=30, sizes=(64, 8, 10), record_every=1,
                                                       progress=p), ap.grafting_figures),
        "growth": (lambda p: imp.growth("toy", 0.3, steps=40, progress=p), ip.growth_figure),
        "collapse": (lambda p: imp.collapse((0.01, 0.1, 1.0), steps=40, progress=p),
                     lambda sweep: ip.collapse_figure(sweep.at(1))),
        "output_layer": (lambda p: imp.output_layer(1.0, steps=30, progress=p), ip.output_figure),
        "remedies": (lambda p: imp.remedies(1.0, 5e-3, steps=20, progress=p), ip.remedies_figure),
        "optimizers": (lambda p: imp.optimizers(1e-4, 4.0, steps=15, progress=p), ip.optimizer_figure),
        "layer_balance": (lambda p: eqx.layer_balance(0.1, 5e-4, 0.9, steps=30, progress=p), ep.balance_figures),
        "ratio_families": (lambda p: eqx.ratio_families(0.1, [1e-3, 2e-3], 0.9, min_steps=40, max_steps=40,
                                                        progress=p), lambda fam: ep.ratio_figures(fam[1])),
        "sgd_vs_lars": (lambda p: eqx.sgd_vs_lars(0.1, 5e-3, 0.9, min_steps=60, max_steps=60, progress=p),
                        ep.lars_figure),
        "batch_scaling": (lambda p: eqx.batch_scaling((1, 2), examples=400, progress=p),
                          functools.partial(ep.batch_figure, examples=400)),
        "plane_runs": (lambda p: eqx.plane_runs(1.0, 0.02, steps=40, progress=p),
                       lambda r: ep.plane_figure((r, len(r.w) - 1))),
        "decay_strengths": (lambda p: eqx.decay_strengths(0.1, 0.9, steps=30, progress=p), ep.labatie_figure),
        "effective_lr": (lambda p: mech.effective_lr_experiment(steps=20, width=16, record_every=2, eval_every=5,
                                                                progress=p), mp.effective_lr_figures),
        "effective_lr_family": (lambda p: mech.effective_lr_family(weight_decay=(0.0, 0.2), steps=20, width=16,
                                                                   record_every=1, eval_every=5, progress=p),
                                lambda fam: mp.effective_lr_figures(fam[1])),
        "jacobian": (lambda p: mech.jacobian_experiment(steps=10, width=8, seeds=(0, 1), progress=p),
                     mp.jacobian_figures),
        "damping": (lambda p: mech.damping_experiment(steps=20, width=16, record_every=2, eval_every=5,
                                                      progress=p), mp.damping_figures),
    }


STREAMING = ("descent_family", "reparam", "wrinkle", "conditioning", "inverse_timing", "kfac_checkpoint",
             "decay_comparisons", "grafting", "growth", "collapse", "output_layer", "remedies", "optimizers",
             "layer_balance", "ratio_families", "sgd_vs_lars", "batch_scaling", "plane_runs", "decay_strengths", "effective_lr",
             "effective_lr_family", "jacobian", "damping")

#: Experiments whose first partial comes with fewer than two rows (its builder draws a lone point).
FIRST_ROWS = {"damping": 1}          # its initial row, drawn as points


#: Fields of a result that are wall-clock measurements: never equal between two runs, streamed or not.
TIMED = {"inverse_timing": ("eigenbasis", "dense")}


def _records(result) -> dict:
    """The Records of ``result`` by key: a family's members, a dict of runs, or the one record (none: a table)."""
    if isinstance(result, list):
        return {(i, key): rec for i, member in enumerate(result) for key, rec in _records(member).items()}
    if getattr(result, "record", None) is not None:
        return {"": result.record}
    runs = getattr(result, "records", None) or getattr(result, "runs", None) or {}
    return dict(enumerate(runs)) if isinstance(runs, list) else dict(runs)


@pytest.mark.parametrize("name", STREAMING)
def test_experiment_streams_partial_results_its_builder_draws(name, monkeypatch):
    monkeypatch.setenv("LECTURE_CACHE_DIR", "off")
    call, build = _experiment_cases()[name]
    seen = []
    final = call(lambda fraction, partial=None: seen.append((fraction, partial)))
    partials = [p for _, p in seen if p is not None]
    fractions = [f for f, _ in seen]
    assert partials and fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    assert all(type(p) is type(final) for p in partials)
    done = _records(final)
    for partial in partials:
        records = _records(partial)
        if records:                                   # the last is still training: a prefix of its final record
            key, record = list(records.items())[-1]   # (all of it when reported after the last recorded step)
            assert record.config.get("partial") and FIRST_ROWS.get(name, 2) <= len(record.steps) <= len(done[key].steps)
            np.testing.assert_array_equal(record.steps, done[key].steps[:len(record.steps)])
        figs = build(partial)
        assert all(isinstance(f, go.Figure) for f in (figs if isinstance(figs, list) else [figs]))
    # the final figures' traces, shown, in every partial: data alone changes, and the page redraws it without
    # plotly's full update (scrub.js, redrawChanged)
    assert {_traces(build(p)) for p in partials} == {_traces(build(final))}
    live = LiveFigures.built(build, final)
    shown = [figures.legend_entries(f) for f in live.widgets]
    for partial in partials:
        # drawn into the panel's figures (which copy data, not style), a run with one row so far shows its point
        live.draw(partial, transient=True)
        assert not _hidden_lone_points(live.widgets), _hidden_lone_points(live.widgets)
        # and the legend keeps the entries on screen (here the final result's): it does not grow as runs start
        assert [figures.legend_entries(f) for f in live.widgets] == shown
    for partial in partials:
        # the curves grow across step axes that stay still, spanning the whole training from the first partial on
        assert _step_ranges(build(partial)) == _step_ranges(build(final))
    plain = call(None)
    for key, record in _records(plain).items():       # streaming changes nothing in the result
        np.testing.assert_array_equal(record.loss, done[key].loss)
    if not done:                                      # a result without records: every field, bit for bit
        _assert_same(plain, final, skip=TIMED.get(name, ()))


def _step_ranges(figs) -> list[tuple]:
    """The range of every x axis that counts training (titled "step k..." or "examples seen"), each set (not
    autoranged)."""
    ranges = [tuple(ax.range) if ax.range else None for f in _as_list(figs) for ax in f.select_xaxes()
              if (ax.title.text or "").startswith(("step k", "examples seen"))]
    assert all(ranges), f"a step axis autoranges: {ranges}"
    return ranges


def _as_list(figs) -> list:
    return figs if isinstance(figs, list) else [figs]


def _hidden_lone_points(figs) -> list[str]:
    """Scatter traces holding one point that they would draw as a line (nothing) or as a point of size 0."""
    hidden = []
    for f in figs:
        for t in f.data:
            if t.type != "scatter" or t.x is None or len(t.x) != 1 or t.visible is False or t.x[0] is None:
                continue
            mode = t.mode or "lines+markers"          # plotly's default for fewer than 20 points
            size = t.marker.size
            if "markers" not in mode or (size is not None and np.all(np.asarray(size) == 0)):
                hidden.append(t.name)
    return hidden


def _traces(figs) -> tuple:
    """Each figure's traces by type and visibility."""
    return tuple(tuple((t.type, t.visible) for t in f.data) for f in (figs if isinstance(figs, list) else [figs]))


def _assert_same(a, b, skip=(), where="result"):
    """``a`` and ``b`` equal bit for bit (NaN equal to NaN), field by field; fields named in ``skip`` left out."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.name not in skip:
                _assert_same(getattr(a, f.name), getattr(b, f.name), skip, f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], skip, f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, skip, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        np.testing.assert_array_equal(a.cpu().numpy(), b.cpu().numpy(), err_msg=where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def test_flush_iopub_returns_once_the_messages_queued_before_it_are_sent(monkeypatch):
    """A streamed partial's messages leave the kernel before its worker trains on: ``_flush_iopub`` waits for the
    IOPub thread to run what was queued before it (here a send that takes 50 ms), and is a no-op outside a kernel."""
    import types

    import zmq
    from ipykernel.iostream import IOPubThread

    from lecture_lib.viz import runner

    assert runner._flush_iopub() is False                    # no kernel in this process
    socket = zmq.Context.instance().socket(zmq.PUB)
    io = IOPubThread(socket)
    io.start()
    try:
        shell = types.SimpleNamespace(kernel=types.SimpleNamespace(iopub_socket=io.background_socket))
        monkeypatch.setattr(runner, "_ipython", lambda: shell)
        sent, seen = [], []

        def worker():
            io.schedule(lambda: (time.sleep(0.05), sent.append("partial")))
            seen.append((runner._flush_iopub(timeout=2.0), list(sent)))

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(5)
        assert seen == [(True, ["partial"])]
    finally:
        io.stop()
        socket.close(linger=0)


def test_smoothed_curves_keep_their_start_while_the_run_streams(monkeypatch):
    """04's smoothed curves take their window from the rows a run will hold, not the rows so far: a partial's
    smoothed loss starts where the final one does (with the rows so far, 04's remedies panel started at 2.1 and
    ended at 1.5 on the same run at full settings)."""
    monkeypatch.setenv("LECTURE_CACHE_DIR", "off")
    from lecture_lib.experiments import implicit_decay as imp
    from lecture_lib.viz import implicit_panels as ip

    partials = []
    final = imp.remedies(1.0, 5e-3, steps=400, progress=lambda f, p=None: p is not None and partials.append(p))
    window = 400 // 40                                    # remedies_figure's, from the 400 rows of a finished run

    def loss_starts(result):
        return {t.name: t.y[:2].tolist() for t in ip.remedies_figure(result).data
                if t.xaxis == "x2" and t.y is not None and len(t.y) > 2 * window}

    done = loss_starts(final)
    checked = [loss_starts(p) for p in partials if loss_starts(p)]
    assert checked and done
    for starts in checked:
        for name, y in starts.items():
            np.testing.assert_allclose(y, done[name], rtol=1e-12, err_msg=name)
