"""POST /v1/inits (OSRM initialisation) through the real stack: bad inputs are 422s with their codes,
and a job runs end to end (a tiny Llama with a locally built tokenizer, inline texts and a .jsonl file),
its adapters equal merge_core's for the same spec, its events and listing are an init job's."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
from safetensors.torch import load_file

from merge_core.osrm import run_init
from merge_core.osrm.spec import MAX_SAMPLES_PER_TASK, InitSpec
from support.tiny_llama import make_base
from support.tiny_tokenizer import make_word_tokenizer
from tests.e2e.conftest import wait_terminal


@pytest.fixture(scope="module")
def base(stack):
    folder = stack.roots / "osrm-llama"
    if not folder.exists():
        make_base(folder)
        make_word_tokenizer(folder, 97, bos=True)
    return folder


def texts(t: int, n: int = 6) -> list[str]:
    return [" ".join(f"w{(t * 40 + i * 3 + j) % 90}" for j in range(4 + i % 3)) for i in range(n)]


def body(base, **changes) -> dict:
    return {
        "base_model": str(base),
        "target_modules": ["q_proj", "v_proj"],
        "r": 4,
        "lora_alpha": 8,
        "tasks": [{"name": "alpha", "texts": texts(0)}, {"name": "beta", "texts": texts(1)}],
        **changes,
    }


@pytest.mark.parametrize(
    "change, code, words",
    [
        ({"tasks": [{"name": "a", "texts": []}, {"name": "b", "texts": ["w1"]}]}, "invalid_samples", "no samples"),
        ({"tasks": [{"name": "a", "texts": [" "]}, {"name": "b", "texts": ["w1"]}]}, "invalid_samples", "empty text"),
        (
            {"tasks": [{"name": "a", "texts": ["w1"] * (MAX_SAMPLES_PER_TASK + 1)}, {"name": "b", "texts": ["w1"]}]},
            "too_many_samples",
            f"at most {MAX_SAMPLES_PER_TASK}",
        ),
        ({"tasks": [{"name": "a", "texts": ["w1"]}, {"name": "a", "texts": ["w2"]}]}, "invalid_samples", "used twice"),
        ({"tasks": [{"name": "a", "texts": ["w1"]}]}, "invalid_samples", "at least 2"),
        ({"target_modules": ["q_proj", "nope"]}, "unknown_module", "'nope'"),
        ({"target_modules": ["embed_tokens"]}, "unknown_module", "not a linear layer"),
        ({"base_model": "/etc"}, "local_path_not_allowed", "base_model"),
        ({"base_model": "acme/base", "base_model_revision": "v1\n"}, "invalid_source", "base_model_revision"),
        (
            {"tasks": [{"name": "a", "file": "s3://bucket/a.jsonl"}, {"name": "b", "texts": ["w1"]}]},
            "invalid_source",
            "tasks[0].file",
        ),
        (
            {"tasks": [{"name": "a", "file": "/etc/a.jsonl"}, {"name": "b", "texts": ["w1"]}]},
            "local_path_not_allowed",
            "tasks[0]",
        ),
        ({"r": 0}, "invalid_request", "r"),
        ({"params": {"variant": "nope"}}, "invalid_request", "variant"),
        ({"output": {"destination": "ftp://x"}}, "invalid_destination", "output.destination"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_inputs_are_422_with_codes(alice, base, change, code, words):
    response = alice.post("/v1/inits", json=body(base, **change))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_missing_task_file_is_a_422(stack, alice, base):
    tasks = [{"name": "a", "file": str(stack.roots / "missing.jsonl")}, {"name": "b", "texts": ["w1"]}]
    error = alice.post("/v1/inits", json=body(base, tasks=tasks)).json()["error"]
    assert error["code"] == "source_not_found" and "tasks[0].file" in error["message"]


def test_init_job_end_to_end(stack, alice, bob, base, tmp_path):
    (stack.roots / "gamma.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts(2)) + "\n")
    request = body(base)
    request["tasks"].append({"name": "gamma", "file": str(stack.roots / "gamma.jsonl")})
    request["params"] = {"batch_size": 4}
    response = alice.post("/v1/inits", json=request)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/inits/{job['id']}"
    assert (job["kind"], job["method"], job["queue"]) == ("init", "osrm", "gpu")

    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert alice.get(f"/v1/inits/{job['id']}").json()["status"] == "succeeded"
    assert bob.get(f"/v1/inits/{job['id']}").status_code == 404
    assert done["base_model"]["source"] == str(base)
    files = {f["path"] for f in done["result"]["files"]}
    for task in ("alpha", "beta", "gamma"):
        assert {f"{task}/adapter_model.safetensors", f"{task}/adapter_config.json", f"{task}/README.md"} <= files
    assert "osrm_init.json" in files
    assert done["result"]["summary"]["tasks"] == 3 and done["result"]["summary"]["interference_ratio_max"] < 1e-9
    assert done["result"]["artifact_url"] == f"/v1/inits/{job['id']}/artifact"

    listed = [j["id"] for j in alice.get("/v1/inits").json()["jobs"]]
    assert job["id"] in listed and job["id"] not in [j["id"] for j in alice.get("/v1/merges").json()["jobs"]]
    types = [e["type"] for e in alice.get(f"/v1/inits/{job['id']}/events").json()["data"]]
    assert types[0] == "job.accepted" and types[-1] == "job.succeeded"

    spec = InitSpec.model_validate({k: v for k, v in request.items() if k != "output"})
    gamma = [json.loads(line)["text"] for line in (stack.roots / "gamma.jsonl").read_text().splitlines()]
    direct = run_init(spec, tmp_path / "direct", base_model_dir=base, files={"gamma": gamma})
    tar_bytes = alice.get(done["result"]["artifact_url"]).content
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for task in direct.tasks:
            member = tar.extractfile(f"loramerge-{job['id']}/{task}/adapter_model.safetensors").read()
            (tmp_path / f"{task}.safetensors").write_bytes(member)
            served, mine = (
                load_file(tmp_path / f"{task}.safetensors"),
                load_file(direct.out_dir / task / "adapter_model.safetensors"),
            )
            assert served.keys() == mine.keys()
            for key in mine:
                torch.testing.assert_close(served[key], mine[key], rtol=0, atol=0)


def test_cancel_a_queued_or_running_init(alice, base):
    job = alice.post("/v1/inits", json=body(base, params={"batch_size": 1})).json()
    cancelled = alice.delete(f"/v1/inits/{job['id']}")
    assert cancelled.status_code in (202, 409), cancelled.text
    done = wait_terminal(alice, job["id"])
    assert done["status"] in ("cancelled", "succeeded")
