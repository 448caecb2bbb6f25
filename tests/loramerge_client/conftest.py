"""A stand-in for the service over real HTTP: each test scripts the answers of the paths it calls."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.standins.server import ThreadedServer


def job(job_id: str = "job-1", status: str = "queued", **extra) -> dict:
    return {
        "id": job_id,
        "status": status,
        "method": "do_merging",
        "queue": "cpu",
        "progress": {"stage": status, "done": 0, "total": 0},
        "error": None,
        "result": None,
        "sources": [],
        "spec": {},
        **extra,
    }


def answer(status: int, body: dict | None = None, **headers: str) -> Callable[[Request], Response]:
    return lambda request: JSONResponse(body or {}, status_code=status, headers=headers)


def error(status: int, code: str, message: str = "no", **headers: str) -> Callable[[Request], Response]:
    return answer(status, {"error": {"code": code, "message": message}}, **headers)


class StandIn:
    def __init__(self) -> None:
        self.plans: dict[tuple[str, str], list[Callable]] = {}
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.server = ThreadedServer(Starlette(routes=[Route("/{path:path}", self._serve, methods=["GET", "POST", "DELETE"])]))
        self.url = ""

    def plan(self, method: str, path: str, *answers: Callable[[Request], Response]) -> None:
        """Answer the calls of ``method path`` in this order; the last answer repeats."""
        self.plans[(method, path)] = list(answers)

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]

    async def _serve(self, request: Request) -> Response:
        self.requests.append(request)
        self.bodies.append(await request.body())
        plan = self.plans.get((request.method, request.url.path))
        if not plan:
            return JSONResponse({"error": {"code": "not_found", "message": "not scripted"}}, status_code=404)
        handler = plan.pop(0) if len(plan) > 1 else plan[0]
        return handler(request)

    def last_json(self) -> dict:
        return json.loads(self.bodies[-1])


@pytest.fixture(scope="module")
def _server():
    standin = StandIn()
    standin.url = standin.server.start()
    yield standin
    standin.server.stop()


@pytest.fixture
def standin(_server):
    _server.plans.clear()
    _server.requests.clear()
    _server.bodies.clear()
    return _server
