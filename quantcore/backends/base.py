"""The seam every model runtime implements: what the views may ask of a loaded model.

A backend knows one runtime (onnxruntime, eager PyTorch, TorchScript). The
views ask it for a model's weighted layers, a tapper (one batch in, the output
and chosen intermediate values out), a predictor (one batch in, the output
out), the input it declares, and a JSON description; they never ask which
runtime they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from quantcore.backends.layer import Layer, QuantParams


@dataclass(frozen=True)
class Capture:
    """One batch through a model: its first output as floats, and every tapped value as produced.

    Values come back as the runtime made them — numpy arrays from onnxruntime,
    torch tensors (possibly quantized) from PyTorch — so a caller can read their
    quantization parameters before turning them into floats (``to_numpy``).
    """

    output: np.ndarray
    values: dict[str, Any]


Tapper = Callable[[np.ndarray], Capture]
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as a model declares it: name, dims (``None`` where symbolic) and dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: str

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the first axis fixes, if it fixes one (graphs exported for devices often say 1)."""
        return self.dims[0] if self.dims and self.dims[0] else None

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """One sample's shape (no batch axis), if every axis but the batch is known."""
        rest = self.dims[1:]
        return tuple(int(d) for d in rest) if rest and all(d for d in rest) else None  # type: ignore[misc]


class Backend(Protocol):
    """One model runtime: everything the views need of a model it can run."""

    name: ClassVar[str]

    def handles(self, model: object) -> bool:
        """Whether ``model`` is a loaded model of this runtime."""
        ...

    def layers(self, model: Any, *, probe: np.ndarray | None = None) -> tuple[list[Layer], list[str]]:
        """The conv and dense layers in graph order, and notes on what could not be read.

        ``probe``: one float32 batch a runtime may run to read activation
        parameters that only show at run time (PyTorch int8); ignored otherwise.
        """
        ...

    def tapper(self, model: Any, taps: Sequence[str], *, threads: int, as_written: bool = False) -> Tapper:
        """A function running one float32 batch and capturing ``taps`` (named as ``Layer.tap`` names them).

        ``as_written``: compute each step as the graph writes it, without fusing quantized steps into
        integer kernels (what onnxruntime's ``qdq_loss_debug`` measures); runtimes that do not fuse ignore it.
        """
        ...

    def predictor(self, model: Any, *, threads: int) -> Predictor:
        """A function from one float32 batch to the model's first output."""
        ...

    def inputs(self, model: Any) -> tuple[TensorSpec, ...]:
        """The inputs the model declares (empty when it declares none, as eager modules do)."""
        ...

    def outputs(self, model: Any) -> tuple[TensorSpec, ...]:
        """The outputs the model declares (empty when unknown)."""
        ...

    def describe(self, model: Any) -> dict[str, Any]:
        """JSON-ready facts for the summary: parameters, precision, scheme, inputs..."""
        ...

    def output_kind(self, model: Any) -> str | None:
        """``"probabilities"`` / ``"log_probabilities"`` when the model ends in a (log-)softmax, else None."""
        ...

    def input_quantization(self, model: Any) -> QuantParams | None:
        """How the model quantizes its input, when its first step does (read from the graph, not run)."""
        ...


def to_numpy(value: Any) -> np.ndarray:
    """A captured value as a numpy array (torch tensors dequantized and detached)."""
    if isinstance(value, np.ndarray):
        return value
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_quantized and value.qscheme() == torch.per_tensor_affine:
            # numpy dequantizes a per-tensor int8 tensor several times faster than torch does.
            integers = value.int_repr().numpy()
            return (integers.astype(np.float32) - np.float32(value.q_zero_point())) * np.float32(value.q_scale())
        tensor = value.dequantize() if value.is_quantized else value
        return tensor.detach().cpu().numpy()
    return np.asarray(value)


def to_integers(value: Any) -> np.ndarray:
    """A captured integer value as a numpy array: a quantized torch tensor's ``int_repr()``, arrays as they are."""
    if isinstance(value, np.ndarray):
        return value
    import torch

    if isinstance(value, torch.Tensor):
        return (value.int_repr() if value.is_quantized else value.detach()).numpy()
    return np.asarray(value)


# Ops that leave a tensor's values as they are (or only reshape them): looked through to find a softmax.
PASS_THROUGH = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "QuantizeLinear", "DequantizeLinear",
    "aten::dequantize", "aten::reshape", "aten::view", "aten::flatten", "aten::squeeze", "aten::contiguous",
})  # fmt: skip
SOFTMAX_KINDS = {"Softmax": "probabilities", "LogSoftmax": "log_probabilities", "QLinearSoftmax": "probabilities",
                 "aten::softmax": "probabilities", "aten::log_softmax": "log_probabilities",
                 "quantized::softmax": "probabilities", "softmax": "probabilities", "log_softmax": "log_probabilities",
                 "Softmax2d": "probabilities", "LogSoftmax_module": "log_probabilities"}  # fmt: skip


def missing_tap(taps: Sequence[str], known: set[str] | dict[str, Any]) -> str | None:
    """The first of ``taps`` the model does not have, if any."""
    return next((t for t in taps if t not in known), None)
