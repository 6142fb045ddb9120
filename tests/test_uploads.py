"""Visitors' uploaded folders (quantcore.load.uploads) and their sources: names, caps, owners, expiry, trust."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcore import Source, get_model_summary, open_source, settings
from quantcore.errors import PathNotAllowedError, UploadError
from quantcore.load import uploads
from tests.conftest import VARIANT_FILES


@pytest.fixture
def upload_root(tmp_path: Path, models_root: Path) -> Iterator[Path]:
    """A fresh uploads root beside the models root, and no uploads or requester left over."""
    root = tmp_path / "uploads"
    before = settings.current()
    settings.configure(uploads_root=root)
    yield root
    uploads.clear()
    uploads.set_requester(lambda: None)
    settings.configure(**before.__dict__)


def _files(folder: Path, *keys: str) -> list[tuple[str, Path]]:
    return [(VARIANT_FILES[k], folder / VARIANT_FILES[k]) for k in keys]


@pytest.mark.parametrize("name", ["resnet8.onnx", "my-model_v2+qdq.onnx", "m.pt", "m.pth", "samples.npz",
                                  "variants.json", "model_card.json"])  # fmt: skip
def test_model_files_and_known_sidecars_are_taken(name: str) -> None:
    assert uploads.check_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../evil.onnx", "may use only"),
        ("/etc/passwd.onnx", "may use only"),
        (".hidden.onnx", "may use only"),
        ("a b.onnx", "may use only"),
        ("x\n.onnx", "may use only"),
        ("x\x00.onnx", "may use only"),
        ("a..onnx", "may use only"),
        ("x" * 101 + ".onnx", "may use only"),
        ("run.sh", "not taken"),
        ("other.json", "not taken"),
        ("samples.npy", "not taken"),
        (7, "may use only"),
    ],
)
def test_hostile_and_foreign_names_are_refused_saying_why(name: object, says: str) -> None:
    with pytest.raises(UploadError, match=says):
        uploads.check_name(name)


def test_an_upload_copies_the_files_into_a_private_folder_of_their_names(
    upload_root: Path, built_variants: Path
) -> None:
    upload = uploads.store_upload(_files(built_variants, "onnx_float", "onnx_int8"), owner="session-a")
    assert upload.folder.parent == upload_root.resolve() and uploads.is_upload_id(upload.folder.name)
    assert sorted(os.listdir(upload.folder)) == ["tiny.onnx", "tiny_int8.onnx"]
    for name in upload.files:
        assert (upload.folder / name).read_bytes() == (built_variants / name).read_bytes()
    assert upload.size == sum(os.stat(built_variants / n).st_size for n in upload.files)
    assert os.stat(upload.folder).st_mode & 0o777 == 0o700


def test_only_the_owning_session_opens_it_and_others_hear_it_does_not_exist(
    upload_root: Path, built_variants: Path
) -> None:
    upload = uploads.store_upload(_files(built_variants, "onnx_float"), owner="session-a")
    assert uploads.upload_folder(upload.id, owner="session-a") == upload.folder
    refusals = []
    for upload_id, owner in ((upload.id, "session-b"), (upload.id, None), ("0" * 32, "session-a"),
                             ("../models", "session-a"), (["list"], "session-a")):  # fmt: skip
        with pytest.raises(PathNotAllowedError) as caught:
            uploads.upload_folder(upload_id, owner=owner)
        refusals.append(str(caught.value))
    assert set(refusals) == {uploads.NOT_YOURS}  # someone else's and one that never was read alike


def test_a_new_upload_of_a_session_replaces_its_last(upload_root: Path, built_variants: Path) -> None:
    first = uploads.store_upload(_files(built_variants, "onnx_float"), owner="a")
    other = uploads.store_upload(_files(built_variants, "onnx_float"), owner="b")
    second = uploads.store_upload(_files(built_variants, "onnx_int8"), owner="a")
    assert not first.folder.exists() and second.folder.is_dir() and other.folder.is_dir()
    assert [u.id for u in uploads.uploads_of("a")] == [second.id]


def test_a_refused_upload_keeps_the_last_one(upload_root: Path, built_variants: Path, tmp_path: Path) -> None:
    first = uploads.store_upload(_files(built_variants, "onnx_float"), owner="a")
    (tmp_path / "run.sh").write_text("echo")
    with pytest.raises(UploadError, match="not taken"):
        uploads.store_upload([("run.sh", tmp_path / "run.sh")], owner="a")
    assert first.folder.is_dir()


def test_size_caps_count_each_file_and_the_whole(upload_root: Path, built_variants: Path) -> None:
    files = _files(built_variants, "onnx_float", "onnx_int8")
    sizes = [os.stat(p).st_size for _, p in files]
    settings.configure(max_upload_bytes=max(sizes) - 1)
    with pytest.raises(UploadError, match=r"tiny\.onnx is .* KB: at most .* a file"):
        uploads.store_upload(files, owner="a")
    settings.configure(max_upload_bytes=max(sizes), max_upload_total_bytes=sum(sizes) - 1)
    with pytest.raises(UploadError, match="in all: at most"):
        uploads.store_upload(files, owner="a")
    settings.configure(max_upload_total_bytes=sum(sizes))
    assert uploads.store_upload(files, owner="a").size == sum(sizes)
    assert len(os.listdir(upload_root)) == 1  # the refused ones left nothing behind


def test_counts_duplicates_owner_and_room_are_checked(upload_root: Path, built_variants: Path, tmp_path: Path) -> None:
    one = _files(built_variants, "onnx_float")
    (tmp_path / "model_card.json").write_text("{}")
    cases = [
        ([], "no files"),
        (one * 2, "same name"),
        ([("model_card.json", tmp_path / "model_card.json")], "no model file"),
        ([(f"m{i}.onnx", one[0][1]) for i in range(uploads.MAX_FILES + 1)], "at most"),
    ]
    for files, says in cases:
        with pytest.raises(UploadError, match=says):
            uploads.store_upload(files, owner="a")
    with pytest.raises(UploadError, match="need a session"):
        uploads.store_upload(one, owner=None)
    settings.configure(max_uploads=2)
    uploads.store_upload(one, owner="a")
    uploads.store_upload(one, owner="b")
    with pytest.raises(UploadError, match="as many uploads as it can"):
        uploads.store_upload(one, owner="c")
    assert uploads.store_upload(one, owner="a").folder.is_dir()  # replacing one's own always has room


def test_the_uploads_root_may_not_lie_in_the_models_root(models_root: Path, built_variants: Path) -> None:
    before = settings.current()
    settings.configure(uploads_root=models_root / "uploads")
    try:
        with pytest.raises(PathNotAllowedError, match="must not lie inside the models folder"):
            uploads.store_upload(_files(built_variants, "onnx_float"), owner="a")
    finally:
        settings.configure(**before.__dict__)


def test_session_end_and_idle_timeout_remove_folders(upload_root: Path, built_variants: Path) -> None:
    a = uploads.store_upload(_files(built_variants, "onnx_float"), owner="a")
    b = uploads.store_upload(_files(built_variants, "onnx_float"), owner="b")
    assert uploads.discard_owner("a") == 1 and not a.folder.exists()
    ttl = settings.current().upload_ttl_s
    assert uploads.sweep(now=time.monotonic() + ttl / 2) == 0 and b.folder.is_dir()
    uploads.upload_folder(b.id, owner="b")  # use keeps it alive
    assert uploads.sweep(now=time.monotonic() + ttl + 1) == 1 and not b.folder.exists()
    with pytest.raises(PathNotAllowedError):
        uploads.upload_folder(b.id, owner="b")


def test_sweep_removes_stale_leftovers_of_the_upload_naming_only(upload_root: Path, tmp_path: Path) -> None:
    uploads.root()
    old = time.time() - settings.current().upload_ttl_s - 10
    stale, fresh, other = upload_root / ("a" * 32), upload_root / ("b" * 32), upload_root / "keep-me"
    for folder in (stale, fresh, other):
        folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    link = upload_root / ("c" * 32)
    link.symlink_to(outside, target_is_directory=True)
    for path in (stale, other, link):
        os.utime(path, (old, old), follow_symlinks=False)
    assert uploads.sweep() == 1
    assert not stale.exists() and fresh.is_dir() and other.is_dir() and (outside / "precious").is_file()


def test_an_upload_source_loads_untrusted_through_the_same_loader(upload_root: Path, built_variants: Path) -> None:
    upload = uploads.store_upload(_files(built_variants, "onnx_float", "onnx_int8", "pytorch_int8"), owner="a")
    source = Source.from_upload(upload)
    assert Source.from_client(source.as_dict()) == source
    assert source.label == "your upload (tiny.onnx, tiny_int8.onnx, tiny_int8.pt)"
    uploads.set_requester(lambda: "b")
    with pytest.raises(PathNotAllowedError, match="not this session's"):
        open_source(source.as_dict())
    uploads.set_requester(lambda: "a")
    summary = get_model_summary(open_source(source.as_dict()))
    assert summary["trusted"] is False
    variants = summary["variants"]
    assert variants["pytorch_int8"]["status"] == "refused" and "TorchScript" in variants["pytorch_int8"]["error"]
    for key in ("onnx_float", "onnx_int8"):
        name = VARIANT_FILES[key]
        assert variants[key]["status"] == "loaded"
        assert variants[key]["sha256"] == hashlib.sha256((built_variants / name).read_bytes()).hexdigest()
        assert variants[key]["bytes"] == os.stat(built_variants / name).st_size
    settings.configure(trust_remote_models=True)  # the operator's opt-in is the only way in, as for the Hub
    assert get_model_summary(open_source(source))["variants"]["pytorch_int8"]["status"] == "loaded"


@pytest.mark.parametrize(
    "sent",
    [
        {"kind": "upload", "upload": "../../etc"},
        {"kind": "upload", "upload": "A" * 32},
        {"kind": "upload"},
        {"upload": "a" * 32, "files": ["../x.onnx"]},
        {"upload": "a" * 32, "files": "x.onnx"},
        {"upload": "a" * 32, "files": ["m.onnx"] * 9},
    ],
)
def test_hostile_upload_sources_are_refused(sent: dict, upload_root: Path) -> None:
    with pytest.raises(PathNotAllowedError):
        Source.from_client(sent)


def test_a_requester_lookup_that_fails_names_no_one(upload_root: Path, built_variants: Path) -> None:
    upload = uploads.store_upload(_files(built_variants, "onnx_float"), owner="a")

    def broken() -> str:
        raise RuntimeError("no context")

    uploads.set_requester(broken)
    with pytest.raises(PathNotAllowedError):
        open_source(Source.from_upload(upload))
