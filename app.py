"""Quantization Playground: ``python app.py`` locally, ``app_file`` on Hugging Face Spaces.

``demo`` is built at import so that Spaces and ``gradio app.py`` (reload mode)
find it; flags given on the command line rebuild it before launch.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from gradio_app import build_demo, launch_options
from quantcore import settings
from quantcore.warmup import start_warmup

logger = logging.getLogger("quantization_playground")

demo = build_demo()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load, inspect and compare float and quantized model variants.")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        help="port to listen on (default: $GRADIO_SERVER_PORT or 7860)",
    )  # fmt: skip
    parser.add_argument(
        "--models-dir", type=Path, default=None,
        help="root folder the explorer shows (default: $QP_MODELS_DIR or ./models)",
    )  # fmt: skip
    parser.add_argument("--share", action="store_true", help="also ask for a temporary public gradio.live link")
    parser.add_argument(
        "--trust-remote-models", action="store_true",
        help=f"let TorchScript and pickled Hub models load; they can run code (env: {settings.TRUST_REMOTE_ENV}=1)",
    )  # fmt: skip
    parser.add_argument(
        "--ray", metavar="ADDRESS", default=None,
        help="run sensitivity sweeps on this Ray cluster (env: QP_RAY_ADDRESS; needs requirements-ray.txt)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.models_dir is not None and not args.models_dir.is_dir():
        parser.error(f"--models-dir {args.models_dir} is not a folder")
    return args


def apply_settings(args: argparse.Namespace) -> settings.Settings:
    """Put the flags into quantcore's settings and the environment.

    The environment too, because reload mode (``gradio app.py``) re-imports
    this module, and settings are read from the environment at import.
    """
    overrides: dict[str, object] = {}
    if args.models_dir is not None:
        overrides["models_root"] = args.models_dir
        os.environ["QP_MODELS_DIR"] = str(args.models_dir.resolve())
    if args.trust_remote_models:
        overrides["trust_remote_models"] = True
        os.environ[settings.TRUST_REMOTE_ENV] = "1"
    if args.ray:
        overrides["ray_address"] = args.ray
        os.environ["QP_RAY_ADDRESS"] = args.ray
    return settings.configure(**overrides)


def launch(app: gr.Blocks, args: argparse.Namespace) -> None:
    """Serve ``app``; with --share, try for a public link but keep serving locally without one."""
    app.launch(
        server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
        **launch_options(),
    )  # fmt: skip
    if args.share and not app.share_url:
        logger.warning("No share link could be created (offline?); serving locally at %s only", app.local_url)
    if settings.current().warmup:
        start_warmup()  # after the page serves: startup is not delayed, the first load is not slowed
    app.block_thread()


def main(argv: Sequence[str] | None = None) -> None:
    global demo
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Gradio self-check otherwise
    args = parse_args(argv)
    before = settings.current()
    if apply_settings(args).models_root != before.models_root:
        demo = build_demo()  # the explorer's root is fixed when it is built
    logger.info("models folder: %s", settings.current().models_root)
    launch(demo, args)


if __name__ == "__main__":
    main()
