"""quantcore.load.hub against real Hub-compatible servers on 127.0.0.1.

olah (a self-hosted Hub mirror from PyPI) serves git repos built here; the
Hub-contract server in ``hub_servers`` produces what olah cannot (revision and
entry not found, gated and private repos, transfers that break or stall).
Every test has its own HF_HOME under tmp_path (see conftest).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import quantcore
from quantcore import settings
from quantcore.errors import (
    GatedRepoError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubUnreachableError,
    InvalidRepoIdError,
    NoVariantFilesError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from quantcore.load import hub
from tests.conftest import VARIANT_FILES
from tests.hub_servers import LOOPBACK, HubContractServer, OlahServer, free_port, git_blob_sha1, make_git_repo

pytestmark = pytest.mark.hub

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OLAH_REPO = "org/resnet-tiny"
SENTINEL_TOKEN = "hf_SENTINEL_do_not_show_7c1e"
COMPARED_KEYS = ("total_loaded", "onnx_available", "pytorch_available", "stem", "counts", "variants")
TINY_FILES = sorted(VARIANT_FILES.values())


@pytest.fixture(autouse=True)
def _hub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches beyond loopback by accident, and none inherits a token or offline mode."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://{LOOPBACK}:{free_port()}")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------ olah fixtures


@dataclass(frozen=True)
class OlahRepo:
    server: OlahServer
    v1: str  # tag v1: all five variants, at the root and in models/tiny
    head: str  # main: tiny_uint8.onnx deleted at the root


@pytest.fixture(scope="module")
def olah_repo(built_variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahRepo]:
    work = tmp_path_factory.mktemp("olah")
    first = {name: built_variants / name for name in TINY_FILES}
    first |= {f"models/tiny/{name}": built_variants / name for name in TINY_FILES}
    first |= {
        "model_card.json": b'{"task": "image-classification"}',
        "README.md": b"# tiny\n",
        "notes/big.bin": b"\x00" * 4096,
        "nested/deep/tiny.onnx": built_variants / "tiny.onnx",
    }
    second = {"tiny_uint8.onnx": None, "README.md": b"# tiny, without uint8\n"}
    v1, head = make_git_repo(work / "mirrors", OLAH_REPO, [(first, ["v1"]), (second, [])])
    with OlahServer(work / "mirrors", work / "server") as server:
        yield OlahRepo(server, v1, head)


def _local_summary(built_variants: Path, tmp_path: Path) -> dict[str, Any]:
    """The same five files loaded as a local folder with the same (untrusted) rules."""
    local = Path(shutil.copytree(built_variants, tmp_path / "local" / "tiny"))
    return quantcore.get_model_summary(quantcore.load_model_variants(local, trusted=False))


def _keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _keys(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _keys(item)


# -------------------------------------------------------------------- with olah


def test_pull_by_branch_tag_and_commit(olah_repo: OlahRepo, tmp_path: Path) -> None:
    endpoint = olah_repo.server.endpoint
    by_branch = hub.pull_model_variants(OLAH_REPO, endpoint=endpoint)
    by_tag = hub.pull_model_variants(OLAH_REPO, revision="v1", endpoint=endpoint)
    by_commit = hub.pull_model_variants(OLAH_REPO, revision=olah_repo.v1, endpoint=endpoint)

    assert by_branch.commit == olah_repo.head
    assert by_tag.commit == by_commit.commit == olah_repo.v1
    assert by_tag.folder == by_commit.folder != by_branch.folder
    assert set(by_tag.files) == {*TINY_FILES, "model_card.json"}
    assert set(by_branch.files) == {*TINY_FILES, "model_card.json"} - {"tiny_uint8.onnx"}
    # Everything lands in the cache under this test's HF_HOME, as real bytes.
    assert by_tag.folder.is_relative_to(tmp_path / "hf_home" / "hub" / "models--org--resnet-tiny" / "snapshots")
    # Nothing outside the variant files and sidecars of the root folder came down.
    fetched = {path for method, path in olah_repo.server.requests() if method == "GET" and "/resolve/" in path}
    assert any(path.endswith("/tiny_uint8.onnx") for path in fetched), "olah's access log should list the downloads"
    assert not any(name in path for path in fetched for name in ("README.md", "big.bin", "nested/"))
    assert not (by_tag.folder / "README.md").exists() and not (by_tag.folder / "nested").exists()


def test_pulled_bytes_are_the_repo_bytes(olah_repo: OlahRepo, built_variants: Path) -> None:
    pulled = hub.pull_model_variants(OLAH_REPO, revision="v1", endpoint=olah_repo.server.endpoint)
    for name in TINY_FILES:
        assert (pulled.folder / name).read_bytes() == (built_variants / name).read_bytes(), name


def test_repull_of_the_same_revision_downloads_nothing(olah_repo: OlahRepo) -> None:
    endpoint = olah_repo.server.endpoint
    first = hub.pull_model_variants(OLAH_REPO, revision="v1", endpoint=endpoint)
    assert set(first.downloaded) == set(first.files) and not first.from_cache
    seen = len(olah_repo.server.requests())

    again = hub.pull_model_variants(OLAH_REPO, revision="v1", endpoint=endpoint)

    assert again.from_cache and again.downloaded == ()
    assert (again.commit, again.folder, again.files) == (first.commit, first.folder, first.files)
    time.sleep(0.2)  # let olah flush its access log
    later = olah_repo.server.requests()[seen:]
    assert later, "the re-pull should still ask the endpoint what v1 points at"
    assert not [path for _, path in later if "/resolve/" in path]


def test_subfolder_summary_equals_the_local_folders(
    olah_repo: OlahRepo, built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", olah_repo.server.endpoint)
    summary = hub.pull_and_summarize(OLAH_REPO, revision="v1", subfolder="/models/tiny/")

    local = _local_summary(built_variants, tmp_path)
    assert {k: summary[k] for k in COMPARED_KEYS} == {k: local[k] for k in COMPARED_KEYS}
    assert summary["total_loaded"] == 4
    info = summary["hub"]
    assert info["subfolder"] == "models/tiny" and info["commit"] == olah_repo.v1
    assert sorted(info["files"]) == [f"models/tiny/{name}" for name in TINY_FILES]


def test_root_pull_refuses_torchscript_and_names_the_opt_in(
    olah_repo: OlahRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", olah_repo.server.endpoint)
    summary = hub.pull_and_summarize(OLAH_REPO, revision="v1")

    refused = summary["variants"]["pytorch_int8"]
    assert refused["status"] == "refused"
    assert "TorchScript" in refused["error"] and "--trust-remote-models" in refused["error"]
    assert settings.TRUST_REMOTE_ENV in refused["error"]
    assert summary["trusted"] is False and summary["counts"]["refused"] == 1
    assert summary["variants"]["pytorch_float"]["status"] == "loaded"  # a state_dict is safe
    assert summary["hub"]["revision_requested"] == "v1"
    # JSON-ready, and no "path" key that gradio_client would take for a file.
    json.dumps(summary)
    assert "path" not in set(_keys(summary))


def test_olah_reports_a_missing_repo(olah_repo: OlahRepo) -> None:
    with pytest.raises(RepoNotFoundError, match="HF_TOKEN"):
        hub.pull_model_variants("org/does-not-exist", endpoint=olah_repo.server.endpoint)


# ------------------------------------------------- with the Hub-contract server


@pytest.fixture
def hub_server() -> Iterator[HubContractServer]:
    with HubContractServer() as server:
        yield server


def _tiny_repo(server: HubContractServer, built_variants: Path, repo_id: str = "org/tiny", **kwargs: Any) -> str:
    return server.add_commit(repo_id, {name: built_variants / name for name in TINY_FILES}, **kwargs)


def test_second_pull_makes_no_file_request(hub_server: HubContractServer, built_variants: Path) -> None:
    commit = _tiny_repo(hub_server, built_variants)
    first = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert sorted(hub_server.file_downloads()) == sorted(f"/org/tiny/resolve/{commit}/{n}" for n in TINY_FILES)
    hub_server.clear_log()

    again = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    pinned = hub.pull_model_variants("org/tiny", revision=commit, endpoint=hub_server.endpoint)

    assert again.from_cache and pinned.from_cache and again.folder == pinned.folder == first.folder
    # The branch is looked up again (it may have moved); a fully cached commit needs no request at all.
    assert [r.path for r in hub_server.requests()] == ["/api/models/org/tiny/revision/main"]


def test_revision_not_found(hub_server: HubContractServer, built_variants: Path) -> None:
    _tiny_repo(hub_server, built_variants)
    with pytest.raises(RevisionNotFoundError, match="no branch, tag or commit 'v9'"):
        hub.pull_model_variants("org/tiny", revision="v9", endpoint=hub_server.endpoint)


def test_entry_listed_but_not_served(hub_server: HubContractServer, built_variants: Path) -> None:
    _tiny_repo(hub_server, built_variants)
    hub_server.missing_entry("org/tiny", "tiny.pt")
    with pytest.raises(HubFileNotFoundError, match="entry not found"):
        hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)


def test_gated_repo_without_and_with_a_token(hub_server: HubContractServer, built_variants: Path) -> None:
    _tiny_repo(hub_server, built_variants, "org/gated", gated=True, token=SENTINEL_TOKEN)
    with pytest.raises(GatedRepoError, match="HF_TOKEN"):
        hub.pull_model_variants("org/gated", endpoint=hub_server.endpoint)
    with pytest.raises(GatedRepoError, match="no access"):
        hub.pull_model_variants("org/gated", token="hf_another_account", endpoint=hub_server.endpoint)
    pulled = hub.pull_model_variants("org/gated", token=SENTINEL_TOKEN, endpoint=hub_server.endpoint)
    assert set(pulled.files) == set(TINY_FILES)


def test_private_repo_needs_a_token(hub_server: HubContractServer, built_variants: Path) -> None:
    _tiny_repo(hub_server, built_variants, "org/private", private=True, token=SENTINEL_TOKEN)
    with pytest.raises(RepoNotFoundError, match=r"private.*HF_TOKEN"):
        hub.pull_model_variants("org/private", endpoint=hub_server.endpoint)
    assert not any(r.authorized for r in hub_server.requests())


def test_no_variant_files(hub_server: HubContractServer, built_variants: Path) -> None:
    hub_server.add_commit("org/docs", {"README.md": b"no models here", "weights/model.safetensors": b"x"})
    _tiny_repo(hub_server, built_variants)
    with pytest.raises(NoVariantFilesError, match="no model variant files"):
        hub.pull_model_variants("org/docs", endpoint=hub_server.endpoint)
    with pytest.raises(NoVariantFilesError, match="folder 'not/here'"):
        hub.pull_model_variants("org/tiny", subfolder="not/here", endpoint=hub_server.endpoint)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo_id": ""}, "Give a Hugging Face repo id"),
        ({"repo_id": "a/b/c"}, "not a valid Hugging Face repo id"),
        ({"repo_id": "org/bad..name"}, "not a valid Hugging Face repo id"),
        ({"repo_id": "../../etc"}, "not a valid Hugging Face repo id"),
        ({"repo_id": "org/tiny", "revision": "../../../refs"}, "not a valid branch"),
        ({"repo_id": "org/tiny", "revision": "main branch"}, "not a valid branch"),
        ({"repo_id": "org/tiny", "subfolder": "../outside"}, "not a usable subfolder"),
        ({"repo_id": "org/tiny", "subfolder": "models/*"}, "not a usable subfolder"),
    ],
)
def test_invalid_input_is_refused_before_any_request(
    hub_server: HubContractServer, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRepoIdError, match=message) as raised:
        hub.pull_model_variants(endpoint=hub_server.endpoint, **kwargs)
    assert isinstance(raised.value, ValueError)
    assert hub_server.requests() == []


def test_unreachable_endpoint_fails_fast_and_says_what_to_do() -> None:
    started = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="HF_ENDPOINT") as raised:
        hub.pull_model_variants("org/tiny", endpoint=f"http://{LOOPBACK}:{free_port()}")
    assert time.perf_counter() - started < 2.0
    assert isinstance(raised.value, ConnectionError)


@pytest.mark.timeout(30)
def test_silent_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that accepts connections but never answers is given up on after the revision lookup's timeout."""
    monkeypatch.setattr(hub, "HUB_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        started = time.perf_counter()
        with pytest.raises(HubUnreachableError):
            hub.pull_model_variants("org/tiny", endpoint=f"http://{LOOPBACK}:{silent.getsockname()[1]}")
        assert time.perf_counter() - started < 3.0


def test_unreachable_endpoint_with_a_cached_snapshot_loads_it_and_says_so(
    hub_server: HubContractServer, built_variants: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = _tiny_repo(hub_server, built_variants)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    online = hub.pull_and_summarize("org/tiny")
    quantcore.cache_clear()

    monkeypatch.setenv("HF_ENDPOINT", f"http://{LOOPBACK}:{free_port()}")
    started = time.perf_counter()
    cached = hub.pull_and_summarize("org/tiny")

    assert time.perf_counter() - started < 5.0
    assert cached["hub"]["offline"] is True and cached["hub"]["commit"] == commit
    assert "unreachable" in cached["hub"]["note"]
    assert cached["notes"][-1] == cached["hub"]["note"], "the status lines should say where the files came from"
    assert {k: cached[k] for k in COMPARED_KEYS} == {k: online[k] for k in COMPARED_KEYS}


def test_hub_outage_falls_back_to_the_cache(hub_server: HubContractServer, built_variants: Path) -> None:
    commit = _tiny_repo(hub_server, built_variants)
    _tiny_repo(hub_server, built_variants, "org/never-pulled")
    hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    hub_server.outage(503)

    cached = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert cached.offline and cached.commit == commit and "answered 503" in (cached.offline_reason or "")
    with pytest.raises(HubUnreachableError, match=r"answered 503.*not in the local cache"):
        hub.pull_model_variants("org/never-pulled", endpoint=hub_server.endpoint)


def test_offline_mode_with_a_cached_snapshot(
    hub_server: HubContractServer, built_variants: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = _tiny_repo(hub_server, built_variants, refs=("main", "v1"))
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    hub.pull_and_summarize("org/tiny", revision="v1")
    hub_server.clear_log()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary = hub.pull_and_summarize("org/tiny", revision="v1")

    assert hub_server.requests() == []
    assert summary["hub"]["offline"] is True and summary["hub"]["from_cache"] is True
    assert summary["hub"]["commit"] == commit and "HF_HUB_OFFLINE" in summary["hub"]["note"]
    assert summary["total_loaded"] == 4


def test_offline_mode_without_a_cached_snapshot_says_what_to_do(
    hub_server: HubContractServer, built_variants: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_repo(hub_server, built_variants)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubOfflineError, match="unset HF_HUB_OFFLINE"):
        hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert hub_server.requests() == []


@pytest.mark.timeout(60)
def test_killed_download_is_not_trusted_later(
    hub_server: HubContractServer, built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = _tiny_repo(hub_server, built_variants)
    hub_server.stall("tiny.onnx")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from quantcore.load.hub import pull_model_variants; "
            "pull_model_variants('org/tiny', endpoint=sys.argv[1])",
            hub_server.endpoint,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert hub_server.stalled.wait(timeout=30), "the pull never reached the stalled file"
    finally:
        child.kill()
        child.wait(timeout=10)

    repo_cache = tmp_path / "hf_home" / "hub" / "models--org--tiny"
    good = (built_variants / "tiny.onnx").read_bytes()
    assert not (repo_cache / "blobs" / git_blob_sha1(good)).exists()
    assert not (repo_cache / "snapshots" / commit / "tiny.onnx").exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubOfflineError):
        hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub_server.release()
    pulled = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert "tiny.onnx" in pulled.downloaded
    assert (pulled.folder / "tiny.onnx").read_bytes() == good


def test_transfer_broken_once_resumes_to_identical_bytes(hub_server: HubContractServer, built_variants: Path) -> None:
    _tiny_repo(hub_server, built_variants)
    hub_server.break_transfers("tiny.onnx", 1)
    pulled = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert (pulled.folder / "tiny.onnx").read_bytes() == (built_variants / "tiny.onnx").read_bytes()
    ranged = [r for r in hub_server.requests() if r.path.endswith("/tiny.onnx") and r.method == "GET"]
    assert len(ranged) == 2


def test_transfer_that_keeps_breaking_leaves_nothing_to_trust(
    hub_server: HubContractServer, built_variants: Path, tmp_path: Path
) -> None:
    commit = _tiny_repo(hub_server, built_variants)
    hub_server.break_transfers("tiny.onnx", 100)
    with pytest.raises(HubUnreachableError, match="broke off"):
        hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    repo_cache = tmp_path / "hf_home" / "hub" / "models--org--tiny"
    good = (built_variants / "tiny.onnx").read_bytes()
    assert not (repo_cache / "snapshots" / commit / "tiny.onnx").exists()
    # The first pull of the repo failed: it leaves no folder, not even the files that did come.
    assert not repo_cache.exists()

    hub_server.break_transfers("tiny.onnx", 0)
    pulled = hub.pull_model_variants("org/tiny", endpoint=hub_server.endpoint)
    assert (pulled.folder / "tiny.onnx").read_bytes() == good


class _TouchOnUnpickle:
    """Unpickling this opens (creates) ``marker``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_pickle_from_the_hub_is_refused_and_runs_nothing(
    hub_server: HubContractServer, built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _TouchOnUnpickle(marker)}, evil)
    hub_server.add_commit("org/evil", {"evil.pt": evil, "evil.onnx": built_variants / "tiny.onnx"})
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)

    summary = hub.pull_and_summarize("org/evil")

    record = summary["variants"]["pytorch_float"]
    assert record["status"] == "refused" and "pickle" in record["error"]
    assert "--trust-remote-models" in record["error"]
    assert summary["variants"]["onnx_float"]["status"] == "loaded"
    assert not marker.exists()
    # The control: with trust switched on, the same file does run code.
    pulled = hub.pull_model_variants("org/evil", endpoint=hub_server.endpoint)
    quantcore.load_model_variants(pulled.folder, trusted=True, confine_to=pulled.repo_cache)
    assert marker.exists()


def test_the_token_never_shows(
    hub_server: HubContractServer,
    built_variants: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub.utils import logging as hf_logging

    caplog.set_level(logging.DEBUG)
    hf_logging.set_verbosity_debug()
    try:
        _tiny_repo(hub_server, built_variants, "org/private", private=True, token=SENTINEL_TOKEN)
        _tiny_repo(hub_server, built_variants, "org/gated", gated=True, token="hf_someone_else")
        monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
        monkeypatch.setenv("HF_TOKEN", SENTINEL_TOKEN)

        summary = hub.pull_and_summarize("org/private")
        errors = []
        for repo_id in ("org/gated", "org/missing"):
            with pytest.raises(HubError) as raised:
                hub.pull_and_summarize(repo_id)
            errors.append(f"{raised.value!s} {raised.value!r}")
    finally:
        hf_logging.set_verbosity_warning()

    assert summary["total_loaded"] == 4
    assert any(r.authorized for r in hub_server.requests()), "the token should have been sent"
    assert "authenticated: True" in caplog.text, "huggingface_hub's debug log should have been captured"
    out, err = capfd.readouterr()
    for text in (json.dumps(summary), *errors, caplog.text, out, err):
        assert SENTINEL_TOKEN not in text


def test_hf_hub_cache_and_hf_endpoint_are_read_per_call(
    hub_server: HubContractServer, built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_repo(hub_server, built_variants)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    pulled = quantcore.pull_model_variants("org/tiny")
    assert pulled.folder.is_relative_to(tmp_path / "elsewhere" / "models--org--tiny")
    assert hub_server.file_downloads()
