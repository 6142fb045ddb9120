"""Turn results and errors into what the page shows: a status Markdown and the summary JSON.

This is the one place a ``QuantcoreError`` becomes user text. Everything that
came from a client, a folder listing or an exception is escaped before it goes
into Markdown, so a crafted folder or file name cannot inject markup or links.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from quantcore.errors import (
    HubError,
    ModelNotFoundError,
    PathNotAllowedError,
    QuantcoreError,
    RunTimeoutError,
    ServerBusyError,
)

MAX_SHOWN_CHARS = 300
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:])")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
# Lone surrogates: how Python spells the undecodable bytes of a non-UTF-8 file name.
_SURROGATES = re.compile("[\ud800-\udfff]")


class Kind(StrEnum):
    """How a status box is styled (CSS class ``qp-status-<kind>``)."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


# The status text starts with one of these, so API scripts can tell kinds apart too.
ICONS = {Kind.INFO: "ℹ", Kind.SUCCESS: "✔", Kind.WARNING: "⚠", Kind.ERROR: "✖"}

# Gradio puts elem_classes on the block and again on the Markdown inside it: style the block only.
STATUS_CSS = """
.block.qp-status { border-radius: 8px; padding: 0.6rem 0.9rem; border-left: 5px solid; }
.block.qp-status p, .block.qp-status li { margin: 0.15rem 0; }
.block.qp-status-info { background: #eef4fb; border-color: #5b8def; }
.block.qp-status-success { background: #edf8f0; border-color: #2f9e55; }
.block.qp-status-warning { background: #fdf6e7; border-color: #d99a1e; }
.block.qp-status-error { background: #fcedee; border-color: #d03b47; }
.dark .block.qp-status-info { background: #1d2733; }
.dark .block.qp-status-success { background: #1b2b21; }
.dark .block.qp-status-warning { background: #33291a; }
.dark .block.qp-status-error { background: #351d20; }
"""

NOTHING_SELECTED = "Nothing selected yet. Expand a folder and tick its “.” entry, or tick a model file in it."


@dataclass(frozen=True)
class Status:
    """A status box: its kind and its Markdown text (already escaped)."""

    kind: Kind
    markdown: str

    @property
    def css_classes(self) -> list[str]:
        return ["qp-status", f"qp-status-{self.kind}"]


def valid_text(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: JSON and the browser need valid UTF-8, file names need not be."""
    return _SURROGATES.sub("\N{REPLACEMENT CHARACTER}", text)


def escape(text: object) -> str:
    """``text`` as inert Markdown: one line, shortened, HTML and Markdown syntax escaped."""
    flat = _CONTROL_CHARS.sub(" ", valid_text(str(text))).strip()
    if len(flat) > MAX_SHOWN_CHARS:
        flat = flat[: MAX_SHOWN_CHARS - 1] + "…"
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(flat, quote=False))


def _status(kind: Kind, title: str, lines: list[str] | None = None) -> Status:
    """``title`` and ``lines`` must already be escaped (or be our own fixed text)."""
    text = f"{ICONS[kind]} **{title}**"
    if lines:
        text += "\n\n" + "\n".join(f"- {line}" for line in lines)
    return Status(kind, text)


def info(message: str = NOTHING_SELECTED) -> Status:
    return Status(Kind.INFO, f"{ICONS[Kind.INFO]} {escape(message)}")


# ------------------------------------------------------------------ errors


def error_status(exc: BaseException, *, what: str) -> Status:
    """A user-ready error for a failed request about ``what`` (a folder, a repo id...).

    Only quantcore's own messages are shown; anything else is an internal fault
    whose details belong in the server log, not on the page.
    """
    subject = escape(what) or "that request"  # a name of control characters only escapes to nothing
    if isinstance(exc, PathNotAllowedError):
        title = f"Not allowed: {subject}"
    elif isinstance(exc, ModelNotFoundError):
        title = f"Cannot open {subject}"
    elif isinstance(exc, HubError):
        title = f"Cannot pull {subject}"
    elif isinstance(exc, RunTimeoutError):
        title = f"Stopped: {subject}"
    elif isinstance(exc, ServerBusyError):
        title = f"Not started: {subject}"
    elif isinstance(exc, QuantcoreError):
        title = f"Cannot load {subject}"
    else:
        return _status(Kind.ERROR, "Something went wrong on the server", ["The server log has the details."])
    return _status(Kind.ERROR, title, [escape(exc) or type(exc).__name__])


def input_error(message: str) -> Status:
    return _status(Kind.ERROR, escape(message))


# ----------------------------------------------------------------- results


def _variant_problems(summary: dict[str, Any]) -> list[str]:
    lines = []
    for key, variant in summary.get("variants", {}).items():
        if variant.get("status") in ("error", "refused"):
            reason = variant.get("error") or "no reason given"
            lines.append(f"{escape(key)} ({escape(variant['status'])}): {escape(reason)}")
    return lines


def loaded_status(summary: dict[str, Any], *, source: str) -> Status:
    """Success when every variant found loaded; a warning if none were found or any failed."""
    counts = summary.get("counts", {})
    loaded = [key for key, v in summary.get("variants", {}).items() if v.get("status") == "loaded"]
    found = len(loaded) + counts.get("error", 0) + counts.get("refused", 0)
    where = escape(source)
    notes = [escape(note) for note in summary.get("notes", [])]
    if found == 0:
        expected = "Expected files such as <stem>.onnx, <stem>_int8.onnx, <stem>_uint8.onnx, <stem>.pt, <stem>_int8.pt"
        return _status(Kind.WARNING, f"No model variants found in {where}", [escape(expected), *notes])
    when = "from cache" if summary.get("cache_hit") else f"in {summary.get('load_seconds', 0):.2f} s"
    title = f"Loaded {len(loaded)} of {found} variants from {where} {when}"
    which = "Loaded: " + (", ".join(escape(k) for k in loaded) if loaded else "none")
    problems = _variant_problems(summary) + [escape(warning) for warning in summary.get("warnings", [])]
    if problems:
        return _status(Kind.WARNING, title, [which, *problems, *notes])
    return _status(Kind.SUCCESS, title, [which, *notes])


def _valid_json(value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {_valid_json(k): _valid_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_json(v) for v in value]
    return value


def display_summary(summary: dict[str, Any], *, root: Path) -> dict[str, Any]:
    """The summary as shown: the folder relative to the models root (or named by its Hub repo, or an
    upload by its file names), so server paths stay private.

    Every string is made valid UTF-8: a folder or file name that is not would
    otherwise fail the whole response.
    """
    shown = dict(summary)
    folder = summary.get("folder")
    hub = summary.get("hub")
    source = summary.get("source")
    if isinstance(source, dict) and source.get("kind") == "upload":  # a visitor's upload: named by its files
        files = source.get("files")
        shown["folder"] = "your upload (" + ", ".join(map(str, files if isinstance(files, list) else [])) + ")"
    elif isinstance(hub, dict) and hub.get("repo_id"):  # a snapshot in the server's Hub cache: name it by repo
        commit = str(hub.get("commit") or "")[:10]
        shown["folder"] = f"{hub['repo_id']}@{commit}/{hub.get('subfolder') or ''}".rstrip("/")
    elif isinstance(folder, str):
        real_root = os.path.realpath(root)
        if Path(folder).is_relative_to(real_root):
            shown["folder"] = Path(folder).relative_to(real_root).as_posix()
    return _valid_json(shown)
