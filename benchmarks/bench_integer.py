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

Both warm up first. Target: median (b) / median (a) <= 3.0. Exits non-zero when missed.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from common import model_folder  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.backends import predictor_for  # noqa: E402
from quantcore.evaluate.batches import sample_inputs  # noqa: E402
from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec  # noqa: E402
from quantcore.integer.view import DEFAULT_BATCH_SIZE, integer_view  # noqa: E402

TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=settings.current().threads)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

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
    sys.exit(0 if ok else 1)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
