"""Using quantcore leaves nothing in the user's home: no runtime keeps a cache or database there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from quantcore.settings import PROJECT_ROOT

# Warms the runtimes as app.py does, loads the bundled folder and runs every variant once.
SCRIPT = """
import quantcore
from quantcore.warmup import warm_runtimes
warm_runtimes()
from quantcore.evaluate import folder_samples, input_spec
variants = quantcore.load_model_variants("models/resnet8")
spec = input_spec(variants)
samples, _ = folder_samples(variants, spec)
card = quantcore.build_scorecard(variants, samples, spec, runs=1)
print(len(card.scores))
"""


def test_loading_and_scoring_write_nothing_under_home(tmp_path: Path) -> None:
    home, cache = tmp_path / "home", tmp_path / "xdg-cache"
    home.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update({"HOME": str(home), "XDG_CACHE_HOME": str(cache), "HF_HOME": str(tmp_path / "hf")})
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 1
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [], f"written outside the project: {written}"
