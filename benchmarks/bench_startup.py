"""Startup: time to first HTTP 200 of `python app.py` vs a minimal Gradio Blocks app, side by side.

    python benchmarks/bench_startup.py [--rounds 5]

Runs alternate (minimal, app, minimal, app, ...) so that load from anything
else on the machine falls on both alike. Target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import HOST, free_port, median_ms, start, stop, wait_for_200

TARGET = 1.3
MINIMAL_APP = """
import sys
import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("# Minimal")
    box = gr.Textbox()
    gr.Button().click(lambda text: text, box, box)

demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


def time_to_200(args: list[str], port: int) -> float:
    proc = start(args)
    try:
        return wait_for_200(f"http://{HOST}:{port}/", proc)
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp) / "minimal_app.py"
        minimal.write_text(MINIMAL_APP)
        baseline: list[float] = []
        ours: list[float] = []
        for round_ in range(args.rounds + 1):  # round 0 warms the disk cache and is not counted
            port = free_port()
            minimal_s = time_to_200([str(minimal), str(port)], port)
            port = free_port()
            app_s = time_to_200(["app.py", "--port", str(port)], port)
            label = f"round {round_}" if round_ else "warm-up"
            print(f"{label}: minimal {minimal_s:.2f} s, app.py {app_s:.2f} s")
            if round_:
                baseline.append(minimal_s)
                ours.append(app_s)
    ratio = median_ms(ours) / median_ms(baseline)
    print(f"median time to first 200: minimal Blocks {median_ms(baseline):.0f} ms, app.py {median_ms(ours):.0f} ms")
    # The fastest run of each is the least disturbed by whatever else the machine is doing.
    print(f"fastest: minimal Blocks {min(baseline) * 1000:.0f} ms, app.py {min(ours) * 1000:.0f} ms "
          f"(ratio {min(ours) / min(baseline):.2f})")  # fmt: skip
    verdict = "OK" if ratio <= TARGET else "OVER"
    print(f"ratio app.py / minimal (medians) = {ratio:.2f} (target <= {TARGET}) -> {verdict}")


if __name__ == "__main__":
    main()
