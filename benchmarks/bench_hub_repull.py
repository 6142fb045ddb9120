"""Benchmark: pulling the same Hub revision a second time downloads nothing and is >= 10x faster.

Serves a repo of five ResNet8-sized variant files from a Hub-compatible server
on 127.0.0.1 (the Hub-contract server from ``tests/hub_servers.py``, or olah
with ``--server olah``), then for each trial, in a fresh Hugging Face cache:
pulls branch ``main`` once (everything downloads), pulls it again (nothing
should: one request resolves the branch), then pulls the commit it resolved to
(no request at all), counting the requests the server saw for each re-pull.

    python benchmarks/bench_hub_repull.py [--trials 5] [--server contract|olah] [--scale 1]

Exits non-zero when a re-pull fetched any file or the branch re-pull was less
than 10x faster than the first pull.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from quantcore.load.hub import pull_model_variants  # noqa: E402
from tests.hub_servers import HubContractServer, OlahServer, make_git_repo  # noqa: E402

logger = logging.getLogger("bench_hub_repull")

REPO_ID = "bench/resnet8"
# Sizes of the bundled ResNet8 variants (float ONNX ~314 KB, quantized ~95 KB).
FILE_SIZES = {
    "resnet8.onnx": 314_000,
    "resnet8_int8.onnx": 95_000,
    "resnet8_uint8.onnx": 95_000,
    "resnet8.pt": 330_000,
    "resnet8_int8.pt": 120_000,
}
REQUIRED_SPEEDUP = 10.0


def _files(scale: int) -> dict[str, bytes]:
    return {name: os.urandom(size * scale) for name, size in FILE_SIZES.items()}


def _trial(endpoint: str, cache: Path, count_requests) -> dict[str, float | int]:
    os.environ["HF_HOME"] = str(cache)
    started = time.perf_counter()
    first = pull_model_variants(REPO_ID, revision="main", endpoint=endpoint)
    first_s = time.perf_counter() - started
    before = count_requests()
    started = time.perf_counter()
    second = pull_model_variants(REPO_ID, revision="main", endpoint=endpoint)
    second_s = time.perf_counter() - started
    time.sleep(0.2)  # olah writes its access log asynchronously
    requests = count_requests()[len(before) :]
    before = count_requests()
    started = time.perf_counter()
    pinned = pull_model_variants(REPO_ID, revision=first.commit, endpoint=endpoint)
    pinned_s = time.perf_counter() - started
    time.sleep(0.2)
    pinned_requests = count_requests()[len(before) :]
    assert second.commit == pinned.commit == first.commit and len(first.downloaded) == len(FILE_SIZES)
    return {
        "first_s": first_s,
        "second_s": second_s,
        "pinned_s": pinned_s,
        "second_requests": len(requests),
        "second_file_requests": sum("/resolve/" in path for _, path in requests),
        "second_downloaded": len(second.downloaded) + len(pinned.downloaded),
        "pinned_requests": len(pinned_requests),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--server", choices=("contract", "olah"), default="contract")
    parser.add_argument("--scale", type=int, default=1, help="multiply every file's size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN"):
        os.environ.pop(name, None)  # each trial's cache is the HF_HOME it sets

    files = _files(args.scale)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_hub_") as tmp:
        work = Path(tmp)
        if args.server == "olah":
            make_git_repo(work / "mirrors", REPO_ID, [(files, [])])
            server_cm = OlahServer(work / "mirrors", work / "olah")
        else:
            server_cm = HubContractServer()
            server_cm.add_commit(REPO_ID, files)
        with server_cm as server:

            def count_requests() -> list[tuple[str, str]]:
                if isinstance(server, OlahServer):
                    return server.requests()
                return [(r.method, r.path) for r in server.requests()]

            for number in range(args.trials):
                results.append(_trial(server.endpoint, work / f"cache{number}", count_requests))

    first = statistics.median(r["first_s"] for r in results)
    second = statistics.median(r["second_s"] for r in results)
    file_requests = max(r["second_file_requests"] for r in results)
    report = {
        "server": args.server,
        "trials": args.trials,
        "bytes": sum(len(data) for data in files.values()),
        "first_pull_ms_median": round(first * 1000, 1),
        "second_pull_ms_median": round(second * 1000, 1),
        "speedup": round(first / second, 1),
        "pinned_commit_repull_ms_median": round(statistics.median(r["pinned_s"] for r in results) * 1000, 2),
        "pinned_commit_repull_requests_max": max(r["pinned_requests"] for r in results),
        "second_pull_requests_max": max(r["second_requests"] for r in results),
        "second_pull_file_requests_max": file_requests,
        "second_pull_files_downloaded_max": max(r["second_downloaded"] for r in results),
    }
    print(json.dumps(report, indent=2))
    ok = (
        file_requests == 0
        and report["second_pull_files_downloaded_max"] == 0
        and report["pinned_commit_repull_requests_max"] == 0
        and first / second >= REQUIRED_SPEEDUP
    )
    if not ok:
        logger.error("FAILED: the second pull must fetch no file and be >= %.0fx faster", REQUIRED_SPEEDUP)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
