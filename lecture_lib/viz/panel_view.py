"""What a panel looks like: its widgets, CSS and the DOM hooks that tests and the Voila page read.

:class:`PanelView` is the box a :class:`~lecture_lib.viz.panels.LivePanel` displays, top to
bottom: title, caption, controls (with the progress bar at the end of their row), the note
about a link, the message, the figures, the notes, and a hidden state element. It only
shows things; the panel decides what.

DOM hooks for tests and styling: the panel has CSS class ``lecture-panel``, figures
``lecture-figure``, controls ``lecture-control``, the progress row ``lecture-progress``,
notes ``lecture-notes``, the message ``lecture-message``, and a hidden ``lecture-state``
element (:meth:`PanelView.show_state`) whose ``<span data-generation data-busy data-outcome data-panel data-synced
data-link>`` says which request is drawn, whether work is still pending, the panel's number,
whether the page's URL is known, and the panel's URL fragment (``p2.lr=0.3&p2.beta2=0.9``);
``data-partial-generation data-partials``: the request whose partial results (runs still training)
were last drawn, and how many of them (a streamed frame is on the page once
``data-partial-generation`` exceeds the generation drawn before the move).
In presenter mode the panel also has class ``lecture-presenting``.

Few widget models (issue 17, "open fast": the page creates a model and a view for each, 150–320 per
dashboard before): CSS, title and caption are one ``HTML`` (its ``<div>`` elements ``lecture-title`` and
``lecture-caption``), and the layouts and styles that no panel ever changes are one model per kernel,
shared by every panel (:func:`_shared`).

Keys pressed on a control belong to the control: :class:`KeysStayInControls` marks each element
of the controls row that takes focus with ``data-lm-suppress-shortcuts``, which tells JupyterLab's
and Notebook 7's shortcut handling (Lumino) to leave keys pressed on it alone.
Without it, Notebook 7 takes ArrowLeft/ArrowRight on a focused slider handle as "collapse or
expand the heading" and ArrowUp/ArrowDown as "move to the cell above/below" before the slider
sees them (Notebook 7 handles shortcuts in the capture phase; JupyterLab lets the slider see
keys first), so a slider moved by keyboard never moved.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import anywidget
import ipywidgets as widgets
import traitlets
from ipywidgets.widgets.widget_float import ProgressStyle
from ipywidgets.widgets.widget_string import HTMLStyle

# presenter mode: the panel's figures side by side on a 1280x720 canvas (the page scales it to the screen)
PRESENT_WIDTH, PRESENT_FIGURE_HEIGHT, PRESENT_GAP = 1236, 440, 12

PANEL_CSS = """
<style>
.lecture-panel { border: 1px solid #d8dde3; border-radius: 10px; padding: 14px 18px 10px 18px;
                 margin: 14px 0 22px 0; background: #ffffff; box-shadow: 0 1px 3px rgba(0,0,0,0.06);
                 max-width: 1040px; }
