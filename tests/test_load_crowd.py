"""A crowd through a running app: 50 gradio_client sessions, mixed light and heavy, for about 20 s.

Light clients (cached /load_folder, /layers, /predict) think 0.5-1.5 s between requests; heavy ones
(/layer_error, /flips) ask again as soon as answered. Every answer must be right, the heavy gate
must never run more than its slots, and light requests keep being answered while heavy ones wait.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gradio_client import Client

from quantcore.heavy import heavy_gate
from tests.app_server import Server, app_server  # noqa: F401  (app_server is a fixture)

FOLDER = "resnet8"
SECONDS = 20.0
MIX = [("/load_folder", (FOLDER,))] * 20 + [("/layers", (FOLDER, None))] * 14 + [("/predict", (FOLDER,))] * 8
MIX += [("/layer_error", (FOLDER, 64))] * 4 + [("/flips", (FOLDER,))] * 4
LIGHT = {"/load_folder", "/layers", "/predict"}


def _right(endpoint: str, answer: Any) -> bool:
    if endpoint == "/load_folder":
        return answer[0] is not None and answer[0]["total_loaded"] == 5 and answer[0]["cache_hit"]
    if endpoint == "/layers":
        return bool(answer.get("layers"))
    if endpoint == "/predict":
        return set(answer.get("variants", {})) >= {"onnx_float", "onnx_int8"}
    return "error" not in answer


def test_50_mixed_clients_all_answered_right_heavy_bounded(app_server: Server) -> None:  # noqa: F811
    warm = Client(app_server.url, verbose=False, download_files=False)
    warm.predict(FOLDER, api_name="/load_folder")
    with ThreadPoolExecutor(4) as pool:  # a few at a time: each fetches the app's config
        clients = list(pool.map(lambda _: Client(app_server.url, verbose=False, download_files=False,
                                                 httpx_kwargs={"timeout": 120}), MIX))  # fmt: skip
    most_running, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most_running[0] = max(most_running[0], heavy_gate().info().running)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    end = time.monotonic() + SECONDS
    results: list[tuple[str, float, bool]] = []

    def user(number: int) -> None:
        endpoint, args = MIX[number]
        rng = random.Random(number)
        while time.monotonic() < end:
            began = time.monotonic()
            answer = clients[number].predict(*args, api_name=endpoint)
            results.append((endpoint, time.monotonic() - began, _right(endpoint, answer)))
            if endpoint in LIGHT:
                time.sleep(rng.uniform(0.5, 1.5))

    try:
        with ThreadPoolExecutor(len(MIX)) as pool:
            list(pool.map(user, range(len(MIX))))
    finally:
        stop.set()
        watcher.join(5)
        for client in (warm, *clients):
            client.close()
    wrong = [(e, s) for e, s, ok in results if not ok]
    light = sorted(s for e, s, _ in results if e in LIGHT)
    heavy = [s for e, s, _ in results if e not in LIGHT]
    print(f"\n{len(results)} answers; light p50 {statistics.median(light):.2f} s, "
          f"p95 {light[int(0.95 * len(light))]:.2f} s; heavy runs {len(heavy)}")  # fmt: skip
    assert wrong == []
    assert len(light) >= 100 and heavy, (len(light), len(heavy))
    assert most_running[0] <= heavy_gate().info().slots
