"""Init jobs (OSRM, POST /v1/inits) through loramerge_client against the real stack: submit_init, wait,
events, list(kind="init"), download (one PEFT folder per task, loaded with PEFT as trainable), cancel, typed
errors, and `loramerge submit-init` as a subprocess: exit statuses and `error [code]: message`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.main import create_app
from loramerge_client import (
    Client,
    InvalidBaseModelError,
    JobCancelledError,
    JobFinishedError,
    UnknownModuleError,
)
from support.standins.server import ThreadedServer
from support.tiny_llama import load_base
from tests.e2e.conftest import KEYS
from tests.e2e.test_inits import body, texts

ROOT = Path(__file__).parents[2]
TASKS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def base(stack):
    from support.tiny_llama import make_base
    from support.tiny_tokenizer import make_word_tokenizer

    folder = stack.roots / "client-osrm-llama"
    if not folder.exists():
        make_base(folder)
        make_word_tokenizer(folder, 97, bos=True)
    return folder


@pytest.fixture
def client(stack):
    with Client(stack.api_url, api_key=KEYS["alice"]) as client:
        yield client


def _request(stack, base) -> dict:
    (stack.roots / "client-gamma.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts(2)) + "\n")
    request = body(base, params={"batch_size": 4})
    request["tasks"].append({"name": "gamma", "file": str(stack.roots / "client-gamma.jsonl")})
    return request


def test_init_job_end_to_end_through_the_client(stack, client, base, tmp_path):
    job = client.submit_init(_request(stack, base))
    assert (job.kind, job.method, job.status, job.replayed) == ("init", "osrm", "queued", False)
    done = client.wait(job, timeout=120, progress=True)  # the bar goes to stderr
    assert done.status == "succeeded" and done.kind == "init" and done.progress["stage"] == "done"
    assert done.base_model["source"] == str(base) and done.base_model["revision"] is None  # a local folder
    assert done.artifact_url == f"/v1/inits/{job.id}/artifact"
    assert client.get(job.id).data == done.data

    events = list(client.events(job))
    assert events[0].type == "job.accepted" and events[-1].type == "job.succeeded" and events[-1].terminal
    stages = [e.data["stage"] for e in events if e.type == "job.stage"]
    assert [s for s in ("fetch_base_model", "load", "forward", "solve", "write", "publish") if s in stages] == [
        "fetch_base_model",
        "load",
        "forward",
        "solve",
        "write",
        "publish",
    ], stages  # fmt: skip  (the stages the README names, in order)
    assert job.id in [j.id for j in client.list(kind="init", limit=None)]
    assert job.id in [j.id for j in client.list(kind="init", status="succeeded", limit=5)]
    assert job.id not in [j.id for j in client.list(limit=None)]  # merges only

    out = client.download(done, tmp_path / "inits")
    served = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert served == {f["path"]: f["size"] for f in done.result["files"]}
    assert {f"{t}/{name}" for t in TASKS for name in ("adapter_model.safetensors", "adapter_config.json", "README.md")} | {
        "osrm_init.json"
    } == set(served)
    stored = stack.settings.results_dir / job.id
    for task in TASKS:
        assert (out / task / "adapter_model.safetensors").read_bytes() == (
            stored / task / "adapter_model.safetensors"
        ).read_bytes()
    assert json.loads((out / "osrm_init.json").read_text())["summary"] == done.result["summary"]
    _trains_from(base, out / "alpha")


def _trains_from(base: Path, folder: Path) -> None:
    """PEFT loads the downloaded folder as a trainable adapter: our lora_A bit for bit, B = 0 (the base's
    outputs), every LoRA weight and nothing else trainable, and a step moves it."""
    from peft import PeftModel

    ids = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = load_base(base)(input_ids=ids).logits
    model = PeftModel.from_pretrained(load_base(base), folder, is_trainable=True)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=1e-6)
    saved = load_file(folder / "adapter_model.safetensors")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(saved) == len(trainable) == 2 * 2 * 2  # 2 layers x q_proj, v_proj x (A, B)
    for key, value in saved.items():
        name = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        assert torch.equal(trainable[name].detach(), value), key
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_A" in k)
    assert all(not v.any() for k, v in saved.items() if "lora_B" in k)
    model.train()
    model(input_ids=ids).logits.pow(2).sum().backward()
    torch.optim.SGD(list(trainable.values()), lr=0.1).step()
    assert any(p.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)  # trains: B moves off zero


def test_typed_errors_and_a_failed_init_job(stack, client, base):
    with pytest.raises(UnknownModuleError) as caught:  # a local base model: checked at submission
        client.submit_init(body(base, target_modules=["q_proj", "nope"]))
    assert (caught.value.code, caught.value.status) == ("unknown_module", 422) and "'nope'" in caught.value.message
    empty = stack.roots / "client-osrm-no-config"  # accepted (a folder under the roots), fails in the worker
    empty.mkdir(exist_ok=True)
    job = client.submit_init(body(empty, tasks=[{"name": "a", "input_ids": [[3, 4]]}, {"name": "b", "input_ids": [[5]]}]))
    with pytest.raises(InvalidBaseModelError) as caught:
        client.wait(job, timeout=120, progress=False)
    assert caught.value.job.id == job.id and caught.value.job.status == "failed" and caught.value.job.kind == "init"
    with pytest.raises(JobFinishedError):
        client.cancel(job)


@pytest.fixture(scope="module")
def paused_url(stack):
    """A second API on the same Redis whose queues no worker consumes: its jobs stay queued."""
    settings = stack.settings.model_copy(update={"cpu_queue": "client-init-paused-cpu", "gpu_queue": "client-init-paused-gpu"})
    server = ThreadedServer(create_app(settings))
    yield server.start()
    server.stop()


def test_cancel_a_queued_init_job(stack, base, paused_url):
    with Client(paused_url, api_key=KEYS["alice"]) as paused:
        job = paused.submit_init(body(base))
        assert paused.get(job).status == "queued" and job["queue"] == "client-init-paused-gpu"
        assert paused.cancel(job).status == "cancelled"
        with pytest.raises(JobCancelledError) as caught:
            paused.wait(job, timeout=10, progress=False)
        assert caught.value.job.status == "cancelled"
        assert [e.type for e in paused.events(job)][-1] == "job.cancelled"


def _cli(*args: str, env: dict[str, str], module: str = "loramerge_client") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_cli_submit_init_wait_out_and_list(stack, base, tmp_path):
    spec = tmp_path / "init.json"
    spec.write_text(json.dumps(_request(stack, base)))
    env = {"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": KEYS["alice"]}
    done = _cli("submit-init", str(spec), "--wait", "--quiet", "--out", str(tmp_path / "inits"), env=env, module="app.cli")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["kind"], shown["status"], shown["out"]) == ("init", "succeeded", str(tmp_path / "inits"))
    assert {f["path"] for f in shown["result"]["files"]} == {
        p.relative_to(tmp_path / "inits").as_posix() for p in (tmp_path / "inits").rglob("*") if p.is_file()
    }
    assert KEYS["alice"] not in done.stdout + done.stderr
    listed = _cli("jobs", "--kind", "init", "--json", "--limit", "5", env=env)
    assert listed.returncode == 0 and shown["id"] in [j["id"] for j in json.loads(listed.stdout)]
    merges = _cli("jobs", "--json", "--limit", "100", env=env)
    assert merges.returncode == 0 and shown["id"] not in [j["id"] for j in json.loads(merges.stdout)]
    again = _cli("download", shown["id"], "--out", str(tmp_path / "again"), env=env)  # by id, as for a merge
    assert again.returncode == 0 and (tmp_path / "again" / "beta" / "adapter_config.json").is_file()
    finished = _cli("cancel", shown["id"], env=env)
    assert (finished.returncode, finished.stderr.strip()) == (2, f"error [job_finished]: job {shown['id']} already succeeded")


def test_cli_submit_init_errors(stack, base, tmp_path):
    env = {"LORAMERGE_SERVER": stack.api_url, "LORAMERGE_API_KEY": KEYS["alice"]}
    cases = {
        "unknown_module": body(base, target_modules=["q_proj", "nope"]),
        "invalid_samples": body(base, tasks=[{"name": "solo", "texts": ["w1 w2"]}]),
        "invalid_request": {**body(base), "adapters": []},  # a merge's field: not an init body
        "local_path_not_allowed": body("/etc"),
    }
    for code, request in cases.items():
        spec = tmp_path / f"{code}.json"
        spec.write_text(json.dumps(request))
        refused = _cli("submit-init", str(spec), "--wait", env=env)
        assert refused.returncode == 2, (code, refused.stderr)
        assert refused.stderr.startswith(f"error [{code}]: ") and refused.stderr.count("\n") == 1, (code, refused.stderr)
        assert not refused.stdout
    missing = _cli("submit-init", str(tmp_path / "nope.json"), env=env)
    assert (missing.returncode, missing.stderr.startswith("error [merge_error]: spec file ")) == (2, True)

    empty = stack.roots / "client-osrm-no-config-cli"
    empty.mkdir(exist_ok=True)
    doomed = tmp_path / "doomed.json"
    doomed.write_text(json.dumps(body(empty, tasks=[{"name": "a", "input_ids": [[3, 4]]}, {"name": "b", "input_ids": [[5]]}])))
    failed = _cli("submit-init", str(doomed), "--wait", "--quiet", env=env)  # accepted, then the job fails
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("error [invalid_base_model]: ") and not failed.stdout
