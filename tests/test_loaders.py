import os
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import torch

from quantcore import load_onnx_model, load_pytorch_model
from quantcore.errors import (
    InvalidModelError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelTooLargeError,
    PathNotAllowedError,
    QuantcoreError,
    UnsafeModelError,
)
from quantcore.load.files import Storage, detect_storage, load_torch_file
from quantcore.models.resnet8 import ResNet8


class MakesMarker:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_onnx_loads_as_checked_modelproto(built_variants: Path):
    model = load_onnx_model(built_variants / "tiny.onnx")
    assert isinstance(model, onnx.ModelProto)
    assert model.graph.input[0].name == "input"


def test_onnx_truncated_and_random_bytes_are_invalid(built_variants: Path, tmp_path: Path):
    data = (built_variants / "tiny.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.onnx").write_bytes(os.urandom(4096))
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("cut.onnx", "noise.onnx", "empty.onnx"):
        with pytest.raises(InvalidModelError, match=name):
            load_onnx_model(tmp_path / name)


def test_onnx_missing_and_over_cap(built_variants: Path, tmp_path: Path):
    with pytest.raises(ModelNotFoundError):
        load_onnx_model(tmp_path / "absent.onnx")
    with pytest.raises(ModelTooLargeError, match="limit"):
        load_onnx_model(built_variants / "tiny.onnx", max_bytes=1000)


def _with_external_data(source: Path, folder: Path, location: str) -> Path:
    model = onnx.load(str(source))
    onnx.save_model(model, str(folder / "ext.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    edited = onnx.load(str(folder / "ext.onnx"), load_external_data=False)
    for tensor in edited.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(edited, str(folder / "ext.onnx"))
    return folder / "ext.onnx"


def test_onnx_external_data_inside_folder_loads(built_variants: Path, tmp_path: Path):
    path = _with_external_data(built_variants / "tiny.onnx", tmp_path, "weights.bin")
    model = load_onnx_model(path)
    assert len(model.graph.initializer) > 0


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "link.bin"])
def test_onnx_external_data_outside_folder_is_refused(built_variants: Path, tmp_path: Path, location: str):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    path = _with_external_data(built_variants / "tiny.onnx", folder, location)
    with pytest.raises(PathNotAllowedError, match="outside"):
        load_onnx_model(path)


def test_state_dict_loads_untrusted_into_registered_architecture(built_variants: Path):
    model = load_pytorch_model(built_variants / "tiny.pt", trusted=False)
    assert isinstance(model, ResNet8)
    assert not model.training
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_bare_state_dict_is_matched_by_keys(tmp_path: Path):
    torch.save(ResNet8().state_dict(), tmp_path / "bare.pt")
    assert isinstance(load_pytorch_model(tmp_path / "bare.pt", trusted=False), ResNet8)


def test_unknown_state_dict_names_known_architectures(tmp_path: Path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "odd.pt")
    with pytest.raises(InvalidModelError, match="resnet8"):
        load_pytorch_model(tmp_path / "odd.pt")


def test_torchscript_needs_trust(built_variants: Path):
    path = built_variants / "tiny_int8.pt"
    assert detect_storage(path) is Storage.TORCHSCRIPT
    with pytest.raises(UnsafeModelError, match="--trust-remote-models"):
        load_pytorch_model(path, trusted=False)
    loaded = load_torch_file(path, trusted=True)
    assert loaded.storage is Storage.TORCHSCRIPT
    assert loaded.module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("wrap", [lambda m: m, lambda m: {"model": m, "epoch": 3}])
def test_whole_pickles_load_only_when_trusted(tmp_path: Path, wrap):
    torch.save(wrap(ResNet8()), tmp_path / "whole.pt")
    with pytest.raises(UnsafeModelError, match="pickled"):
        load_pytorch_model(tmp_path / "whole.pt", trusted=False)
    loaded = load_torch_file(tmp_path / "whole.pt", trusted=True)
    assert loaded.storage is Storage.PICKLE and isinstance(loaded.module, ResNet8)
    assert not loaded.module.training


def test_untrusted_pickle_never_runs_code(tmp_path: Path):
    marker = tmp_path / "marker"
    torch.save({"model": MakesMarker(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeModelError):
        load_pytorch_model(tmp_path / "evil.pt", trusted=False)
    assert not marker.exists()


def test_pickle_needing_missing_package_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "vendor_arch_xyz.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(package))
    import vendor_arch_xyz

    torch.save(vendor_arch_xyz.Net(2, 2), tmp_path / "vendor.pt")
    del sys.modules["vendor_arch_xyz"]
    shutil.rmtree(package)
    with pytest.raises(MissingDependencyError, match="vendor_arch_xyz"):
        load_pytorch_model(tmp_path / "vendor.pt", trusted=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", os.urandom(2048), b"PK\x03\x04" + os.urandom(500)])
def test_damaged_torch_files_raise_quantcore_errors(tmp_path: Path, content: bytes):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(QuantcoreError):
        load_pytorch_model(tmp_path / "bad.pt", trusted=True)


def test_int8_state_dict_loads_untrusted_and_matches_the_original(tmp_path: Path):
    from quantcore.models.registry import quantize_fx

    torch.manual_seed(1)
    images = torch.rand(16, 3, 32, 32)
    original = quantize_fx(ResNet8().eval(), images)
    torch.save(original.state_dict(), tmp_path / "q.pt")
    loaded = load_torch_file(tmp_path / "q.pt", trusted=False)
    assert loaded.storage is Storage.STATE_DICT
    assert torch.equal(loaded.module(images), original(images))
