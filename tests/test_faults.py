"""Faults on a shared server: unreadable files, a full or read-only Hub cache, a Hub server killed mid-download.

Each fault is real, not mocked:

* permission denied: the load runs in a child process that keeps uid 0 but
  drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``setpriv``), so mode 000
  files owned by root are refused by the kernel as for any other user (this
  machine runs tests as root, and a uid drop cannot reach Python under /root);
* a full or read-only cache: the pull runs in a child in a private mount
  namespace over a size-limited or read-only tmpfs (``unshare -m``); where
  mounts are not permitted, a file-size rlimit (EFBIG) or a read-only folder in
  a capability-dropped child stands in, and the test records which it used;
* a killed Hub: the Hub-contract server runs in its own process and is sent
  SIGKILL while it holds a download half sent.

After each fault the tests check the status says what happened, nothing broken
is left for the cache to trust, and the next request succeeds.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client

from gradio_app.render import ICONS, Kind
from tests.app_server import served_app
from tests.conftest import VARIANT_FILES
from tests.hub_servers import HubContractServer, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUCCESS, WARNING, ERROR = ICONS[Kind.SUCCESS], ICONS[Kind.WARNING], ICONS[Kind.ERROR]
# TorchScript is refused from the Hub unless trusted: leave it out so a good pull is a plain success.
HUB_FILES = sorted(name for name in VARIANT_FILES.values() if name != "tiny_int8.pt")
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
RESULT = "RESULT "
CHILD = "import sys; from tests import test_faults; test_faults.{}(*sys.argv[1:])"
Record = Callable[[str, object], None]


# ------------------------------------------------------------- child processes


def run_child(function: str, *args: str, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> Any:
    """Run ``tests.test_faults.<function>(*args)`` in a fresh Python and return the JSON it reports."""
    done = subprocess.run(
        [*(prefix or []), sys.executable, "-c", CHILD.format(function), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    assert done.returncode == 0 and lines, (
        f"child failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return json.loads(lines[-1][len(RESULT) :])


def _report(result: object) -> None:
    print(RESULT + json.dumps(result), flush=True)


def _pull(repo_id: str) -> dict[str, Any]:
    from gradio_app import handlers

    summary, status = handlers.pull_hub(repo_id, progress=lambda *a, **k: None)
    loaded = sorted(k for k, v in (summary or {}).get("variants", {}).items() if v["status"] == "loaded")
    return {"status": status.markdown, "loaded": loaded}


def _untrustworthy(cache: Path, built: Path) -> list[str]:
    """Snapshot files whose bytes are not the repo's: what a poisoned cache would serve."""
    return [
        str(path.relative_to(cache))
        for path in sorted(cache.glob("models--*/snapshots/*/*"))
        if not path.is_file() or path.read_bytes() != (built / path.name).read_bytes()
    ]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def child_full_cache(mechanism: str, cache: str, built: str) -> None:
    """Pull into a cache that fills up, check what is left, make room, pull again."""
    folder = Path(cache)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    if mechanism == "tmpfs":
        _mount("-t", "tmpfs", "-o", "size=200k", "tmpfs", cache)  # holds one float file, not two
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, hard))
    first = _pull("org/tiny")
    poisoned = _untrustworthy(folder, Path(built))
    if mechanism == "tmpfs":
        _mount("-o", "remount,size=20m", cache)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    _report(
        {
            "first": first,
            "poisoned": poisoned,
            "second": _pull("org/tiny"),
            "after": _untrustworthy(folder, Path(built)),
        }
    )


def child_read_only_cache(mechanism: str, cache: str, built: str) -> None:
    """Pull one repo, make the cache read-only, pull it and another, make it writable, pull again."""
    folder = Path(cache)
    if mechanism == "tmpfs":
        _mount("-t", "tmpfs", "-o", "size=20m", "tmpfs", cache)
    cached = _pull("org/cached")
    if mechanism == "tmpfs":
        _mount("-o", "remount,ro", cache)
    else:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
    result = {"cached": cached, "cached_again": _pull("org/cached"), "first": _pull("org/tiny")}
    result["poisoned"] = _untrustworthy(folder, Path(built))
    if mechanism == "tmpfs":
        _mount("-o", "remount,rw", cache)
    else:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    result["second"] = _pull("org/tiny")
    result["after"] = _untrustworthy(folder, Path(built))
    _report(result)


