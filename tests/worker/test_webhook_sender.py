"""One webhook attempt (worker/webhook_sender.py) against real receivers over real HTTP and a real Redis:
the time limit holds by the clock however the receiver dribbles, an attempt that lost its lease records
nothing, an IDN host is sent in its ASCII form, an unexpected error is a failed attempt, and the last
attempt is made at the end of the retry window."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from jobs.events import OUTBOX_KEY, delivery_key
from jobs.records import JobRecord, NotifyTarget
from jobs.redis_server import RedisServer
from jobs.secrets import TokenBox
from jobs.settings import Settings
from jobs.store import JobStore, connect
from jobs.webhooks import Outbox, WebhookSecrets
from support.standins.receiver import WebhookReceiver
from worker.webhook_sender import WebhookSender, lease_s


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("sender-redis"))
    server.start()
    yield connect(server.url)
    server.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The folder of the server's key: one for the module, as one service has one."""
    return tmp_path_factory.mktemp("sender-keys")


def _box(folder) -> TokenBox:
    return TokenBox.from_settings(type("S", (), {"secret_key": None, "data_dir": folder})())


def _sender(client, folder, **changes) -> WebhookSender:
    base = {
        "webhook_allowed_hosts": ["127.0.0.1"],
        "webhook_timeout_s": 1.0,
        "webhook_backoff_s": 0.2,
        "webhook_retry_window_s": 60.0,
    }
    settings = Settings(**{**base, **changes})
    return WebhookSender(Outbox(client, ttl_s=600), WebhookSecrets(client, _box(folder), grace_s=0), settings)


def _delivery(client, url: str, tenant: str = "t") -> str:
    """A job whose cancel queued one delivery to ``url``; its id (no task is sent: the test attempts it)."""
    store = JobStore(client, finished_ttl_s=600)
    record = JobRecord(tenant=tenant, spec={"method": "x"}, queue="nowhere", notify=NotifyTarget(url=url, events=["cancelled"]))
    store.create(record, max_queued=10_000)
    store.request_cancel(record.id, tenant=tenant)
    (delivery,) = Outbox(client, ttl_s=600).for_job(record.id)
    return delivery["id"]


def _stored(client, delivery_id: str) -> dict:
    return json.loads(client.get(delivery_key(delivery_id)))


