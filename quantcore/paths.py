"""Path guards: turn what a client sends into a path inside an allowed root, or refuse.

Every check resolves symlinks first, so a link inside a root that points
outside it is refused like a plain ``..``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from quantcore import settings
from quantcore.errors import ModelNotFoundError, PathNotAllowedError

MAX_PATH_CHARS = 1024


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved) lies inside ``root`` (resolved), or is it."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def require_within(path: Path, roots: Iterable[Path], *, what: str = "path") -> Path:
    """The resolved ``path`` if it lies inside one of ``roots``.

    Raises:
        PathNotAllowedError: it resolves outside every root.
    """
    resolved = Path(os.path.realpath(path))
    if not any(resolved.is_relative_to(os.path.realpath(r)) for r in roots):
        raise PathNotAllowedError(f"{what} is outside the allowed folders")
    return resolved


def require_text(item: object) -> str:
    """``item`` if it is text the file system can take: no NUL, not over-long, encodable.

    Raises:
        PathNotAllowedError: anything else.
    """
    if not isinstance(item, str):
        raise PathNotAllowedError("path must be text")
    if "\x00" in item:
        raise PathNotAllowedError("path contains a NUL byte")
    if len(item) > MAX_PATH_CHARS:
        raise PathNotAllowedError(f"path is longer than {MAX_PATH_CHARS} characters")
    try:
        os.fsencode(item)  # a lone surrogate outside surrogateescape's range would fail deep in os calls
    except UnicodeEncodeError:
        raise PathNotAllowedError("path is not valid text") from None
    return item


def _segments(relative: str | Sequence[str]) -> list[str]:
    raw = [relative] if isinstance(relative, str) else list(relative)
    parts: list[str] = []
    for item in map(require_text, raw):
        if item.startswith(("/", "\\")) or PurePosixPath(item).is_absolute() or ":" in item[:3]:
            raise PathNotAllowedError("absolute paths are not allowed; give a folder relative to the models folder")
        for part in item.replace("\\", "/").split("/"):
            if part == "..":
                raise PathNotAllowedError("'..' is not allowed in a path")
            if part not in ("", "."):
                parts.append(part)
    return parts


def resolve_folder(relative: str | Sequence[str], *, root: Path | None = None) -> Path:
    """The existing folder that ``relative`` names inside ``root`` (default: the models root).

    ``relative`` is a path string or a list of path segments, as a client sends it;
    an empty path means the root itself.

    Raises:
        PathNotAllowedError: absolute, ``..``, NUL, over-long, or resolving outside ``root``.
        ModelNotFoundError: nothing there, not a folder, or a name the file system refuses.
    """
    root = Path(os.path.realpath(root or settings.current().models_root))
    candidate = root.joinpath(*_segments(relative))
    resolved = require_within(candidate, [root], what="folder")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise ModelNotFoundError("folder does not exist") from None
    except OSError as exc:  # a name over the file system's 255 bytes, a loop of links...
        raise ModelNotFoundError(f"folder cannot be opened: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise ModelNotFoundError("not a folder")
    return resolved


def open_within(path: Path, roots: Iterable[Path], *, what: str = "file") -> BinaryIO:
    """``path`` opened for reading, if it is a regular file that resolves inside one of ``roots``.

    The path is resolved and checked *before* it is opened, so a link out of
    the roots is refused without opening its target (nor reading a byte of it
    for a message). The last component is then opened without following a link
    and without blocking (a FIFO would wait for a writer for ever), and the open
    file is checked again — a regular file, still inside the roots — so a link
    swapped in between the check and the open is refused too.

    Args:
        path: the file.
        roots: folders it must resolve into.
        what: how messages name it (never its bytes, never where a link points).

    Returns:
        The open file (binary, positioned at its start).

    Raises:
        PathNotAllowedError: it resolves outside every root.
        ModelNotFoundError: missing, unreadable, or not a regular file.
    """
    allowed = [os.path.realpath(r) for r in roots]
    resolved = require_within(path, allowed, what=what)
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ModelNotFoundError(f"{what} does not exist") from None
    except OSError as exc:  # ELOOP: the last component became a link after the check
        raise ModelNotFoundError(f"{what} cannot be opened: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelNotFoundError(f"{what} is not a regular file")
        opened = _opened_path(fd)
        if opened is not None and not any(Path(opened).is_relative_to(r) for r in allowed):
            raise PathNotAllowedError(f"{what} is outside the allowed folders")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _opened_path(fd: int) -> str | None:
    """Where an open file really is (Linux's /proc), or ``None`` where that cannot be asked."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