def child_load_folders(*names: str) -> None:
    """Load each folder through the handler, as the app would, in this (capability-dropped) process."""
    from gradio_app import handlers

    answers = []
    for name in names:
        summary, status = handlers.load_folder(name, progress=lambda *a, **k: None)
        variants = (summary or {}).get("variants", {})
        answers.append({
            "status": status.markdown,
            "loaded": sorted(k for k, v in variants.items() if v["status"] == "loaded"),
            "errors": {k: v["error"] for k, v in variants.items() if v.get("error")},
        })  # fmt: skip
    _report(answers)


def child_hub_server(port: str, built: str, stall: str) -> None:
    """The Hub-contract server on a fixed port, in this process, until it is killed."""
    from http.server import ThreadingHTTPServer

    from tests import hub_servers

    class FixedPort(ThreadingHTTPServer):  # the same endpoint before and after the kill
        def __init__(self, address: tuple[str, int], handler: Any) -> None:
            super().__init__((address[0], int(port)), handler)

    hub_servers.ThreadingHTTPServer = FixedPort  # type: ignore[misc]
    with hub_servers.HubContractServer() as server:
        server.add_commit("org/tiny", {name: Path(built) / name for name in HUB_FILES})
        if stall:
            server.stall(stall)
        print("ready", flush=True)
        if stall and server.stalled.wait(timeout=120):
            print("stalled", flush=True)
        time.sleep(600)


# ----------------------------------------------------------------- mechanisms


def _namespace_mounts_work(scratch: Path) -> bool:
    scratch.mkdir(exist_ok=True)
    probe = ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs tmpfs '{scratch}'"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def mount_mechanism(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``tmpfs`` (real ENOSPC and EROFS) where this machine lets us mount in a private namespace, else ``fallback``."""
    if os.environ.get("QP_FAULTS_MECHANISM") == "fallback":  # to exercise the fallback where mounts work
        return "fallback"
    return "tmpfs" if _namespace_mounts_work(tmp_path_factory.mktemp("probe") / "mnt") else "fallback"


@pytest.fixture(scope="module")
def hub(built_variants: Path) -> Iterator[HubContractServer]:
    with HubContractServer() as server:
        for repo_id in ("org/tiny", "org/cached"):
            server.add_commit(repo_id, {name: built_variants / name for name in HUB_FILES})
        yield server


# ------------------------------------------------------------------ the tests


def test_permission_denied_on_a_variant_file_and_a_folder(
    built_variants: Path, tmp_path: Path, record_property: Record
) -> None:
    record_property("reliability_class", "Permission denied")
    record_property("cases", 2)
    root = tmp_path / "models"
    for name in ("good", "locked-file", "locked-folder"):
        shutil.copytree(built_variants, root / name)
    (root / "locked-file" / "tiny.pt").chmod(0o000)
    (root / "locked-folder").chmod(0o000)

    good, locked_file, locked_folder, again = run_child(
        "child_load_folders", "good", "locked-file", "locked-folder", "good",
        prefix=NO_DAC, env={"QP_MODELS_DIR": str(root)},
    )  # fmt: skip

    assert good["status"].startswith(SUCCESS) and len(good["loaded"]) == 5, "the child could not read its own files"
    assert locked_file["errors"] == {"pytorch_float": "tiny.pt: Permission denied"}
    assert locked_file["status"].startswith(f"{WARNING} **Loaded 4 of 5 variants from locked\\-file")
    assert "pytorch\\_float (error): tiny\\.pt\\: Permission denied" in locked_file["status"]
    assert str(root) not in json.dumps(locked_file), "a server path reached the client"
    assert locked_folder["status"] == (
        f"{ERROR} **Cannot open locked\\-folder**\n\n- folder cannot be read\\: Permission denied"
    )
    assert again["status"].startswith(SUCCESS) and len(again["loaded"]) == 5


def _cache_env(hub: HubContractServer, cache: Path, tmp_path: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}


def test_hub_download_into_a_full_cache(
    hub: HubContractServer, mount_mechanism: str, built_variants: Path, tmp_path: Path, record_property: Record
) -> None:
    record_property("reliability_class", "Hub cache full")
    record_property("mechanism", "tmpfs of 200 KB" if mount_mechanism == "tmpfs" else "RLIMIT_FSIZE 150 KB")
    cache = tmp_path / "cache"
    cache.mkdir()
    private = ["unshare", "-m", "--propagation", "private"] if mount_mechanism == "tmpfs" else []
    mechanism = "tmpfs" if private else "rlimit"

    result = run_child(
        "child_full_cache", mechanism, str(cache), str(built_variants),
        prefix=private, env=_cache_env(hub, cache, tmp_path),
    )  # fmt: skip

    reason = "No space left on device" if mechanism == "tmpfs" else "File too large"
    first = result["first"]
    assert first["status"].startswith(f"{ERROR} **Cannot pull org/tiny**"), first
    assert f"the local Hugging Face cache \\(HF\\_HUB\\_CACHE\\) is full \\({reason}\\)" in first["status"]
    assert "Free space there" in first["status"] and "broke off" not in first["status"]
    assert result["poisoned"] == [], "a partial file was left where the cache trusts it"
    assert result["second"]["status"].startswith(f"{SUCCESS} **Loaded 4 of 4 variants from org/tiny")
    assert result["after"] == []


