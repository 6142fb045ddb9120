"""The Hugging Face cache as a pull sees it: what a commit already holds, refs, and undoing a pull that failed.

huggingface_hub keeps one folder per repo (``models--org--name``): ``blobs/``
(the bytes), ``snapshots/<commit>/`` (links to them), ``refs/`` (branch ->
commit) and ``trees/<commit>.json`` (the commit's listing). A pull that is
refused or cut leaves none of its own files behind: the repo folder goes if the
pull created it, otherwise the blobs it added and the links to them.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from quantcore.load.hub_plan import PullPlan, plan_pull
from quantcore.load.hub_transfer import PullGuard

logger = logging.getLogger(__name__)


def blob_names(repo_cache: Path) -> set[str]:
    """The complete blobs in a repo's cache folder (partial downloads left out)."""
    try:
        return {entry.name for entry in os.scandir(repo_cache / "blobs") if not entry.name.endswith(".incomplete")}
    except OSError:
        return set()


def remember_ref(repo_cache: Path, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` in the cache's ``refs/`` (as huggingface_hub does), for offline use."""
    if revision == commit:
        return
    ref = repo_cache / "refs" / revision
    try:
        if ref.is_file() and ref.read_text(encoding="utf-8") == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        partial = ref.with_name(f"{ref.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_text(commit, encoding="utf-8")
        os.replace(partial, ref)
    except OSError as exc:  # a read-only cache still serves what it holds
        logger.warning("could not record %s -> %s in the cache: %s", revision, commit[:10], exc.strerror)


def cached_plan(repo_id: str, revision: str, *, cache_dir: Path, subfolder: str | None, at: str) -> PullPlan | None:
    """The plan for ``revision`` (a commit, or a ref the cache records) from the listing cached for it, if any.

    Raises:
        HubLimitError: the cached listing is over the pull limits.
    """
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        tree = get_cached_repo_tree(repo_id, revision=revision, cache_dir=cache_dir)
    except CachedRepoTreeNotFoundError:
        return None
    return plan_pull(((entry.path, entry.size) for entry in tree), repo_id=repo_id, subfolder=subfolder, at=at)


def complete_snapshot(repo_cache: Path, commit: str, plan: PullPlan | None) -> Path | None:
    """The snapshot of ``commit`` if it already holds every file of ``plan``."""
    if plan is None or not plan.has_models:
        return None
    snapshot = repo_cache / "snapshots" / commit
    if all(snapshot.joinpath(*name.split("/")).is_file() for name in plan.files):
        return snapshot
    return None


@dataclass(frozen=True)
class CacheState:
    """What a repo's cache folder held before a pull, so that a failed pull can be undone."""

    repo_cache: Path
    existed: bool
    blobs: frozenset[str]

    @classmethod
    def of(cls, repo_cache: Path) -> CacheState:
        return cls(repo_cache, repo_cache.exists(), frozenset(blob_names(repo_cache)))

    def restore(self, commit: str) -> None:
        """Remove what the pull added: the whole repo folder if it made it, else its new blobs and their links."""
        if not self.existed:
            shutil.rmtree(self.repo_cache, ignore_errors=True)
            shutil.rmtree(self.repo_cache.parent / ".locks" / self.repo_cache.name, ignore_errors=True)
            return
        for name in blob_names(self.repo_cache) - self.blobs:
            (self.repo_cache / "blobs" / name).unlink(missing_ok=True)
        snapshot = self.repo_cache / "snapshots" / commit
        for link in snapshot.rglob("*") if snapshot.is_dir() else ():
            if link.is_symlink() and not link.exists():
                link.unlink(missing_ok=True)


_REPO_LOCKS: dict[str, tuple[threading.Lock, list[int]]] = {}
_REPO_LOCKS_GUARD = threading.Lock()


@contextmanager
def repo_lock(repo_cache: Path, guard: PullGuard) -> Iterator[None]:
    """One pull of a repo at a time in this process: a failed pull undoes its files without racing another.

    Waiting counts against the pull's time (``guard``).

    Raises:
        HubLimitError: the pull's time ran out while another pull of the repo held it.
    """
    key = str(repo_cache)
    with _REPO_LOCKS_GUARD:
        lock, users = _REPO_LOCKS.setdefault(key, (threading.Lock(), [0]))
        users[0] += 1
    try:
        if not lock.acquire(timeout=max(0.0, guard.remaining())):
            raise guard.trip("another pull of the same repo held it until the pull's time ran out")
        try:
            yield
        finally:
            lock.release()
    finally:
        with _REPO_LOCKS_GUARD:
            users[0] -= 1
            if users[0] == 0:
                del _REPO_LOCKS[key]
