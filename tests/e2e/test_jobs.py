"""Submit -> poll -> result through the real stack; the result equals merge_core's for the same spec."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time

import torch
from safetensors.torch import load_file, save_file

from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from support.factories import write_adapter_folder
from tests.e2e.conftest import wait_terminal


def _adapters(stack, name: str, n: int = 3, **kwargs) -> list[str]:
    return [str(write_adapter_folder(stack.roots / f"{name}-{i}", seed=i, **kwargs)) for i in range(n)]


def test_submit_poll_result_equals_merge_core(stack, alice, tmp_path):
    spec = {"method": "do_merging", "adapters": [{"source": s} for s in _adapters(stack, "basic")], "params": {}}
    response = alice.post("/v1/merges", json=spec)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/merges/{job['id']}"
    assert job["status"] == "queued" and job["queue"] == "cpu"

    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["stage"] == "done" and done["attempts"] == 1
    assert [s["revision"].startswith("sha256:") for s in done["sources"]] == [True] * 3
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {f["path"] for f in done["result"]["files"]}
    assert done["result"]["summary"]["modules"] == 3

    expected = run_merge(parse_spec(spec), tmp_path / "direct")
    tar_bytes = alice.get(done["result"]["artifact_url"]).content
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile(f"loramerge-{job['id']}/adapter_model.safetensors").read()
    (tmp_path / "served.safetensors").write_bytes(member)
    served, direct = load_file(tmp_path / "served.safetensors"), load_file(expected.out_dir / "adapter_model.safetensors")
    assert served.keys() == direct.keys()
    for key in direct:
        torch.testing.assert_close(served[key], direct[key], rtol=0, atol=0)


def test_dense_method_goes_to_gpu_queue_and_truncates(stack, alice):
    spec = {"method": "ties", "adapters": [{"source": s} for s in _adapters(stack, "ties")], "output": {"rank": 4}}
    job = alice.post("/v1/merges", json=spec).json()
    assert job["queue"] == "gpu"
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert "compression_error_max" in done["result"]["summary"] or any("compression" in k for k in done["result"]["summary"])


def test_bad_adapter_fails_with_its_code_and_no_result(stack, alice):
    good = _adapters(stack, "nan-good", n=1)[0]
    bad = write_adapter_folder(stack.roots / "nan-bad", seed=5)
    tensors = load_file(bad / "adapter_model.safetensors")
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("nan")

    save_file(tensors, str(bad / "adapter_model.safetensors"))
    job = alice.post(
        "/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": good}, {"source": str(bad)}]}
    ).json()
    done = wait_terminal(alice, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "non_finite_values", done["error"]
    assert str(stack.settings.data_dir) not in done["error"]["message"], "the message names the server's staging path"
    assert not (stack.settings.results_dir / job["id"]).exists()
    assert alice.get(f"/v1/merges/{job['id']}/artifact").json()["error"]["code"] == "job_not_succeeded"


def test_diverging_merge_fails_and_saves_nothing(stack, alice):
    """Finite adapters, parameters that pass validation, NaN from the method: failed, never a NaN result."""
    spec = {
        "method": "do_merging",
        "adapters": [{"source": s} for s in _adapters(stack, "diverge")],
        "params": {"ortho_lr": 10.0, "ortho_mu": 0.0},
    }
    job = alice.post("/v1/merges", json=spec).json()
    done = wait_terminal(alice, job["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", "merge_diverged"), done
    assert done["attempts"] == 1
    assert not (stack.settings.results_dir / job["id"]).exists()


def test_a_folder_without_adapter_files_fails_source_not_found(stack, alice):
    """A missing folder is a 422 at submission (test_error_messages); one that exists but holds no adapter
    (or loses it before the worker comes) fails the job with the same code."""
    empty = stack.roots / "empty-adapter"
    empty.mkdir(exist_ok=True)
    (empty / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')  # and no weights
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": str(empty)}]}).json()
    done = wait_terminal(alice, job["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", "source_not_found"), done


def test_list_filters_by_status_and_pages(stack, alice):
    sources = _adapters(stack, "list", n=2)
    ids = [
        alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": s}]}).json()["id"] for s in sources
    ]
    for job_id in ids:
        wait_terminal(alice, job_id)
    page = alice.get("/v1/merges", params={"limit": 1}).json()
    assert len(page["jobs"]) == 1 and page["jobs"][0]["id"] == ids[-1] and page["next_cursor"] == 1
    second = alice.get("/v1/merges", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert second["jobs"][0]["id"] == ids[-2]
    failed = alice.get("/v1/merges", params={"status": "failed", "limit": 100}).json()["jobs"]
    assert all(job["status"] == "failed" for job in failed)
    assert not {job["id"] for job in failed} & set(ids)


def test_methods_health_ready_and_metrics(stack, alice):
    methods = {m["name"]: m for m in alice.get("/v1/methods").json()["methods"]}
    assert "do_merging" in methods and "properties" in methods["do_merging"]["params_schema"]
    assert alice.get("/healthz").json() == {"status": "ok"}
    ready = alice.get("/readyz").json()
    assert ready["status"] == "ready" and ready["workers"]
    text = alice.get("/metrics").text
    assert 'loramerge_jobs_finished_total{status="succeeded"}' in text
    assert "loramerge_queue_depth" in text and "loramerge_workers 1.0" in text


def test_openapi_documents_the_api(alice):
    schema = alice.get("/openapi.json").json()
    assert {"/v1/merges", "/v1/merges/{job_id}", "/v1/merges/{job_id}/artifact", "/v1/methods"} <= set(schema["paths"])
    post = schema["paths"]["/v1/merges"]["post"]
    assert {"202", "422", "429"} <= set(post["responses"])
    assert alice.get("/docs").status_code == 200


def test_a_message_delivered_twice_runs_the_job_once(stack, alice):
    from jobs.queue import RUN_MERGE_TASK, make_celery

    source = _adapters(stack, "twice", n=1)[0]
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
    first = wait_terminal(alice, job["id"])
    make_celery(stack.settings, stack.settings.redis_url).send_task(RUN_MERGE_TASK, args=[job["id"]], queue=first["queue"])
    time.sleep(1.5)
    again = alice.get(f"/v1/merges/{job['id']}").json()
    assert again["status"] == "succeeded" and again["attempts"] == 1 and again["finished_at"] == first["finished_at"]
    assert stack.settings.redis_url and not (stack.settings.staging_dir / job["id"]).exists()


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAMERGE_")}
    env["LORAMERGE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "error [api_keys_required]" in done.stderr and "Traceback" not in done.stderr


def test_error_messages_name_the_adapter_not_the_staging_copy(stack, alice):
    bad = write_adapter_folder(stack.roots / "bad-json", seed=6)
    (bad / "adapter_config.json").write_text("{not json")
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": str(bad)}]}).json()
    done = wait_terminal(alice, job["id"])
    assert done["error"]["code"] == "invalid_adapter_config", done["error"]
    assert str(stack.settings.data_dir) not in done["error"]["message"], done["error"]["message"]
