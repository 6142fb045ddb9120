"""Heavy work (runs over many images, calibration) a few at a time, shared fairly between users.

A heavy view keeps both cores busy for seconds, so the process runs at most
``QP_HEAVY_SLOTS`` of them at once (``HeavyGate``); light requests (a cached
folder, a layer list) run beside them in their own queue and never wait for a
slot. Those waiting for one are served round robin by owner (one user's tenth
request waits behind every other user's first), an owner may hold at most
``QP_HEAVY_PER_USER`` tickets (running or waiting) and nobody waits longer than
``QP_HEAVY_WAIT_S``: both refusals are a ``ServerBusyError`` saying why. While a
ticket waits, ``on_wait(ahead, eta_seconds)`` is told its place in line and an
estimate from the recent run times of each kind; the app shows it as progress.

The wait is not part of a request's run deadline (``QP_RUN_TIMEOUT_S``): that
starts once the slot is held, and bounds how long any one holder keeps it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from quantcore import settings
from quantcore.deadline import format_seconds
from quantcore.errors import ServerBusyError

WaitCallback = Callable[[int, "float | None"], None]
# Recent run times weigh this much in a kind's estimate (the rest is its history).
_RECENT_WEIGHT = 0.3


@dataclass
class _Ticket:
    owner: Hashable
    kind: str
    number: int
    granted: bool = False
    started: float = 0.0


@dataclass(frozen=True)
class GateInfo:
    """What the gate holds now and has done: slots, tickets running and waiting, totals since it was made."""

    slots: int
    running: int
    waiting: int
    served: int
    refused: int
    seconds_by_kind: dict[str, float] = field(default_factory=dict)


class HeavyGate:
    """At most ``slots`` holders at once; waiters served round robin by owner, each owner capped.

    Args:
        slots: how many may hold the gate at once (at least 1).
        per_owner: most tickets (held or waiting) one owner may have; more is refused.
        max_wait_s: longest a ticket waits for a slot before it is refused.
    """

    def __init__(self, slots: int, *, per_owner: int, max_wait_s: float) -> None:
        self._slots = max(1, slots)
        self._per_owner = max(1, per_owner)
        self._max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._waiting: dict[Hashable, deque[_Ticket]] = {}
        self._turns: deque[Hashable] = deque()  # owners with waiters, the next to be served first
        self._running: list[_Ticket] = []
        self._seconds: dict[str, float] = {}
        self._numbers = itertools.count()
        self._served = self._refused = 0

    def configure(self, slots: int, *, per_owner: int, max_wait_s: float) -> None:
        """Change the bounds; waiters are served at once if more slots are free."""
        with self._cond:
            self._slots, self._per_owner, self._max_wait_s = max(1, slots), max(1, per_owner), max_wait_s
            self._dispatch()

    @contextmanager
    def slot(self, owner: Hashable, kind: str, *, on_wait: WaitCallback | None = None,
             poll_s: float = 0.5) -> Iterator[None]:  # fmt: skip
        """Hold one slot for the block, waiting (fairly, boundedly) for it first.

        Args:
            owner: who asks (a session); tickets of one owner take turns with every other owner's.
            kind: what the work is (``"flips"``, ``"scorecard"`` ...): its past run times give the ETA.
            on_wait: called with (tickets served before this one, seconds until it starts or None) when
                it must wait, and again every ``poll_s`` while it does.
            poll_s: how often a waiter re-reports its place.

        Raises:
            ServerBusyError: the owner already has ``per_owner`` tickets, or no slot came within ``max_wait_s``.
        """
        ticket = self._enter(owner, kind)
        try:
            self._wait(ticket, on_wait, poll_s)
        except BaseException:
            self._leave(ticket)
            raise
        try:
            yield
        finally:
            self._leave(ticket)

    def _order(self) -> list[_Ticket]:
        """The waiting tickets in the order they will be served (call with the lock held)."""
        queues = {owner: deque(self._waiting[owner]) for owner in self._turns}
        turns, order = deque(self._turns), []
        while turns:
            owner = turns.popleft()
            order.append(queues[owner].popleft())
            if queues[owner]:
                turns.append(owner)
        return order

    def info(self) -> GateInfo:
        """A snapshot of the gate's state and counters."""
        with self._cond:
            waiting = sum(len(queue) for queue in self._waiting.values())
            return GateInfo(self._slots, len(self._running), waiting, self._served, self._refused, dict(self._seconds))

    # -- inside the lock ------------------------------------------------------------------------------

    def _enter(self, owner: Hashable, kind: str) -> _Ticket:
        with self._cond:
            held = sum(t.owner == owner for t in self._running) + len(self._waiting.get(owner, ()))
            if held >= self._per_owner:
                self._refused += 1
                raise ServerBusyError(
                    f"{held} of your heavy runs are already running or waiting (at most {self._per_owner} per user, "
                    "QP_HEAVY_PER_USER): wait for one to finish, then ask again"
                )
            ticket = _Ticket(owner, kind, next(self._numbers))
            if owner not in self._waiting:
                self._waiting[owner] = deque()
                self._turns.append(owner)
            self._waiting[owner].append(ticket)
            self._dispatch()
            return ticket

    def _wait(self, ticket: _Ticket, on_wait: WaitCallback | None, poll_s: float) -> None:
        began = time.monotonic()
        with self._cond:
            while not ticket.granted:
                waited = time.monotonic() - began
                if waited >= self._max_wait_s:
                    self._refused += 1
                    raise ServerBusyError(
                        f"the server is busy with other users' heavy runs: no slot came free within "
                        f"{format_seconds(self._max_wait_s)} (QP_HEAVY_WAIT_S); try again in a while"
                    )
                if on_wait is not None:
                    order = self._order()
                    ahead = order.index(ticket)
                    eta = self._eta(order[:ahead])
                    self._cond.release()  # the callback talks to the web server: never under the lock
                    try:
                        on_wait(ahead, eta)
                    finally:
                        self._cond.acquire()
                    if ticket.granted:
                        break
                self._cond.wait(min(poll_s, max(0.0, self._max_wait_s - waited)))

    def _leave(self, ticket: _Ticket) -> None:
        with self._cond:
            if ticket in self._running:
                self._running.remove(ticket)
                seconds = time.monotonic() - ticket.started
                old = self._seconds.get(ticket.kind)
                recent = seconds if old is None else (1 - _RECENT_WEIGHT) * old + _RECENT_WEIGHT * seconds
                self._seconds[ticket.kind] = recent
                self._served += 1
            else:
                queue = self._waiting.get(ticket.owner)
                if queue is not None and ticket in queue:
                    queue.remove(ticket)
                    if not queue:
                        del self._waiting[ticket.owner]
                        self._turns.remove(ticket.owner)
            self._dispatch()

    def _dispatch(self) -> None:
        """Give free slots to the next waiters, one owner's turn at a time."""
        granted = False
        while len(self._running) < self._slots and self._turns:
            owner = self._turns.popleft()
            queue = self._waiting[owner]
            ticket = queue.popleft()
            if queue:
                self._turns.append(owner)
            else:
                del self._waiting[owner]
            ticket.granted, ticket.started = True, time.monotonic()
            self._running.append(ticket)
            granted = True
        if granted:
            self._cond.notify_all()

    def _eta(self, ahead: list[_Ticket]) -> float | None:
        """Seconds until the ticket behind ``ahead`` starts: what the running have left and ``ahead`` will
        take, shared by the slots; None while a kind involved has never run (no honest estimate)."""
        if len(self._running) < self._slots:
            return 0.0
        now = time.monotonic()
        try:
            left = [max(0.0, self._seconds[t.kind] - (now - t.started)) for t in self._running]
            work = sum(left) + sum(self._seconds[t.kind] for t in ahead)
        except KeyError:
            return None
        # It starts no sooner than the first slot frees.
        return max(min(left), work / self._slots)


_GATE: HeavyGate | None = None
_GATE_LOCK = threading.Lock()


def heavy_gate() -> HeavyGate:
    """The process's gate, bounded by the settings in force (``QP_HEAVY_SLOTS``, ``QP_HEAVY_PER_USER``,
    ``QP_HEAVY_WAIT_S``)."""
    global _GATE
    current = settings.current()
    bounds = {"per_owner": current.heavy_per_user, "max_wait_s": current.heavy_wait_s}
    with _GATE_LOCK:
        if _GATE is None:
            _GATE = HeavyGate(current.heavy_slots, **bounds)
        else:
            _GATE.configure(current.heavy_slots, **bounds)
        return _GATE
