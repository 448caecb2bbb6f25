"""429 and 503 are retried after Retry-After, a bounded number of times; every retry of a submit carries
the same Idempotency-Key (a fresh one after queue_unavailable, which recorded the job as failed)."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from starlette.responses import HTMLResponse

from loramerge_client import (
    Client,
    ConnectionFailedError,
    HttpError,
    InvalidApiKeyError,
    QueueFullError,
    QueueUnavailableError,
    StoreUnavailableError,
)
from support.standins.server import free_port
from tests.loramerge_client.conftest import answer, error, job


def client_for(standin, **kwargs) -> tuple[Client, list[float]]:
    client = Client(standin.url, api_key="key-1", **kwargs)
    waits: list[float] = []
    client.sleep = waits.append
    return client, waits


def test_429_waits_retry_after_and_keeps_the_idempotency_key(standin):
    standin.plan(
        "POST",
        "/v1/merges",
        error(429, "queue_full", **{"Retry-After": "1"}),
        error(429, "queue_full", **{"Retry-After": "3"}),
        answer(202, job()),
    )
    client, waits = client_for(standin)
    submitted = client.submit({"method": "do_merging", "adapters": []})
    assert submitted.id == "job-1" and waits == [1.0, 3.0]
    posts = standin.calls("POST", "/v1/merges")
    assert len(posts) == 3 and len({r.headers["idempotency-key"] for r in posts}) == 1
    assert posts[0].headers["authorization"] == "Bearer key-1"


def test_retry_after_is_really_waited(standin):
    standin.plan("GET", "/v1/merges/job-1", error(429, "queue_full", **{"Retry-After": "1"}), answer(200, job()))
    client = Client(standin.url)
    started = time.monotonic()
    assert client.get("job-1").status == "queued"
    assert time.monotonic() - started >= 1.0


def test_503_with_an_http_date_retry_after(standin):
    later = formatdate(time.time() + 30, usegmt=True)
    standin.plan("GET", "/v1/merges/job-1", error(503, "store_unavailable", **{"Retry-After": later}), answer(200, job()))
    client, waits = client_for(standin)
    assert client.get("job-1").id == "job-1"
    assert len(waits) == 1 and 25 <= waits[0] <= 30


def test_503_without_retry_after_backs_off(standin):
    standin.plan("GET", "/v1/merges/job-1", error(503, "store_unavailable"), error(503, "store_unavailable"), answer(200, job()))
    client, waits = client_for(standin)
    client.get("job-1")
    assert waits == [0.5, 1.0]


def test_retries_are_bounded(standin):
    standin.plan("GET", "/v1/merges/job-1", error(503, "store_unavailable", "down", **{"Retry-After": "2"}))
    client, waits = client_for(standin, max_retries=2)
    with pytest.raises(StoreUnavailableError) as caught:
        client.get("job-1")
    assert (caught.value.status, caught.value.retry_after, caught.value.message) == (503, 2.0, "down")
    assert len(standin.calls("GET", "/v1/merges/job-1")) == 3 and waits == [2.0, 2.0]


def test_a_retry_after_past_the_limit_is_raised_at_once(standin):
    standin.plan("POST", "/v1/merges", error(429, "queue_full", **{"Retry-After": "3600"}))
    client, waits = client_for(standin, max_retry_wait_s=60)
    with pytest.raises(QueueFullError) as caught:
        client.submit({"method": "x"})
    assert caught.value.retry_after == 3600 and waits == [] and len(standin.calls("POST", "/v1/merges")) == 1


def test_queue_unavailable_submits_again_under_a_fresh_key(standin):
    standin.plan("POST", "/v1/merges", error(503, "queue_unavailable", **{"Retry-After": "5"}), answer(202, job()))
    client, waits = client_for(standin)
    assert client.submit({"method": "x"}).id == "job-1" and waits == [5.0]
    keys = [r.headers["idempotency-key"] for r in standin.calls("POST", "/v1/merges")]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_queue_unavailable_with_the_callers_key_is_raised(standin):
    standin.plan("POST", "/v1/merges", error(503, "queue_unavailable", **{"Retry-After": "5"}), answer(202, job()))
    client, waits = client_for(standin)
    with pytest.raises(QueueUnavailableError):
        client.submit({"method": "x"}, idempotency_key="mine")
    assert waits == [] and [r.headers["idempotency-key"] for r in standin.calls("POST", "/v1/merges")] == ["mine"]


def test_other_errors_are_not_retried(standin):
    standin.plan("GET", "/v1/merges/job-1", error(401, "invalid_api_key", "bad key"))
    standin.plan("GET", "/v1/merges/job-2", lambda request: HTMLResponse("<h1>bad gateway</h1>", 502))  # a proxy's page
    client, waits = client_for(standin)
    with pytest.raises(InvalidApiKeyError) as caught:
        client.get("job-1")
    assert caught.value.status == 401
    with pytest.raises(HttpError) as caught:
        client.get("job-2")
    assert (caught.value.code, caught.value.status) == ("http_error", 502)
    assert "bad gateway" in caught.value.message and waits == []
    assert len(standin.requests) == 2


def test_an_unreachable_server_is_retried_then_raised():
    client = Client(f"http://127.0.0.1:{free_port()}", max_retries=2)
    waits: list[float] = []
    client.sleep = waits.append
    with pytest.raises(ConnectionFailedError, match="ConnectError"):
        client.get("job-1")
    assert waits == [0.5, 1.0]


def test_the_hub_token_goes_with_submit_only_and_never_shows(standin):
    standin.plan("POST", "/v1/merges", answer(202, job()))
    standin.plan("GET", "/v1/merges/job-1", answer(200, job()))
    client, _ = client_for(standin, hub_token="hf_secret")
    client.submit({"method": "x"})
    client.get("job-1")
    assert [r.headers.get("x-hub-token") for r in standin.requests] == ["hf_secret", None]
    assert "hf_secret" not in repr(client) and "key-1" not in repr(client)
