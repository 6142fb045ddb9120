"""Find a folder's variant files: by name for any one stem, or as a ``variants.json`` manifest lists them.

A folder holds up to five variants of one model, named after a shared stem
(``resnet8.onnx``, ``resnet8_int8.onnx``, ``resnet8_uint8.onnx``, ``resnet8.pt``,
``resnet8_int8.pt``), or listed in a ``variants.json`` manifest (key -> file
name) that wins over names. Sidecar files (manifest, card) are read only when
they are small regular files inside the folder's confines.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore.errors import ModelNotFoundError
from quantcore.load.keys import VariantKey

MANIFEST_NAME = "variants.json"
CARD_NAME = "model_card.json"
SAMPLES_NAME = "samples.npz"  # a folder's labelled sample images, beside its variants
MODEL_SUFFIXES = (".onnx", ".pt", ".pth")
SIDECAR_MAX_BYTES = 1 << 20  # variants.json, model_card.json: a few kilobytes when genuine
STEMS_NAMED = 5  # other stems named in the note; a folder of thousands made it tens of kilobytes


def parse_variant_name(name: str) -> tuple[str, VariantKey] | None:
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


def read_json_sidecar(folder: Path, name: str, *, confine_to: Path, notes: list[str]) -> Any:
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


@dataclass(frozen=True)
class Discovery:
    """What a folder holds: its stem, ``{variant: file name}``, what the manifest declares per variant, notes."""

    stem: str | None
    files: dict[VariantKey, str]
    declared: dict[VariantKey, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read_manifest(
    folder: Path, notes: list[str], confine_to: Path
) -> tuple[dict[VariantKey, str], dict[VariantKey, dict[str, Any]]]:
    """``variants.json``: per variant a file name, or ``{"file": ..., "input": {...}, "output": ...}``."""
    raw = read_json_sidecar(folder, MANIFEST_NAME, confine_to=confine_to, notes=notes)
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        notes.append(f"{MANIFEST_NAME} ignored: expected an object of variant -> file name")
        return {}, {}
    manifest: dict[VariantKey, str] = {}
    declared: dict[VariantKey, dict[str, Any]] = {}
    for key, entry in raw.items():
        try:
            variant = VariantKey.from_string(str(key))
        except ValueError as exc:
            notes.append(f"{MANIFEST_NAME}: {exc}")
            continue
        name = entry.get("file") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
            notes.append(f"{MANIFEST_NAME}: {variant} must name a file in this folder")
            continue
        manifest[variant] = name
        if isinstance(entry, dict) and (isinstance(entry.get("input"), dict) or "output" in entry):
            declared[variant] = {"input": entry.get("input") or {}, "output": entry.get("output")}
    return manifest, declared


def scan_folder(folder: Path) -> dict[str, os.stat_result]:
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
    """The stem, ``{variant: file name}`` and notes for a folder (``discover`` says more)."""
    found = discover(folder, names, confine_to=confine_to)
    return found.stem, found.files, found.notes


def discover(folder: Path, names: set[str] | None = None, *, confine_to: Path | None = None) -> Discovery:
    """What a folder holds: its stem, variant files, what its manifest declares per variant, and notes.

    ``names`` (the folder's model-ish file names) may be passed to save a scan;
    the manifest is read only if it resolves inside ``confine_to`` (default: ``folder``).
    """
    names = set(scan_folder(folder)) if names is None else names
    notes: list[str] = []
    by_stem: dict[str, dict[VariantKey, str]] = {}
    for name in sorted(names):
        parsed = parse_variant_name(name)
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
    declared: dict[VariantKey, dict[str, Any]] = {}
    if MANIFEST_NAME in names:
        listed, declared = _read_manifest(folder, notes, Path(os.path.realpath(confine_to or folder)))
        files.update(listed)
    return Discovery(stem, files, declared, notes)
