"""Full labelled test sets a user may name: discovery inside the allowed data roots, and reading.

A test set is a Fashion-MNIST folder of gzipped IDX files or a
``cifar-10-batches-py`` folder, inside the models root or the configured data
dirs only (``settings.data_roots``); links out of those roots are not followed.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from enum import StrEnum
from pathlib import Path

from quantcore import paths, settings
from quantcore.cache import SingleFlightLRU
from quantcore.data import cifar, datasets
from quantcore.errors import DatasetError, ModelNotFoundError, PathNotAllowedError

MAX_SCAN_DEPTH = 2


def data_roots() -> list[Path]:
    """Where a full test set may be read from: the models root and the data dirs."""
    return list(settings.current().data_roots)


class TestSetKind(StrEnum):
    """The test-set layouts that can be read."""

    FASHION_MNIST = "Fashion-MNIST (gzipped IDX)"
    CIFAR10 = "CIFAR-10 (cifar-10-batches-py)"


_TEST_FILES = {
    TestSetKind.FASHION_MNIST: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    TestSetKind.CIFAR10: ("batches.meta", "test_batch"),
}
_TEST_SETS: SingleFlightLRU[datasets.LabelledImages] = SingleFlightLRU(2)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(paths.is_within(path, root) for root in roots)


def test_set_kind(folder: Path) -> TestSetKind | None:
    """Which test-set layout ``folder`` holds, if any: every file of it regular and inside the allowed roots.

    A file linked out of the roots does not make a test set (so none is offered),
    whatever it points at; its target is looked up, never opened.
    """
    roots = data_roots()
    for kind, names in _TEST_FILES.items():
        if all((folder / name).is_file() and _inside(folder / name, roots) for name in names):
            return kind
    return None


def _linked_out(folder: Path) -> str | None:
    """The first test-set file name in ``folder`` that links out of the allowed roots, if any."""
    roots = data_roots()
    for names in _TEST_FILES.values():
        for name in names:
            if os.path.lexists(folder / name) and not _inside(folder / name, roots):
                return name
    return None


def find_test_sets() -> list[Path]:
    """Folders inside the allowed data roots (up to two levels down) that hold a readable test set."""
    found: list[Path] = []
    for root in data_roots():
        level = [Path(os.path.realpath(root))]
        for _ in range(MAX_SCAN_DEPTH + 1):
            below: list[Path] = []
            for folder in level:
                if test_set_kind(folder) is not None:
                    found.append(folder)
                try:
                    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                below += [p for p in children if paths.is_within(p, root)]  # a link out of the root is not followed
            level = below
    return list(dict.fromkeys(found))


def resolve_test_set(folder: str | os.PathLike[str]) -> tuple[Path, TestSetKind]:
    """The allowed, existing test-set folder a user named (absolute, or relative to the models root).

    Raises:
        PathNotAllowedError: outside every allowed data root (after resolving links), malformed, or
            holding a test-set file that links out of them (named, never opened).
        ModelNotFoundError: no such folder.
        DatasetError: the folder holds no test set this module reads.
    """
    text = os.fspath(folder)
    if not isinstance(text, str) or "\x00" in text or len(text) > paths.MAX_PATH_CHARS:
        raise PathNotAllowedError("not a usable folder path")
    candidate = Path(text.strip())
    if not candidate.is_absolute():
        candidate = settings.current().models_root / candidate
    resolved = paths.require_within(candidate, data_roots(), what="test set folder")
    if not resolved.is_dir():
        raise ModelNotFoundError("test set folder does not exist")
    kind = test_set_kind(resolved)
    if kind is None and (escaping := _linked_out(resolved)) is not None:
        raise PathNotAllowedError(f"{escaping} in that test set links outside the allowed folders; it was not opened")
    if kind is None:
        expected = "; or ".join(", ".join(names) for names in _TEST_FILES.values())
        raise DatasetError(f"no test set in that folder: expected {expected}")
    return resolved, kind


def read_test_set(
    folder: str | os.PathLike[str], split: datasets.Split = "test"
) -> tuple[datasets.LabelledImages, str, Hashable]:
    """One split of a Fashion-MNIST or CIFAR-10 folder (the test split unless told), as stored (cached by folder,
    split and file stats).

    CIFAR-10 batches are pickles: they are read with ``datasets``' array-only unpickler.

    Returns:
        The labelled images, a description, and a key naming exactly these files.

    Raises:
        PathNotAllowedError, ModelNotFoundError: as ``resolve_test_set``.
        DatasetError: unreadable files, or no such split there.
    """
    resolved, kind = resolve_test_set(folder)
    if kind is TestSetKind.FASHION_MNIST:
        names = datasets.FASHION_MNIST_FILES[split]
    else:
        names = (_TEST_FILES[kind][0], *cifar.CIFAR10_FILES[split])
    try:
        stats = tuple((n, (resolved / n).stat().st_size, (resolved / n).stat().st_mtime_ns) for n in names)
    except OSError:
        raise DatasetError(f"{kind} folder {resolved.name} has no readable {split} split") from None

    def load() -> datasets.LabelledImages:
        # Every file too must resolve inside the allowed roots, not just its folder.
        if kind is TestSetKind.FASHION_MNIST:
            return datasets.load_fashion_mnist(split, resolved, as_stored=True, roots=data_roots())
        return cifar.load_cifar10(resolved, split, roots=data_roots())

    data, _ = _TEST_SETS.get(f"{resolved}\x00{split}", (kind, stats), load)
    description = f"{kind} {split} split, {len(data):,} images ({resolved.name})"
    return data, description, ("test set", str(resolved), kind.value, split, stats)
