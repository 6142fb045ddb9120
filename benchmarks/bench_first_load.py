"""The first folder load after start against the next cold one, with the runtimes warmed and without.

    python benchmarks/bench_first_load.py [--rounds 3] [--think 8]

Each round starts ``python app.py`` on a models root holding two copies of the
bundled ResNet8 folder (``a`` and ``b``), waits for its first HTTP 200 (startup),
then ``--think`` seconds (a visitor looking at the page), then loads ``a``
(the first load) and ``b`` (a cold load of the same size: nothing of it is
cached) through ``/load_folder``. Rounds alternate QP_WARMUP=1 and QP_WARMUP=0.

Targets, on medians: with the warm-up, first / next cold <= 1.5; startup with
the warm-up / without <= 1.1 (the warm-up starts after the page serves).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import BUNDLED_MODELS, ENV, HOST, free_port, start, stop, wait_for_200

FIRST_TARGET, STARTUP_TARGET = 1.5, 1.1


def one_round(root: Path, warmup: bool, think: float) -> tuple[float, float, float]:
    """(startup s, first load s, next cold load s) of one app process."""
    from gradio_client import Client

    port = free_port()
    ENV["QP_WARMUP"] = "1" if warmup else "0"
    proc = start(["app.py", "--port", str(port), "--models-dir", str(root)])
    try:
        startup = wait_for_200(f"http://{HOST}:{port}/", proc)
        client = Client(f"http://{HOST}:{port}/", verbose=False)
        time.sleep(think)
        times = []
        for folder in ("a", "b"):
            started = time.perf_counter()
            _, status = client.predict(folder, api_name="/load_folder")
            times.append(time.perf_counter() - started)
            if "Loaded 5 of 5" not in status:
                raise RuntimeError(f"{folder}: {status}")
        return startup, times[0], times[1]
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--think", type=float, default=8.0)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        for name in ("a", "b"):
            shutil.copytree(BUNDLED_MODELS, root / name)
        for round_ in range(args.rounds):
            for warmup in (True, False) if round_ % 2 == 0 else (False, True):
                startup, first, cold = one_round(root, warmup, args.think)
                results[warmup].append((startup, first, cold))
                print(f"round {round_ + 1}, warm-up {'on ' if warmup else 'off'}: startup {startup:.2f} s, "
                      f"first load {first:.2f} s, next cold load {cold:.2f} s")  # fmt: skip
    medians = {w: [statistics.median(r[i] for r in results[w]) for i in range(3)] for w in results}
    on, off = medians[True], medians[False]
    first_ratio, startup_ratio = on[1] / on[2], on[0] / off[0]
    print(f"medians of {args.rounds} rounds ({args.think:.0f} s between page and first load):")
    print(f"  warm-up on : startup {on[0]:.2f} s, first {on[1]:.2f} s, next cold {on[2]:.2f} s")
    print(f"  warm-up off: startup {off[0]:.2f} s, first {off[1]:.2f} s, next cold {off[2]:.2f} s")
    print(f"first / next cold with warm-up = {first_ratio:.2f} (target <= {FIRST_TARGET}) -> "
          f"{'OK' if first_ratio <= FIRST_TARGET else 'OVER'}; without it {off[1] / off[2]:.2f}")  # fmt: skip
    print(f"startup with / without warm-up = {startup_ratio:.2f} (target <= {STARTUP_TARGET}) -> "
          f"{'OK' if startup_ratio <= STARTUP_TARGET else 'OVER'}")  # fmt: skip


if __name__ == "__main__":
    main()
