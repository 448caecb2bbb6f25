"""The client's typed errors are the service's catalog: one class per code, in step with jobs.errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import loramerge_client
from jobs.errors import ErrorCode
from loramerge_client import errors
from loramerge_client._catalog import BY_CODE as CATALOG_CLASSES
from loramerge_client.errors import render_catalog

CATALOG_FILE = Path(errors.__file__).with_name("_catalog.py")
RENEW = (
    ".venv/bin/python -c 'from jobs.errors import ErrorCode; from loramerge_client.errors import render_catalog; "
    'print(render_catalog(ErrorCode), end="")\' > loramerge_client/_catalog.py'
)


def test_generated_catalog_is_current():
    assert CATALOG_FILE.read_text() == render_catalog(ErrorCode), f"loramerge_client/_catalog.py is stale; renew it: {RENEW}"


def test_one_class_per_code_with_its_status():
    assert set(CATALOG_CLASSES) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        cls = CATALOG_CLASSES[code.value]
        assert issubclass(cls, loramerge_client.LoramergeError) and cls.code == code.value and cls.http_status == code.status
        assert getattr(loramerge_client, cls.__name__) is cls  # importable from the package
    assert loramerge_client.JobNotFoundError.code == "job_not_found"
    assert loramerge_client.JobCancelledError.code == "cancelled"
    assert loramerge_client.InternalError.code == "internal_error"


def test_client_codes_do_not_shadow_the_catalog():
    assert not {cls.code for cls in errors.CLIENT_ERRORS} & {code.value for code in ErrorCode}
    assert issubclass(errors.WaitTimeoutError, TimeoutError)


def test_error_for_builds_the_typed_error_and_keeps_unknown_codes():
    error = errors.error_for("invalid_params", "density: out of range", details={"fields": ["density"]}, status=422)
    assert type(error) is loramerge_client.InvalidParamsError
    assert (error.code, error.message, error.details, error.status, error.job) == (
        "invalid_params",
        "density: out of range",
        {"fields": ["density"]},
        422,
        None,
    )
    assert str(error) == "[invalid_params] density: out of range"
    newer = errors.error_for("code_of_a_newer_server", "?", status=418)
    assert type(newer) is loramerge_client.LoramergeError and newer.code == "code_of_a_newer_server"
    assert errors.error_for("queue_full", "full", status=429, retry_after=7.0).retryable


def test_errors_pickle_with_their_attributes():
    error = errors.error_for("queue_full", "full", status=429, retry_after=7.0, details={"limit": 3})
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and back.__dict__ == error.__dict__ and str(back) == str(error)
