"""The Gradio app over quantcore: layout and wiring (``blocks``), handlers, rendering."""

from gradio_app.blocks import build_demo, launch_options

__all__ = ["build_demo", "launch_options"]
