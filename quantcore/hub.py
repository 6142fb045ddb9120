"""Pull a folder of model variants from a Hugging Face Hub repo into the local cache.

``pull_model_variants`` downloads only the variant files (``*.onnx``, ``*.pt``,
``*.pth``) and their sidecars (``variants.json``, ``model_card.json``,
``samples.npz``) of one folder of a repo with ``huggingface_hub.snapshot_download``,
into the standard Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``).
``pull_and_summarize`` then loads that folder through the same cached loader as
local folders — as an untrusted source: TorchScript and whole pickles are
refused unless the operator opted in (``--trust-remote-models``).

Environment read on every call (so operators and tests can change it at run time):
``HF_ENDPOINT`` (the Hub or a mirror), ``HF_TOKEN`` (for private and gated repos),
``HF_HUB_OFFLINE`` (serve from the cache only), ``HF_HOME`` / ``HF_HUB_CACHE``.

The token is handed to huggingface_hub and nowhere else: no message, log line
or summary built here contains it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from quantcore import settings
from quantcore.errors import (
    GatedRepoError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubUnreachableError,
    InvalidRepoIdError,
    NoVariantFilesError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from quantcore.summary import get_model_summary
from quantcore.variants import MANIFEST_NAME, MODEL_SUFFIXES, ModelVariants, load_model_variants

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
SIDECAR_NAMES = (MANIFEST_NAME, "model_card.json", "samples.npz")
# How long resolving the revision (the first request of a pull) may take before
# the endpoint counts as unreachable; connecting gets at most 3 s of it.
HUB_TIMEOUT_SECONDS = 5.0
MAX_REVISION_CHARS = 200
MAX_SUBFOLDER_CHARS = 300
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_GLOB_CHARS = frozenset("*?[]")
# Writing the cache failed: said as such, not as a download that "broke off".
_CACHE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_CACHE_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


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

    @property
    def from_cache(self) -> bool:
        """Whether every file was already in the cache (nothing came down)."""
        return not self.downloaded

    @property
    def offline(self) -> bool:
        """Whether the files were served from the cache without contacting the endpoint."""
        return self.offline_reason is not None


# ------------------------------------------------------------------ input checks


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` stripped, if huggingface_hub's own validator accepts it.

    Raises:
        InvalidRepoIdError: not text, empty, or not ``name`` / ``owner/name``.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise InvalidRepoIdError("Give a Hugging Face repo id, like 'owner/name'.")
    repo_id = repo_id.strip()
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidRepoIdError(
            f"'{_clip(repo_id)}' is not a valid Hugging Face repo id: use 'name' or 'owner/name' "
            "(letters, digits, '-', '_', '.'; at most 96 characters)."
        ) from None
    return repo_id


def check_revision(revision: object) -> str | None:
    """A branch, tag or commit name that is safe to use as a ref file name; blank means ``None``.

    Raises:
        InvalidRepoIdError: not text, or not a plausible git ref (``..``, ``//``, spaces, ...).
    """
    if revision is None:
        return None
    if not isinstance(revision, str):
        raise InvalidRepoIdError("The revision must be text: a branch, tag or commit.")
    revision = revision.strip()
    if not revision:
        return None
    if (
        len(revision) > MAX_REVISION_CHARS
        or not _REVISION_RE.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".lock", "."))
    ):
        raise InvalidRepoIdError(f"'{_clip(revision)}' is not a valid branch, tag or commit name.")
    return revision


def check_subfolder(subfolder: object) -> str | None:
    """A repo-relative folder as ``a/b`` (no ``..``, no globs); blank or ``/`` means ``None``.

    Raises:
        InvalidRepoIdError: not text, absolute with a drive, ``..``, glob characters, NUL, too long.
    """
    if subfolder is None:
        return None
    if not isinstance(subfolder, str):
        raise InvalidRepoIdError("The subfolder must be text, like 'models/resnet8'.")
    raw = subfolder.strip()
    if len(raw) > MAX_SUBFOLDER_CHARS or "\x00" in raw or "\\" in raw or _GLOB_CHARS & set(raw):
        raise InvalidRepoIdError(f"'{_clip(raw)}' is not a usable subfolder: give a folder like 'models/resnet8'.")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if any(part == ".." or part.strip() != part for part in parts):
        raise InvalidRepoIdError(f"'{_clip(raw)}' is not a usable subfolder: '..' and padded names are not allowed.")
    return "/".join(parts) or None


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The endpoint to use: ``endpoint``, else ``HF_ENDPOINT``, else the public Hub.

    Raises:
        HubError: not an http(s) URL.
    """
    chosen = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError("The Hub endpoint must be an http(s) URL (check HF_ENDPOINT).")
    return chosen


def _shown(endpoint: str) -> str:
    """The endpoint for messages: without any user:password part."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in force now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _offline_mode() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or constants.is_offline_mode()


def _resolve_commit(repo_id: str, revision: str | None, *, endpoint: str, token: str | None) -> str:
    """The commit ``revision`` points at now, asked of the endpoint with a short timeout.

    This is the first request of every online pull, so it doubles as the
    reachability check: huggingface_hub sets no timeout on its own first request,
    and a dead endpoint makes its per-file downloads retry for about 20 s.

    Raises:
        huggingface_hub's HTTP errors and httpx2 transport errors, as they come.
    """
    import httpx2
    from huggingface_hub import HfApi

    timeout = httpx2.Timeout(HUB_TIMEOUT_SECONDS, connect=min(3.0, HUB_TIMEOUT_SECONDS))
    api = HfApi(endpoint=endpoint, token=token or False)
    sha = api.repo_info(repo_id, revision=revision or DEFAULT_REVISION, timeout=timeout).sha  # type: ignore[arg-type]
    if not sha or not _COMMIT_RE.fullmatch(sha):
        raise HubError(f"The Hub at {_shown(endpoint)} gave no commit for '{repo_id}'.")
    return sha


# --------------------------------------------------------------------- the pull


def _patterns(subfolder: str | None) -> tuple[list[str], list[str]]:
    """allow/ignore patterns for the variant files and sidecars directly in ``subfolder``."""
    prefix = f"{subfolder}/" if subfolder else ""
    allow = [f"{prefix}*{suffix}" for suffix in MODEL_SUFFIXES] + [prefix + name for name in SIDECAR_NAMES]
    # fnmatch's '*' also matches '/': keep nested folders out.
    return allow, [f"{prefix}*/*"]


def _wanted(name: str) -> bool:
    return name.endswith(MODEL_SUFFIXES) or name in SIDECAR_NAMES


def _blob_names(repo_cache: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(repo_cache / "blobs") if not entry.name.endswith(".incomplete")}
    except OSError:
        return set()


def _remember_ref(repo_cache: Path, revision: str, commit: str) -> None:
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


def _complete_snapshot(
    repo_id: str, commit: str, *, cache_dir: Path, repo_cache: Path, allow: list[str], ignore: list[str]
) -> Path | None:
    """The cached snapshot of ``commit`` if it already holds every wanted file, by its cached tree listing."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    try:
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)
    except CachedRepoTreeNotFoundError:
        return None
    snapshot = repo_cache / "snapshots" / commit
    wanted = filter_repo_objects([entry.path for entry in tree], allow_patterns=allow, ignore_patterns=ignore)
    if all(snapshot.joinpath(*name.split("/")).is_file() for name in wanted):
        return snapshot
    return None


