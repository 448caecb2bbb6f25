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


# -- an init job (OSRM, POST /v1/inits) whose base model is a Hub ID with a revision ---------------------
LLAMA_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}  # at least these


@pytest.fixture(scope="module")
def llama_repo(stack, tmp_path_factory):
    """``acme/osrm-llama`` (private): ``main`` holds another tiny Llama, branch ``v1`` the one in ``local``
    (weights, config, tokenizer) plus files the worker must not fetch."""
    from support.tiny_llama import make_base
    from support.tiny_tokenizer import make_word_tokenizer

    scratch = tmp_path_factory.mktemp("hub-llama")
    local, other = make_base(scratch / "v1", seed=0), make_base(scratch / "main", seed=7)
    for folder in (local, other):
        make_word_tokenizer(folder, 97, bos=True)
    assert LLAMA_FILES <= set(_files(local))
    stack.hub.add_repo("acme/osrm-llama", _files(other), private=True)
    extra = {"README.md": b"# tiny", "pytorch_model.bin": b"not read", "onnx/model.onnx": b"not read"}
    v1 = stack.hub.repos["acme/osrm-llama"].commit({**_files(local), **extra}, "v1", branch="v1")
    return {"local": local, "v1": v1}


def _init(revision: str | None, target_modules: list[str] | None = None) -> dict:
    words = [[" ".join(f"w{(t * 30 + i * 7 + j) % 90}" for j in range(5)) for i in range(5)] for t in range(3)]
    return {
        "base_model": "acme/osrm-llama",
        "base_model_revision": revision,
        "target_modules": target_modules or ["q_proj", "v_proj"],
        "r": 4,
        "lora_alpha": 8,
        "tasks": [{"name": name, "texts": words[t]} for t, name in enumerate(("sst2", "mnli", "qnli"))],
    }


def test_init_job_pins_a_hub_base_model_and_names_the_commit(stack, alice, llama_repo, tmp_path):
    from safetensors.torch import load_file

    from merge_core.osrm import run_init
    from merge_core.osrm.spec import InitSpec

    before = len(stack.hub.fetched("acme/osrm-llama"))
    response = alice.post("/v1/inits", json=_init("v1"), headers={"X-Hub-Token": HUB_TOKEN})
    assert response.status_code == 202, response.text  # a private repo: the job's token is kept for the base model
    done = wait_terminal(alice, response.json()["id"], timeout=180)
    assert (done["status"], done["kind"]) == ("succeeded", "init"), done

    sha = llama_repo["v1"]
    assert done["base_model"] == {"source": "acme/osrm-llama", "requested_revision": "v1", "revision": sha, "weight": 1.0}
    assert done["spec"]["base_model_revision"] == "v1"  # the request as sent
    out = _result(done)
    assert json.loads((out / "osrm_init.json").read_text())["base_model_revision"] == sha
    for task in ("sst2", "mnli", "qnli"):
        card = (out / task / "README.md").read_text()
        assert f"base model: `acme/osrm-llama` at `{sha}`" in card and "base_model: acme/osrm-llama" in card, card
        assert f'from_pretrained("acme/osrm-llama", revision="{sha}")' in card  # the snippet loads that commit
        config = json.loads((out / task / "adapter_config.json").read_text())
        assert (config["base_model_name_or_path"], config["revision"]) == ("acme/osrm-llama", sha)

    # the v1 weights and tokenizer were used (main's differ): the adapters equal a local run over v1's files
    spec = InitSpec.model_validate({**_init(sha)})
    direct = run_init(spec, tmp_path / "direct", base_model_dir=llama_repo["local"])
    for task in direct.tasks:
        served, mine = (
            load_file(out / task / "adapter_model.safetensors"),
            load_file(direct.out_dir / task / "adapter_model.safetensors"),
        )
        assert served.keys() == mine.keys() and all(served[k].equal(mine[k]) for k in mine), task
    fetched = stack.hub.fetched("acme/osrm-llama")[before:]
    assert sorted(fetched) == sorted(p.name for p in llama_repo["local"].iterdir())  # once each; no pickle, README, subfolder
    assert HUB_TOKEN in stack.hub.seen_tokens


@pytest.mark.parametrize(
    ("revision", "target_modules", "code", "expected"),
    [
        ("v1", ["q_proj", "nope"], "unknown_module", "'nope'"),  # a Hub base model's modules: checked by the worker
        ("no-such-branch", None, "invalid_base_model", "base_model: "),
    ],
)
def test_init_job_with_an_unusable_hub_base_model_fails_with_its_code(
    stack, alice, llama_repo, revision, target_modules, code, expected
):
    response = alice.post("/v1/inits", json=_init(revision, target_modules), headers={"X-Hub-Token": HUB_TOKEN})
    assert response.status_code == 202, response.text
    done = wait_terminal(alice, response.json()["id"], timeout=180)
    assert (done["status"], done["error"]["code"], done["attempts"]) == ("failed", code, 1), done
    assert expected in done["error"]["message"] and done["result"] is None
