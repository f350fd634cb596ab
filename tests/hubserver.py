"""A stand-in Hugging Face Hub for tests: a small threaded HTTP server on
127.0.0.1 that the real ``huggingface_hub`` client talks to.

    hub = StandInHub().start()
    hub.add_repo(HubRepo("org/tiny", files_from_folder(tiny_model)))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    ...
    hub.stop()

It speaks the part of the Hub protocol that ``huggingface_hub`` 2.x uses for
search, model info and file downloads (read from ``hf_api.py`` and
``file_download.py``):

- ``GET /api/models?search=&filter=&sort=&limit=&expand=`` — search results;
- ``GET /api/models/{org}/{name}[/revision/{rev}][?blobs=true]`` — model info with
  ``sha`` and ``siblings`` (sizes, git blob ids and LFS sha256 when ``blobs``);
- ``GET /api/models/{org}/{name}/tree/{rev}[/{path}]`` — the file listing;
- ``HEAD|GET /{org}/{name}/resolve/{rev}/{file}`` — small files answer 200 with
  ``ETag`` (the git blob id), ``X-Repo-Commit`` and ``Content-Length``; LFS files
  (weights) answer 302 to a "CDN" URL with ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``, as the real Hub does. The CDN URL uses the host name
  ``localhost`` instead of ``127.0.0.1``: another origin, so the client drops the
  ``Authorization`` header there, again as with the real Hub;
- ``HEAD|GET /cdn/{sha256}`` — the LFS bytes, with ``Range`` support (resume).

Errors carry the ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``) the client maps to its exception classes. A
gated repo's metadata is public but its files need a token from
``HubRepo.allowed_tokens`` (401 without a token, 403 with another one).
``HubRepo.missing`` files are listed but answer 404.

Fault injection, per (repo, file), on GET of the bytes:
- ``"drop_once"``: the first GET sends the headers and half the bytes, then
  closes the connection; later GETs (the client resumes with ``Range``) work;
- ``"stall"``: the first GET sends ``STALL_AFTER`` bytes and then goes quiet
  until the server stops (at most ``STALL_SECONDS``, then it hangs up and the
  client's resumed GET gets the rest) — a download that does not end on its
  own, for cancel tests.

Hostile answers, per (repo, file): :meth:`StandInHub.answer_with` replaces or
adds response headers on that file's ``resolve`` answers (HEAD and GET, the
302 and the 404 too), e.g. an ``ETag`` of ``../../x.pth`` or an
``X-Repo-Commit`` that is not a commit hash — what a hostile endpoint could send.

Every request is recorded (:attr:`StandInHub.requests`), so tests can assert
which files were fetched and which headers were sent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".gguf", ".msgpack", ".h5", ".onnx")
STALL_AFTER = 3 * 1024 * 1024  # bytes sent before a "stall" file goes quiet: > 2 client chunks of 1 MiB
STALL_SECONDS = 10  # how long it stays quiet (first GET only) unless the server stops first


@functools.lru_cache(maxsize=256)  # bytes cache their hash: a lookup is O(1) after the first
def git_blob_id(data: bytes) -> str:
    """The git object id of a file: what the Hub sends as ETag for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@functools.lru_cache(maxsize=256)
def sha256(data: bytes) -> str:
    """The LFS object id of a file: what the Hub sends as X-Linked-Etag."""
    return hashlib.sha256(data).hexdigest()


