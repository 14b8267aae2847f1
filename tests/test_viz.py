"""Tests of the figure builders and the LivePanel wiring (no browser, no kernel)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from lecture_lib.record import Record
from lecture_lib.viz import fast_mode, figures, panels

LABELS = ["α = 0.1", "α = 3"]
REPO = Path(__file__).resolve().parent.parent


def make_record(lr: float = 0.1, diverge_at: int | None = 20, steps: int = 50) -> Record:
    k = np.arange(steps, dtype=float)
    loss = np.stack([np.exp(-lr * k), 1.0 + lr * k], axis=1)
    diverged_at = np.array([-1, -1])
    if diverge_at is not None:
        loss[diverge_at:, 1] = np.nan
        diverged_at[1] = diverge_at
    return Record(steps=k.astype(int), loss=loss, accuracy=None, param_norm={}, grad_norm={},
                  effective_lr={}, angular_step={}, diverged_at=diverged_at)


def loss_figure(record: Record) -> go.Figure:
    return figures.figure(figures.line_traces(record, "loss", LABELS), y_title="loss J(w)", log_y=True)


def test_fast_mode_reads_environment():
    assert fast_mode({"LECTURE_FAST": "1"}) and fast_mode({"LECTURE_FAST": " True "})
    assert not fast_mode({}) and not fast_mode({"LECTURE_FAST": "0"})


def test_line_traces_truncate_diverged_runs_and_never_draw_nan():
    rec = make_record(diverge_at=20)
    traces = figures.line_traces(rec, "loss", LABELS)
    assert len(traces) == 2
    assert len(traces[0].x) == 50 and np.all(np.isfinite(traces[0].y))
    assert len(traces[1].x) == 20 and np.all(np.isfinite(traces[1].y))
    assert traces[1].name == "α = 3 (diverged at step 20)"
    assert traces[0].name == "α = 0.1"
    # the end point of a diverged run carries a visible marker, the others none
    assert traces[1].marker.size[-1] > 0 and np.all(np.asarray(traces[0].marker.size) == 0)


def test_line_traces_catches_nan_the_record_did_not_flag():
    rec = make_record(diverge_at=None)
    values = rec.loss.copy()
    values[7:, 0] = np.inf
    traces = figures.line_traces(rec, values, LABELS)
    assert len(traces[0].y) == 7 and "diverged at step 7" in traces[0].name


def test_line_traces_validates_shapes():
    rec = make_record()
    with pytest.raises(ValueError, match="labels"):
        figures.line_traces(rec, "loss", ["only one"])
    with pytest.raises(ValueError, match="x has"):
        figures.line_traces(rec, "loss", LABELS, x=np.arange(3))


def test_layout_theme_and_log_axes():
    fig = figures.figure([], x_title="step k", y_title="‖w‖²", log_y=True, title="Norm growth")
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.type == "linear"
    assert fig.layout.yaxis.title.text == "‖w‖²" and fig.layout.font.size >= 14
    assert list(fig.layout.colorway) == list(figures.PALETTE)
    assert figures.color(len(figures.PALETTE)) == figures.PALETTE[0]


def test_span_steps_fixes_step_axes_to_the_whole_training():
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=3)
    fig.update_xaxes(type="log", row=1, col=2)                                  # step k drawn at k + 1
    partial = SimpleNamespace(steps=np.array([0]), config={"steps": 400, "partial": True})   # a partial Record's parts
    assert figures.span_steps(fig, {"a": partial, "b": None}, row=1, col=1) is fig         # the first of a dict
    figures.span_steps(fig, [partial], row=1, col=2)
    assert list(fig.layout.xaxis.range) == [0, 400] and fig.layout.xaxis3.range is None    # col 3: not steps
    np.testing.assert_allclose(fig.layout.xaxis2.range, [0, np.log10(400)])
    for nothing in (SimpleNamespace(steps=np.array([0]), config={}), [], None):             # no settings: unchanged
        assert figures.span_steps(figures.figure([]), nothing).layout.xaxis.range is None


def test_show_lone_points_draws_a_one_point_line_as_a_point():
    fig = figures.figure([go.Scatter(x=[0], y=[1], mode="lines", name="line"),
                          go.Scatter(x=[0], y=[1], mode="lines+markers", marker=dict(size=[0.0]), name="sized"),
                          go.Scatter(x=[0, 1], y=[1, 2], mode="lines", name="two"),
                          go.Scatter(x=[0], y=[1], mode="markers", marker=dict(size=13), name="marker")])
    line, sized, two, marker = figures.show_lone_points(fig).data
    assert line.mode == "lines+markers" and sized.mode == "lines+markers"
    assert list(sized.marker.size) == [figures.LONE_POINT_SIZE]
    assert two.mode == "lines" and marker.marker.size == 13                 # two points, a large marker: as built
    target = go.FigureWidget(figures.figure([go.Scatter(x=[0, 1], y=[1, 2], mode="lines", name="line")]))
    figures.copy_trace_data(target, fig)                                     # the mode is copied with the data
    assert target.data[0].mode == "lines+markers"


@pytest.mark.parametrize("low, high", [(0.0155, 0.05), (0.004, 0.3), (0.013, 0.11), (1.2e-4, 3e-4), (1.0, 8.0),
                                       (2e3, 6e4), (0.02, 0.03)])
def test_log_ticks_label_a_short_log_axis_with_a_few_round_values(low, high):
    ticks = figures.log_ticks(low, high)
    shown = [(v, t) for v, t in zip(ticks["tickvals"], ticks["ticktext"]) if low <= v <= high]
    assert 2 <= len(shown) <= figures.MAX_LOG_LABELS
    values = np.array(ticks["tickvals"])
    assert np.all(np.diff(values) > 0) and values[0] < low / 5 and values[-1] > high * 5   # a decade past each end
    mantissas = {round(v / 10 ** np.floor(np.log10(v) + 1e-9), 6) for v in values}
    assert any(mantissas <= set(ladder) for ladder in figures.LOG_LADDERS)                  # one ladder, every decade
    for v, t in shown:
        assert float(t.replace("×10", "e").translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))) == \
            pytest.approx(v, rel=1e-9)


def test_log_ticks_leave_wide_and_very_narrow_spans_to_plotly_and_stay_put_while_data_grow():
    assert figures.log_ticks(1e-5, 0.1) is None and figures.log_ticks(0.029, 0.031) is None
    assert figures.log_ticks(0.0, 1.0) is None and figures.log_ticks(1.0, np.inf) is None
    assert figures.log_ticks(0.02, 0.03) == figures.log_ticks(0.015, 0.05)     # a streamed curve growing: same ticks
    assert [figures.tick_label(v) for v in (0.015, 2.0, 3000.0, 1.5e-4, 1e5, 2e-5)] == \
        ["0.015", "2", "3000", "1.5×10⁻⁴", "10⁵", "2×10⁻⁵"]


def test_ladder_ticks_label_every_decade_at_the_ladder_in_a_style_per_value():
    ticks = figures.ladder_ticks((1, 2, 5), (-5, 5))
    label = dict(zip(ticks["tickvals"], ticks["ticktext"]))
    assert len(label) == 33 and ticks["tickvals"] == sorted(ticks["tickvals"])
    assert (label[0.002], label[0.05], label[1.0], label[2e4], label[1e-5], label[5e5]) == \
        ("0.002", "0.05", "1", "20000", "10⁻⁵", "5×10⁵")


def test_tidy_log_axes_labels_each_short_log_axis_from_its_visible_data():
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=3)
    fig.add_trace(go.Scatter(x=[1, 2, 3], y=[0.02, None, 0.045]), 1, 1)
    fig.add_trace(go.Scatter(x=[1, 2], y=[1e-9, 1e3], visible=False), 1, 1)       # hidden: not counted
    fig.add_trace(go.Scatter(x=[1, 2], y=[0.02, 0.04]), 1, 2)                     # a linear axis
    fig.add_trace(go.Scatter(x=[1, 2], y=[0.02, 0.04]), 1, 3)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", tickvals=[0.03], row=1, col=3)                    # its own ticks
    figures.tidy_log_axes(fig)
    assert fig.layout.yaxis.tickvals == tuple(figures.log_ticks(0.02, 0.045)["tickvals"])
    assert fig.layout.yaxis2.tickvals is None and fig.layout.yaxis3.tickvals == (0.03,)
    empty = figures.figure([go.Scatter(x=[], y=[])], log_y=True)                 # no data yet: plotly's ticks
    assert figures.tidy_log_axes(empty).layout.yaxis.tickvals is None


def test_unify_log_ticks_gives_every_position_the_ticks_of_the_familys_span():
    def position(low, high, **axis):
        fig = figures.figure([go.Scatter(x=[1, 2], y=[low, high])], log_y=True)
        fig.update_yaxes(**axis)
        return figures.tidy_log_axes(fig)

    family = [position(0.02, 0.05), position(0.001, 0.03), position(0.01, 0.2)]
    assert len({f.layout.yaxis.tickvals for f in family}) == 3                     # each labelled for its own data
    figures.unify_log_ticks(family)
    assert {f.layout.yaxis.tickvals for f in family} == {tuple(figures.log_ticks(0.001, 0.2)["tickvals"])}
    assert {f.layout.yaxis.ticktext for f in family} == {tuple(figures.log_ticks(0.001, 0.2)["ticktext"])}
    wide = [position(0.02, 0.05), position(1e-6, 0.05)]           # the family spans too much: plotly's own ticks
    figures.unify_log_ticks(wide)
    assert [f.layout.yaxis.tickvals for f in wide] == [None, None]
    fixed = [position(0.02, 0.05, range=[-2, 0]), position(0.001, 0.03, range=[-2, 0])]    # ranges set: left
    figures.unify_log_ticks(fixed)
    assert fixed[0].layout.yaxis.tickvals != fixed[1].layout.yaxis.tickvals
    same = [position(0.02, 0.05, tickvals=[0.03]), position(0.001, 0.03, tickvals=[0.03])]  # equal ticks: left
    figures.unify_log_ticks(same)
    assert [f.layout.yaxis.tickvals for f in same] == [(0.03,), (0.03,)]


def test_reference_line_drops_non_finite_points():
    line = figures.reference_line([1, 2, 3], [1.0, np.nan, 3.0], "prediction")
    assert list(line.x) == [1.0, 3.0] and line.line.dash == "dash"


def test_copy_trace_data_moves_data_not_style():
    target = go.FigureWidget(loss_figure(make_record(0.1, None)))
    source = loss_figure(make_record(0.5, 10))
    figures.copy_trace_data(target, source)
    assert len(target.data[1].x) == 10 and "diverged at step 10" in target.data[1].name
    np.testing.assert_allclose(target.data[0].y, np.exp(-0.5 * np.arange(50)))
    assert target.data[0].line.color == figures.PALETTE[0]          # style stays as built


def test_copy_trace_data_matches_traces_by_name_hides_and_adds():
    def fig(*names):
        return figures.figure([go.Scatter(x=[0, 1], y=[i, i], name=n) for i, n in enumerate(names)])

    target = go.FigureWidget(fig("a", "b", "c"))
    figures.copy_trace_data(target, fig("c", "a"))                  # order changed, b gone
    assert [t.name for t in target.data] == ["a", "b", "c"]
    assert list(target.data[0].y) == [1, 1] and list(target.data[2].y) == [0, 0]
    assert target.data[1].visible is False and target.data[0].visible is not False
    figures.copy_trace_data(target, fig("a", "b", "c", "d"))        # b comes back, d is new
    assert [t.name for t in target.data] == ["a", "b", "c", "d"]
    assert target.data[1].visible is True and list(target.data[3].y) == [3, 3]
    figures.copy_trace_data(target, figures.figure([]))             # nothing left to draw: all hidden
    assert all(t.visible is False for t in target.data)


def test_copy_trace_data_in_a_batch_sends_what_changed_in_one_message():
    def fig(ya, yb):
        return figures.figure([go.Scatter(x=[0, 1], y=ya, name="a"), go.Scatter(x=[0, 1], y=yb, name="b")])

    target = go.FigureWidget(fig([0, 1], [2, 3]))
    sent = []
    target._send_update_msg = lambda restyle_data, relayout_data, trace_indexes=None, **kw: sent.append(
        (restyle_data, trace_indexes))
    with target.batch_update():
        figures.copy_trace_data(target, fig([5, 6], [2, 3]))        # only a's y changed
    assert len(sent) == 1 and sent[0][1] == [0] and set(sent[0][0]) == {"y"}
    assert list(target.data[0].y) == [5, 6] and list(target.data[1].y) == [2, 3]


def test_copy_trace_data_follows_a_renamed_trace():
    """A run that diverges changes its legend entry: still the same trace (matched in order)."""
    target = go.FigureWidget(loss_figure(make_record(0.1, None)))
    figures.copy_trace_data(target, loss_figure(make_record(0.1, 20)))
    assert len(target.data) == 2 and target.data[1].name == "α = 3 (diverged at step 20)"
    assert len(target.data[1].y) == 20 and target.data[1].line.color == figures.PALETTE[1]
    figures.copy_trace_data(target, loss_figure(make_record(0.1, None)))
    assert len(target.data) == 2 and target.data[1].name == "α = 3" and len(target.data[1].y) == 50


def test_control_helpers():
    s = panels.log_slider("α (learning rate)", 1e-3, 1.0, 0.1)
    assert s.continuous_update is False and s.min == pytest.approx(-3) and s.max == pytest.approx(0)
    assert panels.slider("λ", 0.0, 0.01, 5e-4, step=1e-4).continuous_update is False
    assert panels.int_slider("B", 1, 64, 8).continuous_update is False
    assert panels.dropdown("optimizer", {"SGD": "sgd", "Adam": "adam"}, "adam").value == "adam"
    assert panels.toggle("center", True).value is True
    with pytest.raises(ValueError):
        panels.log_slider("α", 0.0, 1.0, 0.1)
    with pytest.raises(ValueError):
        panels.slider("λ", 1.0, 0.0, 0.5)


def test_divergence_notes_lists_only_diverged_runs():
    assert panels.divergence_notes(make_record(diverge_at=12), LABELS).endswith("α = 3: diverged at step 12</span>")
    assert panels.divergence_notes(make_record(diverge_at=None), LABELS) == ""


class Counter:
    """A compute function that counts its calls and can be slowed down or made to fail."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[float] = []
        self.delay = delay

    def __call__(self, lr: float, slow: bool = False):
        self.calls.append(lr)
        if lr > 0.9:
            raise ValueError("lr must be at most 0.9 for this demo")
        if lr < 2e-3:
            raise RuntimeError("boom")
        if slow:
            time.sleep(self.delay)
        return make_record(lr, 20 if lr > 0.3 else None)


