"""Event handlers: validate what a client sent, call quantcore, hand the result to ``render``.

Each handler returns ``(summary or None, render.Status)``; the summary's
``source`` is the handle the tabs load from. ``blocks`` turns the status into
a styled Markdown update for the page, or plain Markdown text for API clients. None of them raises: every
failure becomes an error status, and anything unexpected is logged with its
traceback on the server only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from gradio_app import render
from quantcore import QuantcoreError, Source, get_model_summary, load_model_variants, open_source, paths, settings
from quantcore.errors import PathNotAllowedError
from quantcore.load import hub, uploads
from quantcore.quantize import store

logger = logging.getLogger(__name__)

Summary = dict[str, Any] | None
Result = tuple[Summary, render.Status]
ProgressFn = Callable[..., Any]
UPLOAD_HINT = "Choose .onnx and .pt files (and samples.npz, variants.json, model_card.json) to upload."


def models_root() -> Path:
    return Path(os.path.realpath(settings.current().models_root))


def _describe(relative: str | Sequence[str]) -> str:
    """How to name a requested folder in messages."""
    text = relative if isinstance(relative, str) else "/".join(relative)
    text = text.strip()
    return "the models folder" if text in ("", ".", "./") else text


def nothing(status: render.Status) -> Result:
    """A result with nothing loaded: only a status."""
    return None, status


def _summarize(label: str, produce: Callable[[], tuple[dict[str, Any], Source]]) -> Result:
    """Run ``produce`` (a folder load or a Hub pull) and render its summary; never raises."""
    try:
        summary, source = produce()
    except QuantcoreError as exc:
        logger.info("%r refused or failed: %s", label, exc)
        return nothing(render.error_status(exc, what=label))
    except Exception as exc:
        logger.exception("unexpected failure with %r", label)
        return nothing(render.error_status(exc, what=label))
    summary = {**summary, "source": source.as_dict()}  # the handle API clients send back to the views
    shown = render.display_summary(summary, root=models_root())
    return shown, render.loaded_status(summary, source=label)


def _load(relative: str | Sequence[str], progress: ProgressFn) -> Result:
    """Load the folder ``relative`` names under the models root; never raises."""

    def produce() -> tuple[dict[str, Any], Source]:
        progress(0.1, desc="Checking the folder")
        folder = paths.resolve_folder(relative)
        progress(0.3, desc="Loading model variants")
        summary = get_model_summary(store.with_recipes(load_model_variants(folder))[0])  # saved recipes too
        return summary, Source.local(folder.relative_to(models_root()).as_posix())

    return _summarize(_describe(relative), produce)


def explorer_folder(selected: str, *, root: Path | None = None) -> list[str]:
    """The folder (as segments under ``root``) that an explorer selection stands for.

    The explorer hands over an absolute path: a folder (its "." entry) or a
    file in one (-> that folder). It is re-checked here rather than trusted:
    it must lie inside the models root both as written and once symlinks are
    resolved; ``resolve_folder`` then checks the folder itself again.

    Raises:
        PathNotAllowedError: the path is outside the models root, or not text a path can be.
    """
    root = Path(os.path.realpath(root or settings.current().models_root))
    paths.require_text(selected)
    written = Path(os.path.abspath(os.path.join(root, selected)))
    if not written.is_relative_to(root):
        raise PathNotAllowedError("folder is outside the allowed folders")
    paths.require_within(written, [root], what="folder")
    try:
        is_folder = written.is_dir()
    except OSError:  # a name the file system refuses (over 255 bytes): resolve_folder says so
        is_folder = True
    folder = written if is_folder else written.parent
    return list(folder.relative_to(root).parts)


def load_folder(folder: str | None, progress: gr.Progress = gr.Progress()) -> Result:  # noqa: B008
    """Load every model variant in a folder given relative to the models root (API: /load_folder)."""
    if folder is None or not str(folder).strip():
        return nothing(render.info())
    return _load(str(folder), progress)


def select_in_explorer(selected: str | None, progress: gr.Progress = gr.Progress()) -> Result:  # noqa: B008
    """A tick in the file explorer: a folder's "." entry or a model file; ``None`` when nothing is ticked.

    The explorer also fires ``None`` once on every page load: that is the
    "nothing selected" info, not an error.
    """
    if not selected:
        return nothing(render.info())
    try:
        segments = explorer_folder(selected)
    except QuantcoreError as exc:
        logger.warning("explorer selection outside the models root refused")
        return nothing(render.error_status(exc, what="that selection"))
    return _load(segments, progress)


def click_in_explorer(evt: gr.SelectData, progress: gr.Progress = gr.Progress()) -> Result | None:  # noqa: B008
    """A click on a folder's name in the explorer: load that folder.

    Ticking a box fires this too (with the ticked file or "." entry), together
    with ``.change``, which handles ticks; so only folder names count here and
    anything else returns ``None`` (no update), rather than loading twice.
    """
    value = evt.value
    relative = "/".join(value) if isinstance(value, list) else str(value or "")
    if not relative or relative == "." or relative.endswith("/."):
        return None
    root = models_root()
    try:
        segments = explorer_folder(relative, root=root)
    except QuantcoreError as exc:
        return nothing(render.error_status(exc, what="that selection"))
    if not os.path.isdir(root / relative):  # a file's name: ticking its box is how to pick it
        return None
    return _load(segments, progress)


def pull_hub(
    repo_id: str | None,
    revision: str | None = None,
    subfolder: str | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> Result:
    """Download a Hugging Face Hub repo's variants and load them (API: /pull_hub)."""
    repo_id = (repo_id or "").strip()
    if not repo_id:
        return nothing(render.info("Enter a Hub repo id, such as org/name, then press Pull."))
    revision = (revision or "").strip() or None
    subfolder = (subfolder or "").strip() or None
    label = repo_id + (f"@{revision}" if revision else "") + (f"/{subfolder}" if subfolder else "")

    def produce() -> tuple[dict[str, Any], Source]:
        progress(0.1, desc="Pulling from the Hub")
        summary = hub.pull_and_summarize(repo_id, revision=revision, subfolder=subfolder)
        return summary, Source.from_client(summary["source"])

    return _summarize(label, produce)


