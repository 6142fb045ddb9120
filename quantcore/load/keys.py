"""The names of things a folder holds: variant keys, formats, load status, one variant's record.

The five ``VariantKey`` values are the public contract of a folder. Variants
made in the app from the folder's float model by a quantization recipe join a
loaded set beside them under ``RecipeKey`` (``recipe:<name>``); every view
takes either kind of ``Key`` and orders them with ``key_order``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


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


@dataclass(frozen=True)
class RecipeKey:
    """A recipe variant: an ONNX model quantized in the app from the folder's float model."""

    name: str
    PREFIX: ClassVar[str] = "recipe:"

    @property
    def value(self) -> str:
        return self.PREFIX + self.name

    def __str__(self) -> str:
        return self.value

    @property
    def format(self) -> ModelFormat:
        return ModelFormat.ONNX

    @property
    def is_quantized(self) -> bool:
        return True


Key = VariantKey | RecipeKey


def parse_key(text: str) -> Key:
    """``onnx_int8`` -> VariantKey.ONNX_INT8, ``recipe:u8s8`` -> RecipeKey("u8s8").

    Raises:
        ValueError: neither a variant key nor a recipe key.
    """
    if text.startswith(RecipeKey.PREFIX) and len(text) > len(RecipeKey.PREFIX):
        return RecipeKey(text[len(RecipeKey.PREFIX) :])
    return VariantKey.from_string(text)


def key_order(key: Key) -> tuple[int, str]:
    """Sort key: the five in their contract order, then recipes by name."""
    members = list(VariantKey)
    return (members.index(key), "") if isinstance(key, VariantKey) else (len(members), key.name)


class Status(StrEnum):
    LOADED = "loaded"
    MISSING = "missing"
    ERROR = "error"
    REFUSED = "refused"


@dataclass(frozen=True)
class VariantRecord:
    """What happened to one variant of a folder."""

    key: Key
    status: Status
    file: str | None = None
    model: Any = field(default=None, repr=False)
    bytes: int | None = None
    sha256: str | None = None
    storage: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


FLOAT_KEYS = (VariantKey.PYTORCH_FLOAT, VariantKey.ONNX_FLOAT)


def reference_key(key: Key, available: Iterable[Key]) -> VariantKey | None:
    """The float variant that ``key`` is compared against.

    Quantized variants: the float variant of the same format, else the other
    float (a recipe variant is ONNX, made from ``onnx_float``). ``onnx_float``
    is checked against ``pytorch_float`` (export fidelity); ``pytorch_float``
    is the reference itself.
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
