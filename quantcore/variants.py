"""Find the model variants in a folder and load them once, through the module cache.

A folder holds up to five variants of one model, named after a shared stem
(``resnet8.onnx``, ``resnet8_int8.onnx``, ``resnet8_uint8.onnx``, ``resnet8.pt``,
``resnet8_int8.pt``), or listed in a ``variants.json`` manifest (key -> file
name) that wins over names. A variant that is missing is ``None``; one that
fails to load records why, and the others still load. Where an ONNX graph's
input shape disagrees with ``model_card.json`` or the file's own metadata, the
load carries a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from quantcore import settings
from quantcore.cache import CacheInfo, SingleFlightLRU
from quantcore.describe import describe_onnx, describe_torch
from quantcore.errors import (
    ModelNotFoundError,
    PathNotAllowedError,
    QuantcoreError,
    UnsafeModelError,
)
from quantcore.loaders import LOADERS, ModelFormat

logger = logging.getLogger(__name__)

MANIFEST_NAME = "variants.json"
CARD_NAME = "model_card.json"
MODEL_SUFFIXES = (".onnx", ".pt", ".pth")
SIDECAR_MAX_BYTES = 1 << 20  # variants.json, model_card.json: a few kilobytes when genuine
STEMS_NAMED = 5  # other stems named in the note; a folder of thousands made it tens of kilobytes


class VariantKey(StrEnum):
    """The five variants a folder can hold; the value is the public key."""

    ONNX_FLOAT = "onnx_float"
    ONNX_INT8 = "onnx_int8"
    ONNX_UINT8 = "onnx_uint8"
    PYTORCH_FLOAT = "pytorch_float"
    PYTORCH_INT8 = "pytorch_int8"

    @classmethod
    def from_string(cls, text: str) -> VariantKey:
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown variant {text!r}; expected one of {', '.join(cls)}") from None

    @property
    def format(self) -> ModelFormat:
        return ModelFormat.ONNX if self.value.startswith("onnx") else ModelFormat.PYTORCH

    @property
    def is_quantized(self) -> bool:
        return not self.value.endswith("_float")


class Status(StrEnum):
    LOADED = "loaded"
    MISSING = "missing"
    ERROR = "error"
    REFUSED = "refused"


@dataclass(frozen=True)
class VariantRecord:
    """What happened to one variant of a folder."""

    key: VariantKey
    status: Status
    file: str | None = None
    model: Any = field(default=None, repr=False)
    bytes: int | None = None
    sha256: str | None = None
    storage: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class LoadedFolder:
    """One load of a folder: what the cache keeps."""

    folder: Path
    stem: str | None
    trusted: bool
    records: dict[VariantKey, VariantRecord]
    load_seconds: float
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # the files disagree with what describes them
    card: dict[str, Any] = field(default_factory=dict)  # model_card.json, read once with the folder
    confine_to: Path | None = None  # where the folder's files must resolve (default: the folder)


class ModelVariants(Mapping[str, Any]):
    """The variants of a folder as ``{key: model or None}``, plus how the load went.

    The models are shared with the cache: the same objects on every hit.
    """

    def __init__(self, loaded: LoadedFolder, *, cache_hit: bool) -> None:
        self.loaded = loaded
        self.cache_hit = cache_hit

    def __getitem__(self, key: str) -> Any:
        return self.loaded.records[VariantKey.from_string(str(key))].model

    def __iter__(self) -> Iterator[str]:
        return (k.value for k in VariantKey)

    def __len__(self) -> int:
        return len(VariantKey)

    @property
    def folder(self) -> Path:
        return self.loaded.folder

    @property
    def records(self) -> dict[VariantKey, VariantRecord]:
        return self.loaded.records

    def sidecar(self, name: str) -> Path | None:
        """``folder/name`` if it is a regular file resolving inside the folder's confines, else ``None``."""
        path = self.folder / name
        confine = self.loaded.confine_to or self.folder
        if not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(confine)):
            return None
        return path

    def __repr__(self) -> str:
        loaded = [str(k) for k, r in self.records.items() if r.status is Status.LOADED]
        return f"ModelVariants({str(self.folder)!r}, loaded={loaded}, cache_hit={self.cache_hit})"


