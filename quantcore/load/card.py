"""A folder's ``model_card.json``, and where the files disagree with what describes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantcore.load.discover import CARD_NAME, read_json_sidecar
from quantcore.load.keys import ModelFormat, Status, VariantKey, VariantRecord


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 0 < len(value) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    )


def read_card(folder: Path, names: set[str], confine_to: Path, notes: list[str]) -> dict[str, Any]:
    """The folder's model card (``{}`` when there is none, or it is not a JSON object)."""
    if CARD_NAME not in names:
        return {}
    card = read_json_sidecar(folder, CARD_NAME, confine_to=confine_to, notes=notes)
    return card if isinstance(card, dict) else {}


def card_shape(card: dict[str, Any], notes: list[str]) -> list[int] | None:
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


def input_shape_warnings(records: dict[VariantKey, VariantRecord], card_shape: list[int] | None) -> list[str]:
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
