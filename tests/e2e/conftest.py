"""One real stack for the end-to-end tests: a Redis server, a Celery worker process, the API over real
HTTP, a Hub stand-in (via HF_ENDPOINT) and moto's S3 server. Started once per session (~10 s)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from app.embedded import embedded_stack
from app.main import create_app
from jobs.records import TERMINAL
from jobs.settings import Settings
from support.standins.hub import HubStandIn
from support.standins.server import ThreadedServer, free_port

KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-9876543210"}
HUB_TOKEN = "hf_secret_job_token_7Qx9Lm"


class Stack:
    def __init__(self, settings: Settings, api_url: str, hub: HubStandIn, s3_url: str, roots: Path, worker_log: Path) -> None:
        self.settings, self.api_url, self.hub, self.s3_url, self.roots, self.worker_log = (
            settings,
            api_url,
            hub,
            s3_url,
            roots,
            worker_log,
        )

    def client(self, tenant: str = "alice", **headers) -> httpx.Client:
        auth = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.api_url, headers={**auth, **headers}, timeout=30)


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/merges/{job_id}").json()
        if job["status"] in {s.value for s in TERMINAL}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    base = tmp_path_factory.mktemp("service")
    roots = base / "roots"
    roots.mkdir()
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(aws)
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{moto_port}"
    hub = HubStandIn(tokens={HUB_TOKEN})
    hub_url = hub.start()
    settings = Settings(
        data_dir=base / "data",
        local_roots=[roots],
        api_keys=",".join(f"{key}:{tenant}" for tenant, key in KEYS.items()),
        max_adapters_per_job=8,
        s3_endpoint_url=s3_url,
        retry_backoff_s=0.2,
        device="cpu",
        webhook_allowed_hosts=["127.0.0.1"],  # the receivers are loopback servers; nothing else is allowed
        webhook_retry_window_s=6.0,
        webhook_backoff_s=0.2,
        events_keepalive_s=0.5,
    )
    worker_env = {
        **aws,
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(base / "hf-home"),
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
    worker_log = base / "worker.log"
    with worker_log.open("wb") as log, embedded_stack(settings, workers=1, worker_log=log, extra_env=worker_env) as running:
        api = ThreadedServer(create_app(running))
        api_url = api.start()
        deadline = time.monotonic() + 90
        while httpx.get(f"{api_url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "worker never became ready:\n" + worker_log.read_text()[-3000:]
            time.sleep(0.2)
        yield Stack(running, api_url, hub, s3_url, roots, worker_log)
        api.stop()
    hub.stop()
    moto.stop()


@pytest.fixture
def alice(stack):
    with stack.client("alice") as client:
        yield client


@pytest.fixture
def bob(stack):
    with stack.client("bob") as client:
        yield client
