"""What a folder and a model file declare about a variant's input and output, read field by field.

Sources are a model card (``"input"`` over the older ``"preprocessing"``, and ``"output"``), a
``variants.json`` entry, the page's override, and a model file's ``preprocessing`` metadata.
``DeclaredFields`` gathers them highest first: a field once set is kept; a value that makes no sense is
named in a note and ignored. ``input_reading`` adds what the model itself says and makes the spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcore.load.input_spec import Layout, OutputKind
from quantcore.load.keys import VariantRecord

_PADDED_GREY = re.compile(r"(\d+)\s*x\s*(\d+)\s+gr[ae]y\b.*?padded by\s+(\d+)\s*px", re.IGNORECASE)
_GREY = re.compile(r"\bgr[ae]y(scale)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Declared:
    """One source's say about a variant's input and output (fields it does not say are absent)."""

    source: str
    input: Mapping[str, Any]
    output: Any = None


def parse_json(text: Any) -> Any:
    """``text`` parsed as JSON when it is a string (``None`` if it is not JSON); anything else as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def card_declarations(card: Mapping[str, Any], source: str = "model_card.json") -> list[Declared]:
    """What a model card says: ``"input"`` over the older ``"preprocessing"``, and ``"output"``."""
    found = []
    for name in ("input", "preprocessing"):
        if isinstance(card.get(name), dict):
            found.append(Declared(f"{source} ({name})", card[name], card.get("output") if name == "input" else None))
    if not found and card.get("output") is not None:
        found.append(Declared(source, {}, card.get("output")))
    return found


def metadata_declarations(record: VariantRecord) -> list[Declared]:
    """What a model file's own ``preprocessing`` metadata says (JSON text in its metadata)."""
    preprocessing = parse_json(record.details.get("metadata", {}).get("preprocessing"))
    return [Declared(f"{record.file} metadata", preprocessing)] if isinstance(preprocessing, dict) else []


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > 16 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                  and np.isfinite(v) for v in values):  # fmt: skip
        raise ValueError(f"{what} must be a number or a list of numbers")
    return tuple(float(v) for v in values)


def _sizes(value: Any, what: str, count: int | None = None) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in values):
        raise ValueError(f"{what} must be positive whole numbers")
    if count is not None and len(values) != count:
        raise ValueError(f"{what} must have {count} values")
    return tuple(values)


class DeclaredFields:
    """Fields gathered from the sources, highest first: a field once set is kept."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.notes: list[str] = []

    def offer(self, name: str, value: Any, source: str) -> None:
        if value is not None and name not in self.values:
            self.values[name] = value
            self.sources[name] = source

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def read_declared(fields: DeclaredFields, declared: Declared) -> None:
    """Offer everything one source says; a value that makes no sense is named in a note and ignored."""
    spec, source = declared.input, declared.source
    readers = {
        "layout": lambda v: Layout.from_text(v),
        "range": lambda v: _numbers(v, "range"),
        "mean": lambda v: _numbers(v, "mean"),
        "std": lambda v: _numbers(v, "std"),
        "channels": lambda v: _sizes(v, "channels", 1)[0],
        "size": lambda v: _sizes(v, "size") * (2 if isinstance(v, int) else 1),
        "shape": lambda v: _sizes(v, "shape"),
        "dtype": lambda v: str(np.dtype(str(v))),
    }
    for name, read in readers.items():
        if spec.get(name) is None:
            continue
        try:
            value = read(spec[name])
        except (ValueError, TypeError) as exc:
            fields.notes.append(f"{source}: {name} ignored ({exc})")
            continue
        if name == "range" and (len(value) != 2 or value[0] >= value[1]):
            fields.notes.append(f"{source}: range ignored (give [low, high] with low < high)")
            continue
        if name == "std" and any(v == 0 for v in value):
            fields.notes.append(f"{source}: std ignored (a zero would divide by zero)")
            continue
        if name == "size" and len(value) != 2:
            fields.notes.append(f"{source}: size ignored (give [height, width] or one number)")
            continue
        fields.offer(name, value, source)
    pixels = str(spec.get("pixels") or "")
    padded = _PADDED_GREY.search(pixels)
    if padded is not None:
        fields.offer("grey", True, source)
        fields.offer("pad", int(padded.group(3)), source)
    elif _GREY.search(pixels):
        fields.offer("grey", True, source)
    if declared.output is not None:
        try:
            fields.offer("output", OutputKind(str(declared.output).strip().lower()), source)
        except ValueError:
            fields.notes.append(f"{source}: output must be one of {', '.join(OutputKind)}")
