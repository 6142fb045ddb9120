"""The names of things a folder holds: variant keys, formats, load status, one variant's record.

The five ``VariantKey`` values are the public contract of a folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ModelFormat(StrEnum):
    ONNX = "onnx"
    PYTORCH = "pytorch"


class Precision(StrEnum):
    FLOAT = "float"
    INT8 = "int8"
    UINT8 = "uint8"


class VariantKey(StrEnum):
    """The five variants a folder can hold; the value is the public key."""

    ONNX_FLOAT = "onnx_float"
    ONNX_INT8 = "onnx_int8"
    ONNX_UINT8 = "onnx_uint8"
    PYTORCH_FLOAT = "pytorch_float"
    PYTORCH_INT8 = "pytorch_int8"

    @classmethod
    def from_string(cls, text: str) -> VariantKey:
        """The key named ``text``.

        Raises:
            ValueError: no such key.
        """
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown variant {text!r}; expected one of {', '.join(cls)}") from None

    @property
    def format(self) -> ModelFormat:
        return ModelFormat.ONNX if self.value.startswith("onnx") else ModelFormat.PYTORCH

    @property
    def precision(self) -> Precision:
        return Precision(self.value.split("_", 1)[1])

    @property
    def is_quantized(self) -> bool:
        return self.precision is not Precision.FLOAT


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


FLOAT_KEYS = (VariantKey.PYTORCH_FLOAT, VariantKey.ONNX_FLOAT)


def reference_key(key: VariantKey, available: Iterable[VariantKey]) -> VariantKey | None:
    """The float variant that ``key`` is compared against.

    Quantized variants: the float variant of the same format, else the other
    float. ``onnx_float`` is checked against ``pytorch_float`` (export
    fidelity); ``pytorch_float`` is the reference itself.
    """
    present = set(available)
    if key is VariantKey.PYTORCH_FLOAT:
        return None
    if key is VariantKey.ONNX_FLOAT:
        return VariantKey.PYTORCH_FLOAT if VariantKey.PYTORCH_FLOAT in present else None
    same, other = (
        (VariantKey.ONNX_FLOAT, VariantKey.PYTORCH_FLOAT)
        if key.format is ModelFormat.ONNX
        else (VariantKey.PYTORCH_FLOAT, VariantKey.ONNX_FLOAT)
    )
    return same if same in present else other if other in present else None
