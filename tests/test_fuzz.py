"""Property tests: the path guard never admits a path outside its root, and loaders
fed arbitrary bytes raise only quantcore's own errors (never KeyError, RuntimeError...)."""

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcore import load_onnx_model, load_pytorch_model
from quantcore.errors import QuantcoreError
from quantcore.paths import resolve_folder

SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "", "/", "\\", "~", "%2e%2e", "..%2f", "\x00", "escape", "inside", "C:", "//"]),
    st.text(min_size=0, max_size=12),
)
PATH = st.one_of(
    st.lists(SEGMENT, max_size=6).map("/".join),
    st.lists(SEGMENT, max_size=6),
    st.text(max_size=64),
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("guard")
    root = base / "root"
    (root / "inside" / "deeper").mkdir(parents=True)
    (base / "outside").mkdir()
    os.symlink(base / "outside", root / "escape")
    os.symlink(root / "inside", root / "alias")  # a link that stays inside is fine
    return root


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PATH)
def test_path_guard_never_admits_a_path_outside_root(sandbox: Path, candidate):
    try:
        resolved = resolve_folder(candidate, root=sandbox)
    except QuantcoreError:
        return
    assert resolved.is_relative_to(sandbox.resolve())
    assert resolved.is_dir()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.sampled_from(["", "PK\x03\x04", "\x08\x07\x12\x04", "\x80\x02"]))
def test_onnx_loader_raises_only_quantcore_errors(tmp_path: Path, payload: bytes, prefix: str):
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(prefix.encode("latin-1") + payload)
    with contextlib.suppress(QuantcoreError):
        load_onnx_model(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.sampled_from(["", "PK\x03\x04", "\x80\x02", "\x80\x04\x95"]), st.booleans())
def test_torch_loader_raises_only_quantcore_errors(tmp_path: Path, payload: bytes, prefix: str, trusted: bool):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(prefix.encode("latin-1") + payload)
    with contextlib.suppress(QuantcoreError):
        load_pytorch_model(path, trusted=trusted)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_models_raise_only_quantcore_errors(built_variants: Path, tmp_path: Path, data):
    """Flip, cut and splice bytes of real files: nearer misses than random noise."""
    name = data.draw(st.sampled_from(["tiny.onnx", "tiny_int8.onnx", "tiny.pt", "tiny_int8.pt"]))
    original = bytearray((built_variants / name).read_bytes())
    cut = data.draw(st.integers(1, len(original)))
    mutated = original[:cut]
    for _ in range(data.draw(st.integers(0, 8))):
        if mutated:
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / name
    path.write_bytes(bytes(mutated))
    loader = load_onnx_model if name.endswith(".onnx") else load_pytorch_model
    with contextlib.suppress(QuantcoreError):
        loader(path)
