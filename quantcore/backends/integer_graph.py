"""The integer steps a chip would run, as every runtime's reader hands them over.

A model is read (``onnx_integer`` for ONNX QDQ and QOperator graphs,
``torch_integer_fx`` and ``torch_integer_script`` for PyTorch int8) into one
form: integer tensors with their scale and zero point, and steps between them
(conv/dense layers with their stored integer weights and int32 bias, and the
adds, pools and reshapes a whole network needs). The integer view computes on
this form only, whatever runtime the model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IntTensor:
    """One integer tensor of the graph: its name, scale, zero point and integer type (per tensor)."""

    name: str
    scale: float
    zero_point: int
    dtype: str


@dataclass(frozen=True, eq=False)
class IntegerStep:
    """One integer operation: a conv/dense layer, or a step between layers.

    ``kind``: "conv", "dense", "add", "global_average_pool", "reshape", "relu", "max_pool".
    ``weight`` is in the canonical layout (output channels first: OIHW, or (out, in)).
    """

    name: str
    op: str  # what it was read from: "QLinearConv", "QDQ Conv+Relu", "quantized::conv2d_relu", ...
    kind: str
    inputs: tuple[IntTensor, ...]
    output: IntTensor
    weight: np.ndarray | None = field(default=None, repr=False)
    weight_scale: np.ndarray | None = field(default=None, repr=False)  # float32, one per output channel or one
    weight_zero_point: np.ndarray | None = field(default=None, repr=False)
    weight_dtype: str | None = None
    bias: np.ndarray | None = field(default=None, repr=False)  # int32, scale s_in * s_w
    bias_note: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    relu: bool = False  # a ReLU fused before the output's QuantizeLinear: clamp at the output zero point

    @property
    def is_layer(self) -> bool:
        return self.kind in ("conv", "dense")

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0]) if self.weight is not None else 0


@dataclass(frozen=True)
class IntegerGraph:
    """The integer steps of one model in graph order, and how its float input and output meet them.

    ``runtime``: what computes the model's own quantized tensors, which the steps are checked against
    ("onnxruntime", or "torch" with its quantized engine, e.g. "torch (x86 engine)").
    """

    steps: tuple[IntegerStep, ...]
    input_name: str | None  # the float graph input
    input_q: IntTensor | None  # the QuantizeLinear of the input, as the first integer tensor
    output_q: IntTensor | None  # the integer tensor whose DequantizeLinear (and monotonic ops) is the output
    notes: tuple[str, ...]
    runtime: str = "onnxruntime"

    @property
    def layers(self) -> tuple[IntegerStep, ...]:
        return tuple(s for s in self.steps if s.is_layer)
