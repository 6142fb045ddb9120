"""The kernel check: where this CPU's fused integer kernels and a QDQ graph's own arithmetic disagree."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

import quantcore
from quantcore.evaluate.inputs import folder_samples, input_spec, to_model_input, variant_spec
from quantcore.evaluate.kernels import KernelCheck, check_kernels, needs_check
from quantcore.evaluate.predictions import variant_logits
from quantcore.load import VariantKey
from tests.app_server import require_bundled_models


def _top1(path: str, x: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 100]})[0] for i in range(0, len(x), 100)]).argmax(1)


def test_bundled_uint8_check_equals_two_direct_onnxruntime_runs() -> None:
    folder = require_bundled_models()
    variants = quantcore.load_model_variants(folder)
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    assert samples is not None and samples.labels is not None
    outputs = variant_logits(variants, samples, spec)
    checks = {c.variant: c for c in check_kernels(variants, samples, outputs.logits)}

    # U8S8 is checked; S8S8, float and PyTorch are not.
    assert set(checks) == {VariantKey.ONNX_UINT8}
    assert not needs_check(variants, VariantKey.ONNX_INT8) and not needs_check(variants, VariantKey.ONNX_FLOAT)

    x = to_model_input(samples.pixels(0, len(samples)), variant_spec(variants, VariantKey.ONNX_UINT8))
    path = str(folder / variants.records[VariantKey.ONNX_UINT8].file)
    fused = _top1(path, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    as_written = _top1(path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    check = checks[VariantKey.ONNX_UINT8]
    assert check.images == len(samples) == 1000
    assert check.changed == int(np.sum(fused != as_written))
    assert check.kernel_correct == int(np.sum(fused == samples.labels))
    assert check.graph_correct == int(np.sum(as_written == samples.labels))
    assert (check.note() is None) == (check.changed == 0)


def test_the_note_says_how_many_answers_changed_both_accuracies_and_the_fix() -> None:
    check = KernelCheck(VariantKey.ONNX_UINT8, 1000, 23, 892, 912)
    note = check.note()
    assert note is not None
    assert "onnx_uint8" in note and "23 of 1,000 samples" in note
    assert "89.2 % here, 91.2 % as the graph specifies" in note
    assert "reduce_range=True" in note
    assert KernelCheck(VariantKey.ONNX_UINT8, 1000, 0, 912, 912).note() is None


def test_flips_carry_the_note_where_the_kernels_change_answers() -> None:
    from quantcore.evaluate.flips import folder_flips

    variants = quantcore.load_model_variants(require_bundled_models())
    spec = input_spec(variants)
    samples, _ = folder_samples(variants, spec)
    assert samples is not None
    report = folder_flips(variants, samples, spec)
    (check,) = check_kernels(variants, samples, variant_logits(variants, samples, spec).logits)
    assert (check.note() in report.notes) == bool(check.changed)
    assert all("integer kernels" not in n for n in report.notes) or check.changed
