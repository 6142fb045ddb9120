"""Predictions: top-k per variant against direct runs, flips constructed on purpose, uploads decoded safely."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import quantcore
from quantcore import settings
from quantcore.backends import predictor_for
from quantcore.data import datasets
from quantcore.errors import InvalidImageError
from quantcore.evaluate.flips import find_flips
from quantcore.evaluate.images import image_to_pixels
from quantcore.evaluate.inputs import (
    InputSpec,
    OutputKind,
    SampleSet,
    fixed_batch_size,
    folder_samples,
    input_spec,
    to_model_input,
)
from quantcore.evaluate.predictions import predict_image, probabilities, variant_logits
from quantcore.load import VariantKey, results_cache
from quantcore.report import tables

CLASSES = 10
PIXELS = 3 * 32 * 32
FLIP_SAMPLE, FLIP_CLASS = 7, 9
# The one pixel only the flip sample lights up: channel 2, bottom-right corner.
TRIGGER = 2 * 1024 + 31 * 32 + 31
LABELS = [f"item {c}" for c in range(CLASSES)]
FASHION_PREPROCESSING = {**datasets.PREPROCESSING, "pixels": "28x28 grey zero-padded by 2 px on every side to 32x32"}


# ------------------------------------------------------------- constructed models


def stripe_weights() -> np.ndarray:
    """(3072, 10) weights reading class c from a bright row c of channel 0: 32 lit pixels give logit 32."""
    weights = np.zeros((PIXELS, CLASSES), np.float32)
    for c in range(CLASSES):
        weights[c * 32 : (c + 1) * 32, c] = 1.0
    return weights


def gemm_model(
    weights: np.ndarray,
    *,
    activations: str | None = None,
    heavy: bool = False,
    batch: int | None = None,
    metadata: dict[str, object] | None = None,
) -> onnx.ModelProto:
    """A linear classifier over the flattened image, optionally behind an int8/uint8 QDQ pair on its input,
    optionally with a large MatMul whose result is scaled to nothing (same answers, far slower)."""
    nodes = []
    inits = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "B")]
    x = "input"
    if activations is not None:
        zero = np.array(-128 if activations == "int8" else 0, np.int8 if activations == "int8" else np.uint8)
        inits += [numpy_helper.from_array(np.array(1 / 255, np.float32), "s"), numpy_helper.from_array(zero, "zp")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"])]  # fmt: skip
        x = "dq"
    nodes += [helper.make_node("Flatten", [x], ["flat"], axis=1), helper.make_node("Gemm", ["flat", "W", "B"], ["g"])]
    if heavy:
        big = np.random.default_rng(0).random((PIXELS, 2048), dtype=np.float32)
        inits += [numpy_helper.from_array(big, "Big"), numpy_helper.from_array(np.array(1e-30, np.float32), "tiny"),
                  numpy_helper.from_array(np.array([1], np.int64), "axis")]  # fmt: skip
        nodes += [helper.make_node("MatMul", ["flat", "Big"], ["h"]),
                  helper.make_node("ReduceSum", ["h", "axis"], ["hs"], keepdims=1),
                  helper.make_node("Mul", ["hs", "tiny"], ["hz"]),
                  helper.make_node("Add", ["g", "hz"], ["logits"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("Identity", ["g"], ["logits"]))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch or "N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch or "N", CLASSES])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    return model


def stripe_samples(count: int = 20) -> datasets.LabelledImages:
    """Sample i has label i % 10 drawn as a bright row of channel 0; the flip sample also lights the trigger."""
    images = np.zeros((count, 3, 32, 32), np.uint8)
    labels = np.arange(count) % CLASSES
    for i, label in enumerate(labels):
        images[i, 0, label, :] = 255
    images[FLIP_SAMPLE].reshape(-1)[TRIGGER] = 255
    return datasets.LabelledImages(images, labels.astype(np.int64), tuple(LABELS))


def build_flip_folder(folder: Path, *, heavy_int8: bool = False) -> Path:
    """``flip.onnx`` (float) and ``flip_int8.onnx`` (S8S8 QDQ input) that differ only on the trigger pixel,
    plus ``flip_uint8.onnx`` (U8S8) that agrees with float everywhere, and ``samples.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"labels": LABELS, "preprocessing": FASHION_PREPROCESSING}
    weights = stripe_weights()
    flipped = weights.copy()
    flipped[TRIGGER, FLIP_CLASS] = 100.0  # outweighs the 32 of the label's row
    onnx.save(gemm_model(weights, metadata=metadata), folder / "flip.onnx")
    onnx.save(gemm_model(flipped, activations="int8", heavy=heavy_int8, metadata=metadata), folder / "flip_int8.onnx")
    onnx.save(gemm_model(weights, activations="uint8", metadata=metadata), folder / "flip_uint8.onnx")
    datasets.save_samples(folder / "samples.npz", stripe_samples())
    return folder


