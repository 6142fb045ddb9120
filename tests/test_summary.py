import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from quantcore import Status, VariantKey, get_model_summary, load_model_variants
from quantcore.settings import PROJECT_ROOT


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def test_summary_keeps_contract_and_is_json(variant_folder: Path):
    summary = get_model_summary(load_model_variants(variant_folder))
    json.dumps(summary)
    assert summary["total_loaded"] == 5
    # The original contract: the precisions available in each format, as lists.
    assert summary["onnx_available"] == ["float", "int8", "uint8"]
    assert summary["pytorch_available"] == ["float", "int8"]
    assert summary["cache_hit"] is False and summary["load_seconds"] > 0
    assert summary["counts"] == {"loaded": 5, "missing": 0, "error": 0, "refused": 0}
    assert not any(k == "path" and isinstance(v, str) for k, v in _keys(summary))


def test_onnx_details_and_quantization_scheme(variant_folder: Path):
    variants = get_model_summary(load_model_variants(variant_folder))["variants"]
    float_, s8, u8 = variants["onnx_float"], variants["onnx_int8"], variants["onnx_uint8"]
    assert float_["opset"] == 17
    assert float_["inputs"][0] == {"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    assert float_["quantization"]["format"] is None and float_["precision"] == "float32"
    assert float_["parameters"] == 78186 - 480 + 0  # BN folded into convs by the exporter
    assert s8["quantization"] == {"format": "QDQ", "activation_type": "int8", "weight_type": "int8",
                                  "granularity": "per-tensor"}  # fmt: skip
    assert u8["quantization"]["activation_type"] == "uint8" and u8["precision"] == "uint8"
    assert s8["parameters"] == float_["parameters"]
    assert s8["op_counts"]["QuantizeLinear"] > 0
    for v in (float_, s8, u8):
        assert len(v["sha256"]) == 64 and v["bytes"] == (variant_folder / v["file"]).stat().st_size


def test_pytorch_details(variant_folder: Path):
    variants = get_model_summary(load_model_variants(variant_folder))["variants"]
    assert variants["pytorch_float"]["storage"] == "state_dict"
    assert variants["pytorch_float"]["parameters"] == 78186
    assert variants["pytorch_int8"]["storage"] == "torchscript"
    assert variants["pytorch_int8"]["quantized_modules"] == 10  # 9 convs + the dense layer
    assert variants["pytorch_int8"]["precision"] == "int8"


def test_second_summary_reports_cache_hit(variant_folder: Path):
    load_model_variants(variant_folder)
    assert get_model_summary(load_model_variants(variant_folder))["cache_hit"] is True


def test_failed_variant_carries_its_error(variant_folder: Path):
    (variant_folder / "tiny.pt").write_bytes(b"")
    (variant_folder / "tiny_uint8.onnx").unlink()
    summary = get_model_summary(load_model_variants(variant_folder))
    assert summary["variants"]["pytorch_float"]["status"] == "error"
    assert "empty" in summary["variants"]["pytorch_float"]["error"]
    assert summary["total_loaded"] == 3
    assert summary["onnx_available"] == ["float", "int8"] and summary["pytorch_available"] == ["int8"]


def test_variants_are_a_read_only_mapping_of_the_five_keys(variant_folder: Path):
    (variant_folder / "tiny_uint8.onnx").unlink()
    variants = load_model_variants(variant_folder)
    assert isinstance(variants, Mapping)
    assert list(variants) == ["onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"]
    assert variants["onnx_uint8"] is None and variants["onnx_float"] is not None
    assert variants.records[VariantKey.ONNX_UINT8].status is Status.MISSING
    with pytest.raises(TypeError):
        variants["onnx_float"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        variants.records[VariantKey.ONNX_FLOAT] = None  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown variant"):
        variants["onnx_int4"]


def test_cli_prints_summary_and_fails_on_unreadable_folder(variant_folder: Path, tmp_path: Path):
    ok = subprocess.run([sys.executable, "-m", "quantcore", "summarize", str(variant_folder), "--trust"],
                        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["total_loaded"] == 5
    bad = subprocess.run([sys.executable, "-m", "quantcore", "summarize", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "does not exist" in bad.stderr
