"""Regex denial of service through ``rank_pattern`` (issue 11): an adapter whose only module is named
``"a" * 40 + "!"`` and whose config says ``rank_pattern {"(a+)+": 4}`` once pinned a worker at 100% CPU
for hours (Python's backtracking ``re``, in C, holding the GIL). Now the key runs on RE2 in linear time,
keys RE2 cannot run are refused at load, and non-finite numbers are typed config errors: each job fails
within seconds with its code, and the worker takes the next job at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from support.factories import write_adapter_folder
from support.stack import ProcessStack

MODULE = "a" * 40 + "!"
DEADLINE_S = 20.0


def write_hostile_adapter(folder: Path, rank_pattern: dict, **config) -> Path:
    """Rank-1 factors of the one module under a config saying r=2: checking the rank looks the module up in
    ``rank_pattern`` first (the lookup that hung), then fails as ``rank_mismatch``."""
    tensors = {
        f"base_model.model.{MODULE}.lora_A.weight": torch.ones(1, 1),
        f"base_model.model.{MODULE}.lora_B.weight": torch.ones(1, 1),
    }
    write_adapter_folder(folder, tensors=tensors, config={"r": 2, "lora_alpha": 2, "rank_pattern": rank_pattern, **config})
    cfg = folder / "adapter_config.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()), separators=(",", ":")))
    return folder


def _run(stack: ProcessStack, client, sources: list[str]) -> tuple[dict, float]:
    started = time.monotonic()
    response = client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": s} for s in sources]})
    assert response.status_code == 202, response.text
    job = stack.wait_terminal(client, response.json()["id"], timeout=DEADLINE_S, cap=DEADLINE_S)
    return job, time.monotonic() - started


def regex_dos(stack: ProcessStack) -> dict:
    root = stack.roots / "regex-dos"
    hostile = write_hostile_adapter(root / "hostile", {"(a+)+": 4})
    size = sum(p.stat().st_size for p in hostile.iterdir())
    cases = [
        ("(a+)+ on 'a'*40+'!'", hostile, "rank_mismatch"),
        ("backreference (a+)+\\1", write_hostile_adapter(root / "backref", {"(a+)+\\1": 4}), "unsupported_pattern"),
        ("r = 1e400", write_hostile_adapter(root / "inf", {}), "invalid_adapter_config"),
    ]
    cfg = cases[2][1] / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"r":2', '"r":1e400'))
    figures: dict[str, object] = {"hostile_adapter_bytes": size}
    with stack.client() as client:
        for name, folder, code in cases:
            job, seconds = _run(stack, client, [str(folder)])
            error = job["error"] or {}
            assert (job["status"], error.get("code")) == ("failed", code), f"{name}: {job['status']} {error} (expected {code})"
            assert seconds < DEADLINE_S, f"{name}: {seconds:.1f} s"
            figures[name] = f"{code} in {seconds:.1f} s"
        good = [str(write_adapter_folder(root / f"good-{seed}", seed=seed)) for seed in (1, 2)]
        job, seconds = _run(stack, client, good)
    assert job["status"] == "succeeded", job
    figures["next job"] = f"succeeded in {seconds:.1f} s"
    return figures
