"""A hostile Hub cannot make a pull download too much, for too long, or leave anything behind.

Each test serves the attack from ``HubContractServer`` on 127.0.0.1 and pulls
it with the real client (``hub.pull_model_variants``). What every test holds:
the error names the limit; the time the pull took; how many bytes reached the
disk (a watcher samples the repo's cache folder while the pull runs); and that
nothing of the pull is left in the Hub cache afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcore import settings
from quantcore.errors import HubLimitError
from quantcore.load import hub, hub_transfer
from tests.conftest import VARIANT_FILES
from tests.hub_servers import ENDLESS, LOOPBACK, OVERSIZE, TRICKLE, HubContractServer, free_port, git_blob_sha1

pytestmark = [
    pytest.mark.hub,
    pytest.mark.reliability("Hostile Hub: listed sizes, endless and trickling bodies, many files"),
]

TINY_FILES = sorted(VARIANT_FILES.values())
GB = 1024**3


@pytest.fixture(autouse=True)
def _hub_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_ENDPOINT", f"http://{LOOPBACK}:{free_port()}")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    before = settings.current()
    yield
    settings.configure(**before.__dict__)


@pytest.fixture
def server() -> Iterator[HubContractServer]:
    with HubContractServer() as hub_server:
        yield hub_server


def _repo_cache(tmp_path: Path, repo_id: str) -> Path:
    return tmp_path / "hf_home" / "hub" / ("models--" + repo_id.replace("/", "--"))


class DiskWatcher:
    """Samples the size of every file under a folder every few milliseconds while a pull runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sizes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for dirpath, _, names in os.walk(self.folder):
                for name in names:
                    try:
                        size = os.lstat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        continue
                    self.sizes[name] = max(self.sizes.get(name, 0), size)
            time.sleep(0.005)

    def largest(self, prefix: str) -> int:
        """The most bytes any file whose name starts with ``prefix`` ever held (0: none was seen)."""
        return max((size for name, size in self.sizes.items() if name.startswith(prefix)), default=0)

    def __enter__(self) -> DiskWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _pull_refused(server: HubContractServer, repo_id: str, match: str, **kwargs: object) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(HubLimitError, match=match) as raised:
        hub.pull_model_variants(repo_id, endpoint=server.endpoint, **kwargs)  # type: ignore[arg-type]
    return str(raised.value), time.perf_counter() - started


def _tiny(server: HubContractServer, built_variants: Path, repo_id: str, **extra: bytes) -> str:
    return server.add_commit(repo_id, {**{n: built_variants / n for n in TINY_FILES}, **extra})


# ----------------------------------------------------- refused from the listing


def test_multi_gb_file_is_refused_from_its_listed_size(
    server: HubContractServer, built_variants: Path, tmp_path: Path
) -> None:
    """A 5 GB variant (only ever listed, never made) was downloaded whole, then refused, and kept."""
    _tiny(server, built_variants, "org/huge")
    server.list_size("org/huge", "tiny_int8.onnx", 5 * GB)

    message, seconds = _pull_refused(server, "org/huge", r"tiny_int8\.onnx is listed at 5,120\.0 MB")

    assert "over the 512.0 MB limit per file (QP_MAX_MODEL_MB). Nothing was downloaded." in message
    assert seconds < 5
    assert [r.method for r in server.requests() if "/resolve/" in r.path] == [], "not even a HEAD"
    assert not _repo_cache(tmp_path, "org/huge").exists(), "a refused pull writes nothing"


def test_files_over_the_pull_total_are_refused(server: HubContractServer, built_variants: Path, tmp_path: Path) -> None:
    _tiny(server, built_variants, "org/heavy")
    settings.configure(hub_max_total_bytes=500_000)  # the five tiny files are ~0.95 MB together
    message, _ = _pull_refused(server, "org/heavy", r"its 5 files are listed at 0\.9 MB together")
    assert "over the 0.5 MB limit per pull (QP_HUB_MAX_TOTAL_MB)" in message
    assert server.file_downloads() == []
    assert not _repo_cache(tmp_path, "org/heavy").exists()


def test_thousands_of_model_files_are_refused_up_front(server: HubContractServer, tmp_path: Path) -> None:
    """2,001 tiny .onnx files were all downloaded, and the page showed a junk stem."""
    server.add_commit("org/crowd", {f"m{n:04}.onnx": b"x" for n in range(2001)})
    message, seconds = _pull_refused(server, "org/crowd", r"its root folder lists 2,001 model files")
    assert "at most 32 (QP_HUB_MAX_FILES)" in message and "Name a subfolder" in message
    assert seconds < 5
    assert server.file_downloads() == []
    assert not _repo_cache(tmp_path, "org/crowd").exists()


