"""Where a Hub pull put a repo folder, and how it got there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantcore.load.folder import ModelVariants

DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class PulledVariants:
    """Where a pull put a repo folder, and how it got there.

    Attributes:
        repo_id: the repo pulled.
        revision_requested: the branch, tag or commit asked for (``None``: the default branch).
        commit: the 40-hex commit the revision resolved to.
        subfolder: the folder of the repo that was pulled (``None``: its root).
        folder: the local folder holding the variant files (inside the snapshot).
        repo_cache: the repo's cache folder (``models--org--name``): the snapshot's
            symlinks resolve into it, so loaders confine files to it.
        files: repo-relative names of the variant and sidecar files present.
        downloaded: the subset of ``files`` fetched by this call (empty: all cached).
        offline_reason: why no request reached the endpoint (``None``: it was asked).
        notes: what the pull left on the Hub and why (other stems, oversized sidecars).
    """

    repo_id: str
    revision_requested: str | None
    commit: str
    subfolder: str | None
    folder: Path
    repo_cache: Path
    files: tuple[str, ...]
    downloaded: tuple[str, ...]
    offline_reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def from_cache(self) -> bool:
        """Whether every file was already in the cache (nothing came down)."""
        return not self.downloaded

    @property
    def offline(self) -> bool:
        """Whether the files were served from the cache without contacting the endpoint."""
        return self.offline_reason is not None

    @property
    def label(self) -> str:
        """How the page names it: ``repo@commit/subfolder`` (never the server's cache path)."""
        return f"{self.repo_id}@{self.commit[:10]}/{self.subfolder or ''}".rstrip("/")

    def load(self) -> ModelVariants:
        """Load the pulled folder as an untrusted source (see ``load_model_variants``)."""
        from quantcore.load.folder import load_model_variants

        return load_model_variants(self)
