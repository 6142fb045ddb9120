"""Helpers shared by the benchmarks: start a server process and time it to its first HTTP 200."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# No analytics or version checks: they would add network time that is not ours.
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(args: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_200(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Seconds from now until ``url`` answers 200 (polled every 20 ms)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


BUNDLED_MODELS = PROJECT_ROOT / "models" / "resnet8"


def model_folder(requested: Path | None, scratch: Path, *, samples: int = 0) -> tuple[Path, str]:
    """The folder to benchmark and where it came from: ``requested`` or the bundled ResNet8 when
    complete, else the five tiny test variants built in ``scratch`` (with ``samples`` generated
    labelled images when the benchmark needs a samples.npz)."""
    import warnings

    folder = requested or BUNDLED_MODELS
    complete = folder.is_dir() and any(folder.glob("*.onnx")) and any(folder.glob("*.pt"))
    if complete and (not samples or (folder / "samples.npz").is_file()):
        return folder, str(folder)
    sys.path.insert(0, str(PROJECT_ROOT))
    from tests.conftest import _build_variants

    built = scratch / "tiny"
    built.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _build_variants(built)
    if not samples:
        return built, f"{folder} has no variants: built the five tiny test variants in a temp dir"
    import numpy as np

    from quantcore.data import datasets

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (samples, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, samples).astype(np.int64)
    datasets.save_samples(built / "samples.npz", datasets.LabelledImages(images, labels, datasets.FASHION_MNIST_LABELS))
    return built, f"{folder} is incomplete: built the five tiny test variants and {samples} generated samples"


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """Sample RSS every 2 ms over the block; afterwards the dict holds ``before`` and ``growth`` (peak - before), MB."""
    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.002)

    figures = {"before": before, "growth": 0.0}
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
        figures["growth"] = max(peak[0], rss_mb()) - before
