"""`loramerge serve` with LORAMERGE_LOG_FORMAT=json and LORAMERGE_LOG_DIR: the API, the worker (and its
pool process) and the webhook worker each write their own file of JSON lines; a job's lines name it,
its tenant and its attempt; a per-job Hub token, the webhook secret and the API key appear nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from jobs.processes import die_with_parent
from support.factories import write_adapter_folder
from support.standins.hub import HubStandIn
from support.standins.receiver import WebhookReceiver
from support.standins.server import free_port
from tests.e2e.conftest import wait_terminal

API_KEY = "logs-key-5d1e0c9a77"
HUB_TOKEN = "hf_logs_private_token_Zq81"


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve not ready after {timeout} s")


def test_serve_writes_json_logs_per_process_without_secrets(tmp_path):
    logs = tmp_path / "logs"
    hub = HubStandIn(tokens={HUB_TOKEN})
    folder = write_adapter_folder(tmp_path / "adapter", seed=3)
    hub.add_repo("acme/private-lora", {p.name: p.read_bytes() for p in folder.iterdir()}, private=True)
    port = free_port()
    env = {
        **os.environ,
        "LORAMERGE_DATA_DIR": str(tmp_path / "data"),
        "LORAMERGE_LOG_DIR": str(logs),
        "LORAMERGE_LOG_FORMAT": "json",
        "LORAMERGE_API_KEYS": f"{API_KEY}:alice",
        "LORAMERGE_DEVICE": "cpu",
        "LORAMERGE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "LORAMERGE_SHUTDOWN_GRACE_S": "5",
        "HF_ENDPOINT": hub.start(),
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.err").open("wb"),
        preexec_fn=die_with_parent(signal.SIGTERM),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, serve)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
            secret = client.get("/v1/webhook-secret").json()["secret"]
            with WebhookReceiver(200) as receiver:
                receiver.secrets = [secret]
                spec = {
                    "method": "task_arithmetic",
                    "adapters": [{"source": "acme/private-lora"}],
                    "notify": {"url": receiver.url},
                }
                job = client.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN}).json()
                done = wait_terminal(client, job["id"], timeout=180)
                deadline = time.monotonic() + 60
                while not receiver.received:
                    assert time.monotonic() < deadline, "the webhook never arrived"
                    time.sleep(0.1)
                assert receiver.received[0].verified
        assert done["status"] == "succeeded", done
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        hub.stop()
    files = {p.name: p.read_text() for p in logs.iterdir()}
    assert {"api.log", "worker-0.log", "worker-0.pool0.log", "webhooks.log"} <= set(files), sorted(files)
    for name, text in files.items():
        for secret_text in (HUB_TOKEN, secret, secret.removeprefix("whsec_"), API_KEY):
            assert secret_text not in text, f"{name} holds a secret"
        for line in text.splitlines():
            assert isinstance(json.loads(line), dict), f"{name}: not one JSON object per line: {line!r}"
    job_lines = [json.loads(line) for line in files["worker-0.pool0.log"].splitlines()]
    job_lines = [line for line in job_lines if line.get("job_id") == job["id"]]
    assert job_lines and all(line["tenant"] == "alice" and line["attempt"] == 1 for line in job_lines)
    assert any("succeeded" in line["message"] for line in job_lines)
    api_lines = [json.loads(line) for line in files["api.log"].splitlines()]
    assert any(line.get("job_id") == job["id"] and line.get("tenant") == "alice" for line in api_lines)
    assert any(line["logger"].startswith("uvicorn") for line in api_lines)  # uvicorn's own lines too
