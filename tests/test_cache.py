import gc
import threading
import time
import weakref

import pytest

from quantcore.cache import SingleFlightLRU


class Value:
    def __init__(self, n: int) -> None:
        self.n = n


def test_hit_returns_the_same_object_and_counts():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(2)
    first, hit1 = cache.get("a", 1, lambda: Value(1))
    second, hit2 = cache.get("a", 1, lambda: Value(2))
    assert (hit1, hit2) == (False, True)
    assert second is first
    info = cache.info()
    assert (info.hits, info.misses, info.loads, info.entries) == (1, 1, 1, 1)


def test_changed_fingerprint_reloads_in_place():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(2)
    cache.get("a", 1, lambda: Value(1))
    value, hit = cache.get("a", 2, lambda: Value(2))
    assert (value.n, hit) == (2, False)
    assert cache.info().entries == 1


def test_lru_evicts_least_recently_used_and_releases_it():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(2)
    a, _ = cache.get("a", 0, lambda: Value(1))
    cache.get("b", 0, lambda: Value(2))
    cache.get("a", 0, lambda: Value(99))  # touch a: b is now oldest
    cache.get("c", 0, lambda: Value(3))
    assert cache.get("a", 0, lambda: Value(99))[1] is True
    b_ref = weakref.ref(cache.get("b", 0, lambda: Value(4))[0])  # b was evicted: reloads
    assert b_ref().n == 4
    assert cache.info().evictions == 2  # b, then a or c making room for b again
    cache.clear()
    del a
    gc.collect()
    assert b_ref() is None, "an evicted/cleared value must not be kept alive by the cache"


def test_concurrent_requests_load_once():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(4)
    loads = []
    barrier = threading.Barrier(16)

    def slow_load() -> Value:
        loads.append(1)
        time.sleep(0.2)
        return Value(7)

    results = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.get("k", 0, slow_load))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert len({id(v) for v, _ in results}) == 1
    assert sum(not hit for _, hit in results) == 1


def test_failed_load_is_not_cached_and_reaches_every_waiter():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(2)

    def boom() -> Value:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        cache.get("a", 0, boom)
    value, hit = cache.get("a", 0, lambda: Value(1))
    assert (value.n, hit) == (1, False)


def test_resize_evicts_down_to_capacity():
    cache: SingleFlightLRU[Value] = SingleFlightLRU(3)
    for key in "abc":
        cache.get(key, 0, lambda: Value(0))
    cache.resize(1)
    info = cache.info()
    assert (info.entries, info.capacity, info.evictions) == (1, 1, 2)
