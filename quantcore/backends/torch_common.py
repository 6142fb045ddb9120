"""What the two PyTorch backends share: quantized-tensor parameters, thread counts, probing, description,
and ``TorchBackend``, the base whose ``layers``/``inputs``/``outputs``/``describe``/``predictor``/``tapper``
both use as they are; each subclass says how it reads layers and taps values."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from quantcore.backends.base import Predictor, Tapper, TensorSpec, to_numpy
from quantcore.backends.layer import Layer, QuantParams, make_qparams

if TYPE_CHECKING:
    from torch import nn

_TORCH_QDTYPES = {"quint8": "uint8", "qint8": "int8", "qint32": "int32", "quint4x2": "uint4"}


def torch_qparams(tensor: Any) -> QuantParams | None:
    import torch

    if not isinstance(tensor, torch.Tensor) or not tensor.is_quantized:
        return None
    dtype = _TORCH_QDTYPES.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
    if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return make_qparams(
            tensor.q_per_channel_scales().numpy(), tensor.q_per_channel_zero_points().numpy(), dtype,
            tensor.q_per_channel_axis(),
        )  # fmt: skip
    return make_qparams(tensor.q_scale(), tensor.q_zero_point(), dtype)


def torch_weight(weight: Any) -> tuple[np.ndarray, np.ndarray | None, QuantParams | None]:
    q = torch_qparams(weight)
    if q is None:
        return weight.detach().float().numpy(), None, None
    return weight.dequantize().numpy(), weight.int_repr().numpy(), q


def numel(tensor: Any) -> int:
    return int(tensor.numel()) if tensor is not None else 0


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads; torch's count is process-wide, so it is put back after."""
    import torch

    previous = torch.get_num_threads()
    if previous != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if previous != threads:
            torch.set_num_threads(previous)


def module_predictor(module: Any, threads: int) -> Predictor:
    """A function from one float32 batch to the module's output, without autograd, on ``threads`` threads."""
    import torch

    module.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch_threads(threads), torch.no_grad():
            return to_numpy(module(torch.from_numpy(batch)))

    return predict


def probe_activations(tapper: Tapper, layers: list[Layer], probe: np.ndarray | None, notes: list[str]) -> list[Layer]:
    """Layers with input/output scales read off one probe batch: static quantization fixes them."""
    if not layers or probe is None or not any(layer.quantized for layer in layers):
        return layers
    try:
        values = tapper(probe).values
    except Exception as exc:  # a model that cannot run still has a layer table
        notes.append(f"activation scales unavailable: a probe run failed ({first_line(exc)})")
        return layers
    return [
        replace(layer, input_q=torch_qparams(values[layer.input_tap]), output_q=torch_qparams(values[layer.tap]))
        for layer in layers
    ]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's own message, first line, trimmed (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _is_quantized(module: nn.Module) -> bool:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return ".quantized." in module._c._type().qualified_name()
    return ".quantized" in type(module).__module__


def _packed_weights(module: nn.Module) -> dict[int, int]:
    """Element counts of packed (quantized) weights and biases, keyed by storage address."""
    import torch

    packed: dict[int, int] = {}  # keyed by address: a tensor shared by two modules counts once
    # Unpacking makes new tensors: each is kept until the count is done, or the next could take a freed
    # one's address and go uncounted (the bundled int8 TorchScript then showed 59,274 of its 77,706 at random).
    unpacked: list[torch.Tensor] = []
    for m in module.modules():
        weight_bias = getattr(m, "_weight_bias", None)
        # An eager quantized Linear and its packed-params child report the same weights.
        if not callable(weight_bias) or any(_is_packed_params(c) for c in m.children()):
            continue
        try:
            tensors = weight_bias()
        except (RuntimeError, TypeError):
            continue
        for t in tensors if isinstance(tensors, (tuple, list)) else (tensors,):
            if isinstance(t, torch.Tensor):
                unpacked.append(t)
                packed[t.data_ptr()] = t.numel()
    return packed


def describe_torch(module: nn.Module) -> dict[str, Any]:
    """Parameter count, quantized-module count and precision of a PyTorch module."""
    quantized = [m for m in module.modules() if _is_quantized(m)]
    # Quantized modules keep weights packed, outside parameters().
    parameters = sum(p.numel() for p in module.parameters()) + sum(_packed_weights(module).values())
    return {
        "module_class": getattr(module, "original_name", None) or type(module).__name__,
        "parameters": parameters,
        "quantized_modules": len([m for m in quantized if not _is_packed_params(m)]),
        "precision": "int8" if quantized else "float32",
    }


def _is_packed_params(module: nn.Module) -> bool:
    name = getattr(module, "original_name", None) or type(module).__name__
    return name.endswith("PackedParams")


class TorchBackend:
    """The part of the ``Backend`` protocol both PyTorch runtimes answer alike.

    A subclass reads a model's layers (``read_layers``) and builds a tapper (``make_tapper``); activation
    scales of int8 layers are then read off one probe batch through that tapper, since static quantization
    fixes them only where the model runs. PyTorch modules declare no inputs or outputs, and run through one
    predictor. ``as_written`` means nothing here: torch does not fuse quantized steps behind the graph's back.
    """

    name: ClassVar[str]

    def read_layers(self, model: Any, notes: list[str]) -> list[Layer]:
        """The model's conv and dense layers, adding to ``notes`` what could not be read."""
        raise NotImplementedError

    def make_tapper(self, model: Any, taps: Sequence[str]) -> Tapper:
        """A function running one float32 batch and capturing ``taps``."""
        raise NotImplementedError

    def layers(self, model: Any, *, probe: np.ndarray | None = None) -> tuple[list[Layer], list[str]]:
        notes: list[str] = []
        layers = self.read_layers(model, notes)
        if probe is not None and any(layer.quantized for layer in layers):
            taps = [t for layer in layers for t in (layer.input_tap, layer.tap)]
            layers = probe_activations(self.make_tapper(model, taps), layers, probe, notes)
        return layers, notes

    def inputs(self, model: Any) -> tuple[TensorSpec, ...]:
        return ()

    def outputs(self, model: Any) -> tuple[TensorSpec, ...]:
        return ()

    def describe(self, model: Any) -> dict[str, Any]:
        return describe_torch(model)

    def predictor(self, model: Any, *, threads: int) -> Predictor:
        return module_predictor(model, threads)

    def tapper(self, model: Any, taps: Sequence[str], *, threads: int, as_written: bool = False) -> Tapper:
        return self.make_tapper(model, taps)