def _translate(
    exc: Exception, *, repo_id: str, revision: str | None, endpoint: str, token_given: bool, offline_reason: str | None
) -> HubError:
    """A huggingface_hub / transport error as a quantcore error with a message a user can act on."""
    import httpx2
    from huggingface_hub import errors as hf

    at = f"'{repo_id}'" + (f" at '{revision}'" if revision else "")
    where = _shown(endpoint)
    access = (
        "the token the app uses has no access to it"
        if token_given
        else "the app needs a token with access (set HF_TOKEN)"
    )
    if isinstance(exc, hf.GatedRepoError):
        if token_given:
            return GatedRepoError(
                f"'{repo_id}' is gated and the app's token has no access to it yet: "
                "accept the repo's terms on the Hub with that token's account."
            )
        return GatedRepoError(
            f"'{repo_id}' is gated: accept its terms on the Hub, then give the app a token of that account "
            "(set HF_TOKEN)."
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return RevisionNotFoundError(f"Repo '{repo_id}' has no branch, tag or commit '{revision}'.")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RepoNotFoundError(
            f"Repo '{repo_id}' was not found on {where}. Check the spelling; if it is private, {access}."
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return HubFileNotFoundError(
            f"{at} lists a file that {where} then could not serve (entry not found); "
            "try again, or pin another revision."
        )
    if isinstance(exc, hf.IncompleteSnapshotError):
        cls = HubOfflineError if offline_reason and "HF_HUB_OFFLINE" in offline_reason else HubUnreachableError
        return cls(
            f"The local cache holds only part of {at} (another folder of it, or an interrupted download) "
            f"and {offline_reason}: pull it again with network access."
        )
    if isinstance(exc, hf.LocalEntryNotFoundError):
        if offline_reason and "HF_HUB_OFFLINE" in offline_reason:
            return HubOfflineError(
                f"Offline mode is on (HF_HUB_OFFLINE=1) and {at} is not in the local cache. "
                "Pull it once with network access (unset HF_HUB_OFFLINE); after that it loads offline."
            )
        reason = offline_reason or f"the Hub at {where} cannot be reached"
        return HubUnreachableError(
            f"Cannot pull {at}: {reason}, and it is not in the local cache. "
            "Check the network connection and HF_ENDPOINT, then pull again."
        )
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return HubOfflineError("Offline mode is on (HF_HUB_OFFLINE=1): nothing can be downloaded.")
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        if status == 401:
            return RepoNotFoundError(f"{where} refused access to '{repo_id}' (401): {access}.")
        return HubError(f"The Hub at {where} answered {status} while pulling {at}; try again later.")
    if isinstance(exc, OSError) and exc.errno in _CACHE_FULL_ERRNOS:
        return HubError(
            f"Cannot pull {at}: the local Hugging Face cache (HF_HUB_CACHE) is full ({exc.strerror}); nothing "
            "partial was kept. Free space there, or point HF_HUB_CACHE at a larger disk, then pull again."
        )
    if isinstance(exc, OSError) and exc.errno in _CACHE_READ_ONLY_ERRNOS:
        return HubError(
            f"Cannot pull {at}: the local Hugging Face cache (HF_HUB_CACHE) cannot be written ({exc.strerror}). "
            "Point HF_HUB_CACHE at a writable folder, then pull again."
        )
    if isinstance(exc, httpx2.TransportError | OSError):
        return HubUnreachableError(
            f"The download of {at} from {where} broke off ({type(exc).__name__}); nothing partial was kept. Pull again."
        )
    return HubError(f"Pulling {at} from {where} failed ({type(exc).__name__}).")


def pull_model_variants(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PulledVariants:
    """Download one folder of variant files from a Hub repo into the Hugging Face cache.

    Only ``*.onnx``, ``*.pt``, ``*.pth`` and the sidecars ``variants.json``,
    ``model_card.json``, ``samples.npz`` directly in that folder come down.
    Files already cached for the resolved commit are not downloaded again.
    With ``HF_HUB_OFFLINE=1``, or when the endpoint does not answer, the cached
    snapshot is used without any download.

    Args:
        repo_id: ``owner/name`` (or ``name``) of a model repo.
        revision: branch, tag or commit to pull (default: the default branch).
        subfolder: folder of the repo holding the variants (default: its root).
        token: access token for private or gated repos (default: ``HF_TOKEN``).
        endpoint: Hub or mirror URL (default: ``HF_ENDPOINT``, else huggingface.co).

    Returns:
        A ``PulledVariants``: the local folder, the resolved commit, and which files came down.

    Raises:
        InvalidRepoIdError: repo id, revision or subfolder is malformed.
        RepoNotFoundError: no such repo (or private and the token has no access).
        RevisionNotFoundError: the repo has no such branch, tag or commit.
        GatedRepoError: the repo is gated and the token has no access.
        HubFileNotFoundError: a listed file could not be served.
        NoVariantFilesError: no variant files in that folder at that revision.
        HubOfflineError: offline mode and the snapshot is not (fully) cached.
        HubUnreachableError: the endpoint does not answer (or a download broke off)
            and the snapshot is not (fully) cached.
        HubError: any other failure of the endpoint.
    """
    import httpx2
    from huggingface_hub import ResolvedRevision, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import repo_folder_name

    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision)
    subfolder = check_subfolder(subfolder)
    endpoint = resolve_endpoint(endpoint)
    token = (token or os.environ.get("HF_TOKEN") or "").strip() or None
    cache_dir = hub_cache_dir()
    repo_cache = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    allow, ignore = _patterns(subfolder)

    def failure(exc: Exception, offline_reason: str | None = None) -> HubError:
        logger.info("pull of %s failed: %s", repo_id, type(exc).__name__)
        return _translate(
            exc,
            repo_id=repo_id,
            revision=revision,
            endpoint=endpoint,
            token_given=token is not None,
            offline_reason=offline_reason,
        )

    # Online, the revision is resolved first (with a timeout); offline, or when
    # the endpoint does not answer, huggingface_hub serves the cached snapshot.
    commit: str | None = None
    offline_reason: str | None = None
    snapshot: Path | None = None
    if _offline_mode():
        offline_reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif revision and _COMMIT_RE.fullmatch(revision):
        # A commit never changes: when it is fully cached there is nothing to ask.
        snapshot = _complete_snapshot(
            repo_id, revision, cache_dir=cache_dir, repo_cache=repo_cache, allow=allow, ignore=ignore
        )
    if offline_reason is None and snapshot is None:
        try:
            commit = _resolve_commit(repo_id, revision, endpoint=endpoint, token=token)
        except httpx2.TransportError as exc:
            logger.info("Hub endpoint %s is unreachable: %s", _shown(endpoint), type(exc).__name__)
            offline_reason = f"the Hub at {_shown(endpoint)} is unreachable"
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status < 500:
                raise failure(exc) from None
            offline_reason = f"the Hub at {_shown(endpoint)} answered {status}"
        except HubError:
            raise
        except Exception as exc:
            raise failure(exc) from None

    blobs_before = _blob_names(repo_cache)
    try:
        if offline_reason is not None:
            snapshot = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=True,
                    allow_patterns=allow,
                    ignore_patterns=ignore,
                )
            )
        elif commit is not None:
            _remember_ref(repo_cache, revision or DEFAULT_REVISION, commit)
            snapshot = _complete_snapshot(
                repo_id, commit, cache_dir=cache_dir, repo_cache=repo_cache, allow=allow, ignore=ignore
            ) or Path(
                snapshot_download(
                    repo_id,
                    revision=ResolvedRevision(commit, initial=revision, repo_id=repo_id),
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    token=token or False,
                    allow_patterns=allow,
                    ignore_patterns=ignore,
                )
            )
    except Exception as exc:
        raise failure(exc, offline_reason) from None
    assert snapshot is not None

    commit = snapshot.name
    if not _COMMIT_RE.fullmatch(commit):
        raise HubError(f"The Hub at {_shown(endpoint)} returned an unexpected snapshot for '{repo_id}'.")
    folder = snapshot.joinpath(*subfolder.split("/")) if subfolder else snapshot
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and _wanted(entry.name))
    except OSError:
        names = []
    if not any(name.endswith(MODEL_SUFFIXES) for name in names):
        where = f"folder '{subfolder}'" if subfolder else "root folder"
        raise NoVariantFilesError(
            f"'{repo_id}' at '{revision or DEFAULT_REVISION}' (commit {commit[:10]}) has no model variant files "
            f"({', '.join('*' + s for s in MODEL_SUFFIXES)}) in its {where}: check the repo and the subfolder."
        )

    new_blobs = _blob_names(repo_cache) - blobs_before
    prefix = f"{subfolder}/" if subfolder else ""
    downloaded = [name for name in names if Path(os.path.realpath(folder / name)).name in new_blobs]
    pulled = PulledVariants(
        repo_id=repo_id,
        revision_requested=revision,
        commit=commit,
        subfolder=subfolder,
        folder=folder,
        repo_cache=repo_cache,
        files=tuple(prefix + name for name in names),
        downloaded=tuple(prefix + name for name in downloaded),
        offline_reason=offline_reason,
    )
    logger.info(
        "pulled %s@%s (commit %s): %d file(s), %d downloaded%s",
        repo_id, revision or DEFAULT_REVISION, commit[:10], len(names), len(downloaded),
        f"; {offline_reason}" if offline_reason else "",
    )  # fmt: skip
    return pulled


