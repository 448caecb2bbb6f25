"""The job's event log over HTTP: cursor pages and Server-Sent Events (resume with Last-Event-ID,
keep-alive comments, the stream ends after the outcome)."""

from __future__ import annotations

import json
import time

import httpx

from jobs.records import JobRecord
from jobs.store import JobStore, connect
from support.factories import write_adapter_folder
from tests.e2e.conftest import wait_terminal


def _job(stack, alice, name: str) -> dict:
    sources = [str(write_adapter_folder(stack.roots / f"ev-{name}-{i}", seed=i)) for i in range(2)]
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": s} for s in sources]}).json()
    return wait_terminal(alice, job["id"])


def _pages(client: httpx.Client, job_id: str, limit: int) -> list[dict]:
    events, cursor = [], None
    while True:
        params = {"limit": limit, **({"after": cursor} if cursor else {})}
        page = client.get(f"/v1/merges/{job_id}/events", params=params).json()
        events += page["data"]
        if not page["has_more"]:
            return events
        cursor = page["data"][-1]["id"]


def _sse(client: httpx.Client, job_id: str, headers: dict | None = None, until_s: float = 30) -> tuple[list[dict], list[str]]:
    """Every event of the stream and its comment lines, until the server ends it."""
    events, comments, block = [], [], {}
    deadline = time.monotonic() + until_s
    with client.stream("GET", f"/v1/merges/{job_id}/events", headers={"Accept": "text/event-stream", **(headers or {})}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() < deadline, "the stream did not end"
            if line.startswith(":"):
                comments.append(line)
            elif line == "" and block:
                events.append({**json.loads(block["data"]), "_sse_id": block["id"], "_sse_event": block["event"]})
                block = {}
            elif ":" in line and not line.startswith("retry"):
                field, _, value = line.partition(":")
                block[field] = value.strip()
    return events, comments


def test_events_in_order_with_cursor_pages(stack, alice, bob):
    done = _job(stack, alice, "pages")
    everything = alice.get(f"/v1/merges/{done['id']}/events", params={"limit": 1000}).json()
    assert not everything["has_more"]
    kinds = [e["type"] for e in everything["data"]]
    assert kinds[:2] == ["job.accepted", "job.started"] and kinds[-1] == "job.succeeded"
    assert kinds.count("job.source_pinned") == 2 and "job.stage" in kinds
    pinned = [e["data"] for e in everything["data"] if e["type"] == "job.source_pinned"]
    assert [p["revision"] for p in pinned] == [s["revision"] for s in done["sources"]]
    assert _pages(alice, done["id"], limit=2) == everything["data"]
    ids = [tuple(map(int, e["id"].split("-"))) for e in everything["data"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert everything["data"][-1]["data"]["result"]["uri"] == done["result"]["uri"]
    assert alice.get(f"/v1/merges/{done['id']}/events", params={"after": "nope"}).status_code == 422
    assert bob.get(f"/v1/merges/{done['id']}/events").status_code == 404


def test_sse_streams_to_the_outcome_and_resumes_after_last_event_id(stack, alice):
    done = _job(stack, alice, "sse")
    listed = alice.get(f"/v1/merges/{done['id']}/events").json()["data"]
    streamed, _ = _sse(alice, done["id"])
    assert [{k: v for k, v in e.items() if not k.startswith("_")} for e in streamed] == listed
    assert all(e["_sse_id"] == e["id"] and e["_sse_event"] == e["type"] for e in streamed)
    resumed, _ = _sse(alice, done["id"], {"Last-Event-ID": listed[2]["id"]})
    assert [e["id"] for e in resumed] == [e["id"] for e in listed[3:]]  # nothing missed, nothing repeated
    last, _ = _sse(alice, done["id"], {"Last-Event-ID": listed[-1]["id"]})
    assert last == []  # after the outcome: the stream ends at once


def test_sse_keeps_alive_while_nothing_happens_and_ends_with_the_outcome(stack, alice):
    store = JobStore(connect(stack.settings.redis_url), finished_ttl_s=600)
    record = JobRecord(tenant="alice", spec={"method": "task_arithmetic"}, queue="nowhere")  # never runs
    store.create(record, max_queued=10_000)

    import threading

    def cancel_later() -> None:
        time.sleep(2.0)
        with stack.client("alice") as other:
            other.delete(f"/v1/merges/{record.id}")

    threading.Thread(target=cancel_later, daemon=True).start()
    events, comments = _sse(alice, record.id, until_s=20)
    assert [e["type"] for e in events] == ["job.accepted", "job.cancelled"]
    assert len(comments) >= 2 and all(c.startswith(": keep-alive") for c in comments)


def test_cursors_past_64_bits_are_refused_before_anything_streams(stack, alice):
    done = _job(stack, alice, "range")
    path = f"/v1/merges/{done['id']}/events"
    for cursor in ("99999999999999999999-0", "1-18446744073709551616", "18446744073709551616-0"):
        page = alice.get(path, params={"after": cursor})
        assert page.status_code == 422 and page.json()["error"]["code"] == "invalid_request", (cursor, page.text)
        assert page.json()["error"]["details"]["field"] == "after"
        with alice.stream("GET", path, headers={"Accept": "text/event-stream", "Last-Event-ID": cursor}) as sse:
            sse.read()
            assert sse.status_code == 422 and not sse.headers["content-type"].startswith("text/event-stream"), cursor
            assert sse.json()["error"]["details"]["field"] == "Last-Event-ID"
    everything = alice.get(path).json()["data"]
    assert alice.get(path, params={"after": "1-18446744073709551615"}).json()["data"] == everything  # fits: 2-0 follows
    greatest = "18446744073709551615-18446744073709551615"  # the greatest id there is: nothing follows it
    assert alice.get(path, params={"after": greatest}).json() == {"data": [], "has_more": False}
    streamed, _ = _sse(alice, done["id"], {"Last-Event-ID": greatest})
    assert streamed == []
