"""Evaluation overhead: the Accuracy & speed tab's accuracy run vs raw inference of the same batches.

    python benchmarks/bench_eval_overhead.py [--folder models/resnet8] [--repeats 9] [--threads 2]

In one process, one variant at a time, raw and ours back to back (the order
flipping every time, so a burst of load from elsewhere falls on both alike):

(a) raw — for every loaded variant, an ``onnxruntime.InferenceSession`` built
    here (same options: --threads intra-op threads) called with ``session.run`` on the
    pre-made float32 batches, or the torch module called on them under
    ``torch.no_grad()``; nothing else.
(b) ours — ``quantcore.evaluate.score_accuracy`` over the folder's
    ``samples.npz`` for that variant alone: uint8 pixels -> model input, the
    variant through its cached predictor in the same batch size, logits kept,
    accuracy and per-class accuracy computed. The results cache is cleared
    before every run so the logits are really computed.

The ratio is of the sums over variants of each side's median time (each
variant's pairs ran back to back, so its two medians saw the same load). The
work ours does outside inference (preprocessing, and scoring every variant
with agreement from cached logits) is also timed alone, as a steadier view,
and the ratio of whole repeats is printed too.

Both warm up first (sessions built, TorchScript's first runs done).
Target: median (b) / median (a) <= 1.10. A "cold" run — predictors rebuilt
too, as on the first request for a folder — is printed for reference.

Without a complete ``--folder`` the five tiny test variants are built in a
temp dir with 1,000 generated samples (said so in the output). Exits non-zero
when the target is missed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from common import model_folder  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.backends import runners_clear  # noqa: E402
from quantcore.evaluate.inputs import folder_samples, input_spec, to_model_input  # noqa: E402
from quantcore.evaluate.predictions import runnable  # noqa: E402
from quantcore.evaluate.scorecard import score_accuracy  # noqa: E402
from quantcore.load import Status, VariantKey, VariantRecord, results_cache  # noqa: E402

TARGET = 1.10
GENERATED_SAMPLES = 1000


def _raw_runner(model: object, batches: list[np.ndarray], threads: int) -> Callable[[], None]:
    """The plainest way to run ``model`` over ``batches``."""
    if isinstance(model, onnx.ModelProto):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx() -> None:
            for batch in batches:
                session.run(None, {name: batch})

        return run_onnx
    module = model.eval()  # type: ignore[attr-defined]

    def run_torch() -> None:
        with torch.no_grad():
            for batch in batches:
                module(torch.from_numpy(batch))

    return run_torch


def _only(variants: quantcore.ModelVariants, key: VariantKey) -> quantcore.ModelVariants:
    """The folder as if ``key`` were its only variant, so one variant's runs can alternate with raw ones."""
    records = {k: r if k is key else VariantRecord(k, Status.MISSING) for k, r in variants.records.items()}
    return quantcore.ModelVariants(replace(variants.loaded, records=records), cache_hit=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=settings.current().threads)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = model_folder(args.folder, Path(scratch), samples=GENERATED_SAMPLES)
        settings.configure(models_root=folder.parent)
        variants = quantcore.load_model_variants(folder)
        spec = input_spec(variants)
        samples, _ = folder_samples(variants, spec)
        keys, skipped = runnable(variants)
        inputs = to_model_input(samples.images, spec)
        size = settings.current().eval_batch_size
        batches = [np.ascontiguousarray(inputs[i : i + size]) for i in range(0, len(inputs), size)]
        raw_runs = {key: _raw_runner(variants[key], batches, args.threads) for key in keys}
        views = {key: _only(variants, key) for key in keys}
        print(f"folder: {origin}")
        print(f"variants: {', '.join(map(str, keys))}{'; ' + '; '.join(skipped) if skipped else ''}")
        print(f"images: {len(samples)} from {samples.description}, batches of {size}, {args.threads} threads")

        def ours(key: VariantKey) -> None:
            results_cache.cache_clear()
            score_accuracy(views[key], samples, spec, threads=args.threads, progress=lambda fraction, message: None)

        for key in keys:  # warm-up: sessions' first runs, TorchScript's profiling runs, page cache
            raw_runs[key]()
            ours(key)
        timings: dict[str, dict[VariantKey, list[float]]] = {
            "raw": {k: [] for k in keys},
            "ours": {k: [] for k in keys},
        }
        for repeat in range(args.repeats):
            for index, key in enumerate(keys):
                # One variant at a time, raw and ours back to back, the order flipping: a burst of load
                # from elsewhere lands on both sides of a pair.
                pair = (("raw", raw_runs[key]), ("ours", lambda key=key: ours(key)))
                for name, run in pair if (repeat + index) % 2 == 0 else pair[::-1]:
                    started = time.perf_counter()
                    run()
                    timings[name][key].append(time.perf_counter() - started)

        # The work ours adds outside inference, timed alone (steady, unlike whole runs on a busy machine):
        # pixels -> input once, then the scoring of logits already computed (served from the cache).
        started = time.perf_counter()
        for _ in range(5):
            to_model_input(samples.images, spec)
        preprocess = (time.perf_counter() - started) / 5
        score_accuracy(variants, samples, spec, threads=args.threads)
        started = time.perf_counter()
        for _ in range(5):
            score_accuracy(variants, samples, spec, threads=args.threads)
        scoring = (time.perf_counter() - started) / 5

        results_cache.cache_clear()
        runners_clear()
        started = time.perf_counter()
        score_accuracy(variants, samples, spec, threads=args.threads)
        cold = time.perf_counter() - started

    medians = {side: {k: statistics.median(t[k]) for k in keys} for side, t in timings.items()}
    raw_s, ours_s = sum(medians["raw"].values()), sum(medians["ours"].values())
    print("per variant: median s raw / ours (median of back-to-back pair ratios):")
    for key in keys:
        pairs = statistics.median(o / r for o, r in zip(timings["ours"][key], timings["raw"][key], strict=True))
        print(f"  {key!s:<14} {medians['raw'][key]:7.3f} / {medians['ours'][key]:7.3f} ({pairs:.3f})")
    print(f"outside inference: pixels -> input {1000 * preprocess:.1f} ms + scoring all variants (agreement too) "
          f"{1000 * scoring:.1f} ms = {100 * (preprocess + scoring) / raw_s:.2f} % of raw")  # fmt: skip
    print(f"cold score_accuracy (predictors rebuilt as well): {cold:.3f} s = {cold / raw_s:.2f}x raw (not targeted)")
    totals = {side: [sum(t[k][r] for k in keys) for r in range(args.repeats)] for side, t in timings.items()}
    whole = statistics.median(totals["ours"]) / statistics.median(totals["raw"])
    print(f"whole repeats (all variants): raw {', '.join(f'{t:.2f}' for t in totals['raw'])} s; "
          f"ours {', '.join(f'{t:.2f}' for t in totals['ours'])} s; ratio of medians {whole:.3f}, "
          f"of fastest {min(totals['ours']) / min(totals['raw']):.3f}")  # fmt: skip
    ratio = ours_s / raw_s
    ok = ratio <= TARGET
    print(f"ratio ours / raw = {ours_s:.3f} / {raw_s:.3f} s (sums of per-variant medians) = {ratio:.3f} "
          f"(overhead {100 * (ratio - 1):+.1f} %; target <= {TARGET:.2f}) -> {'OK' if ok else 'OVER'}")  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