# ----------------------------------------------------------------- discovery


def _parse_name(name: str) -> tuple[str, VariantKey] | None:
    """``resnet8_int8.onnx`` -> ("resnet8", ONNX_INT8); unrelated names -> None."""
    base, suffix = os.path.splitext(name)
    if suffix == ".onnx":
        table = {"_int8": VariantKey.ONNX_INT8, "_uint8": VariantKey.ONNX_UINT8}
        default = VariantKey.ONNX_FLOAT
    elif suffix in (".pt", ".pth"):
        table = {"_int8": VariantKey.PYTORCH_INT8}
        default = VariantKey.PYTORCH_FLOAT
    else:
        return None
    for tail, key in table.items():
        if base.endswith(tail) and len(base) > len(tail):
            return base[: -len(tail)], key
    return (base, default) if base else None


def _read_json_sidecar(folder: Path, name: str, *, confine_to: Path, notes: list[str]) -> Any:
    """The JSON in ``folder/name``, a small regular file inside ``confine_to``; else ``None`` and a note why not."""
    path = folder / name
    try:
        if not Path(os.path.realpath(path)).is_relative_to(confine_to):
            reason = "it links outside this folder"
        elif not path.is_file():
            reason = "not a regular file"  # reading a FIFO would block for ever
        elif path.stat().st_size > SIDECAR_MAX_BYTES:
            reason = f"over {SIDECAR_MAX_BYTES >> 20} MB"
        else:
            return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = type(exc).__name__
    notes.append(f"{name} ignored: {reason}")
    return None


def _read_manifest(folder: Path, notes: list[str], confine_to: Path) -> dict[VariantKey, str]:
    raw = _read_json_sidecar(folder, MANIFEST_NAME, confine_to=confine_to, notes=notes)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        notes.append(f"{MANIFEST_NAME} ignored: expected an object of variant -> file name")
        return {}
    manifest: dict[VariantKey, str] = {}
    for key, name in raw.items():
        try:
            variant = VariantKey.from_string(str(key))
        except ValueError as exc:
            notes.append(f"{MANIFEST_NAME}: {exc}")
            continue
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
            notes.append(f"{MANIFEST_NAME}: {variant} must name a file in this folder")
            continue
        manifest[variant] = name
    return manifest


def _scan(folder: Path) -> dict[str, os.stat_result]:
    """Stats of the model-ish files directly in ``folder`` (one scandir, no opens)."""
    found: dict[str, os.stat_result] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name in (MANIFEST_NAME, CARD_NAME) or entry.name.endswith(MODEL_SUFFIXES):
                    try:
                        found[entry.name] = entry.stat()
                    except OSError:
                        continue
    except FileNotFoundError:
        raise ModelNotFoundError("folder does not exist") from None
    except NotADirectoryError:
        raise ModelNotFoundError("not a folder") from None
    except OSError as exc:
        raise ModelNotFoundError(f"folder cannot be read: {exc.strerror}") from None
    return found


def discover_variant_files(
    folder: Path, names: set[str] | None = None, *, confine_to: Path | None = None
) -> tuple[str | None, dict[VariantKey, str], list[str]]:
    """The stem, ``{variant: file name}`` and notes for a folder.

    ``names`` (the folder's model-ish file names) may be passed to save a scan;
    the manifest is read only if it resolves inside ``confine_to`` (default: ``folder``).
    """
    names = set(_scan(folder)) if names is None else names
    notes: list[str] = []
    by_stem: dict[str, dict[VariantKey, str]] = {}
    for name in sorted(names):
        parsed = _parse_name(name)
        if parsed is not None:
            stem, key = parsed
            by_stem.setdefault(stem, {}).setdefault(key, name)
    stem = None
    files: dict[VariantKey, str] = {}
    if by_stem:
        # The folder's own name wins; otherwise the most complete stem.
        stem = folder.name if folder.name in by_stem else max(sorted(by_stem), key=lambda s: len(by_stem[s]))
        files = dict(by_stem[stem])
        if len(by_stem) > 1:
            others = [s for s in sorted(by_stem) if s != stem]
            named = ", ".join(others[:STEMS_NAMED])
            more = f" and {len(others) - STEMS_NAMED:,} more" if len(others) > STEMS_NAMED else ""
            notes.append(f"several model stems here; showing '{stem}' (also: {named}{more})")
    if MANIFEST_NAME in names:
        files.update(_read_manifest(folder, notes, Path(os.path.realpath(confine_to or folder))))
    return stem, files, notes