def make_panel(compute, **kwargs) -> panels.LivePanel:
    return panels.LivePanel(
        compute=compute,
        controls={"lr": panels.log_slider("α", 1e-3, 1.0, 0.1), "slow": panels.toggle("slow", False)},
        build=loss_figure,
        notes=lambda rec: panels.divergence_notes(rec, LABELS),
        title="Loss curves", caption="Move α.", **kwargs)


def test_building_a_panel_computes_its_default_exactly_once():
    compute = Counter()
    panel = make_panel(compute)
    assert compute.calls == [pytest.approx(0.1)]
    np.testing.assert_allclose(panel.figure.data[0].y, np.exp(-0.1 * np.arange(50)))
    panel.set(lr=0.5)
    assert panel.wait(10) and len(compute.calls) == 2


def test_build_may_return_several_figures_and_change_their_layout():
    def build(rec):
        title = f"{np.isnan(rec.loss).any(axis=0).sum()} diverged"
        return [loss_figure(rec).update_layout(title=title), loss_figure(rec)]

    compute = Counter()
    panel = panels.LivePanel(compute=compute, controls={"lr": panels.log_slider("α", 1e-3, 1.0, 0.1)},
                             build=build)
    assert len(compute.calls) == 1 and len(panel.figures) == 2
    assert panel.figures[0].layout.title.text == "0 diverged"
    panel.figures[0].layout.xaxis.range = [0, 10]                 # as a user's zoom would
    panel.set(lr=0.5)
    assert panel.wait(10)
    assert panel.figures[0].layout.title.text == "1 diverged"    # the builder's change arrives
    assert tuple(panel.figures[0].layout.xaxis.range) == (0, 10)  # the user's zoom stays
    assert len(panel.figures[1].data[1].y) == 20


