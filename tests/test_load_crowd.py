"""A crowd through a running app: 50 gradio_client sessions, mixed light and heavy.

Light clients (cached /load_folder, /layers, /predict) think 0.5-1.5 s between requests; heavy ones
(/layer_error, /flips) ask again as soon as answered. Every answer must equal the one the same request
got alone before the crowd came, the heavy gate must never run more than its slots, and light
requests keep being answered while heavy ones wait.

CI runs the short crowd (20 s). The long one (120 s; ``QP_CROWD_SECONDS`` changes it) is deselected
unless asked for:

    python -m pytest -m crowd_long tests/test_load_crowd.py      # or QP_CROWD=long python -m pytest ...

It adds: light answers in every 10 s of the run, every heavy client served more than once (fair
turns), no heavy run refused, and the process's RSS settled within a bound.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from gradio_client import Client

from quantcore.heavy import heavy_gate
from tests.app_server import Server, app_server  # noqa: F401  (app_server is a fixture)
from tests.test_load_soak import release_free_memory, rss_mb

FOLDER = "resnet8"
SHORT_SECONDS = 20.0
LONG_SECONDS = float(os.environ.get("QP_CROWD_SECONDS", "120"))
CALLS: dict[str, tuple[Any, ...]] = {
    "/load_folder": (FOLDER,),
    "/layers": (FOLDER, None),
    "/predict": (FOLDER,),
    "/layer_error": (FOLDER, 64),
    "/flips": (FOLDER,),
}
MIX = ["/load_folder"] * 20 + ["/layers"] * 14 + ["/predict"] * 8 + ["/layer_error"] * 4 + ["/flips"] * 4
LIGHT = {"/load_folder", "/layers", "/predict"}
WINDOW_S = 10.0
# RSS of the process (app and 50 clients) at the end over its median in the run's second quarter, both
# after a collection: the heavy results are cached by then, so what is left to grow is a leak per request.
RSS_GROWTH_MB = 64.0


def client(url: str) -> Client:
    # ssl_verify=False: the URL is plain http on loopback, so no TLS is involved either way; with it on,
    # gradio_client builds an SSL context (loading the CA bundle, ~90 ms of CPU) for every request, in
    # this process, where it competes with the server for the GIL and the two cores.
    return Client(url, verbose=False, download_files=False, ssl_verify=False, httpx_kwargs={"timeout": 300})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Answer:
    client: int
    endpoint: str
    finished: float  # seconds since the crowd started
    seconds: float
    right: bool


@dataclass
class CrowdRun:
    seconds: float
    answers: list[Answer]
    most_running: int
    refused: int
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    def latencies(self, endpoints: set[str]) -> list[float]:
        return [a.seconds for a in self.answers if a.endpoint in endpoints]

    def record(self, record_property: Any, form: str) -> None:
        """What the reliability report shows of this run (scripts/reliability_report.py)."""
        record_property("reliability_class", f"Load: a crowd of 50 mixed clients ({form})")
        record_property("cases", len(self.answers))
        record_property("seconds", round(self.seconds))
        record_property("wrong", sum(not a.right for a in self.answers))
        record_property("most_running", self.most_running)
        record_property("slots", heavy_gate().info().slots)
        record_property("refused", self.refused)
        figures = {}
        for endpoint in (*CALLS, "light"):
            chosen = LIGHT if endpoint == "light" else {endpoint}
            values = self.latencies(chosen)
            if values:
                figures[endpoint] = {"n": len(values), "p50": round(percentile(values, 0.5), 2),
                                     "p95": round(percentile(values, 0.95), 2)}  # fmt: skip
        record_property("latency_s", json.dumps(figures))
        record_property("cpus", os.cpu_count())
        record_property("load_average", round(os.getloadavg()[0], 1))
        if self.rss_mb:
            record_property("rss_mb", json.dumps([round(mb) for _, mb in self.rss_mb]))


def reference_answers(url: str) -> dict[str, Any]:
    """Each request's answer alone (asked twice: the second is what a cached request answers)."""
    alone = client(url)
    try:
        for endpoint, args in CALLS.items():
            alone.predict(*args, api_name=endpoint)
        return {endpoint: alone.predict(*args, api_name=endpoint) for endpoint, args in CALLS.items()}
    finally:
        alone.close()


