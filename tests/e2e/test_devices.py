"""The job says which device merged it, and /metrics which device each live pool process holds."""

from tests.e2e.conftest import wait_terminal
from tests.e2e.test_jobs import _adapters


def test_the_job_and_the_metrics_name_the_device(stack, alice):
    job = alice.post(
        "/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": s} for s in _adapters(stack, "dev", n=1)]}
    )
    done = wait_terminal(alice, job.json()["id"])
    assert done["status"] == "succeeded" and done["device"] == "cpu", done
    metrics = alice.get("/metrics").text
    assert 'loramerge_worker_device{device="cpu",process="' in metrics