@pytest.fixture
def flip_folder(models_root: Path) -> Path:
    return build_flip_folder(models_root / "flip")


def write_samples(folder: Path, count: int = 64, seed: int = 0) -> datasets.LabelledImages:
    """Random images with labels: the float ONNX model's answers for the first 60 %, shifted by one after."""
    images = np.random.default_rng(seed).integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    session = ort.InferenceSession(str(folder / "tiny.onnx"), providers=["CPUExecutionProvider"])
    predicted = np.argmax(session.run(None, {"input": datasets.preprocess(images)})[0], axis=1)
    cut = int(0.6 * count)
    labels = np.concatenate([predicted[:cut], (predicted[cut:] + 1) % CLASSES]).astype(np.int64)
    data = datasets.LabelledImages(images, labels, tuple(datasets.FASHION_MNIST_LABELS))
    datasets.save_samples(folder / "samples.npz", data)
    return data


def direct_logits(folder: Path, key: str, inputs: np.ndarray) -> np.ndarray:
    """Logits straight from onnxruntime or the torch module, without quantcore's evaluation path."""
    model = quantcore.load_model_variants(folder)[key]
    if key.startswith("onnx"):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: inputs})[0]
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


# ------------------------------------------------------------------------- flips


def test_a_flip_constructed_on_purpose_is_listed(flip_folder: Path) -> None:
    variants = quantcore.load_model_variants(flip_folder)
    spec = input_spec(variants)
    samples, notes = folder_samples(variants, spec)
    report = find_flips(variant_logits(variants, samples, spec), samples)

    assert notes == [] and report.images == 20
    onnx_float = VariantKey.ONNX_FLOAT
    assert report.compared == {VariantKey.ONNX_INT8: onnx_float, VariantKey.ONNX_UINT8: onnx_float}
    assert report.counts() == {"onnx_int8": 1, "onnx_uint8": 0}
    assert tables.flip_rows(report) == [{
        "sample": FLIP_SAMPLE, "label": "item 7", "variant": "onnx_int8", "float says": "item 7",
        "variant says": f"item {FLIP_CLASS}", "effect": "now wrong", "reference": "onnx_float",
    }]  # fmt: skip
    assert "pytorch_float: missing — skipped" in report.notes


