"""Record which files the process opens, through a Python audit hook."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# One process-wide audit hook (hooks cannot be removed); recording is switched on per use.
_open_log: list[list[str]] = []
_list_log: list[list[str]] = []
_LISTINGS = ("os.listdir", "os.scandir")


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _open_log and isinstance(args[0], (str, bytes, os.PathLike)):
        _open_log[-1].append(os.fsdecode(args[0]))
    elif event in _LISTINGS and _list_log and isinstance(args[0], (str, bytes, os.PathLike)):
        _list_log[-1].append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


@contextmanager
def record_opens() -> Iterator[list[str]]:
    """Every file path opened (by Python or the C extensions that audit) inside the block."""
    opened: list[str] = []
    _open_log.append(opened)
    try:
        yield opened
    finally:
        _open_log.remove(opened)


@contextmanager
def record_listings() -> Iterator[list[str]]:
    """Every folder listed (``os.listdir`` / ``os.scandir``, resolved) inside the block."""
    listed: list[str] = []
    _list_log.append(listed)
    try:
        yield listed
    finally:
        _list_log.remove(listed)