def test_with_build_a_failed_first_computation_builds_the_figure_later():
    broken = panels.LivePanel(compute=Counter(), controls={"lr": panels.log_slider("α", 1e-3, 1.0, 0.95)},
                              build=loss_figure)
    assert broken.figures == [] and "lr must be at most 0.9" in broken.message
    broken.set(lr=0.2)
    assert broken.wait(10) and broken.message == ""
    assert len(broken.figure.data) == 2 and broken.figure in broken._figure_box.children


def test_figure_widget_class_can_be_chosen_by_the_environment(monkeypatch):
    from lecture_lib.viz import live_figures

    monkeypatch.setenv("LECTURE_FIGURE_WIDGET", "voila_app.figure_widget:SharedBundleFigureWidget")
    assert "widgetbundle.js" in live_figures.figure_widget(loss_figure(make_record()))._esm
    monkeypatch.setenv("LECTURE_FIGURE_WIDGET", "no_such_module:Widget")     # unusable: plotly's own
    assert live_figures.figure_widget_class() is go.FigureWidget
    monkeypatch.delenv("LECTURE_FIGURE_WIDGET")
    fw = live_figures.figure_widget(loss_figure(make_record()))
    assert isinstance(fw, go.FigureWidget) and "widgetbundle.js" not in str(fw._esm)


