"""What each variant takes as input and gives as output, read from what the folder says and what the model is.

An ``InputSpec`` says a sample's shape in the model's own layout (NCHW,
NHWC, NCL or plain features), its dtype, what uint8 pixels 0..255 map to (a
range, then an optional per-channel mean/std), a batch size the model fixes,
and whether it outputs logits, probabilities or log-probabilities.

Field by field, the first source that says wins:

1. the page's override (``ModelVariants.with_input``), for one variant, then for all;
2. ``variants.json``: ``{"key": {"file": ..., "input": {...}, "output": ...}}``;
3. ``model_card.json``: ``"input"`` (then the older ``"preprocessing"``) and ``"output"``;
4. an ONNX file's own ``preprocessing`` metadata;
5. the model: an ONNX graph's declared input (dims, dtype, fixed batch) and
   its last op (Softmax, LogSoftmax); the range its input quantization covers
   (a quantized model calibrated for 0–255 pixels says so); a PyTorch model's
   ONNX sibling, else a probe run (NCHW, then NHWC) when it can run safely;
6. defaults (NCHW, pixels / 255, logits), each named in a note.

A declared ``"input"`` takes ``layout``, ``range`` ([low, high]), ``mean``,
``std`` (a number or one per channel), ``channels``, ``size`` ([H, W] or one
number), ``shape`` (a sample, in the layout), ``dtype`` and ``pixels`` (free
text; "28x28 grey zero-padded by 2 px" is understood). The reading lives in
``quantcore.load.input_reading``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_IMAGE_SIZE = 32  # ResNet8 / MLPerf Tiny: the size assumed when nothing says otherwise
DEFAULT_RANGE = (0.0, 1.0)
# Input quantization covering more than this means pixels 0..255, not [0, 1].
WIDE_RANGE = 32.0


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"
    NCL = "NCL"  # 1-D signals: channels, length
    NCDHW = "NCDHW"  # volumes: channels, depth, height, width
    NC = "NC"  # plain features

    @property
    def is_image(self) -> bool:
        return self in (Layout.NCHW, Layout.NHWC)

    @classmethod
    def from_text(cls, text: Any) -> Layout:
        """``"nhwc"``, ``"NHWC"``; ``"features"`` means ``NC``.

        Raises:
            ValueError: not a layout.
        """
        value = str(text).strip().upper()
        value = {"FEATURES": "NC", "NLC": "NCL", "VOLUME": "NCDHW"}.get(value, value)
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"layout must be one of {', '.join(cls)}, not {str(text)[:20]!r}") from None


class OutputKind(StrEnum):
    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    LOG_PROBABILITIES = "log_probabilities"


@dataclass(frozen=True)
class InputSpec:
    """One variant's input and output, and how uint8 pixels become that input.

    ``shape`` is one sample in the model's own layout (no batch axis).
    ``grey``: the stored images are grey (repeated to every channel).
    ``pad``: pixels of zero border around a smaller image (Fashion-MNIST's 28x28 in 32x32).
    ``sources``: where each field was read, for the page to say.
    """

    shape: tuple[int, ...]
    layout: Layout = Layout.NCHW
    dtype: str = "float32"
    range: tuple[float, float] = DEFAULT_RANGE
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    batch: int | None = None
    output: OutputKind = OutputKind.LOGITS
    class_names: tuple[str, ...] | None = None
    grey: bool = False
    pad: int = 0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_image(self) -> bool:
        return self.layout.is_image

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """Images as stored and shown: (C, H, W) whatever the layout; other inputs as they are."""
        if self.layout is Layout.NHWC:
            height, width, channels = self.shape
            return (channels, height, width)
        return self.shape

    @property
    def channels(self) -> int:
        return self.pixel_shape[0]

    @property
    def inner_size(self) -> tuple[int, int]:
        """(height, width) of the image inside its zero border."""
        _, height, width = self.pixel_shape
        return height - 2 * self.pad, width - 2 * self.pad

    def names(self, count: int) -> tuple[str, ...]:
        """``count`` class names: the recorded ones when they fit, else ``class 0``, ``class 1``..."""
        if self.class_names is not None and len(self.class_names) == count:
            return self.class_names
        return tuple(f"class {i}" for i in range(count))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with where each field came from."""
        return {
            "layout": str(self.layout), "shape": list(self.shape), "dtype": self.dtype, "range": list(self.range),
            "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
            "batch": self.batch, "output": str(self.output), "grey": self.grey, "pad": self.pad,
            "sources": dict(self.sources), "notes": list(self.notes),
        }  # fmt: skip
