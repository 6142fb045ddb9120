"""A bounded, thread-safe LRU cache with single-flight loading.

One instance lives in ``variants.py`` at module level, so every user of a
process shares it. Each key maps to one entry whose fingerprint must match
for a hit; a stale fingerprint reloads in place. Concurrent requests for a key
being loaded wait for that one load instead of starting their own.

Bounded by count and, given ``weigh`` (an entry's estimated bytes) and
``budget_bytes``, by bytes too: least recently used entries are dropped while
the total is over the budget, the newest always kept (one entry over the
budget on its own still loads; it is simply all that is kept).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    loads: int
    evictions: int
    entries: int
    capacity: int
    bytes: int = 0  # estimated, of the entries kept (0 without a weigh function)
    budget_bytes: int | None = None

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class SingleFlightLRU(Generic[V]):
    def __init__(
        self,
        capacity: int,
        *,
        weigh: Callable[[V], int] | None = None,
        budget_bytes: int | None = None,
        on_evict: Callable[[V], None] | None = None,
    ) -> None:
        self._capacity = max(1, capacity)
        self._on_evict = on_evict
        self._weigh = weigh
        self._budget = budget_bytes
        self._weights: dict[Hashable, int] = {}
        self._entries: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self._in_flight: dict[Hashable, tuple[Hashable, Future[V]]] = {}
        self._lock = threading.Lock()
        self._hits = self._misses = self._loads = self._evictions = 0

    def get(self, key: Hashable, fingerprint: Hashable, load: Callable[[], V]) -> tuple[V, bool]:
        """The value for ``key``, loading it unless cached with this ``fingerprint``.

        Returns the value and whether it came from the cache (waiting on
        another caller's load counts as a hit: this caller loaded nothing).
        A failed load is not cached; every waiter on it sees the exception.
        """
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] == fingerprint:
                self._entries.move_to_end(key)
                self._hits += 1
                return cached[1], True
            flight = self._in_flight.get(key)
            if flight is not None and flight[0] == fingerprint:
                self._hits += 1
                future = flight[1]
                owner = False
            else:
                self._misses += 1
                future = Future()
                self._in_flight[key] = (fingerprint, future)
                owner = True
        if not owner:
            return future.result(), True
        try:
            value = load()
        except BaseException as exc:
            with self._lock:
                if self._in_flight.get(key, (None, None))[1] is future:
                    del self._in_flight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._loads += 1
            if self._in_flight.get(key, (None, None))[1] is future:
                del self._in_flight[key]
            self._entries[key] = (fingerprint, value)
            self._entries.move_to_end(key)
            if self._weigh is not None:
                self._weights[key] = max(0, int(self._weigh(value)))
            self._trim()
        future.set_result(value)
        return value, False

    def _over(self) -> bool:
        if len(self._entries) > self._capacity:
            return True
        return self._budget is not None and len(self._entries) > 1 and sum(self._weights.values()) > self._budget

    def _trim(self) -> None:
        """Drop least recently used entries while over the count or the byte budget (lock held)."""
        while self._over():
            key, (_, value) = self._entries.popitem(last=False)
            self._weights.pop(key, None)
            self._evictions += 1
            if self._on_evict is not None:
                self._on_evict(value)

    def kept_keys(self) -> list[Hashable]:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._entries)

    def discard_where(self, doomed: Callable[[V], bool]) -> int:
        """Drop every entry whose value ``doomed`` picks; returns how many went (not counted as evictions)."""
        with self._lock:
            keys = [key for key, (_, value) in self._entries.items() if doomed(value)]
            for key in keys:
                del self._entries[key]
                self._weights.pop(key, None)
            return len(keys)

    def resize(self, capacity: int, *, budget_bytes: int | None = None) -> None:
        """Set the most entries kept and (when given) the byte budget; drops what no longer fits."""
        with self._lock:
            self._capacity = max(1, capacity)
            if budget_bytes is not None:
                self._budget = budget_bytes
            self._trim()

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, self._loads, self._evictions, len(self._entries), self._capacity,
                sum(self._weights.values()), self._budget,
            )  # fmt: skip

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._weights.clear()
            self._hits = self._misses = self._loads = self._evictions = 0
