"""A base model from the Hub (issue 13): worker/sources/hub.py's ``fetch_hub_base_model`` against the Hub
stand-in over real HTTP (huggingface_hub itself, pointed at the stand-in with ``endpoint``). The whole
job, API to result, is in tests/e2e/test_hub_base_model.py."""

from __future__ import annotations

import re
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from merge_core.errors import BaseModelError, MergeCancelledError
from support.factories import write_base_model_folder
from support.standins.hub import HubStandIn
from worker.errors import SourceForbiddenError, SourceUnavailableError
from worker.hub import hub_errors
from worker.sources import FetchContext
from worker.sources.hub import fetch_hub_base_model

TOKEN = "hf_worker_test_token"


@pytest.fixture(scope="module")
def hub():
    stand_in = HubStandIn(tokens={TOKEN})
    url = stand_in.start()
    yield stand_in, url
    stand_in.stop()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # tests/conftest.py sets it for the rest


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _ctx(tmp_path: Path, check=lambda: None, token: str | None = None) -> FetchContext:
    return FetchContext(
        allow_pickle=False,
        max_adapter_bytes=None,
        hub_token=token,
        hub_cache_dir=tmp_path / "hub-cache",
        s3_endpoint_url=None,
        confinement=None,
        check=check,
    )


def test_shards_are_fetched_one_by_one_at_the_pinned_commit(hub, tmp_path):
    stand_in, url = hub
    base = write_base_model_folder(tmp_path / "base", shards=3)
    stand_in.add_repo("acme/sharded", {**_files(write_base_model_folder(tmp_path / "other", seed=5)), "README.md": b"# m"})
    files = {**_files(base), "README.md": b"# base", "pytorch_model.bin": b"pickle", "onnx/model.onnx": b"x"}
    v1 = stand_in.repos["acme/sharded"].commit(files, "v1", branch="v1")
    stand_in.repos["acme/sharded"].commit({"config.json": b"{}"}, "later", branch="v1")  # the branch moves on
    progress = []
    fetched = fetch_hub_base_model(
        "acme/sharded", v1, into=tmp_path / "staged", ctx=_ctx(tmp_path), progress=lambda *p: progress.append(p), endpoint=url
    )
    assert fetched.revision == v1 and fetched.path == tmp_path / "staged"
    shards = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert fetched.files == ["model.safetensors.index.json", "config.json", "tokenizer_config.json", *shards]
    assert stand_in.fetched("acme/sharded") == fetched.files  # no README, pickle or subfolder; each file once
    assert sorted(p.name for p in fetched.path.iterdir()) == sorted(fetched.files)
    assert all((fetched.path / name).read_bytes() == (base / name).read_bytes() for name in fetched.files)
    assert all((fetched.path / name).resolve().is_relative_to((tmp_path / "hub-cache").resolve()) for name in fetched.files)
    assert progress[-1] == ("fetch_base_model", 6, 6) and [p[1] for p in progress] == [1, 2, 3, 4, 5, 6]


