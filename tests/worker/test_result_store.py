"""The local result store under hostile files: a symlink planted in it serves and deletes nothing of
another job, and a folder planted where a job's result goes is replaced by the job's own result."""

from __future__ import annotations

import pytest

from jobs.results import local_folder_of, remove_local_result
from worker.sinks import PublishContext
from worker.sinks.local import publish_local


def test_a_symlink_in_the_store_names_no_result(tmp_path):
    store = tmp_path / "results"
    (store / "job-b").mkdir(parents=True)
    (store / "job-b" / "adapter_model.safetensors").write_bytes(b"b")
    (store / "job-c").symlink_to(store / "job-b")  # planted: job C's name, job B's files
    assert local_folder_of((store / "job-c").as_uri(), store) is None
    assert remove_local_result((store / "job-c").as_uri(), store) is False
    assert (store / "job-b" / "adapter_model.safetensors").exists()
    assert local_folder_of((store / "job-b").as_uri(), store) == store.resolve() / "job-b"


@pytest.mark.parametrize("planted", ["folder", "symlink"])
def test_publishing_replaces_what_was_planted_at_the_jobs_result(tmp_path, planted):
    store, staged, outside = tmp_path / "results", tmp_path / "staging" / "out", tmp_path / "outside"
    staged.mkdir(parents=True)
    (staged / "adapter_model.safetensors").write_bytes(b"merged")
    outside.mkdir()
    (outside / "keep").write_bytes(b"not ours")
    store.mkdir()
    if planted == "folder":
        (store / "job").mkdir()
        (store / "job" / "planted").write_bytes(b"x" * 100)
    else:
        (store / "job").symlink_to(outside)
    ctx = PublishContext(
        job_id="job", destination=None, private=True, hub_token=None, results_dir=store, s3_endpoint_url=None, commit_message=""
    )
    published = publish_local(staged, ctx=ctx)
    assert [f.path for f in published.files] == ["adapter_model.safetensors"]
    assert not (store / "job").is_symlink() and (store / "job" / "adapter_model.safetensors").read_bytes() == b"merged"
    assert (outside / "keep").exists()  # a planted link's target is not deleted
    assert not staged.exists() and not staged.with_name("out.replaced").exists()
