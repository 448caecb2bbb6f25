"""Cancel: a queued job never runs; a running job stops at a module boundary and leaves nothing;
a full queue answers 429 with Retry-After."""

from __future__ import annotations

import time

import pytest

from app.main import create_app
from jobs.records import JobStatus
from jobs.store import JobStore, connect
from tests.factories import write_adapter_folder
from tests.service.conftest import KEYS, wait_terminal
from tests.standins.server import ThreadedServer
from worker.runner import JobRunner

SLOW_SHAPES = {f"model.layers.{i}.mlp.up_proj": (512, 512) for i in range(600)}


@pytest.fixture(scope="module")
def paused(stack):
    """A second API on the same Redis whose queues no worker consumes: its jobs stay queued."""
    settings = stack.settings.model_copy(update={"cpu_queue": "paused-cpu", "gpu_queue": "paused-gpu", "max_queued_jobs": 3})
    server = ThreadedServer(create_app(settings))
    url = server.start()
    yield url, settings
    server.stop()


def test_cancelled_queued_job_never_runs(stack, paused):
    import httpx

    url, settings = paused
    source = str(write_adapter_folder(stack.roots / "queued", seed=1))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['alice']}"}) as client:
        job = client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
        time.sleep(0.5)
        assert client.get(f"/v1/merges/{job['id']}").json()["status"] == "queued"
        cancelled = client.delete(f"/v1/merges/{job['id']}")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    # The message is still on its queue; delivering it now must not run the job.
    runner = JobRunner(JobStore(connect(settings.redis_url), finished_ttl_s=60), settings)
    assert runner.run(job["id"]) is None
    record = runner.store.get(job["id"])
    assert record.status == JobStatus.cancelled and record.attempts == 0
    assert not (settings.results_dir / job["id"]).exists()


def test_full_queue_answers_429_with_retry_after(stack, paused):
    import httpx

    url, settings = paused
    source = str(write_adapter_folder(stack.roots / "full", seed=2))
    accepted = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['bob']}"}) as client:
        for i in range(settings.max_queued_jobs + 1):
            response = client.post(
                "/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source, "weight": 1 + i}]}
            )
            if response.status_code == 429:
                break
            accepted.append(response.json()["id"])
        assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"
        assert response.headers["retry-after"] == str(settings.retry_after_s)
        assert len(accepted) <= settings.max_queued_jobs
        for job_id in accepted:
            assert client.delete(f"/v1/merges/{job_id}").json()["status"] == "cancelled"


def test_cancel_running_job_stops_and_leaves_no_result(stack, alice):
    sources = [str(write_adapter_folder(stack.roots / f"slow-{i}", shapes=SLOW_SHAPES, rank=8, seed=i)) for i in range(3)]
    job = alice.post(
        "/v1/merges", json={"method": "ties", "adapters": [{"source": s} for s in sources], "output": {"rank": 8}}
    ).json()
    deadline = time.monotonic() + 60
    while True:
        state = alice.get(f"/v1/merges/{job['id']}").json()
        if state["status"] == "running" and state["progress"]["stage"] == "merge" and state["progress"]["done"] > 0:
            break
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.05)
    response = alice.delete(f"/v1/merges/{job['id']}")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "cancelled", done
    assert done["progress"]["stage"] == "cancelled"
    assert not (stack.settings.results_dir / job["id"]).exists()
    assert not (stack.settings.staging_dir / job["id"]).exists()
    finished = alice.delete(f"/v1/merges/{job['id']}")
    assert finished.status_code == 202 and finished.json()["status"] == "cancelled"


def test_cancel_finished_job_is_409(stack, alice):
    source = str(write_adapter_folder(stack.roots / "finished", seed=4))
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
    wait_terminal(alice, job["id"])
    response = alice.delete(f"/v1/merges/{job['id']}")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "job_finished")
