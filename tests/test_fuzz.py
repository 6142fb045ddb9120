"""Property tests: the path guard never admits a path outside its root, loaders fed arbitrary bytes
raise only quantcore's own errors (never KeyError, RuntimeError...), and the layers above hold too:
the explorer's path check, the /load_folder handler and endpoint, ONNX external-data locations,
the JSON sidecars (variants.json, model_card.json) and the status text every message goes through.

Each test records how many examples it ran, for docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from onnx import TensorProto, helper

from gradio_app import handlers, render
from quantcore import get_model_summary, load_model_variants, load_onnx_model, load_pytorch_model
from quantcore import settings as qc_settings
from quantcore.errors import QuantcoreError
from quantcore.load import VariantKey
from quantcore.paths import resolve_folder
from tests.app_server import served_app
from tests.audit import record_opens

SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "", "/", "\\", "~", "%2e%2e", "..%2f", "\x00", "escape", "inside", "C:", "//"]),
    st.text(min_size=0, max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=6),  # lone surrogates too: JSON can carry them
    st.text(st.characters(min_codepoint=0x80), min_size=90, max_size=140),  # over 255 bytes as UTF-8
)
PATH = st.one_of(
    st.lists(SEGMENT, max_size=6).map("/".join),
    st.lists(SEGMENT, max_size=6),
    st.text(max_size=64),
)
PATH_TEXT = st.one_of(st.lists(SEGMENT, max_size=6).map("/".join), st.text(st.characters(exclude_categories=())))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CODE_ROOTS = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *sysconfig.get_paths().values())})
SURROGATE = re.compile("[\ud800-\udfff]")

CLASSES = {
    "test_path_guard_never_admits_a_path_outside_root": "Fuzzing: path guard",
    "test_explorer_selection_never_maps_outside_root": "Fuzzing: path guard",
    "test_onnx_loader_raises_only_quantcore_errors": "Fuzzing: loaders on random and mutated bytes",
    "test_torch_loader_raises_only_quantcore_errors": "Fuzzing: loaders on random and mutated bytes",
    "test_mutated_real_models_raise_only_quantcore_errors": "Fuzzing: loaders on random and mutated bytes",
    "test_onnx_external_data_locations_stay_in_the_folder": "Fuzzing: ONNX external data locations",
    "test_sidecar_json_never_breaks_a_load": "Fuzzing: variants.json and model_card.json",
    "test_load_folder_handler_answers_every_string": "Fuzzing: /load_folder handler and endpoint",
    "test_load_folder_endpoint_answers_every_string": "Fuzzing: /load_folder handler and endpoint",
    "test_status_text_is_inert_valid_and_one_line": "Fuzzing: status text",
}
EXAMPLES: Counter[str] = Counter()


def counted(test: Callable[..., None]) -> Callable[..., None]:
    """Count the examples Hypothesis runs (the report states them)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        EXAMPLES[test.__name__] += 1
        test(*args, **kwargs)

    return run


