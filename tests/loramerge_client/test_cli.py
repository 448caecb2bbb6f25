"""The remote commands' contract without a real service: exit statuses, error lines, the token kept quiet.
(tests/e2e/test_client.py runs `loramerge submit --wait --out` against the real stack.)"""

from __future__ import annotations

import json

import pytest

from app.cli import main as loramerge
from loramerge_client.cli import main as standalone
from tests.loramerge_client.conftest import answer, error, job


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"method": "do_merging", "adapters": [{"source": "org/private-lora"}]}))
    return path


@pytest.mark.parametrize("main", [loramerge, standalone], ids=["loramerge", "python -m loramerge_client"])
def test_submit_prints_the_job_and_sends_the_token_without_showing_it(standin, spec, capsys, monkeypatch, main):
    standin.plan("POST", "/v1/merges", answer(202, job()))
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    monkeypatch.setenv("LORAMERGE_API_KEY", "key-from-env")
    assert main(["submit", str(spec), "--server", standin.url, "--hub-token", "env:HF_TOKEN"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["id"] == "job-1" and "hf_very_secret" not in out + err
    request = standin.calls("POST", "/v1/merges")[0]
    assert request.headers["x-hub-token"] == "hf_very_secret" and request.headers["authorization"] == "Bearer key-from-env"
    assert standin.last_json() == json.loads(spec.read_text())


def test_no_hub_token_unless_asked(standin, spec, monkeypatch):
    standin.plan("POST", "/v1/merges", answer(202, job()))
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    assert standalone(["submit", str(spec), "--server", standin.url]) == 0
    assert "x-hub-token" not in standin.calls("POST", "/v1/merges")[0].headers


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["submit", "missing.json"], "error [merge_error]: spec file 'missing.json' not found"),
        (["submit", "{spec}", "--hub-token", "env:NO_SUCH_VARIABLE_HERE"], "error [invalid_spec]: --hub-token env:NO_SUCH_"),
        (["submit", "{spec}", "--out", "{nonempty}"], "error [invalid_spec]: output"),
        (["status", "nope"], "error [job_not_found]: no job 'nope'"),
    ],
)
def test_client_errors_exit_2_with_one_line(standin, spec, tmp_path, capsys, argv, line):
    standin.plan("GET", "/v1/merges/nope", error(404, "job_not_found", "no job 'nope' for this API key"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    argv = [a.format(spec=spec, nonempty=tmp_path / "full") for a in argv]
    assert loramerge([*argv, "--server", standin.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1
    assert standin.calls("POST", "/v1/merges") == []  # nothing was submitted


def test_a_failed_job_exits_1(standin, spec, capsys):
    failed = job(status="failed", error={"code": "source_not_found", "message": "no such repo"})
    standin.plan("POST", "/v1/merges", answer(202, job()))
    standin.plan("GET", "/v1/merges/job-1", answer(200, failed))
    assert loramerge(["submit", str(spec), "--server", standin.url, "--wait", "--quiet"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error [source_not_found]: no such repo"


def test_a_wait_past_its_timeout_exits_2_and_the_job_goes_on(standin, spec, capsys):
    standin.plan("POST", "/v1/merges", answer(202, job()))
    standin.plan("GET", "/v1/merges/job-1", answer(200, job(status="running")))
    assert standalone(["submit", str(spec), "--server", standin.url, "--wait", "--timeout", "0.3", "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error [wait_timeout]: job job-1 is still running after 0.3 s"
    assert standin.calls("DELETE", "/v1/merges/job-1") == []


def test_jobs_lists_a_table_or_json(standin, capsys):
    done = job("job-2", "failed", error={"code": "worker_lost", "message": "gone"})
    standin.plan("GET", "/v1/merges", answer(200, {"jobs": [job(), done], "next_cursor": None}))
    assert loramerge(["jobs", "--server", standin.url, "--status", "failed", "--limit", "5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("ID") and "job-1" in table[1] and "worker_lost" in table[2]
    assert dict(standin.calls("GET", "/v1/merges")[0].query_params) == {"status": "failed", "limit": "5", "cursor": "0"}
    assert loramerge(["jobs", "--server", standin.url, "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == ["job-1", "job-2"]
