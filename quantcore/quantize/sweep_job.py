"""One job of a sensitivity sweep, as a plain function of plain data: it runs unchanged in this process,
in a local worker process or on a Ray worker.

``run_job(shared, job)``: quantize the pre-processed float model by the job's
recipe with onnxruntime, reading the calibration ranges the sweep computed
once (``calibration_cache_path``; no calibration runs here), then run it with
one ORT thread on the sweep's images and score it against the float logits.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 250


def output_sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10·log10(Σ x² / Σ (x − x̂)²) over every logit; ∞ when they are equal."""
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if noise == 0 else 10 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def logits_of(model_bytes: bytes, input_name: str, inputs: np.ndarray) -> np.ndarray:
    """The model's first output over ``inputs``, in batches, on one ORT thread."""
    from quantcore.backends.ort import make_session

    session = make_session(model_bytes, 1)
    return np.concatenate([session.run(None, {input_name: inputs[i : i + BATCH]})[0]
                           for i in range(0, len(inputs), BATCH)])  # fmt: skip


def run_job(shared: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Quantize by ``job["recipe"]`` and score it.

    Args:
        shared: ``prepared`` (the pre-processed float model's bytes), ``ranges`` (onnxruntime's calibration
            cache JSON), ``input_name``, ``inputs`` (float model input), ``labels`` (or None), ``float_logits``.
        job: ``recipe`` (``Recipe.as_dict()``), and ``layer`` / ``mode`` (returned as given).

    Returns:
        The job's ``layer`` and ``mode`` with ``accuracy``, ``agreement``, ``output_sqnr_db``, ``bytes``, ``seconds``.
    """
    import onnx
    from onnxruntime.quantization import quantize_static

    from quantcore.quantize.build import ort_arguments
    from quantcore.quantize.recipe import Recipe

    started = time.perf_counter()
    recipe = Recipe.from_dict(job["recipe"])
    with tempfile.TemporaryDirectory(prefix="qp-sweep-") as tmp:
        prepared, ranges, out = Path(tmp) / "prepared.onnx", Path(tmp) / "ranges.json", Path(tmp) / "model.onnx"
        prepared.write_bytes(shared["prepared"])
        ranges.write_text(shared["ranges"])
        arguments = ort_arguments(recipe, onnx.load(str(prepared)))
        quantize_static(str(prepared), str(out), None, calibration_cache_path=str(ranges), **arguments)
        data = out.read_bytes()
    logits = logits_of(data, shared["input_name"], shared["inputs"])
    reference = shared["float_logits"]
    top = logits.argmax(axis=1)
    labels = shared.get("labels")
    return {
        "layer": job.get("layer"),
        "mode": job.get("mode"),
        "accuracy": float(np.mean(top == labels)) if labels is not None else None,
        "agreement": float(np.mean(top == reference.argmax(axis=1))),
        "output_sqnr_db": output_sqnr_db(reference, logits),
        "bytes": len(data),
        "seconds": time.perf_counter() - started,
    }
