"""huggingface_hub and transport errors as quantcore errors, with messages a user can act on."""

from __future__ import annotations

import errno

from quantcore.errors import (
    GatedRepoError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubUnreachableError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from quantcore.load.hub_checks import shown_endpoint

# Writing the cache failed: said as such, not as a download that "broke off".
_CACHE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_CACHE_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def translate_error(
    exc: Exception, *, repo_id: str, revision: str | None, endpoint: str, token_given: bool, offline_reason: str | None
) -> HubError:
    """A huggingface_hub / transport error as a quantcore error with a message a user can act on."""
    import httpx2
    from huggingface_hub import errors as hf

    at = f"'{repo_id}'" + (f" at '{revision}'" if revision else "")
    where = shown_endpoint(endpoint)
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
