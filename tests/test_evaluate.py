"""Running ONNX and torch variants on a batch, and the measures built on it, with a tiny model made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from quantcore import evaluate
from quantcore.backends import predictor_for
from quantcore.errors import InvalidModelError

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()


def _as_onnx(model: nn.Module, path: Path) -> onnx.ModelProto:
    torch.onnx.export(
        model, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    return onnx.load(path)


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(0).random((7, 3, 8, 8), dtype=np.float32)


def test_onnx_torch_and_torchscript_give_the_same_logits(tmp_path: Path, inputs: np.ndarray) -> None:
    model = _tiny_model()
    scripted = torch.jit.trace(model, torch.zeros(1, 3, 8, 8))
    expected = model(torch.from_numpy(inputs)).detach().numpy()
    for variant in (model, scripted, _as_onnx(model, tmp_path / "m.onnx")):
        logits = evaluate.predict_logits(variant, inputs)
        assert logits.shape == (7, 5)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_predict_logits_batches_without_changing_results(tmp_path: Path, inputs: np.ndarray) -> None:
    predictor = predictor_for(_as_onnx(_tiny_model(), tmp_path / "m.onnx"))
    whole = evaluate.predict_logits(predictor, inputs, batch_size=100)
    np.testing.assert_allclose(evaluate.predict_logits(predictor, inputs, batch_size=3), whole, rtol=1e-6, atol=1e-6)


def test_torch_predictor_leaves_the_thread_count_as_it_was(inputs: np.ndarray) -> None:
    before = torch.get_num_threads()
    predictor_for(_tiny_model(), threads=1)(inputs)
    assert torch.get_num_threads() == before


def test_predictor_for_rejects_what_it_cannot_run() -> None:
    with pytest.raises(TypeError):
        predictor_for("model.onnx")  # type: ignore[arg-type]
    broken = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    ))  # fmt: skip
    with pytest.raises(InvalidModelError):
        predictor_for(broken)


def test_accuracy_and_agreement_count_top1_matches() -> None:
    a = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [1.0, 0.0]])
    assert evaluate.accuracy(a, np.array([1, 0, 0, 0])) == 0.75
    assert evaluate.agreement(a, b) == 0.75
    assert evaluate.agreement(a, a) == 1.0
    with pytest.raises(ValueError):
        evaluate.agreement(a, b[:2])


def test_measure_throughput_times_the_asked_runs(inputs: np.ndarray) -> None:
    calls: list[int] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return np.zeros((len(batch), 5), np.float32)

    result = evaluate.measure_throughput(predictor, inputs, batch_size=16, runs=4, warmup_runs=2)
    assert calls == [16] * 6  # fewer inputs than the batch: repeated to fill it
    assert (result.batch_size, result.runs, result.warmup_runs) == (16, 4, 2)
    assert result.images_per_second == pytest.approx(16 / result.median_seconds)
    assert result.best_seconds <= result.median_seconds
    assert result.best_images_per_second == pytest.approx(16 / result.best_seconds)
    with pytest.raises(ValueError):
        evaluate.measure_throughput(predictor, inputs, batch_size=1, runs=0)


def test_compare_throughput_lets_predictors_take_turns(inputs: np.ndarray) -> None:
    order: list[str] = []

    def predictor(name: str) -> evaluate.Predictor:
        def predict(batch: np.ndarray) -> np.ndarray:
            order.append(name)
            return np.zeros((len(batch), 5), np.float32)

        return predict

    result = evaluate.compare_throughput(
        {"a": predictor("a"), "b": predictor("b")}, inputs, batch_size=4, runs=5, rounds=2, warmup_runs=1
    )
    assert "".join(order) == "aaaabbbbaaabbb"  # blocks of 3 then 2 timed runs, each after 1 untimed
    assert set(result) == {"a", "b"} and result["a"].runs == 5 and result["b"].images_per_second > 0
    with pytest.raises(ValueError):
        evaluate.compare_throughput({"a": predictor("a")}, inputs, batch_size=4, runs=1, rounds=2)
