"""Single-layer integer models built with onnx.helper: QLinearConv, QGemm, QLinearMatMul and QDQ Conv/Gemm.

Each takes an integer input tensor ``x`` and returns the layer's integer output ``y``, so a test feeds
onnxruntime and the numpy reference the very same integers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_TYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


@dataclass(frozen=True)
class LayerCase:
    form: str  # "QLinearConv", "QGemm", "QLinearMatMul", "QDQ Conv", "QDQ Gemm"
    activation: str  # uint8 / int8 (input and output)
    weight: str  # int8 / uint8
    per_channel: bool
    bias: bool
    stride: int = 1
    pad: int = 0
    weight_limit: int = 127  # |w - zw| kept small where a CPU's U8S8 kernels saturate 16-bit pair sums

    @property
    def id(self) -> str:
        return (
            f"{self.form.replace(' ', '_')}-{self.activation}-{self.weight}-"
            f"{'pc' if self.per_channel else 'pt'}-{'b' if self.bias else 'nob'}-s{self.stride}p{self.pad}"
        )


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def build_case(case: LayerCase, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """(model, a batch of integer inputs) for one case."""
    rng = np.random.default_rng(seed)
    conv = "Conv" in case.form
    act = np.dtype(case.activation)
    wdt = np.dtype(case.weight)
    out_ch, in_ch = 6, 4
    x_shape = (3, in_ch, 9, 9) if conv else (5, 24)
    w_shape = (out_ch, in_ch, 3, 3) if conv else (out_ch, 24)  # (out, in): QGemm with transB=1
    x_scale = np.float32(0.02)
    x_zero = np.array(100 if act == np.uint8 else -5, dtype=act)
    w_zero_v = 0 if wdt == np.int8 else 128
    lim = case.weight_limit
    w = (rng.integers(-lim, lim + 1, w_shape) + w_zero_v).astype(wdt)
    channels = out_ch
    w_scale = (rng.uniform(0.002, 0.02, channels) if case.per_channel else np.array(0.01)).astype(np.float32)
    w_zero = np.full(channels if case.per_channel else (), w_zero_v, dtype=wdt)
    y_scale = np.float32(0.05 if conv else 0.15)
    y_zero = np.array(20 if act == np.uint8 else -10, dtype=act)
    bias = rng.integers(-3000, 3000, channels).astype(np.int32)
    info = np.iinfo(act)
    x = rng.integers(info.min, info.max + 1, x_shape).astype(act)
    attrs = {"strides": [case.stride] * 2, "pads": [case.pad] * 4} if conv else {}
    inits = [
        _init("xs", x_scale),
        _init("xz", x_zero),
        _init("w", w),
        _init("ws", w_scale),
        _init("wz", w_zero),
        _init("ys", y_scale),
        _init("yz", y_zero),
        _init("b", bias),
    ]
    y_rank = 4 if conv else 2
    nodes: list[onnx.NodeProto]
    opset = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    if case.form == "QLinearConv":
        nodes = [
            helper.make_node(
                "QLinearConv",
                ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", *(["b"] * case.bias)],
                ["y"],
                name="layer",
                **attrs,
            )
        ]
    elif case.form == "QGemm":
        nodes = [
            helper.make_node(
                "QGemm",
                ["x", "xs", "xz", "w", "ws", "wz", "b" if case.bias else "", "ys", "yz"],
                ["y"],
                name="layer",
                domain="com.microsoft",
                transB=1,
            )
        ]
    elif case.form == "QLinearMatMul":
        inits[2] = _init("w", np.ascontiguousarray(w.T))  # (in, out)
        nodes = [helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="layer")]
    else:  # QDQ: DequantizeLinear -> Conv/Gemm -> QuantizeLinear, as onnxruntime's quantizer writes it
        bias_scale = (x_scale * w_scale).astype(np.float32)
        inits += [_init("bs", bias_scale), _init("bz", np.zeros(bias_scale.shape, np.int32))]
        op = case.form.split()[1]
        nodes = [
            helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["x_f"]),
            helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["w_f"], axis=0),
            helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["b_f"], axis=0),
            helper.make_node(
                op, ["x_f", "w_f", *(["b_f"] * case.bias)], ["y_f"], name="layer", **(attrs if conv else {"transB": 1})
            ),
            helper.make_node("QuantizeLinear", ["y_f", "ys", "yz"], ["y"]),
        ]
    used = {name for node in nodes for name in node.input}
    inits = [i for i in inits if i.name in used]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", ONNX_TYPES[case.activation], list(x_shape))],
        [helper.make_tensor_value_info("y", ONNX_TYPES[case.activation], [None] * y_rank)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=opset)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, x


ARRAY = re.compile(r"const (u?int\d+_t) (\w+)\[(\d+)\] = \{([^}]*)\};")
DEFINE = re.compile(r"#define (\w+) (-?\d+)")


def compiled_header(header: Path, scratch: Path) -> tuple[dict[str, tuple[str, int, list[int]]], dict[str, int]]:
    """Compile an exported C header with ``cc -Wall -Wextra -Werror`` (asserting it compiles), then read it back:
    (arrays by name as (C type, declared length, values), integer #defines by name)."""
    cc = shutil.which("cc")
    assert cc is not None, "Debian's cc is part of the test environment (.ci/run installs gcc)"
    source = scratch / "use.c"
    source.write_text(f'#include "{header}"\nint main(void) {{ return 0; }}\n')
    done = subprocess.run([cc, "-c", "-Wall", "-Wextra", "-Werror", "-std=c99", str(source), "-o",
                           str(scratch / "use.o")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = header.read_text()
    arrays = {m.group(2): (m.group(1), int(m.group(3)), [int(v) for v in m.group(4).replace("\n", " ").split(",")])
              for m in ARRAY.finditer(text)}  # fmt: skip
    return arrays, {m.group(1): int(m.group(2)) for m in DEFINE.finditer(text)}
