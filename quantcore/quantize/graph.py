"""Where a recipe's layer names land in a float ONNX graph: node names to exclude, tensors to override.

A user names layers as the layer table shows them (``stack3.conv2``, the
PyTorch module path) or by their ONNX node (``/stack3/conv2/Conv``); both
resolve to the node of the float graph, whose weight initializer and output
are the tensors ``TensorQuantOverrides`` keys on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantcore.errors import RecipeError

if TYPE_CHECKING:
    import onnx

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class WeightedNode:
    """One weighted node of a float graph."""

    node: str  # the ONNX node name
    layer: str  # the dotted module path it was exported from (or the node name)
    op: str
    weight: str  # the weight initializer
    output: str
    channel_axis: int  # the weight's output-channel axis, for per-channel overrides


def _dotted(node_name: str, op: str) -> str:
    """``/stack3/conv2/Conv`` -> ``stack3.conv2`` (torch's exporter names nodes by module path, then op)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) >= 2 and parts[-1].split("_")[0] == op:
        parts = parts[:-1]
    return ".".join(parts) or node_name


def weighted_nodes(model: onnx.ModelProto) -> list[WeightedNode]:
    """The nodes of ``model`` whose second input is an initializer: the layers a recipe can name."""
    initializers = {t.name for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        axis = 0
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        elif node.op_type in ("MatMul", "ConvTranspose"):
            axis = 1
        name = node.name or node.output[0]
        found.append(WeightedNode(name, _dotted(name, node.op_type), node.op_type, node.input[1], node.output[0], axis))
    return found


def resolve_layers(model: onnx.ModelProto, names: tuple[str, ...] | list[str]) -> list[WeightedNode]:
    """The weighted nodes ``names`` stand for (a table label ``9. stack3.conv2`` is read as ``stack3.conv2``).

    Raises:
        RecipeError: a name no weighted node has, with the names that exist.
    """
    nodes = weighted_nodes(model)
    by_name = {n.node: n for n in nodes} | {n.layer: n for n in nodes}
    picked = []
    for raw in names:
        text = raw.split(". ", 1)[1] if ". " in raw and raw.split(". ", 1)[0].isdigit() else raw
        if text not in by_name:
            known = ", ".join(n.layer for n in nodes)
            raise RecipeError(f"no weighted layer named {raw!r} in the float model; its layers: {known}")
        picked.append(by_name[text])
    return picked
