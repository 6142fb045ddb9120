"""Evaluation overhead: the Accuracy & speed tab's accuracy run vs raw inference of the same batches.

    python benchmarks/bench_eval_overhead.py [--folder models/resnet8] [--repeats 9]

In one process, taking turns (the order flips every repeat, so drift in the
machine's load falls on both alike):

(a) raw — for every loaded variant, an ``onnxruntime.InferenceSession`` built
    here (same options: 2 intra-op threads) called with ``session.run`` on the
    pre-made float32 batches, or the torch module called on them under
    ``torch.no_grad()``; nothing else.
(b) ours — ``quantcore.scorecard.score_accuracy`` over the folder's
    ``samples.npz``: uint8 pixels -> model input, every variant through its
    cached predictor in the same batch size, logits kept, accuracy, per-class
    accuracy and agreement with float computed. The results cache is cleared
    before every run so the logits are really computed.

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
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import quantcore  # noqa: E402
from quantcore import datasets, evaluate, predictions, results_cache, settings  # noqa: E402
from quantcore.model_input import folder_samples, input_spec, to_model_input  # noqa: E402
from quantcore.scorecard import score_accuracy  # noqa: E402

TARGET = 1.10
BUNDLED = PROJECT_ROOT / "models" / "resnet8"
GENERATED_SAMPLES = 1000


def _folder(requested: Path | None, scratch: Path) -> tuple[Path, str]:
    folder = requested or BUNDLED
    complete = folder.is_dir() and any(folder.glob("*.onnx")) and any(folder.glob("*.pt"))
    if complete and (folder / "samples.npz").is_file():
        return folder, str(folder)
    from tests.conftest import _build_variants

    built = scratch / "tiny"
    built.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _build_variants(built)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (GENERATED_SAMPLES, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, GENERATED_SAMPLES).astype(np.int64)
    datasets.save_samples(built / "samples.npz", datasets.LabelledImages(images, labels, datasets.FASHION_MNIST_LABELS))
    return built, f"{folder} is incomplete: built the five tiny test variants and {GENERATED_SAMPLES} generated samples"


def _raw_runner(model: object, batches: list[np.ndarray]) -> Callable[[], None]:
    """The plainest way to run ``model`` over ``batches``."""
    if isinstance(model, onnx.ModelProto):
        options = ort.SessionOptions()
        options.intra_op_num_threads = evaluate.DEFAULT_THREADS
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(evaluate.DEFAULT_THREADS)

    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = _folder(args.folder, Path(scratch))
        settings.configure(models_root=folder.parent)
        variants = quantcore.load_model_variants(folder)
        spec = input_spec(variants)
        samples, _ = folder_samples(variants, spec)
        keys, skipped = predictions.runnable(variants)
        inputs = to_model_input(samples.images, spec)
        size = evaluate.EVAL_BATCH_SIZE
        batches = [np.ascontiguousarray(inputs[i : i + size]) for i in range(0, len(inputs), size)]
        raw_runs = {key: _raw_runner(variants[key], batches) for key in keys}
        print(f"folder: {origin}")
        print(f"variants: {', '.join(map(str, keys))}{'; ' + '; '.join(skipped) if skipped else ''}")
        print(f"images: {len(samples)} from {samples.description}, batches of {size}, "
              f"{evaluate.DEFAULT_THREADS} threads")  # fmt: skip

        raw_by_variant: dict[str, list[float]] = {str(k): [] for k in keys}

        def raw() -> None:
            for key, run in raw_runs.items():
                started = time.perf_counter()
                run()
                raw_by_variant[str(key)].append(time.perf_counter() - started)

        def ours() -> None:
            results_cache.cache_clear()
            score_accuracy(variants, samples, spec, progress=lambda fraction, message: None)

        raw()  # warm-up: sessions' first runs, TorchScript's profiling runs, page cache
        ours()
        timings: dict[str, list[float]] = {"raw": [], "ours": []}
        for repeat in range(args.repeats):
            order = (("raw", raw), ("ours", ours)) if repeat % 2 == 0 else (("ours", ours), ("raw", raw))
            for name, run in order:
                started = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - started)

        results_cache.cache_clear()
        predictions.predictor_cache_clear()
        started = time.perf_counter()
        score_accuracy(variants, samples, spec)
        cold = time.perf_counter() - started

    raw_s, ours_s = statistics.median(timings["raw"]), statistics.median(timings["ours"])
    paired = statistics.median(o / r for o, r in zip(timings["ours"], timings["raw"], strict=True))
    print("raw inference, per variant (median s): "
          + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in raw_by_variant.items()))  # fmt: skip
    print(f"raw session.run / module calls, all variants: median {raw_s:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in timings['raw'])})")  # fmt: skip
    print(f"score_accuracy (logits + accuracy, per-class, agreement): median {ours_s:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in timings['ours'])})")  # fmt: skip
    print(f"cold score_accuracy (predictors rebuilt as well): {cold:.3f} s = {cold / raw_s:.2f}x raw (not targeted)")
    fastest = min(timings["ours"]) / min(timings["raw"])
    print(f"fastest runs (least disturbed by a busy machine): ours {min(timings['ours']):.3f} s / raw "
          f"{min(timings['raw']):.3f} s = {fastest:.3f}")  # fmt: skip
    ratio = ours_s / raw_s
    ok = ratio <= TARGET
    print(f"ratio ours / raw = {ratio:.3f} (median of paired ratios {paired:.3f}; "
          f"overhead {100 * (ratio - 1):+.1f} %; target <= {TARGET:.2f}) -> {'OK' if ok else 'OVER'}")  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
