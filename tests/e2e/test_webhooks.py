"""Webhooks through the real stack: the API, the merge worker, the webhook worker (its own Celery
process and queue) and receivers that are real HTTP servers in threads, checking signatures."""

from __future__ import annotations

import json
import time

import httpx

from jobs.records import JobRecord, NotifyTarget
from jobs.store import JobStore, connect
from jobs.webhook_signing import verify_webhook
from support.factories import write_adapter_folder
from support.standins.receiver import WebhookReceiver
from support.standins.server import ThreadedServer, free_port
from tests.e2e.conftest import wait_terminal


def _spec(stack, name: str, notify: dict | None) -> dict:
    source = str(write_adapter_folder(stack.roots / f"wh-{name}", seed=1))
    spec = {"method": "task_arithmetic", "adapters": [{"source": source}]}
    return {**spec, "notify": notify} if notify else spec


def _deliveries(client: httpx.Client, job_id: str, *, settled: int, timeout: float = 30.0) -> list[dict]:
    """The job's deliveries once ``settled`` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"/v1/merges/{job_id}/deliveries").json()["data"]
        if sum(d["state"] != "pending" for d in data) >= settled:
            return data
        assert time.monotonic() < deadline, f"deliveries not settled after {timeout} s: {data}"
        time.sleep(0.1)


def test_signed_delivery_retried_after_two_500s(stack, alice):
    secret = alice.get("/v1/webhook-secret").json()["secret"]
    with WebhookReceiver([500, 500, 200]) as receiver:
        receiver.secrets = [secret]
        job = alice.post("/v1/merges", json=_spec(stack, "retry", {"url": receiver.url})).json()
        done = wait_terminal(alice, job["id"])
        (delivery,) = _deliveries(alice, job["id"], settled=1)
        time.sleep(0.5)  # nothing more may arrive
        got = list(receiver.received)
    assert done["status"] == "succeeded"
    assert [r.answered for r in got] == [500, 500, 200] and all(r.verified for r in got)
    assert len({r.headers["webhook-id"] for r in got}) == 1  # one message, three attempts
    body = verify_webhook(got[-1].headers, got[-1].body, secret)
    assert body["type"] == "job.succeeded" and body["id"] == delivery["id"]
    assert body["data"] == done  # the job exactly as GET /v1/merges/{id} shows it
    assert delivery["state"] == "succeeded" and [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempts"][0]["error"] == "answered 500"
    metrics = httpx.get(f"{stack.api_url}/metrics").text
    assert 'loramerge_webhook_deliveries_total{outcome="succeeded"}' in metrics


def test_receiver_down_for_the_whole_window_fails_the_delivery_not_the_job(stack, alice):
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    job = alice.post("/v1/merges", json=_spec(stack, "down", {"url": url})).json()
    done = wait_terminal(alice, job["id"])
    (delivery,) = _deliveries(alice, job["id"], settled=1, timeout=stack.settings.webhook_retry_window_s + 20)
    assert delivery["state"] == "failed" and len(delivery["attempts"]) >= 3
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in delivery["attempts"])
    assert alice.get(f"/v1/merges/{job['id']}").json()["status"] == done["status"] == "succeeded"


def test_a_state_change_whose_send_was_lost_is_delivered_by_the_sweep(stack, alice):
    """The process that changed the job died before sending the task: its store committed the
    delivery to the outbox (same transaction) and no task left. Emulated with a store that has no
    ``on_deliveries``, exactly what a kill -9 right after the commit leaves behind."""
    secret = alice.get("/v1/webhook-secret").json()["secret"]
    with WebhookReceiver(200) as receiver:
        receiver.secrets = [secret]
        store = JobStore(connect(stack.settings.redis_url), finished_ttl_s=600)
        record = JobRecord(
            tenant="alice",
            spec={"method": "task_arithmetic"},
            queue="nowhere",
            notify=NotifyTarget(url=receiver.url, events=["cancelled"]),
        )
        store.create(record, max_queued=10_000)
        store.request_cancel(record.id, tenant="alice")
        changed = time.monotonic()
        (got,) = receiver.wait_for(1, timeout=30)
        after_s = time.monotonic() - changed
    assert got.verified and json.loads(got.body)["type"] == "job.cancelled" and json.loads(got.body)["data"]["id"] == record.id
    assert after_s < 20, after_s
    (delivery,) = _deliveries(alice, record.id, settled=1)
    assert delivery["state"] == "succeeded"


def test_ssrf_refusals_at_submission(stack, alice):
    for url in (
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::1]:8000/",
        "http://0.0.0.0:8000/",
        "file:///etc/passwd",
    ):
        response = alice.post("/v1/merges", json=_spec(stack, "ssrf", {"url": url}))
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "webhook_url_not_allowed", url
    # a hostname resolving to loopback, on an API whose allow list is empty; allowed by name it passes
    for allowed, expected in (([], 422), (["localhost"], 202)):
        api = ThreadedServer(_app(stack, webhook_allowed_hosts=allowed))
        with httpx.Client(base_url=api.start(), headers=dict(alice.headers)) as other:
            for url in ("http://localhost:9/hook", "http://127.0.0.1:9/hook")[: 1 if allowed else 2]:
                response = other.post("/v1/merges", json=_spec(stack, "ssrf", {"url": url, "events": ["succeeded"]}))
                assert response.status_code == expected, (allowed, url, response.text)
                if expected == 422:
                    assert "loopback" in response.json()["error"]["message"]
        api.stop()


def _app(stack, **changes):
    from app.main import create_app

    return create_app(stack.settings.model_copy(update=changes))


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(stack, alice):
    with WebhookReceiver(200) as target, WebhookReceiver(302, location="placeholder") as redirector:
        redirector.location = target.url
        job = alice.post("/v1/merges", json=_spec(stack, "redirect", {"url": redirector.url})).json()
        wait_terminal(alice, job["id"])
        (delivery,) = _deliveries(alice, job["id"], settled=1, timeout=stack.settings.webhook_retry_window_s + 20)
        assert target.received == []
    assert delivery["state"] == "failed"
    assert {a["status_code"] for a in delivery["attempts"]} == {302}
    assert delivery["attempts"][0]["error"] == "redirect (302) not followed"


def test_410_gone_stops_the_jobs_later_deliveries_and_all_events_can_be_chosen(stack, alice):
    with WebhookReceiver(lambda n: 410) as receiver:
        notify = {"url": receiver.url, "events": ["queued", "started", "progress", "succeeded"]}
        job = alice.post("/v1/merges", json=_spec(stack, "gone", notify)).json()
        wait_terminal(alice, job["id"])
        deliveries = _deliveries(alice, job["id"], settled=4)
        deliveries = _deliveries(alice, job["id"], settled=len(deliveries))
    types = [d["type"] for d in deliveries]
    assert types[:2] == ["job.queued", "job.started"] and types[-1] == "job.succeeded" and "job.progress" in types
    assert {d["state"] for d in deliveries} == {"gone"}
    assert len(receiver.received) < len(deliveries)  # the first 410 ended the rest unsent
    assert all(d["attempts"][-1]["status_code"] in (410, None) for d in deliveries)


def test_secret_rotation_signs_with_both_and_the_secret_never_sits_in_redis(stack, alice, bob):
    old = alice.get("/v1/webhook-secret").json()["secret"]
    assert bob.get("/v1/webhook-secret").json()["secret"] != old
    rotated = alice.post("/v1/webhook-secret/rotate").json()
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_") and alice.get("/v1/webhook-secret").json()["secret"] == new
    with WebhookReceiver(200) as receiver:
        job = alice.post("/v1/merges", json=_spec(stack, "rotate", {"url": receiver.url})).json()
        wait_terminal(alice, job["id"])
        (got,) = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify_webhook(got.headers, got.body, old)  # a receiver still on the old secret keeps working
    verify_webhook(got.headers, got.body, new)
    client = connect(stack.settings.redis_url)
    for key in client.scan_iter(count=500):
        if client.type(key) == "string":
            value = client.get(key) or ""
            assert old not in value and new not in value and old[6:] not in value, key
    assert old not in stack.worker_log.read_text(errors="replace") and new not in stack.worker_log.read_text(errors="replace")


def test_a_tenants_default_url_gets_the_terminal_events_of_jobs_without_notify(stack, alice):
    with WebhookReceiver(200) as receiver:
        receiver.secrets = [alice.get("/v1/webhook-secret").json()["secret"]]
        api = ThreadedServer(_app(stack, webhook_tenant_urls={"alice": receiver.url}))
        with httpx.Client(base_url=api.start(), headers=dict(alice.headers)) as other:
            job = other.post("/v1/merges", json=_spec(stack, "default", None)).json()
            theirs = _spec(stack, "default", {"url": f"http://127.0.0.1:{free_port()}/x", "events": ["started"]})
            own = other.post("/v1/merges", json=theirs).json()  # its own notify wins over the default
        api.stop()
        wait_terminal(alice, job["id"])
        (got,) = receiver.wait_for(1)
        wait_terminal(alice, own["id"])
        time.sleep(1.0)
    assert got.verified and json.loads(got.body)["type"] == "job.succeeded" and json.loads(got.body)["data"]["id"] == job["id"]
    assert len(receiver.received) == 1
