"""What one Hub pull takes from a repo folder, decided from the repo's listing before anything is downloaded.

The listing gives every file's size, so the limits are checked against it
first: too many model files, a file over the per-file cap, a total over the
pull's cap — any of these refuses the pull with nothing written. The bytes
that then come are held to these same listed sizes while they arrive
(``hub_transfer``).

Of several model stems in one folder only one is pulled: a manifest
(``variants.json``) names files freely, so with one every model file comes;
without one, the stem named like the folder (or the repo) wins, else the most
complete set.
"""

from __future__ import annotations

import glob
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from quantcore import settings
from quantcore.errors import HubLimitError
from quantcore.load.discover import (
    CARD_NAME,
    MANIFEST_NAME,
    MODEL_SUFFIXES,
    SAMPLES_NAME,
    SIDECAR_MAX_BYTES,
    STEMS_NAMED,
    parse_variant_name,
)
from quantcore.load.keys import VariantKey
from quantcore.sizes import megabytes

SIDECAR_NAMES = (MANIFEST_NAME, CARD_NAME, SAMPLES_NAME)
JSON_SIDECARS = (MANIFEST_NAME, CARD_NAME)
# A folder listing longer than this is refused outright: no model folder holds that many entries.
MAX_LISTED_ENTRIES = 10_000


@dataclass(frozen=True)
class PullPlan:
    """The files one pull downloads (repo path -> listed bytes), and notes on what it left out."""

    files: Mapping[str, int]
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def has_models(self) -> bool:
        return any(name.endswith(MODEL_SUFFIXES) for name in self.files)

    def allow_patterns(self) -> list[str]:
        """Exactly these paths, as ``snapshot_download`` patterns (fnmatch: glob characters escaped)."""
        return [glob.escape(path) for path in sorted(self.files)]


def _choose_stem(models: Iterable[str], preferred: str | None) -> tuple[list[str], list[str]]:
    """The model files of the one stem pulled, and the other stems left on the Hub."""
    by_stem: dict[str, dict[VariantKey, str]] = {}
    for name in sorted(models):
        parsed = parse_variant_name(name)
        if parsed is not None:
            by_stem.setdefault(parsed[0], {}).setdefault(parsed[1], name)
    if not by_stem:
        return [], []
    stem = preferred if preferred in by_stem else max(sorted(by_stem), key=lambda s: len(by_stem[s]))
    return sorted(by_stem[stem].values()), [s for s in sorted(by_stem) if s != stem]


def plan_pull(listed: Iterable[tuple[str, int | None]], *, repo_id: str, subfolder: str | None, at: str) -> PullPlan:
    """The files to pull from ``subfolder`` (the repo root if ``None``), checked against the pull limits.

    Args:
        listed: ``(repo path, listed size)`` of files; only those directly in ``subfolder`` count.
        repo_id: the repo (its name is the preferred stem at the root).
        subfolder: the folder pulled.
        at: how messages name the pull (``'org/name' at 'v1'``).

    Returns:
        The plan; it has no model files if the folder holds none (the caller says so).

    Raises:
        HubLimitError: too many model files, a file listed without a size or over the
            per-file cap (``QP_MAX_MODEL_MB``), or all of them over ``QP_HUB_MAX_TOTAL_MB``.
    """
    limits = settings.current()
    folder = subfolder or ""
    sizes = {posixpath.basename(p): s for p, s in listed if posixpath.dirname(p) == folder}
    where = f"folder '{subfolder}'" if subfolder else "root folder"
    refused = f"Refused to pull {at}:"
    models = [name for name in sizes if name.endswith(MODEL_SUFFIXES)]
    if len(models) > limits.hub_max_files:
        raise HubLimitError(
            f"{refused} its {where} lists {len(models):,} model files, and one pull takes at most "
            f"{limits.hub_max_files} (QP_HUB_MAX_FILES). Name a subfolder that holds one model's variants. "
            "Nothing was downloaded."
        )
    notes: list[str] = []
    if MANIFEST_NAME in sizes:
        chosen = sorted(models)  # the manifest may name any of them
    else:
        preferred = posixpath.basename(subfolder) if subfolder else repo_id.rsplit("/", 1)[-1]
        chosen, others = _choose_stem(models, preferred)
        if others:
            named = ", ".join(others[:STEMS_NAMED])
            more = f" and {len(others) - STEMS_NAMED:,} more" if len(others) > STEMS_NAMED else ""
            stem = parse_variant_name(chosen[0])[0]  # type: ignore[index]
            notes.append(f"several model stems in the repo's {where}; pulled '{stem}' only (not: {named}{more})")
    for name in SIDECAR_NAMES:
        if name not in sizes:
            continue
        size = sizes[name]
        if name in JSON_SIDECARS and size is not None and size > SIDECAR_MAX_BYTES:
            notes.append(f"{name} not pulled: listed at {megabytes(size)}, over {SIDECAR_MAX_BYTES >> 20} MB")
            continue
        chosen.append(name)
    plan: dict[str, int] = {}
    for name in chosen:
        size = sizes[name]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HubLimitError(f"{refused} the listing gives no usable size for {name}. Nothing was downloaded.")
        if size > limits.max_model_bytes:
            raise HubLimitError(
                f"{refused} {name} is listed at {megabytes(size)}, over the {megabytes(limits.max_model_bytes)} "
                "limit per file (QP_MAX_MODEL_MB). Nothing was downloaded."
            )
        plan[f"{folder}/{name}" if folder else name] = size
    total = sum(plan.values())
    if total > limits.hub_max_total_bytes:
        raise HubLimitError(
            f"{refused} its {len(plan)} files are listed at {megabytes(total)} together, over the "
            f"{megabytes(limits.hub_max_total_bytes)} limit per pull (QP_HUB_MAX_TOTAL_MB). Nothing was downloaded."
        )
    return PullPlan(plan, tuple(notes))


def _listed_size(entry: Any) -> int | None:
    """A tree entry's size; an LFS file's is its object's, whichever of the two is larger."""
    sizes = [s for s in (entry.size, entry.lfs.size if entry.lfs is not None else None) if isinstance(s, int)]
    return max(sizes) if sizes else None


def list_folder(
    repo_id: str, commit: str, *, subfolder: str | None, endpoint: str, token: str | None, at: str
) -> list[tuple[str, int | None]]:
    """``(path, size)`` of the files directly in ``subfolder`` at ``commit`` (empty if it does not exist).

    Raises:
        HubLimitError: the folder lists more than ``MAX_LISTED_ENTRIES`` entries.
        huggingface_hub's HTTP errors and httpx2 transport errors, as they come.
    """
    from huggingface_hub import HfApi, RepoFile
    from huggingface_hub.errors import RemoteEntryNotFoundError

    api = HfApi(endpoint=endpoint, token=token or False)
    found: list[tuple[str, int | None]] = []
    try:
        for number, entry in enumerate(
            api.list_repo_tree(repo_id, path_in_repo=subfolder, revision=commit, recursive=False)
        ):
            if number >= MAX_LISTED_ENTRIES:
                where = f"folder '{subfolder}'" if subfolder else "root folder"
                raise HubLimitError(
                    f"Refused to pull {at}: its {where} lists more than {MAX_LISTED_ENTRIES:,} entries; "
                    "no model folder holds that many. Nothing was downloaded."
                )
            if isinstance(entry, RepoFile):
                found.append((entry.path, _listed_size(entry)))
    except RemoteEntryNotFoundError:
        return []  # the Hub answers 404 for a folder that is not there
    return found
