"""The onnx package's model-zoo topologies (``onnx/backend/test/data/light``) with seeded weights, for the zoo.

SqueezeNet, ShuffleNet, Inception v1/v2, DenseNet-121, ResNet-50, AlexNet,
ZFNet and VGG-19 at opset 9, input ``[1,3,224,224]``: real topologies whose
weights are ``ConstantOfShape`` constants. Constant weights make calibration
assert (every activation equal), so each is given seeded random values, sized
and shaped by the op that takes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# name -> file; the first three (LIGHT_FAST) build in seconds, the rest take 15 s to 3 minutes and up to 5 GB.
LIGHT_MODELS = {
    "squeezenet": "light_squeezenet.onnx",
    "shufflenet": "light_shufflenet.onnx",
    "inception_v1": "light_inception_v1.onnx",
    "densenet121": "light_densenet121.onnx",
    "inception_v2": "light_inception_v2.onnx",
    "resnet50": "light_resnet50.onnx",
    "bvlc_alexnet": "light_bvlc_alexnet.onnx",
    "zfnet512": "light_zfnet512.onnx",
    "vgg19": "light_vgg19.onnx",
}
LIGHT_FAST = ("squeezenet", "shufflenet", "inception_v1")


def light_path(name: str) -> Path:
    """The onnx package's own copy of a model-zoo topology."""
    import onnx

    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / LIGHT_MODELS[name]


def _seeded_value(role: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if role == "weight":  # He-normal: activations keep their scale through ReLU stacks
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        return rng.normal(size=shape) * np.sqrt(2.0 / max(fan_in, 1))
    if role in ("bn_scale", "scale", "bn_var"):
        return 0.5 + rng.random(shape)
    if role in ("bn_mean", "bn_bias", "shift"):
        return 0.1 * rng.normal(size=shape)
    return 0.01 * rng.normal(size=shape)  # biases


def _role(name: str, consumers: dict[str, list[Any]]) -> str:
    """What a constant is, read off the op that takes it (through an Unsqueeze or a Reshape)."""
    for node in consumers.get(name, []):
        index = list(node.input).index(name)
        if node.op_type in ("Unsqueeze", "Reshape") and index == 0:
            inner = _role(node.output[0], consumers)
            if inner != "bias":
                return inner
            continue
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            return "weight" if index == 1 else "bias"
        if node.op_type == "BatchNormalization":
            return ("input", "bn_scale", "bn_bias", "bn_mean", "bn_var")[index]
        if node.op_type == "Mul":
            return "scale"
        if node.op_type in ("Add", "Sum"):
            return "shift"
    return "bias"


def seeded_light_model(name: str, *, seed: int = 0) -> Any:
    """A model-zoo topology with seeded random weights in place of its ``ConstantOfShape`` constants.

    The stored biases are kept. Initializers stop being graph inputs (so
    nothing can override them), and the opset-9 graph is lifted to opset 13
    (``onnx.version_converter``), which the quantizer's per-channel QDQ needs.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(light_path(name)))
    graph = model.graph
    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    kept, new_inits = [], []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = tuple(int(d) for d in consts[node.input[0]].reshape(-1))
            value = _seeded_value(_role(node.output[0], consumers), shape, rng).astype(np.float32)
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
        else:
            kept.append(node)
    used = {i for node in kept for i in node.input}
    inits = [t for t in graph.initializer if t.name in used] + new_inits
    init_names = {t.name for t in inits}
    inputs = [i for i in graph.input if i.name not in init_names and i.name not in consts]
    new_graph = helper.make_graph(kept, graph.name, inputs, list(graph.output), initializer=inits)
    out = helper.make_model(new_graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="zoo-light")
    out.ir_version = 7
    out = onnx.version_converter.convert_version(out, 13)
    onnx.checker.check_model(out)
    return out


def ends_in_softmax(model: Any) -> bool:
    """Whether the graph's first output is a ``Softmax``'s, reshaped or not (the model outputs probabilities).

    The version converter wraps an opset-9 Softmax in Flatten/Reshape to keep its 2-D semantics.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer.get(model.graph.output[0].name)
    while node is not None and node.op_type in ("Reshape", "Flatten", "Identity"):
        node = producer.get(node.input[0])
    return node is not None and node.op_type == "Softmax"