.lecture-panel .lecture-title h3 { margin: 0 0 4px 0; font-size: 1.25em; font-weight: 600; color: #1d2a3a; }
.lecture-panel .lecture-caption { color: #4a5563; font-size: 0.98em; line-height: 1.45; margin-bottom: 6px; }
.lecture-panel .lecture-controls { gap: 4px 26px; padding: 6px 0 2px 0; }
.lecture-panel .lecture-control .widget-label { font-size: 1.0em; }
.lecture-panel .lecture-notes { color: #333; font-size: 0.98em; }
.lecture-panel .lecture-notes table { border-collapse: collapse; margin: 6px 0; font-size: 0.95em; }
.lecture-panel .lecture-notes th, .lecture-panel .lecture-notes td { padding: 3px 12px; text-align: right;
                 border-bottom: 1px solid #e3e7ec; }
.lecture-panel .lecture-notes th:first-child, .lecture-panel .lecture-notes td:first-child { text-align: left; }
.lecture-panel .lecture-notes .lecture-diverged { color: #b34700; font-weight: 600; }
.lecture-panel .lecture-message .lecture-error, .lecture-panel .lecture-link-note .lecture-error { background: #fff4e5; border-left: 4px solid #D55E00;
                 padding: 8px 12px; margin: 6px 0; color: #5b2500; border-radius: 4px; }
.lecture-panel .lecture-stale { opacity: 0.45; transition: opacity 0.2s; }
.lecture-panel .lecture-notes.lecture-stale { flex-direction: column; }
.lecture-panel .lecture-notes.lecture-stale::before { content: "Training the new runs; these notes are still for the previous values.";
                 font-style: italic; margin-bottom: 2px; }
</style>
"""


class KeysStayInControls(anywidget.AnyWidget):
    """An invisible widget that gives keys pressed on a control of its box to that control.

    Lumino (the shortcut handling of JupyterLab and Notebook 7) matches no shortcut for a key
    event whose target carries ``data-lm-suppress-shortcuts``. The attribute has to be on the
    focused element itself: Lumino checks the target against a selector such as
    ``.jp-Notebook.jp-mod-commandMode :focus`` before it looks at the target's ancestors. So
    every element of the box that takes focus is marked as it takes it (``focusin``). The box is
    looked up once this widget's element is on the page (a child is rendered before its box
    attaches it). Harmless where nothing reads the attribute (Voila).
    """

    _esm = """const SUPPRESS = "data-lm-suppress-shortcuts";
export default {
  render({ model, el }) {
    let tries = 0;
    const attach = () => {
      const box = el.closest(".lecture-controls");
      if (!box) {
        if (tries++ < 600) setTimeout(attach, 100);
        return;
      }
      const panel = box.closest(".lecture-panel"), anchor = model.get("anchor");
      if (panel && anchor && !panel.id) {           // #panel-N (a static page's "open in the live app" link)
        panel.id = anchor;
        if (location.hash === "#" + anchor) setTimeout(() => panel.scrollIntoView(), 0);
      }
      if (box.hasAttribute(SUPPRESS)) return;       // marked by an earlier view of this widget
      box.setAttribute(SUPPRESS, "");
      box.addEventListener("focusin", (event) => event.target.setAttribute(SUPPRESS, ""));
      const focused = document.activeElement;       // focused before this ran
      if (focused && box.contains(focused)) focused.setAttribute(SUPPRESS, "");
    };
    attach();
  },
};
"""

    anchor = traitlets.Unicode("").tag(sync=True)   # the panel element's id, "panel-N" (set with its number)

    def __init__(self):
        super().__init__(layout=_shared("hidden", lambda: widgets.Layout(display="none")))


_SHARED: dict[str, widgets.Widget] = {}


def _shared(name: str, make: Callable[[], widgets.Widget]) -> widgets.Widget:
    """The kernel's one ``name`` model (a layout or style nothing changes), shared by every panel's widgets."""
    widget = _SHARED.get(name)
    if widget is None or widget.comm is None:       # none yet, or closed (Widget.close_all)
        widget = _SHARED[name] = make()
    return widget


def _html(css_class: str, value: str = "", hidden: bool = False) -> widgets.HTML:
    """An ``HTML`` with the shared layout (``hidden``: not displayed) and style."""
    layout = (_shared("hidden", lambda: widgets.Layout(display="none")) if hidden
              else _shared("layout", widgets.Layout))
    w = widgets.HTML(value, layout=layout, style=_shared("html style", HTMLStyle))
    w.add_class(css_class)
    return w


class PanelView(widgets.VBox):
    """The panel's box of widgets (see the module docstring for its parts and DOM hooks)."""

    def __init__(self, controls: Sequence[widgets.Widget], title: str | None = None, caption: str | None = None):
        self.message: str = ""
        # CSS, title and caption: one widget (the exporter reads the title's and caption's HTML)
        self._title_html = f"<h3>{html.escape(title)}</h3>" if title else ""
        self._caption_html = caption or ""
        self._header = _html("lecture-header", PANEL_CSS
                             + (f"<div class='lecture-title'>{self._title_html}</div>" if title else "")
                             + (f"<div class='lecture-caption'>{caption}</div>" if caption else ""))
        self._bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                          layout=_shared("bar", lambda: widgets.Layout(width="160px")),
                                          style=_shared("bar style", ProgressStyle))
        self._status = _html("lecture-progress-status")
        self._progress = widgets.HBox([self._bar, self._status],
                                      layout=widgets.Layout(visibility="hidden", align_items="center"))
        self._progress.add_class("lecture-progress")
        # the progress bar sits at the end of the controls row: no jump in the layout when it shows
        self._keys, self._keys_number = KeysStayInControls(), None
        self._controls_box = widgets.HBox(list(controls) + [self._progress, self._keys], layout=_shared(
            "controls", lambda: widgets.Layout(flex_flow="row wrap", align_items="center")))
        self._controls_box.add_class("lecture-controls")
        # what a link set (or could not set) on this panel, e.g. "link ignored p2.lr=7: outside [...]"
        self._link_note = _html("lecture-link-note")
        self._message = _html("lecture-message")
        self._figure_box = widgets.VBox([])
        self._figure_box.add_class("lecture-figures")
        self._notes = _html("lecture-notes")
        # machine-readable state for browser tests and the page's URL: see show_state
        self._state = _html("lecture-state", hidden=True)
        super().__init__([self._header, self._controls_box, self._link_note, self._message, self._figure_box,
                          self._notes, self._state])
        self.add_class("lecture-panel")

    @property
    def number(self) -> int | None:
        """The panel's number on the page (1, 2, ...); setting it gives the panel's element the id ``panel-N``."""
        return self._keys_number

    @number.setter
    def number(self, number: int) -> None:
        self._keys_number = number
        self._keys.anchor = f"panel-{number}"

    def show_figures(self, figure_widgets: Sequence[widgets.Widget]) -> None:
        self._figure_box.children = tuple(figure_widgets)

    def show_notes(self, notes: str) -> None:
        """The notes under the figures, for what they show (no longer stale)."""
        self._notes.value = notes or ""
        self.mark_notes_stale(False)

    def mark_notes_stale(self, stale: bool) -> None:
        """Dim the notes, headed by a line that says so, while the figures show new runs training."""
        if stale != ("lecture-stale" in self._notes._dom_classes):
            (self._notes.add_class if stale else self._notes.remove_class)("lecture-stale")

    def show_message(self, text: str, error: bool = False) -> None:
        """A message above the figures (``""`` clears it): bad settings, or a failure (``error``)."""
        self.message = text
        if not text:
            self._message.value = ""
            return
        head = "Something went wrong" if error else "Cannot run with these settings"
        self._message.value = f"<div class='lecture-error'><b>{head}:</b> {html.escape(text)}</div>"

    def show_link_note(self, ignored: Sequence[str]) -> None:
        """List the parts of the page's link that could not be applied (nothing if none)."""
        self._link_note.value = ("" if not ignored else "<div class='lecture-error'><b>Part of the link was ignored:</b> "
                                 + "; ".join(html.escape(i) for i in ignored) + "</div>")

    def show_progress(self, fraction: float, elapsed: float) -> None:
        self._progress.layout.visibility = "visible"
        self._bar.value = fraction
        self._status.value = f"<span style='color:#555'>computing… {elapsed:.1f} s</span>"

    def hide_progress(self) -> None:
        self._progress.layout.visibility = "hidden"

    def lay_out_for_projector(self) -> None:
        """Figures in a row (their size is the figures' business), class ``lecture-presenting``."""
        self._figure_box.layout.flex_flow = "row nowrap"
        self._figure_box.layout.grid_gap = f"{PRESENT_GAP}px"
        self.add_class("lecture-presenting")

    def show_state(self, generation: int, busy: bool, outcome: str, number: int, synced: bool,
                      link: str, partial_generation: int = -1, partials: int = 0) -> None:
        self._state.value = (f"<span data-generation='{generation}' data-busy='{int(busy)}' "
                             f"data-partial-generation='{partial_generation}' data-partials='{partials}' "
                             f"data-outcome='{outcome}' data-panel='{number}' "
                             f"data-synced='{int(synced)}' "
                             f"data-link='{html.escape(link, quote=True)}'></span>")
