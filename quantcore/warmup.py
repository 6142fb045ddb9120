"""Warm the model runtimes in the background, so the first folder load costs what any cold load costs.

Importing torch and onnxruntime, and the first use of torch.fx tracing,
TorchScript loading and quantized packed weights, take seconds once per
process. ``start_warmup`` does them on tiny in-memory models in a daemon thread
once the page is served: startup is not delayed, and a load that comes while
it runs simply waits on the same imports. Nothing is written to disk.
"""

from __future__ import annotations

import io
import logging
import threading
import time

logger = logging.getLogger(__name__)


def _warm_onnxruntime() -> None:
    import numpy as np
    import onnx  # noqa: F401  (every ONNX load needs it)
    from onnx import TensorProto, helper

    from quantcore.backends.ort import make_session, run_session

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    run_session(make_session(model, 1), None, {"x": np.zeros(1, np.float32)})


def _warm_torch() -> None:
    import torch
    import torch.ao.nn.quantized as nnq
    import torch.fx

    tiny = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.ReLU())
    torch.fx.symbolic_trace(tiny)  # the loader traces eager models to read their layers
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny), buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.jit.load(buffer)(torch.zeros(1, 1, 2, 2))
        nnq.Conv2d(1, 1, 1).weight()  # unpacking quantized weights, as reading an int8 model does


def warm_runtimes() -> float:
    """Import and first-use onnxruntime and torch on tiny models; the seconds it took.

    A runtime that is missing or fails is logged and skipped: a later load says why.
    """
    started = time.perf_counter()
    for name, warm in (("onnxruntime", _warm_onnxruntime), ("torch", _warm_torch)):
        try:
            warm()
        except Exception as exc:  # warming is an optimisation; the real load reports real errors
            logger.warning("warming %s failed: %s", name, exc)
    seconds = time.perf_counter() - started
    logger.info("model runtimes warmed in %.1f s", seconds)
    return seconds


def start_warmup() -> threading.Thread:
    """``warm_runtimes`` in a daemon thread, started now."""
    thread = threading.Thread(target=warm_runtimes, name="quantcore-warmup", daemon=True)
    thread.start()
    return thread
