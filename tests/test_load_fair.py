"""Heavy work through a running app: bounded, fair between sessions, its wait shown, light requests unaffected.

The app is served in-process on 127.0.0.1 (``tests/app_server.py``) with one heavy slot. Each
gradio_client ``Client`` is one session. A per-layer error run over the folder's samples holds the
slot; behind it sessions A (three runs) and B (one run, asked for after A's) wait. Every run asks
for a different image count, so none is answered from the results cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pytest
from gradio_client import Client

from gradio_app.common import HEAVY_ADMITTED, HEAVY_EVENTS, api, on_failure, run_as_heavy
from quantcore import settings
from quantcore.heavy import heavy_gate
from tests.app_server import Server, app_server  # noqa: F401  (app_server is a fixture)

pytestmark = pytest.mark.reliability("Heavy work: bounded, fair between sessions, its wait shown")

FOLDER = "resnet8"
WAITING = "Waiting for a free slot for heavy runs"


@pytest.fixture(scope="module")
def one_slot(app_server: Server) -> Iterator[Server]:  # noqa: F811
    before = settings.current()
    settings.configure(heavy_slots=1, heavy_per_user=3, heavy_wait_s=120.0)
    try:
        yield app_server
    finally:
        settings.configure(**before.__dict__)


def _client(server: Server) -> Client:
    return Client(server.url, verbose=False, download_files=False, httpx_kwargs={"timeout": 60})


def _until(condition: Any, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def test_every_heavy_event_takes_a_slot_and_no_light_one_does(one_slot: Server) -> None:
    fns = list(one_slot.demo.fns.values())
    heavy = {fn.api_name: getattr(fn.fn, "heavy_kind", None) for fn in fns if fn.concurrency_id == "heavy"}
    light = {fn.api_name: getattr(fn.fn, "heavy_kind", None) for fn in fns if fn.concurrency_id != "heavy"}
    assert {"layer_error", "flips", "scorecard", "quantize", "page_layer_error", "page_flips"} <= set(heavy)
    assert all(heavy.values()), f"heavy events without a slot: {[n for n, k in heavy.items() if not k]}"
    # A page event and its endpoint are one kind: they share the estimate of how long a run takes.
    assert heavy["page_layer_error"] == heavy["layer_error"] == "layer_error"
    assert not any(light.values()), f"light events taking a heavy slot: {[n for n, k in light.items() if k]}"
    assert all(fn.concurrency_limit == HEAVY_ADMITTED for fn in fns if fn.concurrency_id == "heavy")
    # The light groups are queues of their own: their events never wait in the heavy queue.
    assert {"load_folder", "layers", "predict", "weights"} <= set(light)
    assert HEAVY_EVENTS["concurrency_id"] == "heavy"


def test_a_refused_slot_is_an_answer_saying_why_whatever_the_handler(one_slot: Server) -> None:
    """api() answers {"error"}, on_failure a note, a plain handler a Gradio error: each with the reason."""
    settings.configure(heavy_wait_s=0.2)
    release = threading.Event()
    holder = threading.Thread(target=_hold_a_slot, args=(release,), daemon=True)
    holder.start()
    try:
        _until(lambda: heavy_gate().info().running == 1, 10, "the slot to be held")
        plain = run_as_heavy(lambda: "ran", "plain")
        with pytest.raises(gr.Error, match=r"no slot came free within 0\.2 s"):
            plain()
        answered = run_as_heavy(api(lambda: {"ran": True}), "answered")()
        assert "no slot came free within 0.2 s" in answered["error"], answered
        noted = run_as_heavy(on_failure("the run", lambda message: message)(lambda: "ran"), "noted")()
        assert noted.startswith("✖ **Not started: the run**") and r"no slot came free within 0\.2 s" in noted, noted
    finally:
        release.set()
        holder.join(10)
        settings.configure(heavy_wait_s=120.0)
    assert run_as_heavy(api(lambda: {"ran": True}), "answered")() == {"ran": True}


def _hold_a_slot(release: threading.Event) -> None:
    with heavy_gate().slot("someone else", "hold"):
        release.wait(10)


def test_heavy_runs_wait_their_turn_fairly_shown_while_light_ones_pass(one_slot: Server) -> None:
    holder, a, b, light = (_client(one_slot) for _ in range(4))
    try:
        light.predict(FOLDER, api_name="/load_folder")
        light.predict(FOLDER, None, api_name="/layers")
        # One short run, so the gate knows how long a per-layer run takes and can give an ETA.
        warm = holder.predict(FOLDER, 64, api_name="/layer_error")
        assert warm.get("images") == 64, warm
        served_before = heavy_gate().info().served

        finished: dict[str, float] = {}

        def submit(client: Client, name: str, images: int) -> Any:
            def done(*_outputs: Any) -> None:
                finished[name] = time.monotonic()

            return client.submit(FOLDER, images, api_name="/layer_error", result_callbacks=[done])

        first = submit(holder, "holder", 1000)
        _until(lambda: heavy_gate().info().running == 1, 30, "the holder's run to start")
        a_jobs = [submit(a, f"a{n}", 990 - 10 * n) for n in (1, 2, 3)]
        _until(lambda: heavy_gate().info().waiting == 3, 30, "A's three runs to queue")
        b_job = submit(b, "b1", 950)
        _until(lambda: heavy_gate().info().waiting == 4, 30, "B's run to queue")

        # A fourth run of A's is over its share: refused at once, saying why.
        began = time.monotonic()
        refused = a.predict(FOLDER, 940, api_name="/layer_error")
        assert "3 of your heavy runs are already running or waiting" in refused.get("error", ""), refused
        assert time.monotonic() - began < 10

        # Light requests are answered while heavy ones still wait: they are not queued behind them.
        for endpoint, args in (("/load_folder", (FOLDER,)), ("/layers", (FOLDER, None))):
            began = time.monotonic()
            answer = light.predict(*args, api_name=endpoint)
            took = time.monotonic() - began
            assert answer, endpoint
            assert took < 5, f"{endpoint} took {took:.1f} s behind heavy runs"
        assert heavy_gate().info().waiting >= 3, "the light requests were answered only after the heavy ones"

        # A waiting run shows its place in line and an ETA, as its progress.
        _until(lambda: _desc(b_job) is not None, 30, "B's run to report its wait")
        shown = _desc(b_job)
        assert shown.startswith(WAITING) and "ahead of yours" in shown and "starting in about" in shown, shown

        results = [job.result(timeout=240) for job in (first, *a_jobs, b_job)]
        for result, images in zip(results, (1000, 980, 970, 960, 950), strict=True):
            assert result.get("images") == images, result
        # Round robin: B's one run went before A's second and third, though asked for after them (A's own
        # three reach the server in any order: one client sends them from threads of its own).
        a_done = sorted(finished[f"a{n}"] for n in (1, 2, 3))
        assert finished["holder"] < a_done[0] < finished["b1"] < a_done[1], finished
        assert heavy_gate().info().served - served_before == 5
    finally:
        for client in (holder, a, b, light):
            client.close()


def _desc(job: Any) -> str | None:
    """The latest progress text of a job, when it is a wait for a heavy slot."""
    data = job.status().progress_data
    texts = [unit.desc for unit in data or [] if unit.desc]
    return texts[-1] if texts and texts[-1].startswith(WAITING) else None
