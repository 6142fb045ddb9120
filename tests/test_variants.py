import gc
import json
import os
import shutil
import threading
import time
import weakref
from pathlib import Path

import pytest

import quantcore
from quantcore import Status, VariantKey, load_model_variants, settings
from quantcore.errors import ModelNotFoundError
from quantcore.load import discover_variant_files
from tests.audit import record_opens

KEYS = ["onnx_float", "onnx_int8", "onnx_uint8", "pytorch_float", "pytorch_int8"]


def test_loads_all_five_variants_of_any_stem(variant_folder: Path):
    variants = load_model_variants(variant_folder)
    assert list(variants) == KEYS
    assert all(variants[k] is not None for k in KEYS)
    assert variants.loaded.stem == "tiny"
    assert variants.loaded.trusted  # under the local models root


def test_missing_files_are_none_not_errors(variant_folder: Path):
    for name in ("tiny_uint8.onnx", "tiny_int8.pt"):
        (variant_folder / name).unlink()
    variants = load_model_variants(variant_folder)
    assert variants["onnx_uint8"] is None and variants["pytorch_int8"] is None
    assert variants.records[VariantKey.ONNX_UINT8].status is Status.MISSING
    assert variants["onnx_float"] is not None


def test_unrelated_files_ignored_and_scan_is_fast(variant_folder: Path):
    for i in range(10_000):
        (variant_folder / f"note_{i}.txt").touch()
    quantcore.cache_clear()
    load_model_variants(variant_folder)
    started = time.perf_counter()
    variants = load_model_variants(variant_folder)
    elapsed = time.perf_counter() - started
    assert variants.cache_hit
    assert elapsed < 0.5, f"a cached folder with 10,000 other files took {elapsed:.3f}s"


def test_manifest_wins_over_names(variant_folder: Path):
    os.rename(variant_folder / "tiny_int8.onnx", variant_folder / "custom-s8.onnx")
    (variant_folder / "variants.json").write_text(json.dumps({"onnx_int8": "custom-s8.onnx", "bogus": "x.onnx"}))
    _, files, notes = discover_variant_files(variant_folder)
    assert files[VariantKey.ONNX_INT8] == "custom-s8.onnx"
    assert any("bogus" in n for n in notes)
    assert load_model_variants(variant_folder)["onnx_int8"] is not None


def test_manifest_cannot_point_outside_folder(variant_folder: Path):
    (variant_folder / "variants.json").write_text(json.dumps({"onnx_int8": "../../etc/passwd"}))
    _, files, notes = discover_variant_files(variant_folder)
    assert files[VariantKey.ONNX_INT8] == "tiny_int8.onnx"
    assert any("must name a file in this folder" in n for n in notes)


def test_several_stems_prefer_folder_name_then_most_complete(variant_folder: Path, models_root: Path):
    (variant_folder / "other.onnx").write_bytes(b"x")
    stem, _, notes = discover_variant_files(variant_folder)
    assert stem == "tiny" and "other" in notes[0]
    renamed = Path(shutil.move(variant_folder, models_root / "other"))
    assert discover_variant_files(renamed)[0] == "other"


def test_one_broken_variant_does_not_stop_the_others(variant_folder: Path):
    (variant_folder / "tiny_int8.onnx").write_bytes(b"garbage")
    variants = load_model_variants(variant_folder)
    record = variants.records[VariantKey.ONNX_INT8]
    assert record.status is Status.ERROR and "tiny_int8.onnx" in record.error
    assert sum(v is not None for v in variants.values()) == 4


def test_untrusted_folder_refuses_code_carrying_files(variant_folder: Path, tmp_path: Path):
    outside = Path(shutil.copytree(variant_folder, tmp_path / "elsewhere"))
    variants = load_model_variants(outside)
    assert not variants.loaded.trusted
    assert variants.records[VariantKey.PYTORCH_INT8].status is Status.REFUSED
    assert variants["pytorch_float"] is not None  # a state_dict is safe anywhere


def test_symlinked_variant_pointing_outside_folder_is_refused(variant_folder: Path, tmp_path: Path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(variant_folder / "tiny.onnx", outside)
    (variant_folder / "tiny.onnx").unlink()
    os.symlink(outside, variant_folder / "tiny.onnx")
    record = load_model_variants(variant_folder).records[VariantKey.ONNX_FLOAT]
    assert record.status is Status.REFUSED and "outside" in record.error


def test_missing_folder_and_file_raise(tmp_path: Path, variant_folder: Path):
    with pytest.raises(ModelNotFoundError):
        load_model_variants(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError):
        load_model_variants(variant_folder / "tiny.onnx")


def test_cache_hit_returns_same_objects_without_opening_files(variant_folder: Path):
    with record_opens() as opened_on_miss:
        first = load_model_variants(variant_folder)
    assert any(p.endswith("tiny.onnx") for p in opened_on_miss), "the audit hook saw no open at all"
    with record_opens() as opened:
        second = load_model_variants(variant_folder)
    assert second.cache_hit and not first.cache_hit
    assert all(second[k] is first[k] for k in KEYS)
    assert not [p for p in opened if p.startswith(str(variant_folder))], opened
    assert quantcore.cache_info().loads == 1


def test_changed_file_is_reloaded(variant_folder: Path):
    first = load_model_variants(variant_folder)
    path = variant_folder / "tiny.onnx"
    shutil.copy(path, variant_folder / "copy.tmp")
    os.replace(variant_folder / "copy.tmp", path)  # same bytes, new file
    second = load_model_variants(variant_folder)
    assert not second.cache_hit
    assert second["onnx_float"] is not first["onnx_float"]
    assert quantcore.cache_info().loads == 2


def test_concurrent_requests_for_one_folder_load_once(variant_folder: Path):
    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait()
        results.append(load_model_variants(variant_folder))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert quantcore.cache_info().loads == 1
    assert len({id(r["onnx_float"]) for r in results}) == 1


def test_evicted_folder_is_released(variant_folder: Path, models_root: Path):
    settings.configure(cache_size=1)
    ref = weakref.ref(load_model_variants(variant_folder)["pytorch_float"])
    second = Path(shutil.copytree(variant_folder, models_root / "second"))
    load_model_variants(second)
    gc.collect()
    info = quantcore.cache_info()
    assert (info.capacity, info.entries, info.evictions) == (1, 1, 1)
    assert ref() is None, "the evicted folder's models are still referenced somewhere"


def test_sidecar_files_must_be_regular_and_inside_the_folder(variant_folder: Path, tmp_path: Path):
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"x")
    (variant_folder / "samples.npz").symlink_to(outside)
    (variant_folder / "inside.npz").write_bytes(b"x")
    (variant_folder / "folder.npz").mkdir()
    variants = load_model_variants(variant_folder)
    assert variants.sidecar("samples.npz") is None
    assert variants.sidecar("folder.npz") is None
    assert variants.sidecar("inside.npz") == variant_folder / "inside.npz"
