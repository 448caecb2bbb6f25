"""Init jobs (OSRM, POST /v1/inits) from the client without a real service: the paths, headers and bodies
sent, the list of one kind, and `loramerge submit-init` / `jobs --kind init`.
(tests/e2e/test_client_inits.py runs them against the real stack.)"""

from __future__ import annotations

import json

import pytest

from app.cli import main as loramerge
from loramerge_client import Client, Job, QueueFullError
from loramerge_client.cli import main as standalone
from tests.loramerge_client.conftest import answer, error, job

BODY = {
    "base_model": "acme/base",
    "base_model_revision": "v1",
    "target_modules": ["q_proj"],
    "r": 4,
    "lora_alpha": 8,
    "tasks": [{"name": "a", "texts": ["w1"]}, {"name": "b", "texts": ["w2"]}],
}


def init_job(job_id: str = "init-1", status: str = "queued", **extra) -> dict:
    return job(job_id, status, kind="init", method="osrm", queue="gpu", **extra)


def test_submit_init_posts_to_inits_with_one_key_across_retries_and_the_hub_token(standin):
    standin.plan("POST", "/v1/inits", error(429, "queue_full", **{"Retry-After": "1"}), answer(202, init_job()))
    client = Client(standin.url, api_key="key-1", hub_token="hf_for_the_base")
    waits: list[float] = []
    client.sleep = waits.append
    submitted = client.submit_init(BODY)
    assert (submitted.id, submitted.kind, submitted.method) == ("init-1", "init", "osrm") and waits == [1.0]
    posts = standin.calls("POST", "/v1/inits")
    assert len(posts) == 2 and len({r.headers["idempotency-key"] for r in posts}) == 1
    assert posts[0].headers["x-hub-token"] == "hf_for_the_base" and posts[0].headers["authorization"] == "Bearer key-1"
    assert standin.last_json() == BODY and standin.calls("POST", "/v1/merges") == []


def test_submit_init_reads_a_spec_file_and_raises_typed_errors(standin, tmp_path):
    path = tmp_path / "init.json"
    path.write_text(json.dumps(BODY))
    standin.plan("POST", "/v1/inits", answer(202, init_job()), error(429, "queue_full", **{"Retry-After": "999"}))
    with Client(standin.url) as client:
        assert client.submit_init(path, idempotency_key="mine").id == "init-1"
        assert standin.calls("POST", "/v1/inits")[0].headers["idempotency-key"] == "mine"
        assert standin.last_json() == BODY
        with pytest.raises(QueueFullError):  # asks for more than max_retry_wait_s: raised at once
            client.submit_init(BODY)


def test_job_fields_of_an_init_job():
    pinned = {"source": "acme/base", "requested_revision": "v1", "revision": "a" * 40, "weight": 1.0}
    assert Job(init_job(base_model=pinned)).base_model == pinned and Job(init_job()).kind == "init"
    assert Job(job()).kind == "merge" and Job({"id": "x", "status": "queued"}).kind == "merge"  # older servers
    assert Job(job()).base_model is None


def test_list_of_init_jobs_follows_the_pages_of_v1_inits(standin):
    standin.plan(
        "GET",
        "/v1/inits",
        answer(200, {"jobs": [init_job("i-1")], "next_cursor": 1}),
        answer(200, {"jobs": [init_job("i-2")], "next_cursor": None}),
    )
    with Client(standin.url) as client:
        assert [j.id for j in client.list(kind="init", status="succeeded", limit=None)] == ["i-1", "i-2"]
        with pytest.raises(ValueError, match="kind must be one of merge, init"):
            client.list(kind="inits")
    queries = [dict(r.query_params) for r in standin.calls("GET", "/v1/inits")]
    assert queries == [
        {"limit": "100", "cursor": "0", "status": "succeeded"},
        {"limit": "100", "cursor": "1", "status": "succeeded"},
    ]
    assert standin.calls("GET", "/v1/merges") == []


@pytest.mark.parametrize("main", [loramerge, standalone], ids=["loramerge", "python -m loramerge_client"])
def test_cli_submit_init_prints_the_job(standin, tmp_path, capsys, monkeypatch, main):
    path = tmp_path / "init.json"
    path.write_text(json.dumps(BODY))
    standin.plan("POST", "/v1/inits", answer(202, init_job()))
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    assert main(["submit-init", str(path), "--server", standin.url, "--hub-token", "env:HF_TOKEN"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["kind"] == "init" and "hf_very_secret" not in out + err
    assert standin.calls("POST", "/v1/inits")[0].headers["x-hub-token"] == "hf_very_secret"
    assert standin.last_json() == BODY and standin.calls("POST", "/v1/merges") == []


def test_cli_submit_init_refused_and_failed(standin, tmp_path, capsys):
    path = tmp_path / "init.json"
    path.write_text(json.dumps(BODY))
    standin.plan("POST", "/v1/inits", error(422, "unknown_module", "target_modules: 'nope' matches no linear layer"))
    assert loramerge(["submit-init", str(path), "--server", standin.url]) == 2
    out, err = capsys.readouterr()
    assert err == "error [unknown_module]: target_modules: 'nope' matches no linear layer\n" and not out

    failed = init_job(status="failed", error={"code": "invalid_base_model", "message": "base_model: repository not found"})
    standin.plan("POST", "/v1/inits", answer(202, init_job()))
    standin.plan("GET", "/v1/merges/init-1", answer(200, failed))
    assert standalone(["submit-init", str(path), "--server", standin.url, "--wait", "--quiet"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error [invalid_base_model]: base_model: repository not found"


def test_cli_jobs_kind_init(standin, capsys):
    standin.plan("GET", "/v1/inits", answer(200, {"jobs": [init_job()], "next_cursor": None}))
    assert loramerge(["jobs", "--server", standin.url, "--kind", "init", "--limit", "5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "init-1" in table[1] and "osrm" in table[1]
    assert dict(standin.calls("GET", "/v1/inits")[0].query_params) == {"limit": "5", "cursor": "0"}
