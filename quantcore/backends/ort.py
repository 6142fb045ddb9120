"""The one place onnxruntime sessions are made: CPU provider, thread counts, spinning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantcore.errors import InvalidModelError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort


def session_options(threads: int, *, spinning: bool = True, optimize: bool = True) -> ort.SessionOptions:
    """Options for one CPU session with ``threads`` intra-op threads and one inter-op thread.

    ``spinning=False``: idle threads sleep at once after a run instead of
    spinning, for sessions that take turns with torch, which needs those cores.
    ``optimize=False``: no graph optimization, so QDQ nodes are not fused into
    integer kernels and each step runs as the graph writes it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(
    model: onnx.ModelProto | bytes, threads: int, *, spinning: bool = True, optimize: bool = True
) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` for ``model`` (a ModelProto or its serialized bytes).

    Raises:
        InvalidModelError: onnxruntime cannot build a session for it (its own message says why).
    """
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, session_options(threads, spinning=spinning, optimize=optimize),
                                    providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as exc:  # ORT raises its own untyped errors for bad graphs
        raise InvalidModelError(f"onnxruntime cannot run this model: {exc}") from exc