# ------------------------------------------------------ what the card says


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 0 < len(value) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    )


def _read_card(folder: Path, names: set[str], confine_to: Path, notes: list[str]) -> dict[str, Any]:
    """The folder's model card (``{}`` when there is none, or it is not a JSON object)."""
    if CARD_NAME not in names:
        return {}
    card = _read_json_sidecar(folder, CARD_NAME, confine_to=confine_to, notes=notes)
    return card if isinstance(card, dict) else {}


def _card_shape(card: dict[str, Any], notes: list[str]) -> list[int] | None:
    """The input shape (without the batch axis) that the model card gives, if any."""
    preprocessing = card.get("preprocessing")
    if not isinstance(preprocessing, dict) or "shape" not in preprocessing:
        return None
    if not _is_shape(preprocessing["shape"]):
        notes.append(f"{CARD_NAME}: preprocessing.shape is not a list of sizes")
        return None
    return preprocessing["shape"]


def _metadata_shape(details: dict[str, Any]) -> list[int] | None:
    """The input shape an ONNX file's own ``preprocessing`` metadata gives, if any."""
    raw = details.get("metadata", {}).get("preprocessing")
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        return None
    shape = value.get("shape") if isinstance(value, dict) else None
    return shape if _is_shape(shape) else None


def _fits(dims: list[Any], expected: list[int]) -> bool:
    if len(dims) == len(expected) + 1:
        dims = dims[1:]  # the batch axis, which cards leave out
    if len(dims) != len(expected):
        return False
    return all(not isinstance(d, int) or d == e for d, e in zip(dims, expected, strict=True))


def _shape_text(dims: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _input_shape_warnings(records: dict[VariantKey, VariantRecord], card_shape: list[int] | None) -> list[str]:
    """Where an ONNX graph's input disagrees with its metadata or the model card: a user would feed it wrongly."""
    warnings = []
    for record in records.values():
        inputs = record.details.get("inputs") if record.status is Status.LOADED else None
        if record.key.format is not ModelFormat.ONNX or not inputs:
            continue
        dims = inputs[0]["shape"]
        for source, expected in (("its own metadata", _metadata_shape(record.details)), (CARD_NAME, card_shape)):
            if expected is not None and not _fits(dims, expected):
                warnings.append(
                    f"{record.file}: the graph's input is {_shape_text(dims)} but {source} says {_shape_text(expected)}"
                )
    return warnings


# --------------------------------------------------------------------- loading


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file's bytes changed; ctime too, since ``cp -p`` rewrites in place and restores the mtime."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def _load_variant(
    folder: Path, key: VariantKey, name: str, *, trusted: bool, confine_to: Path, scanned: bool
) -> VariantRecord:
    path = folder / name
    try:
        if not path.exists():
            if scanned:  # it was there when the folder was listed
                return VariantRecord(
                    key, Status.ERROR, file=name,
                    error=f"{name}: was removed while the folder was loading; select it again",
                )  # fmt: skip
            return VariantRecord(key, Status.MISSING, file=name, error="listed in the manifest but not found")
        if not Path(os.path.realpath(path)).is_relative_to(confine_to):
            raise PathNotAllowedError(f"{name}: is a link to a file outside this folder")
        before = path.stat()
        model, storage = LOADERS[key.format](path, trusted, confine_to)
        details = describe_onnx(model) if key.format is ModelFormat.ONNX else describe_torch(model)
        sha256 = _sha256(path)
        after = path.stat()
        if _identity(before) != _identity(after):
            # The model and the checksum may come from different files: show neither. The cache
            # keeps this under the old fingerprint, which no longer matches, so the next request reloads.
            return VariantRecord(
                key, Status.ERROR, file=name, error=f"{name}: changed while it was loading; select the folder again"
            )
        return VariantRecord(
            key, Status.LOADED, file=name, model=model, bytes=after.st_size,
            sha256=sha256, storage=storage, details=details,
        )  # fmt: skip
    except (UnsafeModelError, PathNotAllowedError) as exc:
        return VariantRecord(key, Status.REFUSED, file=name, error=str(exc))
    except QuantcoreError as exc:
        return VariantRecord(key, Status.ERROR, file=name, error=str(exc))
    except OSError as exc:
        return VariantRecord(key, Status.ERROR, file=name, error=f"{name}: {exc.strerror or 'cannot be read'}")
    except Exception as exc:  # a loader bug must not take the other variants down
        logger.exception("unexpected failure loading %s", path)
        return VariantRecord(key, Status.ERROR, file=name, error=f"{name}: unexpected {type(exc).__name__}")


