"""A small keyed cache for expensive inspect results: layer tables, drift reports.

Keyed by the folder's fingerprint (its path, and each variant's status and
sha256, plus the size and mtime of its ``samples.npz``), the view, and the
view's settings. An edited variant file gets a new sha256 when the folder
reloads, so its stale results are never served. Shares the folder cache's
single-flight LRU: two requests for the same result compute it once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from quantcore.cache import CacheInfo, SingleFlightLRU
from quantcore.load.discover import SAMPLES_NAME
from quantcore.load.folder import ModelVariants

T = TypeVar("T")
CAPACITY = 32

_RESULTS: SingleFlightLRU[Any] = SingleFlightLRU(CAPACITY)
# Which results were computed, per folder fingerprint, so a report can list "every view computed so far".
# Keys only, a few times the cache's capacity: a result evicted since is computed again when asked for.
COMPUTED_CAPACITY = 8 * CAPACITY
_COMPUTED: SingleFlightLRU[None] = SingleFlightLRU(COMPUTED_CAPACITY)


def folder_fingerprint(variants: ModelVariants) -> tuple[Hashable, ...]:
    """What a folder's results depend on: its path, each variant's status and sha256, its samples file."""
    try:
        stat = os.stat(variants.folder / SAMPLES_NAME)
        samples: tuple[int, int] | None = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        samples = None
    records = tuple((str(k), str(r.status), r.sha256) for k, r in variants.records.items())
    override = json.dumps(variants.loaded.input_override, sort_keys=True, default=str)
    return (str(variants.folder), records, samples, override)


def cached(variants: ModelVariants, view: str, settings: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
    """The result of ``compute()`` for this folder, view and settings, computed at most once while cached.

    Args:
        variants: the loaded folder the result is about.
        view: which result ("layers", "drift", ...).
        settings: everything else the result depends on (hashable).
        compute: makes the result on a miss; an exception is not cached.

    Returns:
        The result and whether it came from the cache.
    """
    key = (folder_fingerprint(variants), view, settings)
    result = _RESULTS.get(key, None, compute)
    _COMPUTED.get(key, None, lambda: None)  # the key, newest last
    return result


def computed(variants: ModelVariants) -> list[tuple[str, Hashable]]:
    """The (view, settings) of every result computed for this folder as it is now, oldest first.

    Args:
        variants: the loaded folder (its fingerprint picks its results; an edited folder has none yet).

    Returns:
        One (view, settings) pair per result, as given to ``cached``.
    """
    fingerprint = folder_fingerprint(variants)
    return [(view, settings) for (f, view, settings) in _COMPUTED.kept_keys() if f == fingerprint]


def cache_info() -> CacheInfo:
    """Hits, misses, entries and capacity of the results cache."""
    return _RESULTS.info()


def cache_clear() -> None:
    """Forget every cached result."""
    _RESULTS.clear()
    _COMPUTED.clear()
