"""Each backend classifies its failures the same way for sources and destinations: an object store
answering 5xx is transient (retried) on both sides, a denial is permanent, and our own disk filling up
while caching a download is ``storage_full`` rather than a Hub outage."""

from __future__ import annotations

import errno

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from merge_core.errors import SourceNotFoundError
from support.factories import write_adapter_folder
from support.standins.server import ThreadedServer
from worker.errors import DestinationError, DestinationUnavailableError, SourceForbiddenError, TransientError
from worker.s3 import s3_client, s3_errors
from worker.sinks import PublishContext
from worker.sinks.s3 import publish_s3
from worker.sources.hub import hub_errors


@pytest.fixture(scope="module")
def answering():
    """An S3 endpoint that answers every request with the status in ``answering.status``."""
    app = FastAPI()
    state = {"status": 503}

    @app.api_route("/{path:path}", methods=["GET", "PUT", "POST", "HEAD", "DELETE"])
    def any_request(path: str, request: Request) -> Response:
        return Response(status_code=state["status"], content=b"<Error><Code>X</Code></Error>", media_type="application/xml")

    server = ThreadedServer(app)
    server.start()
    yield server.url, state
    server.stop()


@pytest.fixture(autouse=True)
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("status", "raised"), [(503, DestinationUnavailableError), (403, DestinationError)])
def test_s3_destination_errors_are_classified(answering, tmp_path, status, raised):
    url, state = answering
    state["status"] = status
    folder = write_adapter_folder(tmp_path / "result")
    with pytest.raises(raised) as caught:
        publish_s3(folder, ctx=_publishing("s3://bucket/prefix", url, tmp_path))
    assert type(caught.value) is raised  # a 403 is not "unavailable", a 503 is not a permanent failure


@pytest.mark.parametrize(("status", "raised"), [(503, TransientError), (403, SourceForbiddenError), (404, SourceNotFoundError)])
def test_s3_source_errors_are_classified(answering, status, raised):
    url, state = answering
    state["status"] = status
    with pytest.raises(raised), s3_errors("s3://bucket/prefix"):
        s3_client(url).list_objects_v2(Bucket="bucket", Prefix="prefix/")


def test_a_full_disk_while_caching_hub_files_is_not_a_hub_outage():
    with pytest.raises(OSError) as caught, hub_errors("org/name"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not isinstance(caught.value, TransientError) and caught.value.errno == errno.ENOSPC
    with pytest.raises(TransientError), hub_errors("org/name"):
        raise ConnectionResetError(errno.ECONNRESET, "reset")


def _publishing(destination: str, endpoint_url: str, tmp_path) -> PublishContext:
    return PublishContext(
        job_id="job",
        destination=destination,
        private=True,
        hub_token=None,
        results_dir=tmp_path / "results",
        s3_endpoint_url=endpoint_url,
        commit_message="m",
    )


def test_a_repo_id_the_hub_client_refuses_is_invalid_source_not_an_internal_error():
    """A record from before today's submission rules (``org/name.git`` passed them) fails with its code."""
    from huggingface_hub.utils import validate_repo_id

    from jobs.errors import ErrorCode, InvalidSourceError

    with pytest.raises(InvalidSourceError) as caught, hub_errors("org/name.git"):
        validate_repo_id("org/name.git")
    assert caught.value.code == ErrorCode.invalid_source and "org/name.git" in str(caught.value)
