"""The eager PyTorch backend: ``nn.Module`` models, FX int8 GraphModules included.

Layers are read by tracing the module with ``torch.fx`` (definition order when
it does not trace). A tap is a module path (its output) or ``path#input``
(what it receives), captured with forward hooks that live for one call only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from quantcore.backends.base import SOFTMAX_KINDS, Capture, Tapper, to_numpy
from quantcore.backends.layer import Layer, LayerKind, QuantParams, fold_bn, make_qparams
from quantcore.backends.torch_common import (
    TorchBackend,
    numel,
    torch_weight,
)
from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import torch

INPUT_SUFFIX = "#input"  # "stack1.conv1#input" is what that module receives


def _torch_kind(module: torch.nn.Module) -> LayerKind | None:
    from torch import nn
    from torch.ao.nn import quantized as nnq

    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)):
        return "conv"
    if isinstance(module, (nn.Linear, nnq.Linear)):
        return "dense"
    return None


def _torch_chain_type(module: torch.nn.Module) -> bool:
    from torch import nn

    chain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU,
             nn.Identity, nn.Dropout)  # fmt: skip
    return isinstance(module, chain)


def _is_wrapper_step(module: torch.nn.Module) -> bool:
    """Padding and pass-through modules an exporter puts before a conv inside a wrapper."""
    from torch import nn

    steps = (
        nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
        nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
        nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d, nn.Identity, nn.Dropout,
    )  # fmt: skip
    return isinstance(module, steps)


def wrapped_layer(module: torch.nn.Module) -> tuple[str, torch.nn.Module, list[tuple[str, Any]]] | None:
    """The one conv or dense layer inside a ``Sequential`` wrapper (``Sequential(Pad, Conv2d)`` as onnx2torch
    writes an asymmetric pad), as (its name in the wrapper, the layer, the chain after it), else None."""
    from torch import nn

    if not isinstance(module, nn.Sequential):
        return None
    children = list(module.named_children())
    index = next((i for i, (_, m) in enumerate(children) if _torch_kind(m)), None)
    if index is None or not all(_is_wrapper_step(m) for _, m in children[:index]):
        return None
    after = children[index + 1 :]
    if not all(_torch_chain_type(m) for _, m in after):
        return None
    return children[index][0], children[index][1], after


def _module_layer(
    path: str,
    module: torch.nn.Module,
    depth: int,
    order: int,
    chain: list[tuple[str, Any]],
    *,
    wrapper: str | None = None,
) -> Layer:
    """One layer; ``wrapper``: the path of the module it is wrapped in, whose input and output are tapped."""
    from torch import nn

    kind = _torch_kind(module)
    assert kind is not None
    raw_weight = module.weight() if callable(module.weight) else module.weight
    raw_bias = module.bias() if callable(module.bias) else module.bias
    weight, integers, w_q = torch_weight(raw_weight)
    folded = None
    first = chain[0][1] if chain else None
    if (
        w_q is None
        and isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
        and first.track_running_stats
    ):
        gamma = first.weight.detach().numpy() if first.weight is not None else np.ones(weight.shape[0])
        folded = fold_bn(weight, gamma, first.running_var.numpy(), first.eps)
    outside = [(p, m) for p, m in chain if wrapper is None or not p.startswith(wrapper + ".")]
    tap = outside[-1][0] if outside else (wrapper or path)
    return Layer(
        name=path, op=module._get_name(), kind=kind, weight_shape=tuple(weight.shape),
        parameters=int(weight.size) + numel(raw_bias), depth=depth, order=order, tap=tap,
        input_tap=(wrapper or path) + INPUT_SUFFIX, fused=tuple(f"{type(m).__name__} {p}" for p, m in chain),
        weight=weight, weight_int=integers, weight_q=w_q, folded_weight=folded,
    )  # fmt: skip


def _module_layers(module: torch.nn.Module, notes: list[str]) -> list[Layer]:
    import torch.fx

    modules = dict(module.named_modules())
    graph = module.graph if isinstance(module, torch.fx.GraphModule) else None
    if graph is None:
        try:
            graph = torch.fx.symbolic_trace(module).graph
        except Exception as exc:  # models with data-dependent control flow do not trace
            notes.append(f"its graph could not be traced ({type(exc).__name__}): modules taken in definition order")
    if graph is None:
        return [
            _module_layer(path, m, order + 1, order, [])
            for order, (path, m) in enumerate((p, m) for p, m in modules.items() if _torch_kind(m))
        ]
    layers: list[Layer] = []
    depth: dict[Any, int] = {}
    for order, node in enumerate(graph.nodes):
        here = max((depth.get(a, 0) for a in node.all_input_nodes), default=0)
        target = modules.get(node.target) if node.op == "call_module" else None
        inner = wrapped_layer(target) if target is not None and not _torch_kind(target) else None
        if target is not None and (_torch_kind(target) or inner is not None):
            here += 1
            chain: list[tuple[str, Any]] = []
            wrapper = None
            name, layer_module = str(node.target), target
            if inner is not None:  # called as one module: the layer is inside, the wrapper is what runs
                wrapper = str(node.target)
                name, layer_module = f"{wrapper}.{inner[0]}", inner[1]
                chain = [(f"{wrapper}.{p}", m) for p, m in inner[2]]
            end = node
            # Follow the output through modules that only transform it (BN, ReLU): quantizers fuse them.
            while len(end.users) == 1:
                user = next(iter(end.users))
                nxt = modules.get(user.target) if user.op == "call_module" else None
                if nxt is None or not _torch_chain_type(nxt) or user.all_input_nodes != [end]:
                    break
                chain.append((str(user.target), nxt))
                end = user
            layers.append(_module_layer(name, layer_module, here, order, chain, wrapper=wrapper))
        depth[node] = here
    return layers


def module_tapper(module: torch.nn.Module, taps: Sequence[str]) -> Tapper:
    import torch

    modules = dict(module.named_modules())
    wanted: dict[str, tuple[bool, bool]] = {}  # path -> (capture input, capture output)
    for tap in taps:
        path, is_input = (tap[: -len(INPUT_SUFFIX)], True) if tap.endswith(INPUT_SUFFIX) else (tap, False)
        if path not in modules:
            raise InvalidModelError(f"the model has no module named {path!r}")
        has_in, has_out = wanted.get(path, (False, False))
        wanted[path] = (has_in or is_input, has_out or not is_input)

    def run(batch: np.ndarray) -> Capture:
        values: dict[str, Any] = {}
        owner = threading.get_ident()

        def hook_for(path: str, want_in: bool, want_out: bool) -> Callable[..., None]:
            def hook(_: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
                # The model is shared: another thread's forward must not write into this capture.
                if threading.get_ident() != owner:
                    return
                if want_in and args:
                    values[path + INPUT_SUFFIX] = args[0]
                if want_out:
                    values[path] = output

            return hook

        # Hooks live only for this call, so the shared (cached) model is left as it was.
        handles = [modules[p].register_forward_hook(hook_for(p, *flags)) for p, flags in wanted.items()]
        try:
            with torch.no_grad():
                output = module(torch.from_numpy(batch))
        finally:
            for handle in handles:
                handle.remove()
        return Capture(to_numpy(output).astype(np.float32, copy=False), {t: values[t] for t in taps})

    return run


class EagerBackend(TorchBackend):
    """``torch.nn.Module`` models that are not TorchScript."""

    name: ClassVar[str] = "torch"

    def handles(self, model: object) -> bool:
        import torch

        return isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)

    def read_layers(self, model: torch.nn.Module, notes: list[str]) -> list[Layer]:
        return _module_layers(model, notes)

    def make_tapper(self, model: torch.nn.Module, taps: Sequence[str]) -> Tapper:
        return module_tapper(model, taps)

    def output_kind(self, model: torch.nn.Module) -> str | None:
        graph = _graph_or_none(model)
        if graph is None:
            return None
        modules = dict(model.named_modules())
        node = next(n for n in reversed(graph.nodes) if n.op == "output").args[0]
        while node is not None and hasattr(node, "op"):
            if isinstance(node, tuple | list):
                return None
            name = _node_kind(node, modules)
            if name in SOFTMAX_KINDS:
                return SOFTMAX_KINDS[name]
            if name not in ("dequantize", "reshape", "view", "flatten", "squeeze", "contiguous", "Identity",
                            "Flatten"):  # fmt: skip
                return None
            node = node.all_input_nodes[0] if node.all_input_nodes else None
        return None

    def input_quantization(self, model: torch.nn.Module) -> QuantParams | None:
        graph = _graph_or_none(model)
        if graph is None:
            return None
        placeholder = next((n for n in graph.nodes if n.op == "placeholder"), None)
        users = list(placeholder.users) if placeholder is not None else []
        quantize = next((u for u in users if _node_kind(u, {}) == "quantize_per_tensor"), None)
        if quantize is None:
            return None
        values = []
        for arg in quantize.args[1:3]:
            values.append(_fetch_attr(model, arg.target) if getattr(arg, "op", None) == "get_attr" else arg)
        dtype = {"torch.quint8": "uint8", "torch.qint8": "int8"}.get(str(quantize.args[3]), "uint8")
        return make_qparams(float(values[0]), int(values[1]), dtype)


def _graph_or_none(model: torch.nn.Module) -> Any:
    import torch.fx

    if isinstance(model, torch.fx.GraphModule):
        return model.graph
    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow does not trace: nothing to read
        return None


def _node_kind(node: Any, modules: dict[str, Any]) -> str:
    """A name for what an FX node does: the module class, or the function or method name."""
    if node.op == "call_module":
        module = modules.get(node.target)
        name = type(module).__name__ if module is not None else ""
        return "LogSoftmax_module" if name == "LogSoftmax" else name
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return node.op


def _fetch_attr(model: Any, target: str) -> Any:
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value.item() if hasattr(value, "item") else value
