"""URL state of a dashboard: parsing links, panels applying them (before or after they are built),
publishing their own state for the address bar, presenter layout, and the pre-heated-kernel path
in which Voila sends the query over a websocket (a real local websocket server here)."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from lecture_lib.viz import figures, panels, url_state
from test_viz import Counter, loss_figure, make_panel, make_record



def test_parse_query_reads_present_panel_and_per_panel_values():
    q = url_state.parse_query("?present=1&panel=3&p3.lr=0.4&p3.weight_decay=5e-3&p10.curv=SGD%20(a)&x=1&panel=0")
    assert q.present and q.panel is None      # the second, invalid panel=0 replaced panel=3 and is reported
    assert q.values == {3: {"lr": "0.4", "weight_decay": "5e-3"}, 10: {"curv": "SGD (a)"}}
    assert set(q.ignored) == {"x", "panel"}
    assert url_state.parse_query("").present is False and url_state.parse_query(None).values == {}
    assert url_state.parse_query("present").present and not url_state.parse_query("present=0").present


def test_encode_decode_round_trip_every_control_kind():
    controls = [panels.log_slider("α", 1e-3, 1.0, 0.1), panels.slider("λ", 0.0, 0.01, 5e-4, step=1e-4),
                panels.int_slider("B", 8, 256, 32), panels.dropdown("M", {"RMSprop (α = 0.001)": ("rmsprop", 1e-3),
                                                                       "SGD": ("sgd", 0.1)}, ("sgd", 0.1)),
                panels.choice("kind", ["fisher", "ggn"], "ggn"), panels.toggle("wd", True)]
    for w in controls:
        assert url_state.decode_value(w, url_state.encode_value(w)) == w.value
    assert url_state.decode_value(controls[3], "RMSprop (α = 0.001)") == ("rmsprop", 1e-3)
    assert url_state.decode_value(controls[5], "0") is False
    with pytest.raises(ValueError, match=r"outside \[0.001, 1\]"):
        url_state.decode_value(controls[0], "7")
    with pytest.raises(ValueError, match="not a number"):
        url_state.decode_value(controls[2], "many")
    with pytest.raises(ValueError, match="not one of 'fisher', 'ggn'"):
        url_state.decode_value(controls[4], "empirical")
    with pytest.raises(ValueError, match="not a number"):
        url_state.decode_value(controls[1], "nan!")
    with pytest.raises(ValueError, match="outside"):
        url_state.decode_value(controls[1], "nan")


def test_scrub_positions_round_trip_and_name_the_positions_when_wrong():
    values = (1.3e-4, 2e-3, 0.005, 4)
    for i in range(len(values)):
        assert url_state.decode_position(values, url_state.encode_position(values, i)) == i
    assert url_state.encode_position(values, 1) == "0.002"
    assert url_state.decode_position(values, "2e-3") == 1 and url_state.decode_position(values, "4.0") == 3
    with pytest.raises(ValueError, match="not one of the positions 0.00013, 0.002, 0.005, 4"):
        url_state.decode_position(values, "0.003")
    with pytest.raises(ValueError, match="not one of the positions"):
        url_state.decode_position(values, "big")


def test_link_lists_only_changed_controls_and_state_publishes_it(page):
    panel = make_panel(Counter())
    assert panel.number == 1 and panel.link() == {}
    assert "data-panel='1'" in panel._state.value and "data-link=''" in panel._state.value
    assert "data-synced='0'" in panel._state.value          # no query outside Voila: the page leaves the URL alone
    panel.set(lr=0.5)
    assert panel.wait(10)
    time.sleep(0.05)
    assert panel.link() == {"lr": "0.5"}
    assert "data-link='p1.lr=0.5'" in panel._state.value
    assert make_panel(Counter()).number == 2


def test_a_link_known_at_construction_sets_controls_before_the_first_computation(page):
    page.receive("p1.lr=0.5&p1.slow=0&p2.lr=0.05")
    compute = Counter()
    panel = make_panel(compute)
    assert compute.calls == [pytest.approx(0.5)]   # computed once, for the link's value
    assert len(panel.figure.data[1].y) == 20                      # and drawn: α ≈ 0.5 diverges at 20 here
    assert "data-synced='1'" in panel._state.value
    other = make_panel(Counter())
    assert other.values["lr"] == pytest.approx(0.05)


def test_a_link_arriving_later_recomputes_once_and_reports_what_it_ignored(page):
    compute = Counter()
    panel = make_panel(compute)
    assert len(compute.calls) == 1
    page.receive("p1.lr=0.5&p1.slow=1&p1.beta=3&p1.lr2=x&p1.slow=maybe")
    assert panel.wait(10)
    assert len(compute.calls) == 2 and panel.values["lr"] == pytest.approx(0.5)
    note = panel._link_note.value
    assert "p1.beta (this panel has no such control" in note and "p1.slow=maybe" in note
    assert panel.values["slow"] is False                    # the later, bad slow=maybe was not applied
    page.receive("p1.lr=70")                                # out of range: message, value kept
    assert panel.wait(10)
    assert panel.values["lr"] == pytest.approx(0.5) and "outside [0.001, 1]" in panel._link_note.value


def test_present_lays_figures_side_by_side_for_a_projector(page):
    panel = panels.LivePanel(
        compute=lambda lr: make_record(lr),
        controls={"lr": panels.log_slider("α", 1e-3, 1.0, 0.1)},
        build=lambda rec: [loss_figure(rec), loss_figure(rec)])
    page.receive("present=1")
    assert panel.presenting and "lecture-presenting" in panel._dom_classes
    assert panel._figure_box.layout.flex_flow == "row nowrap"
    widths = [fw.layout.width for fw in panel.figures]
    assert widths[0] == widths[1] and 2 * widths[0] + panels.PRESENT_GAP <= panels.PRESENT_WIDTH
    for fw in panel.figures:
        assert fw.layout.height == panels.PRESENT_FIGURE_HEIGHT and fw.layout.font.size == figures.PROJECTOR_FONT_SIZE
        assert all(t.line.width >= 3 for t in fw.data)
        # a page connecting only now (pre-heated kernel) starts from the restyled figure
        assert fw._widget_layout["width"] == widths[0] and fw._widget_layout["font"]["size"] == 18
    panel.set(lr=0.5)
    assert panel.wait(10)
    assert len(panel.figures[0]._widget_data[1]["y"]) == 20   # data updates refresh the initial state too


def test_restyle_for_projector_checks_its_size():
    fig = loss_figure(make_record())
    with pytest.raises(ValueError, match="width and height"):
        figures.restyle_for_projector(fig, width=50, height=400)


def test_preheated_kernel_receives_the_query_over_voilas_websocket(page, monkeypatch):
    """As in a pre-heated Voila kernel: panels exist before the visitor arrives, the query comes later."""
    import websockets

    kernel_id = "0123-kernel"
    ready, sent = threading.Event(), threading.Event()
    state = {}

    async def handler(ws):
        state["path"] = ws.request.path
        await ws.send(json.dumps({"QUERY_STRING": "present=1&p1.lr=0.5", "SCRIPT_NAME": "/voila/render/x.ipynb"}))
        sent.set()
        await asyncio.sleep(0.5)

    async def serve():
        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            state["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.sleep(30)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    assert ready.wait(10)
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setenv("VOILA_KERNEL_ID", kernel_id)
    monkeypatch.setenv("VOILA_APP_PORT", str(state["port"]))
    monkeypatch.setenv("VOILA_SERVER_URL", "/")
    monkeypatch.delenv("VOILA_WS_BASE_URL", raising=False)
    panel = make_panel(Counter())
    deadline = time.monotonic() + 15
    while not (panel.presenting and panel.values["lr"] > 0.4) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent.is_set() and state["path"] == f"/voila/query/{kernel_id}"
    assert panel.presenting and panel.values["lr"] == pytest.approx(0.5)
    assert panel.wait(10) and len(panel.figure.data[1].y) == 20
    assert page.query.present and "data-synced='1'" in panel._state.value


def test_outside_voila_nothing_listens(page):
    make_panel(Counter())
    assert page.query is None and not page._listening
    assert not [t for t in threading.enumerate() if t.name == "lecture-url-state"]