def test_runner_alone_caches_supersedes_and_delivers_newest_first():
    from lecture_lib.viz.runner import ComputeRunner

    started, gate, outcomes, idle = threading.Event(), threading.Event(), [], threading.Event()

    def compute(x):
        if x == "slow":
            started.set()
            gate.wait(5)
        if x == "bad":
            raise ValueError("x is bad")
        return x.upper()

    runner = ComputeRunner(compute, on_outcome=outcomes.append, on_idle=idle.set)
    assert runner.run_now({"x": "a"}).value == "A" and runner.generation == 1
    runner.request({"x": "slow"})                 # generation 2, blocked
    assert started.wait(5)
    runner.request({"x": "a"})                    # generation 3, cached: delivered at once
    assert outcomes[-1].value == "A" and outcomes[-1].generation == 3 and runner.busy
    gate.set()
    assert runner.wait(10) and idle.wait(10)
    assert [o.generation for o in outcomes] == [1, 3]           # the slow result was never delivered
    assert runner.key({"x": "slow"}) in runner.cache
    runner.request({"x": "bad"})
    assert runner.wait(10) and (outcomes[-1].kind, outcomes[-1].value) == ("bad", "x is bad")


class FakeEvents:
    """IPython's ``shell.events``: callbacks registered by event name, triggered as a kernel runs a cell."""

    def __init__(self):
        self.callbacks = {"pre_execute": [], "post_execute": []}

    def register(self, event, callback):
        self.callbacks[event].append(callback)

    def unregister(self, event, callback):
        self.callbacks[event].remove(callback)

    def trigger(self, event):
        for callback in self.callbacks[event][:]:
            callback()


