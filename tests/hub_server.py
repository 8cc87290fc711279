"""A small Hub-compatible HTTP server on 127.0.0.1 for testing push/load with the real huggingface_hub client.

It keeps repos in memory and speaks the parts of the Hub API that `create_repo`, `upload_folder`
(single-commit path, every file "regular"), `snapshot_download` and `hf_hub_download` use. It is a
test double for the Hub, not a reimplementation of it: no auth, no LFS, no Xet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}}
        self.requests: list[str] = []

    def create(self, repo_id: str) -> bool:
        with self.lock:
            if repo_id in self.repos:
                return False
            sha = uuid.uuid4().hex + "00000000"
            self.repos[repo_id] = {"branches": {"main": sha}, "commits": {sha: {}}}
            return True

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo["branches"].get(revision, revision)
        files = repo["commits"].get(sha)
        return (sha, files) if files is not None else None

    def commit(self, repo_id: str, revision: str, changes: dict[str, bytes | None]) -> str:
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo["branches"].get(revision, repo["branches"]["main"])
            files = dict(repo["commits"][parent])
            for path, data in changes.items():
                if data is None:
                    files.pop(path, None)
                else:
                    files[path] = data
            sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
            repo["commits"][sha] = files
            repo["branches"][revision if revision in repo["branches"] or not re.fullmatch(r"[0-9a-f]{40}", revision)
                             else "main"] = sha
            return sha


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        # -- helpers ---------------------------------------------------------------------------
        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, code: int, payload: object = None, headers: dict[str, str] | None = None,
                  raw: bytes | None = None, head: bool = False) -> None:
            data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _not_found(self, code: str, head: bool = False) -> None:
            self._send(404, {"error": code}, headers={"X-Error-Code": code, "X-Error-Message": code}, head=head)

        def _base(self) -> str:
            return f"http://{self.headers.get('Host')}"

        # -- verbs -----------------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            path = unquote(urlparse(self.path).path)
            state.requests.append(f"POST {path}")
            body = self._body()
            if path == "/api/repos/create":
                req = json.loads(body or b"{}")
                repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                created = state.create(repo_id)
                self._send(200 if created else 409, {"url": f"{self._base()}/{repo_id}", "name": repo_id})
                return
            if path == "/api/validate-yaml":
                self._send(200, {"errors": [], "warnings": []})
                return
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path)
            if m:
                req = json.loads(body)
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                         for f in req["files"]]
                self._send(200, {"files": files})
                return
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path)
            if m:
                repo_id, revision = m.group(1), m.group(2)
                if repo_id not in state.repos:
                    self._not_found("RepoNotFound")
                    return
                changes: dict[str, bytes | None] = {}
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if item["key"] == "file":
                        changes[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        changes[item["value"]["path"]] = None
                sha = state.commit(repo_id, revision, changes)
                self._send(200, {"commitUrl": f"{self._base()}/{repo_id}/commit/{sha}", "commitOid": sha,
                                 "pullRequestUrl": None})
                return
            self._not_found("NotImplemented")

        def _tree(self, head: bool) -> bool:
            path = unquote(urlparse(self.path).path)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
            if not m:
                return False
            found = state.resolve(m.group(1), m.group(2))
            if found is None:
                self._not_found("RevisionNotFound", head)
                return True
            prefix = (m.group(3) or "").strip("/")
            entries = [
                {"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                for p, d in sorted(found[1].items())
                if not prefix or p.startswith(prefix + "/")
            ]
            self._send(200, entries, head=head)
            return True

        def _info(self, head: bool) -> bool:
            path = unquote(urlparse(self.path).path)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path)
            if not m:
                return False
            found = state.resolve(m.group(1), m.group(2) or "main")
            if found is None:
                self._not_found("RepoNotFound" if m.group(1) not in state.repos else "RevisionNotFound", head)
                return True
            sha, files = found
            siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]
            self._send(200, {"id": m.group(1), "modelId": m.group(1), "sha": sha, "private": False,
                             "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}, head=head)
            return True

        def _resolve(self, head: bool) -> bool:
            path = unquote(urlparse(self.path).path)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not m:
                return False
            found = state.resolve(m.group(1), m.group(2))
            if found is None:
                self._not_found("RepoNotFound" if m.group(1) not in state.repos else "RevisionNotFound", head)
                return True
            sha, files = found
            if m.group(3) not in files:
                self._send(404, {"error": "EntryNotFound"}, head=head,
                           headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                return True
            data = files[m.group(3)]
            etag = hashlib.sha256(data).hexdigest()
            self._send(200, raw=data, head=head, headers={"X-Repo-Commit": sha, "ETag": f'"{etag}"'})
            return True

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(f"GET {urlparse(self.path).path}")
            if not (self._tree(False) or self._info(False) or self._resolve(False)):
                self._not_found("NotImplemented")

        def do_HEAD(self) -> None:  # noqa: N802
            state.requests.append(f"HEAD {urlparse(self.path).path}")
            if not (self._tree(True) or self._info(True) or self._resolve(True)):
                self._not_found("NotImplemented", head=True)

    return Handler


class HubServer:
    """`with HubServer() as hub:` serves on 127.0.0.1:<free port>; `hub.endpoint` is the base URL."""

    def __init__(self) -> None:
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
