"""The stand-in Hub (tests/hubserver.py) with the endpoints ``create_repo`` and
``upload_folder`` of huggingface_hub 2.x use, for testing pushes:

- ``POST /api/repos/create`` — body ``{name, organization, visibility, type}``;
  answers ``{"url": …}``, or 409 with the same body when the repo exists (the
  client's ``exist_ok`` reads the URL from it);
- ``POST /api/validate-yaml`` — the client sends README.md's front matter here first;
  like the Hub, a ``base_model`` that is not a repo id (a local path) is an error;
- ``POST /api/models/{org}/{name}/preupload/{rev}`` — body ``{files: [{path,
  sample, size}]}``; answers each file's ``uploadMode``. Every file is "regular"
  (its bytes travel base64 in the commit): with ``hf_xet`` installed, the client
  sends "lfs" files through the Xet storage protocol, which this stand-in does not
  speak. The real Hub picks "lfs" for weights; the commit path is the same;
- ``POST /api/models/{org}/{name}/commit/{rev}`` — an NDJSON body: a ``header``
  line (summary, description), then ``file`` lines (base64 ``content``, ``path``)
  and ``deletedFile`` lines; the files become the repo's, readable through the
  download endpoints, and the answer is ``{commitUrl, commitOid, pullRequestUrl}``.

Writes need ``Authorization: Bearer <token>`` with a token in ``write_tokens``
(401 without one, 403 with another). Requests are recorded like every other
(:attr:`StandInHub.requests`), so tests can check which token was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.hubfixtures import serve_hub
from tests.hubserver import HubRepo, Request, StandInHub, _Handler

WRITE_TOKEN = "hf_stand_in_write_token"
READ_TOKEN = "hf_stand_in_read_only_token"

_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$")


class UploadHub(StandInHub):
    def __init__(self, write_tokens: frozenset[str] = frozenset({WRITE_TOKEN})) -> None:
        super().__init__()
        self.write_tokens = write_tokens
        self.private: dict[str, bool] = {}  # repo id -> created private?
        self.commits: list[dict] = []  # {"repo", "summary", "files": [paths], "deleted": [paths]}

    def start(self) -> "UploadHub":
        hub = self

        class Handler(_UploadHandler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-hub", daemon=True)
        self._thread.start()
        return self


class _UploadHandler(_Handler):
    stand_in: UploadHub

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        repo_id = None
        if m := (_PREUPLOAD.match(path) or _COMMIT.match(path)):
            repo_id = m["repo"]
        self.stand_in.record(Request("POST", path, {}, headers, repo_id))
        try:
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if not self._may_write():
                return
            if path == "/api/repos/create":
                return self._create(json.loads(body))
            if m := _PREUPLOAD.match(path):
                return self._preupload(m["repo"], json.loads(body))
            if m := _COMMIT.match(path):
                return self._commit(m["repo"], body)
            self._error(404, None, "not found")
        except Exception as exc:  # a bug in the stand-in: answer 400 (never retried) and remember it
            self.stand_in.errors.append(f"POST {self.path}: {exc!r}")
            self._error(400, None, f"stand-in hub crashed: {exc!r}")

    def _may_write(self) -> bool:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is None:
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        if token not in self.stand_in.write_tokens:
            self._error(403, None, "You don't have the rights to write to this namespace")
            return False
        return True

    def _validate_yaml(self, payload: dict) -> None:
        import yaml

        content = payload.get("content", "")
        front = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        base = (front or {}).get("base_model")
        if base is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)):
            self._json({"errors": [{"message": f'"base_model" must be a model id on the Hub, not {base!r}'}]}, 400)
            return
        self._json({"warnings": []})

    def _create(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = {"url": f"{self.stand_in.url}/{repo_id}", "name": repo_id, "id": repo_id}
        if repo_id in self.stand_in.repos:
            self._json({**url, "error": "You already created this model repo"}, 409)
            return
        self.stand_in.add_repo(HubRepo(repo_id, {}, library_name=None))
        self.stand_in.private[repo_id] = payload.get("visibility", "public") == "private"
        self._json(url)

    def _preupload(self, repo_id: str, payload: dict) -> None:
        if self._repo(repo_id) is None:
            return
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                              for f in payload["files"]]})

    def _commit(self, repo_id: str, body: bytes) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        added, deleted = [], []
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                repo.files[value["path"]] = base64.b64decode(value["content"])
                added.append(value["path"])
            elif line["key"] == "deletedFile":
                repo.files.pop(line["value"]["path"], None)
                deleted.append(line["value"]["path"])
            elif line["key"] != "header":
                self._error(400, None, f"the stand-in does not take {line['key']} operations")
                return
        self.stand_in.commits.append({"repo": repo_id, "summary": header.get("summary"), "files": added,
                                      "deleted": deleted})
        oid = hashlib.sha1(json.dumps([repo_id, len(self.stand_in.commits)]).encode()).hexdigest()
        self._json({"commitUrl": f"{self.stand_in.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                    "pullRequestUrl": None})


@pytest.fixture
def upload_hub(tiny_model, tmp_path, monkeypatch) -> Iterator[UploadHub]:
    """An UploadHub with the standard repos, set up like the ``hub`` fixture
    (HF_ENDPOINT, private HF_HOME, no token, loopback only)."""
    yield from serve_hub(UploadHub(), tiny_model, tmp_path, monkeypatch)