def test_warm_when_idle_imports_once_the_kernel_has_run_no_cell_for_a_while(tmp_path, monkeypatch):
    from lecture_lib.viz import runner

    (tmp_path / "lecture_warm_probe.py").write_text("import time\nIMPORTED_AT = time.monotonic()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shell = type("Shell", (), {"events": FakeEvents()})()
    assert runner.warm_when_idle(["lecture_warm_probe"], quiet=0.2) is None           # not in a kernel
    thread = runner.warm_when_idle(["lecture_warm_probe"], quiet=0.2, shell=shell)   # called in a cell
    time.sleep(0.5)
    assert "lecture_warm_probe" not in sys.modules                   # that cell still runs
    shell.events.trigger("post_execute")
    shell.events.trigger("pre_execute")                               # the next cell: 1 s long
    time.sleep(1.0)
    assert "lecture_warm_probe" not in sys.modules
    shell.events.trigger("post_execute")
    ended = time.monotonic()
    thread.join(5)
    assert sys.modules["lecture_warm_probe"].IMPORTED_AT - ended >= 0.2                  # after `quiet` seconds
    assert shell.events.callbacks == {"pre_execute": [], "post_execute": []}
    assert runner.warm_when_idle(["lecture_warm_probe"], quiet=0.2, shell=shell) is None   # once per process


def test_warm_when_idle_runs_tasks_after_the_quiet_and_past_one_that_fails():
    from lecture_lib.viz import runner

    shell = type("Shell", (), {"events": FakeEvents()})()
    ran = []

    def fails():
        raise RuntimeError("a warm-up that fails")

    thread = runner.warm_when_idle([], quiet=0.2, shell=shell, tasks=(fails, lambda: ran.append(time.monotonic())))
    time.sleep(0.4)
    assert ran == []                                                  # the cell that built the panel still runs
    shell.events.trigger("post_execute")
    ended = time.monotonic()
    thread.join(5)
    assert len(ran) == 1 and ran[0] - ended >= 0.2
    assert runner.warm_when_idle([], quiet=0.2, shell=shell) is None                     # nothing to do


def test_after_the_warm_up_a_first_curvature_computation_imports_nothing():
    """torch imports torch._dynamo (sympy with it, 1.1-1.6 s) on a process's first torch.func transform: a kernel
    whose notebook came from the result cache paid it on its first computed move. After the warm-up it does not."""
    import subprocess

    fresh = ("import sys, time\n"
             "import torch\n"
             "from lecture_lib import curvature\n"
             "from lecture_lib.models import MLP\n"
             "from lecture_lib.viz import runner\n"
             "class Events:\n"
             "    register = unregister = lambda self, event, callback: setattr(self, event, callback)\n"
             "shell = type('Shell', (), {{'events': Events()}})()\n"
             "if {warm}:\n"
             "    thread = runner.warm_when_idle(runner.TORCH_FUNC_IMPORTS, quiet=0.0, shell=shell)\n"
             "    shell.events.post_execute(); thread.join(30)\n"
             "before = set(sys.modules)\n"
             "curvature.gauss_newton(MLP([3, 4, 2], activation='tanh', seed=0), torch.randn(5, 3), 'mse')\n"
             "print(len(set(sys.modules) - before))\n")
    run = lambda warm: int(subprocess.run([sys.executable, "-c", fresh.format(warm=warm)], cwd=REPO, text=True,
                                          capture_output=True, check=True).stdout.split()[-1])
    assert run(False) > 100            # what the warm-up is for: torch's lazy imports on the first transform
    assert run(True) == 0


def test_panel_builds_one_figure_widget_with_all_traces_and_dom_hooks():
    panel = make_panel(Counter())
    assert isinstance(panel.figure, go.FigureWidget) and len(panel.figure.data) == 2
    assert "lecture-panel" in panel._dom_classes and "lecture-figure" in panel.figure._dom_classes
    assert panel.values == {"lr": 0.1, "slow": False}
    np.testing.assert_allclose(panel.figure.data[0].y, np.exp(-0.1 * np.arange(50)))


def test_panel_updates_on_change_notes_divergence_and_caches():
    compute = Counter()
    panel = make_panel(compute)
    figure_before = panel.figure
    panel.set(lr=0.5)
    assert panel.wait(10)
    assert panel.figure is figure_before  # never rebuilt
    assert len(panel.figure.data[1].y) == 20 and "diverged at step 20" in panel._notes.value
    n = len(compute.calls)
    panel.set(lr=0.1)  # cached: drawn without computing
    assert panel.wait(10) and len(compute.calls) == n
    assert len(panel.figure.data[1].y) == 50 and panel._notes.value == ""


def test_panel_shows_bad_input_message_instead_of_traceback():
    panel = make_panel(Counter())
    panel.set(lr=1.0)
    assert panel.wait(10)
    assert "lr must be at most 0.9" in panel.message and "Cannot run" in panel._message.value
    assert "Traceback" not in panel._message.value
    panel.set(lr=0.2)
    assert panel.wait(10) and panel.message == "" and panel._message.value == ""


def test_panel_shows_short_message_for_unexpected_errors():
    panel = make_panel(Counter())
    panel.set(lr=1e-3)
    assert panel.wait(10)
    assert "RuntimeError: boom" in panel.message and "Something went wrong" in panel._message.value


def test_first_compute_raises_in_strict_mode(monkeypatch):
    monkeypatch.setenv("LECTURE_PANEL_RAISE", "1")

    def broken(lr, slow):
        raise RuntimeError("broken notebook")

    with pytest.raises(RuntimeError, match="broken notebook"):
        make_panel(broken)
    monkeypatch.delenv("LECTURE_PANEL_RAISE")
    assert "broken notebook" in make_panel(broken).message


def test_newer_value_supersedes_running_computation():
    compute = Counter(delay=0.6)
    panel = make_panel(compute, progress_after=0.1)
    panel.set(slow=True)          # slow computation for lr=0.1 starts
    time.sleep(0.15)
    assert panel._progress.layout.visibility == "visible"
    panel.set(lr=0.5)             # arrives while the first is still running
    assert panel.wait(10)
    assert panel.values["lr"] == 0.5 and len(panel.figure.data[1].y) == 20
    assert panel._progress.layout.visibility == "hidden"
    assert "lecture-stale" not in panel.figure._dom_classes


def test_stale_result_never_overwrites_newer_cached_one():
    gate = threading.Event()

    def compute(lr, slow):
        if slow:
            gate.wait(5)
        return make_record(lr, None)

    panel = make_panel(compute)
    panel.set(slow=True)          # lr=0.1 slow, blocked on the gate
    panel.set(slow=False)         # cached result for (0.1, False) drawn at once
    drawn = np.array(panel.figure.data[0].y)
    gate.set()
    assert panel.wait(10)
    np.testing.assert_allclose(panel.figure.data[0].y, drawn)
    assert panel.values == {"lr": 0.1, "slow": False}


def test_progress_callback_reports_and_cancels():
    seen = []

    def compute(lr, slow, progress):
        for i in range(20 if slow else 1):
            progress(i / 20)
            seen.append(lr)
            time.sleep(0.05 if slow else 0)
        return make_record(lr, None)

    panel = make_panel(compute, progress_after=0.05)
    panel.set(slow=True)
    time.sleep(0.3)
    assert 0 < panel._bar.value < 1
    panel.set(lr=0.2)             # supersedes: the slow run stops at its next progress call
    assert panel.wait(10)
    assert seen.count(0.1) < 20 and panel.values["lr"] == 0.2


def test_cache_is_bounded():
    panel = make_panel(Counter(), cache_size=2)
    for lr in (0.2, 0.3, 0.4):
        panel.set(lr=lr)
        assert panel.wait(10)
    assert len(panel.runner.cache) == 2


def test_state_element_reports_generation_busy_and_outcome():
    panel = make_panel(Counter())
    assert "data-generation='1'" in panel._state.value and "data-busy='0'" in panel._state.value
    panel.set(lr=0.5)
    assert panel.wait(10)
    deadline = time.monotonic() + 5
    while "data-busy='0'" not in panel._state.value and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "data-generation='2'" in panel._state.value and "data-busy='0'" in panel._state.value
    panel.set(lr=1.0)
    assert panel.wait(10)
    time.sleep(0.05)
    assert "data-outcome='bad'" in panel._state.value


def test_the_house_margins_hold_labels_legend_and_titles_on_the_first_draw(chromium, tmp_path):
    """A margin that plotly's automargin has to widen makes it plot the figure a second time on its first draw (60-110
    ms of a dashboard's first plot, docs/performance.md). The house margins hold log tick labels as powers of ten over
    several decades, axis titles and a one-row legend; ``legend_rows=2`` a legend that wraps."""
    from browser_helpers import close_context, new_page, plotly_page

    x = np.arange(1, 601)
    def built(names, **kwargs):
        traces = [go.Scatter(x=x, y=np.geomspace(10.0 ** -(4 + i), 10.0 ** (2 - i), x.size), name=n)
                  for i, n in enumerate(names)]
        return figures.figure(traces, x_title="step k", y_title="training loss J (÷ its start)", log_y=True, **kwargs)

    figs = [built(["SGD", "Adam"]), built(["SGD + weight decay, every layer", "Adam", "AdamW", "no decay"]),
            built(["no decay", "decay on BN layers", "decay on top layer", "decay everywhere", "grafted norms",
                   "grafted + top decay"], legend_rows=2),
            built(["SGD", "Adam"], title="over training")]
    context, page, watcher = new_page(chromium)
    try:
        page.goto(plotly_page(tmp_path / "margins.html", figs, width=1000))
        got = page.evaluate("async () => (await Promise.all(window.figs)).map(gd => {"
                            " const s = gd._fullLayout._size, m = gd._fullLayout.margin;"
                            " return [[s.l, s.r, s.t, s.b], [m.l, m.r, m.t, m.b]]; })")
        for size, margin in got:
            assert size == margin
        assert got[2][1][2] > got[0][1][2] and got[3][1][2] > got[0][1][2]      # room for a 2nd row, a title
        assert watcher.errors == []
    finally:
        close_context(context)
