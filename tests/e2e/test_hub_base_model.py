"""A base model from the Hub (issue 13), through the real stack: the API checks ``output.base_model``
like a source, the worker pins it to a commit, fetches its safetensors shards one file at a time into
the Hub cache (huggingface_hub against the Hub stand-in over HTTP), merges and records the sha."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from support.factories import write_adapter_folder, write_base_model_folder
from tests.e2e.conftest import HUB_TOKEN, wait_terminal

WEIGHTS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _result(job: dict) -> Path:
    return Path(urlparse(job["result"]["uri"]).path)


@pytest.fixture(scope="module")
def base_repo(stack, tmp_path_factory):
    """``acme/base-tiny`` (private): ``main`` holds other weights, branch ``v1`` the same files as the
    local folder ``local``, plus files the worker must not fetch (a pickle, a README, a subfolder)."""
    scratch = tmp_path_factory.mktemp("hub-base")
    local = write_base_model_folder(stack.roots / "base-tiny", shards=2)
    stack.hub.add_repo("acme/base-tiny", _files(write_base_model_folder(scratch / "other", seed=9, shards=2)), private=True)
    extra = {"README.md": b"# tiny", "pytorch_model.bin": b"not read", "onnx/model.onnx": b"not read"}
    v1 = stack.hub.repos["acme/base-tiny"].commit({**_files(local), **extra}, "v1", branch="v1")
    adapter = write_adapter_folder(stack.roots / "adapter-for-hub-base", seed=4)
    return {"local": local, "v1": v1, "adapter": str(adapter)}


def _merged_model(adapter: str, base_model: str, revision: str | None = None) -> dict:
    output = {"kind": "merged_model", "base_model": base_model, "base_model_revision": revision}
    return {"method": "task_arithmetic", "adapters": [{"source": adapter}], "output": output}


def test_hub_base_model_is_pinned_and_merges_like_the_local_folder(stack, alice, base_repo):
    hub_job = alice.post(
        "/v1/merges", json=_merged_model(base_repo["adapter"], "acme/base-tiny", "v1"), headers={"X-Hub-Token": HUB_TOKEN}
    )
    assert hub_job.status_code == 202, hub_job.text  # a private repo: the per-job token is kept for the base model alone
    local_job = alice.post("/v1/merges", json=_merged_model(base_repo["adapter"], str(base_repo["local"])))
    assert local_job.status_code == 202, local_job.text
    hub_done, local_done = wait_terminal(alice, hub_job.json()["id"]), wait_terminal(alice, local_job.json()["id"])
    assert hub_done["status"] == local_done["status"] == "succeeded", (hub_done, local_done)

    assert hub_done["base_model"] == {
        "source": "acme/base-tiny",
        "requested_revision": "v1",
        "revision": base_repo["v1"],
        "weight": 1.0,
    }
    assert local_done["base_model"]["source"] == str(base_repo["local"]) and local_done["base_model"]["revision"] is None
    provenance = json.loads((_result(hub_done) / "merge_spec.json").read_text())
    assert provenance["spec"]["output"]["base_model"] == "acme/base-tiny"
    assert provenance["spec"]["output"]["base_model_revision"] == base_repo["v1"]  # the commit, not the branch
    assert hub_done["spec"]["output"]["base_model_revision"] == "v1"  # the request as sent
    card = (_result(hub_done) / "README.md").read_text()
    assert "acme/base-tiny" in card and base_repo["v1"] in card  # the model card names the pinned commit

    hub_files = {f["path"] for f in hub_done["result"]["files"]}
    local_files = {f["path"] for f in local_done["result"]["files"]}
    assert hub_files == local_files
    assert {"config.json", "tokenizer_config.json"} <= hub_files and not {"pytorch_model.bin", "onnx"} & hub_files
    for name in hub_files - {"README.md", "merge_spec.json", "merge_diagnostics.json"}:
        assert (_result(hub_done) / name).read_bytes() == (_result(local_done) / name).read_bytes(), name

    fetched = stack.hub.fetched("acme/base-tiny")
    assert sorted(fetched) == sorted(["config.json", "tokenizer_config.json", *WEIGHTS])  # once each, nothing else
    assert HUB_TOKEN in stack.hub.seen_tokens


def test_adapter_output_stages_a_hub_base_model_too(stack, alice, base_repo):
    spec = {
        "method": "task_arithmetic",
        "adapters": [{"source": base_repo["adapter"]}],
        "output": {"base_model": "acme/base-tiny", "base_model_revision": base_repo["v1"]},
    }
    done = wait_terminal(alice, alice.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN}).json()["id"])
    assert done["status"] == "succeeded", done
    assert done["base_model"]["revision"] == base_repo["v1"]


def test_a_shard_the_hub_fails_to_serve_is_retried(stack, alice, base_repo, tmp_path):
    stack.hub.add_repo("acme/base-flaky", _files(write_base_model_folder(tmp_path / "flaky", shards=2)))
    stack.hub.fail("GET", "/acme/base-flaky/resolve/", 503, times=1)
    done = wait_terminal(
        alice, alice.post("/v1/merges", json=_merged_model(base_repo["adapter"], "acme/base-flaky")).json()["id"]
    )
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done


@pytest.mark.parametrize(
    ("base_model", "revision", "expected"),
    [
        ("acme/no-such-base", None, "repository not found"),
        ("acme/base-tiny", "no-such-branch", "revision not found"),
        ("acme/base-pickle", None, "no .safetensors weights (only pickle weights"),
    ],
)
def test_unusable_hub_base_models_fail_with_invalid_base_model(stack, alice, base_repo, base_model, revision, expected):
    stack.hub.add_repo("acme/base-pickle", {"config.json": b"{}", "pytorch_model.bin": b"pickle"})
    spec = _merged_model(base_repo["adapter"], base_model, revision)
    done = wait_terminal(alice, alice.post("/v1/merges", json=spec, headers={"X-Hub-Token": HUB_TOKEN}).json()["id"])
    assert (done["status"], done["error"]["code"], done["attempts"]) == ("failed", "invalid_base_model", 1), done
    assert expected in done["error"]["message"] and "output.base_model" in done["error"]["message"]
    assert done["result"] is None and done["base_model"] is None


@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ({"kind": "merged_model", "base_model": "{roots}/base-tiny", "base_model_revision": "main"}, "invalid_source",
         "output.base_model_revision: only a Hub base model has a revision"),
        ({"kind": "merged_model", "base_model": "acme/../base"}, "invalid_source", "output.base_model: 'acme/../base' is not a Hub ID"),
        ({"kind": "merged_model", "base_model": "not a hub id"}, "invalid_source", "output.base_model: 'not a hub id' is not a Hub ID"),
        ({"kind": "merged_model", "base_model": "acme/base", "base_model_revision": "v1\n"}, "invalid_source",
         "output.base_model_revision: revision 'v1\\n' is not a branch"),
        ({"kind": "merged_model", "base_model": "s3://bucket/base"}, "invalid_source", "s3:// is not supported"),
        ({"base_model": "/etc"}, "local_path_not_allowed", "output.base_model: '/etc' is outside the allowed local roots"),
        ({"base_model_revision": "main"}, "invalid_request", "output.base_model_revision needs output.base_model"),
    ],
)  # fmt: skip
def test_base_model_strings_are_checked_at_submission(stack, alice, base_repo, output, code, expected):
    output = {k: v.format(roots=stack.roots) if isinstance(v, str) else v for k, v in output.items()}
    spec = {"method": "task_arithmetic", "adapters": [{"source": base_repo["adapter"]}], "output": output}
    response = alice.post("/v1/merges", json=spec)
    assert (response.status_code, response.json()["error"]["code"]) == (422, code), response.text
    assert expected in response.json()["error"]["message"]
