"""What every tab shares: the loaded source, event groups, notes and failures as Markdown, API wrapping,
and reading the values a client sends.

A tab is built with a ``Page`` (the summary it follows and the source it
loads from). Its page handlers never raise: a failure becomes a note
(``failure``), through ``on_failure``. Its API handlers raise freely and are
wrapped with ``api``: quantcore's and input errors become ``{"error": ...}``
saying why, anything else is logged and answered without its details. Both
wrappers give the request its deadline (``QP_RUN_TIMEOUT_S``): a model still
running when it passes is cancelled and the request answers "stopped after …".

Every event wired with ``HEAVY_EVENTS`` first takes a slot of quantcore's
``HeavyGate`` (``gate_heavy_events`` wraps them all once the app is built): a
few at once for the whole process, served round robin between sessions; while
one waits, its place in line and an ETA show as its progress. Inside ``api`` and
``on_failure`` the slot is taken within the wrapper, so a refusal is answered
like any other failure; its deadline starts once the slot is held.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from gradio.context import LocalContext

from gradio_app import render
from quantcore import QuantcoreError, Source, open_source
from quantcore.deadline import run_deadline
from quantcore.errors import NothingLoadedError, ServerBusyError
from quantcore.heavy import heavy_gate
from quantcore.load import ModelVariants
from quantcore.quantize import store

logger = logging.getLogger(__name__)

T = TypeVar("T")

NOTHING_LOADED = "Load a folder (or pull a Hub repo) above to inspect and compare its variants."
SERVER_FAULT = "something went wrong on the server; the server log has the details"
# Several users at once: up to this many folder loads run side by side (the same folder asked for
# twice still loads once), and fewer Hub pulls, which wait on the network, so they cannot hold up
# local folders. Views that read what is loaded are quick. Runs over many images keep both cores
# busy: Gradio hands up to HEAVY_ADMITTED of them to their handlers, where quantcore's HeavyGate runs
# QP_HEAVY_SLOTS at a time, fairly between sessions (Gradio's own queue is first come, first served);
# past that, Gradio's queue shows their place. Each group is its own queue, so light requests never wait
# behind heavy ones. Set per event rather than with demo.queue(), which would build the app again.
HEAVY_ADMITTED = 8
FOLDER_EVENTS: dict[str, Any] = {"concurrency_id": "folder", "concurrency_limit": 4}
HUB_EVENTS: dict[str, Any] = {"concurrency_id": "hub", "concurrency_limit": 2}
VIEW_EVENTS: dict[str, Any] = {"concurrency_id": "inspect", "concurrency_limit": 4}
HEAVY_EVENTS: dict[str, Any] = {"concurrency_id": "heavy", "concurrency_limit": HEAVY_ADMITTED}
# A tab's run of the view a link asks for follows every new load; for any other load it passes by at once,
# so it has its own group (queued behind neither heavy nor light work) and takes a heavy slot only when it runs.
LINKED_EVENTS: dict[str, Any] = {"concurrency_id": "linked", "concurrency_limit": HEAVY_ADMITTED}
PRIVATE: dict[str, Any] = {"api_visibility": "private"}
# Files offered for download (reports, exports, recipes) are kept this long; Gradio's copies of them, and
# of uploads, are swept from its cache on the same clock (``gr.Blocks(delete_cache=...)`` in blocks).
DOWNLOADS_KEPT_S = 3600
DOWNLOADS_DIR_NAME = "qp-downloads"
# The kind of heavy run the event in progress is, until a wrapper below takes its slot (then None).
_HEAVY_KIND: ContextVar[str | None] = ContextVar("qp_heavy_kind", default=None)


@dataclass(frozen=True)
class Page:
    """What a tab follows: the summary shown (its change means a new load), the source it came from, and
    the view a link asks for (``links.ViewLink``, or ``None`` once a load is made by hand)."""

    summary: gr.JSON
    source: gr.State
    link: gr.State


def variants_for(source: Any) -> ModelVariants:
    """The loaded variants a source stands for: the page's state, a summary, or a folder name — with the
    folder's saved recipes and the session's recipe variants (``Source.recipes``) beside the five.

    Raises:
        NothingLoadedError: nothing is loaded yet.
        PathNotAllowedError, ModelNotFoundError, HubError: as loading or pulling it would.
    """
    variants = open_source(source)
    resolved = Source.from_client(source)
    return store.with_recipes(variants, resolved.recipes if resolved is not None else ())[0]


def note(lines: list[str] | tuple[str, ...], title: str | None = None) -> str:
    """Markdown for a tab's note: an optional bold title over one bullet per line, every line escaped."""
    text = f"**{render.escape(title)}**" if title else ""
    shown = [f"- {render.escape(line)}" for line in lines]
    return "\n".join([text, *shown] if text else shown)


