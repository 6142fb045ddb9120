"""Per-layer SQNR vs plain inference of the same images through every variant, and its memory at two N.

    python benchmarks/bench_drift.py [--folder models/resnet8] [--images 256] [--repeats 5] [--memory 256 1024]

Time: in one process, alternately, (a) plain inference — each loaded
variant's predictor (``quantcore.evaluate``, as the app runs it) over the N
images, 32 at a time — and (b) ``layer_drift`` over the same N images (taps on
every matched layer, float references run once per batch, running sums).
Both warm up first. Target: median (b) / median (a) <= 3.

Memory: for each N, a fresh process warms up on 32 images, then runs
``layer_drift`` on N generated images while a thread samples its resident
memory; the growth over the pre-run RSS, and tracemalloc's peak of Python and
numpy allocations, must not grow with N (1,024 within 20 % or 8 MB of 256).

Without a complete ``--folder`` the five tiny test variants are built in a
temp dir (said so in the output). Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from common import model_folder  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.backends import predictor_for  # noqa: E402
from quantcore.evaluate.inputs import generated_inputs, input_spec, sample_inputs  # noqa: E402
from quantcore.inspect.drift import layer_drift  # noqa: E402
from quantcore.inspect.layer_table import build_layer_table  # noqa: E402

logger = logging.getLogger("bench_drift")

TIME_TARGET = 3.0
MEMORY_TOLERANCE = (1.2, 8.0)  # ratio, or MB: whichever is looser
BATCH_SIZE = 32


def _load(folder: Path) -> quantcore.ModelVariants:
    settings.configure(models_root=folder.parent)
    return quantcore.load_model_variants(folder)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------ time


def time_ratio(folder: Path, images: int, repeats: int) -> dict[str, Any]:
    variants = _load(folder)
    loaded = [k for k in quantcore.VariantKey if variants[k] is not None]
    predictors = {k: predictor_for(variants[k]) for k in loaded}
    inputs, notes = sample_inputs(variants, input_spec(variants), images=images)
    table = build_layer_table(variants)

    def plain() -> None:
        for predict in predictors.values():
            for batch, _ in inputs.batches(BATCH_SIZE):
                predict(batch)

    def drift() -> None:
        layer_drift(variants, table=table, inputs=inputs, batch_size=BATCH_SIZE)

    plain()  # warm-up: sessions, TorchScript's first runs, page cache
    drift()
    timings: dict[str, list[float]] = {"plain": [], "drift": []}
    for _ in range(repeats):
        for name, run in (("plain", plain), ("drift", drift)):
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    plain_s, drift_s = statistics.median(timings["plain"]), statistics.median(timings["drift"])
    return {
        "variants": [str(k) for k in loaded],
        "images": inputs.count,
        "source": inputs.description,
        "notes": notes,
        "plain_seconds": timings["plain"],
        "drift_seconds": timings["drift"],
        "plain_median": plain_s,
        "drift_median": drift_s,
        "ratio": drift_s / plain_s,
    }


# ---------------------------------------------------------------------- memory


def memory_child(folder: Path, images: int) -> dict[str, Any]:
    """Run in a fresh process: RSS growth and tracemalloc peak of one ``layer_drift`` over ``images``."""
    variants = _load(folder)
    table = build_layer_table(variants)
    spec = input_spec(variants)
    layer_drift(variants, table=table, inputs=generated_inputs(spec, BATCH_SIZE), batch_size=BATCH_SIZE)
    before = _rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    report = layer_drift(variants, table=table, inputs=generated_inputs(spec, images, seed=1),
                         batch_size=BATCH_SIZE)  # fmt: skip
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    sampler.join()
    return {
        "images": report.images,
        "rss_before_mb": round(before, 1),
        "rss_growth_mb": round(max(peak[0], _rss_mb()) - before, 1),
        "traced_peak_mb": round(traced_peak / 2**20, 2),
    }


def memory(folder: Path, counts: list[int]) -> list[dict[str, Any]]:
    results = []
    for count in counts:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(count), "--folder", str(folder)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def _within(small: float, large: float) -> bool:
    ratio, slack = MEMORY_TOLERANCE
    return large <= max(small * ratio, small + slack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    if args.child is not None:
        print(json.dumps(memory_child(args.folder, args.child)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = model_folder(args.folder, Path(scratch))
        print(f"folder: {origin}")
        timing = time_ratio(folder, args.images, args.repeats)
        print(f"variants: {', '.join(timing['variants'])}; {timing['images']} images from {timing['source']}")
        print(f"plain inference, all variants: median {timing['plain_median']:.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in timing['plain_seconds'])})")  # fmt: skip
        print(f"per-layer SQNR, all variants:  median {timing['drift_median']:.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in timing['drift_seconds'])})")  # fmt: skip
        time_ok = timing["ratio"] <= TIME_TARGET
        print(f"ratio SQNR / plain = {timing['ratio']:.2f} (target <= {TIME_TARGET}) -> {'OK' if time_ok else 'OVER'}")
        memory_ok = True
        if len(args.memory) >= 2:
            rows = memory(folder, args.memory)
            for row in rows:
                print(f"N={row['images']:>5}: RSS before {row['rss_before_mb']} MB, growth during the run "
                      f"{row['rss_growth_mb']} MB, tracemalloc peak {row['traced_peak_mb']} MB")  # fmt: skip
            small, large = rows[0], rows[-1]
            memory_ok = _within(small["rss_growth_mb"], large["rss_growth_mb"]) and _within(
                small["traced_peak_mb"], large["traced_peak_mb"]
            )
            print(f"memory N={large['images']} vs N={small['images']}: "
                  f"{'independent of N -> OK' if memory_ok else 'GROWS with N'}")  # fmt: skip
    if not (time_ok and memory_ok):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
