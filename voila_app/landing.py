"""Cards for the landing page: one per notebook, built from the notebook itself.

A notebook declares its card in its metadata::

    {"lecture": {"title": "Adaptive methods and grafting",
                 "question": "What do RMSprop and Adam actually precondition by?"}}

and, as a fallback (or for a notebook without that metadata), the first
markdown cell is read: its first ``# heading`` is the title and its first
line in italics (``*How ...?*``) is the question. New notebooks in
``notebooks/`` therefore appear on the landing page without any edit here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

_HEADING = re.compile(r"^\s*#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_ITALIC_LINE = re.compile(r"^\s*(?:\*(?!\*)(.+?)\*|_(?!_)(.+?)_)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"^(\d+)[_-]")


def _plain(text: str) -> str:
    """Markdown emphasis and code marks removed; LaTeX ``$...$`` kept as written."""
    text = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return " ".join(text.split())


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def read_card(path: Path) -> dict:
    """The card of one notebook: ``title``, ``question``, ``number``, ``path`` (file name)."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    meta = nb.get("metadata", {}).get("lecture", {}) or {}
    title, question = meta.get("title"), meta.get("question")
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = _source(cell)
        if title is None and (m := _HEADING.search(text)):
            title = m.group(1)
        if question is None and (m := _ITALIC_LINE.search(text)):
            question = m.group(1) or m.group(2)
        break  # only the first markdown cell speaks for the notebook
    number = _NUMBER.match(path.name)
    fallback = _NUMBER.sub("", path.stem).replace("_", " ").strip().capitalize()
    return {
        "title": _plain(title) if title else fallback,
        "question": _plain(question) if question else "",
        "number": number.group(1) if number else "",
        "path": path.name,
    }


def notebook_cards(directory: Path, base_url: str = "/") -> list[dict]:
    """Cards of every ``*.ipynb`` directly in ``directory``, sorted by file name, with links."""
    cards = []
    for path in sorted(Path(directory).glob("*.ipynb")):
        if path.name.startswith("."):
            continue
        card = read_card(path)
        card["href"] = f"{base_url.rstrip('/')}/voila/render/{quote(path.name)}"
        card["present_href"] = card["href"] + "?present=1"
        cards.append(card)
    return cards


def page_config_hook(page_config, base_url, settings, log, voila_configuration, notebook_path=""):
    """Voila hook: on the landing (tree) page, add ``lectureCards`` to the page config."""
    if not str(notebook_path or "").endswith(".ipynb"):
        root = Path(settings["contents_manager"].root_dir) / (notebook_path or "")
        try:
            page_config["lectureCards"] = notebook_cards(root, base_url)
        except (OSError, ValueError) as exc:  # a half-written notebook must not take the page down
            log.warning("could not read notebook cards: %s", exc)
            page_config["lectureCards"] = []
    return page_config
