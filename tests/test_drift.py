"""Per-layer SQNR: the formula, its streaming, and the run over every variant."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import quantcore
from quantcore.evaluate.batches import InputBatches, generated_inputs, sample_inputs
from quantcore.evaluate.inputs import InputSpec, input_spec, to_model_input
from quantcore.inspect.drift import layer_drift
from quantcore.inspect.layer_table import build_layer_table
from quantcore.inspect.sqnr import SqnrAccumulator, sqnr_db
from quantcore.load import VariantKey
from quantcore.report import figures, tables

QUANTIZED = ("onnx_int8", "onnx_uint8", "pytorch_int8")


SPEC = InputSpec((3, 32, 32))


def _generated(count: int, seed: int = 0) -> InputBatches:
    return generated_inputs(SPEC, count, seed=seed)


def test_sqnr_of_a_hand_computed_case() -> None:
    # Σx² = 9 + 16 = 25, Σ(x − y)² = 0 + 1 = 1  ->  10·log10(25) dB.
    assert sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25))
    # Noise at a tenth of the signal's amplitude everywhere is 20 dB.
    x = np.linspace(-1, 1, 101)
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0)
    assert sqnr_db(x, x) == math.inf
    with pytest.raises(ValueError):
        sqnr_db(np.zeros(3), np.zeros(4))


def test_sqnr_agrees_with_onnxruntimes_own() -> None:
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 5, 5)).astype(np.float32)
    y = x + rng.normal(scale=0.03, size=x.shape).astype(np.float32)
    assert sqnr_db(x, y) == pytest.approx(compute_signal_to_quantization_noice_ratio(x, y), abs=1e-4)


def test_streamed_batches_give_the_one_shot_answer() -> None:
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(n, 7)), rng.normal(size=(n, 7))) for n in (1, 5, 32, 3)]
    accumulator = SqnrAccumulator()
    for reference, test in batches:
        accumulator.update(reference, reference + 0.1 * test)
    whole_ref = np.concatenate([r for r, _ in batches])
    whole_test = np.concatenate([r + 0.1 * t for r, t in batches])

    assert accumulator.db == pytest.approx(sqnr_db(whole_ref, whole_test), abs=1e-4)
    assert accumulator.db == pytest.approx(20.0, abs=1.5)
    assert accumulator.elements == whole_ref.size
    assert SqnrAccumulator().db is None


def test_every_quantized_variant_gets_an_sqnr_per_layer(variant_folder: Path) -> None:
    variants = quantcore.load_model_variants(variant_folder)
    seen: list[float] = []
    report = layer_drift(variants, inputs=_generated(48), batch_size=16, include_float=True,
                         progress=lambda fraction, _: seen.append(fraction))  # fmt: skip

    by_variant = {str(d.variant): d for d in report.variants}
    assert set(by_variant) == {*QUANTIZED, "onnx_float"}
    assert report.images == 48 and len(report.layers) == 10
    for key in QUANTIZED:
        drift = by_variant[key]
        assert all(db is not None and 15 < db < 80 for db in drift.sqnr_db), (key, drift.sqnr_db)
        assert drift.worst == int(np.argmin(drift.sqnr_db))
        assert drift.agreement is not None and drift.accuracy is None  # generated inputs carry no labels
    assert by_variant["onnx_int8"].reference is VariantKey.ONNX_FLOAT
    assert by_variant["pytorch_int8"].reference is VariantKey.PYTORCH_FLOAT
    # The float ONNX export against float PyTorch: equal up to float rounding.
    assert min(by_variant["onnx_float"].sqnr_db) > 80
    # One image first measures what a batch of captures costs; then batches of 16 as asked.
    assert seen == pytest.approx([1 / 48, 16 / 48, 32 / 48, 1.0])
    assert tables.drift_worst(report)["pytorch_int8"]["row"] == by_variant["pytorch_int8"].worst


def test_onnx_layer_sqnr_matches_onnxruntimes_qdq_loss_debug(variant_folder: Path, tmp_path: Path) -> None:
    """Our taps on the QDQ graph give the xmodel_err of onnxruntime's own activation matching."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    inputs = _generated(8, seed=3)
    batch = to_model_input(next(inputs.batches(8))[0], SPEC)  # the pixels, as the model takes them

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": batch}])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    activations = {}
    for name in ("tiny.onnx", "tiny_int8.onnx"):
        augmented = tmp_path / f"aug_{name}"
        modify_model_output_intermediate_tensors(str(variant_folder / name), str(augmented))
        activations[name] = collect_activations(str(augmented), Reader())
    matching = create_activation_matching(activations["tiny_int8.onnx"], activations["tiny.onnx"])
    errors = compute_activation_error(matching)
    variants = quantcore.load_model_variants(variant_folder)
    table = build_layer_table(variants)
    report = layer_drift(variants, table=table, inputs=inputs, batch_size=8)
    ours = next(d for d in report.variants if d.variant is VariantKey.ONNX_INT8)

    compared = 0
    for row in table.rows:
        name = row.layers[VariantKey.ONNX_FLOAT].tap  # float tensor name = the QDQ activation's name
        if name in errors and "xmodel_err" in errors[name]:
            assert ours.sqnr_db[row.index] == pytest.approx(errors[name]["xmodel_err"], abs=0.05), name
            compared += 1
    assert compared >= 8


def test_batch_size_does_not_change_the_answer(variant_folder: Path) -> None:
    variants = quantcore.load_model_variants(variant_folder)
    small = layer_drift(variants, inputs=_generated(24), batch_size=5)
    large = layer_drift(variants, inputs=_generated(24), batch_size=24)

    for a, b in zip(small.variants, large.variants, strict=True):
        assert a.variant is b.variant
        np.testing.assert_allclose(a.sqnr_db, b.sqnr_db, rtol=1e-4)