@pytest.fixture(autouse=True)
def _tally(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Iterator[None]:
    name = request.node.originalname
    before = EXAMPLES[name]
    yield
    record_property("reliability_class", CLASSES[name])
    record_property("cases", EXAMPLES[name] - before)


def _inside(path: str, roots: list[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real == str(r) or real.startswith(f"{r}/") for r in [*roots, *map(Path, CODE_ROOTS)])


def _inert(markdown: str) -> bool:
    rendered = MarkdownIt("commonmark", {"html": True}).render(markdown)
    return set(re.findall(r"</?([A-Za-z][A-Za-z0-9]*)", rendered)) <= {"p", "strong", "ul", "li", "em"}


def _no_progress(*args: object, **kwargs: object) -> None:
    pass


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("guard")
    root = base / "root"
    (root / "inside" / "deeper").mkdir(parents=True)
    (base / "outside").mkdir()
    os.symlink(base / "outside", root / "escape")
    os.symlink(root / "inside", root / "alias")  # a link that stays inside is fine
    return root


# ----------------------------------------------------------------- path guard


@settings(FUZZ, max_examples=400)
@given(PATH)
@counted
def test_path_guard_never_admits_a_path_outside_root(sandbox: Path, candidate: Any) -> None:
    try:
        resolved = resolve_folder(candidate, root=sandbox)
    except QuantcoreError:
        return
    assert resolved.is_relative_to(sandbox.resolve())
    assert resolved.is_dir()


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(["", "ROOT/", "ROOT/../", "/", "ROOT/escape/", "ROOT/alias/"]), PATH_TEXT)
@counted
def test_explorer_selection_never_maps_outside_root(sandbox: Path, prefix: str, text: str) -> None:
    """What the file explorer hands over (an absolute path) is re-checked before anything loads."""
    selected = prefix.replace("ROOT", str(sandbox)) + text
    try:
        folder = resolve_folder(handlers.explorer_folder(selected, root=sandbox), root=sandbox)
    except QuantcoreError:
        return
    assert folder.is_relative_to(sandbox.resolve()) and folder.is_dir()


# --------------------------------------------------------------------- loaders


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=4096), st.sampled_from(["", "PK\x03\x04", "\x08\x07\x12\x04", "\x80\x02"]))
@counted
def test_onnx_loader_raises_only_quantcore_errors(tmp_path: Path, payload: bytes, prefix: str) -> None:
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(prefix.encode("latin-1") + payload)
    with contextlib.suppress(QuantcoreError):
        load_onnx_model(path)


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=4096), st.sampled_from(["", "PK\x03\x04", "\x80\x02", "\x80\x04\x95"]), st.booleans())
@counted
def test_torch_loader_raises_only_quantcore_errors(tmp_path: Path, payload: bytes, prefix: str, trusted: bool) -> None:
    path = tmp_path / "fuzz.pt"
    path.write_bytes(prefix.encode("latin-1") + payload)
    with contextlib.suppress(QuantcoreError):
        load_pytorch_model(path, trusted=trusted)


@settings(FUZZ, max_examples=30)
@given(st.data())
@counted
def test_mutated_real_models_raise_only_quantcore_errors(built_variants: Path, tmp_path: Path, data: Any) -> None:
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


