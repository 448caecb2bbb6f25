"""A tenant deletes a finished job's result through the real stack: `DELETE ...?purge=true` removes the
folder, the job says `purged`, the artifact answers 410, the event log has `job.purged`; a job still
running is refused with 409, another tenant's job is a 404."""

from __future__ import annotations

import json
import time

import pytest

from support.factories import write_adapter_folder
from tests.e2e.conftest import wait_terminal
from tests.e2e.test_cancel import SLOW_SHAPES


def test_a_tenant_purges_a_finished_jobs_result(stack, alice, bob):
    source = str(write_adapter_folder(stack.roots / "purge-me", seed=11))
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded" and done["purged"] is False
    folder = stack.settings.results_dir / job["id"]
    assert folder.is_dir()

    assert bob.delete(f"/v1/merges/{job['id']}?purge=true").status_code == 404
    assert folder.is_dir()

    purged = alice.delete(f"/v1/merges/{job['id']}?purge=true")
    assert purged.status_code == 200, purged.text
    body = purged.json()
    assert body["status"] == "succeeded" and body["purged"] is True and body["purged_by"] == "tenant"
    assert body["result"]["artifact_url"] is None and body["result"]["files"]  # the record of what it was stays
    assert not folder.exists()

    artifact = alice.get(f"/v1/merges/{job['id']}/artifact")
    assert artifact.status_code == 410 and artifact.json()["error"]["code"] == "result_purged"
    assert "purged by tenant" in artifact.json()["error"]["message"]
    again = alice.delete(f"/v1/merges/{job['id']}?purge=true")
    assert again.status_code == 200 and again.json()["purged_at"] == body["purged_at"]
    types = [event["type"] for event in alice.get(f"/v1/merges/{job['id']}/events").json()["data"]]
    assert types[-2:] == ["job.succeeded", "job.purged"]


def test_purging_a_running_job_is_refused_until_it_ends(stack, alice):
    sources = [str(write_adapter_folder(stack.roots / f"purge-slow-{i}", shapes=SLOW_SHAPES, rank=8, seed=i)) for i in range(2)]
    job = alice.post(
        "/v1/merges", json={"method": "ties", "adapters": [{"source": s} for s in sources], "output": {"rank": 8}}
    ).json()
    deadline = time.monotonic() + 60
    while (state := alice.get(f"/v1/merges/{job['id']}").json())["status"] == "queued":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    refused = alice.delete(f"/v1/merges/{job['id']}?purge=true")  # 600 modules of TIES: seconds of work left
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "job_not_finished" and "cancel it first" in error["message"]
    assert alice.delete(f"/v1/merges/{job['id']}").status_code == 202
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "cancelled" and done["purged"] is False
    purged = alice.delete(f"/v1/merges/{job['id']}?purge=true")
    assert purged.status_code == 200 and purged.json()["purged"] is True, done


def test_the_workers_report_their_disk_use_in_metrics(stack, alice):
    """The stack's worker runs retention in its housekeeping: its data dir shows in /metrics."""
    deadline = time.monotonic() + 60
    while True:
        text = alice.get("/metrics").text
        lines = [line for line in text.splitlines() if line.startswith("loramerge_disk_usage_bytes{")]
        if any(
            line.startswith('loramerge_disk_usage_bytes{area="results",data_dir="') and f':{stack.settings.data_dir}"}}' in line
            for line in lines
        ):
            break
        assert time.monotonic() < deadline, f"no disk report for {stack.settings.data_dir}: {lines}"
        time.sleep(0.5)
    assert 'loramerge_retention_removed_total{area="staging"}' in text


def test_the_client_and_the_remote_cli_purge(stack, tmp_path):
    from loramerge_client import Client, JobNotFinishedError
    from tests.e2e.conftest import KEYS
    from tests.e2e.test_client import _cli

    source = str(write_adapter_folder(stack.roots / "purge-client", seed=12))
    with Client(stack.api_url, api_key=KEYS["alice"]) as client:
        first = client.wait(client.submit({"method": "task_arithmetic", "adapters": [{"source": source}]}), timeout=120)
        assert client.purge(first).purged and not (stack.settings.results_dir / first.id).exists()
        second = client.submit({"method": "task_arithmetic", "adapters": [{"source": source}]})
        if client.get(second).status in ("queued", "running"):
            with pytest.raises(JobNotFinishedError):
                client.purge(second)
        client.wait(second, timeout=120)
    env = {"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": KEYS["alice"]}
    done = _cli("purge", second.id, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["purged_by"] == "tenant" and not (stack.settings.results_dir / second.id).exists()
    unknown = _cli("purge", "0" * 32, env=env)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error [job_not_found]")