def test_the_flipped_sample_shows_the_disagreement_side_by_side(flip_folder: Path) -> None:
    variants = quantcore.load_model_variants(flip_folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    flipped = predict_image(variants, samples.images[FLIP_SAMPLE], spec, k=2, label=FLIP_SAMPLE % 10)
    steady = predict_image(variants, samples.images[3], spec, k=2, label=3)

    by_key = {str(p.variant): p for p in flipped.variants}
    assert [s.index for s in by_key["onnx_float"].top] == [7, 0]  # ties after the winner break by class order
    assert by_key["onnx_int8"].top[0].index == FLIP_CLASS and by_key["onnx_int8"].agrees is False
    assert by_key["onnx_uint8"].agrees is True and by_key["onnx_float"].agrees is None
    assert flipped.label_name == "item 7"
    assert tables.agreement_row(flipped)["onnx_int8"] == "✘ FLIPS (vs onnx_float)"
    assert tables.prediction_rows(flipped)[1]["onnx_int8"].startswith(f"item {FLIP_CLASS} ")
    assert all(p.agrees is not False for p in steady.variants)
    # Logit 100 + 32·0 against 32: the softmax says how sure it is.
    expected = np.exp(100) / (np.exp(100) + np.exp(32) + 8)
    assert by_key["onnx_int8"].top[0].probability == pytest.approx(expected)


# ----------------------------------------------------------------- real variants


def test_top_k_of_every_variant_matches_a_direct_run(variant_folder: Path) -> None:
    data = write_samples(variant_folder, count=8)
    variants = quantcore.load_model_variants(variant_folder)
    spec = input_spec(variants)
    result = predict_image(variants, data.images[5], spec, k=4, label=int(data.labels[5]),
                           label_names=data.label_names, source="sample #5")  # fmt: skip

    assert [str(p.variant) for p in result.variants] == [str(k) for k in VariantKey]
    for prediction in result.variants:
        logits = direct_logits(variant_folder, str(prediction.variant), datasets.preprocess(data.images[5:6]))[0]
        expected = np.argsort(-logits, kind="stable")[:4]
        assert [s.index for s in prediction.top] == list(expected), prediction.variant
        softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert [s.probability for s in prediction.top] == pytest.approx(list(softmax[expected]), rel=1e-4)
        assert [s.name for s in prediction.top] == [data.label_names[i] for i in expected]
    refs = {str(p.variant): str(p.reference) for p in result.variants}
    assert refs == {"onnx_float": "pytorch_float", "onnx_int8": "onnx_float", "onnx_uint8": "onnx_float",
                    "pytorch_float": "None", "pytorch_int8": "pytorch_float"}  # fmt: skip
    with pytest.raises(ValueError, match="k must be"):
        predict_image(variants, data.images[0], spec, k=11)
    with pytest.raises(ValueError, match="pixels must be"):
        predict_image(variants, data.images[0, :1], spec)


def test_logits_equal_a_direct_run_and_are_cached_per_variant(variant_folder: Path) -> None:
    data = write_samples(variant_folder, count=40)
    variants = quantcore.load_model_variants(variant_folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    seen: list[float] = []
    first = variant_logits(variants, samples, spec, batch_size=16, progress=lambda f, _: seen.append(f))
    loads = results_cache.cache_info().loads
    again = variant_logits(variants, samples, spec, batch_size=16)

    for key, logits in first.logits.items():
        np.testing.assert_allclose(logits, direct_logits(variant_folder, str(key), datasets.preprocess(data.images)),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        assert again.logits[key] is logits
    assert len(first.logits) == 5 and first.notes == ()
    assert results_cache.cache_info().loads == loads  # nothing ran again
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 5 * 3


def test_a_missing_or_broken_variant_is_skipped_with_a_note(variant_folder: Path) -> None:
    write_samples(variant_folder, count=8)
    (variant_folder / "tiny_uint8.onnx").write_bytes(b"not an onnx file")
    (variant_folder / "tiny_int8.pt").unlink()
    variants = quantcore.load_model_variants(variant_folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    outputs = variant_logits(variants, samples, spec)
    prediction = predict_image(variants, samples.images[0], spec)

    assert set(outputs.logits) == {VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8, VariantKey.PYTORCH_FLOAT}
    assert "pytorch_int8: missing — skipped" in outputs.notes
    assert any(n.startswith("onnx_uint8: error (") and n.endswith("— skipped") for n in outputs.notes)
    assert [str(p.variant) for p in prediction.variants] == ["onnx_float", "onnx_int8", "pytorch_float"]
    assert set(find_flips(outputs, samples).counts()) == {"onnx_int8"}


def test_a_variant_failing_while_running_is_skipped(flip_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import quantcore.evaluate.predictions as predictions

    variants = quantcore.load_model_variants(flip_folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    real = predictions.predictor_for

    def failing(model: object, **kwargs: object) -> object:
        if model is variants["onnx_uint8"]:
            raise RuntimeError("kernel fault")
        return real(model, **kwargs)

    monkeypatch.setattr(predictions, "predictor_for", failing)
    outputs = variant_logits(variants, samples, spec)
    prediction = predict_image(variants, samples.images[0], spec)

    assert set(outputs.logits) == {VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8}
    assert "onnx_uint8: failed while running — kernel fault — skipped" in outputs.notes
    assert "onnx_uint8: failed while running — kernel fault — skipped" in prediction.notes


def test_a_graph_with_a_fixed_batch_of_one_still_runs(models_root: Path) -> None:
    folder = models_root / "fixed"
    folder.mkdir()
    onnx.save(gemm_model(stripe_weights(), batch=1), folder / "fixed.onnx")
    datasets.save_samples(folder / "samples.npz", stripe_samples())
    variants = quantcore.load_model_variants(folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    outputs = variant_logits(variants, samples, spec)

    assert fixed_batch_size(variants, VariantKey.ONNX_FLOAT) == 1
    assert list(np.argmax(outputs.logits[VariantKey.ONNX_FLOAT], axis=1)) == list(samples.labels)


def test_predictors_are_built_once_per_model(flip_folder: Path) -> None:
    variants = quantcore.load_model_variants(flip_folder)
    assert predictor_for(variants["onnx_float"]) is predictor_for(variants["onnx_float"])
    assert predictor_for(variants["onnx_float"]) is not predictor_for(variants["onnx_int8"])


def test_probabilities_follow_the_kind_of_output_never_a_second_softmax() -> None:
    assert probabilities(np.array([[0.0, np.log(3.0)]])) == pytest.approx(np.array([[0.25, 0.75]]))
    # Logits that happen to look like probabilities are still logits.
    assert probabilities(np.array([[0.2, 0.8]])) == pytest.approx(np.exp([[0.2, 0.8]]) / np.exp([[0.2, 0.8]]).sum())
    # A quantized softmax need not sum to 1: shown as the model gave it.
    np.testing.assert_allclose(probabilities(np.array([[0.0824, 0.9]]), OutputKind.PROBABILITIES), [[0.0824, 0.9]])
    np.testing.assert_allclose(probabilities(np.log([[0.25, 0.75]]), OutputKind.LOG_PROBABILITIES), [[0.25, 0.75]])


# ----------------------------------------------------------------------- inputs


def test_input_spec_reads_labels_and_pixels_from_onnx_metadata(flip_folder: Path) -> None:
    spec = input_spec(quantcore.load_model_variants(flip_folder))

    assert spec.shape == (3, 32, 32) and spec.grey and spec.pad == 2 and spec.inner_size == (28, 28)
    assert spec.class_names == tuple(LABELS) and spec.notes == ()


def test_input_spec_falls_back_to_the_model_card(models_root: Path) -> None:
    folder = models_root / "carded"
    folder.mkdir()
    onnx.save(gemm_model(stripe_weights()), folder / "carded.onnx")
    card = {"labels": ["a", "b"], "preprocessing": {**datasets.PREPROCESSING, "mean": [0.5] * 3, "std": [0.25] * 3}}
    (folder / "model_card.json").write_text(json.dumps(card))
    spec = input_spec(quantcore.load_model_variants(folder))
    pixels = np.full((1, 3, 32, 32), 255, np.uint8)

    assert spec.class_names == ("a", "b") and not spec.grey
    assert spec.names(10)[9] == "class 9"  # two names do not fit ten outputs
    np.testing.assert_allclose(to_model_input(pixels, spec), (1.0 - 0.5) / 0.25)


def test_unreadable_samples_leave_a_note_and_uploads_still_work(flip_folder: Path) -> None:
    from gradio_app.common import api
    from gradio_app.tabs.predictions import flips_api, predict_api

    (flip_folder / "samples.npz").write_bytes(b"not an npz")
    variants = quantcore.load_model_variants(flip_folder)
    samples, notes = folder_samples(variants, input_spec(variants))

    assert samples is None and notes[0].startswith("samples.npz unreadable")
    assert "upload an image" in api(predict_api)("flip", 0)["error"]
    assert "no samples to look for flips in" in api(flips_api)("flip")["error"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


GREY_PADDED = InputSpec((3, 32, 32), grey=True, pad=2)
RGB = InputSpec((3, 32, 32))


def test_a_dark_on_light_photo_becomes_light_on_dark_inside_a_zero_border() -> None:
    photo = Image.new("RGB", (200, 100), (250, 250, 250))
    photo.paste((10, 10, 10), (80, 20, 120, 80))  # a dark item on a light background
    pixels, notes = image_to_pixels(_png(photo), GREY_PADDED)

    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    assert (pixels[0] == pixels[1]).all() and (pixels[1] == pixels[2]).all()  # grey, repeated
    assert not pixels[:, :2].any() and not pixels[:, :, :2].any() and not pixels[:, -2:].any()  # zero border
    assert pixels[0, 16, 16] > 230 and pixels[0, 16, 4] < 20  # the item is bright, its background dark
    assert any("inverted" in n for n in notes)
    kept, _ = image_to_pixels(_png(photo), GREY_PADDED, invert=False)
    assert kept[0, 16, 16] < 20


def test_colour_uploads_are_centre_cropped_and_transparency_is_white() -> None:
    photo = Image.new("RGBA", (64, 32), (0, 0, 0, 0))
    photo.paste((255, 0, 0, 255), (16, 0, 48, 32))  # an opaque red square in the middle
    pixels, _ = image_to_pixels(_png(photo), RGB)

    assert tuple(pixels[:, 16, 16]) == (255, 0, 0)
    assert tuple(pixels[:, 16, 0]) == (255, 0, 0)  # the transparent sides were cropped away
    wide = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert tuple(image_to_pixels(_png(wide), RGB)[0][:, 0, 0]) == (255, 255, 255)


def test_hostile_uploads_are_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidImageError, match="not an image"):
        image_to_pixels(b"<svg xmlns='http://www.w3.org/2000/svg'/>", RGB)
    with pytest.raises(InvalidImageError, match="cannot be read"):
        image_to_pixels(tmp_path / "absent.png", RGB)
    # A decompression bomb: a few KB of PNG claiming 8000x8000 pixels.
    bomb = _png(Image.new("1", (8000, 8000)))
    assert len(bomb) < 100_000
    with pytest.raises(InvalidImageError, match=r"over 40,000,000 pixels"):
        image_to_pixels(bomb, RGB)
    settings.configure(max_image_bytes=1000)
    with pytest.raises(InvalidImageError, match="over 1,000 bytes"):
        image_to_pixels(_png(Image.effect_noise((64, 64), 50)), RGB)


def test_an_upload_through_the_handler_is_predicted_by_every_variant(flip_folder: Path, tmp_path: Path) -> None:
    from gradio_app.common import api
    from gradio_app.tabs.predictions import predict_api

    predict_api = api(predict_api)  # as the endpoint serves it: errors become {"error": why}
    photo = tmp_path / "item.png"
    image = Image.new("L", (56, 56), 0)
    image.paste(255, (0, 14, 56, 16))  # a bright row that lands on row 9 of the 28x28 inside
    image.save(photo)
    result = predict_api("flip", None, str(photo), 3, "no")
    sample = predict_api("flip", FLIP_SAMPLE, None, 2, "auto")

    assert result["source"] == "uploaded image" and set(result["variants"]) == {"onnx_float", "onnx_int8", "onnx_uint8"}
    assert result["variants"]["onnx_float"]["top_k"][0]["name"] == "item 9"
    assert result["notes"][0] == "uploaded PNG 56x56"
    assert sample["variants"]["onnx_int8"]["agrees_with_float"] is False and sample["label_name"] == "item 7"
    assert "must be between 0 and 19" in predict_api("flip", 20)["error"]
    assert "k must be between 1 and 10" in predict_api("flip", 0, None, 0)["error"]
    assert "is not allowed in a path" in predict_api({"folder": "../.."})["error"]


def test_samples_set_is_keyed_by_its_file(flip_folder: Path) -> None:
    variants = quantcore.load_model_variants(flip_folder)
    spec = input_spec(variants)
    first, _ = folder_samples(variants, spec)
    datasets.save_samples(flip_folder / "samples.npz", stripe_samples(30))
    second, _ = folder_samples(variants, spec)

    assert isinstance(first, SampleSet) and len(first) == 20 and len(second) == 30
    assert first.key != second.key
