"""Light requests idle vs under a crowd of 50 mixed clients, side by side, against `python app.py`.

    python benchmarks/bench_load.py [--seconds 30] [--think 1.0] [--rounds 3]

Starts the app in its own process, times cached /load_folder and /layers alone (idle), then starts
50 gradio_client sessions from this process (20 /load_folder, 14 /layers, 8 /predict thinking
``--think`` s on average between requests; 4 /layer_error and 4 /flips back to back; each /layer_error
asks for an image count not asked for before, so that it computes rather than being answered from the
results cache, unless ``--cached``) and times the
same light requests inside the crowd, ``--rounds`` times one after another (one app process, the
clients reused). Prints each round's p95 of the light requests, then p50/p95 of every endpoint with all
rounds' requests pooled, idle and loaded, and their ratio: one 30 s round's p95 rests on ~20 requests
past it, and varies by 0.3 s from round to round on 2 cores.
Target (issue 12): under the crowd, /load_folder p95 <= 1 s and /layers p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from common import HOST, free_port, start, stop, wait_for_200
from gradio_client import Client

FOLDER = "resnet8"
LIGHT = {"/load_folder": (FOLDER,), "/layers": (FOLDER, None)}
CROWD = [("/load_folder", (FOLDER,))] * 20 + [("/layers", (FOLDER, None))] * 14 + [("/predict", (FOLDER,))] * 8
CROWD += [("/layer_error", (FOLDER, 64))] * 4 + [("/flips", (FOLDER,))] * 4
# Image counts for /layer_error near the 64 of --cached, taken in turn: more of them than the results cache holds
# (32 entries, least recently used dropped first), so that every request is a new run over that many samples.
FRESH_IMAGES = itertools.cycle(range(48, 88))
TARGETS = {"/load_folder": 1.0, "/layers": 2.0}


def client(url: str, timeout: float) -> Client:
    # ssl_verify=False: the URL is plain http on loopback, so no TLS is involved either way; with it on,
    # gradio_client builds an SSL context (~90 ms of CPU) for every request, here on the server's own cores:
    # the crowd's clients then cost the machine more than the app does, and the latencies measure them.
    return Client(url, verbose=False, download_files=False, ssl_verify=False, httpx_kwargs={"timeout": timeout})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="crowds one after another, pooled (default 3)")
    parser.add_argument(
        "--cached",
        dest="fresh",
        action="store_false",
        help="every /layer_error asks for 64 images, answered from the results cache after the first",
    )
    args = parser.parse_args()
    port = free_port()
    proc = start(["app.py", "--port", str(port)])
    try:
        url = f"http://{HOST}:{port}/"
        wait_for_200(url, proc)
        probe = client(url, 120)
        probe.predict(FOLDER, api_name="/load_folder")
        idle: dict[str, list[float]] = defaultdict(list)
        for _ in range(20):
            for endpoint, call in LIGHT.items():
                began = time.perf_counter()
                probe.predict(*call, api_name=endpoint)
                idle[endpoint].append(time.perf_counter() - began)
        load_before = os.getloadavg()[0]
        with ThreadPoolExecutor(4) as pool:
            clients = list(pool.map(lambda _: client(url, 300), CROWD))
        rounds = [crowd_round(clients, args.seconds, args.think, args.fresh) for _ in range(args.rounds)]
    finally:
        stop(proc)
    loaded: dict[str, list[float]] = defaultdict(list)
    for times in rounds:
        for endpoint, values in times.items():
            loaded[endpoint] += values
    print(f"{len(CROWD)} clients, {args.rounds} round(s) of {args.seconds:.0f} s, think {args.think} s; "
          f"{os.cpu_count()} cores, load average {load_before:.1f} before the crowd")  # fmt: skip
    for endpoint in LIGHT:
        each = ", ".join(f"{pct(times[endpoint], 0.95):.2f}" for times in rounds)
        print(f"{endpoint} crowd p95 of each round: {each} s")
    print(
        f"{'endpoint':14} {'idle p50':>9} {'idle p95':>9} {'crowd p50':>10} {'crowd p95':>10} {'p95 ratio':>9}  n"
        "   (crowd: every round's requests pooled)"
    )
    for endpoint in (*LIGHT, "/predict", "/layer_error", "/flips"):
        crowd = loaded[endpoint]
        if endpoint in idle:
            i50, i95 = statistics.median(idle[endpoint]), pct(idle[endpoint], 0.95)
            met = "OK" if pct(crowd, 0.95) <= TARGETS[endpoint] else "OVER"
            verdict = f"  target p95 <= {TARGETS[endpoint]} s: {met}"
            print(f"{endpoint:14} {i50:9.2f} {i95:9.2f} {statistics.median(crowd):10.2f} {pct(crowd, 0.95):10.2f} "
                  f"{pct(crowd, 0.95) / i95:9.1f}  {len(crowd)}{verdict}")  # fmt: skip
        else:
            print(f"{endpoint:14} {'':9} {'':9} {statistics.median(crowd):10.2f} {pct(crowd, 0.95):10.2f} {'':9}  "
                  f"{len(crowd)}")  # fmt: skip


def crowd_round(clients: list[Client], seconds: float, think: float, fresh: bool) -> dict[str, list[float]]:
    """Every client of ``CROWD`` at once for ``seconds``: each request's latency, by endpoint.

    ``fresh``: every /layer_error asks for a new image count, so the heavy slots compute all the time.
    """
    loaded: dict[str, list[float]] = defaultdict(list)
    end = time.monotonic() + seconds

    def user(number: int) -> None:
        endpoint, call = CROWD[number]
        rng = random.Random(number)
        while time.monotonic() < end:
            if fresh and endpoint == "/layer_error":  # an image count not asked for yet: computed, not cached
                call = (FOLDER, next(FRESH_IMAGES))
            began = time.perf_counter()
            clients[number].predict(*call, api_name=endpoint)
            loaded[endpoint].append(time.perf_counter() - began)
            if endpoint not in ("/layer_error", "/flips"):
                time.sleep(rng.uniform(0.5, 1.5) * think)

    with ThreadPoolExecutor(len(CROWD)) as pool:
        list(pool.map(user, range(len(CROWD))))
    return loaded


if __name__ == "__main__":
    main()
