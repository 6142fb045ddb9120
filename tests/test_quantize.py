"""Recipes -> onnxruntime's quantize_static: each option changes the graph as ORT documents it, calibration
is computed once per (float model, method, calibration set) and recipe.json rebuilds the same file (the bundled
int8/uint8 variants' own recipes: tests/test_bundled_recipes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import quantcore
from quantcore.data import datasets
from quantcore.errors import RecipeError
from quantcore.evaluate.batches import generated_inputs
from quantcore.evaluate.inputs import variant_spec
from quantcore.inspect.drift import layer_drift
from quantcore.inspect.layer_table import build_layer_table
from quantcore.load import RecipeKey, VariantKey
from quantcore.quantize import (
    Recipe,
    calibration_runs,
    clear_calibration_cache,
    make_recipe,
    weighted_nodes,
    with_results,
)


@pytest.fixture
def folder(variant_folder: Path) -> Path:
    """The tiny variants with a small samples.npz to calibrate on."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(24, dtype=np.int64) % 10
    datasets.save_samples(variant_folder / "samples.npz",
                          datasets.LabelledImages(images, labels, tuple(f"c{i}" for i in range(10))))  # fmt: skip
    clear_calibration_cache()
    return variant_folder


def _make(folder: Path, **options: object) -> quantcore.quantize.RecipeResult:
    variants = quantcore.load_model_variants(folder)
    return make_recipe(variants, Recipe(**{"calibration_images": 16, **options}))  # type: ignore[arg-type]


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _layers(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def _weight_dq(model: onnx.ModelProto, node_name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear feeding ``node_name``'s weight, or None when its weight is a float initializer."""
    node = next(n for n in model.graph.node if n.name == node_name)
    return next((n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == node.input[1]), None)


def test_weight_types_land_as_initializers_of_that_type(folder: Path) -> None:
    for weight, elem in (("int8", TensorProto.INT8), ("uint8", TensorProto.UINT8), ("int4", TensorProto.INT4),
                         ("uint4", TensorProto.UINT4)):  # fmt: skip
        result = _make(folder, weight=weight, activation="uint8")
        model, inits = result.model, _inits(result.model)
        layers = _layers(model)
        assert len(layers) == 10, "the quantized graph keeps its weighted nodes"
        for name in layers:
            dq = _weight_dq(model, name)
            assert dq is not None and inits[dq.input[0]].data_type == elem, (weight, name)


def test_activation_types_set_the_zero_point_type(folder: Path) -> None:
    for activation, elem in (("int8", TensorProto.INT8), ("uint8", TensorProto.UINT8), ("int16", TensorProto.INT16),
                             ("uint16", TensorProto.UINT16)):  # fmt: skip
        model = _make(folder, activation=activation, weight="int8").model
        inits = _inits(model)
        q_types = {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
        assert q_types == {elem}, activation


def test_excluded_layers_stay_float_and_the_others_do_not(folder: Path) -> None:
    result = _make(folder, exclude=("stack3.conv2", "/conv1/Conv"))
    model = result.model
    assert _weight_dq(model, "/stack3/conv2/Conv") is None and _weight_dq(model, "/conv1/Conv") is None
    assert _inits(model)[next(n for n in model.graph.node if n.name == "/conv1/Conv").input[1]].data_type == \
        TensorProto.FLOAT  # fmt: skip
    assert _weight_dq(model, "/stack1/conv1/Conv") is not None
    assert result.manifest["onnxruntime"]["quantize_static"]["nodes_to_exclude"] == ["/stack3/conv2/Conv",
                                                                                      "/conv1/Conv"]  # fmt: skip
    with pytest.raises(RecipeError, match=r"no weighted layer named 'stack9\.conv'"):
        _make(folder, exclude=("stack9.conv",))


def test_per_channel_reduce_range_and_symmetry(folder: Path) -> None:
    def weight_q(model: onnx.ModelProto, name: str = "/stack1/conv1/Conv") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dq = _weight_dq(model, name)
        inits = _inits(model)
        return tuple(numpy_helper.to_array(inits[i]) for i in dq.input[:3])  # type: ignore[return-value]

    _, pc_scale, _ = weight_q(_make(folder, per_channel=True).model)
    _, pt_scale, _ = weight_q(_make(folder, per_channel=False).model)
    assert pc_scale.size == 16 and pt_scale.size == 1  # stack1.conv1 has 16 output channels

    wide, _, _ = weight_q(_make(folder, reduce_range=False).model)
    narrow, _, _ = weight_q(_make(folder, reduce_range=True).model)
    assert np.abs(wide.astype(int)).max() > 100
    assert np.abs(narrow.astype(int)).max() <= 64  # ORT's 7-bit weights: symmetric [-64, 64]

    def weight_zero_points(model: onnx.ModelProto) -> set[int]:
        return {int(weight_q(model, name)[2]) for name in _layers(model)}

    # Per tensor (ORT's per-channel weights are symmetric whatever is asked), uint8 weights: asymmetric by default.
    assert len(weight_zero_points(_make(folder, weight="uint8", per_channel=False).model)) > 1
    assert weight_zero_points(_make(folder, weight="uint8", per_channel=False, symmetric_weights=True).model) == {128}

    def activation_zero_points(model: onnx.ModelProto) -> set[int]:
        inits = _inits(model)
        quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        return {int(numpy_helper.to_array(inits[n.input[2]])) for n in quantize}

    assert activation_zero_points(_make(folder, activation="int8", symmetric_activations=True).model) == {0}
    assert activation_zero_points(_make(folder, activation="int8").model) != {0}


def test_calibration_methods_and_percentile_change_the_ranges(folder: Path) -> None:
    def input_scale(model: onnx.ModelProto) -> float:
        inits = _inits(model)
        first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        return float(numpy_helper.to_array(inits[first.input[1]]))

    scales = {m: input_scale(_make(folder, calibration=m).model) for m in ("MinMax", "Entropy", "Distribution")}
    scales["p90"] = input_scale(_make(folder, calibration="Percentile", percentile=90.0).model)
    scales["p99.9"] = input_scale(_make(folder, calibration="Percentile", percentile=99.9).model)
    # Uniform random pixels fill [0, 1]: MinMax's uint8 scale is 1/255; the 90th percentile clips well inside.
    assert scales["MinMax"] == pytest.approx(1 / 255, rel=1e-3)
    assert scales["p90"] < scales["p99.9"] <= scales["MinMax"] * 1.0001
    assert len({round(s, 9) for s in scales.values()}) >= 3


def test_a_test_set_calibrates_instead_of_the_samples(folder: Path) -> None:
    from quantcore.quantize.calibration import fingerprint
    from tests.test_scorecard import _write_idx

    test_set = folder.parent / "data" / "dim"
    test_set.mkdir(parents=True)
    # Pixels 0..127: a range the folder's samples (0..255) do not have.
    images = np.random.default_rng(3).integers(0, 128, (20, 28, 28), dtype=np.uint8)
    _write_idx(test_set / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(test_set / "t10k-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    from_samples = _make(folder)
    from_test_set = _make(folder, test_set="data/dim")
    assert from_test_set.calibrated, "another calibration set calibrates again"
    calibration = from_test_set.manifest["calibration"]
    expected = datasets.preprocess(datasets.grey_to_rgb32(images[:16]))
    assert calibration["kind"] == "test_set" and calibration["count"] == 16
    assert calibration["sha256"] == fingerprint(expected) != from_samples.manifest["calibration"]["sha256"]

    def input_scale(model: onnx.ModelProto) -> float:
        inits = _inits(model)
        first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        return float(numpy_helper.to_array(inits[first.input[1]]))

    # MinMax, uint8, asymmetric: the input's range [0, max] over 255 levels, as computed from the images here.
    assert input_scale(from_test_set.model) == pytest.approx(float(expected.max()) / 255, rel=1e-4)
    assert input_scale(from_samples.model) == pytest.approx(1 / 255, rel=1e-3)


def test_a_calibration_draw_picks_per_class_from_a_split(folder: Path) -> None:
    from quantcore.quantize.calibration import fingerprint
    from tests.test_scorecard import _write_idx

    test_set = folder.parent / "data" / "split"
    test_set.mkdir(parents=True)
    rng = np.random.default_rng(7)
    train = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = rng.permutation(np.arange(60) % 10).astype(np.uint8)
    _write_idx(test_set / "train-images-idx3-ubyte.gz", train)
    _write_idx(test_set / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(test_set / "t10k-images-idx3-ubyte.gz", train[:20] // 2)  # another split: not what is drawn
    _write_idx(test_set / "t10k-labels-idx1-ubyte.gz", labels[:20])
    draw = {"split": "train", "per_class": 3, "seed": [5, 1]}
    result = _make(folder, test_set="data/split", calibration_draw=draw, calibration_images=30)
    # The draw, computed here with numpy alone: per class in label order, choice without replacement, sorted.
    seeded = np.random.default_rng([5, 1])
    picked = np.sort(np.concatenate([seeded.choice(np.flatnonzero(labels == c), 3, replace=False) for c in range(10)]))
    expected = datasets.preprocess(datasets.grey_to_rgb32(train[picked]))
    calibration = result.manifest["calibration"]
    assert calibration["sha256"] == fingerprint(expected) and calibration["count"] == 30
    assert calibration["draw"] == draw and result.manifest["recipe"]["calibration_draw"] == draw
    assert result.recipe.name.endswith("-testset-train3")
    # Its recipe.json alone makes the same file again.
    clear_calibration_cache()
    again = make_recipe(quantcore.load_model_variants(folder), Recipe.from_dict(result.manifest["recipe"]))
    assert again.calibrated and again.sha256 == result.sha256
    # Fewer images asked for than drawn: the first of the draw.
    fewer = _make(folder, test_set="data/split", calibration_draw=draw, calibration_images=7)
    assert fewer.manifest["calibration"]["sha256"] == fingerprint(expected[:7])

    with pytest.raises(RecipeError, match="name the test set"):
        Recipe(calibration_draw=draw)
    for bad, message in (({"split": "valid"}, "split is one of"), ({"per_class": 0}, "per_class is between"),
                         ({"seed": [-1]}, "seed is 1 to 8 integers"), ({"seed": []}, "seed is 1 to 8"),
                         ({"rng": 1}, "a calibration draw is")):  # fmt: skip
        with pytest.raises(RecipeError, match=message):
            Recipe(test_set="data/split", calibration_draw=bad)
    with pytest.raises(quantcore.errors.DatasetError, match="fewer than 7"):
        _make(folder, test_set="data/split", calibration_draw={**draw, "per_class": 7})


def test_qoperator_format_and_what_it_refuses(folder: Path) -> None:
    model = _make(folder, format="QOperator", activation="uint8", weight="int8").model
    ops = {n.op_type for n in model.graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    with pytest.raises(RecipeError, match="QOperator takes 8-bit"):
        Recipe(format="QOperator", weight="int4")
    with pytest.raises(RecipeError, match="int8 activations with uint8 weights"):
        Recipe(activation="int8", weight="uint8")
    with pytest.raises(RecipeError, match="unknown weight type"):
        Recipe(weight="int3")


def test_per_layer_overrides_through_tensor_quant_overrides(folder: Path) -> None:
    result = _make(folder, weight="int4", overrides={"conv1": {"weight": "int8"}, "fc": {"weight": "int8"}})
    model, inits = result.model, _inits(result.model)
    types = {name: inits[_weight_dq(model, name).input[0]].data_type for name in _layers(model)}
    assert types.pop("/conv1/Conv") == TensorProto.INT8 and types.pop("/fc/Gemm") == TensorProto.INT8
    assert set(types.values()) == {TensorProto.INT4}
    overrides = result.manifest["onnxruntime"]["quantize_static"]["extra_options"]["TensorQuantOverrides"]
    float_model = quantcore.load_model_variants(folder).model(VariantKey.ONNX_FLOAT)
    float_nodes = {n.layer: n for n in weighted_nodes(float_model)}
    assert overrides[float_nodes["conv1"].weight] == [{"quant_type": "QInt8", "axis": 0}]
    assert set(overrides) == {float_nodes["conv1"].weight, float_nodes["fc"].weight}


def test_calibration_runs_once_per_method_and_set(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function

    made = []
    real = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: made.append(1) or real(*a, **k))
    before = calibration_runs()
    first = _make(folder, calibration="Entropy")
    # Weight type, per-channel, symmetry, excluded layers and overrides do not touch the ranges.
    for options in ({"weight": "int4"}, {"per_channel": False}, {"symmetric_weights": False},
                    {"exclude": ("stack2.conv1",)}, {"activation": "int8"}, {"reduce_range": True},
                    {"overrides": {"fc": {"weight": "int8"}}, "weight": "int4"}):  # fmt: skip
        again = _make(folder, calibration="Entropy", **options)
        assert not again.calibrated, options
    assert first.calibrated and len(made) == 1 and calibration_runs() == before + 1
    # Another method, or another calibration set, calibrates again.
    assert _make(folder, calibration="MinMax").calibrated
    assert _make(folder, calibration="Entropy", calibration_images=8).calibrated
    assert len(made) == 3 and calibration_runs() == before + 3


def test_recipe_json_rebuilds_the_same_file(folder: Path) -> None:
    result = _make(folder, activation="uint8", weight="int4", calibration="Percentile", percentile=99.0,
                   exclude=("fc",))  # fmt: skip
    manifest = json.loads(quantcore.quantize.manifest_text(result))
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["onnx"] == onnx.__version__
    assert manifest["calibration"]["sha256"] and manifest["calibration"]["count"] == 16
    assert manifest["onnxruntime"]["quantize_static"]["extra_options"]["CalibPercentile"] == 99.0
    clear_calibration_cache()
    rebuilt = make_recipe(quantcore.load_model_variants(folder), Recipe.from_dict(manifest["recipe"]))
    assert rebuilt.calibrated and rebuilt.sha256 == manifest["model"]["sha256"]
    with pytest.raises(RecipeError, match="unknown recipe options: colour"):
        Recipe.from_dict({"colour": "red"})


def test_a_recipe_variant_joins_the_loaded_set(folder: Path) -> None:
    variants = quantcore.load_model_variants(folder)
    result = make_recipe(variants, Recipe(name="u8-test", calibration_images=16))
    joined = with_results(variants, [result])
    key = RecipeKey("u8-test")
    assert joined.model(key) is result.model
    summary = quantcore.get_model_summary(joined)
    assert summary["recipes"] == 1
    assert summary["variants"]["recipe:u8-test"]["quantization"]["activation_type"] == "uint8"
    table = build_layer_table(joined)
    assert key in table.variants and all(key in row.layers for row in table.rows)
    report = layer_drift(joined, table=table, inputs=generated_inputs(variant_spec(joined, key), 8), batch_size=8)
    drift = next(d for d in report.variants if d.variant == key)
    assert drift.reference is VariantKey.ONNX_FLOAT and all(db is not None and db > 0 for db in drift.sqnr_db)


def test_no_float_onnx_variant_is_a_clear_refusal(folder: Path) -> None:
    (folder / "tiny.onnx").unlink()
    with pytest.raises(RecipeError, match="float ONNX variant"):
        _make(folder)
