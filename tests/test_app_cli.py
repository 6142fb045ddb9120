"""app.py: flags, settings, the module-level demo, and `python app.py --share` when no tunnel can be made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

import app
from quantcore import settings
from tests.app_server import HOST, PROJECT_ROOT, free_port

STARTUP_TIMEOUT_S = 60


@pytest.fixture
def restore_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("QP_MODELS_DIR", settings.TRUST_REMOTE_ENV):
        monkeypatch.delenv(name, raising=False)  # apply_settings writes these; monkeypatch puts them back
    before = settings.current()
    yield
    settings.configure(**before.__dict__)


def test_defaults_listen_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share, args.models_dir, args.trust_remote_models) == (
        "127.0.0.1", 7860, False, None, False,
    )  # fmt: skip


def test_spaces_server_name_and_port_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7861)
    assert app.parse_args(["--host", "127.0.0.2"]).host == "127.0.0.2"


def test_missing_models_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        app.parse_args(["--models-dir", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_flags_reach_quantcore_settings(tmp_path: Path, restore_settings: None) -> None:
    applied = app.apply_settings(app.parse_args(["--models-dir", str(tmp_path), "--trust-remote-models"]))
    assert applied.models_root == tmp_path.resolve() and applied.trust_remote_models is True
    assert settings.current() == applied
    # Reload mode re-imports app.py: the environment carries the flags across.
    assert os.environ["QP_MODELS_DIR"] == str(tmp_path.resolve())
    assert os.environ[settings.TRUST_REMOTE_ENV] == "1"


def test_no_flags_change_nothing(restore_settings: None) -> None:
    before = settings.current()
    assert app.apply_settings(app.parse_args([])) == before


def test_module_level_demo_for_spaces_and_reload_mode() -> None:
    assert isinstance(app.demo, gr.Blocks)
    assert app.demo.analytics_enabled is False  # no calls home: tests and offline users stay on the machine
    assert "/load_folder" in {d.api_name and f"/{d.api_name}" for d in app.demo.fns.values()}


def test_startup_imports_no_model_runtime() -> None:
    # torch alone costs seconds: the app must start as fast as a plain Gradio app and load it on first use.
    code = "import sys, app; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _wait_for_200(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT_S:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited early with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"app.py did not answer within {STARTUP_TIMEOUT_S} s")


def _wait_for_text(log: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if text in output:
            return output
        time.sleep(0.1)
    pytest.fail(f"{text!r} not logged within {timeout} s:\n{log.read_text(errors='replace')}")


def test_share_without_a_tunnel_keeps_serving_locally(tmp_path: Path, built_variants: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(built_variants, models / "tiny")
    port = free_port()
    dead_proxy = f"http://{HOST}:{free_port()}"  # nothing listens: the tunnel request fails at once, on loopback
    env = {
        **os.environ,
        "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy, "ALL_PROXY": dead_proxy, "NO_PROXY": f"{HOST},localhost",
        "HF_HOME": str(tmp_path / "hf_home"), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    command = [sys.executable, "app.py", "--port", str(port), "--models-dir", str(models), "--share"]
    log = tmp_path / "app.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}/"
        _wait_for_200(url, proc, log)
        output = _wait_for_text(log, "No share link could be created", timeout=30)
        summary, status = Client(url, verbose=False, download_files=False).predict("tiny", api_name="/load_folder")
        assert summary is not None and summary["total_loaded"] == 5, status
        assert proc.poll() is None, "the app stopped after failing to make a share link"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in output


def _front_matter() -> dict[str, str]:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must start with the Spaces front matter"
    block = text.split("---\n", 2)[1]
    return {k.strip(): v.strip().strip('"') for k, v in (line.split(":", 1) for line in block.splitlines())}


def _pins(name: str) -> dict[str, str]:
    lines = (PROJECT_ROOT / name).read_text(encoding="utf-8").splitlines()
    return dict(line.split("==", 1) for line in lines if line and not line.startswith(("#", "-r")))


def test_spaces_front_matter_matches_requirements() -> None:
    meta, pins = _front_matter(), _pins("requirements.txt")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["python_version"] == "3.11"
    assert meta["sdk_version"] == pins["gradio"] == gr.__version__
    assert pins["torch"] == "2.13.0"  # exactly: a looser pin pulls a CUDA build
    assert meta["license"] and meta["title"] and meta["emoji"]
    assert set(_pins("requirements-dev.txt")) >= {"pytest", "playwright", "hypothesis", "olah", "gradio_client"}
    assert "-r requirements.txt" in (PROJECT_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
