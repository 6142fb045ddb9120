"""Real Hub-compatible HTTP servers on 127.0.0.1 for tests and benchmarks.

* ``OlahServer`` runs ``olah`` (PyPI), a self-hosted Hub mirror, offline over
  git repos made with ``make_git_repo``.
* ``HubContractServer`` is a small threaded server that follows the Hub's HTTP
  contract as huggingface_hub uses it (revision, tree and resolve routes; the
  ``X-Error-Code`` header; ``X-Repo-Commit`` / ``ETag`` / ``Content-Length``;
  byte ranges), for what olah cannot produce: revision and entry not found,
  gated and private repos, a download that breaks off or stalls midway — and
  what a hostile Hub would send: a file listed at one size and served endless
  or past it, a body trickling a byte every few seconds, listings of any
  length (paged or in one piece), a multi-GB file that is only ever listed.
  It counts every request it serves and every body byte it sends.

Both are context managers and pytest-free, so a benchmark can use them too;
``pytest`` fixtures wrapping them live in the test modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, *, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    """Block until ``url`` answers HTTP (any status); raise if it does not in time or the process dies."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode} before serving")
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=1.0) as sock:
                sock.sendall(b"HEAD / HTTP/1.0\r\nHost: x\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered HTTP at {url} within {timeout:.0f} s")


# ---------------------------------------------------------------------- olah


def make_git_repo(
    mirrors_root: Path,
    repo_id: str,
    commits: Iterable[tuple[Mapping[str, bytes | Path | None], Iterable[str]]],
) -> list[str]:
    """Create the git repo olah serves for ``repo_id`` under ``mirrors_root``; return the commit shas.

    Args:
        mirrors_root: olah's ``mirrors-path``; the repo goes in ``models/<org>/<name>``.
        repo_id: ``org/name``.
        commits: in order, ``(changes, tags)``: ``changes`` maps repo paths to bytes,
            a file to copy, or ``None`` to delete; ``tags`` are tagged on that commit.
            Every commit lands on branch ``main``.
    """
    repo = mirrors_root / "models" / repo_id
    repo.mkdir(parents=True)
    env = {**os.environ, **_GIT_ENV}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    shas = []
    for number, (changes, tags) in enumerate(commits):
        for name, content in changes.items():
            target = repo / name
            if content is None:
                git("rm", "-q", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
            git("add", name)
        git("commit", "-q", "-m", f"commit {number}")
        for tag in tags:
            git("tag", tag)
        shas.append(git("rev-parse", "HEAD"))
    return shas


class OlahServer:
    """``olah`` serving ``mirrors_root`` offline on a free loopback port.

    ``requests()`` lists ``(method, path)`` of every request olah logged.
    """

    def __init__(self, mirrors_root: Path, workdir: Path) -> None:
        self.mirrors_root = mirrors_root
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.log_file = workdir / "olah.out"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> OlahServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "{LOOPBACK}"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors_root}"]\n'
            "[accessibility]\n"
            "offline = true\n",
            encoding="utf-8",
        )
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(self.workdir / "logs")],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            wait_until_serving(self.endpoint, process=self._process)
        except RuntimeError as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"olah did not start: {exc}\n--- olah output ---\n{self.output()}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def output(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request in olah's access log so far."""
        return re.findall(r'"([A-Z]+) (\S+) HTTP/1\.[01]"', self.output())


# -------------------------------------------------------- the Hub contract server


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub uses as oid and ETag for non-LFS files."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass
class ServedRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    token: str | None = None
    missing_entries: set[str] = field(default_factory=set)
    listed_sizes: dict[str, int] = field(default_factory=dict)  # name -> size the tree and HEAD give
    filler_entries: int = 0  # generated tiny files listed (never served) beside the real ones
    filler_suffix: str = ".txt"
    page_size: int | None = None  # entries per tree page (Link: rel="next"); None: one page


# How a hostile file's GET body misbehaves (the tree and HEAD still give its listed size).
ENDLESS, OVERSIZE, TRICKLE = "endless", "oversize", "trickle"
# Bounds on the server's own side, so that no test can make it send for ever.
HOSTILE_MAX_SECONDS = 90.0
HOSTILE_MAX_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    authorized: bool


