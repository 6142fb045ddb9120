"""Checks on what a user asks the Hub for (repo id, revision, subfolder) and where the Hub is."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from quantcore.errors import HubError, InvalidRepoIdError

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_REVISION_CHARS = 200
MAX_SUBFOLDER_CHARS = 300
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_GLOB_CHARS = frozenset("*?[]")


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` stripped, if huggingface_hub's own validator accepts it.

    Raises:
        InvalidRepoIdError: not text, empty, or not ``name`` / ``owner/name``.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise InvalidRepoIdError("Give a Hugging Face repo id, like 'owner/name'.")
    repo_id = repo_id.strip()
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidRepoIdError(
            f"'{_clip(repo_id)}' is not a valid Hugging Face repo id: use 'name' or 'owner/name' "
            "(letters, digits, '-', '_', '.'; at most 96 characters)."
        ) from None
    return repo_id


def check_revision(revision: object) -> str | None:
    """A branch, tag or commit name that is safe to use as a ref file name; blank means ``None``.

    Raises:
        InvalidRepoIdError: not text, or not a plausible git ref (``..``, ``//``, spaces, ...).
    """
    if revision is None:
        return None
    if not isinstance(revision, str):
        raise InvalidRepoIdError("The revision must be text: a branch, tag or commit.")
    revision = revision.strip()
    if not revision:
        return None
    if (
        len(revision) > MAX_REVISION_CHARS
        or not _REVISION_RE.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".lock", "."))
    ):
        raise InvalidRepoIdError(f"'{_clip(revision)}' is not a valid branch, tag or commit name.")
    return revision


def check_subfolder(subfolder: object) -> str | None:
    """A repo-relative folder as ``a/b`` (no ``..``, no globs); blank or ``/`` means ``None``.

    Raises:
        InvalidRepoIdError: not text, absolute with a drive, ``..``, glob characters, NUL, too long.
    """
    if subfolder is None:
        return None
    if not isinstance(subfolder, str):
        raise InvalidRepoIdError("The subfolder must be text, like 'models/resnet8'.")
    raw = subfolder.strip()
    if len(raw) > MAX_SUBFOLDER_CHARS or "\x00" in raw or "\\" in raw or _GLOB_CHARS & set(raw):
        raise InvalidRepoIdError(f"'{_clip(raw)}' is not a usable subfolder: give a folder like 'models/resnet8'.")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if any(part == ".." or part.strip() != part for part in parts):
        raise InvalidRepoIdError(f"'{_clip(raw)}' is not a usable subfolder: '..' and padded names are not allowed.")
    return "/".join(parts) or None


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The endpoint to use: ``endpoint``, else ``HF_ENDPOINT``, else the public Hub.

    Raises:
        HubError: not an http(s) URL.
    """
    chosen = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError("The Hub endpoint must be an http(s) URL (check HF_ENDPOINT).")
    return chosen


def shown_endpoint(endpoint: str) -> str:
    """The endpoint for messages: without any user:password part."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in force now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or constants.is_offline_mode()
