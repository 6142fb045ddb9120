"""What every tab shares: the loaded source, event groups, notes and failures as Markdown, API wrapping,
and reading the values a client sends.

A tab is built with a ``Page`` (the summary it follows and the source it
loads from). Its page handlers never raise: a failure becomes a note
(``failure``), through ``on_failure``. Its API handlers raise freely and are
wrapped with ``api``: quantcore's and input errors become ``{"error": ...}``
saying why, anything else is logged and answered without its details. Both
wrappers give the request its deadline (``QP_RUN_TIMEOUT_S``): a model still
running when it passes is cancelled and the request answers "stopped after …".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from gradio_app import render
from quantcore import QuantcoreError, Source, open_source
from quantcore.deadline import run_deadline
from quantcore.errors import NothingLoadedError
from quantcore.load import ModelVariants
from quantcore.quantize import store

logger = logging.getLogger(__name__)

T = TypeVar("T")

NOTHING_LOADED = "Load a folder (or pull a Hub repo) above to inspect and compare its variants."
SERVER_FAULT = "something went wrong on the server; the server log has the details"
# Several users at once: up to this many folder loads run side by side (the same folder asked for
# twice still loads once), and fewer Hub pulls, which wait on the network, so they cannot hold up
# local folders. Views that read what is loaded are quick; runs over many images keep both cores
# busy, so one at a time. Set per event rather than with demo.queue(), which would build the app again.
FOLDER_EVENTS: dict[str, Any] = {"concurrency_id": "folder", "concurrency_limit": 4}
HUB_EVENTS: dict[str, Any] = {"concurrency_id": "hub", "concurrency_limit": 2}
VIEW_EVENTS: dict[str, Any] = {"concurrency_id": "inspect", "concurrency_limit": 4}
HEAVY_EVENTS: dict[str, Any] = {"concurrency_id": "layer_error", "concurrency_limit": 1}
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


@dataclass(frozen=True)
class Page:
    """What a tab follows: the summary shown (its change means a new load) and the source it came from."""

    summary: gr.JSON
    source: gr.State


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


def on_failure(what: str, fallback: Callable[[str], T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A page handler that never raises: a failure becomes ``fallback(note Markdown)``."""

    def wrap(handler: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(handler)  # keeps the signature: Gradio injects Progress/SelectData by it
        def run(*args: Any, **kwargs: Any) -> T:
            try:
                with run_deadline():
                    return handler(*args, **kwargs)
            except Exception as exc:  # shown in the note: a handler never raises
                return fallback(failure(exc, what))

        return run

    return wrap


def api(handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """An API handler that answers ``{"error": why}`` instead of raising; unexpected faults are logged."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            with run_deadline():
                return handler(*args, **kwargs)
        except NothingLoadedError:
            return {"error": NOTHING_LOADED}
        except (QuantcoreError, ValueError, IndexError) as exc:
            return {"error": str(exc)}
        except Exception:
            logger.exception("unexpected failure in %s", handler.__name__)
            return {"error": SERVER_FAULT}

    return run


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