def test_a_listing_in_one_huge_page_is_cut_at_the_api_budget(server: HubContractServer, built_variants: Path) -> None:
    _tiny(server, built_variants, "org/long-list")
    server.filler("org/long-list", 250_000)  # one ~25 MB JSON page
    _, seconds = _pull_refused(server, "org/long-list", "its listings ran past 16 MB")
    assert seconds < 10
    assert server.file_downloads() == []


def test_a_paged_listing_over_the_entry_cap_is_refused(server: HubContractServer, built_variants: Path) -> None:
    _tiny(server, built_variants, "org/many-pages")
    server.filler("org/many-pages", 1_000_000, page_size=1000)
    _, seconds = _pull_refused(server, "org/many-pages", "lists more than 10,000 entries")
    tree_pages = [r for r in server.requests() if "/tree/" in r.path]
    assert len(tree_pages) <= 11, "paging stopped at the cap"
    assert seconds < 10
    assert server.file_downloads() == []


def test_of_many_stems_only_the_one_named_like_the_repo_comes(
    server: HubContractServer, built_variants: Path, tmp_path: Path
) -> None:
    files: dict[str, Path | bytes] = {f"resnet8{n[4:]}": built_variants / n for n in TINY_FILES}
    files |= {f"other{n}.onnx": built_variants / "tiny.onnx" for n in range(4)}
    files |= {"zz_int8.onnx": built_variants / "tiny_int8.onnx", "zz_uint8.onnx": built_variants / "tiny_uint8.onnx"}
    commit = server.add_commit("org/resnet8", files)

    pulled = hub.pull_model_variants("org/resnet8", endpoint=server.endpoint)

    assert set(pulled.files) == {f"resnet8{n[4:]}" for n in TINY_FILES}
    fetched = {path.rsplit("/", 1)[-1] for path in server.file_downloads()}
    assert fetched == set(pulled.files), "other stems stay on the Hub"
    (note,) = pulled.notes
    assert note == "several model stems in the repo's root folder; pulled 'resnet8' only (not: other0, other1, " + (
        "other2, other3, zz)"
    )
    variants = pulled.load()
    assert variants.loaded.stem == "resnet8" and len([v for v in variants.values() if v is not None]) == 4
    # The same choice is made again from the cached listing: the re-pull downloads nothing.
    server.clear_log()
    again = hub.pull_model_variants("org/resnet8", endpoint=server.endpoint)
    assert again.from_cache and server.file_downloads() == []
    assert (_repo_cache(tmp_path, "org/resnet8") / "snapshots" / commit).is_dir()


def test_without_the_repos_name_the_most_complete_stem_comes(server: HubContractServer, built_variants: Path) -> None:
    files: dict[str, Path | bytes] = {n: built_variants / n for n in TINY_FILES}
    files |= {"a.onnx": built_variants / "tiny.onnx"}
    server.add_commit("org/models", files)
    pulled = hub.pull_model_variants("org/models", endpoint=server.endpoint)
    assert set(pulled.files) == set(TINY_FILES)
    assert pulled.notes[0].startswith("several model stems in the repo's root folder; pulled 'tiny' only (not: a)")


def test_with_a_manifest_every_model_file_comes(server: HubContractServer, built_variants: Path) -> None:
    files: dict[str, Path | bytes] = {
        "a.onnx": built_variants / "tiny.onnx",
        "b.onnx": built_variants / "tiny_int8.onnx",
    }
    files["variants.json"] = b'{"onnx_float": "a.onnx", "onnx_int8": "b.onnx"}'
    server.add_commit("org/manifest", files)
    pulled = hub.pull_model_variants("org/manifest", endpoint=server.endpoint)
    assert set(pulled.files) == {"a.onnx", "b.onnx", "variants.json"} and pulled.notes == ()
    assert pulled.load().loaded.records.keys()


def test_an_oversized_json_sidecar_stays_on_the_hub(server: HubContractServer, built_variants: Path) -> None:
    _tiny(server, built_variants, "org/card", **{"model_card.json": b" " * (2 * 1024 * 1024)})
    pulled = hub.pull_model_variants("org/card", endpoint=server.endpoint)
    assert "model_card.json" not in pulled.files
    assert pulled.notes == ("model_card.json not pulled: listed at 2.0 MB, over 1 MB",)
    assert not any(path.endswith("model_card.json") for path in server.file_downloads())


# ----------------------------------------------------------- cut while it comes


