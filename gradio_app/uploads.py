"""What visitors upload: images handed to handlers unopened, and their own model files.

**Images.** ``gr.Image(type="filepath")`` opens an upload with Pillow before any handler
runs and, unless the file's mode already is ``image_mode``, decodes and
re-encodes the whole image there: a 190 KB grey 13000x13000 PNG costs seconds
and hundreds of MB per request, and a larger one ends in Gradio's opaque
"AppError". ``RawImage`` is the same component with that step left out: the
handler receives the uploaded file's path and ``quantcore.evaluate.images``
refuses what is too large from its header, with a message saying so.

**Model files.** The upload area takes several files at once into a folder
only that browser session can open (``quantcore.load.uploads``): the session
is the request's Gradio session, looked up by ``session_of_request``, which
``install`` hands to quantcore once.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.context import LocalContext

from quantcore import settings
from quantcore.load import uploads

UPLOAD_HELP = (
    "Your own `.onnx` / `.pt` files (and optionally `samples.npz`, `variants.json`, `model_card.json`): "
    "kept in a folder only this browser tab can open, removed when you leave or after {ttl} unused. "
    "Treated like the Hub: TorchScript and pickled modules are refused unless the server trusts remote "
    "models. Up to {each:g} MB a file, {total:g} MB in all. An upload cannot be shared as a link."
)


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


def session_of_request() -> str | None:
    """The Gradio session of the event being handled (``None`` outside one)."""
    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None) or None


def install() -> None:
    """Tell quantcore how to know which session asks, so an upload opens only for the session that made it."""
    uploads.set_requester(session_of_request)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def build_area() -> gr.File:
    """The upload area (call where it goes on the page)."""
    current = settings.current()
    with gr.Accordion("Upload your own model files", open=False, elem_id="qp-upload"):
        gr.Markdown(UPLOAD_HELP.format(ttl=_duration(current.upload_ttl_s), each=current.max_upload_bytes / 2**20,
                                       total=current.max_upload_total_bytes / 2**20))  # fmt: skip
        # No file_types: a file of another kind gets the handler's own message saying what is taken.
        return gr.File(label="Model files", file_count="multiple", type="filepath", elem_id="qp-upload-files")