def upload_files(
    files: Sequence[str] | None,
    request: gr.Request,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> Result:
    """Copy a visitor's files into a folder only their session can open, and load it (API: /upload_files).

    The files are untrusted like a Hub pull's: TorchScript and pickles are refused
    unless the operator trusts remote models.
    """
    if not files:
        return nothing(render.info(UPLOAD_HINT))
    named = [(os.path.basename(str(path)), str(path)) for path in files]
    label = "your upload (" + ", ".join(name for name, _ in named) + ")"

    def produce() -> tuple[dict[str, Any], Source]:
        progress(0.1, desc="Copying the files")
        upload = uploads.store_upload(named, owner=request.session_hash if request is not None else None)
        source = Source.from_upload(upload)
        progress(0.3, desc="Loading model variants")
        summary = get_model_summary(store.with_recipes(open_source(source))[0])
        return summary, source

    return _summarize(label, produce)


def end_session(request: gr.Request) -> None:
    """A browser session ended (its tab closed or reloaded): its uploads go at once."""
    if request is not None and request.session_hash:
        removed = uploads.discard_owner(request.session_hash)
        if removed:
            logger.info("session ended: %d upload(s) removed", removed)


def guarded(handler: Callable[..., Result | None], *args: Any, **kwargs: Any) -> Result | None:
    """``handler(*args, **kwargs)``, with any exception it lets through logged and shown as an error status."""
    try:
        return handler(*args, **kwargs)
    except Exception as exc:
        logger.exception("unexpected failure in %s", getattr(handler, "__name__", handler))
        return nothing(render.error_status(exc, what=""))


def ping(text: str | None) -> str | None:
    """A no-op endpoint: the baseline the re-selection benchmark is measured against."""
    return text