class HubContractServer:
    """A threaded server that answers like the Hub for repos added with ``add_commit``.

    Failure switches: ``stall(name)`` sends half of that file then holds the
    connection open until ``release()``; ``break_transfers(name, times)`` cuts
    the connection after half the body ``times`` times, then serves normally
    (byte ranges included, as the Hub does, so clients can resume).
    """

    def __init__(self) -> None:
        self.repos: dict[str, ServedRepo] = {}
        self.log: list[Logged] = []
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._stall_names: set[str] = set()
        self._breaks: dict[str, int] = {}
        self._outage: int | None = None
        self._hostile: dict[str, tuple[str, float]] = {}
        self.sent: dict[str, int] = {}  # file name -> body bytes sent by hostile GETs
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-contract-server", daemon=True
        )

    # ---- setup

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        refs: Iterable[str] = ("main",),
        gated: bool = False,
        private: bool = False,
        token: str | None = None,
    ) -> str:
        """Add a commit holding exactly ``files`` to ``repo_id`` (created if new); point ``refs`` at it.

        Returns:
            The commit's 40-hex sha.
        """
        content = {name: data if isinstance(data, bytes) else Path(data).read_bytes() for name, data in files.items()}
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(content):
            digest.update(name.encode() + b"\x00" + git_blob_sha1(content[name]).encode())
        with self._lock:
            repo = self.repos.setdefault(repo_id, ServedRepo())
            digest.update(str(len(repo.commits)).encode())
            sha = digest.hexdigest()
            repo.commits[sha] = content
            repo.refs.update(dict.fromkeys(refs, sha))
            repo.gated = repo.gated or gated
            repo.private = repo.private or private
            repo.token = token or repo.token
        return sha

    def missing_entry(self, repo_id: str, name: str) -> None:
        """List ``name`` in trees but answer 404 EntryNotFound when it is fetched."""
        self.repos[repo_id].missing_entries.add(name)

    def stall(self, name: str) -> None:
        self.stalled.clear()
        self._release.clear()
        self._stall_names.add(name)

    def release(self) -> None:
        self._stall_names.clear()
        self._release.set()

    def break_transfers(self, name: str, times: int) -> None:
        self._breaks[name] = times

    def list_size(self, repo_id: str, name: str, size: int) -> None:
        """List ``name`` at ``size`` bytes (tree and HEAD) without holding them: a GET sends that many zeros."""
        repo = self.repos[repo_id]
        repo.listed_sizes[name] = size
        for files in repo.commits.values():
            files.setdefault(name, b"")

    def filler(self, repo_id: str, count: int, *, suffix: str = ".txt", page_size: int | None = None) -> None:
        """List ``count`` more tiny files (``f0000000<suffix>`` ...) in the repo's root, made up as they are listed."""
        repo = self.repos[repo_id]
        repo.filler_entries, repo.filler_suffix, repo.page_size = count, suffix, page_size

    def hostile(self, name: str, mode: str, interval: float = 3.0) -> None:
        """Serve ``name``'s GET body ``ENDLESS`` (zeros until the client hangs up), ``OVERSIZE`` (ten times
        its size, with a Content-Length that says so) or ``TRICKLE`` (one byte every ``interval`` s)."""
        self._hostile[name] = (mode, interval)
        self.sent[name] = 0

    def outage(self, status: int | None) -> None:
        """Answer every repo request with ``status`` (e.g. 503), or serve normally again with ``None``."""
        self._outage = status

    # ---- observation

    def requests(self) -> list[Logged]:
        with self._lock:
            return list(self.log)

    def file_downloads(self) -> list[str]:
        """Paths of the GET requests for file contents (``/resolve/``)."""
        return [r.path for r in self.requests() if r.method == "GET" and "/resolve/" in r.path]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ---- lifetime

    def __enter__(self) -> HubContractServer:
        self._thread.start()
        wait_until_serving(self.endpoint)
        self.clear_log()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


