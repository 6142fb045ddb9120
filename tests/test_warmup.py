"""The runtimes warm-up: it imports and first-uses torch and onnxruntime, and QP_WARMUP=0 turns it off."""

from __future__ import annotations

import subprocess
import sys

from quantcore.settings import PROJECT_ROOT

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
assert "torch" not in sys.modules and "onnxruntime" not in sys.modules
from quantcore.warmup import start_warmup
start_warmup().join(120)
assert "torch" in sys.modules and "onnxruntime" in sys.modules
import quantcore
from quantcore import settings
print(settings.current().warmup)
"""


def test_warmup_imports_both_runtimes_without_a_failure() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    assert "model runtimes warmed in" in done.stderr
    assert "failed" not in done.stderr
    assert done.stdout.split()[-1] == "True"


def test_qp_warmup_0_turns_it_off(monkeypatch) -> None:
    from quantcore import settings

    monkeypatch.setenv("QP_WARMUP", "0")
    assert settings._from_environment().warmup is False
    monkeypatch.setenv("QP_WARMUP", "1")
    assert settings._from_environment().warmup is True
