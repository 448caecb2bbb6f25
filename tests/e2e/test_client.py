"""loramerge_client against the real stack (Redis, Celery worker, API over HTTP): submit, wait, download,
list, cancel, events, typed errors, and `loramerge submit --wait --out` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.main import create_app
from loramerge_client import (
    Client,
    InvalidApiKeyError,
    InvalidParamsError,
    JobCancelledError,
    JobFinishedError,
    JobNotFoundError,
    JobNotSucceededError,
    NotFoundError,
    SourceNotFoundError,
    UnauthenticatedError,
    UnknownMethodError,
)
from support.factories import write_adapter_folder
from support.standins.server import ThreadedServer
from tests.e2e.conftest import KEYS

ROOT = Path(__file__).parents[2]


def _sources(stack, name: str, n: int = 2) -> list[str]:
    return [str(write_adapter_folder(stack.roots / f"client-{name}-{i}", seed=10 + i)) for i in range(n)]


def _spec(stack, name: str, **extra) -> dict:
    return {"method": "task_arithmetic", "adapters": [{"source": s} for s in _sources(stack, name)], **extra}


@pytest.fixture
def client(stack):
    with Client(stack.api_url, api_key=KEYS["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def paused_url(stack):
    """A second API on the same Redis whose queues no worker consumes: its jobs stay queued."""
    settings = stack.settings.model_copy(update={"cpu_queue": "client-paused-cpu", "gpu_queue": "client-paused-gpu"})
    server = ThreadedServer(create_app(settings))
    yield server.start()
    server.stop()


def test_submit_wait_get_list_download(stack, client, tmp_path):
    job = client.submit(_spec(stack, "basic"))
    assert job.status == "queued" and not job.replayed
    done = client.wait(job, timeout=90, progress=True)  # the bar goes to stderr
    assert done.status == "succeeded" and done.progress["stage"] == "done"
    assert client.get(job.id).data == done.data
    assert job.id in [j.id for j in client.list(limit=5)]
    assert job.id in [j.id for j in client.list(status="succeeded", limit=None)]
    assert all(j.status == "failed" for j in client.list(status="failed", limit=None))

    out = client.download(done, tmp_path / "merged")
    served = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert served == {f["path"]: f["size"] for f in done.result["files"]}
    stored = stack.settings.results_dir / job.id / "adapter_model.safetensors"
    assert (out / "adapter_model.safetensors").read_bytes() == stored.read_bytes()
    assert client.download(job.id, tmp_path / "by-id").joinpath("adapter_config.json").is_file()  # by id alone


def test_idempotency_key_replays_the_same_job(stack, client):
    spec = _spec(stack, "idem")
    first = client.submit(spec, idempotency_key="client-e2e-1")
    again = client.submit(spec, idempotency_key="client-e2e-1")
    assert again.id == first.id and again.replayed and not first.replayed
    assert client.submit(spec).id != first.id  # a fresh key per call: a second job
    client.wait(first, timeout=90, progress=False)


def test_typed_errors(stack, client):
    with pytest.raises(InvalidParamsError) as caught:
        client.submit({**_spec(stack, "bad"), "params": {"bogus": 1}})
    assert (caught.value.code, caught.value.status) == ("invalid_params", 422) and "bogus" in caught.value.message
    with pytest.raises(UnknownMethodError):
        client.submit({**_spec(stack, "bad"), "method": "nope"})
    with pytest.raises(JobNotFoundError) as caught:
        client.get("no-such-job")
    assert caught.value.status == 404 and caught.value.job is None
    with Client(stack.api_url, api_key="") as anonymous, pytest.raises(UnauthenticatedError) as caught:
        anonymous.list()
    assert caught.value.status == 401
    with Client(stack.api_url, api_key="wrong-key") as wrong, pytest.raises(InvalidApiKeyError):
        wrong.get("anything")
    with Client(stack.api_url, api_key=KEYS["bob"]) as bob, pytest.raises(JobNotFoundError):
        bob.get(client.list(limit=1)[0].id)  # another tenant's job


def test_a_failed_job_raises_its_code_with_the_job(stack, client):
    folder = stack.roots / "client-no-weights"  # accepted (the folder is there), fails in the worker
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
    job = client.submit({"method": "task_arithmetic", "adapters": [{"source": str(folder)}]})
    with pytest.raises(SourceNotFoundError) as caught:
        client.wait(job, timeout=90, progress=False)
    assert caught.value.job.status == "failed" and caught.value.job.id == job.id and caught.value.status is None
    assert client.wait(job, progress=False, raise_on_failure=False).error["code"] == "source_not_found"
    with pytest.raises(JobNotSucceededError):
        client.download(job, stack.roots / "never")
    with pytest.raises(JobFinishedError):
        client.cancel(job)


def test_cancel_a_queued_job(stack, paused_url):
    with Client(paused_url, api_key=KEYS["alice"]) as paused:
        job = paused.submit(_spec(stack, "cancel"))
        assert paused.get(job).status == "queued"
        assert paused.cancel(job).status == "cancelled"
        with pytest.raises(JobCancelledError) as caught:
            paused.wait(job, timeout=10, progress=False)
        assert caught.value.job.status == "cancelled"


def test_events_follow_the_job_to_its_outcome(stack, client):
    job = client.submit(_spec(stack, "events"))
    try:
        client.event_page(job)
    except NotFoundError:
        pytest.skip("the server has no events route")
    events = list(client.events(job))
    types = [e.type for e in events]
    assert types[0] == "job.accepted" and types[-1] == "job.succeeded" and "job.started" in types
    assert events[-1].terminal and events[-1].data["status"] == "succeeded"
    assert [e.id for e in client.events(job, after=events[0].id)] == [e.id for e in events[1:]]
    page, more = client.event_page(job, limit=2)
    assert [e.id for e in page] == [e.id for e in events[:2]] and more


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def test_cli_submit_wait_out(stack, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(stack, "cli")))
    env = {"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": KEYS["alice"]}
    started = time.monotonic()
    done = _cli("submit", str(spec), "--wait", "--out", str(tmp_path / "merged"), env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "succeeded" and shown["out"] == str(tmp_path / "merged")
    assert {f["path"] for f in shown["result"]["files"]} == {
        p.relative_to(tmp_path / "merged").as_posix() for p in (tmp_path / "merged").rglob("*") if p.is_file()
    }
    assert KEYS["alice"] not in done.stdout + done.stderr
    assert time.monotonic() - started < 120

    status = _cli("status", shown["id"], "--server", stack.api_url, env={"LORAMERGE_API_KEY": KEYS["alice"]})
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == shown["id"]
    listed = _cli("jobs", "--json", "--limit", "3", env=env)
    assert listed.returncode == 0 and shown["id"] in [j["id"] for j in json.loads(listed.stdout)]
    finished = _cli("cancel", shown["id"], env=env)
    assert (finished.returncode, finished.stderr.strip()) == (2, f"error [job_finished]: job {shown['id']} already succeeded")


def test_cli_errors(stack, tmp_path):
    env = {"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": KEYS["alice"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_spec(stack, "cli-bad"), "params": {"bogus": 1}}))
    refused = _cli("submit", str(bad), env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("error [invalid_params]: ") and not refused.stdout
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"method": "task_arithmetic", "adapters": [{"source": str(stack.roots / "client-gone")}]}))
    refused = _cli("submit", str(missing), "--wait", "--quiet", env=env)  # no such folder: refused at submission
    assert refused.returncode == 2 and refused.stderr.splitlines()[-1].startswith("error [source_not_found]: ")
    folder = stack.roots / "client-cli-no-weights"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
    doomed = tmp_path / "doomed.json"
    doomed.write_text(json.dumps({"method": "task_arithmetic", "adapters": [{"source": str(folder)}]}))
    failed = _cli("submit", str(doomed), "--wait", "--quiet", env=env)  # accepted, then the job fails
    assert failed.returncode == 1 and failed.stderr.splitlines()[-1].startswith("error [source_not_found]: ")
    unauthenticated = _cli("jobs", env={"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": ""})
    assert unauthenticated.returncode == 2 and unauthenticated.stderr.startswith("error [unauthenticated]: ")
