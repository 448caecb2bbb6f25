"""events(): the job's Server-Sent Events, opened again from the last id when the stream drops, until the
terminal event; against a stand-in that speaks the contract of GET /v1/merges/{id}/events."""

from __future__ import annotations

import json

import pytest
from starlette.responses import StreamingResponse

from loramerge_client import Client, ConnectionFailedError, JobNotFoundError
from loramerge_client.sse import parse
from tests.loramerge_client.conftest import answer, error, job

PATH = "/v1/merges/job-1/events"
EVENTS = [
    {"id": f"{i + 1}-0", "type": kind, "created_at": f"2026-01-01T00:00:0{i}Z", "data": {"n": i}}
    for i, kind in enumerate(["job.accepted", "job.started", "job.progress", "job.progress", "job.succeeded"])
]


def stream(*, upto: int | None = None, drop: bool = False, retry_ms: int | None = None):
    """Answer the events after Last-Event-ID (or ?after) up to index ``upto``; ``drop``: then break the
    connection (no end of the chunked body), else end the response cleanly."""

    def handler(request):
        last = request.headers.get("last-event-id") or request.query_params.get("after")
        start = next((i + 1 for i, e in enumerate(EVENTS) if e["id"] == last), 0)

        async def body():
            yield b": keep-alive\n\n"
            if retry_ms is not None:
                yield f"retry: {retry_ms}\n\n".encode()
            for event in EVENTS[start:upto]:
                yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            if drop:
                raise RuntimeError("the stand-in drops the connection")

        return StreamingResponse(body(), media_type="text/event-stream")

    return handler


@pytest.fixture
def client(standin):
    client = Client(standin.url)
    client.waits = []
    client.sleep = client.waits.append
    return client


def test_a_whole_stream_ends_with_the_terminal_event(standin, client):
    standin.plan("GET", PATH, stream())
    events = list(client.events("job-1"))
    assert [e.id for e in events] == [e["id"] for e in EVENTS]
    assert [e.type for e in events][-1] == "job.succeeded" and events[-1].terminal and not events[0].terminal
    assert events[2].data == {"n": 2} and events[2].created_at == "2026-01-01T00:00:02Z"
    assert standin.calls("GET", PATH)[0].headers["accept"] == "text/event-stream"


def test_a_dropped_stream_resumes_after_the_last_event(standin, client):
    standin.plan("GET", PATH, stream(upto=2, drop=True), stream(upto=3, drop=True, retry_ms=250), stream())
    events = list(client.events("job-1"))
    assert [e.id for e in events] == [e["id"] for e in EVENTS]  # each once, in order
    calls = standin.calls("GET", PATH)
    assert [c.headers.get("last-event-id") for c in calls] == [None, "2-0", "3-0"]
    assert client.waits == [0.5, 0.25]  # the server's retry: field is honoured


def test_a_stream_closed_early_is_opened_again_while_the_job_runs(standin, client):
    standin.plan("GET", PATH, stream(upto=0), stream(upto=1), stream())
    standin.plan("GET", "/v1/merges/job-1", answer(200, job(status="running")))
    assert [e.id for e in client.events("job-1")] == [e["id"] for e in EVENTS]
    assert len(standin.calls("GET", PATH)) == 3


def test_after_starts_past_that_event(standin, client):
    standin.plan("GET", PATH, stream())
    assert [e.id for e in client.events("job-1", after="3-0")] == ["4-0", "5-0"]
    first = standin.calls("GET", PATH)[0]
    assert (first.headers["last-event-id"], first.query_params["after"]) == ("3-0", "3-0")


def test_a_finished_job_whose_stream_has_nothing_more_ends(standin, client):
    standin.plan("GET", PATH, stream(upto=0))
    standin.plan("GET", "/v1/merges/job-1", answer(200, job(status="succeeded")))
    assert list(client.events("job-1")) == []
    assert len(standin.calls("GET", PATH)) == 2  # one more pass for events still on their way


def test_errors_are_typed_and_failures_bounded(standin, client):
    standin.plan("GET", PATH, error(404, "job_not_found"))
    with pytest.raises(JobNotFoundError):
        list(client.events("job-1"))
    standin.plan("GET", PATH, error(503, "store_unavailable", **{"Retry-After": "1"}))
    client.max_retries = 2
    with pytest.raises(ConnectionFailedError):
        list(client.events("job-1"))
    assert client.waits == [1.0, 1.0]


def test_event_page(standin, client):
    standin.plan("GET", PATH, answer(200, {"data": EVENTS[:2], "has_more": True}))
    events, more = client.event_page("job-1", after="0-1", limit=2)
    assert [e.type for e in events] == ["job.accepted", "job.started"] and more
    assert dict(standin.calls("GET", PATH)[0].query_params) == {"after": "0-1", "limit": "2"}


def test_parser_follows_the_sse_rules():
    lines = [": comment", "retry: 1500", "", "id: 7-0", "event: job.progress", 'data: {"done": 1,', 'data: "total": 2}', ""]
    lines += ['data: {"status": "x"}', "", "id: 8-0", "data: cut off at the end"]
    messages = list(parse(lines))
    assert [(m.id, m.event, m.retry) for m in messages] == [
        (None, "", 1500),
        ("7-0", "job.progress", None),
        ("7-0", "message", None),
    ]
    event = messages[1].to_event()  # data holding only the event's data part
    assert (event.id, event.type, event.data) == ("7-0", "job.progress", {"done": 1, "total": 2})
