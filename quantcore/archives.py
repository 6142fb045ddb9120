"""Zip archives (``.npz``, ``torch.save`` files) measured before anything in them is decompressed.

A few kilobytes of deflated zeros can claim gigabytes once inflated, and a
central directory of millions of entries costs memory just to list. So the
archive's end record is read first (how many members, how large a
directory), then each member's *declared* uncompressed size; readers refuse an
archive over their limits before they inflate a byte. The declared sizes are
what zipfile (and torch's miniz) hold a member to while inflating it.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from quantcore.errors import QuantcoreError
from quantcore.sizes import limit_megabytes

_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_ZIP64_MARK = 0xFFFF


@dataclass(frozen=True)
class ArchiveSize:
    """What an archive declares: its members' names and uncompressed sizes."""

    sizes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def _member_count(handle: BinaryIO) -> tuple[int, int] | None:
    """``(members, central directory bytes)`` from the end record, or ``None`` if there is none (not a zip)."""
    end = handle.seek(0, os.SEEK_END)
    tail_size = min(end, _END_RECORD_SIZE + _MAX_COMMENT)
    handle.seek(end - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < _END_RECORD_SIZE:
        return None
    _, _, _, _, members, directory_size, _, _ = struct.unpack("<4s4H2LH", tail[at : at + _END_RECORD_SIZE])
    return members, directory_size


def measure_zip(
    handle: BinaryIO, *, max_members: int, max_bytes: int, what: str, error: type[QuantcoreError], setting: str
) -> ArchiveSize | None:
    """The members of the zip in ``handle`` and their declared sizes, if it is within the limits.

    Args:
        handle: an open binary file (left positioned at its start).
        max_members: most members allowed (a ZIP64 archive, for more than 65,535, counts as over).
        max_bytes: most uncompressed bytes allowed, all members together.
        what: the file's name, for messages.
        error: the error to raise when over a limit (the caller's kind: a data set's, a model's).
        setting: the setting that sets ``max_bytes``, named in the message.

    Returns:
        The sizes, or ``None`` when the file is not a zip at all.

    Raises:
        error: over either limit, read from the archive's own records before any inflating.
    """
    on_disk = handle.seek(0, os.SEEK_END)
    try:
        counted = _member_count(handle)
    except (OSError, struct.error):
        counted = None
    if counted is None:
        handle.seek(0)
        return None
    members, directory_size = counted
    # ~46 bytes per central directory entry plus its name: a directory this large lists more than allowed.
    if members == _ZIP64_MARK or members > max_members or directory_size > max_members * 1024:
        handle.seek(0)
        shown = "over 65,535" if members == _ZIP64_MARK else f"{members:,}"
        raise error(f"{what} holds {shown} members; at most {max_members:,} are read")
    try:
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    finally:
        handle.seek(0)
    if len(infos) > max_members:
        raise error(f"{what} holds {len(infos):,} members; at most {max_members:,} are read")
    sizes = {info.filename: info.file_size for info in infos}
    total = sum(sizes.values())
    if total > max_bytes:
        raise error(
            f"{what} would inflate to {total / 2**20:,.1f} MB (from {on_disk / 2**20:,.2f} MB on disk), "
            f"over the {limit_megabytes(max_bytes)} MB limit ({setting})"
        )
    return ArchiveSize(sizes)
