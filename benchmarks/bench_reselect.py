"""Re-selecting a cached folder through gradio_client vs a no-op event on the same server, side by side.

    python benchmarks/bench_reselect.py [--calls 50] [--folder resnet8] [--models-dir DIR]

Starts `python app.py`, loads the folder once, then alternates /load_folder
(a cache hit) with the hidden no-op /ping endpoint. Target: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import time

from common import HOST, free_port, median_ms, start, stop, wait_for_200
from gradio_client import Client

TARGET = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--folder", default="resnet8")
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()

    port = free_port()
    command = ["app.py", "--port", str(port)] + (["--models-dir", args.models_dir] if args.models_dir else [])
    proc = start(command)
    try:
        url = f"http://{HOST}:{port}/"
        wait_for_200(url, proc)
        client = Client(url, verbose=False, download_files=False)
        summary, status = client.predict(args.folder, api_name="/load_folder")
        if not summary or not summary["total_loaded"]:
            raise SystemExit(f"{args.folder} did not load: {status}")
        print(f"first load: {summary['total_loaded']} variants in {summary['load_seconds']:.2f} s")
        for _ in range(5):  # warm both paths
            client.predict(args.folder, api_name="/load_folder")
            client.predict("x", api_name="/ping")
        reselect: list[float] = []
        noop: list[float] = []
        for _ in range(args.calls):
            started = time.perf_counter()
            summary, _status = client.predict(args.folder, api_name="/load_folder")
            reselect.append(time.perf_counter() - started)
            assert summary["cache_hit"], "re-selection missed the cache"
            started = time.perf_counter()
            client.predict("x", api_name="/ping")
            noop.append(time.perf_counter() - started)
    finally:
        stop(proc)
    ratio = median_ms(reselect) / median_ms(noop)
    print(f"median over {args.calls} calls: re-select (cache hit) {median_ms(reselect):.1f} ms, "
          f"no-op {median_ms(noop):.1f} ms")  # fmt: skip
    print(f"ratio re-select / no-op = {ratio:.2f} (target <= {TARGET}) -> {'OK' if ratio <= TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
