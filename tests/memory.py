"""This process's resident memory, and its peak over a block (Linux /proc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in {_STATUS}")


def rss_mb() -> float:
    """Resident memory now."""
    return _status_kb("VmRSS") / 1024


@dataclass
class MemoryUse:
    before_mb: float
    peak_mb: float = 0.0
    after_mb: float = 0.0

    @property
    def rise_mb(self) -> float:
        """How far the peak rose above where the block started."""
        return self.peak_mb - self.before_mb

    @property
    def kept_mb(self) -> float:
        """How much more is resident after the block than before it."""
        return self.after_mb - self.before_mb


@contextmanager
def memory_use() -> Iterator[MemoryUse]:
    """The resident memory before, at its peak during, and after the block.

    The kernel's high-water mark (VmHWM) is reset at the start (writing 5 to
    /proc/self/clear_refs), so the peak is this block's own, caught however
    briefly it lasted — by any thread, the in-process app server's too.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    use = MemoryUse(before_mb=rss_mb())
    yield use
    use.peak_mb = _status_kb("VmHWM") / 1024
    gc.collect()
    use.after_mb = rss_mb()
