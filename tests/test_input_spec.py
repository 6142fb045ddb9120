"""Any small model, any input: each variant's input spec is read right, declared or overridden, and every
view feeds it through the one input path — checked against a direct onnxruntime run on the same tensors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import quantcore
from quantcore import settings
from quantcore.data import datasets
from quantcore.data.datasets import FASHION_MNIST_DIR, LabelledImages
from quantcore.errors import DatasetError
from quantcore.evaluate.inputs import (
    InputSpec,
    Layout,
    OutputKind,
    fit_pixels,
    folder_samples,
    input_spec,
    load_test_set,
    to_model_input,
    variant_spec,
)
from quantcore.evaluate.predictions import predict_image, variant_logits
from quantcore.evaluate.scorecard import score_accuracy
from quantcore.inspect.drift import layer_drift
from quantcore.load import VariantKey
from tests import zoo

ZooBuild = Callable[..., zoo.ZooModel]
KEYS = [k for k in VariantKey]


def _copy(model: zoo.ZooModel, models_root: Path) -> zoo.ZooModel:
    """A private copy of a zoo folder inside the models root, to add samples or a card to."""
    folder = Path(shutil.copytree(model.folder, models_root / model.name))
    files = {k: folder / p.name for k, p in model.files.items()}
    return zoo.ZooModel(model.name, folder, files, model.expect, model.schemes, model.modules, model.input_name)


def _write_pixels(folder: Path, pixels: np.ndarray, classes: int = 10) -> np.ndarray:
    labels = np.arange(len(pixels)) % classes
    datasets.save_samples(
        folder / "samples.npz", LabelledImages(pixels, labels, tuple(f"c{i}" for i in range(classes)))
    )
    return labels


def _direct(path: Path, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    size = batch or len(x)
    return np.concatenate([session.run(None, {name: x[i : i + size]})[0] for i in range(0, len(x), size)])


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("name", "layout", "shape", "batch", "output"),
    [
        ("keras_nhwc", Layout.NHWC, (32, 32, 3), None, OutputKind.LOGITS),
        ("fixed_batch", Layout.NCHW, (3, 224, 224), 1, OutputKind.LOGITS),
        ("grey", Layout.NCHW, (1, 28, 28), None, OutputKind.LOGITS),
        ("softmax", Layout.NCHW, (3, 32, 32), None, OutputKind.PROBABILITIES),
        ("mlp", Layout.NC, (20,), None, OutputKind.LOGITS),
        ("conv1d", Layout.NCL, (4, 64), None, OutputKind.LOGITS),
        ("conv3d", Layout.NCDHW, (2, 8, 16, 16), None, OutputKind.LOGITS),
    ],
)
def test_the_spec_is_read_from_the_model_itself(
    zoo_build: ZooBuild, name: str, layout: Layout, shape: tuple, batch: int | None, output: OutputKind
) -> None:
    variants = zoo.load(zoo_build(name))
    for key in variants.records:
        spec = variants.spec(key)
        if variants.records[key].model is None:
            continue
        assert spec is not None, (key, variants.loaded.input_notes)
        # PyTorch variants declare nothing: they take their ONNX sibling's layout and shape.
        assert (spec.layout, spec.shape, spec.output) == (layout, shape, output), key
        if key.format.value == "onnx":
            assert spec.batch == batch


def test_a_model_calibrated_for_0_255_says_so_through_its_input_quantization(zoo_build: ZooBuild) -> None:
    variants = zoo.load(zoo_build("pixels_255"))
    for key in variants.records:
        spec = variants.spec(key)
        assert spec is not None and spec.range == (0.0, 255.0), (key, spec)
        assert "input quantization" in spec.sources["range"]
    assert any("onnx_float: takes pixels in 0..255" in n for n in variants.loaded.input_notes)


def test_declared_inputs_win_field_by_field_page_over_manifest_over_card(
    zoo_build: ZooBuild, models_root: Path
) -> None:
    model = _copy(zoo_build("keras_nhwc"), models_root)
    model.write_card({"input": {"layout": "NHWC", "range": [-1, 1], "mean": [0.5], "std": "wide"}})
    (model.folder / "variants.json").write_text(json.dumps({
        "onnx_float": {"file": model.files["onnx_float"].name, "input": {"range": [0, 255]}, "output": "logits"},
        "onnx_int8": model.files["onnx_int8"].name,
    }))  # fmt: skip
    variants = quantcore.load_model_variants(model.folder)
    float_spec, int8_spec = variants.spec(VariantKey.ONNX_FLOAT), variants.spec(VariantKey.ONNX_INT8)

    assert float_spec.range == (0.0, 255.0) and float_spec.sources["range"] == "variants.json"
    assert int8_spec.range == (-1.0, 1.0) and int8_spec.sources["range"] == "model_card.json (input)"
    # A std that is not a number is named and ignored, and a mean without a std with it.
    assert "model_card.json (input): std ignored (std must be a number or a list of numbers)" in int8_spec.notes
    assert int8_spec.mean is None and "mean and std must be given together: both ignored" in int8_spec.notes

    override = variants.with_input({"*": {"range": [0, 1]}, "onnx_int8": {"mean": [0.5], "std": [0.25]}})
    assert override.spec(VariantKey.ONNX_FLOAT).range == (0.0, 1.0)
    assert override.spec(VariantKey.ONNX_INT8).mean == (0.5,) and override.spec(VariantKey.ONNX_INT8).std == (0.25,)
    assert override.spec(VariantKey.ONNX_INT8).sources["mean"] == "the page (for onnx_int8)"
    # The cached folder is left as it was; the override only changes what this handle feeds.
    assert quantcore.load_model_variants(model.folder).spec(VariantKey.ONNX_FLOAT).range == (0.0, 255.0)
    with pytest.raises(ValueError, match="input override"):
        variants.with_input({"*": "NHWC"})


# ------------------------------------------------------------- feeding


def test_pixels_become_each_variants_input_range_mean_std_layout_and_dtype() -> None:
    pixels = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 10
    plain = to_model_input(pixels, InputSpec((3, 2, 2)))
    np.testing.assert_array_equal(plain, pixels.astype(np.float32) / np.float32(255))
    wide = to_model_input(pixels, InputSpec((2, 2, 3), layout=Layout.NHWC, range=(0.0, 255.0)))
    np.testing.assert_allclose(wide, pixels.transpose(0, 2, 3, 1).astype(np.float32), rtol=1e-6)
    normalised = to_model_input(pixels, InputSpec((3, 2, 2), range=(-1.0, 1.0), mean=(0.0, 0.5, 1.0), std=(2.0,)))
    expected = (pixels / 255.0 * 2 - 1 - np.array([0.0, 0.5, 1.0]).reshape(1, 3, 1, 1)) / 2.0
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-6)
    raw = to_model_input(pixels, InputSpec((3, 2, 2), dtype="uint8"))
    assert raw.dtype == np.uint8 and np.array_equal(raw, pixels)
    with pytest.raises(ValueError, match="input must be"):
        to_model_input(pixels, InputSpec((1, 2, 2)))


def test_stored_images_of_any_geometry_are_fitted_and_the_note_says_how() -> None:
    grey28 = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    padded, notes = fit_pixels(grey28, InputSpec((3, 32, 32)))
    assert padded.shape == (4, 3, 32, 32) and notes == [
        "grey repeated to 3 channels",
        "28x28 zero-padded by 2 px to 32x32",
    ]
    np.testing.assert_array_equal(padded, datasets.grey_to_rgb32(grey28))  # as the bundled model was trained
    resized, notes = fit_pixels(grey28, InputSpec((3, 224, 224)))
    assert resized.shape == (4, 3, 224, 224) and "28x28 resized to 224x224 (bilinear)" in notes
    colour = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)  # NHWC as stored
    grey, notes = fit_pixels(colour, InputSpec((1, 16, 16)))
    luma = np.rint(colour[..., 0] * 0.299 + colour[..., 1] * 0.587 + colour[..., 2] * 0.114)
    np.testing.assert_array_equal(grey[:, 0], luma.astype(np.uint8))
    assert notes == ["made grey (ITU-R 601 luma)"]
    with pytest.raises(DatasetError, match="not images"):
        fit_pixels(grey28, InputSpec((20,), layout=Layout.NC))


@pytest.mark.parametrize("name", ["keras_nhwc", "softmax", "pixels_255", "grey"])
def test_predicted_probabilities_equal_a_direct_session_run(zoo_build: ZooBuild, models_root: Path, name: str) -> None:
    model = _copy(zoo_build(name), models_root)
    variants = quantcore.load_model_variants(model.folder)
    spec = input_spec(variants)
    pixels = np.random.default_rng(2).integers(0, 256, spec.pixel_shape, dtype=np.uint8)
    prediction = predict_image(variants, pixels, spec, k=3)

    for p in prediction.variants:
        if p.variant.format.value != "onnx":
            continue
        own = variant_spec(variants, p.variant)
        # The direct feed: pixels in the range the model takes, in its own layout.
        x = pixels[None].astype(np.float32) / 255 * (own.range[1] - own.range[0]) + own.range[0]
        x = x.transpose(0, 2, 3, 1) if own.layout is Layout.NHWC else x
        out = _direct(model.files[str(p.variant)], np.ascontiguousarray(x, dtype=np.float32))[0]
        expected = (
            out if own.output is OutputKind.PROBABILITIES else np.exp(out - out.max()) / np.exp(out - out.max()).sum()
        )
        for score in p.top:
            assert score.probability == pytest.approx(float(expected[score.index]), abs=1e-5), (p.variant, name)


def test_a_fixed_batch_224_model_runs_every_view_in_batches_of_one(zoo_build: ZooBuild, models_root: Path) -> None:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    model = _copy(zoo_build("fixed_batch"), models_root)
    pixels = np.random.default_rng(3).integers(0, 256, (6, 3, 224, 224), dtype=np.uint8)
    labels = _write_pixels(model.folder, pixels)
    variants = quantcore.load_model_variants(model.folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    outputs = variant_logits(variants, samples, spec)
    x = to_model_input(pixels, spec)
    np.testing.assert_allclose(outputs.logits[VariantKey.ONNX_FLOAT], _direct(model.files["onnx_float"], x, 1),
                               rtol=1e-5, atol=1e-5)  # fmt: skip

    report = layer_drift(variants, images=6, batch_size=4)
    ours = next(d for d in report.variants if d.variant is VariantKey.ONNX_INT8)
    assert not [n for n in report.notes if "failed" in n], report.notes
    activations = {}
    for key in ("onnx_float", "onnx_int8"):
        augmented = models_root / f"aug_{key}.onnx"
        modify_model_output_intermediate_tensors(str(model.files[key]), str(augmented))
        activations[key] = collect_activations(
            str(augmented), zoo.FeedReader([{"input": x[i : i + 1]} for i in range(6)])
        )
    errors = compute_activation_error(create_activation_matching(activations["onnx_int8"], activations["onnx_float"]))
    table = quantcore.build_layer_table(variants)
    compared = 0
    for row, db in zip(table.rows, ours.sqnr_db, strict=True):
        layer = row.layers.get(VariantKey.ONNX_INT8)
        if db is None or layer is None:
            continue
        tap = layer.tap.removesuffix("_DequantizeLinear_Output").removesuffix("_QuantizeLinear_Output")
        match = next((e for name, e in errors.items() if name in (tap, layer.tap)), None)
        if match is not None and "xmodel_err" in match:
            assert db == pytest.approx(match["xmodel_err"], abs=0.1), row.label
            compared += 1
    assert compared > 0
    accuracy = score_accuracy(variants, samples, spec)
    for score in accuracy.scores:
        direct = np.argmax(outputs.logits[score.variant], axis=1)
        assert score.accuracy == pytest.approx(float(np.mean(direct == labels)))


def test_a_model_taking_features_is_fed_float_samples_as_they_are(zoo_build: ZooBuild, models_root: Path) -> None:
    model = _copy(zoo_build("mlp"), models_root)
    features = model.inputs(30, seed=4)
    labels = _write_pixels(model.folder, features.astype(np.float32), classes=int(_direct(model.files["onnx_float"],
                           features[:1]).shape[1]))  # fmt: skip
    variants = quantcore.load_model_variants(model.folder)
    spec = input_spec(variants)
    samples, notes = folder_samples(variants, spec)
    assert samples is not None and samples.description == "samples.npz (30 samples)", notes
    result = score_accuracy(variants, samples, spec)
    direct = _direct(model.files["onnx_int8"], features.astype(np.float32))
    score = next(s for s in result.scores if s.variant is VariantKey.ONNX_INT8)
    assert score.accuracy == pytest.approx(float(np.mean(np.argmax(direct, axis=1) == labels)))
    # Images cannot feed it: refused before anything runs, saying why.
    datasets.save_samples(model.folder / "samples.npz", LabelledImages(np.zeros((3, 28, 28), np.uint8),
                                                                      np.zeros(3, np.int64), ("a",)))  # fmt: skip
    variants = quantcore.load_model_variants(model.folder)
    samples, notes = folder_samples(variants, input_spec(variants))
    assert samples is None and notes == ["samples.npz holds images; the model takes NC input [20]"]
    with pytest.raises(DatasetError, match="an image test set cannot feed it"):
        load_test_set(str(FASHION_MNIST_DIR), input_spec(variants))


def test_fashion_mnist_fits_a_224_colour_model_and_a_28_grey_one(zoo_build: ZooBuild) -> None:
    big = load_test_set(str(FASHION_MNIST_DIR), input_spec(zoo.load(zoo_build("fixed_batch"))))
    assert len(big) == 10_000 and big.notes == ("grey repeated to 3 channels", "28x28 resized to 224x224 (bilinear)")
    assert big.pixels(0, 2).shape == (2, 3, 224, 224)  # converted a batch at a time, never all at once
    small = load_test_set(str(FASHION_MNIST_DIR), input_spec(zoo.load(zoo_build("grey"))))
    assert small.notes == () and small.pixels(0, 1).shape == (1, 1, 28, 28)


def test_a_wrong_layout_fails_in_the_runtimes_words_with_the_fix(zoo_build: ZooBuild, models_root: Path) -> None:
    import onnx

    model = _copy(zoo_build("keras_nhwc"), models_root)
    # A graph that leaves its sizes open, and a card that declares the wrong layout for it.
    graph = onnx.load(str(model.files["onnx_float"]))
    for axis, name in zip(graph.graph.input[0].type.tensor_type.shape.dim[1:], "hwc", strict=True):
        axis.dim_param = name
    onnx.save(graph, str(model.files["onnx_float"]))
    model.write_card({"input": {"layout": "NCHW", "shape": [3, 32, 32]}})
    _write_pixels(model.folder, np.zeros((4, 3, 32, 32), np.uint8))
    variants = quantcore.load_model_variants(model.folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    outputs = variant_logits(variants, samples, spec)

    note = next(n for n in outputs.notes if n.startswith("onnx_float:"))
    # onnxruntime's own message, whole on one line, and what to do about it.
    assert "Input channels C is not equal to kernel channels * group. C: 32 kernel channels: 3" in note
    assert "check its layout (NCHW or NHWC)" in note and str(models_root) not in note


def test_per_layer_captures_fit_the_activation_budget(zoo_build: ZooBuild, models_root: Path) -> None:
    model = _copy(zoo_build("batchnorm_float"), models_root)
    _write_pixels(model.folder, np.random.default_rng(5).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8))
    variants = quantcore.load_model_variants(model.folder)
    roomy = layer_drift(variants, images=12, batch_size=12)
    before = settings.current()
    try:
        settings.configure(max_activation_bytes=200_000)
        tight = layer_drift(variants, images=12, batch_size=12)
    finally:
        settings.configure(**before.__dict__)
    assert roomy.batch_size == 12 and tight.batch_size < 12
    assert any("QP_MAX_ACTIVATION_MB" in n for n in tight.notes)
    for a, b in zip(roomy.variants, tight.variants, strict=True):
        as_float = [np.nan if v is None else v for v in a.sqnr_db], [np.nan if v is None else v for v in b.sqnr_db]
        np.testing.assert_allclose(*as_float, rtol=1e-4)