_REPO_API = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/(?P<kind>revision|tree)/(?P<rest>.+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _make_handler(server: HubContractServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle plus
        # delayed ACKs add ~40 ms to every response on loopback.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read server.log
            pass

        # ---- plumbing

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: object, headers: Mapping[str, str] | None = None) -> None:
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(
                status, body, {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
            )

        def _record(self) -> None:
            with server._lock:
                server.log.append(Logged(self.command, self.path, "Authorization" in self.headers))

        def _repo(self, repo_id: str) -> ServedRepo | None:
            """The repo if this request may see it; otherwise the error has been sent."""
            repo = server.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            sent = self.headers.get("Authorization", "")
            allowed = repo.token is not None and sent == f"Bearer {repo.token}"
            if repo.private and not allowed:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            if repo.gated and not allowed:
                status = 403 if sent else 401
                self._error(
                    status,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted and you are not in the authorized list.",
                )
                return None
            return repo

        def _commit(self, repo: ServedRepo, revision: str) -> str | None:
            sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return sha

        # ---- routes

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _route(self) -> None:
            self._record()
            path = urlsplit(self.path).path
            if path == "/":
                self._send(200, b"ok", {"Content-Type": "text/plain"})
                return
            if server._outage is not None:
                self._error(server._outage, "ServiceUnavailable", "The service is temporarily unavailable")
                return
            if match := _REPO_API.match(path):
                self._api(unquote(match["repo"]), match["kind"], unquote(match["rest"]))
                return
            if match := _RESOLVE.match(path):
                self._resolve(unquote(match["repo"]), unquote(match["rev"]), unquote(match["file"]))
                return
            self._error(404, "NotFound", "Not found")

        def _api(self, repo_id: str, kind: str, rest: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            revision = rest.split("/", 1)[0] if kind == "tree" else rest
            sha = self._commit(repo, revision)
            if sha is None:
                return
            files = repo.commits[sha]
            if kind == "revision":
                self._json({
                    "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                    "sha": sha, "private": repo.private, "gated": "manual" if repo.gated else False,
                    "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                })  # fmt: skip
                return
            folders = sorted({str(Path(name).parent) for name in files} - {"."})
            entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": folder} for folder in folders]
            entries += [
                {
                    "type": "file", "oid": git_blob_sha1(data) if name not in repo.listed_sizes else "1" * 40,
                    "size": repo.listed_sizes.get(name, len(data)), "path": name,
                }
                for name, data in sorted(files.items())
            ]  # fmt: skip
            total = len(entries) + repo.filler_entries
            start = int(parse_qs(urlsplit(self.path).query).get("cursor", ["0"])[0])
            stop = total if repo.page_size is None else min(total, start + repo.page_size)
            headers = {}
            if stop < total:
                headers["Link"] = f'<{server.endpoint}{urlsplit(self.path).path}?cursor={stop}>; rel="next"'
            page = entries[start:stop] + [
                {"type": "file", "oid": "2" * 40, "size": 1, "path": f"f{n:07}{repo.filler_suffix}"}
                for n in range(max(start, len(entries)) - len(entries), stop - len(entries))
            ]
            self._json(page, headers)

        def _resolve(self, repo_id: str, revision: str, name: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            sha = self._commit(repo, revision)
            if sha is None:
                return
            data = repo.commits[sha].get(name)
            if data is None or name in repo.missing_entries:
                self._error(404, "EntryNotFound", f'{name} does not exist on "{revision}"')
                return
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{git_blob_sha1(data)}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            listed = repo.listed_sizes.get(name)
            if name in server._hostile or listed is not None:
                self._send_hostile(name, listed if listed is not None else len(data), headers)
                return
            start = 0
            if match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                start = int(match[1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if self.command == "GET" and name in server._stall_names:
                self._send_partial(body, headers, start, wait=True)
                return
            if self.command == "GET" and server._breaks.get(name, 0) > 0:
                server._breaks[name] -= 1
                self._send_partial(body, headers, start, wait=False)
                return
            self._send(206 if start else 200, body, headers)

        def _send_hostile(self, name: str, listed: int, headers: Mapping[str, str]) -> None:
            """HEAD: the listed size. GET: the body its hostile mode says, made up as it goes (zeros)."""
            mode, interval = server._hostile.get(name, (OVERSIZE, 0.0))
            length = {ENDLESS: None, OVERSIZE: listed * 10 if name in server._hostile else listed}.get(mode, listed)
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            if self.command == "HEAD" or length is not None:
                self.send_header("Content-Length", str(listed if self.command == "HEAD" else length))
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command == "HEAD":
                return
            block = bytes(1 if mode == TRICKLE else 64 * 1024)
            started = time.monotonic()
            left = HOSTILE_MAX_BYTES if length is None else min(length, HOSTILE_MAX_BYTES)
            try:
                while left > 0 and time.monotonic() - started < HOSTILE_MAX_SECONDS:
                    piece = block[: min(len(block), left)]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    left -= len(piece)
                    with server._lock:
                        server.sent[name] = server.sent.get(name, 0) + len(piece)
                    if mode == TRICKLE:
                        time.sleep(interval)
            except OSError:  # the client hung up: what a bounded client does
                pass

        def _send_partial(self, body: bytes, headers: Mapping[str, str], start: int, *, wait: bool) -> None:
            """Promise the whole body, send half of it, then (after a stall) drop the connection."""
            self.send_response(206 if start else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if wait:
                server.stalled.set()
                server._release.wait(timeout=60)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler
