"""Progress of a long run: the fraction done and, after a second, the time it still needs."""

from __future__ import annotations

import pytest

from quantcore.evaluate import progress as progress_module
from quantcore.evaluate.progress import Progress


def test_progress_says_the_time_left_once_it_can_be_told(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 100.2, 102.0, 103.0, 400.0, 500.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    seen: list[tuple[float, str]] = []
    report = Progress(400, lambda fraction, message: seen.append((fraction, message)))
    report(10, "onnx_int8")  # 0.2 s in: too soon to guess
    report(100, "onnx_int8")  # 2 s for a quarter: 6 s to go
    report(200)  # 3 s for a half: 3 s to go
    report(400)  # done: nothing left to say
    assert seen == [
        (0.025, "onnx_int8: 10 of 400 images"),
        (0.25, "onnx_int8: 100 of 400 images, about 6 s left"),
        (0.5, "200 of 400 images, about 3 s left"),
        (1.0, "400 of 400 images"),
    ]
    Progress(5, None)(3)  # no callback: nothing to report, nothing raised