def files_from_folder(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def safetensors_parameters(data: bytes) -> dict[str, int]:
    """Element counts per dtype from a safetensors header, e.g. {"F32": 3_300_000}."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info["shape"]:
            n *= dim
        counts[info["dtype"]] = counts.get(info["dtype"], 0) + n
    return counts


@dataclass
class HubRepo:
    """One model repository. ``files`` maps repo paths to bytes; names may be
    hostile (``../evil.json``): they are listed, never served."""

    repo_id: str
    files: dict[str, bytes]
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=lambda: ["text-generation", "license:apache-2.0"])
    library_name: str | None = "transformers"
    pipeline_tag: str | None = "text-generation"
    gated: str | bool = False  # False, "auto" or "manual", as the Hub says
    allowed_tokens: frozenset[str] = frozenset()
    last_modified: str = "2025-01-15T10:00:00.000Z"
    trending_score: int = 0
    card_data: dict | None = None
    missing: frozenset[str] = frozenset()  # listed, but 404 EntryNotFound when fetched

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + git_blob_id(self.files[name]).encode())
        return digest.hexdigest()

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def safetensors(self) -> dict | None:
        counts: dict[str, int] = {}
        for name, data in self.files.items():
            if re.fullmatch(r"model.*\.safetensors", name):  # the weights mlx-lm / transformers load
                for dtype, n in safetensors_parameters(data).items():
                    counts[dtype] = counts.get(dtype, 0) + n
        return {"parameters": counts, "total": sum(counts.values())} if counts else None

    def sibling(self, name: str, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": name}
        data = self.files[name]
        entry = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        if self.is_lfs(name):
            entry["lfs"] = {"size": len(data), "sha256": sha256(data), "pointerSize": 134}
        return entry

    def info(self, blobs: bool = False) -> dict:
        card = self.card_data if self.card_data is not None else {
            "license": next((t.split(":", 1)[1] for t in self.tags if t.startswith("license:")), None)
        }
        return {
            "_id": hashlib.md5(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.sha,
            "lastModified": self.last_modified,
            "createdAt": "2024-06-01T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": self.gated,
            "downloads": self.downloads,
            "likes": self.likes,
            "trendingScore": self.trending_score,
            "tags": list(self.tags),
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "cardData": card,
            "safetensors": self.safetensors(),
            "siblings": [self.sibling(name, blobs) for name in self.files],
        }


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    repo_id: str | None = None
    filename: str | None = None  # set for file requests (resolve and CDN)


class StandInHub:
    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.faults: dict[tuple[str, str], str] = {}
        self.header_overrides: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[Request] = []
        self.errors: list[str] = []  # exceptions inside the stand-in (a test fixture fails on them)
        self._lock = threading.Lock()
        self._fault_hits: dict[tuple[str, str], int] = {}
        self._released = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control -------------------------------------------------------

    def start(self) -> "StandInHub":
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and hang up every open (keep-alive) connection, so the
        client sees an unreachable Hub rather than a pooled connection that works."""
        self._released.set()  # let stalled downloads finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        return f"http://localhost:{self.port}/cdn"

    def add_repo(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def inject(self, repo_id: str, filename: str, fault: str) -> None:
        """Make the next GET of this file's bytes fail ("drop_once" or "stall")."""
        assert fault in ("drop_once", "stall"), fault
        self.faults[(repo_id, filename)] = fault
        self._fault_hits.pop((repo_id, filename), None)

    def answer_with(self, repo_id: str, filename: str, headers: dict[str, str]) -> None:
        """Send these headers (replacing ours of the same name) on every resolve
        answer for this file: a hostile endpoint."""
        self.header_overrides[(repo_id, filename)] = dict(headers)

    def _overridden(self, repo_id: str, filename: str, headers: dict[str, str]) -> dict[str, str]:
        extra = self.header_overrides.get((repo_id, filename))
        if not extra:
            return headers
        names = {k.lower() for k in extra}
        return {**{k: v for k, v in headers.items() if k.lower() not in names}, **extra}

    # ---- what happened ---------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def file_requests(self, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.filename is not None and (method is None or r.method == method)]

    def requested_files(self) -> set[str]:
        return {r.filename for r in self.file_requests()}

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _cdn_lookup(self, key: str) -> tuple[HubRepo, str] | None:
        for repo in self.repos.values():
            for name, data in repo.files.items():
                if repo.is_lfs(name) and sha256(data) == key:
                    return repo, name
        return None

    def _fault(self, repo_id: str, name: str) -> str | None:
        with self._lock:
            hits = self._fault_hits.get((repo_id, name), 0)
            self._fault_hits[(repo_id, name)] = hits + 1
        return self.faults.get((repo_id, name)) if hits == 0 else None  # faults hit the first GET only


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_CDN = re.compile(r"^/cdn/(?P<key>[0-9a-f]{64})$")
_SORT_KEYS = {"downloads": "downloads", "likes": "likes", "trendingScore": "trendingScore",
              "lastModified": "lastModified", "createdAt": "createdAt"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    stand_in: StandInHub

    def log_message(self, format, *args) -> None:  # noqa: A002  (silence stderr)
        pass

    def setup(self) -> None:
        super().setup()
        with self.stand_in._lock:
            self.stand_in._connections.add(self.connection)

    def finish(self) -> None:
        with self.stand_in._lock:
            self.stand_in._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # ---- plumbing -------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = {"X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._json({"error": message}, status, extra)

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        hub = self.stand_in
        repo_id = filename = None
        if m := _RESOLVE.match(path):
            repo_id, filename = m["repo"], m["file"]
        elif m := _CDN.match(path):
            found = hub._cdn_lookup(m["key"])
            if found:
                repo_id, filename = found[0].repo_id, found[1]
        elif m := (_TREE.match(path) or _INFO.match(path)):
            repo_id = m["repo"]
        hub.record(Request(self.command, path, query, headers, repo_id, filename))
        try:
            if path == "/api/models":
                return self._search(query)
            if m := _TREE.match(path):
                return self._tree(m["repo"], m["rev"], m["path"] or "")
            if m := _INFO.match(path):
                return self._info(m["repo"], m["rev"], query)
            if m := _RESOLVE.match(path):
                return self._resolve(m["repo"], m["rev"], m["file"])
            if m := _CDN.match(path):
                return self._cdn(m["key"])
            self._error(404, None, "not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the stand-in: answer 400 (never retried) and remember it
            hub.errors.append(f"{self.command} {self.path}: {exc!r}")
            self._error(400, None, f"stand-in hub crashed: {exc!r}")

    def _repo(self, repo_id: str) -> HubRepo | None:
        repo = self.stand_in.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
        return repo

    def _check_revision(self, repo: HubRepo, rev: str | None) -> bool:
        if rev in (None, "main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", {"X-Repo-Commit": repo.sha})
        return False

    def _check_access(self, repo: HubRepo) -> bool:
        if not repo.gated:
            return True
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token in repo.allowed_tokens:
            return True
        message = f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated."
        self._error(401 if token is None else 403, "GatedRepo", message)
        return False

    # ---- endpoints ------------------------------------------------------

    def _search(self, query: dict[str, list[str]]) -> None:
        text = (query.get("search") or [""])[0].lower()
        filters = query.get("filter", [])
        repos = [
            r for r in self.stand_in.repos.values()
            if text in r.repo_id.lower() and all(f in r.tags or f == r.pipeline_tag for f in filters)
        ]
        key = _SORT_KEYS.get((query.get("sort") or ["downloads"])[0], "downloads")
        items = sorted((r.info() for r in repos), key=lambda i: i[key], reverse=True)
        limit = int((query.get("limit") or ["1000"])[0])
        items = items[:limit]
        if expand := query.get("expand"):
            items = [{k: v for k, v in i.items() if k in {"id", "_id", *expand}} for i in items]
        self._json(items)

    def _info(self, repo_id: str, rev: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        if repo and self._check_revision(repo, rev):
            blobs = (query.get("blobs") or ["false"])[0].lower() == "true"
            self._json(repo.info(blobs=blobs))

    def _tree(self, repo_id: str, rev: str, prefix: str) -> None:
        repo = self._repo(repo_id)
        if not (repo and self._check_revision(repo, rev)):
            return
        entries = []
        for name, data in repo.files.items():
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
            if repo.is_lfs(name):
                entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _resolve(self, repo_id: str, rev: str, name: str) -> None:
        repo = self._repo(repo_id)
        if not (repo and self._check_revision(repo, rev) and self._check_access(repo)):
            return
        hostile = functools.partial(self.stand_in._overridden, repo_id, name)
        if name not in repo.files or name in repo.missing:
            self._error(404, "EntryNotFound", f"{name} does not exist", hostile({"X-Repo-Commit": repo.sha}))
            return
        data = repo.files[name]
        if repo.is_lfs(name):
            key = sha256(data)
            self._send(302, b"", hostile({
                "Location": f"{self.stand_in.cdn_url}/{key}",
                "X-Repo-Commit": repo.sha,
                "X-Linked-Etag": f'"{key}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_id(data)}"',
            }), content_type="text/plain")
            return
        self._bytes(repo, name, data, hostile({"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": repo.sha}))

    def _cdn(self, key: str) -> None:
        found = self.stand_in._cdn_lookup(key)
        if found is None:
            self._error(404, None, "no such object")
            return
        repo, name = found
        self._bytes(repo, name, repo.files[name], {"ETag": f'"{key}"'})

    def _bytes(self, repo: HubRepo, name: str, data: bytes, headers: dict[str, str]) -> None:
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(m[1])
        body = data[start:]
        status = 206 if start else 200
        if start:
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        fault = self.stand_in._fault(repo.repo_id, name)
        if fault == "drop_once":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._hang_up()
        elif fault == "stall":
            self.wfile.write(body[:STALL_AFTER])
            self.wfile.flush()
            # A safety net, not a clock: a client that fails to cancel gets the
            # rest on its retry after STALL_SECONDS, so a broken cancel fails its
            # test instead of hanging it.
            self.stand_in._released.wait(timeout=STALL_SECONDS)
            self._hang_up()
        else:
            self.wfile.write(body)

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
