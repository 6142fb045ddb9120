"""Bounds on what one Hub pull may receive: bytes per response, time per pull, a minimum transfer rate.

huggingface_hub makes every request through one shared ``httpx2.Client``
(``get_session``); ``install`` gives that client a transport that looks each
request up among the active ``PullGuard``\\ s. A request no guard claims passes
through untouched. A claimed one gets:

* its timeouts shortened to the pull's remaining time (and at most
  ``STALL_SECONDS`` of silence per read);
* its body counted as it arrives, and cut — by raising ``HubLimitError``
  inside huggingface_hub's read loop, which deletes its partial file — when
  it runs past the size the listing gave, when the pull's deadline passes, or
  when fewer than the minimum rate's bytes arrived in the last
  ``RATE_WINDOW_SECONDS``;
* Xet headers removed, so file bodies come over this HTTP path (and are
  counted) rather than through hf_xet's own client.

Guards claim requests by URL, not by thread: ``snapshot_download`` fetches files
from a thread pool of its own. Redirects are claimed on the way (a file's
redirect target gets that file's limit).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx2

from quantcore.errors import HubLimitError

logger = logging.getLogger(__name__)

# A read that brings no byte for this long ends the transfer (a trickle slower than this is cut by the rate).
STALL_SECONDS = 10.0
# The minimum rate is measured over windows of this length, from the first byte of a body.
RATE_WINDOW_SECONDS = 5.0
# Every API answer of one pull together (revision, tree pages): far over what a listing of a few
# thousand files takes, far under what would strain memory.
MAX_API_BYTES = 16 * 1024 * 1024
_XET_HEADERS = ("X-Xet-Hash", "X-Xet-Refresh-Route", "X-Xet-Cas-Url", "X-Xet-Access-Token")


def url_key(url: str | httpx2.URL) -> str:
    """``scheme://host:port/path`` (query and fragment dropped): how guards recognise a request."""
    parsed = url if isinstance(url, httpx2.URL) else httpx2.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.scheme}://{parsed.host}:{port}{parsed.path}"


@dataclass
class PullGuard:
    """The limits of one pull: which URLs are its own, and what each may send.

    Args:
        what: how messages name the pull (``'org/name'``).
        api_prefix: URL (key) prefix of the repo's API routes: their answers share ``MAX_API_BYTES``.
        deadline: ``time.monotonic()`` value after which every request of the pull is cut.
        min_rate: bytes per second a body must keep up, per ``RATE_WINDOW_SECONDS``.
    """

    what: str
    api_prefix: str
    deadline: float
    min_rate: float
    timeout_s: float
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # url key -> (file name, most bytes)
    api_bytes: int = 0
    failure: HubLimitError | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def expect(self, url: str, name: str, size: int) -> None:
        """Let ``url`` (and where it redirects) send at most ``size`` bytes, as ``name``."""
        with self._lock:
            self.files[url_key(url)] = (name, size)

    def claims(self, key: str) -> bool:
        return key in self.files or key.startswith(self.api_prefix)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def trip(self, reason: str) -> HubLimitError:
        """The error that cuts this pull (the first one is kept: later ones are its consequences)."""
        error = HubLimitError(f"The download of {self.what} was stopped: {reason}. Nothing of it was kept.")
        with self._lock:
            if self.failure is None:
                self.failure = error
            return self.failure

    def check_time(self) -> None:
        if self.remaining() <= 0:
            raise self.trip(f"the pull took longer than {self.timeout_s:g} s (QP_HUB_PULL_TIMEOUT_S)")

    def count_api(self, size: int) -> None:
        with self._lock:
            self.api_bytes += size
            over = self.api_bytes > MAX_API_BYTES
        if over:
            raise self.trip(f"its listings ran past {MAX_API_BYTES >> 20} MB")


_ACTIVE: list[PullGuard] = []
_ACTIVE_LOCK = threading.Lock()
_INSTALL_LOCK = threading.Lock()
_installed = False


def activate(guard: PullGuard) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.append(guard)


def deactivate(guard: PullGuard) -> None:
    with _ACTIVE_LOCK:
        if guard in _ACTIVE:
            _ACTIVE.remove(guard)


def _claiming(key: str) -> list[PullGuard]:
    with _ACTIVE_LOCK:
        return [guard for guard in _ACTIVE if guard.claims(key)]


class _CountedBody(httpx2.SyncByteStream):
    """A response body that counts what arrives and cuts it at a limit, a deadline or a minimum rate."""

    def __init__(self, inner: Any, guards: list[PullGuard], key: str) -> None:
        self._inner = inner
        self._guards = guards
        self._key = key

    def _limit(self) -> tuple[str | None, float]:
        """The file this body is, and the fewest bytes any claiming guard lets it send."""
        name, limit = None, math.inf
        for guard in self._guards:
            if self._key in guard.files:
                file_name, size = guard.files[self._key]
                if size < limit:
                    name, limit = file_name, size
        return name, limit

    def __iter__(self) -> Iterator[bytes]:
        name, limit = self._limit()
        received = 0
        window_start, window_received = time.monotonic(), 0
        try:
            for chunk in self._inner:
                received += len(chunk)
                for guard in self._guards:
                    if name is None:
                        guard.count_api(len(chunk))
                    guard.check_time()
                if received > limit:
                    raise self._guards[0].trip(f"{name} sent more than the {int(limit):,} bytes its listing gave")
                now = time.monotonic()
                if now - window_start >= RATE_WINDOW_SECONDS:
                    rate = (received - window_received) / (now - window_start)
                    slowest = min(guard.min_rate for guard in self._guards)
                    if rate < slowest:
                        raise self._guards[0].trip(
                            f"{name or 'a listing'} came at {rate / 1024:.2f} KB/s, under the "
                            f"{slowest / 1024:g} KB/s minimum (QP_HUB_MIN_RATE_KBPS)"
                        )
                    window_start, window_received = now, received
                yield chunk
        except httpx2.TimeoutException:
            for guard in self._guards:
                guard.check_time()
            raise self._guards[0].trip(f"{name or 'a listing'} sent nothing for {STALL_SECONDS:g} s") from None

    def close(self) -> None:
        self._inner.close()


class GuardedTransport(httpx2.BaseTransport):
    """Passes requests to ``inner``; those a ``PullGuard`` claims are bounded as the module says."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        key = url_key(request.url)
        guards = _claiming(key)
        if not guards:
            return self._inner.handle_request(request)
        for guard in guards:
            guard.check_time()
        budget = max(0.05, min(STALL_SECONDS, *(guard.remaining() for guard in guards)))
        timeouts = dict(request.extensions.get("timeout") or {})
        for kind in ("connect", "read", "write", "pool"):
            given = timeouts.get(kind)
            timeouts[kind] = budget if given is None else min(given, budget)
        request.extensions["timeout"] = timeouts
        is_file = any(key in guard.files for guard in guards)
        try:
            response = self._inner.handle_request(request)
        except httpx2.TimeoutException:
            for guard in guards:
                guard.check_time()
            if is_file:  # the revision lookup's timeout means "unreachable": only a file's is a stall
                raise guards[0].trip(
                    f"{request.url.path.rsplit('/', 1)[-1]} got no answer within {budget:g} s"
                ) from None
            raise
        for header in _XET_HEADERS:
            response.headers.pop(header, None)
        location = response.headers.get("Location")
        if response.is_redirect and location and is_file:
            target = urljoin(str(request.url), location)
            for guard in guards:
                if key in guard.files:
                    guard.expect(target, *guard.files[key])
        response.stream = _CountedBody(response.stream, guards, key)
        return response

    def close(self) -> None:
        self._inner.close()


def install() -> None:
    """Make huggingface_hub's shared client use ``GuardedTransport`` (once per process)."""
    global _installed
    from huggingface_hub import get_session, set_client_factory

    with _INSTALL_LOCK:
        if _installed:
            return
        # The default client's request hooks (request ids, debug logging) are kept as they are.
        hooks = {kind: list(found) for kind, found in get_session().event_hooks.items()}

        def guarded_client() -> httpx2.Client:
            return httpx2.Client(
                transport=GuardedTransport(httpx2.HTTPTransport()),
                event_hooks=hooks,
                follow_redirects=True,
                timeout=None,
            )

        set_client_factory(guarded_client)
        _installed = True
        logger.debug("huggingface_hub's client now bounds every pull's transfers")