def failure(exc: BaseException, what: str) -> str:
    """A failed view as note Markdown: quantcore's and input errors say why; anything else is logged."""
    if isinstance(exc, NothingLoadedError):
        return render.info(NOTHING_LOADED).markdown
    if isinstance(exc, QuantcoreError):
        return render.error_status(exc, what=what).markdown
    if isinstance(exc, (ValueError, IndexError)):
        return render.input_error(f"{what}: {exc}").markdown
    logger.error("%s failed", what, exc_info=exc)
    return render.error_status(exc, what=what).markdown


def waiting_text(ahead: int, eta: float | None) -> str:
    """What a heavy request waiting for its slot shows: its place in line and, when known, an ETA."""
    place = "next in line" if ahead == 0 else f"{ahead} run{'s' if ahead > 1 else ''} ahead of yours"
    when = "" if eta is None else f", starting in about {max(1, round(eta))} s"
    return f"Waiting for a free slot for heavy runs: {place}{when}"


def _owner() -> Hashable:
    """Who the request is from: its Gradio session (a browser tab, a gradio_client); else a one-off owner."""
    request = LocalContext.request.get(None)  # set by Gradio around every event's handler
    session = getattr(request, "session_hash", None)
    return session if session else object()


@contextmanager
def heavy_slot(kind: str) -> Iterator[None]:
    """Hold a slot of the heavy-work gate for the block; while waiting, show the place in line as progress.

    Raises:
        ServerBusyError: the session has its share of heavy runs already, or no slot came in time.
    """
    progress = gr.Progress()  # reaches the request's progress bar from here (Gradio's event context)

    def told(ahead: int, eta: float | None) -> None:
        progress(0.0, desc=waiting_text(ahead, eta))

    with heavy_gate().slot(_owner(), kind, on_wait=told):
        yield


@contextmanager
def request_scope() -> Iterator[None]:
    """What every handler runs in: a heavy event's slot (when it is one, and not taken yet), then the deadline.

    Raises:
        ServerBusyError: a heavy event's slot was refused (``heavy_slot``).
    """
    kind = _HEAVY_KIND.get()
    if kind is None:
        with run_deadline():
            yield
        return
    token = _HEAVY_KIND.set(None)  # a wrapper called inside this one must not queue again
    try:
        with heavy_slot(kind), run_deadline():
            yield
    finally:
        _HEAVY_KIND.reset(token)


