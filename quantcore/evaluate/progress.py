"""Progress of a run over many images, with the time it still needs: what a progress bar says."""

from __future__ import annotations

import time
from collections.abc import Callable

ProgressFn = Callable[[float, str], None]
ETA_AFTER_SECONDS = 1.0  # an estimate from the first fraction of a second is noise


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class Progress:
    """Reports ``done`` of ``total`` as a fraction and a message; after a second, with the time left."""

    def __init__(self, total: int, report: ProgressFn | None, *, unit: str = "images") -> None:
        self.total = max(total, 1)
        self.report = report
        self.unit = unit
        self.started = time.perf_counter()

    def __call__(self, done: int, what: str = "") -> None:
        if self.report is None:
            return
        fraction = min(done / self.total, 1.0)
        elapsed = time.perf_counter() - self.started
        message = f"{what}{': ' if what else ''}{done:,} of {self.total:,} {self.unit}"
        if elapsed >= ETA_AFTER_SECONDS and 0 < fraction < 1:
            message += f", about {_duration(elapsed * (1 - fraction) / fraction)} left"
        self.report(fraction, message)
