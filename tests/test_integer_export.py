"""Firmware export: the C header compiles with Debian's cc, its arrays equal the JSON, the JSON equals the graph."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantcore.__main__ import main
from tests.integer_models import compiled_header

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "resnet8"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("integer")
    assert main(["integer", str(BUNDLED), "-o", str(out), "--images", "8"]) == 0
    return out


def _tflite_shift(m: float) -> tuple[int, int]:
    q, shift = math.frexp(m)
    fixed = math.floor(q * 2**31 + 0.5)
    if fixed == 2**31:
        fixed, shift = fixed // 2, shift + 1
    return (0, 0) if shift < -31 else (fixed, shift)


@pytest.mark.parametrize("variant", ["onnx_int8", "onnx_uint8", "pytorch_int8"])
def test_header_compiles_and_equals_json(exported: Path, variant: str, tmp_path: Path) -> None:
    header = exported / f"{variant}.h"
    arrays, defines = compiled_header(header, tmp_path)
    data = json.loads((exported / f"{variant}.json").read_text())
    assert len(data["layers"]) == 10
    for layer in data["layers"]:
        base = f"{variant}_{layer['identifier']}"
        c_type, count, weights = arrays[f"{base}_weights"]
        assert c_type == f"{layer['weights']['dtype']}_t" and count == len(weights)
        assert weights == layer["weights"]["values"]
        assert arrays[f"{base}_bias"][2] == layer["bias"]
        assert arrays[f"{base}_m0"][2] == layer["m0"]
        assert arrays[f"{base}_shift"][2] == layer["shift"]
        assert arrays[f"{base}_weight_zero_point"][2] == layer["weights"]["zero_point"]
        assert defines[f"{base.upper()}_INPUT_ZERO_POINT"] == layer["input"]["zero_point"]
        assert defines[f"{base.upper()}_OUTPUT_ZERO_POINT"] == layer["output"]["zero_point"]
        assert defines[f"{base.upper()}_OUT_CHANNELS"] == layer["weights"]["shape"][0]


@pytest.mark.parametrize("variant", ["onnx_int8", "onnx_uint8"])
def test_json_equals_the_graph(exported: Path, variant: str) -> None:
    """Weights, biases and zero points as the ONNX file stores them; M0/shift by TFLite's formula."""
    model = onnx.load(str(BUNDLED / f"resnet8_{variant.split('_')[1]}.onnx"))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    layers = {layer["name"]: layer for layer in json.loads((exported / f"{variant}.json").read_text())["layers"]}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert sorted(n.name for n in nodes) == sorted(layers)
    for node in nodes:
        layer = layers[node.name]
        w_dq, b_dq = producer[node.input[1]], producer[node.input[2]]
        weights = consts[w_dq.input[0]]
        if node.op_type == "Conv":
            weights = weights.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        elif not any(a.name == "transB" and a.i for a in node.attribute):
            weights = weights.T
        assert layer["weights"]["values"] == weights.reshape(-1).astype(int).tolist()
        assert layer["bias"] == consts[b_dq.input[0]].astype(int).tolist()
        w_scale = np.broadcast_to(consts[w_dq.input[1]].astype(np.float32), (weights.shape[0],))
        x_dq = producer[node.input[0]]
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == node.output[0])
        s_in, s_out = float(consts[x_dq.input[1]]), float(consts[q.input[1]])
        assert layer["input"]["zero_point"] == int(consts[x_dq.input[2]])
        assert layer["output"]["zero_point"] == int(consts[q.input[2]])
        expected = [_tflite_shift(s_in * float(s) / s_out) for s in w_scale]
        assert list(zip(layer["m0"], layer["shift"], strict=True)) == expected
        # the int32 bias carries the scale s_in · s_w, as the graph's bias DequantizeLinear says
        assert np.allclose(consts[b_dq.input[1]].astype(np.float64), s_in * w_scale.astype(np.float64), rtol=1e-6)


def test_torch_json_equals_the_packed_weights(exported: Path) -> None:
    """The TorchScript int8 variant's export: weights and scales as its packed parameters hold them, the int32
    bias as round(bias / (s_in·s_w)), M0/shift by TFLite's formula from the ops' own scales."""
    import torch

    model = torch.jit.load(str(BUNDLED / "resnet8_int8.pt"))
    layers = json.loads((exported / "pytorch_int8.json").read_text())["layers"]
    assert [la["name"] for la in layers] == ["conv1", "stack1.conv1", "stack1.conv2", "stack2.conv1", "stack2.conv2",
                                             "stack2.shortcut", "stack3.conv1", "stack3.conv2", "stack3.shortcut",
                                             "fc"]  # fmt: skip
    for layer in layers:
        module = model
        for part in layer["name"].split("."):
            module = getattr(module, part)
        if layer["kind"] == "dense":
            weight, bias = torch.ops.quantized.linear_unpack(module._packed_params._packed_params)
            laid_out = weight.int_repr().numpy()
        else:
            weight, bias = module._packed_params.unpack()
            laid_out = weight.int_repr().numpy().transpose(0, 2, 3, 1)  # OIHW -> OHWI
        assert layer["weights"]["values"] == laid_out.reshape(-1).astype(int).tolist()
        scales = weight.q_per_channel_scales().numpy()
        assert layer["weights"]["scale"] == [float(np.float32(s)) for s in scales]
        assert layer["weights"]["zero_point"] == weight.q_per_channel_zero_points().tolist()
        # the output's scale and zero point as the module's own output carries them
        probe_shape = (1, weight.shape[1], *([8, 8] if weight.ndim == 4 else []))
        out = module(torch.quantize_per_tensor(torch.zeros(probe_shape), layer["input"]["scale"], 0, torch.quint8))
        s_in, s_out = layer["input"]["scale"], out.q_scale()
        assert layer["output"]["scale"] == pytest.approx(s_out, rel=1e-7)
        assert layer["output"]["zero_point"] == out.q_zero_point()
        product = np.float32(s_in) * scales.astype(np.float32)
        assert layer["bias"] == np.rint(bias.detach().numpy() / product).astype(int).tolist()
        expected = [_tflite_shift(float(np.float32(s_in)) * float(np.float32(s)) / layer["output"]["scale"])
                    for s in scales]  # fmt: skip
        assert list(zip(layer["m0"], layer["shift"], strict=True)) == expected


def test_cli_refuses_a_folder_without_quantized_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "float_only"
    folder.mkdir()
    shutil.copy(BUNDLED / "resnet8.onnx", folder / "resnet8.onnx")
    assert main(["integer", str(folder), "-o", str(tmp_path / "out"), "--images", "2", "--trust"]) == 2
    assert "no quantized variant" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
