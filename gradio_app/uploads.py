"""Uploads handed to handlers as the files that arrived, for quantcore to decode within its limits.

``gr.Image(type="filepath")`` opens an upload with Pillow before any handler
runs and, unless the file's mode already is ``image_mode``, decodes and
re-encodes the whole image there: a 190 KB grey 13000x13000 PNG costs seconds
and hundreds of MB per request, and a larger one ends in Gradio's opaque
"AppError". ``RawImage`` is the same component with that step left out: the
handler receives the uploaded file's path and ``quantcore.evaluate.images``
refuses what is too large from its header, with a message saying so.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class RawImage(gr.Image):
    """``gr.Image`` whose value reaches the handler as the uploaded file's path, never decoded by Gradio."""

    def get_block_name(self) -> str:
        """The browser shows it with ``gr.Image``'s own front end (which Gradio picks by this name)."""
        return "image"

    def preprocess(self, payload: Any) -> str | None:
        """The uploaded file's path (Gradio has checked it lies in its upload folder).

        Raises:
            gr.Error: an inline (``data:``) image, which Gradio would decode to store: send a file instead.
        """
        if payload is None:
            return None
        if payload.path is None or (payload.url or "").startswith("data:"):
            raise gr.Error("Send the image as a file upload.")
        return str(payload.path)
