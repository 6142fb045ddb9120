"""Time limits on running models (issue 12, finding 1): an endless ONNX cannot hang the app.

The endless model passes ``onnx.checker``: input -> Loop(M=2**62, cond=True,
body=Identity) -> global pool -> dense. From an untrusted source (a Hub repo
served on 127.0.0.1) it is refused at load for its control flow; from a
trusted local folder it loads, and every run of it is cancelled by the
request's deadline (``QP_RUN_TIMEOUT_S``), while other clients are served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from gradio_client import Client
from onnx import TensorProto, helper, numpy_helper

import quantcore
from gradio_app.render import ICONS, Kind, escape
from quantcore import settings
from quantcore.backends import predictor_for, tapper_for
from quantcore.deadline import check_deadline, current_deadline, run_deadline
from quantcore.errors import RunTimeoutError, UnsafeModelError
from quantcore.load import Status, VariantKey
from quantcore.load.files import control_flow_ops, load_onnx_model, refuse_control_flow
from tests.app_server import copy_bundled, served_app
from tests.hub_servers import HubContractServer

pytestmark = pytest.mark.reliability("Endless models: run deadlines (QP_RUN_TIMEOUT_S)")

CLASSES = 10


@pytest.fixture(autouse=True)
def _restore_settings() -> Iterator[None]:
    before = settings.current()
    yield
    settings.configure(**before.__dict__)


def endless_model(*, iterations: int = 2**62, nest_in_if: bool = False) -> onnx.ModelProto:
    """input [1,3,32,32] -> Loop(M=iterations, cond=True, body=Identity) -> GlobalAveragePool -> dense -> [1,10].

    ``nest_in_if``: the Loop sits inside the then-branch of an If (both branches the same), to show nested
    control flow is found too.
    """
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 3, 32, 32]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 3, 32, 32]),
        ],
    )
    loop = helper.make_node("Loop", ["M", "cond", "input"], ["looped"], body=body)
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "M"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(rng.standard_normal((CLASSES, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(CLASSES, dtype=np.float32), "B"),
    ]
    if nest_in_if:
        branch = helper.make_graph(
            [loop], "branch", [], [helper.make_tensor_value_info("looped", TensorProto.FLOAT, [1, 3, 32, 32])]
        )
        initializers.append(numpy_helper.from_array(np.array(True), "choose"))
        first = helper.make_node("If", ["choose"], ["looped"], then_branch=branch, else_branch=branch)
    else:
        first = loop
    nodes = [
        first,
        helper.make_node("GlobalAveragePool", ["looped"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "endless",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)  # it is a valid model: only its loop count is hostile
    return model


def _write_folder(folder: Path, *names: str) -> Path:
    """``folder`` holding the endless model under ``names`` and a samples.npz of 8 images."""
    folder.mkdir(parents=True, exist_ok=True)
    data = endless_model().SerializeToString()
    for name in names:
        (folder / name).write_bytes(data)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    names = np.array([f"class{n}" for n in range(CLASSES)])
    np.savez(folder / "samples.npz", images=images, labels=np.arange(8) % CLASSES, label_names=names)
    return folder


BATCH = np.zeros((1, 3, 32, 32), dtype=np.float32)


# ------------------------------------------------------------------ quantcore


def test_a_running_onnx_loop_is_cancelled_at_the_scopes_deadline(tmp_path: Path) -> None:
    predict = predictor_for(endless_model(), threads=1)
    started = time.monotonic()
    with pytest.raises(RunTimeoutError) as caught, run_deadline(0.5):
        predict(BATCH)
    seconds = time.monotonic() - started
    assert 0.5 <= seconds < 2.5, seconds
    assert str(caught.value).startswith("stopped after 0.5 s: running the models took longer than the limit")
    assert "QP_RUN_TIMEOUT_S" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)


def test_a_run_outside_any_scope_has_a_limit_of_its_own() -> None:
    settings.configure(run_timeout_s=0.4)
    tap = tapper_for(endless_model(), ["looped"], threads=1)
    started = time.monotonic()
    with pytest.raises(RunTimeoutError, match=r"^stopped after 0\.4 s"):
        tap(BATCH)
    assert time.monotonic() - started < 2.5


def test_runs_that_end_in_time_are_untouched_and_agree_with_onnxruntime() -> None:
    """The watchdog cancels only the run whose time is up: 200 short runs under a deadline all return the
    values a plain InferenceSession gives, and a run after a cancelled one in the same session works."""
    import onnxruntime as ort

    model = endless_model(iterations=3)
    predict = predictor_for(model, threads=1)
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(200)]
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with run_deadline(30):
        ours = [predict(b) for b in batches]
    for batch, got in zip(batches, ours, strict=True):
        np.testing.assert_allclose(got, plain.run(None, {"input": batch})[0], rtol=1e-6)
    endless = predictor_for(endless_model(), threads=1)
    with pytest.raises(RunTimeoutError), run_deadline(0.2):
        endless(BATCH)
    with run_deadline(30):
        np.testing.assert_allclose(predict(batches[0]), ours[0], rtol=1e-6)


def test_nested_scopes_keep_the_earlier_deadline() -> None:
    with run_deadline(0.3) as outer:
        with run_deadline(100) as inner:
            assert inner is outer and current_deadline() is outer
        time.sleep(0.35)
        with pytest.raises(RunTimeoutError):
            check_deadline()
        # A model that would finish at once is not started either: the request's time is spent.
        with pytest.raises(RunTimeoutError):
            predictor_for(endless_model(iterations=1), threads=1)(BATCH)
    check_deadline()  # outside any scope: nothing to check


def test_torch_runs_are_refused_once_the_deadline_has_passed() -> None:
    import torch

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    predict = predictor_for(module, threads=1)
    expected = module(torch.from_numpy(BATCH)).detach().numpy()
    with run_deadline(5):
        np.testing.assert_allclose(predict(BATCH), expected, rtol=1e-6)
    with run_deadline(0.05):
        time.sleep(0.1)
        with pytest.raises(RunTimeoutError):
            predict(BATCH)


def test_control_flow_is_found_in_the_graph_in_subgraphs_and_in_functions(tmp_path: Path) -> None:
    assert control_flow_ops(endless_model()) == {"Loop"}
    assert control_flow_ops(endless_model(nest_in_if=True)) == {"If", "Loop"}
    # A local function whose body loops, called from the graph under its own op name.
    plain = endless_model()
    loop = plain.graph.node[0]
    function = helper.make_function(
        "custom", "Spin", ["M", "cond", "input"], ["looped"], [loop], [helper.make_opsetid("", 17)]
    )
    call = helper.make_node("Spin", ["M", "cond", "input"], ["looped"], domain="custom")
    plain.graph.node[0].CopyFrom(call)
    plain.functions.append(function)
    plain.opset_import.append(helper.make_opsetid("custom", 1))
    assert control_flow_ops(plain) == {"Loop"}
    path = tmp_path / "spin.onnx"
    onnx.save(plain, path)
    with pytest.raises(UnsafeModelError, match=r"uses control flow \(Loop\)"):
        refuse_control_flow(path, load_onnx_model(path))


def test_an_untrusted_folder_refuses_the_loop_and_a_trusted_one_loads_it(tmp_path: Path, models_root: Path) -> None:
    outside = _write_folder(tmp_path / "visitor", "endless.onnx")
    untrusted = quantcore.load_model_variants(outside, trusted=False)
    record = untrusted.loaded.records[VariantKey.ONNX_FLOAT]
    assert record.status is Status.REFUSED
    assert record.error.startswith("endless.onnx: refused — it uses control flow (Loop), which can be made to run")
    assert "--trust-remote-models" in record.error
    trusted = quantcore.load_model_variants(_write_folder(models_root / "mine", "endless.onnx"))
    assert trusted.loaded.records[VariantKey.ONNX_FLOAT].status is Status.LOADED


# ----------------------------------------------------------------- the app


ERROR = ICONS[Kind.ERROR]


def _timed(client: Client, *args: Any, api_name: str) -> tuple[Any, float, float]:
    began = time.monotonic()
    answer = client.predict(*args, api_name=api_name)
    return answer, began, time.monotonic()


@pytest.mark.hub
@pytest.mark.timeout(120)
def test_an_endless_model_from_the_hub_is_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    root.mkdir()
    repo = _write_folder(tmp_path / "repo", "endless.onnx")
    with HubContractServer() as hub, served_app(root) as server:
        hub.add_commit("org/endless", {p.name: p for p in sorted(repo.iterdir())})
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        client = Client(server.url, verbose=False, download_files=False)
        (summary, status), began, ended = _timed(client, "org/endless", "", "", api_name="/pull_hub")
        assert ended - began < 20
        assert summary is None or summary["total_loaded"] == 0, summary
        assert escape("endless.onnx: refused — it uses control flow (Loop)") in status, status
        # Nothing was loaded, so nothing runs: the views say so instead of looping.
        answer = client.predict("org/endless", 0, None, 3, "auto", api_name="/predict")
        assert "error" in answer and "stopped after" not in answer["error"], answer


@pytest.mark.timeout(180)
def test_an_endless_model_from_a_trusted_folder_is_stopped_and_others_are_served(tmp_path: Path) -> None:
    """Finding 1: /predict and /flips on an endless model held their slots for minutes and /layers waited.

    Now each is stopped at its deadline with a clear answer, another client's /layers on the bundled
    model is answered meanwhile, and the slots are free again afterwards: four more /predict on the
    endless model (every light slot) end at their deadline, and /layers is served right after."""
    limit = 6.0
    root = tmp_path / "models"
    root.mkdir()
    copy_bundled(root)
    _write_folder(root / "endless", "endless.onnx", "endless_int8.onnx")
    settings.configure(run_timeout_s=limit)
    with served_app(root) as server:
        settings.configure(run_timeout_s=limit)  # served_app restores its own copy on exit

        def client() -> Client:
            return Client(server.url, verbose=False, download_files=False)

        warm = client()
        assert "error" not in warm.predict("resnet8", "", api_name="/layers")  # loads the bundled folder
        _, status = warm.predict("endless", api_name="/load_folder")
        assert status.startswith(ICONS[Kind.SUCCESS]), status

        answers: dict[str, tuple[Any, float, float]] = {}

        def ask(name: str, *args: Any, api_name: str) -> None:
            answers[name] = _timed(client(), *args, api_name=api_name)

        hostile = [
            threading.Thread(
                target=ask, args=("predict", "endless", 0, None, 3, "auto"), kwargs={"api_name": "/predict"}
            ),
            threading.Thread(target=ask, args=("flips", "endless", 10), kwargs={"api_name": "/flips"}),
        ]
        for thread in hostile:
            thread.start()
        time.sleep(1.0)  # both are running the loop by now
        layers, began, ended = _timed(client(), "resnet8", "", api_name="/layers")
        for thread in hostile:
            thread.join(timeout=limit + 60)
        assert "error" not in layers and layers["layers"], layers
        assert ended - began < 5, ended - began
        for name in ("predict", "flips"):
            answer, asked, answered = answers[name]
            assert answer["error"].startswith(f"stopped after {limit:.0f} s: running the models took longer"), answer
            assert limit - 0.5 <= answered - asked <= limit + 10, (name, answered - asked)
            assert ended < answered, f"/layers waited for {name}"

        # Every light slot on the endless model at once: each ends at its deadline and frees its slot.
        crowd = [
            threading.Thread(target=ask, args=(f"p{n}", "endless", n, None, 3, "auto"), kwargs={"api_name": "/predict"})
            for n in range(4)
        ]
        started = time.monotonic()
        for thread in crowd:
            thread.start()
        for thread in crowd:
            thread.join(timeout=limit + 60)
        assert all(answers[f"p{n}"][0]["error"].startswith("stopped after") for n in range(4)), answers
        assert time.monotonic() - started <= limit + 15
        layers, began, ended = _timed(client(), "resnet8", "", api_name="/layers")
        assert "error" not in layers and ended - began < 5


def test_calibration_stops_between_batches_once_the_deadline_has_passed() -> None:
    """ORT's calibrator runs sessions of its own; the reader it pulls batches from keeps the deadline."""
    from quantcore.quantize.calibration import CalibrationReader, CalibrationSet

    data = np.zeros((40, 3, 32, 32), dtype=np.float32)
    reader = CalibrationReader(CalibrationSet(data, "zeros", {"kind": "test"}, "0" * 64, batch=10), "input")
    with run_deadline(5):
        served = [reader.get_next() for _ in range(2)]
    assert all(batch is not None and batch["input"].shape == (10, 3, 32, 32) for batch in served)
    with run_deadline(0.05):
        time.sleep(0.1)
        with pytest.raises(RunTimeoutError):
            reader.get_next()
    assert reader.served == 2
