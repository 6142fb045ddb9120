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


def test_byte_budget_evicts_least_recently_used_past_it():
    cache: SingleFlightLRU[bytes] = SingleFlightLRU(10, weigh=len, budget_bytes=250)
    for key in "abc":
        cache.get(key, 0, lambda: b"x" * 100)
    info = cache.info()
    assert (info.entries, info.bytes, info.evictions) == (2, 200, 1)  # a went: 300 > 250
    assert cache.get("b", 0, lambda: b"new")[1] is True and cache.get("a", 0, lambda: b"y" * 10)[1] is False
    cache.get("d", 0, lambda: b"z" * 100)  # b(100) c(100) a(10) d(100): c, the oldest untouched, goes
    assert cache.get("c", 0, lambda: b"c")[1] is False


def test_one_entry_over_the_budget_is_kept_alone():
    cache: SingleFlightLRU[bytes] = SingleFlightLRU(10, weigh=len, budget_bytes=50)
    cache.get("a", 0, lambda: b"x" * 10)
    value, hit = cache.get("big", 0, lambda: b"x" * 500)
    assert (len(value), hit) == (500, False)
    info = cache.info()
    assert (info.entries, info.bytes) == (1, 500)
    cache.resize(10, budget_bytes=5_000)
    cache.get("a", 0, lambda: b"x" * 10)
    assert cache.info().entries == 2


def _big_onnx(path, megabytes: int, seed: int) -> None:
    """A valid float model whose one initializer is ``megabytes`` large (y = x + w)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = megabytes * 1024 * 1024 // 4
    weight = numpy_helper.from_array(np.random.default_rng(seed).random(n, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_folders_past_qp_cache_mb_are_evicted_and_memory_stays_bounded(models_root):
    """Six folders of one 24 MB model each through a budget of 64 MB: at most two stay loaded, and the
    memory the process keeps is a fraction of what the same loads keep with the budget off."""
    import quantcore
    from quantcore import settings
    from tests.memory import rss_mb
    from tests.test_load_soak import release_free_memory

    folders = []
    for number in range(6):
        folder = models_root / f"big{number}"
        folder.mkdir()
        _big_onnx(folder / f"big{number}.onnx", 24, number)
        folders.append(folder)
    before = settings.current()
    kept_mb = {}
    try:
        for budget_mb in (64, 100_000):
            quantcore.cache_clear()
            settings.configure(cache_size=8, cache_bytes=budget_mb * 1024 * 1024)
            release_free_memory()
            start = rss_mb()
            for folder in folders:
                assert quantcore.load_model_variants(folder).loaded.records  # loads
            release_free_memory()
            kept_mb[budget_mb] = rss_mb() - start
            info = quantcore.cache_info()
            if budget_mb == 64:
                assert info.entries == 2 and info.evictions == 4, info
                assert info.bytes <= 64 * 1024 * 1024 and info.budget_bytes == 64 * 1024 * 1024
            else:
                assert info.entries == 6, info
    finally:
        quantcore.cache_clear()
        settings.configure(**before.__dict__)
    # Unbounded, six models stay (>= 6 x 24 MB); bounded, about two.
    assert kept_mb[100_000] >= 6 * 24 * 0.9, kept_mb
    assert kept_mb[64] <= 0.5 * kept_mb[100_000], kept_mb
