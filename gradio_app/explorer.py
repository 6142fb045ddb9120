"""The models folder's file explorer, confined to its root once links are followed.

``gr.FileExplorer`` refuses ``..`` and absolute segments from a client, but a
symlink inside its root that points outside is followed: its ``ls`` server
function (``/gradio_api/component_server``, ``fn_name="ls"``) lists whatever
the link leads to — ``/etc`` through a link to it — and a selection through
such a link is handed over as a path under the root. ``ConfinedFileExplorer``
resolves every folder it lists and every entry it shows or hands over, and
keeps only what lies inside the root: links out are neither listed, opened
for listing, nor offered.
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr
from gradio.components.base import server

from quantcore import paths

REFUSED = "That selection is outside the models folder."


class ConfinedFileExplorer(gr.FileExplorer):
    """``gr.FileExplorer`` that never lists, enters or hands over anything resolving outside ``root_dir``."""

    def get_block_name(self) -> str:
        """The browser shows it with ``gr.FileExplorer``'s own front end (which Gradio picks by this name)."""
        return "fileexplorer"

    def _inside(self, path: str) -> bool:
        return paths.is_within(path, self.root_dir)  # type: ignore[arg-type]

    @server
    def ls(self, subdirectory: list[str] | None = None) -> list[dict[str, str]] | None:
        """The entries of ``subdirectory`` that resolve inside the root; nothing for a folder that does not.

        The folder is resolved before it is listed, so a link out of the root is
        never listed; an entry whose link leads out is left out of the listing.
        """
        try:
            folder = self._safe_join(subdirectory or [])
        except Exception:  # Gradio's own refusal of '..' and absolute segments
            return []
        if not self._inside(folder):
            return []
        entries = super().ls(subdirectory) or []
        return [e for e in entries if self._inside(os.path.join(folder, e["name"]))]

    def preprocess(self, payload: Any) -> list[str] | str | None:
        """The selected path(s), as ``gr.FileExplorer`` hands them over, once each resolves inside the root.

        Raises:
            gr.Error: a selection that leads out of the root (only a hand-made request can send one).
        """
        value = super().preprocess(payload)
        for path in [value] if isinstance(value, str) else value or []:
            if not self._inside(path):
                raise gr.Error(REFUSED)
        return value
