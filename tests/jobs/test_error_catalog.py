"""The error catalog (jobs.errors.ErrorCode) is the one list of codes: every error class's code is in
it, every code in it is produced somewhere, the README's table is the generated one, the API statuses
are the ones clients already rely on, and app/errors.py answers with the catalog's status."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.errors import ApiError, install_error_handlers
from jobs.errors import ErrorCode, LeaseLostError, Where, markdown_table
from jobs.lease import Fence
from jobs.sources import InvalidSourceError
from merge_core.errors import MergeCancelledError, MergeError, SourceNotFoundError
from worker.errors import DestinationUnavailableError, SourceForbiddenError, SourceUnavailableError, TransientError

ROOT = Path(__file__).parents[2]
PACKAGES = ("merge_core", "jobs", "app", "worker")

# Every module of every package imported in a fresh interpreter (worker.celery_app reads its settings at
# import), then every exception class of ours that carries a class-level ``code``.
WALK = """
import importlib, json, pkgutil
packages = {packages!r}
for package in packages:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
def below(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from below(sub)
codes = {{
    f"{{cls.__module__}}.{{cls.__qualname__}}": str(cls.code)
    for cls in set(below(BaseException))
    if cls.__module__.split(".")[0] in packages and isinstance(getattr(cls, "code", None), str)
}}
print(json.dumps(codes))
"""

# The statuses the API answered before the catalog existed: the catalog must not move them.
API_STATUSES = {
    "source_not_found": 422,
    "unauthenticated": 401,
    "invalid_api_key": 401,
    "job_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "job_finished": 409,
    "idempotency_key_reused": 409,
    "job_not_succeeded": 409,
    "job_not_finished": 409,
    "result_not_local": 409,
    "result_purged": 410,
    "artifact_not_local": 409,
    "request_too_large": 413,
    "invalid_request": 422,
    "unknown_method": 422,
    "invalid_params": 422,
    "rank_required": 422,
    "invalid_samples": 422,
    "too_many_samples": 422,
    "unknown_module": 422,
    "invalid_spec": 422,
    "invalid_source": 422,
    "local_path_not_allowed": 422,
    "too_many_adapters": 422,
    "invalid_destination": 422,
    "webhook_url_not_allowed": 422,
    "queue_full": 429,
    "internal_error": 500,
    "store_unavailable": 503,
    "queue_unavailable": 503,
    "no_workers": 503,
}


@pytest.fixture(scope="module")
def class_codes() -> dict[str, str]:
    env = {**os.environ, "LORAMERGE_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", WALK.format(packages=PACKAGES)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_error_class_code_is_in_the_catalog(class_codes):
    assert "merge_core.errors.MergeError" in class_codes and "worker.errors.DestinationUnavailableError" in class_codes
    missing = {name: code for name, code in class_codes.items() if code not in set(ErrorCode)}
    assert not missing, f"error classes whose code the catalog (jobs/errors.py) lacks: {missing}"


def test_every_catalog_code_is_produced_somewhere(class_codes):
    """A code is some error class's, or the service names it (``ErrorCode.x``, or a literal "x" not yet
    replaced) outside the catalog module."""
    source = "\n".join(
        path.read_text() for package in PACKAGES for path in (ROOT / package).rglob("*.py") if path != ROOT / "jobs" / "errors.py"
    )
    produced = set(class_codes.values())
    unused = [code.value for code in ErrorCode if code not in produced and f"ErrorCode.{code.name}" not in source]
    unused = [code for code in unused if f'"{code}"' not in source]
    assert not unused, f"catalog codes nothing produces: {unused}"


def test_catalog_entries_are_consistent():
    for code in ErrorCode:
        assert code.value == code.name and code.meaning and "\n" not in code.meaning and "|" not in code.meaning
        assert code.where and set(code.where) <= set(Where), code
        if code.status is not None:
            assert Where.request in code.where, f"{code} has an HTTP status but is never an HTTP response"
        elif code is not ErrorCode.http_error:  # answered with the framework's own status
            assert Where.request not in code.where, f"{code} is an HTTP response without a status"


def test_api_statuses_are_unchanged():
    assert {code.value: code.status for code in ErrorCode if code.status is not None} == API_STATUSES


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- generated by python -m jobs.errors; tests/jobs/test_error_catalog.py checks it -->\n"
    assert readme.count(marker) == 1, "README.md lost the error table's marker"
    shown = readme.split(marker, 1)[1].split("\n\n", 1)[0] + "\n"
    assert shown == markdown_table(), "README's error table is stale: paste `python -m jobs.errors` under '## Error codes'"


def test_transient_errors_keep_their_own_codes():
    assert SourceUnavailableError.code == ErrorCode.source_unavailable
    assert DestinationUnavailableError.code == ErrorCode.destination_unavailable
    assert not hasattr(TransientError, "code")  # the marker carries no code a subclass could inherit by mistake
    for cls in (SourceUnavailableError, DestinationUnavailableError):
        assert issubclass(cls, TransientError) and issubclass(cls, MergeError) and cls.retryable
    for cls in (MergeError, SourceNotFoundError, SourceForbiddenError, MergeCancelledError, InvalidSourceError):
        assert not cls.retryable


@pytest.mark.parametrize(
    "error",
    [
        SourceUnavailableError("the Hub answered 503", source="org/name", status=503),
        DestinationUnavailableError("down", destination="s3://b/p"),
        InvalidSourceError("bad", field="adapters[0].source"),
        ApiError(ErrorCode.queue_full, "full", headers={"Retry-After": "7"}, limit=3),
    ],
    ids=type,
)
def test_errors_pickle_with_their_attributes(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and back.code == error.code and back.message == error.message
    assert back.details == error.details


def test_lease_lost_pickles():
    error = LeaseLostError("job", Fence(attempt=2, worker="host:1"), None)
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), str(back), back.fence) == (LeaseLostError, str(error), error.fence)


def test_api_error_needs_an_http_code():
    assert ApiError(ErrorCode.job_finished, "done").status == 409
    with pytest.raises(ValueError, match="worker_lost"):
        ApiError(ErrorCode.worker_lost, "a job code, not an HTTP answer")


def test_handlers_answer_with_the_catalog_status():
    app = FastAPI()
    install_error_handlers(app)
    raised = {
        "api": ApiError(ErrorCode.queue_full, "full", headers={"Retry-After": "7"}),
        "merge": InvalidSourceError("adapters[0].source: bad", field="adapters[0].source"),
        "job_code": SourceNotFoundError("raised during a request"),
        "redis": redis.ConnectionError("down"),
        "bug": RuntimeError("boom"),
    }

    @app.get("/raise/{kind}")
    def _raise(kind: str):
        raise raised[kind]

    client = TestClient(app, raise_server_exceptions=False)

    def answer(path: str, method: str = "GET"):
        response = client.request(method, path)
        return response.status_code, response.json()["error"]["code"], response.headers.get("retry-after")

    assert answer("/raise/api") == (429, "queue_full", "7")
    assert answer("/raise/merge") == (422, "invalid_source", None)
    assert answer("/raise/job_code") == (422, "source_not_found", None)  # a library error in a request: the input
    assert answer("/raise/redis") == (503, "store_unavailable", "5")
    assert answer("/raise/bug") == (500, "internal_error", None)
    assert answer("/nowhere") == (404, "not_found", None)
    assert answer("/raise/api", "POST") == (405, "method_not_allowed", None)
