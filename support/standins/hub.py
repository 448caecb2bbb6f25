"""A small Hub stand-in: the HTTP routes that ``huggingface_hub`` uses to pin, download and upload.

Repos live in memory as commits of ``{path: bytes}``. Private repos need a token from ``tokens``.
``fail(method, path_part, status, times)`` injects errors (5xx for retry tests). Every Authorization
header seen is kept in ``seen_tokens`` so tests can prove the per-job token was really sent, and every
request as ``(method, path)`` in ``requests`` so they can tell which files were fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from support.standins.server import ThreadedServer


@dataclass
class Repo:
    private: bool = False
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        parent = self.files(branch) if branch in self.refs else {}
        tree = {**parent, **files}
        sha = hashlib.sha1(f"{len(self.commits)}{message}".encode() + b"".join(sorted(tree.values()))).hexdigest()
        self.commits.append((sha, tree))
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return next((sha for sha, _ in self.commits if sha == revision), None)

    def files(self, revision: str) -> dict[str, bytes]:
        sha = self.resolve(revision)
        return next(tree for s, tree in self.commits if s == sha)


class HubStandIn:
    def __init__(self, tokens: set[str] | None = None) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens = tokens or set()
        self.seen_tokens: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.commit_messages: list[str] = []
        self._faults: list[list] = []
        self._lock = threading.Lock()
        self.app = self._build()
        self.server = ThreadedServer(self.app)

    def start(self) -> str:
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def fail(self, method: str, path_part: str, status: int, times: int) -> None:
        with self._lock:
            self._faults.append([method, path_part, status, times])

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False) -> str:
        repo = self.repos.setdefault(repo_id, Repo(private=private))
        return repo.commit(files, "initial")

    def fetched(self, repo_id: str) -> list[str]:
        """The files of ``repo_id`` downloaded so far (GET on ``resolve``), in order."""
        prefix = f"/{repo_id}/resolve/"
        return [
            path.removeprefix(prefix).split("/", 1)[1]
            for method, path in self.requests
            if method == "GET" and path.startswith(prefix)
        ]

    # -- HTTP ----------------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI()
        hub = self

        @app.middleware("http")
        async def faults_and_tokens(request: Request, call_next):
            hub.requests.append((request.method, request.url.path))
            auth = request.headers.get("authorization")
            if auth:
                hub.seen_tokens.append(auth.removeprefix("Bearer "))
            with hub._lock:
                for fault in hub._faults:
                    method, part, status, times = fault
                    if times > 0 and request.method == method and part in request.url.path:
                        fault[3] -= 1
                        return JSONResponse({"error": "injected"}, status_code=status)
            return await call_next(request)

        def lookup(request: Request, org: str, name: str, revision: str | None = None):
            repo = hub.repos.get(f"{org}/{name}")
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if repo is None or (repo.private and token not in hub.tokens):
                return None, _error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
            if revision is not None and repo.resolve(revision) is None:
                return None, _error(404, "RevisionNotFound", "Invalid rev id")
            return repo, None

        @app.get("/api/models/{org}/{name}")
        @app.get("/api/models/{org}/{name}/revision/{revision:path}")
        def info(request: Request, org: str, name: str, revision: str = "main"):
            repo, error = lookup(request, org, name, revision)
            if error:
                return error
            sha = repo.resolve(revision)
            siblings = [{"rfilename": path} for path in sorted(repo.files(sha))]
            return {"id": f"{org}/{name}", "modelId": f"{org}/{name}", "sha": sha, "private": repo.private, "siblings": siblings}

        @app.api_route("/{org}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        def resolve(request: Request, org: str, name: str, revision: str, path: str):
            repo, error = lookup(request, org, name, revision)
            if error:
                return error
            sha = repo.resolve(revision)
            content = repo.files(sha).get(path)
            if content is None:
                return _error(404, "EntryNotFound", f"{path} not found")
            etag = hashlib.sha256(content).hexdigest()
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Content-Length": str(len(content))}
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            return Response(content, headers=headers, media_type="application/octet-stream")

        @app.post("/api/repos/create")
        async def create(request: Request):
            if request.headers.get("authorization", "").removeprefix("Bearer ") not in hub.tokens:
                return _error(401, "Unauthorized", "Invalid credentials in Authorization header")
            body = await request.json()
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            if repo_id in hub.repos:
                return _error(
                    409, "RepoExists", "You already created this model repo", extra={"url": f"{request.base_url}{repo_id}"}
                )
            private = body.get("visibility", "private" if body.get("private") else "public") != "public"
            hub.repos[repo_id] = Repo(private=private)
            hub.repos[repo_id].commit({".gitattributes": b"*.safetensors filter=lfs\n"}, "initial commit")
            return {"url": f"{str(request.base_url).rstrip('/')}/{repo_id}", "name": repo_id}

        @app.delete("/api/repos/delete")
        async def delete(request: Request):
            body = await request.json()
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            hub.repos.pop(repo_id, None)
            return {}

        @app.post("/api/validate-yaml")
        def validate_yaml():
            return {"errors": [], "warnings": []}

        @app.post("/api/models/{org}/{name}/preupload/{revision}")
        async def preupload(request: Request, org: str, name: str, revision: str):
            repo, error = lookup(request, org, name)
            if error:
                return error
            body = await request.json()
            return {
                "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in body["files"]]
            }

        @app.post("/api/models/{org}/{name}/commit/{revision}")
        async def commit(request: Request, org: str, name: str, revision: str):
            repo, error = lookup(request, org, name)
            if error:
                return error
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            files = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"}
            sha = repo.commit(files, header["summary"], branch=revision)
            hub.commit_messages.append(header["summary"])
            base = str(request.base_url).rstrip("/")
            return {"commitUrl": f"{base}/{org}/{name}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

        return app


def _error(status: int, code: str, message: str, extra: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers={"X-Error-Code": code})