def test_samples_npz_is_used_with_its_labels(variant_folder: Path) -> None:
    from quantcore.data.datasets import LabelledImages, save_samples

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 3, 32, 32), dtype=np.uint8)
    save_samples(variant_folder / "samples.npz", LabelledImages(images, np.arange(20) % 10, tuple("abcdefghij")))
    report = layer_drift(quantcore.load_model_variants(variant_folder), images=12, batch_size=8)

    assert report.images == 12 and report.source.startswith("samples.npz (12 images")
    assert all(d.accuracy is not None for d in report.variants)
    assert set(report.reference_accuracy) == {"onnx_float", "pytorch_float"}
    variants = quantcore.load_model_variants(variant_folder)
    inputs, notes = sample_inputs(variants, input_spec(variants), images=50)
    assert inputs.count == 20 and notes == ["samples.npz holds 20 images; all of them used"]
    # Batches are the stored pixels; each variant makes its own input of them (here pixels / 255).
    np.testing.assert_array_equal(next(inputs.batches(4))[0], images[:4])
    np.testing.assert_allclose(to_model_input(images[:4], inputs.spec), images[:4] / 255.0, rtol=1e-6)


def test_generated_inputs_when_there_are_no_samples(variant_folder: Path) -> None:
    variants = quantcore.load_model_variants(variant_folder)
    inputs, notes = sample_inputs(variants, input_spec(variants), images=10, seed=4)
    batches = [b for b, _ in inputs.batches(4)]

    assert [len(b) for b in batches] == [4, 4, 2] and notes[0].startswith("no samples.npz")
    # Generated inputs are pixels like samples, the same whichever batches they are taken in.
    assert all(b.dtype == np.uint8 and b.shape[1:] == (3, 32, 32) for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), inputs.take(0, 10)[0])
    with pytest.raises(ValueError):
        sample_inputs(variants, input_spec(variants), images=0)


def test_missing_and_broken_variants_are_skipped_with_a_note(variant_folder: Path) -> None:
    (variant_folder / "tiny_uint8.onnx").write_bytes(b"\x00broken")
    (variant_folder / "tiny.pt").unlink()
    report = layer_drift(quantcore.load_model_variants(variant_folder), inputs=_generated(8), batch_size=8)

    by_variant = {d.variant: d for d in report.variants}
    assert set(by_variant) == {VariantKey.ONNX_INT8, VariantKey.PYTORCH_INT8}
    # No float PyTorch model: the int8 TorchScript one is measured against the float ONNX one.
    assert by_variant[VariantKey.PYTORCH_INT8].reference is VariantKey.ONNX_FLOAT
    assert all(db is not None for db in by_variant[VariantKey.PYTORCH_INT8].sqnr_db)
    assert any(note.startswith("onnx_uint8: skipped") for note in report.notes)


def test_a_quantized_variant_alone_is_noted_not_raised(variant_folder: Path) -> None:
    for name in ("tiny.onnx", "tiny.pt", "tiny_int8.pt", "tiny_uint8.onnx"):
        (variant_folder / name).unlink()
    report = layer_drift(quantcore.load_model_variants(variant_folder), inputs=_generated(4))

    assert report.variants == () and report.images == 0
    assert "onnx_int8: skipped — no float variant to compare it with" in report.notes


def test_chart_has_a_line_per_variant_and_marks_each_worst_layer(variant_folder: Path) -> None:
    report = layer_drift(quantcore.load_model_variants(variant_folder), inputs=_generated(8), batch_size=8)
    figure = figures.drift_figure(report)

    lines = [t for t in figure.data if t.showlegend is not False]
    marks = [t for t in figure.data if t.showlegend is False]
    assert [t.name for t in lines] == list(QUANTIZED)
    for line, mark, drift in zip(lines, marks, report.variants, strict=True):
        assert list(line.y) == pytest.approx(list(drift.sqnr_db))
        assert mark.x[0] == line.x[drift.worst] and mark.y[0] == pytest.approx(min(line.y))
    records = tables.drift_rows(report)
    assert len(records) == 10 and set(records[0]) == {"#", "layer", "kind", *(f"{k} (dB)" for k in QUANTIZED)}
    worst = [report.layers[d.worst].split(". ")[1] for d in report.variants]
    assert [r["worst layer"] for r in tables.drift_summary_rows(report)] == worst


def test_a_pytorch_only_folder_takes_its_input_shape_from_the_first_conv(variant_folder: Path) -> None:
    for name in ("tiny.onnx", "tiny_int8.onnx", "tiny_uint8.onnx"):
        (variant_folder / name).unlink()
    report = layer_drift(quantcore.load_model_variants(variant_folder), images=8, batch_size=8)

    assert [d.variant for d in report.variants] == [VariantKey.PYTORCH_INT8]
    assert report.images == 8 and report.source.startswith("generated")
    assert all(db is not None and db > 15 for db in report.variants[0].sqnr_db)


def test_a_qoperator_graphs_integer_activations_are_dequantized_and_compared(variant_folder: Path) -> None:
    from tests.test_layers import _quantize_qoperator

    _quantize_qoperator(variant_folder / "tiny.onnx", variant_folder / "tiny_uint8.onnx")
    report = layer_drift(quantcore.load_model_variants(variant_folder), inputs=_generated(16), batch_size=8)
    qop = next(d for d in report.variants if d.variant is VariantKey.ONNX_UINT8)

    # Calibrated on 4 random images rather than the 8 of the QDQ variants, so not identical, but close.
    assert all(db is not None and 15 < db < 80 for db in qop.sqnr_db), qop.sqnr_db
    assert qop.agreement is not None and qop.agreement > 0.5
