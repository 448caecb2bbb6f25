"""Cancel: a queued job never runs; a running job stops at a module boundary and leaves nothing;
a full queue answers 429 with Retry-After."""

from __future__ import annotations

import time

import pytest

from app.main import create_app
from jobs.records import JobStatus
from jobs.store import JobStore, connect
from support.factories import write_adapter_folder
from support.standins.server import ThreadedServer
from tests.e2e.conftest import KEYS, wait_terminal
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


def test_cancel_lands_inside_one_long_batch_within_seconds(stack, alice):
    """All modules in one batch and 10^4 orthogonalization steps (about 10 s here): the cancel is honoured
    at the next few steps, not after the batch, and progress moves through the steps meanwhile."""
    shapes = {f"model.layers.{i}.mlp.up_proj": (256, 256) for i in range(8)}
    sources = [str(write_adapter_folder(stack.roots / f"ortho-{i}", shapes=shapes, rank=16, seed=10 + i)) for i in range(3)]
    spec = {"method": "do_merging", "adapters": [{"source": s} for s in sources], "params": {"ortho_steps": 10_000}}
    job = alice.post("/v1/merges", json=spec).json()
    deadline = time.monotonic() + 60
    seen = set()
    while len(seen) < 2:  # two different step counts: progress moves inside the batch
        state = alice.get(f"/v1/merges/{job['id']}").json()
        if state["progress"]["stage"] == "orthogonalize":
            seen.add(state["progress"]["done"])
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.05)
    asked = time.monotonic()
    assert alice.delete(f"/v1/merges/{job['id']}").status_code == 202
    done = wait_terminal(alice, job["id"], timeout=30)
    assert done["status"] == "cancelled" and done["attempts"] == 1, done
    assert time.monotonic() - asked < 5


def test_a_cancel_the_merge_cannot_honour_ends_the_process(tmp_path, stack):
    """A single operation that never reaches a check (simulated: the merge thread sleeps): the lease
    keeper records the job cancelled ``cancel_grace_s`` after the request and ends the process."""
    import subprocess
    import sys

    from jobs.records import JobRecord

    store = JobStore(connect(stack.settings.redis_url), finished_ttl_s=600)
    record, _ = store.create(JobRecord(tenant="alice", spec={"method": "x"}, queue="nowhere"), max_queued=10_000)
    program = f"""
import time
from jobs.lease import worker_id
from jobs.store import JobStore, connect
from jobs.settings import Settings
from worker.attempt import Attempt
settings = Settings(data_dir={str(tmp_path)!r}, cancel_grace_s=1, job_lease_s=8)
store = JobStore(connect({stack.settings.redis_url!r}), finished_ttl_s=600)
claimed = store.claim({record.id!r}, worker_id(), lease_s=8)
with Attempt(store, claimed, settings, {str(tmp_path / "staging")!r}):
    print("claimed", flush=True)
    time.sleep(60)  # one long uninterruptible operation
print("not stopped")
"""
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "claimed"
    store.request_cancel(record.id, tenant="alice")
    asked = time.monotonic()
    assert child.wait(timeout=20) == 3
    assert time.monotonic() - asked < 8
    done = store.get(record.id)
    assert done.status == JobStatus.cancelled and done.progress.stage == "cancelled"