def run_crowd(url: str, seconds: float, *, measure_rss: bool = False) -> CrowdRun:
    """50 sessions for ``seconds``, every answer compared with ``reference_answers``."""
    expected = reference_answers(url)
    with ThreadPoolExecutor(4) as pool:  # a few at a time: each fetches the app's config
        clients = list(pool.map(lambda _: client(url), MIX))
    refused_before = heavy_gate().info().refused
    most_running, stop = [0], threading.Event()
    began = time.monotonic()
    rss: list[tuple[float, float]] = []

    def watch() -> None:
        next_rss = began
        while not stop.is_set():
            most_running[0] = max(most_running[0], heavy_gate().info().running)
            if measure_rss and time.monotonic() >= next_rss:
                rss.append((time.monotonic() - began, rss_mb()))
                next_rss += 2.0
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    end = began + seconds
    answers: list[Answer] = []

    def user(number: int) -> None:
        endpoint = MIX[number]
        rng = random.Random(number)
        while time.monotonic() < end:
            asked = time.monotonic()
            answer = clients[number].predict(*CALLS[endpoint], api_name=endpoint)
            done = time.monotonic()
            answers.append(Answer(number, endpoint, done - began, done - asked, answer == expected[endpoint]))
            if endpoint in LIGHT:
                time.sleep(rng.uniform(0.5, 1.5))

    try:
        with ThreadPoolExecutor(len(MIX)) as pool:
            list(pool.map(user, range(len(MIX))))
        seconds = time.monotonic() - began
    finally:
        stop.set()
        watcher.join(5)
        with ThreadPoolExecutor(8) as pool:  # one by one, closing 50 took about a minute
            list(pool.map(Client.close, clients))
    return CrowdRun(seconds, answers, most_running[0], heavy_gate().info().refused - refused_before, rss)


def _summary(run: CrowdRun) -> str:
    light, heavy = run.latencies(LIGHT), run.latencies(set(CALLS) - LIGHT)
    return (f"{len(run.answers)} answers in {run.seconds:.0f} s; light p50 {percentile(light, 0.5):.2f} s, "
            f"p95 {percentile(light, 0.95):.2f} s, slowest {max(light):.2f} s; heavy runs {len(heavy)}, "
            f"slowest {max(heavy):.2f} s")  # fmt: skip


def _check_bounds(run: CrowdRun) -> None:
    wrong = [(a.endpoint, round(a.seconds, 2)) for a in run.answers if not a.right]
    assert wrong == []
    assert run.most_running <= heavy_gate().info().slots, run.most_running


def test_50_mixed_clients_all_answered_right_heavy_bounded(app_server: Server, record_property: Any) -> None:  # noqa: F811
    run = run_crowd(app_server.url, SHORT_SECONDS)
    run.record(record_property, "short")
    print("\n" + _summary(run))
    _check_bounds(run)
    light, heavy = run.latencies(LIGHT), run.latencies(set(CALLS) - LIGHT)
    assert len(light) >= 100 and heavy, (len(light), len(heavy))


@pytest.mark.crowd_long
def test_50_mixed_clients_for_minutes_fair_and_flat(app_server: Server, record_property: Any) -> None:  # noqa: F811
    release_free_memory()
    run = run_crowd(app_server.url, LONG_SECONDS, measure_rss=True)
    release_free_memory()
    run.rss_mb.append((run.seconds, rss_mb()))
    run.record(record_property, "long")
    print("\n" + _summary(run))
    _check_bounds(run)
    assert run.refused == 0  # no heavy client ever had more than its share waiting, nor waited too long
    # Light requests were answered throughout, not only before or after the heavy runs.
    light_per_window: dict[int, int] = defaultdict(int)
    for answer in run.answers:
        if answer.endpoint in LIGHT:
            light_per_window[int(answer.finished // WINDOW_S)] += 1
    windows = range(int(LONG_SECONDS // WINDOW_S))
    assert all(light_per_window[w] > 0 for w in windows), dict(light_per_window)
    # Every heavy client had its turns: round robin between sessions, none held back by the others.
    heavy_served = defaultdict(int)
    for answer in run.answers:
        if answer.endpoint not in LIGHT:
            heavy_served[answer.client] += 1
    heavy_clients = [n for n, endpoint in enumerate(MIX) if endpoint not in LIGHT]
    assert all(heavy_served[n] >= 2 for n in heavy_clients), dict(heavy_served)
    quarter = [mb for at, mb in run.rss_mb if LONG_SECONDS / 4 <= at < LONG_SECONDS / 2]
    settled = sorted(quarter)[len(quarter) // 2]
    assert run.rss_mb[-1][1] - settled <= RSS_GROWTH_MB, (settled, run.rss_mb[-1][1])
