"""Visitors' own model files: one private folder per session, untrusted, size-capped, removed when done.

An upload is copied into ``<uploads root>/<random id>/`` under the names the
visitor gave, after each name is checked (model files and the known sidecars
only; no path, no hidden or odd name). Its id is not a secret to rely on: an
upload opens only for the session that made it (``owner``, the app's
browser session), so another client sending the same id is refused exactly
like an id that never existed. Folders go when their session ends
(``discard_owner``), when the same session uploads again, or once unused for
``QP_UPLOAD_TTL_S`` (``sweep``, also run by a timer while any upload lives).

Who is asking is the UI's business: it installs ``set_requester`` once, and
``open_source`` asks ``current_requester()`` for every upload it opens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantcore import settings
from quantcore.errors import PathNotAllowedError, UploadError
from quantcore.load.discover import CARD_NAME, MANIFEST_NAME, MODEL_SUFFIXES, SAMPLES_NAME

logger = logging.getLogger(__name__)

SIDECAR_NAMES = (SAMPLES_NAME, MANIFEST_NAME, CARD_NAME)
MAX_FILES = 8  # five variants and the three sidecars
_ID = re.compile(r"[0-9a-f]{32}")
# A plain file name: letters, digits and . _ - +, starting with a letter or digit (no path, no hidden file).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_COPY_BLOCK = 1 << 20
NOT_YOURS = "that upload is not this session's, or it has been removed: upload the files again"


@dataclass
class Upload:
    """One session's uploaded folder.

    Attributes:
        id: the folder's random name (32 hex digits).
        owner: the session that made it; no other may open it.
        folder: where it lives on the server (never shown to a visitor).
        files: the names the files were given, in the order sent.
        size: their bytes in all.
        used: when it was last opened (``time.monotonic``), for the idle timeout.
    """

    id: str
    owner: str
    folder: Path
    files: tuple[str, ...]
    size: int
    used: float


_LOCK = threading.Lock()
_UPLOADS: dict[str, Upload] = {}
_requester: Callable[[], str | None] = lambda: None  # noqa: E731 -- replaced by the UI
_timer: threading.Timer | None = None


def set_requester(lookup: Callable[[], str | None]) -> None:
    """Install how to tell which session is asking (the UI's request context); ``None`` means no session."""
    global _requester
    _requester = lookup


def current_requester() -> str | None:
    """The session asking now, as the installed lookup says (``None`` outside a session)."""
    try:
        return _requester()
    except Exception:  # a lookup that fails names no one: nothing uploaded opens
        logger.exception("the requester lookup failed")
        return None


def is_upload_id(value: object) -> bool:
    """Whether ``value`` has the form of an upload's id (it may still name nothing)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_name(name: object) -> str:
    """``name`` if an upload may take it: a model file (``.onnx``, ``.pt``, ``.pth``) or a known sidecar.

    Raises:
        UploadError: a path, a hidden or oddly spelt name, or a kind of file not taken.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or ".." in name:
        shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 60 else "a file"
        raise UploadError(f"{shown!r}: a file name may use only letters, digits and . _ - + (up to 100)")
    if name in SIDECAR_NAMES or os.path.splitext(name)[1] in MODEL_SUFFIXES:
        return name
    taken = ", ".join(f"*{s}" for s in MODEL_SUFFIXES) + ", " + ", ".join(SIDECAR_NAMES)
    raise UploadError(f"{name!r} is not taken: upload model files and sidecars only ({taken})")


def _size(count: int) -> str:
    if count >= 2**20:
        return f"{count / 2**20:.1f} MB"
    return f"{count / 1024:.0f} KB" if count >= 1024 else f"{count} bytes"


def _check_files(files: Sequence[tuple[str, Path]], current: settings.Settings) -> int:
    if not files:
        raise UploadError("no files were uploaded")
    if len(files) > MAX_FILES:
        raise UploadError(f"{len(files)} files sent: at most {MAX_FILES} (five variants and the sidecars)")
    names = [check_name(name) for name, _ in files]
    if len(set(names)) != len(names):
        raise UploadError("two files have the same name")
    if not any(os.path.splitext(n)[1] in MODEL_SUFFIXES for n in names):
        raise UploadError("no model file among them: upload at least one .onnx or .pt file")
    total = 0
    for name, source in files:
        size = os.stat(source).st_size
        if size > current.max_upload_bytes:
            raise UploadError(f"{name} is {_size(size)}: at most {_size(current.max_upload_bytes)} a file")
        total += size
    if total > current.max_upload_total_bytes:
        limit = _size(current.max_upload_total_bytes)
        raise UploadError(f"the files are {_size(total)} ({total} bytes) in all: at most {limit} an upload")
    return total


def _copy(source: Path, target: Path, limit: int) -> int:
    """Copy without following a link at the target, stopping at ``limit`` bytes (a file growing as it is read)."""
    copied = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
        for block in iter(lambda: reader.read(_COPY_BLOCK), b""):
            copied += len(block)
            if copied > limit:
                raise UploadError(f"{target.name} grew past the upload limit while it was copied")
            writer.write(block)
    return copied


def root() -> Path:
    """The uploads root, made if missing.

    Raises:
        PathNotAllowedError: it lies inside the models root (uploads would be listed and trusted there).
    """
    current = settings.current()
    where = Path(os.path.realpath(current.uploads_root))
    if where.is_relative_to(os.path.realpath(current.models_root)):
        raise PathNotAllowedError("the uploads folder (QP_UPLOADS_DIR) must not lie inside the models folder")
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    return where


def store_upload(files: Sequence[tuple[str, str | os.PathLike[str]]], *, owner: str | None) -> Upload:
    """Copy uploaded files into a new private folder for ``owner``, replacing that session's previous upload.

    Args:
        files: ``(name the visitor gave, where the file is now)`` for each file.
        owner: the session uploading (``current_requester()`` in the app).

    Returns:
        The upload (its folder holds exactly ``files`` under their names).

    Raises:
        UploadError: no owner, a name or kind refused, too many files, over a size cap, or no room left.
        PathNotAllowedError: the uploads root is inside the models root.
    """
    if not owner:
        raise UploadError("uploads need a session (open the page, or use a gradio_client Client)")
    current = settings.current()
    pairs = [(name, Path(path)) for name, path in files]
    total = _check_files(pairs, current)
    discard_owner(owner)
    sweep()
    with _LOCK:
        if len(_UPLOADS) >= current.max_uploads:
            raise UploadError("the server holds as many uploads as it can just now: try again later")
        upload_id = secrets.token_hex(16)
        folder = root() / upload_id
        folder.mkdir(mode=0o700)
        upload = Upload(upload_id, owner, folder, tuple(n for n, _ in pairs), total, time.monotonic())
        _UPLOADS[upload_id] = upload
    try:
        left = current.max_upload_total_bytes
        for name, source in pairs:
            left -= _copy(source, folder / name, min(left, current.max_upload_bytes))
    except BaseException:
        discard(upload_id)
        raise
    _start_timer(current.upload_ttl_s)
    logger.info("upload %s: %d files, %d bytes", upload_id, len(pairs), total)
    return upload


def upload_folder(upload_id: object, *, owner: str | None) -> Path:
    """The folder of upload ``upload_id`` if ``owner`` made it (and marks it used).

    Raises:
        PathNotAllowedError: not an id, no such upload (removed, expired), or another session's.
    """
    with _LOCK:
        upload = _UPLOADS.get(upload_id) if is_upload_id(upload_id) else None  # type: ignore[arg-type]
        # Someone else's upload and one that never was are told apart nowhere.
        if upload is None or not owner or not secrets.compare_digest(upload.owner, owner):
            raise PathNotAllowedError(NOT_YOURS)
        upload.used = time.monotonic()
    with contextlib.suppress(OSError):
        os.utime(upload.folder)  # in use: another process sharing the root leaves it be
    return upload.folder


def uploads_of(owner: str) -> list[Upload]:
    """The uploads ``owner`` holds now."""
    with _LOCK:
        return [u for u in _UPLOADS.values() if u.owner == owner]


def discard(upload_id: str) -> bool:
    """Remove one upload and its folder; whether there was one."""
    with _LOCK:
        upload = _UPLOADS.pop(upload_id, None)
    if upload is None:
        return False
    shutil.rmtree(upload.folder, ignore_errors=True)
    logger.info("upload %s removed", upload_id)
    return True


def discard_owner(owner: str | None) -> int:
    """Remove every upload of a session (its end); how many there were."""
    if not owner:
        return 0
    return sum(discard(u.id) for u in uploads_of(owner))


def sweep(*, now: float | None = None) -> int:
    """Remove uploads unused for longer than ``QP_UPLOAD_TTL_S``, and folders left in the root by a process
    that is gone (unknown here and untouched as long); how many went."""
    current = settings.current()
    now = time.monotonic() if now is None else now
    with _LOCK:
        idle = [u.id for u in _UPLOADS.values() if now - u.used > current.upload_ttl_s]
        known = set(_UPLOADS)
    removed = sum(discard(upload_id) for upload_id in idle)
    where = Path(os.path.realpath(current.uploads_root))
    try:
        entries = list(os.scandir(where))
    except OSError:
        return removed
    for entry in entries:
        # Only folders of the uploads' own naming, never a link: nothing else in the root is touched.
        if entry.name in known or not is_upload_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > current.upload_ttl_s:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def _start_timer(ttl: float) -> None:
    """Sweep now and then while any upload lives (a session that never ends is timed out all the same)."""
    global _timer
    with _LOCK:
        if _timer is not None and _timer.is_alive():
            return
        _timer = threading.Timer(max(1.0, min(ttl / 2, 60.0)), _tick)
        _timer.daemon = True
        _timer.start()


def _tick() -> None:
    global _timer
    try:
        sweep()
    except Exception:  # the timer must not die of one bad folder
        logger.exception("upload sweep failed")
    with _LOCK:
        _timer = None
        alive = bool(_UPLOADS)
    if alive:
        _start_timer(settings.current().upload_ttl_s)


def clear() -> None:
    """Remove every upload this process holds (tests, shutdown)."""
    with _LOCK:
        ids = list(_UPLOADS)
    for upload_id in ids:
        discard(upload_id)
