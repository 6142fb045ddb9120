"""Pull a folder of model variants from a Hugging Face Hub repo into the local cache.

``pull_model_variants`` downloads only the variant files (``*.onnx``, ``*.pt``,
``*.pth``) of one model stem and their sidecars (``variants.json``,
``model_card.json``, ``samples.npz``) of one folder of a repo with
``huggingface_hub.snapshot_download``, into the standard Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``). The folder's listing is checked
against the pull limits before anything comes down (``hub_plan``), and every
body is held to its listed size, the pull's time and a minimum rate while it
comes (``hub_transfer``); a refused or cut pull leaves nothing in the cache
(``hub_cache``).
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
import time
from pathlib import Path
from typing import Any

from quantcore import settings
from quantcore.errors import HubError, NoVariantFilesError
from quantcore.load import hub_transfer
from quantcore.load.discover import MODEL_SUFFIXES
from quantcore.load.folder import ModelVariants
from quantcore.load.hub_cache import CacheState, blob_names, cached_plan, complete_snapshot, remember_ref, repo_lock
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
from quantcore.load.hub_plan import SIDECAR_NAMES, PullPlan, list_folder, plan_pull
from quantcore.load.pulled import DEFAULT_REVISION, PulledVariants
from quantcore.load.source import Source
from quantcore.load.summary import get_model_summary

logger = logging.getLogger(__name__)

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


def _offline_patterns(subfolder: str | None) -> tuple[list[str], list[str]]:
    """allow/ignore patterns for every variant file and sidecar directly in ``subfolder``.

    Used only offline with no cached listing to plan from: nothing is downloaded then.
    """
    prefix = f"{subfolder}/" if subfolder else ""
    allow = [f"{prefix}*{suffix}" for suffix in MODEL_SUFFIXES] + [prefix + name for name in SIDECAR_NAMES]
    # fnmatch's '*' also matches '/': keep nested folders out.
    return allow, [f"{prefix}*/*"]


def _wanted(name: str) -> bool:
    return name.endswith(MODEL_SUFFIXES) or name in SIDECAR_NAMES


def _at(repo_id: str, revision: str | None) -> str:
    return f"'{repo_id}'" + (f" at '{revision}'" if revision else "")


def pull_model_variants(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PulledVariants:
    """Download one folder of variant files from a Hub repo into the Hugging Face cache, within limits.

    Only ``*.onnx``, ``*.pt``, ``*.pth`` of one model stem (every one, with a
    ``variants.json``) and the sidecars ``variants.json``, ``model_card.json``,
    ``samples.npz`` directly in that folder come down. The repo's listing is
    checked against the limits first (``QP_HUB_MAX_FILES``, ``QP_MAX_MODEL_MB``
    per file, ``QP_HUB_MAX_TOTAL_MB``): over any, nothing is downloaded. Bodies
    are cut when they run past their listed size, the pull's time
    (``QP_HUB_PULL_TIMEOUT_S``) or the minimum rate (``QP_HUB_MIN_RATE_KBPS``);
    a refused or cut pull leaves nothing of its own in the cache.
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
        HubLimitError: over a limit before the download (nothing written) or during it (cut, nothing kept).
        HubOfflineError: offline mode and the snapshot is not (fully) cached.
        HubUnreachableError: the endpoint does not answer (or a download broke off)
            and the snapshot is not (fully) cached.
        HubError: any other failure of the endpoint.
    """
    from huggingface_hub.file_download import repo_folder_name

    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision)
    subfolder = check_subfolder(subfolder)
    endpoint = resolve_endpoint(endpoint)
    token = (token or os.environ.get("HF_TOKEN") or "").strip() or None
    cache_dir = hub_cache_dir()
    repo_cache = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    limits = settings.current()
    hub_transfer.install()
    guard = hub_transfer.PullGuard(
        what=_at(repo_id, revision),
        api_prefix=hub_transfer.url_key(f"{endpoint}/api/models/{repo_id}/"),
        deadline=time.monotonic() + limits.hub_pull_timeout_s,
        min_rate=limits.hub_min_rate_bytes_s,
        timeout_s=limits.hub_pull_timeout_s,
    )
    hub_transfer.activate(guard)
    try:
        return _pull(
            repo_id, revision, subfolder, endpoint=endpoint, token=token, cache_dir=cache_dir,
            repo_cache=repo_cache, guard=guard,
        )  # fmt: skip
    finally:
        hub_transfer.deactivate(guard)


def _pull(
    repo_id: str,
    revision: str | None,
    subfolder: str | None,
    *,
    endpoint: str,
    token: str | None,
    cache_dir: Path,
    repo_cache: Path,
    guard: hub_transfer.PullGuard,
) -> PulledVariants:
    import httpx2
    from huggingface_hub import ResolvedRevision, hf_hub_url, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    at = _at(repo_id, revision)

    def failure(exc: Exception, offline_reason: str | None = None) -> HubError:
        if guard.failure is not None:  # a limit cut the transfer; whatever came out of it is its consequence
            return guard.failure
        if isinstance(exc, HubError):
            return exc
        logger.info("pull of %s failed: %s", repo_id, type(exc).__name__)
        return translate_error(
            exc,
            repo_id=repo_id,
            revision=revision,
            endpoint=endpoint,
            token_given=token is not None,
            offline_reason=offline_reason,
        )

    def plan_from_cache(revision_or_commit: str) -> PullPlan | None:
        return cached_plan(repo_id, revision_or_commit, cache_dir=cache_dir, subfolder=subfolder, at=at)

    # Online, the revision is resolved first (with a timeout); offline, or when
    # the endpoint does not answer, huggingface_hub serves the cached snapshot.
    commit: str | None = None
    offline_reason: str | None = None
    snapshot: Path | None = None
    plan: PullPlan | None = None
    new_blobs: set[str] = set()
    if offline_mode():
        offline_reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif revision and COMMIT_RE.fullmatch(revision):
        # A commit never changes: when it is fully cached there is nothing to ask.
        plan = plan_from_cache(revision)
        snapshot = complete_snapshot(repo_cache, revision, plan)
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
        except Exception as exc:
            raise failure(exc) from None

    try:
        if offline_reason is not None:
            # With a cached listing, exactly the planned files must be there; without one, whatever is.
            plan = plan_from_cache(revision or DEFAULT_REVISION)
            if plan is None:
                allow, ignore = _offline_patterns(subfolder)
            else:
                allow, ignore = plan.allow_patterns(), None
            snapshot = Path(
                snapshot_download(
                    repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                    allow_patterns=allow, ignore_patterns=ignore,
                )
            )  # fmt: skip
        elif commit is not None:
            plan = plan_from_cache(commit)
            snapshot = complete_snapshot(repo_cache, commit, plan)
            if snapshot is None:
                listed = list_folder(
                    repo_id, commit, subfolder=subfolder, endpoint=endpoint, token=token, at=at
                )  # fmt: skip
                plan = plan_pull(listed, repo_id=repo_id, subfolder=subfolder, at=at)
                if not plan.has_models:
                    raise _no_variants(repo_id, revision, commit, subfolder)
                for path, size in plan.files.items():
                    guard.expect(hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint), path, size)
                with repo_lock(repo_cache, guard):
                    before = CacheState.of(repo_cache)
                    try:
                        snapshot = Path(
                            snapshot_download(
                                repo_id, revision=ResolvedRevision(commit, initial=revision, repo_id=repo_id),
                                cache_dir=cache_dir, endpoint=endpoint, token=token or False,
                                allow_patterns=plan.allow_patterns(),
                            )
                        )  # fmt: skip
                    except BaseException:
                        before.restore(commit)
                        raise
                    new_blobs = blob_names(repo_cache) - before.blobs
            remember_ref(repo_cache, revision or DEFAULT_REVISION, commit)
    except NoVariantFilesError:
        raise
    except Exception as exc:
        raise failure(exc, offline_reason) from None
    assert snapshot is not None

    commit = snapshot.name
    if not COMMIT_RE.fullmatch(commit):
        raise HubError(f"The Hub at {shown_endpoint(endpoint)} returned an unexpected snapshot for '{repo_id}'.")
    folder = snapshot.joinpath(*subfolder.split("/")) if subfolder else snapshot
    prefix = f"{subfolder}/" if subfolder else ""
    if plan is not None:
        names = sorted(path[len(prefix) :] for path in plan.files if (snapshot / path).is_file())
    else:
        try:
            names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and _wanted(entry.name))
        except OSError:
            names = []
    if not any(name.endswith(MODEL_SUFFIXES) for name in names):
        raise _no_variants(repo_id, revision, commit, subfolder)

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
        notes=plan.notes if plan is not None else (),
    )
    logger.info(
        "pulled %s@%s (commit %s): %d file(s), %d downloaded%s",
        repo_id, revision or DEFAULT_REVISION, commit[:10], len(names), len(downloaded),
        f"; {offline_reason}" if offline_reason else "",
    )  # fmt: skip
    return pulled


def _no_variants(repo_id: str, revision: str | None, commit: str, subfolder: str | None) -> NoVariantFilesError:
    where = f"folder '{subfolder}'" if subfolder else "root folder"
    return NoVariantFilesError(
        f"'{repo_id}' at '{revision or DEFAULT_REVISION}' (commit {commit[:10]}) has no model variant files "
        f"({', '.join('*' + s for s in MODEL_SUFFIXES)}) in its {where}: check the repo and the subfolder."
    )


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
    summary["notes"] = [*summary["notes"], *pulled.notes, note]
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
