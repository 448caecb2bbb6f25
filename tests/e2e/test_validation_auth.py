"""Bad input is a 4xx with a stable code before anything is queued; auth and tenant isolation."""

from __future__ import annotations

import pytest

from app.schemas import MergeCreate
from app.submission import fingerprint, stored_spec
from jobs.queue import route
from jobs.request import MergeRequest
from jobs.settings import Settings
from merge_core.registry import validate_spec
from merge_core.spec import parse_spec
from support.factories import write_adapter_folder
from tests.e2e.conftest import wait_terminal


@pytest.fixture(scope="module")
def source(stack):
    return str(write_adapter_folder(stack.roots / "valid", seed=1))


def _post(client, **spec):
    return client.post("/v1/merges", json=spec)


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ({"method": "nope"}, 422, "unknown_method"),
        ({"method": "do_merging", "params": {"bogus": 1}}, 422, "invalid_params"),
        ({"method": "ties", "params": {"density": 2.0}, "output": {"rank": 4}}, 422, "invalid_params"),
        ({"method": "do_merging", "params": {"ortho_mu": 10.0}}, 422, "invalid_params"),
        ({"method": "ties"}, 422, "rank_required"),
        ({"method": "do_merging", "output": {"destination": "ftp://x/y"}}, 422, "invalid_destination"),
        ({"method": "do_merging", "output": {"rank": 0}}, 422, "invalid_request"),
        ({"method": "do_merging", "unknown_field": 1}, 422, "invalid_request"),
    ],
)
def test_spec_errors(alice, source, spec, status, code):
    body = {"adapters": [{"source": source}], **spec}
    response = alice.post("/v1/merges", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert response.json()["error"]["message"]


def test_the_request_is_the_library_spec_plus_service_fields():
    """One document, stored in JobRecord.spec as before; ``spec`` is the part merge_core runs."""
    body = {
        "method": "ties",
        "adapters": [{"source": "a/b", "weight": 2}],
        "params": {"density": 0.3},
        "output": {"rank": 4, "destination": "hf://x/y", "private": False},
    }
    stored = stored_spec(MergeCreate.model_validate(body))
    assert "notify" not in stored  # a service field left out stays out of the record
    library = {
        "kind": "adapter",
        "rank": 4,
        "dtype": "float32",
        "base_model": None,
        "base_model_revision": None,
        "full_weights": "error",
    }
    assert stored["output"] == {**library, "destination": "hf://x/y", "private": False}
    request = MergeRequest.model_validate(stored)
    assert (request.output.destination, request.output.private) == ("hf://x/y", False)
    assert request.spec.model_dump(mode="json") == {**stored, "output": library}
    assert fingerprint(request) == "94556b0a5d3de50a74cc277a02d321e4"  # unchanged: earlier Idempotency-Keys still match
    changed = MergeRequest.model_validate({**stored, "output": {**stored["output"], "full_weights": "first"}})
    assert fingerprint(changed) != fingerprint(request)  # a later field counts once it is set
    assert fingerprint(MergeRequest.model_validate({**stored, "base_model_check": "same_shapes"})) != fingerprint(request)


@pytest.mark.parametrize(
    ("method", "output", "queue"),
    [
        ("task_arithmetic", {}, "cpu"),
        ("task_arithmetic", {"rank": 4}, "gpu"),
        ("task_arithmetic", {"kind": "merged_model", "base_model": "/b"}, "gpu"),
        ("ties", {"rank": 4}, "gpu"),
    ],
)
def test_routing_reads_the_checked_spec(method, output, queue):
    resolved = validate_spec(parse_spec({"method": method, "adapters": [{"source": "/a"}], "output": output}))
    assert route(resolved, Settings(cpu_queue="cpu", gpu_queue="gpu")) == queue


def test_service_fields_are_stored_with_the_job(alice, source):
    output = {"destination": "local", "private": False}
    job = _post(alice, method="task_arithmetic", adapters=[{"source": source}], output=output).json()
    assert {k: job["spec"]["output"][k] for k in output} == output and job["queue"] == "cpu"
    assert wait_terminal(alice, job["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("not a hub id", "invalid_source"),
        ("org/../etc", "invalid_source"),
        ("s3://UPPER/bad", "invalid_source"),
        ("/etc", "local_path_not_allowed"),
    ],
)
def test_source_errors_name_the_field(alice, source, code):
    response = _post(alice, method="task_arithmetic", adapters=[{"source": source}])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code and "adapters[0].source" in error["message"]


@pytest.mark.parametrize(
    ("adapter", "output", "code", "expected"),
    [
        ({"source": "/roots/a\u0000b"}, {}, "invalid_source", "control characters"),
        ({"source": "/roots/a\nb"}, {}, "invalid_source", "control characters"),
        ({"source": "org/name\n"}, {}, "invalid_source", "not a Hub ID (org/name"),
        ({"source": "org/name", "revision": "main\n"}, {}, "invalid_source", "not a branch, tag or commit sha"),
        ({"source": "org/name"}, {"destination": "hf://org/name\n"}, "invalid_destination", "'hf://org/name'"),
        ({"source": "org/name"}, {"destination": "hf://a..b/c..d"}, "invalid_destination", "no '..' or '--'"),
        ({"source": "org/name"}, {"destination": "hf://a--b/c"}, "invalid_destination", "no '..' or '--'"),
        ({"source": "org/name"}, {"destination": "s3://bucket/out\n"}, "invalid_destination", "s3://bucket/prefix"),
        ({"source": "/roots/a\x85b"}, {}, "invalid_source", "control characters"),
        ({"source": "/roots/a\u2028b"}, {}, "invalid_source", "control characters"),
        ({"source": "org/name"}, {"kind": "merged_model", "base_model": "/roots/b\u0000"}, "invalid_source", "control"),
    ],
)
def test_nul_and_trailing_newlines_are_422(alice, adapter, output, code, expected):
    """Issue 11: a NUL was a 500 (dropped connection); `$` let a trailing newline through."""
    response = _post(alice, method="task_arithmetic", adapters=[adapter], output=output)
    assert (response.status_code, response.json()["error"]["code"]) == (422, code), response.text
    assert expected in response.json()["error"]["message"]


def test_symlink_and_dotdot_escapes_are_refused(stack, alice, tmp_path):
    outside = write_adapter_folder(tmp_path / "outside", seed=3)
    link = stack.roots / "escape-link"
    link.symlink_to(outside, target_is_directory=True)
    for source in (str(link), f"{stack.roots}/../{tmp_path.name}/outside"):
        response = _post(alice, method="task_arithmetic", adapters=[{"source": source}])
        assert response.json()["error"]["code"] == "local_path_not_allowed", source


def test_limits_adapters_duplicates_and_body_size(stack, alice, source):
    many = [{"source": source, "weight": 1 + i} for i in range(stack.settings.max_adapters_per_job + 1)]
    assert _post(alice, method="task_arithmetic", adapters=many).json()["error"]["code"] == "too_many_adapters"
    twice = [{"source": source}, {"source": source}]
    assert _post(alice, method="task_arithmetic", adapters=twice).json()["error"]["code"] == "invalid_spec"
    huge = alice.post(
        "/v1/merges",
        content=b"{" + b" " * (stack.settings.max_request_bytes + 10) + b"}",
        headers={"content-type": "application/json"},
    )
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")
    garbage = alice.post("/v1/merges", content=b"{not json", headers={"content-type": "application/json"})
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (422, "invalid_request")


def test_nothing_is_stored_for_rejected_jobs(stack, alice):
    before = alice.get("/v1/merges", params={"limit": 100}).json()["jobs"]
    _post(alice, method="nope", adapters=[{"source": "/etc"}])
    assert alice.get("/v1/merges", params={"limit": 100}).json()["jobs"] == before


def test_authentication_is_required(stack):
    with stack.client(None) as anonymous:
        response = anonymous.get("/v1/merges")
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
    with stack.client(None, Authorization="Bearer wrong-key") as wrong:
        assert wrong.get("/v1/merges").json()["error"]["code"] == "invalid_api_key"
    with stack.client(None) as anonymous:  # probes stay open for orchestrators
        assert anonymous.get("/healthz").status_code == 200


def test_tenants_cannot_see_each_others_jobs(stack, alice, bob, source):
    job = _post(alice, method="task_arithmetic", adapters=[{"source": source}]).json()
    wait_terminal(alice, job["id"])
    for response in (
        bob.get(f"/v1/merges/{job['id']}"),
        bob.delete(f"/v1/merges/{job['id']}"),
        bob.get(f"/v1/merges/{job['id']}/artifact"),
    ):
        assert (response.status_code, response.json()["error"]["code"]) == (404, "job_not_found")
    assert job["id"] not in {j["id"] for j in bob.get("/v1/merges", params={"limit": 100}).json()["jobs"]}
    assert alice.get(f"/v1/merges/{job['id']}/artifact").status_code == 200


def test_idempotency_key_returns_the_same_job(stack, alice, bob, source):
    spec = {"method": "task_arithmetic", "adapters": [{"source": source}]}
    first = alice.post("/v1/merges", json=spec, headers={"Idempotency-Key": "req-42"})
    again = alice.post("/v1/merges", json=spec, headers={"Idempotency-Key": "req-42"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other_body = alice.post("/v1/merges", json={**spec, "params": {"scaling": 0.5}}, headers={"Idempotency-Key": "req-42"})
    assert (other_body.status_code, other_body.json()["error"]["code"]) == (409, "idempotency_key_reused")
    other_tenant = bob.post("/v1/merges", json=spec, headers={"Idempotency-Key": "req-42"})
    assert other_tenant.status_code == 202 and other_tenant.json()["id"] != first.json()["id"]
    wait_terminal(alice, first.json()["id"])