class DribblingReceiver:
    """Answers ``200 OK`` at once, then one header line every ``every_s`` for ``lines`` lines: no single
    read ever waits long, but the answer takes ``lines * every_s`` seconds."""

    def __init__(self, *, every_s: float = 0.25, lines: int = 24) -> None:
        self.every_s, self.lines = every_s, lines
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(self.lines):
                    time.sleep(self.every_s)
                    conn.sendall(b"X-Drip: 1\r\n")
                conn.sendall(b"Content-Length: 0\r\n\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def test_the_time_limit_holds_by_the_clock_against_a_receiver_that_dribbles_its_headers(client, keys):
    receiver = DribblingReceiver()  # 6 s for the whole answer, a line every 0.25 s
    sender = _sender(client, keys)
    delivery_id = _delivery(client, receiver.url)
    attempts_before = sender.outbox.attempts().get("error", 0)
    started = time.monotonic()
    delay = sender.deliver(delivery_id)
    took = time.monotonic() - started
    receiver.close()
    assert took < 2.0, took  # the limit is 1 s for the whole attempt, not per read
    assert delay is not None
    (attempt,) = _stored(client, delivery_id)["attempts"]
    assert attempt["error"] == "timed out after 1 s" and attempt["status_code"] is None
    assert attempt["duration_ms"] < 2000
    assert receiver.requests == 1
    assert sender.outbox.attempts().get("error", 0) == attempts_before + 1
    assert lease_s(sender.settings) > sender.settings.webhook_timeout_s


def test_an_attempt_whose_lease_expired_records_nothing_and_counts_nothing(client, keys):
    outbox = Outbox(client, ttl_s=600)
    delivery_id = _delivery(client, "http://127.0.0.1:9/hook")
    slow = outbox.claim(delivery_id, lease_s=0.2, holder="frozen:1:a")
    assert slow is not None
    time.sleep(0.4)  # the frozen attempt's lease runs out; the sweep hands the delivery to another attempt
    assert delivery_id in outbox.sweep(grace_s=0)
    fresh = outbox.claim(delivery_id, lease_s=30, holder="live:2:b")
    assert fresh is not None
    counts = (outbox.attempts(), outbox.outcomes())
    stale = {"at": time.time(), "status_code": 204, "error": None}
    assert outbox.record(slow, stale, next_at=None, outcome="succeeded", holder="frozen:1:a") is False
    assert _stored(client, delivery_id)["attempts"] == [] and _stored(client, delivery_id)["state"] == "pending"
    assert (outbox.attempts(), outbox.outcomes()) == counts
    assert outbox.claim(delivery_id, lease_s=30, holder="third:3:c") is None  # the live lease is untouched
    answered = {"at": time.time(), "status_code": 500, "error": "answered 500"}
    assert outbox.record(fresh, answered, next_at=time.time() + 60, outcome=None, holder="live:2:b") is True
    assert [a["status_code"] for a in _stored(client, delivery_id)["attempts"]] == [500]
    assert outbox.attempts()["error"] == counts[0].get("error", 0) + 1


def test_an_idn_host_is_sent_in_its_ascii_form(client, keys):
    with WebhookReceiver(204) as receiver:
        port = receiver.server.server_address[1]
        sender = _sender(client, keys)
        delivery_id = _delivery(client, f"http://①②⑦.0.0.1:{port}/hook")  # NFKC/IDNA: 127.0.0.1
        assert sender.deliver(delivery_id) is None
        (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"127.0.0.1:{port}"
    stored = _stored(client, delivery_id)
    assert stored["state"] == "succeeded" and [a["status_code"] for a in stored["attempts"]] == [204]


def test_an_unexpected_error_is_a_failed_attempt_and_the_window_still_ends_the_delivery(client, keys, tmp_path):
    WebhookSecrets(client, _box(tmp_path), grace_s=0).current("sealed-elsewhere")  # a secret of another key
    sender = _sender(client, keys, webhook_retry_window_s=0.5)
    with WebhookReceiver(204) as receiver:
        delivery_id = _delivery(client, receiver.url, tenant="sealed-elsewhere")
        assert sender.deliver(delivery_id) is None
        assert receiver.received == []
    stored = _stored(client, delivery_id)
    (attempt,) = stored["attempts"]
    assert attempt["error"].startswith("internal error: RuntimeError") and "sealed with another key" in attempt["error"]
    assert stored["state"] == "failed"
    assert delivery_id not in client.zrange(OUTBOX_KEY, 0, -1)


def test_the_last_attempt_is_made_at_the_end_of_the_retry_window(client, keys):
    # the first backoff (5-10 s) would land past the 3 s window: it is cut to the window's end
    sender = _sender(client, keys, webhook_backoff_s=10.0, webhook_retry_window_s=3.0)
    with WebhookReceiver(500) as receiver:
        delivery_id = _delivery(client, receiver.url)
        created = _stored(client, delivery_id)["created_at"]
        delay = sender.deliver(delivery_id)
        assert delay is not None and delay <= 3.0
        assert _stored(client, delivery_id)["next_attempt_at"] == pytest.approx(created + 3.0, abs=0.01)
        time.sleep(delay)
        assert sender.deliver(delivery_id) is None
        assert len(receiver.received) == 2
    stored = _stored(client, delivery_id)
    assert stored["state"] == "failed" and [a["status_code"] for a in stored["attempts"]] == [500, 500]
    last = receiver.received[-1].at
    assert last >= created + 3.0 - 1.0, last - created  # at the window's end (a task may claim 1 s early)
