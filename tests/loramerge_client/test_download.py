"""download(): a dropped transfer starts over, an unsafe or incomplete tar leaves nothing behind."""

from __future__ import annotations

import tarfile

import pytest
from starlette.responses import Response, StreamingResponse

from loramerge_client import Client, InvalidResponseError, JobNotSucceededError, UnsafeArtifactError
from tests.loramerge_client.conftest import StandIn, answer, error, job
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


@pytest.fixture(scope="module")
def thief():
    """Another server on the same host, another port: it must never see a request, least of all the key."""
    other = StandIn()
    other.url = other.server.start()
    yield other
    other.server.stop()


def test_an_artifact_url_on_another_origin_is_refused_and_never_requested(standin, thief, tmp_path):
    client = Client(standin.url, api_key="key-never-elsewhere")
    client.sleep = lambda s: None
    thief.plan("GET", "/steal", tar_response(tar_of(*GOOD)))
    other = thief.url.removeprefix("http://")
    for url in (f"HTTP://{other}/steal", f"Http://{other}/steal", f"http://{other}/steal", f"https://{standin.url[7:]}/x"):
        done = {**DONE, "result": {**DONE["result"], "artifact_url": url}}
        standin.plan("GET", "/v1/merges/job-1", answer(200, done))
        with pytest.raises(InvalidResponseError, match="not on this server"):
            client.download("job-1", tmp_path / "merged")
    assert thief.requests == [] and list(tmp_path.iterdir()) == []


def test_an_artifact_url_on_this_server_is_followed_however_it_is_written(standin, tmp_path):
    client = Client(standin.url)
    client.sleep = lambda s: None
    standin.plan("GET", ARTIFACT, tar_response(tar_of(*GOOD)))
    host = standin.url.removeprefix("http://")
    for i, url in enumerate((f"HTTP://{host}{ARTIFACT}", f"//{host}{ARTIFACT}", ARTIFACT)):
        done = {**DONE, "result": {**DONE["result"], "artifact_url": url}}
        standin.plan("GET", "/v1/merges/job-1", answer(200, done))
        out = client.download("job-1", tmp_path / f"merged-{i}")
        assert (out / "adapter_config.json").is_file()