def _note(pulled: PulledVariants) -> str:
    rev = pulled.revision_requested or DEFAULT_REVISION
    head = f"{pulled.repo_id}@{rev} (commit {pulled.commit[:10]})"
    if pulled.offline_reason:
        return f"{head}: loaded the cached snapshot — {pulled.offline_reason}."
    if pulled.from_cache:
        return f"{head}: up to date — all {len(pulled.files)} file(s) were already cached."
    return f"{head}: downloaded {len(pulled.downloaded)} of {len(pulled.files)} file(s)."


def load_pulled_variants(
    repo_id: str, *, revision: str | None = None, subfolder: str | None = None
) -> tuple[PulledVariants, ModelVariants]:
    """Pull a repo folder and load it through the folder cache as an untrusted source.

    The one place the Hub's trust rule lives: TorchScript and whole pickles are
    refused unless ``trust_remote_models`` is on, and variant files must resolve
    inside the repo's own cache folder.

    Raises:
        The errors of ``pull_model_variants``, and ``ModelNotFoundError`` if the
        pulled folder cannot be read.
    """
    pulled = pull_model_variants(repo_id, revision=revision, subfolder=subfolder)
    variants = load_model_variants(
        pulled.folder, trusted=settings.current().trust_remote_models, confine_to=pulled.repo_cache
    )
    return pulled, variants


