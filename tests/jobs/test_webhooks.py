"""Webhook pieces without a stack: Standard Webhooks signatures, the SSRF rules, and the event log and
outbox that the store writes in the same transaction as the state change (on a real Redis)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from jobs import events
from jobs.lease import Fence
from jobs.records import JobProgress, JobRecord, JobStatus, NotifyTarget, PinnedSource
from jobs.redis_server import RedisServer
from jobs.secrets import TokenBox
from jobs.store import JobStore, connect
from jobs.webhook_signing import WebhookSecretError, WebhookVerificationError, headers_for, new_secret, sign, verify_webhook
from jobs.webhooks import Outbox, UrlNotAllowedError, WebhookSecrets, check_url

# The test vector of the Standard Webhooks specification's reference libraries.
VECTOR = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')


def test_signature_matches_the_reference_vector():
    assert sign(*VECTOR) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_any_matching_signature_and_refuses_the_rest():
    old, new = new_secret(), new_secret()
    body = b'{"type":"job.succeeded"}'
    headers = headers_for([new, old], "msg_1", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify_webhook(headers, body, old) == {"type": "job.succeeded"}
    assert verify_webhook({k.upper(): v for k, v in headers.items()}, body, [new_secret(), new])
    for bad_body, secret in ((body + b" ", new), (body, new_secret())):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers, bad_body, secret)
    stale = headers_for([new], "msg_1", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(stale, body, new)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook({}, body, new)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),  # the whsec_ left off
        ("whsec_not base64!", "not base64"),
        ("whsec_", "nothing follows"),
        ([], "no secret"),
    ],
)
def test_a_malformed_secret_is_a_verification_error_that_says_so(secret, why):
    body = b'{"type":"job.succeeded"}'
    headers = headers_for([new_secret()], "msg_1", body)
    with pytest.raises(WebhookSecretError, match=why) as caught:
        verify_webhook(headers, body, secret)
    assert isinstance(caught.value, WebhookVerificationError)  # what the README's receiver catches (400)


def test_a_signed_body_that_is_not_json_is_a_verification_error():
    secret = new_secret()
    for body in (b"not json", b"\xff\xfe"):
        with pytest.raises(WebhookVerificationError, match="not JSON"):
            verify_webhook(headers_for([secret], "msg_1", body), body, secret)


def _resolver(*addresses: str):
    def resolve(host, port, type=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in addresses]

    return resolve


@pytest.mark.parametrize(
    ("url", "addresses", "reason"),
    [
        ("http://10.0.0.5/hook", (), "private"),
        ("http://169.254.169.254/latest/meta-data", (), "metadata"),
        ("http://[fd00:ec2::254]/", (), "metadata"),
        ("http://[::1]:8080/", (), "loopback"),
        ("http://0.0.0.0/", (), "unspecified"),
        ("http://224.0.0.9/", (), "multicast"),
        ("http://[::ffff:127.0.0.1]/", (), "loopback"),
        ("http://localhost:9000/hook", ("127.0.0.1",), "loopback"),
        ("https://rebind.example/hook", ("93.184.216.34", "192.168.1.4"), "private"),  # one bad address is enough
        ("ftp://hooks.example/x", ("93.184.216.34",), "http and https"),
        ("http:///nohost", (), "no host"),
        ("http://[2002:a9fe:a9fe::1]/", (), "6to4 address embedding 169.254.169.254, a cloud metadata"),
        ("http://[2002:7f00:1::1]/", (), "6to4 address embedding 127.0.0.1, a loopback"),
        ("http://[2002:0a00:0001::1]/", (), "6to4 address embedding 10.0.0.1, a private"),
        ("http://[2001:0:a9fe:a9fe::1]/", (), "Teredo address embedding 169.254.169.254"),  # the server part
        ("http://[2001:0:808:808:0:0:f5ff:fffe]/", (), "Teredo address embedding 10.0.0.1, a private"),  # client, obfuscated
        ("http://[64:ff9b::a9fe:a9fe]/", (), "NAT64 address embedding 169.254.169.254"),
        ("http://[::a9fe:a9fe]/", (), "IPv4-compatible address embedding 169.254.169.254"),
        ("http://[::ffff:a9fe:a9fe]/", (), "metadata"),
        ("https://hooks.example/x", ("2002:a9fe:a9fe::1",), "6to4"),  # resolved to such an address
        ("http://①②⑦.0.0.1/", (), "127.0.0.1 resolves to 127.0.0.1, a loopback"),  # IDNA (NFKC): 127.0.0.1
        ("http://a\u202eb.example/", ("93.184.216.34",), "not a valid internationalized domain name"),  # RTL override
    ],
)
def test_internal_addresses_are_refused(url, addresses, reason):
    with pytest.raises(UrlNotAllowedError, match=reason):
        check_url(url, [], resolve=_resolver(*addresses))


def test_a_public_address_behind_6to4_is_allowed_and_idn_hosts_are_used_in_ascii():
    assert check_url("http://[2002:808:808::1]/h", []).address == "2002:808:808::1"  # 6to4 of 8.8.8.8
    idn = check_url("https://BÜCHER.example/h", [], resolve=_resolver("93.184.216.34"))
    assert (idn.host, idn.host_header) == ("xn--bcher-kva.example", "xn--bcher-kva.example")
    assert (
        check_url("http://bücher.example:8080/h", ["xn--bcher-kva.example"], resolve=_resolver("10.1.2.3")).address == "10.1.2.3"
    )
    loopback = check_url("http://①②⑦.0.0.1:9/h", ["127.0.0.1"])
    assert (loopback.host, loopback.host_header, loopback.connect_url) == ("127.0.0.1", "127.0.0.1:9", "http://127.0.0.1:9/h")


def test_allowed_hosts_and_cidrs_and_the_address_to_connect_to():
    public = check_url("https://hooks.example:8443/in?x=1", [], resolve=_resolver("93.184.216.34"))
    assert (public.address, public.host_header, public.target) == ("93.184.216.34", "hooks.example:8443", "/in?x=1")
    assert public.connect_url == "https://93.184.216.34:8443/in?x=1"
    assert check_url("http://127.0.0.1:9/h", ["127.0.0.1"]).address == "127.0.0.1"
    assert check_url("http://hooks.internal/h", ["hooks.internal"], resolve=_resolver("10.1.2.3")).address == "10.1.2.3"
    assert check_url("http://h.internal/h", ["10.1.0.0/16"], resolve=_resolver("10.1.2.3")).address == "10.1.2.3"
    with pytest.raises(UrlNotAllowedError):
        check_url("http://h.internal/h", ["10.1.0.0/16"], resolve=_resolver("10.2.0.1"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("webhook-redis"))
    server.start()
    yield connect(server.url)
    server.close()


def test_each_write_logs_its_events_and_queues_its_deliveries_atomically(client):
    sent: list[list[str]] = []
    store = JobStore(client, finished_ttl_s=600, progress_event_interval_s=60, on_deliveries=sent.append)
    notify = NotifyTarget(url="http://127.0.0.1:9/h", events=["queued", "started", "progress", "succeeded"])
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="nowhere", notify=notify), max_queued=100)
    claimed = store.claim(record.id, "elsewhere:1", lease_s=60)
    fence = Fence(claimed.attempts, claimed.worker)
    store.set_sources(record.id, fence, [PinnedSource(source="/a", revision="sha256:1")])
    for done in range(1, 5):  # coalesced: the stage change, then nothing for 60 s (the last one too)
        store.set_progress(record.id, fence, JobProgress(stage="merge", done=done, total=4))
    store.set_progress(record.id, fence, JobProgress(stage="write"))  # every stage change is logged
    store.finish(record.id, fence, JobStatus.succeeded, progress=JobProgress(stage="done", done=1, total=1))

    logged, more = events.read(client, record.id, cursor=None, limit=100)
    kinds = [e["type"] for e in logged]
    assert kinds == ["job.accepted", "job.started", "job.source_pinned", "job.stage", "job.stage", "job.succeeded"]
    assert not more and logged[2]["data"] == {"index": 0, "source": "/a", "revision": "sha256:1"}
    assert [logged[3]["data"]["stage"], logged[4]["data"]["stage"]] == ["merge", "write"]
    page, more = events.read(client, record.id, cursor=logged[1]["id"], limit=2)
    assert [e["id"] for e in page] == [e["id"] for e in logged[2:4]] and more

    deliveries = Outbox(client, ttl_s=600).for_job(record.id)  # one progress webhook in the 60 s interval
    assert [d["type"] for d in deliveries] == ["job.queued", "job.started", "job.progress", "job.succeeded"]
    assert [i for batch in sent for i in batch] == [d["id"] for d in deliveries]
    final = json.loads(deliveries[-1]["body"])
    assert final["data"]["status"] == "succeeded" and final["data"]["id"] == record.id and final["id"] == deliveries[-1]["id"]
    assert 0 < client.ttl(events.events_key(record.id)) <= 600  # purged with the record


def test_the_sweep_finds_deliveries_whose_task_was_lost_and_the_claim_is_exclusive(client):
    store = JobStore(client, finished_ttl_s=600)  # no on_deliveries: as if the process died after the commit
    outbox = Outbox(client, ttl_s=600)
    notify = NotifyTarget(url="http://127.0.0.1:9/h", events=["cancelled"])
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="nowhere", notify=notify), max_queued=100)
    store.request_cancel(record.id, tenant="t")
    (delivery,) = outbox.for_job(record.id)
    assert outbox.sweep(grace_s=60) == []  # not overdue yet
    assert delivery["id"] in outbox.sweep(grace_s=0)
    assert outbox.claim(delivery["id"], lease_s=30, holder="a") is not None
    assert outbox.claim(delivery["id"], lease_s=30, holder="b") is None  # leased
    assert delivery["id"] not in outbox.sweep(grace_s=0)  # held: not lost
    attempt = {"at": time.time(), "status_code": 204, "error": None}
    assert outbox.record(delivery, attempt, next_at=None, outcome="succeeded", holder="a")
    assert outbox.claim(delivery["id"], lease_s=30, holder="b") is None and outbox.for_job(record.id)[0]["state"] == "succeeded"


def test_secrets_are_sealed_and_rotation_keeps_the_old_one_for_its_grace(client, tmp_path):
    box = TokenBox.from_settings(type("S", (), {"secret_key": None, "data_dir": tmp_path})())
    secrets = WebhookSecrets(client, box, grace_s=60)
    first = secrets.current("tenant-a")
    assert first.startswith("whsec_") and secrets.current("tenant-a") == first != secrets.current("tenant-b")
    assert first not in client.get(WebhookSecrets.key("tenant-a"))
    second = secrets.rotate("tenant-a")
    assert secrets.signing("tenant-a") == [second, first]
    assert WebhookSecrets(client, box, grace_s=0).rotate("tenant-a") not in (first, second)


def test_notify_is_a_service_field_left_out_of_the_library_spec_and_of_old_fingerprints():
    from app.schemas import MergeCreate
    from app.submission import fingerprint, stored_spec

    body = {"method": "ties", "adapters": [{"source": "a/b"}], "output": {"rank": 4}}
    plain = MergeCreate.model_validate(body)
    hooked = MergeCreate.model_validate({**body, "notify": {"url": "https://h.example/x"}})
    assert "notify" not in stored_spec(plain) and stored_spec(hooked)["notify"]["events"] == ["succeeded", "failed", "cancelled"]
    assert fingerprint(plain) != fingerprint(hooked)
    assert "notify" not in hooked.spec.model_dump()


def test_progress_is_at_most_one_per_interval_in_the_log_and_in_webhooks(client):
    store = JobStore(client, finished_ttl_s=600, progress_event_interval_s=0.5)
    notify = NotifyTarget(url="http://127.0.0.1:9/h", events=["progress"])
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="nowhere", notify=notify), max_queued=100)
    claimed = store.claim(record.id, "elsewhere:1", lease_s=60)
    fence = Fence(claimed.attempts, claimed.worker)
    burst = [("load", 0, 2), ("merge", 0, 4), ("merge", 1, 4), ("merge", 4, 4), ("write", 0, 1)]  # within a few ms
    for stage, done, total in burst:
        store.set_progress(record.id, fence, JobProgress(stage=stage, done=done, total=total))
    time.sleep(0.6)
    store.set_progress(record.id, fence, JobProgress(stage="write", done=1, total=1))  # the interval has passed
    store.set_progress(record.id, fence, JobProgress(stage="publish"))

    logged, _ = events.read(client, record.id, cursor=None, limit=100)
    assert [(e["type"], e["data"]["stage"], e["data"]["done"]) for e in logged[2:]] == [
        ("job.stage", "load", 0),
        ("job.stage", "merge", 0),
        ("job.stage", "write", 0),
        ("job.progress", "write", 1),
        ("job.stage", "publish", 0),
    ]  # every stage change; modules done only once the interval passed (the burst's 1/4 and 4/4 are dropped)
    sent = [json.loads(d["body"])["data"]["progress"] for d in Outbox(client, ttl_s=600).for_job(record.id)]
    assert [(p["stage"], p["done"]) for p in sent] == [("load", 0), ("write", 1)]  # one per interval, whatever called


def test_a_worker_lost_is_logged_as_a_retry_with_its_reason(client):
    store = JobStore(client, finished_ttl_s=600)
    notify = NotifyTarget(url="http://127.0.0.1:9/h", events=["queued", "started"])
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="nowhere", notify=notify), max_queued=100)
    store.claim(record.id, "elsewhere:1", lease_s=60)
    # its process was killed: the redelivered message takes the job over once the lease ran out
    # (lease_s=-1: already out; 0 is not when both writes fall in the same millisecond)
    assert store.claim(record.id, "elsewhere:2", lease_s=-1) is not None
    # and that one is lost too: the sweep puts the job back in the queue
    assert record.id in store.recover_lost(lease_s=-1, max_attempts=5, time_limit_s=3600, requeue=lambda r: None)

    logged, _ = events.read(client, record.id, cursor=None, limit=100)
    assert [e["type"] for e in logged] == ["job.accepted", "job.started", "job.retrying", "job.started", "job.retrying"]
    take_over, requeued = logged[2]["data"], logged[4]["data"]
    assert take_over == {"reason": "worker lost", "attempt": 1, "not_before": None, "worker": "elsewhere:1"}
    assert "worker lost" in requeued["reason"] and requeued["attempt"] == 2
    deliveries = Outbox(client, ttl_s=600).for_job(record.id)
    assert [d["type"] for d in deliveries] == ["job.queued", "job.started", "job.queued", "job.started", "job.queued"]


def test_cursors_past_64_bits_are_not_event_ids_and_the_greatest_one_reads_nothing(client):
    assert events.valid_cursor("18446744073709551615-18446744073709551615")
    for bad in ("99999999999999999999-0", "1-18446744073709551616", "18446744073709551616-0", "1-", "x-1"):
        assert not events.valid_cursor(bad), bad
    assert events.after("5-18446744073709551615") == "6-0"
    store = JobStore(client, finished_ttl_s=600)
    record, _ = store.create(JobRecord(tenant="t", spec={"method": "x"}, queue="nowhere"), max_queued=100)
    assert events.read(client, record.id, cursor="18446744073709551615-18446744073709551615", limit=10) == ([], False)
    assert [e["type"] for e in events.read(client, record.id, cursor="0-18446744073709551615", limit=10)[0]] == ["job.accepted"]
