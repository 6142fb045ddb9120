"""The Integer tab's cost: the whole integer view vs plain inference of the quantized variants, same samples.

    python benchmarks/bench_integer.py [--folder models/resnet8] [--images 256] [--repeats 5] [--threads 2]

In one process, back to back (the order flipping every repeat, so a burst of
load from elsewhere falls on both alike):

(a) plain — every quantized variant the integer view reads, through the app's
    own predictor (``quantcore.backends.predictor_for``: an onnxruntime session,
    or the TorchScript module under ``torch.no_grad``; same threads), on the
    pre-made float32 input in batches of 64; nothing else.
(b) ours — ``quantcore.integer.integer_view`` over the same images: onnxruntime
    tapping every integer tensor, the per-layer integer reference with float and
    fixed-point requantization, the accumulator and saturation figures, and the
    whole-network fixed-point integer run. Not served from the results cache.

Both warm up first. Target: median (b) / median (a) <= 3.0.

Then memory, in a fresh process: the 224x224 model of bench_drift.py (built here), its integer view warmed
up on one image, then over ``--large-images`` with ``QP_MAX_ACTIVATION_MB=--budget-mb``; the peak RSS growth
(sampled every 2 ms) must stay within the budget + 20 %.

Exits non-zero when either target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from common import model_folder, peak_rss_growth  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.backends import predictor_for  # noqa: E402
from quantcore.evaluate.batches import sample_inputs  # noqa: E402
from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec  # noqa: E402
from quantcore.integer.view import DEFAULT_BATCH_SIZE, integer_view  # noqa: E402

TARGET = 3.0
MEMORY_SLACK = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=settings.current().threads)
    parser.add_argument("--large-images", type=int, default=64, help="images for the 224x224 memory run (0: skip)")
    parser.add_argument("--budget-mb", type=int, default=64, help="QP_MAX_ACTIVATION_MB for the memory run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the memory run's own process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.child is not None:
        print(json.dumps(memory_child(args.child, args.large_images)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = model_folder(args.folder, Path(scratch), samples=args.images)
        settings.configure(models_root=folder.parent, threads=args.threads)
        variants = quantcore.load_model_variants(folder)
        first = integer_view(variants, images=args.images)  # warm-up: tappers built, first runs done
        keys = [result.variant for result in first.variants]
        inputs, _ = sample_inputs(variants, input_spec(variants), images=args.images)
        pixels, _ = inputs.take(0, inputs.count)
        runs = []
        for key in keys:  # ONNX through onnxruntime, TorchScript through torch: what the app predicts with
            predict = predictor_for(variants.model(key), threads=args.threads)
            x = to_model_input(pixels, variant_spec(variants, key))
            step = DEFAULT_BATCH_SIZE
            runs.append((predict, [np.ascontiguousarray(x[i : i + step]) for i in range(0, len(x), step)]))

        def plain() -> None:
            for predict, batches in runs:
                for batch in batches:
                    predict(batch)

        def ours() -> None:
            integer_view(variants, images=args.images)

        plain()
        print(f"folder: {origin}; variants: {', '.join(map(str, keys))}; notes: {'; '.join(first.notes) or 'none'}")
        print(f"images: {inputs.count} from {inputs.description}; {args.threads} threads; {args.repeats} repeats; "
              f"{platform.processor() or platform.machine()}, {_cpus()} CPUs, onnxruntime {ort.__version__}, "
              f"numpy {np.__version__}")  # fmt: skip
        timings: dict[str, list[float]] = {"plain": [], "ours": []}
        for repeat in range(args.repeats):
            pair = (("plain", plain), ("ours", ours))
            for name, run in pair if repeat % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - started)

    plain_s, ours_s = statistics.median(timings["plain"]), statistics.median(timings["ours"])
    for name, values in timings.items():
        print(f"  {name:<6} {', '.join(f'{t:.3f}' for t in values)} s (median {statistics.median(values):.3f})")
    ratio = ours_s / plain_s
    ok = ratio <= TARGET
    print(f"ratio integer view / plain inference = {ours_s:.3f} / {plain_s:.3f} s = {ratio:.2f} "
          f"(target <= {TARGET:.1f}) -> {'OK' if ok else 'OVER'}")  # fmt: skip
    memory_ok = args.large_images <= 0 or large_memory(args.large_images, args.budget_mb)
    sys.exit(0 if ok and memory_ok else 1)


def memory_child(folder: Path, images: int) -> dict[str, object]:
    """In a fresh process: the peak RSS growth of one integer view over ``images``, after one over one image."""
    settings.configure(models_root=folder.parent)
    variants = quantcore.load_model_variants(folder)
    integer_view(variants, images=1)  # sessions built; their arenas sized for one image only
    with peak_rss_growth() as rss:
        report = integer_view(variants, images=images)
    return {"images": report.images, "variants": [str(v.variant) for v in report.variants],
            "batch_size": sorted({v.batch_size for v in report.variants}),
            "rss_growth_mb": round(rss["growth"], 1)}  # fmt: skip


def large_memory(images: int, budget_mb: int) -> bool:
    """The 224x224 model's integer view under ``QP_MAX_ACTIVATION_MB=budget_mb``, in its own process."""
    from bench_drift import build_large_model

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "large224"
        folder.mkdir()
        build_large_model(folder)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), "--large-images", str(images)],
            check=True, capture_output=True, text=True, env={**os.environ, "QP_MAX_ACTIVATION_MB": str(budget_mb)},
        )  # fmt: skip
    row = json.loads(out.stdout.strip().splitlines()[-1])
    limit = budget_mb * MEMORY_SLACK
    ok = row["rss_growth_mb"] <= limit
    print(f"224x224 model ({', '.join(row['variants'])}), {row['images']} images, QP_MAX_ACTIVATION_MB={budget_mb}: "
          f"batches of {', '.join(map(str, row['batch_size']))}, peak RSS growth {row['rss_growth_mb']} MB "
          f"(budget + 20 % = {limit:.0f} MB) -> {'OK' if ok else 'OVER'}")  # fmt: skip
    return ok


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
