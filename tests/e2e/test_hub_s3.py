"""Hub and S3 sources and sinks through the real clients: huggingface_hub against the Hub stand-in
(HF_ENDPOINT), boto3 against moto's S3 server."""

from __future__ import annotations

import uuid

import boto3
import pytest

from jobs.store import connect
from support.factories import write_adapter_folder
from tests.e2e.conftest import HUB_TOKEN, wait_terminal


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def hub_repos(stack, tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    stack.hub.add_repo("acme/lora-a", _files(write_adapter_folder(base / "a", seed=11)))
    repo_b = _files(write_adapter_folder(base / "b", seed=12))
    first = stack.hub.add_repo("acme/lora-b", repo_b, private=True)
    stack.hub.repos["acme/lora-b"].commit(_files(write_adapter_folder(base / "b2", seed=13)), "v2")
    return {"b_first": first}


def test_hub_sources_are_pinned_and_sink_commits_once(stack, alice, hub_repos):
    spec = {
        "method": "do_merging",
        "adapters": [{"source": "acme/lora-a"}, {"source": "acme/lora-b", "revision": hub_repos["b_first"]}],
        "output": {"destination": "hf://acme/merged"},
    }
    response = alice.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN})
    assert response.status_code == 202, response.text
    done = wait_terminal(alice, response.json()["id"])
    assert done["status"] == "succeeded", done
    a_sha = stack.hub.repos["acme/lora-a"].refs["main"]
    assert [s["revision"] for s in done["sources"]] == [a_sha, hub_repos["b_first"]]
    repo = stack.hub.repos["acme/merged"]
    assert repo.private is True
    assert done["result"]["uri"] == f"hf://acme/merged@{repo.refs['main']}"
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json"} <= set(repo.files("main"))
    assert stack.hub.commit_messages[-1].startswith(f"loramerge job {done['id']}")
    assert done["result"]["artifact_url"] is None
    assert HUB_TOKEN in stack.hub.seen_tokens


def test_per_job_token_is_never_stored_or_echoed(stack, alice, hub_repos):
    spec = {"method": "task_arithmetic", "adapters": [{"source": "acme/lora-b"}]}
    job = alice.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN}).json()
    pending = connect(stack.settings.redis_url).get(f"lm:job:{job['id']}")
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert HUB_TOKEN not in pending  # sealed while queued
    client = connect(stack.settings.redis_url)
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1),
                 "stream": lambda k: client.xrange(k)}[kind](key)  # fmt: skip
        assert HUB_TOKEN not in str(value), key
    responses = [alice.get(f"/v1/merges/{job['id']}").text, alice.get("/v1/merges?limit=100").text]
    assert all(HUB_TOKEN not in text for text in responses)
    assert HUB_TOKEN not in stack.worker_log.read_text()


def test_private_repo_without_token_fails_at_once(stack, alice, hub_repos):
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "acme/lora-b"}]}).json()
    done = wait_terminal(alice, job["id"])
    assert (done["status"], done["error"]["code"], done["attempts"]) == ("failed", "source_not_found", 1)


def test_transient_hub_errors_are_retried(stack, alice, hub_repos):
    stack.hub.add_repo("acme/flaky", stack.hub.repos["acme/lora-a"].files("main"))
    stack.hub.fail("GET", "/api/models/acme/flaky", 503, times=2)
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "acme/flaky"}]}).json()
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3


def test_missing_repo_fails_without_retry(stack, alice):
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "acme/does-not-exist"}]}).json()
    done = wait_terminal(alice, job["id"])
    assert (done["status"], done["error"]["code"], done["attempts"]) == ("failed", "source_not_found", 1)


@pytest.fixture(scope="module")
def bucket(stack, tmp_path_factory):
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    name = f"loras-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    for i in range(2):
        folder = write_adapter_folder(tmp_path_factory.mktemp("s3") / f"a{i}", seed=20 + i)
        for path in folder.iterdir():
            s3.upload_file(str(path), name, f"adapters/a{i}/{path.name}")
    s3.put_object(Bucket=name, Key="taken/other.txt", Body=b"someone else's")
    return s3, name


def test_s3_source_and_sink(stack, alice, bucket):
    s3, name = bucket
    spec = {
        "method": "task_arithmetic",
        "adapters": [{"source": f"s3://{name}/adapters/a0"}, {"source": f"s3://{name}/adapters/a1"}],
        "output": {"destination": f"s3://{name}/merged/run1"},
    }
    done = wait_terminal(alice, alice.post("/v1/merges", json=spec).json()["id"])
    assert done["status"] == "succeeded", done
    assert all(s["revision"].startswith("etag:") for s in done["sources"])
    assert done["result"]["uri"] == f"s3://{name}/merged/run1"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="merged/run1/")["Contents"]}
    assert {"merged/run1/adapter_model.safetensors", "merged/run1/README.md"} <= keys


def test_s3_errors(stack, alice, bucket):
    s3, name = bucket
    taken = {
        "method": "task_arithmetic",
        "adapters": [{"source": f"s3://{name}/adapters/a0"}],
        "output": {"destination": f"s3://{name}/taken"},
    }
    done = wait_terminal(alice, alice.post("/v1/merges", json=taken).json()["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", "destination_exists")
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="taken/")["Contents"]} == {"taken/other.txt"}
    missing = {"method": "task_arithmetic", "adapters": [{"source": "s3://no-such-bucket-xyz/a"}]}
    done = wait_terminal(alice, alice.post("/v1/merges", json=missing).json()["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", "source_not_found")


def test_failed_hub_commit_leaves_no_repo_behind(stack, alice, hub_repos):
    stack.hub.fail("POST", "/api/models/acme/halfmade/commit", 500, times=stack.settings.max_attempts)
    spec = {"method": "task_arithmetic", "adapters": [{"source": "acme/lora-a"}], "output": {"destination": "hf://acme/halfmade"}}
    done = wait_terminal(alice, alice.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN}).json()["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", "destination_unavailable"), done
    assert done["attempts"] == stack.settings.max_attempts
    assert "acme/halfmade" not in stack.hub.repos
