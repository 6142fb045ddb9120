"""quantcore.heavy: the gate heavy views wait at — bounded, round robin between owners, capped, with ETAs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from quantcore import settings
from quantcore.errors import ServerBusyError
from quantcore.heavy import HeavyGate, heavy_gate


def _holder(gate: HeavyGate, owner: str, kind: str, log: list[str], release: threading.Event,
            waits: list[tuple[int, float | None]] | None = None) -> threading.Thread:  # fmt: skip
    """A thread that takes a slot, logs its name, and holds the slot until ``release`` is set."""

    def hold() -> None:
        on_wait = (lambda ahead, eta: waits.append((ahead, eta))) if waits is not None else None
        with gate.slot(owner, kind, on_wait=on_wait, poll_s=0.02):
            log.append(f"{owner}:{kind}")
            release.wait(5)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_never_more_holders_than_slots() -> None:
    gate = HeavyGate(2, per_owner=10, max_wait_s=10)
    holding, most, lock = [0], [0], threading.Lock()

    def work(owner: str) -> None:
        with gate.slot(owner, "k"):
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            time.sleep(0.02)
            with lock:
                holding[0] -= 1

    threads = [threading.Thread(target=work, args=(f"u{i % 5}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 2
    info = gate.info()
    assert (info.served, info.running, info.waiting, info.refused) == (20, 0, 0, 0)


def test_waiters_are_served_round_robin_between_owners() -> None:
    """a queues three, then b and c one each: b and c go before a's second and third."""
    gate = HeavyGate(1, per_owner=10, max_wait_s=10)
    log: list[str] = []
    gates = [threading.Event() for _ in range(6)]
    threads = [_holder(gate, "a", "first", log, gates[0])]
    _until(lambda: log == ["a:first"])
    for number, (owner, kind) in enumerate([("a", "2"), ("a", "3"), ("b", "1"), ("c", "1")], start=1):
        threads.append(_holder(gate, owner, kind, log, gates[number]))
        _until(lambda n=number: gate.info().waiting == n)  # queued in this order
    for event in gates:
        event.set()
    for thread in threads:
        thread.join(5)
    assert log == ["a:first", "a:2", "b:1", "c:1", "a:3"]


def test_an_owner_over_its_share_is_refused_at_once() -> None:
    gate = HeavyGate(1, per_owner=2, max_wait_s=10)
    log: list[str] = []
    release = threading.Event()
    threads = [_holder(gate, "a", "k", log, release), _holder(gate, "a", "k", log, release)]
    _until(lambda: gate.info().running == 1 and gate.info().waiting == 1)
    began = time.monotonic()
    with pytest.raises(ServerBusyError, match=r"2 of your heavy runs are already running"), gate.slot("a", "k"):
        pass
    assert time.monotonic() - began < 0.5
    # Another owner is not held to a's share.
    threads.append(_holder(gate, "b", "k", log, release))
    _until(lambda: gate.info().waiting == 2)
    release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(log) == ["a:k", "a:k", "b:k"] and gate.info().refused == 1


def test_a_wait_past_the_limit_is_refused_and_leaves_the_line() -> None:
    gate = HeavyGate(1, per_owner=5, max_wait_s=0.3)
    release = threading.Event()
    holder = _holder(gate, "a", "k", [], release)
    _until(lambda: gate.info().running == 1)
    began = time.monotonic()
    with (
        pytest.raises(ServerBusyError, match=r"no slot came free within 0\.3 s \(QP_HEAVY_WAIT_S\)"),
        gate.slot("b", "k", poll_s=0.05),
    ):
        pass
    assert 0.3 <= time.monotonic() - began < 1.5
    assert gate.info().waiting == 0
    release.set()
    holder.join(5)
    with gate.slot("b", "k"):  # the slot is free again and nothing stale is queued
        assert gate.info().running == 1


def test_the_wait_is_reported_with_place_and_an_eta_from_past_runs() -> None:
    gate = HeavyGate(1, per_owner=5, max_wait_s=10)
    with gate.slot("x", "slow"):
        time.sleep(0.2)  # one run of "slow" so far: 0.2 s
    release = [threading.Event() for _ in range(3)]
    log: list[str] = []
    waits: list[tuple[int, float | None]] = []
    threads = [_holder(gate, "a", "slow", log, release[0])]
    _until(lambda: gate.info().running == 1)
    threads.append(_holder(gate, "b", "slow", log, release[1]))
    _until(lambda: gate.info().waiting == 1)
    threads.append(_holder(gate, "c", "slow", log, release[2], waits))
    _until(lambda: len(waits) >= 1)
    ahead, eta = waits[0]
    run = gate.info().seconds_by_kind["slow"]  # the one run so far, as measured (0.2 s and a little)
    # b is ahead and will take one run; a has at most one run left: one slot, so between one and two runs.
    assert ahead == 1 and run >= 0.2
    assert eta is not None and run - 1e-6 <= eta <= 2 * run + 1e-6
    release[0].set()
    _until(lambda: log[-1] == "b:slow")
    _until(lambda: waits[-1][0] == 0)  # c is told it is next once b holds the slot
    release[1].set()
    release[2].set()
    for thread in threads:
        thread.join(5)
    assert log == ["a:slow", "b:slow", "c:slow"]


def test_a_kind_never_run_has_no_eta() -> None:
    gate = HeavyGate(1, per_owner=5, max_wait_s=10)
    release = threading.Event()
    waits: list[tuple[int, float | None]] = []
    threads = [_holder(gate, "a", "new", [], release)]
    _until(lambda: gate.info().running == 1)
    threads.append(_holder(gate, "b", "new", [], release, waits))
    _until(lambda: len(waits) >= 1)
    assert waits[0] == (0, None)
    release.set()
    for thread in threads:
        thread.join(5)


def test_a_failing_holder_frees_its_slot() -> None:
    gate = HeavyGate(1, per_owner=5, max_wait_s=10)
    with pytest.raises(RuntimeError, match="boom"), gate.slot("a", "k"):
        raise RuntimeError("boom")
    info = gate.info()
    assert (info.running, info.waiting, info.served) == (0, 0, 1)


def test_the_process_gate_follows_the_settings() -> None:
    before = settings.current()
    try:
        settings.configure(heavy_slots=3, heavy_per_user=4, heavy_wait_s=5.0)
        assert heavy_gate().info().slots == 3
        settings.configure(heavy_slots=1)
        assert heavy_gate().info().slots == 1
    finally:
        settings.configure(**before.__dict__)