def pull_and_summarize(repo_id: str, *, revision: str | None = None, subfolder: str | None = None) -> dict[str, Any]:
    """Pull a repo folder, load it as an untrusted source, and summarise it.

    The endpoint, token and offline mode come from the environment
    (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``); TorchScript and whole
    pickles are refused unless ``trust_remote_models`` is on.

    Args:
        repo_id: ``owner/name`` of a model repo.
        revision: branch, tag or commit (default: the default branch).
        subfolder: folder of the repo holding the variants (default: its root).

    Returns:
        ``get_model_summary``'s dict plus ``"hub"``: ``repo_id``,
        ``revision_requested``, ``commit``, ``subfolder``, ``files``,
        ``downloaded``, ``from_cache``, ``offline``, ``note``; the note (where the
        files came from: downloaded, up to date, or the cached snapshot and why)
        is also the last of the summary's ``notes``.

    Raises:
        The errors of ``pull_model_variants``, and ``ModelNotFoundError`` if the
        pulled folder cannot be read.
    """
    pulled, variants = load_pulled_variants(repo_id, revision=revision, subfolder=subfolder)
    summary = get_model_summary(variants)
    note = _note(pulled)
    # Status lines show the summary's notes: where the files came from belongs there too.
    summary["notes"] = [*summary["notes"], note]
    summary["hub"] = {
        "repo_id": pulled.repo_id,
        "revision_requested": pulled.revision_requested,
        "commit": pulled.commit,
        "subfolder": pulled.subfolder,
        "files": list(pulled.files),
        "downloaded": list(pulled.downloaded),
        "from_cache": pulled.from_cache,
        "offline": pulled.offline,
        "note": note,
    }
    return summary
