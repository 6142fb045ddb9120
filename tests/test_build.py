"""The build script end to end, in miniature: a few training steps on a few dozen images, every stage.

No retraining of the bundled model here; the committed files are checked in test_model_card.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import quantcore
from quantcore.data import datasets
from quantcore.settings import PROJECT_ROOT
from scripts import build_resnet8 as build
from tests.test_datasets import write_cifar10

SMOKE = [
    "--epochs", "2", "--train-per-class", "4", "--test-per-class", "3",
    "--samples-per-class", "2", "--calibration-per-class", "2", "--benchmark-runs", "2",
]  # fmt: skip
COMMITTED_SAMPLES = PROJECT_ROOT / "models" / "resnet8" / "samples.npz"


def _fashion_source() -> list[str]:
    """Debian's Fashion-MNIST when installed, else the committed samples.npz: never a skip."""
    if datasets.FASHION_MNIST_DIR.is_dir():
        return []
    assert COMMITTED_SAMPLES.is_file(), "neither Debian's dataset-fashion-mnist nor models/resnet8/samples.npz"
    return ["--from-samples", str(COMMITTED_SAMPLES)]


def _check_folder(folder: Path, labels: list[str]) -> dict:
    card = json.loads((folder / "model_card.json").read_text())
    assert card["labels"] == labels
    assert set(card["variants"]) == set(build.VARIANT_FILES)
    for key, name in build.VARIANT_FILES.items():
        entry = card["variants"][key]
        assert entry["file"] == name and entry["bytes"] == (folder / name).stat().st_size
        assert 0.0 <= entry["test"]["accuracy"] <= 1.0 and entry["images_per_second"]["batch_64"] > 0
    assert card["fastest"]["batch_1"] in build.VARIANT_FILES
    assert (folder / "README.md").read_text().startswith("# ResNet8 on ")

    for name in ("resnet8.onnx", "resnet8_int8.onnx", "resnet8_uint8.onnx"):
        model = onnx.load(folder / name)
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["labels"]) == labels
        assert json.loads(meta["preprocessing"]) == card["preprocessing"]
        assert [i.name for i in model.graph.input] == ["input"]
        assert [o.name for o in model.graph.output] == ["logits"]
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    zero_points = {  # activation quantization: int8 in the S8S8 file, uint8 in the U8S8 one
        name: {i.data_type for i in onnx.load(folder / name).graph.initializer if i.name.endswith("zero_point")}
        for name in ("resnet8_int8.onnx", "resnet8_uint8.onnx")
    }
    assert onnx.TensorProto.UINT8 not in zero_points["resnet8_int8.onnx"]
    assert onnx.TensorProto.UINT8 in zero_points["resnet8_uint8.onnx"]

    checkpoint = torch.load(folder / "resnet8.pt", weights_only=True)
    assert checkpoint["arch"] == "resnet8" and checkpoint["labels"] == labels
    extra = {"metadata.json": ""}
    torch.jit.load(str(folder / "resnet8_int8.pt"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["labels"] == labels

    samples = datasets.load_samples(folder / "samples.npz")
    assert np.bincount(samples.labels).tolist() == [2] * 10

    variants = quantcore.load_model_variants(folder)
    assert quantcore.get_model_summary(variants)["total_loaded"] == 5
    return card


def test_tiny_fashion_mnist_build_writes_five_loadable_variants(models_root: Path) -> None:
    out = models_root / "resnet8"
    assert build.main(["--out", str(out), *_fashion_source(), *SMOKE]) == 0
    card = _check_folder(out, list(datasets.FASHION_MNIST_LABELS))
    assert card["dataset"]["licence"] == "MIT"
    assert card["training"]["epochs"] == 2 and len(card["training"]["history"]) == 2
    assert card["calibration"]["images"] == 20 and card["samples"]["images"] == 20


def test_tiny_build_from_the_committed_samples_alone(models_root: Path) -> None:
    """Where Debian's package is absent (Hugging Face Spaces), the shipped samples.npz feeds the build."""
    out = models_root / "resnet8"
    source = ["--from-samples", str(COMMITTED_SAMPLES)]
    assert build.main(["--out", str(out), *source, *SMOKE]) == 0
    card = _check_folder(out, list(datasets.FASHION_MNIST_LABELS))
    assert card["dataset"]["name"] == "Fashion-MNIST (samples subset)"

    # --evaluate-only redoes the build's draws and finds the same accuracies; a card that lies is caught.
    assert build.main(["--out", str(out), *source, "--evaluate-only", "--benchmark-runs", "1"]) == 0
    card["variants"]["onnx_uint8"]["samples"]["correct"] += 1
    (out / "model_card.json").write_text(json.dumps(card))
    assert build.main(["--out", str(out), *source, "--evaluate-only", "--benchmark-runs", "1"]) == 1


def test_tiny_cifar10_build_takes_labels_from_the_folder(models_root: Path, tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=30)
    out = models_root / "cifar"
    args = ["--out", str(out), "--cifar10", str(tmp_path / "cifar-10-batches-py"), *SMOKE]
    assert build.main(args) == 0
    cifar_labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    card = _check_folder(out, cifar_labels)
    assert card["dataset"]["name"] == "CIFAR-10"
    assert card["dataset"]["train_images"] == 40 and card["dataset"]["test_images"] == 30


def test_build_stops_on_a_hostile_cifar_folder_before_writing(models_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_1").write_bytes(b"cos\nsystem\n(S'touch /tmp/never'\ntR.")
    assert build.main(["--out", str(models_root / "x"), "--cifar10", str(folder), *SMOKE]) == 1
    assert not (models_root / "x").exists()


def test_help_names_the_one_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build.main(["--help"])
    assert "python -m scripts.build_resnet8" in capsys.readouterr().out