def test_a_single_file_model_on_a_branch(hub, tmp_path):
    stand_in, url = hub
    stand_in.add_repo("acme/single-main", _files(write_base_model_folder(tmp_path / "main", seed=1)))
    sha = stand_in.repos["acme/single-main"].commit(_files(write_base_model_folder(tmp_path / "b", seed=2)), "b", branch="dev")
    fetched = fetch_hub_base_model("acme/single-main", "dev", into=tmp_path / "staged", ctx=_ctx(tmp_path), endpoint=url)
    assert fetched.revision == sha
    assert (fetched.path / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_a_cancel_stops_between_files(hub, tmp_path):
    stand_in, url = hub
    stand_in.add_repo("acme/to-cancel", _files(write_base_model_folder(tmp_path / "base", shards=4)))
    checks = []

    def check() -> None:
        checks.append(1)
        if len(checks) > 3:
            raise MergeCancelledError("cancelled while fetching sources", stage="fetch")

    with pytest.raises(MergeCancelledError):
        fetch_hub_base_model("acme/to-cancel", None, into=tmp_path / "staged", ctx=_ctx(tmp_path, check), endpoint=url)
    assert len(stand_in.fetched("acme/to-cancel")) == 2  # the index and one file, then the check said stop


@pytest.mark.parametrize(
    ("files", "revision", "expected"),
    [
        ({"pytorch_model.bin": b"pickle", "config.json": b"{}"}, None, "no .safetensors weights (only pickle weights"),
        ({"config.json": b"{}"}, None, "no .safetensors weights"),
        ({"model.safetensors.index.json": b'{"weight_map": {"w": "gone.safetensors"}}'}, None, "which the commit does not have"),
        ({"model.safetensors.index.json": b'{"weight_map": {"w": "../x.safetensors"}}'}, None, "not a .safetensors file"),
        ({"model.safetensors.index.json": b"not json"}, None, "not valid JSON"),
        ({"model.safetensors": b"x"}, "no-such-branch", "revision not found"),
    ],
)
def test_unusable_base_models_are_invalid_base_model(hub, tmp_path, files, revision, expected):
    stand_in, url = hub
    repo = f"acme/bad-{len(stand_in.repos)}"
    stand_in.add_repo(repo, files)
    with pytest.raises(BaseModelError, match=re.escape(expected)) as caught:
        fetch_hub_base_model(repo, revision, into=tmp_path / "staged", ctx=_ctx(tmp_path), endpoint=url)
    assert caught.value.code == "invalid_base_model" and "output.base_model" in caught.value.message


def test_missing_and_private_repos(hub, tmp_path):
    stand_in, url = hub
    with pytest.raises(BaseModelError, match="repository not found"):
        fetch_hub_base_model("acme/nothing-here", None, into=tmp_path / "s1", ctx=_ctx(tmp_path), endpoint=url)
    stand_in.add_repo("acme/private-base", _files(write_base_model_folder(tmp_path / "base")), private=True)
    with pytest.raises(BaseModelError, match="private without a token"):
        fetch_hub_base_model("acme/private-base", None, into=tmp_path / "s2", ctx=_ctx(tmp_path), endpoint=url)
    fetched = fetch_hub_base_model("acme/private-base", None, into=tmp_path / "s3", ctx=_ctx(tmp_path, token=TOKEN), endpoint=url)
    assert (fetched.path / "model.safetensors").is_file()


@pytest.mark.parametrize("status", [500, 503])
def test_hub_outages_while_fetching_a_shard_are_transient(hub, tmp_path, status):
    stand_in, url = hub
    repo = f"acme/flaky-{status}"
    stand_in.add_repo(repo, _files(write_base_model_folder(tmp_path / "base", shards=2)))
    stand_in.fail("GET", f"/{repo}/resolve/", status, times=1)
    with pytest.raises(SourceUnavailableError):
        fetch_hub_base_model(repo, None, into=tmp_path / "s1", ctx=_ctx(tmp_path), endpoint=url)
    fetched = fetch_hub_base_model(repo, None, into=tmp_path / "s2", ctx=_ctx(tmp_path), endpoint=url)  # the retry
    assert len(fetched.files) == 5


def test_an_unreachable_hub_is_transient_not_a_missing_file():
    """hf_hub_download raises LocalEntryNotFoundError when a file's metadata request keeps failing (after
    its own backoff) and nothing is cached: a Hub outage, retried, not a missing file."""
    with pytest.raises(SourceUnavailableError), hub_errors("org/name", missing=lambda m: BaseModelError(m)):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
    with pytest.raises(BaseModelError, match="base model file 'x' missing"):
        with hub_errors("org/name", missing=lambda m: BaseModelError(m), what="base model file 'x'"):
            raise EntryNotFoundError("404")


def test_forbidden_is_not_missing(hub, tmp_path):
    stand_in, url = hub
    stand_in.add_repo("acme/forbidden", _files(write_base_model_folder(tmp_path / "base")))
    stand_in.fail("GET", "/api/models/acme/forbidden", 403, times=1)
    with pytest.raises(SourceForbiddenError):
        fetch_hub_base_model("acme/forbidden", None, into=tmp_path / "staged", ctx=_ctx(tmp_path), endpoint=url)
