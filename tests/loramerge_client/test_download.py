"""download(): a dropped transfer starts over, an unsafe or incomplete tar leaves nothing behind."""

from __future__ import annotations

import tarfile

import pytest
from starlette.responses import Response, StreamingResponse

from loramerge_client import Client, InvalidResponseError, JobNotSucceededError, UnsafeArtifactError
from tests.loramerge_client.conftest import answer, error, job
from tests.loramerge_client.test_artifact import GOOD, TOP, tar_of

ARTIFACT = "/v1/merges/job-1/artifact"
FILES = [{"path": "adapter_config.json", "size": 8}, {"path": "sub/merge_diagnostics.json", "size": 10000}]
DONE = job(status="succeeded", result={"uri": "file:///x", "files": FILES, "summary": {}, "artifact_url": ARTIFACT})


def tar_response(data: bytes, *, drop_after: int | None = None):
    def handler(request):
        if drop_after is None:
            return Response(data, media_type="application/x-tar")

        async def body():
            yield data[:drop_after]
            raise RuntimeError("the stand-in drops the download")

        return StreamingResponse(body(), media_type="application/x-tar")

    return handler


@pytest.fixture
def client(standin):
    client = Client(standin.url)
    client.sleep = lambda s: None
    standin.plan("GET", "/v1/merges/job-1", answer(200, DONE))
    return client


def test_a_dropped_download_starts_over(standin, client, tmp_path):
    data = tar_of(*GOOD)
    standin.plan("GET", ARTIFACT, tar_response(data, drop_after=3000), tar_response(data))
    out = client.download("job-1", tmp_path / "merged")
    assert (out / "sub" / "merge_diagnostics.json").stat().st_size == 10000
    assert len(standin.calls("GET", ARTIFACT)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_an_unsafe_tar_from_the_server_writes_nothing(standin, client, tmp_path):
    standin.plan("GET", ARTIFACT, tar_response(tar_of(*GOOD, (f"{TOP}/x", tarfile.SYMTYPE, b"/etc/passwd"))))
    with pytest.raises(UnsafeArtifactError):
        client.download("job-1", tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


def test_a_tar_missing_a_listed_file_is_refused(standin, client, tmp_path):
    standin.plan("GET", ARTIFACT, tar_response(tar_of(GOOD[0])))
    with pytest.raises(InvalidResponseError, match="lacks 'sub/merge_diagnostics.json'"):
        client.download("job-1", tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


def test_the_servers_refusal_is_typed(standin, client, tmp_path):
    standin.plan("GET", ARTIFACT, error(409, "job_not_succeeded", "job job-1 is running"))
    with pytest.raises(JobNotSucceededError):
        client.download("job-1", tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []
