"""Accuracy & speed: figures equal a direct computation, speeds are measured, advice follows them, data is confined."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest

import quantcore
from quantcore.data import datasets
from quantcore.data.test_sets import find_test_sets
from quantcore.errors import DatasetError, PathNotAllowedError
from quantcore.evaluate.inputs import folder_samples, input_spec, load_test_set
from quantcore.evaluate.metrics import per_class_accuracy
from quantcore.evaluate.scorecard import build_scorecard, score_accuracy
from quantcore.evaluate.speed import measure_speeds, speed_advice
from quantcore.load import VariantKey, results_cache
from quantcore.report import figures, tables
from tests.test_predictions import build_flip_folder, direct_logits, gemm_model, stripe_weights, write_samples

FLOAT, INT8, UINT8 = VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8
PT_FLOAT, PT_INT8 = VariantKey.PYTORCH_FLOAT, VariantKey.PYTORCH_INT8


def _direct_per_class(predicted: np.ndarray, labels: np.ndarray) -> list[float | None]:
    out: list[float | None] = []
    for c in range(10):
        members = [i for i in range(len(labels)) if labels[i] == c]
        out.append(sum(predicted[i] == c for i in members) / len(members) if members else None)
    return out


def test_accuracy_equals_a_direct_computation_over_samples_npz(variant_folder: Path) -> None:
    data = write_samples(variant_folder, count=120)
    variants = quantcore.load_model_variants(variant_folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    card = build_scorecard(variants, samples, spec, runs=1)

    inputs = datasets.preprocess(data.images)
    predicted = {str(k): np.argmax(direct_logits(variant_folder, str(k), inputs), axis=1) for k in VariantKey}
    rows = {r["variant"]: r for r in tables.score_rows(card)}
    assert set(rows) == {str(k) for k in VariantKey} and card.images == 120
    assert rows["onnx_float"]["accuracy (%)"] == 60.0  # the labels were made to be 60 % the float model's answers
    for score in card.scores:
        mine = predicted[str(score.variant)]
        assert score.correct == int(np.sum(mine == data.labels)), score.variant
        assert score.accuracy == pytest.approx(np.mean(mine == data.labels)), score.variant
        assert list(score.per_class) == pytest.approx(_direct_per_class(mine, data.labels)), score.variant
        ref = {"onnx_float": "pytorch_float", "pytorch_float": None}.get(str(score.variant), score.reference)
        assert (str(score.reference) if score.reference else None) == (str(ref) if ref else None)
        if score.reference is not None:
            assert score.agreement == pytest.approx(np.mean(mine == predicted[str(score.reference)]))
        assert score.bytes == (variant_folder / score.file).stat().st_size
    counts = np.bincount(data.labels, minlength=10)
    assert [r["images"] for r in tables.per_class_rows(card)] == list(counts)
    assert [r["class"] for r in tables.per_class_rows(card)] == list(datasets.FASHION_MNIST_LABELS)


def test_speeds_are_measured_for_every_variant_and_batch_size(variant_folder: Path) -> None:
    write_samples(variant_folder, count=64)
    variants = quantcore.load_model_variants(variant_folder)
    steps: list[float] = []
    speeds = measure_speeds(variants, input_spec(variants), runs=1, progress=lambda f, _: steps.append(f))

    assert set(speeds.images_per_second) == set(VariantKey)
    for key, by_batch in speeds.images_per_second.items():
        assert set(by_batch) == {1, 64}, key
        assert all(np.isfinite(v) and v > 0 for v in by_batch.values()), key
        assert all(by_batch[b] >= speeds.median_images_per_second[key][b] for b in (1, 64)), key  # fastest run
    assert speeds.runs == 1 and speeds.source == "the first 64 of samples.npz"
    assert steps == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="runs must be"):
        measure_speeds(variants, input_spec(variants), runs=0)


def test_a_slow_s8s8_variant_is_called_out_from_its_measured_speed(models_root: Path) -> None:
    # The int8 graph does ~100x the float graph's work for the same answers: slower whatever the load.
    folder = build_flip_folder(models_root / "slow", heavy_int8=True)
    variants = quantcore.load_model_variants(folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    card = build_scorecard(variants, samples, spec, runs=5)

    speeds = {s.variant: s.images_per_second for s in card.scores}
    assert all(speeds[INT8][b] < speeds[FLOAT][b] for b in (1, 64))
    advice = card.advice[0]
    assert advice.variant is INT8 and advice.finding.startswith("onnx_int8 is slower than onnx_float at batch 1 (")
    assert "int8 activations (S8S8)" in advice.suggestion and "U8S8" in advice.suggestion
    assert f"onnx_uint8 runs at {speeds[UINT8][64]:,.0f} images/s here" in advice.suggestion
    # The U8S8 graph is float's plus a QDQ pair: whether it is called slower follows its own measurement.
    uint8_slower = any(speeds[UINT8][b] < 0.95 * speeds[FLOAT][b] for b in (1, 64))
    assert len(card.advice) == 1 + uint8_slower
    assert not uint8_slower or card.advice[1].finding.startswith("onnx_uint8 is slower than onnx_float")
    rows = {r["variant"]: r for r in tables.score_rows(card)}
    assert rows["onnx_int8"]["× float @64"] == round(speeds[INT8][64] / speeds[FLOAT][64], 2) < 0.5
    assert rows["onnx_int8"]["accuracy (%)"] == 95.0 and rows["onnx_float"]["accuracy (%)"] == 100.0
    assert tables.per_class_rows(card)[7]["onnx_int8"] == 50.0  # the flipped sample is one of class 7's two
    figure = figures.scorecard_figure(card)
    assert [t.name for t in figure.data] == ["accuracy", "agreement with float", "batch 1", "batch 64"]
    assert list(figure.data[3].y) == [speeds[k][64] for k in (FLOAT, INT8, UINT8)]


def test_advice_names_the_faster_scheme_only_past_the_noise_margin() -> None:
    types = {INT8: "int8", UINT8: "uint8"}
    close = speed_advice({FLOAT: {64: 1000.0}, INT8: {64: 970.0}}, types)
    s8s8 = speed_advice({FLOAT: {1: 900.0, 64: 1000.0}, INT8: {1: 1000.0, 64: 500.0}}, types)
    torch_int8 = speed_advice({PT_FLOAT: {64: 800.0}, PT_INT8: {64: 400.0}, UINT8: {64: 1600.0}, FLOAT: {64: 1000.0}})
    nothing_faster = speed_advice({PT_FLOAT: {1: 800.0}, PT_INT8: {1: 400.0}})

    assert close == []
    assert [str(a) for a in s8s8] == [
        "onnx_int8 is slower than onnx_float at batch 64 (500 vs 1,000 images/s). Its int8 activations (S8S8) run "
        "slowly in onnxruntime on x86 (it can leave convs in float): quantize with uint8 activations instead — U8S8, "
        "activation_type=QuantType.QUInt8."
    ]
    assert torch_int8[0].finding == "pytorch_int8 is slower than pytorch_float at batch 64 (400 vs 800 images/s)."
    assert torch_int8[0].suggestion == (
        "The fastest variant measured at batch 64 is onnx_uint8 (1,600 images/s): consider its scheme."
    )
    assert nothing_faster[0].suggestion == "No quantized variant beats pytorch_float at batch 1 on this machine."


def test_per_class_accuracy_of_a_hand_counted_case() -> None:
    logits = np.eye(3)[[0, 0, 1, 2, 2]]
    labels = np.array([0, 1, 1, 2, 0])
    assert per_class_accuracy(logits, labels, 4) == (0.5, 0.5, 1.0, None)


def test_a_broken_variant_is_skipped_with_a_note(models_root: Path) -> None:
    folder = build_flip_folder(models_root / "broken")
    (folder / "flip_uint8.onnx").write_bytes(b"\x00garbage")
    variants = quantcore.load_model_variants(folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    card = build_scorecard(variants, samples, spec, runs=2)

    assert [str(s.variant) for s in card.scores] == ["onnx_float", "onnx_int8"]
    assert any(n.startswith("onnx_uint8: error (") for n in card.notes)
    assert "pytorch_int8: missing — skipped" in card.notes


def test_speeds_are_cached_per_folder_and_runs(models_root: Path) -> None:
    from quantcore.evaluate.speed import cached_speeds

    variants = quantcore.load_model_variants(build_flip_folder(models_root / "cached"))
    spec = input_spec(variants)
    first, hit_first = cached_speeds(variants, spec, runs=2)
    again, hit_again = cached_speeds(variants, spec, runs=2)
    other, hit_other = cached_speeds(variants, spec, runs=3)

    assert (hit_first, hit_again, hit_other) == (False, True, False)
    assert again is first and other.runs == 3


# -------------------------------------------------------------------- test sets


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion_test_set(folder: Path, count: int = 30, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A small Fashion-MNIST-layout test split (gzipped IDX); returns its 28x28 images and labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_a_full_test_set_in_an_allowed_root_is_scored_like_a_direct_computation(variant_folder: Path) -> None:
    images, labels = write_fashion_test_set(variant_folder.parent / "data" / "fashion")
    variants = quantcore.load_model_variants(variant_folder)
    spec = input_spec(variants)
    test_set = load_test_set("data/fashion", spec)  # relative: to the models root
    card = score_accuracy(variants, test_set, spec)

    assert variant_folder.parent / "data" / "fashion" in find_test_sets()
    assert test_set.description.startswith("Fashion-MNIST (gzipped IDX) test split, 30 images")
    inputs = datasets.preprocess(datasets.grey_to_rgb32(images))
    for score in card.scores:
        predicted = np.argmax(direct_logits(variant_folder, str(score.variant), inputs), axis=1)
        assert score.correct == int(np.sum(predicted == labels)), score.variant


def test_test_sets_outside_the_allowed_roots_are_refused(models_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    write_fashion_test_set(outside)
    os.symlink(outside, models_root / "link")
    spec = input_spec(quantcore.load_model_variants(build_flip_folder(models_root / "m")))

    for name in (str(outside), "link", "../elsewhere", "/etc", "m/\x00"):
        with pytest.raises(PathNotAllowedError):
            load_test_set(name, spec)
    with pytest.raises(DatasetError, match="no test set in that folder"):
        load_test_set("m", spec)
    assert not any(found.is_relative_to(tmp_path / "elsewhere") or found.name == "link" for found in find_test_sets())


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_hostile_cifar_pickle_is_refused_and_a_real_one_read(models_root: Path, tmp_path: Path) -> None:
    spec = input_spec(quantcore.load_model_variants(build_flip_folder(models_root / "m")))
    hostile = models_root / "hostile"
    hostile.mkdir()
    (hostile / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}, protocol=2))
    (hostile / "test_batch").write_bytes(pickle.dumps(_Exploit(), protocol=2))
    real = models_root / "cifar-10-batches-py"
    real.mkdir()
    names = [f"c{i}".encode() for i in range(10)]
    (real / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    data = np.random.default_rng(0).integers(0, 256, (12, 3072), dtype=np.uint8)
    (real / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [*range(10), 0, 1]}, protocol=2))

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(DatasetError, match=r"refusing to load (posix|os)\.system"):
            load_test_set("hostile", spec)
    finally:
        os.chdir(cwd)
    loaded = load_test_set(str(real), spec)

    assert not (tmp_path / "pwned").exists()
    assert len(loaded) == 12 and loaded.label_names == tuple(n.decode() for n in names)
    np.testing.assert_array_equal(loaded.images.reshape(12, -1), data)


def test_the_scorecard_handler_answers_errors_and_json(models_root: Path) -> None:
    from gradio_app.common import api
    from gradio_app.tabs.scorecard import scorecard_api

    build_flip_folder(models_root / "flip")
    result = api(scorecard_api)("flip", "", 1)
    cached = results_cache.cache_info().hits
    again = api(scorecard_api)("flip", "", 1)

    assert [r["variant"] for r in result["table"]] == ["onnx_float", "onnx_int8", "onnx_uint8"]
    assert result["source"] == "samples.npz (20 images)" and len(result["per_class"]) == 10
    assert result["speed"]["runs"] == 1 and result["speed"]["batch_sizes"] == [1, 64]
    assert set(result["speed"]["median_images_per_second"]["onnx_int8"]) == {"@1", "@64"}
    assert again == result and results_cache.cache_info().hits >= cached + 4  # three variants' logits and the speeds
    assert "pytorch_float: missing — skipped" in result["notes"]
    assert "outside the allowed folders" in api(scorecard_api)("flip", "/etc", 1)["error"]
    assert "runs must be between 1 and 500" in api(scorecard_api)("flip", "", 0)["error"]
    assert "Load a folder" in api(scorecard_api)(None)["error"]


def test_a_graph_with_a_fixed_batch_is_timed_at_that_batch_only(models_root: Path) -> None:
    folder = models_root / "fixed"
    folder.mkdir()
    onnx.save(gemm_model(stripe_weights(), batch=1), folder / "fixed.onnx")
    variants = quantcore.load_model_variants(folder)
    speeds = measure_speeds(variants, input_spec(variants), runs=2)

    assert set(speeds.images_per_second[FLOAT]) == {1}
    assert "onnx_float: its graph fixes batch 1; not timed at batch 64" in speeds.notes
    assert speeds.source == "generated uniform random pixels (64, seed 0)"


def test_the_bundled_models_reproduce_their_cards_sample_figures() -> None:
    import json

    from quantcore.evaluate.flips import find_flips
    from quantcore.evaluate.kernels import graph_logits
    from quantcore.evaluate.predictions import variant_logits
    from tests.app_server import require_bundled_models

    folder = require_bundled_models()
    card = json.loads((folder / "model_card.json").read_text())
    variants = quantcore.load_model_variants(folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    result = score_accuracy(variants, samples, spec)
    flips = find_flips(variant_logits(variants, samples, spec), samples).counts()

    assert spec.grey and spec.pad == 2 and list(spec.class_names) == card["labels"]
    checks = {str(c.variant): c for c in result.kernel_checks}
    for score in result.scores:
        key, expected = str(score.variant), card["variants"][str(score.variant)]["samples"]["correct"]
        if score.correct != expected:
            # Only a CPU whose integer kernels differ from the graph may differ from the card, and the page says so.
            check = checks[key]
            assert (check.kernel_correct, check.graph_correct) == (score.correct, expected), key
            assert check.note() in result.notes
    logits = variant_logits(variants, samples, spec).logits
    for key in ("onnx_int8", "onnx_uint8"):  # the card's agreement is with onnx_float, as ours is for ONNX variants
        expected = round((1 - card["variants"][key]["samples"]["agreement_with_float"]) * card["samples"]["images"])
        if key in checks and checks[key].changed:  # as above: the graph's own arithmetic reproduces the card
            as_written = graph_logits(variants, VariantKey(key), samples).argmax(1)
            assert int(np.sum(as_written != logits[FLOAT].argmax(1))) == expected, key
        else:
            assert flips[key] == expected, key
