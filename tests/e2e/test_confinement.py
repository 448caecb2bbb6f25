"""Issue 11 end to end: a symlink planted inside an allowed root must not let a job read a file outside
the roots (nor the service's own data dir). The folder passes the API's check; the worker refuses."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from support.factories import SHAPES, write_adapter_folder
from tests.e2e.conftest import wait_terminal

SECRET = b"issue-11-outside-bytes-7f3a9c"


def _leaks(job: dict, secret: bytes) -> list[str]:
    text = json.dumps(job)
    return [s for s in (secret.decode(), hashlib.sha256(secret).hexdigest()) if s in text]


@pytest.mark.parametrize("target", ["outside", "secret.key"])
def test_symlinked_weights_out_of_the_roots_fail_the_job(stack, alice, tmp_path, target):
    if target == "outside":
        aim = tmp_path / "outside.bin"
        aim.write_bytes(SECRET)
        secret = SECRET
    else:
        aim = stack.settings.data_dir / "secret.key"
        if not aim.is_file():
            pytest.skip("this stack has no generated secret.key")
        secret = aim.read_bytes()
    folder = write_adapter_folder(stack.roots / f"symlinked-weights-{target}", seed=1)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to(aim)
    created = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": str(folder)}]})
    assert created.status_code == 202, created.text  # the folder itself is inside the roots
    job = wait_terminal(alice, created.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "local_path_not_allowed", job
    assert job["result"] is None
    assert all(source["revision"] is None for source in job["sources"])
    assert _leaks(job, secret) == []


def test_base_model_file_symlinked_out_of_the_roots_fails_the_job(stack, alice, tmp_path):
    outside = tmp_path / "outside-config.json"
    outside.write_bytes(b'{"leak": "' + SECRET + b'"}')
    base = stack.roots / "base-with-link"
    base.mkdir()
    save_file({f"{name}.weight": torch.zeros(*shape) for name, shape in SHAPES.items()}, str(base / "model.safetensors"))
    (base / "config.json").symlink_to(outside)  # merged_model copies config.json into the result
    adapter = write_adapter_folder(stack.roots / "for-base", seed=2)
    spec = {
        "method": "task_arithmetic",
        "adapters": [{"source": str(adapter)}],
        "output": {"kind": "merged_model", "base_model": str(base)},
    }
    created = alice.post("/v1/merges", json=spec)
    assert created.status_code == 202, created.text
    job = wait_terminal(alice, created.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "local_path_not_allowed", job
    assert job["result"] is None and _leaks(job, SECRET) == []