def on_failure(what: str, fallback: Callable[[str], T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A page handler that never raises: a failure becomes ``fallback(note Markdown)``."""

    def wrap(handler: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(handler)  # keeps the signature: Gradio injects Progress/SelectData by it
        def run(*args: Any, **kwargs: Any) -> T:
            try:
                with request_scope():
                    return handler(*args, **kwargs)
            except Exception as exc:  # shown in the note: a handler never raises
                return fallback(failure(exc, what))

        run.takes_heavy_slot = True  # type: ignore[attr-defined]
        return run

    return wrap


def _api_error(exc: Exception, handler: Callable[..., Any]) -> str:
    """What an API client is told of a failure: quantcore's and input errors say why; others are logged."""
    if isinstance(exc, NothingLoadedError):
        return NOTHING_LOADED
    if isinstance(exc, (QuantcoreError, ValueError, IndexError)):
        return str(exc)
    logger.error("unexpected failure in %s", handler.__name__, exc_info=exc)
    return SERVER_FAULT


def api(handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """An API handler that answers ``{"error": why}`` instead of raising; unexpected faults are logged."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            with request_scope():
                return handler(*args, **kwargs)
        except Exception as exc:  # answered, never raised
            return {"error": _api_error(exc, handler)}

    run.takes_heavy_slot = True  # type: ignore[attr-defined]
    return run


def file_api(handler: Callable[..., T]) -> Callable[..., T]:
    """An API handler answering files: a failure is a Gradio error saying why (there is no JSON to carry it)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            with request_scope():
                return handler(*args, **kwargs)
        except Exception as exc:
            raise gr.Error(_api_error(exc, handler)) from None

    run.takes_heavy_slot = True  # type: ignore[attr-defined]
    return run


def run_as_heavy(handler: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``handler`` run as heavy work of ``kind``: ``api``/``on_failure`` take the slot inside (and answer a
    refusal as they answer failures); any other handler takes it here, a refusal becoming a Gradio error."""
    inner = getattr(handler, "takes_heavy_slot", False)

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _HEAVY_KIND.set(kind)
        try:
            if inner:
                return handler(*args, **kwargs)
            try:
                with request_scope():
                    return handler(*args, **kwargs)
            except ServerBusyError as exc:
                raise gr.Error(str(exc)) from None
        finally:
            _HEAVY_KIND.reset(token)

    run.heavy_kind = kind  # type: ignore[attr-defined]
    return run


def gate_heavy_events(demo: gr.Blocks) -> list[str]:
    """Make every event of ``demo`` wired with ``HEAVY_EVENTS`` wait for a heavy slot first (once each).

    Returns:
        The kinds gated (an endpoint's name, a page event's without ``page_``).
    """
    kinds = []
    for block_fn in demo.fns.values():
        if block_fn.concurrency_id != HEAVY_EVENTS["concurrency_id"] or block_fn.fn is None:
            continue
        if getattr(block_fn.fn, "heavy_kind", None) is None:
            kind = str(block_fn.api_name or block_fn.name).removeprefix("page_")
            block_fn.fn = run_as_heavy(block_fn.fn, kind)
        kinds.append(block_fn.fn.heavy_kind)
    return kinds


def progress_reporter(progress: gr.Progress) -> Callable[[float, str], None]:
    """quantcore's ``progress(fraction, message)`` callback, shown as Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def whole_number(value: Any, default: int, low: int, high: int, what: str) -> int:
    """A whole number a client sent (number or digits), within [low, high]; ``default`` when absent.

    Raises:
        ValueError: not a whole number, or out of range.
    """
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{what} must be a whole number")
    if not low <= int(value) <= high:
        raise ValueError(f"{what} must be between {low} and {high}, got {int(value)}")
    return int(value)


def hidden_endpoint(handler: Callable[..., Any], inputs: list[Any], outputs: Any, name: str, events: dict) -> None:
    """A named API endpoint on a hidden button: what scripts call (gradio_client), with the page's queue."""
    gr.Button(visible=False).click(handler, inputs, outputs, api_name=name, **events)


def download_folder(kind: str) -> Path:
    """A new folder for files a client is offered to download (Gradio copies them into its own cache).

    Every such folder lives under one parent, and those older than ``DOWNLOADS_KEPT_S`` are removed
    whenever a new one is made: on a public server, reports and exports must not fill the disk.
    """
    parent = Path(tempfile.gettempdir()) / DOWNLOADS_DIR_NAME
    parent.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - DOWNLOADS_KEPT_S
    for old in parent.iterdir():
        try:
            if old.is_dir() and not old.is_symlink() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # another process removed it first
            continue
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=parent))
