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

import logging
import os
import threading
from pathlib import Path
from typing import Any

from quantcore.errors import HubError, NoVariantFilesError
from quantcore.load.discover import CARD_NAME, MANIFEST_NAME, MODEL_SUFFIXES, SAMPLES_NAME
from quantcore.load.folder import ModelVariants
from quantcore.load.hub_checks import (
    COMMIT_RE,
    check_repo_id,
    check_revision,
    check_subfolder,
    hub_cache_dir,
    offline_mode,
    resolve_endpoint,
    shown_endpoint,
)
from quantcore.load.hub_errors import translate_error
from quantcore.load.pulled import DEFAULT_REVISION, PulledVariants
from quantcore.load.source import Source
from quantcore.load.summary import get_model_summary

logger = logging.getLogger(__name__)

SIDECAR_NAMES = (MANIFEST_NAME, CARD_NAME, SAMPLES_NAME)
# How long resolving the revision (the first request of a pull) may take before
# the endpoint counts as unreachable; connecting gets at most 3 s of it.
HUB_TIMEOUT_SECONDS = 5.0


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
    if not sha or not COMMIT_RE.fullmatch(sha):
        raise HubError(f"The Hub at {shown_endpoint(endpoint)} gave no commit for '{repo_id}'.")
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
        return translate_error(
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
    if offline_mode():
        offline_reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif revision and COMMIT_RE.fullmatch(revision):
        # A commit never changes: when it is fully cached there is nothing to ask.
        snapshot = _complete_snapshot(
            repo_id, revision, cache_dir=cache_dir, repo_cache=repo_cache, allow=allow, ignore=ignore
        )
    if offline_reason is None and snapshot is None:
        try:
            commit = _resolve_commit(repo_id, revision, endpoint=endpoint, token=token)
        except httpx2.TransportError as exc:
            logger.info("Hub endpoint %s is unreachable: %s", shown_endpoint(endpoint), type(exc).__name__)
            offline_reason = f"the Hub at {shown_endpoint(endpoint)} is unreachable"
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status < 500:
                raise failure(exc) from None
            offline_reason = f"the Hub at {shown_endpoint(endpoint)} answered {status}"
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
    if not COMMIT_RE.fullmatch(commit):
        raise HubError(f"The Hub at {shown_endpoint(endpoint)} returned an unexpected snapshot for '{repo_id}'.")
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
    return pulled, pulled.load()


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
        ``downloaded``, ``from_cache``, ``offline``, ``note``, and ``"source"``
        (the ``Source`` handle to load it again by); the note (where the
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
    summary["source"] = Source.from_pulled(pulled).as_dict()
    return summary
