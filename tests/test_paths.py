import os
from pathlib import Path

import pytest

from quantcore.errors import ModelNotFoundError, PathNotAllowedError
from quantcore.paths import is_within, require_within, resolve_folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "resnet8").mkdir(parents=True)
    (tmp_path / "root" / "file.onnx").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def test_resolves_relative_folder_and_segment_lists(root: Path):
    assert resolve_folder("resnet8", root=root) == root.resolve() / "resnet8"
    assert resolve_folder(["resnet8", "."], root=root) == root.resolve() / "resnet8"
    assert resolve_folder("", root=root) == root.resolve()


@pytest.mark.parametrize(
    "attack",
    ["../outside", "resnet8/../../outside", "/etc", "\\etc", ["..", "outside"], "resnet8\x00", "a" * 5000, "C:/x"],
)
def test_refuses_traversal_absolute_nul_and_long(root: Path, attack):
    with pytest.raises(PathNotAllowedError):
        resolve_folder(attack, root=root)


def test_refuses_symlink_escaping_root(root: Path):
    os.symlink(root.parent / "outside", root / "escape")
    with pytest.raises(PathNotAllowedError):
        resolve_folder("escape", root=root)


def test_missing_and_file_are_not_found(root: Path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_folder("nope", root=root)
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        resolve_folder("file.onnx", root=root)


def test_within_helpers(root: Path):
    assert is_within(root / "resnet8", root)
    assert not is_within(root.parent / "outside", root)
    with pytest.raises(PathNotAllowedError):
        require_within(root.parent / "outside", [root])
    assert require_within(root / "resnet8", [root.parent / "outside", root]) == (root / "resnet8").resolve()