def _load_folder(folder: Path, names: set[str], *, trusted: bool, confine_to: Path) -> LoadedFolder:
    started = time.perf_counter()
    stem, files, notes = discover_variant_files(folder, names, confine_to=confine_to)
    records = {
        key: _load_variant(folder, key, files[key], trusted=trusted, confine_to=confine_to, scanned=files[key] in names)
        if key in files
        else VariantRecord(key, Status.MISSING)
        for key in VariantKey
    }
    card = _read_card(folder, names, confine_to, notes)
    warnings = _input_shape_warnings(records, _card_shape(card, notes))
    seconds = time.perf_counter() - started
    logger.info("loaded %s in %.2fs: %s", folder, seconds, {str(k): str(r.status) for k, r in records.items()})
    return LoadedFolder(folder, stem, trusted, records, seconds, tuple(notes), tuple(warnings), card, confine_to)


_CACHE: SingleFlightLRU[LoadedFolder] = SingleFlightLRU(settings.current().cache_size)


def load_model_variants(
    folder: str | os.PathLike[str], *, trusted: bool | None = None, confine_to: Path | None = None
) -> ModelVariants:
    """Load every variant in ``folder`` once; later calls return the cached models.

    Args:
        folder: the folder holding the variant files.
        trusted: whether TorchScript and whole pickles may load. Default: yes for
            folders under the local models root (or with remote trust switched on).
        confine_to: folder that variant files (after symlinks) must lie in.
            Default: ``folder`` itself.

    Returns:
        A ``ModelVariants`` mapping each variant key to its model or ``None``.

    Raises:
        ModelNotFoundError: the folder does not exist or cannot be read.
    """
    current = settings.current()
    resolved = Path(os.path.realpath(folder))
    if trusted is None:
        trusted = current.trust_remote_models or resolved.is_relative_to(current.models_root)
    confine = Path(os.path.realpath(confine_to)) if confine_to is not None else resolved
    stats = _scan(resolved)
    fingerprint = tuple(sorted((name, *_identity(stat)) for name, stat in stats.items()))
    if _CACHE.info().capacity != current.cache_size:
        _CACHE.resize(current.cache_size)
    loaded, hit = _CACHE.get(
        (str(resolved), trusted, str(confine)),
        fingerprint,
        lambda: _load_folder(resolved, set(stats), trusted=trusted, confine_to=confine),
    )
    return ModelVariants(loaded, cache_hit=hit)


def cache_info() -> CacheInfo:
    """Hits, misses, loads, evictions, entries and capacity of the folder cache."""
    return _CACHE.info()


def cache_clear() -> None:
    """Forget every loaded folder (the next request loads from disk)."""
    _CACHE.clear()