@pytest.fixture(scope="module")
def external_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with real external data, a symlink and a hard link to a file outside, and a subfolder."""
    base = tmp_path_factory.mktemp("external")
    (base / "outside.bin").write_bytes(bytes(64))
    folder = base / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "data.bin").write_bytes(bytes(64))
    (folder / "link.bin").symlink_to(base / "outside.bin")
    os.link(base / "outside.bin", folder / "hard.bin")
    return folder


LOCATION = st.one_of(
    st.lists(
        st.sampled_from(["..", ".", "", "data.bin", "link.bin", "hard.bin", "sub", "model", "outside.bin", "\x00"]),
        min_size=1,
        max_size=5,
    ).map("/".join),
    st.sampled_from(["/etc/passwd", "/proc/self/environ", "/dev/zero", "data.bin", "./data.bin", "sub/../data.bin"]),
    st.text(max_size=300),
)
NUMBER = st.one_of(st.integers(-20, 200).map(str), st.text(max_size=6))


@settings(FUZZ, max_examples=200)
@given(LOCATION, NUMBER, NUMBER)
@counted
def test_onnx_external_data_locations_stay_in_the_folder(
    external_folder: Path, location: str, offset: str, length: str
) -> None:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight],
    )  # fmt: skip
    path = external_folder / "model.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with record_opens() as opened:
        try:
            load_onnx_model(path)
            loaded = True
        except QuantcoreError:
            loaded = False
    assert [p for p in opened if not _inside(p, [external_folder.resolve()])] == []
    if loaded:
        assert os.path.realpath(external_folder / location) == str((external_folder / "data.bin").resolve())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
FILE_NAME = st.sampled_from(["tiny.onnx", "tiny_int8.onnx", "../x.onnx", "/etc/passwd", "link.onnx", "", ".", ".."])
MANIFEST = st.one_of(
    JSON, st.dictionaries(st.sampled_from([*map(str, VariantKey), "other"]), FILE_NAME | JSON, max_size=5)
)
SHAPE = st.one_of(JSON, st.lists(st.integers(-2, 64), max_size=6), st.lists(st.booleans(), max_size=4))
CARD = st.one_of(JSON, st.fixed_dictionaries({"preprocessing": JSON | st.fixed_dictionaries({"shape": SHAPE})}))


@pytest.fixture(scope="module")
def sidecar_folder(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sidecars")
    shutil.copy(built_variants / "tiny_int8.onnx", base / "elsewhere.onnx")
    folder = base / "tiny"
    folder.mkdir()
    for name in ("tiny.onnx", "tiny_int8.onnx"):
        shutil.copy(built_variants / name, folder / name)
    (folder / "link.onnx").symlink_to(base / "elsewhere.onnx")
    return folder


@settings(FUZZ, max_examples=60)
@given(MANIFEST, CARD)
@counted
def test_sidecar_json_never_breaks_a_load(sidecar_folder: Path, manifest: Any, card: Any) -> None:
    (sidecar_folder / "variants.json").write_text(json.dumps(manifest))
    (sidecar_folder / "model_card.json").write_text(json.dumps(card))
    with record_opens() as opened:
        summary = get_model_summary(load_model_variants(sidecar_folder))
    json.dumps(summary)
    assert all(isinstance(line, str) for line in summary["notes"] + summary["warnings"])
    assert {v["status"] for v in summary["variants"].values()} <= {"loaded", "missing", "error", "refused"}
    assert [p for p in opened if not _inside(p, [sidecar_folder.resolve()])] == []


# ---------------------------------------------------------------- the handler


@pytest.fixture(scope="module")
def served_sandbox(sandbox: Path, built_variants: Path) -> Iterator[Path]:
    """The sandbox as the models root, with a real variant inside and one outside it."""
    shutil.copy(built_variants / "tiny.onnx", sandbox / "inside" / "tiny.onnx")
    shutil.copy(built_variants / "tiny.onnx", sandbox.parent / "outside" / "tiny.onnx")
    before = qc_settings.current()
    qc_settings.configure(models_root=sandbox)
    yield sandbox
    qc_settings.configure(**before.__dict__)


def _check_answer(sandbox: Path, summary: dict[str, Any] | None, status: str, opened: list[str]) -> None:
    assert status[:1] in render.ICONS.values(), status
    assert "Something went wrong" not in status, "an unexpected exception reached the handler's last guard"
    status.encode("utf-8")
    assert _inert(status), status
    assert [p for p in opened if not _inside(p, [sandbox.resolve()])] == []
    if summary is not None:
        assert (sandbox / summary["folder"]).resolve().is_relative_to(sandbox.resolve())


@settings(FUZZ, max_examples=300)
@given(PATH_TEXT)
@counted
def test_load_folder_handler_answers_every_string(served_sandbox: Path, text: str) -> None:
    with record_opens() as opened:
        summary, status = handlers.load_folder(text, progress=_no_progress)
    _check_answer(served_sandbox, summary, status.markdown, opened)


@pytest.fixture(scope="module")
def sandbox_client(served_sandbox: Path) -> Iterator[Client]:
    with served_app(served_sandbox) as server:
        yield Client(server.url, verbose=False, download_files=False)


@settings(FUZZ, max_examples=40)
@given(PATH_TEXT.filter(lambda text: not SURROGATE.search(text)))  # gradio_client cannot encode lone surrogates
@counted
def test_load_folder_endpoint_answers_every_string(served_sandbox: Path, sandbox_client: Client, text: str) -> None:
    with record_opens() as opened:
        summary, status = sandbox_client.predict(text, api_name="/load_folder")
    _check_answer(served_sandbox, summary, status, opened)


# ------------------------------------------------------------------ status text


@settings(FUZZ, max_examples=300)
@given(st.text(st.characters(exclude_categories=()), max_size=400))
@counted
def test_status_text_is_inert_valid_and_one_line(text: str) -> None:
    escaped = render.escape(text)
    escaped.encode("utf-8")
    assert "\n" not in escaped and _inert(escaped)
    status = render.error_status(QuantcoreError(text), what=text).markdown
    status.encode("utf-8")
    assert _inert(status) and status.count("\n") == 2
