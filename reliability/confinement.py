"""Local-source confinement (issue 11), against the running stack: symlinks planted inside an allowed
root that point out of it (at another folder, at an outside file, at the service's own
``<data_dir>/secret.key``) must never be read. Every case is a 422 ``local_path_not_allowed`` at
submission or a job that fails with that code; the outside file's sha256 (the pinned revision a
local source gets) and its bytes appear in no job record, no API answer and no Redis key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from jobs.store import connect
from support.factories import SHAPES, write_adapter_folder
from support.stack import ProcessStack

OUTSIDE_BYTES = b"reliability-confinement-outside-file-5d1c"
CODE = "local_path_not_allowed"


def _swap_for_link(folder: Path, name: str, target: Path) -> None:
    (folder / name).unlink()
    (folder / name).symlink_to(target)


def build_cases(stack: ProcessStack, outside: Path) -> list[tuple[str, dict, bytes]]:
    """(case, job spec, bytes that must not leak)."""
    root = stack.roots / "confinement"
    secret_key = stack.settings.data_dir / "secret.key"
    outside_file = outside / "outside.bin"
    outside_file.write_bytes(OUTSIDE_BYTES)
    (outside / "config.json").write_bytes(b'{"leak": "' + OUTSIDE_BYTES + b'"}')
    write_adapter_folder(outside / "adapter", seed=7)

    def job(source: str, **output) -> dict:
        return {"method": "task_arithmetic", "adapters": [{"source": source}], **({"output": output} if output else {})}

    cases = []
    root.mkdir(parents=True, exist_ok=True)
    (root / "folder-link").symlink_to(outside / "adapter", target_is_directory=True)
    cases.append(("adapter folder symlinked outside", job(str(root / "folder-link")), OUTSIDE_BYTES))
    (root / "data-dir-link").symlink_to(stack.settings.data_dir, target_is_directory=True)
    cases.append(("folder symlinked to the data dir", job(str(root / "data-dir-link")), OUTSIDE_BYTES))

    weights = write_adapter_folder(root / "weights-outside", seed=1)
    _swap_for_link(weights, "adapter_model.safetensors", outside_file)
    cases.append(("weights symlinked to an outside file", job(str(weights)), OUTSIDE_BYTES))
    config = write_adapter_folder(root / "config-outside", seed=1)
    _swap_for_link(config, "adapter_config.json", outside / "config.json")
    cases.append(("config symlinked to an outside file", job(str(config)), OUTSIDE_BYTES))
    if secret_key.is_file():  # written by the API/worker on first start; never create it here
        key = write_adapter_folder(root / "weights-secret-key", seed=1)
        _swap_for_link(key, "adapter_model.safetensors", secret_key)
        cases.append(("weights symlinked to <data_dir>/secret.key", job(str(key)), secret_key.read_bytes()))

    base = root / "base-config-outside"  # merged_model copies the base's config.json into the result
    base.mkdir()
    save_file({f"{name}.weight": torch.zeros(*shape) for name, shape in SHAPES.items()}, str(base / "model.safetensors"))
    (base / "config.json").symlink_to(outside / "config.json")
    adapter = write_adapter_folder(root / "for-base", seed=2)
    cases.append(
        ("base model file symlinked outside", job(str(adapter), kind="merged_model", base_model=str(base)), OUTSIDE_BYTES)
    )
    return cases


def _leaks(text: str, secret: bytes) -> list[str]:
    needles = [hashlib.sha256(secret).hexdigest(), secret.decode("latin-1")]
    return [n[:12] + "..." for n in needles if n in text]


def confinement(stack: ProcessStack) -> dict:
    outside = stack.base / "confinement-outside"
    outside.mkdir(exist_ok=True)
    cases = build_cases(stack, outside)
    refused, failed, problems, answers = 0, 0, [], []
    with stack.client("alice") as client:
        for name, spec, secret in cases:
            response = client.post("/v1/merges", json=spec)
            answers.append(response.text)
            if response.status_code == 422:
                code = response.json()["error"]["code"]
                refused += code == CODE
                if code != CODE:
                    problems.append(f"{name}: 422 {code}")
                continue
            if response.status_code != 202:
                problems.append(f"{name}: HTTP {response.status_code}")
                continue
            done = stack.wait_terminal(client, response.json()["id"])
            text = json.dumps(done)
            answers.append(text)
            if done["status"] != "failed" or (done["error"] or {}).get("code") != CODE:
                problems.append(f"{name}: {done['status']} {(done['error'] or {}).get('code')}")
            else:
                failed += 1
            if done["result"] is not None:
                problems.append(f"{name}: has a result")
            if leaked := _leaks(text, secret):
                problems.append(f"{name}: record shows {leaked}")
        answers.append(client.get("/v1/merges", params={"limit": 100}).text)
    secrets = {secret for _, _, secret in cases}
    for text in answers:
        for secret in secrets:
            if leaked := _leaks(text, secret):
                problems.append(f"an API answer shows {leaked}")
    redis = connect(stack.settings.redis_url)
    keys = 0
    for key in redis.scan_iter(count=1000):
        keys += 1
        dumped = (redis.dump(key) or b"").decode("latin-1")
        for secret in secrets:
            if leaked := _leaks(dumped, secret):
                problems.append(f"Redis key {key!r} holds {leaked}")
    assert not problems, "; ".join(sorted(set(problems)))
    return {
        "cases": len(cases),
        "refused_at_submission": refused,
        "failed_in_worker": failed,
        "redis_keys_scanned": keys,
        "leaks": 0,
    }