def test_hub_download_into_a_read_only_cache(
    hub: HubContractServer, mount_mechanism: str, built_variants: Path, tmp_path: Path, record_property: Record
) -> None:
    record_property("reliability_class", "Hub cache read-only")
    record_property("cases", 2)
    record_property("mechanism", "tmpfs remounted ro" if mount_mechanism == "tmpfs" else "mode 555, no DAC override")
    cache = tmp_path / "cache"
    cache.mkdir()
    prefix = ["unshare", "-m", "--propagation", "private"] if mount_mechanism == "tmpfs" else NO_DAC

    result = run_child(
        "child_read_only_cache", "tmpfs" if mount_mechanism == "tmpfs" else "chmod", str(cache),
        str(built_variants), prefix=prefix, env=_cache_env(hub, cache, tmp_path),
    )  # fmt: skip

    assert result["cached"]["status"].startswith(f"{SUCCESS} **Loaded 4 of 4 variants from org/cached")
    # What the cache already holds still loads: a read-only cache is a fine way to serve a fixed set.
    assert result["cached_again"]["status"].startswith(f"{SUCCESS} **Loaded 4 of 4 variants from org/cached")
    assert "up to date" in result["cached_again"]["status"]
    reason = "Read\\-only file system" if mount_mechanism == "tmpfs" else "Permission denied"
    first = result["first"]
    assert first["status"].startswith(f"{ERROR} **Cannot pull org/tiny**"), first
    assert f"\\(HF\\_HUB\\_CACHE\\) cannot be written \\({reason}\\)" in first["status"]
    assert "broke off" not in first["status"]
    assert result["poisoned"] == []
    assert result["second"]["status"].startswith(f"{SUCCESS} **Loaded 4 of 4 variants from org/tiny")
    assert result["after"] == []


@pytest.mark.timeout(180)
def test_hub_server_killed_mid_download(
    built_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: Record
) -> None:
    record_property("reliability_class", "Hub server killed mid-download")
    port = str(free_port())
    endpoint = f"http://127.0.0.1:{port}"
    root = tmp_path / "models"
    shutil.copytree(built_variants, root / "good")

    def start_server(stall: str) -> subprocess.Popen[str]:
        server = subprocess.Popen(
            [sys.executable, "-c", CHILD.format("child_hub_server"), port, str(built_variants), stall],
            cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        return server

    monkeypatch.setenv("HF_ENDPOINT", endpoint)  # the in-process app reads it on every pull
    server = start_server("tiny.onnx")
    try:
        with served_app(root) as app:
            client = Client(app.url, verbose=False, download_files=False)
            outcome: dict[str, Any] = {}
            pulling = threading.Thread(
                target=lambda: outcome.update(answer=client.predict("org/tiny", api_name="/pull_hub"))
            )
            pulling.start()
            assert server.stdout is not None and server.stdout.readline().strip() == "stalled"

            # While a pull hangs on a half-sent file, folder loads are still served.
            started = time.perf_counter()
            summary, status = client.predict("good", api_name="/load_folder")
            assert status.startswith(SUCCESS) and time.perf_counter() - started < 30

            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            pulling.join(timeout=120)
            assert not pulling.is_alive(), "the pull never gave up on a dead server"
            summary, status = outcome["answer"]
            assert summary is None
            assert status.startswith(f"{ERROR} **Cannot pull org/tiny**"), status
            assert "broke off" in status and "Pull again" in status

            cache = tmp_path / "hf_home" / "hub"
            assert _untrustworthy(cache, built_variants) == [], "a partial file was left where the cache trusts it"
            assert not list(cache.glob("models--org--tiny/snapshots/*/tiny.onnx"))

            server = start_server("")
            summary, status = client.predict("org/tiny", api_name="/pull_hub")
            assert status.startswith(f"{SUCCESS} **Loaded 4 of 4 variants from org/tiny"), status
            assert "tiny.onnx" in summary["hub"]["downloaded"]
            assert _untrustworthy(cache, built_variants) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