@pytest.mark.parametrize("mode", [ENDLESS, OVERSIZE])
@pytest.mark.timeout(60)
def test_a_body_past_its_listed_size_is_cut_at_that_size(
    server: HubContractServer, built_variants: Path, tmp_path: Path, mode: str
) -> None:
    """A file listed at 315 KB and served as an endless body wrote 1.8 GB before failing."""
    _tiny(server, built_variants, "org/endless")
    server.hostile("tiny.onnx", mode)
    listed = (built_variants / "tiny.onnx").stat().st_size

    with DiskWatcher(tmp_path / "hf_home") as disk:
        message, seconds = _pull_refused(server, "org/endless", rf"tiny\.onnx sent more than the {listed:,} bytes")

    assert message.endswith("Nothing of it was kept.")
    assert seconds < 10
    # huggingface_hub writes a file to "<etag>.<random>.incomplete" in blobs/.
    written = disk.largest(git_blob_sha1((built_variants / "tiny.onnx").read_bytes()))
    assert written <= listed, f"{written:,} bytes of tiny.onnx reached the disk"
    assert disk.sizes, "the watcher saw the pull's other files come and go"
    assert server.sent["tiny.onnx"] > listed, "the server did send more than it listed"
    assert server.sent["tiny.onnx"] < listed + 64 * 1024**2, "the client hung up instead of reading on"
    assert not _repo_cache(tmp_path, "org/endless").exists(), "nothing of the pull stays in the cache"


@pytest.mark.timeout(60)
def test_a_trickle_is_cut_by_the_minimum_rate(server: HubContractServer, built_variants: Path, tmp_path: Path) -> None:
    """A body trickling one byte every 3 s held a Hub slot for 5 minutes."""
    _tiny(server, built_variants, "org/trickle")
    server.hostile("tiny_int8.onnx", TRICKLE, interval=3.0)
    message, seconds = _pull_refused(server, "org/trickle", r"tiny_int8\.onnx came at 0\.00 KB/s")
    assert "under the 64 KB/s minimum (QP_HUB_MIN_RATE_KBPS)" in message
    # The first window closes at the first byte after 5 s: the second one, at 6 s.
    assert hub_transfer.RATE_WINDOW_SECONDS <= seconds < hub_transfer.RATE_WINDOW_SECONDS + 3 + 3
    assert not _repo_cache(tmp_path, "org/trickle").exists()


@pytest.mark.timeout(60)
def test_a_pull_is_cut_at_its_time_limit(server: HubContractServer, built_variants: Path, tmp_path: Path) -> None:
    _tiny(server, built_variants, "org/slow")
    server.hostile("tiny.pt", TRICKLE, interval=0.2)
    settings.configure(hub_pull_timeout_s=3.0, hub_min_rate_bytes_s=0.0)
    _, seconds = _pull_refused(server, "org/slow", r"the pull took longer than 3 s \(QP_HUB_PULL_TIMEOUT_S\)")
    assert 3 <= seconds < 5
    assert not _repo_cache(tmp_path, "org/slow").exists()


@pytest.mark.timeout(60)
def test_a_body_that_stops_is_cut_after_the_stall_time(
    server: HubContractServer, built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_transfer, "STALL_SECONDS", 1.0)
    _tiny(server, built_variants, "org/stall")
    server.stall("tiny.onnx")  # half the body, then silence
    try:
        _, seconds = _pull_refused(server, "org/stall", r"tiny\.onnx sent nothing for 1 s")
    finally:
        server.release()
    assert seconds < 5
    assert not _repo_cache(tmp_path, "org/stall").exists()


def test_a_cut_pull_keeps_what_the_cache_held_before(
    server: HubContractServer, built_variants: Path, tmp_path: Path
) -> None:
    """The repo was pulled before: a failed pull of a new commit removes only its own blobs."""
    first = _tiny(server, built_variants, "org/kept")
    good = hub.pull_model_variants("org/kept", endpoint=server.endpoint)
    repo_cache = _repo_cache(tmp_path, "org/kept")
    before = sorted(p.name for p in (repo_cache / "blobs").iterdir())

    files: dict[str, Path | bytes] = {n: built_variants / n for n in TINY_FILES}
    files["samples.npz"] = b"PK\x05\x06" + bytes(18)  # a new small file that does come, then is undone
    second = server.add_commit("org/kept", files)
    server.hostile("tiny.onnx", ENDLESS)
    # tiny.onnx's blob is already cached (same bytes), so make the endless file a new one.
    server.repos["org/kept"].commits[second]["tiny.onnx"] = b"changed" + bytes(100)
    with pytest.raises(HubLimitError, match="sent more than the 107 bytes"):
        hub.pull_model_variants("org/kept", endpoint=server.endpoint)

    assert sorted(p.name for p in (repo_cache / "blobs").iterdir()) == before
    assert (repo_cache / "refs" / "main").read_text() == first
    assert all(p.exists() for p in (repo_cache / "snapshots" / second).rglob("*")), "no dangling links"
    assert (good.folder / "tiny.onnx").read_bytes() == (built_variants / "tiny.onnx").read_bytes()
