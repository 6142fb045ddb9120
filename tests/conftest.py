"""Shared fixtures: tiny but real model variants built in temp dirs, isolated settings and caches."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import quantcore
from quantcore import settings

# Chromium fixtures (browser, page) for every browser test.
pytest_plugins = ["tests.browser"]

VARIANT_FILES = {
    "onnx_float": "tiny.onnx",
    "onnx_int8": "tiny_int8.onnx",
    "onnx_uint8": "tiny_uint8.onnx",
    "pytorch_float": "tiny.pt",
    "pytorch_int8": "tiny_int8.pt",
}


def _build_variants(folder: Path) -> None:
    """All five variants of a randomly initialised ResNet8, made the way real ones are."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from quantcore.models.resnet8 import ResNet8

    torch.manual_seed(0)
    model = ResNet8().eval()
    example = torch.rand(8, 3, 32, 32)
    torch.save({"arch": "resnet8", "state_dict": model.state_dict()}, folder / "tiny.pt")
    torch.onnx.export(
        model, (example[:1],), str(folder / "tiny.onnx"), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": example[i : i + 1].numpy()} for i in range(len(example))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    for name, activation in (("tiny_int8.onnx", QuantType.QInt8), ("tiny_uint8.onnx", QuantType.QUInt8)):
        quantize_static(
            str(folder / "tiny.onnx"), str(folder / name), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=activation, weight_type=QuantType.QInt8,
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (example,))
        prepared(example)
        quantized = convert_fx(prepared)
        torch.jit.save(torch.jit.trace(quantized, example), str(folder / "tiny_int8.pt"))


@pytest.fixture(scope="session")
def built_variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only source folder of the five tiny variants (copy it before changing anything)."""
    folder = tmp_path_factory.mktemp("built") / "tiny"
    folder.mkdir()
    _build_variants(folder)
    return folder


@pytest.fixture
def models_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh local models root for this test, with settings pointed at it."""
    root = tmp_path / "models"
    root.mkdir()
    before = settings.current()
    settings.configure(models_root=root)
    yield root
    settings.configure(**before.__dict__)


@pytest.fixture
def variant_folder(built_variants: Path, models_root: Path) -> Path:
    """A private copy of the five tiny variants inside the models root."""
    return Path(shutil.copytree(built_variants, models_root / "tiny"))


@pytest.fixture(autouse=True)
def _reliability_class(request: pytest.FixtureRequest) -> None:
    """A test marked ``reliability("...")`` is counted under that class by scripts/reliability_report.py."""
    marker = request.node.get_closest_marker("reliability")
    if marker is not None:
        request.node.user_properties.append(("reliability_class", marker.args[0]))


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with an empty folder cache and its own Hugging Face home."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    quantcore.cache_clear()
    yield
    quantcore.cache_clear()


@pytest.fixture(scope="session")
def zoo_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """``zoo_build(name, **options)``: a ``tests.zoo`` model class built once per session (read-only: copy
    its folder before changing anything)."""
    from tests import zoo

    built: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def get(name: str, **options: Any) -> Any:
        key = (name, tuple(sorted(options.items())))
        if key not in built:
            built[key] = zoo.build(name, tmp_path_factory.mktemp("zoo") / name, **options)
        return built[key]

    return get


# Markers whose tests run only when asked for: ``-m <marker>`` or the environment variable set to the value.
ON_REQUEST = {"zoo_full": ("QP_ZOO", "full"), "crowd_long": ("QP_CROWD", "long")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole model-zoo corpus (``zoo_full``: ``-m zoo_full`` or QP_ZOO=full) and the long crowd
    (``crowd_long``: ``-m crowd_long`` or QP_CROWD=long) run only when asked for.

    The rest are deselected, which pytest reports in its summary line.
    """
    markexpr = config.getoption("markexpr") or ""
    held = {
        marker for marker, (variable, value) in ON_REQUEST.items()
        if marker not in markexpr and os.environ.get(variable, "").lower() != value
    }  # fmt: skip
    deselected = [item for item in items if any(item.get_closest_marker(marker) for marker in held)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
