"""Hostile adapters and requests through the HTTP API: every case ends as a 4xx with its code at
submission, or as a failed job with its code; nothing crashes, nothing stays running, no 5xx."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from support.factories import SHAPES, rewrite_safetensors_header, write_adapter_folder
from support.stack import ProcessStack


def _first(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def _weights(folder: Path) -> Path:
    return folder / "adapter_model.safetensors"


def _edit_tensors(folder: Path, edit: Callable[[dict], None]) -> None:
    tensors = load_file(_weights(folder))
    edit(tensors)
    save_file(tensors, str(_weights(folder)))


def build_corpus(stack: ProcessStack, outside: Path) -> list[tuple[str, list[str], str]]:
    """(case, sources, expected code). Sources are written under the stack's roots unless the case escapes them."""
    root = stack.roots / "hostile"
    good = str(write_adapter_folder(root / "good", seed=1))

    def adapter(name: str, damage: Callable[[Path], None] | None = None, **kwargs) -> str:
        folder = write_adapter_folder(root / name, seed=2, **kwargs)
        if damage is not None:
            damage(folder)
        return str(folder)

    def nan(folder: Path) -> None:
        _edit_tensors(folder, lambda t: t[sorted(t)[0]].view(-1).__setitem__(0, float("nan")))

    def inf(folder: Path) -> None:
        _edit_tensors(folder, lambda t: t[sorted(t)[1]].view(-1).__setitem__(0, float("inf")))

    def rank_mismatch(folder: Path) -> None:
        def shrink(t: dict) -> None:
            key = next(k for k in t if k.endswith("lora_B.weight"))
            t[key] = t[key][:, :2].contiguous()

        _edit_tensors(folder, shrink)

    def pickle_only(folder: Path) -> None:
        torch.save(load_file(_weights(folder)), folder / "adapter_model.bin")
        _weights(folder).unlink()

    escape_target = write_adapter_folder(outside / "secret-adapter", seed=3)
    link = root / "escape-link"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(escape_target, target_is_directory=True)
    other_shapes = {name: (out + 8, inp) for name, (out, inp) in SHAPES.items()}
    return [
        ("truncated safetensors", [adapter("truncated", lambda f: _weights(f).write_bytes(_weights(f).read_bytes()[:-100]))], "corrupt_safetensors"),
        ("header lies about offsets", [adapter("offsets", lambda f: rewrite_safetensors_header(_weights(f), lambda h: h[_first(h)].update(data_offsets=[10**12, 10**12 + 64])))], "corrupt_safetensors"),
        ("header lies about dtype", [adapter("dtype", lambda f: rewrite_safetensors_header(_weights(f), lambda h: h[_first(h)].update(dtype="F64")))], "corrupt_safetensors"),
        ("multi-GB claimed header", [adapter("huge", lambda f: _weights(f).write_bytes(struct.pack("<Q", 8 << 30) + _weights(f).read_bytes()[8:]))], "corrupt_safetensors"),
        ("NaN", [good, adapter("nan", nan)], "non_finite_values"),
        ("Inf", [good, adapter("inf", inf)], "non_finite_values"),
        ("A/B rank mismatch", [adapter("rank", rank_mismatch)], "rank_mismatch"),
        ("shapes differ between adapters", [good, adapter("shapes", shapes=other_shapes)], "shape_mismatch"),
        ("config names another base model", [good, adapter("base", config={"base_model_name_or_path": "another/model"})], "base_model_mismatch"),
        ("pickle .bin only", [adapter("pickle", pickle_only)], "pickle_refused"),
        ("empty weights file", [adapter("empty", lambda f: _weights(f).write_bytes(b""))], "corrupt_safetensors"),
        ("empty config file", [adapter("empty-config", lambda f: (f / "adapter_config.json").write_text(""))], "invalid_adapter_config"),
        ("symlink escaping the roots", [str(link)], "local_path_not_allowed"),
        ("'..' escaping the roots", [f"{stack.roots}/../{outside.name}/secret-adapter"], "local_path_not_allowed"),
        ("duplicate sources", [good, good], "invalid_spec"),
        ("1,000 adapters in one job", [f"{good}"] * 1000, "too_many_adapters"),
    ]  # fmt: skip


def hostile_corpus(stack: ProcessStack) -> dict:
    outside = stack.base / "outside"
    outside.mkdir(exist_ok=True)
    seen, wrong = [], []
    with stack.client() as client:
        for case, sources, expected in build_corpus(stack, outside):
            adapters = [
                {"source": s, "weight": 1 + i * 1e-3} if case.startswith("1,000") else {"source": s}
                for i, s in enumerate(sources)
            ]
            response = client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": adapters})
            if response.status_code == 202:
                job = stack.wait_terminal(client, response.json()["id"])
                code, where = (job["error"] or {}).get("code"), f"job {job['status']}"
            else:
                code, where = response.json()["error"]["code"], f"HTTP {response.status_code}"
            seen.append((case, where, code))
            if code != expected or response.status_code >= 500 or where == "job succeeded":
                wrong.append(f"{case}: {where} {code} (expected {expected})")
    assert not wrong, "; ".join(wrong)
    at_submission = sum(1 for _, where, _ in seen if where.startswith("HTTP 4"))
    return {
        "cases": len(seen),
        "refused_at_submission": at_submission,
        "failed_jobs_with_code": len(seen) - at_submission,
        "5xx": 0,
    }


def size_limits(stack: ProcessStack) -> dict:
    """Adapter bytes, adapters per job and body size are settings; each limit answers with its code."""
    limit = stack.settings.max_adapter_bytes
    big = write_adapter_folder(
        stack.roots / "limits" / "big", shapes={"model.layers.0.mlp.up_proj": (4096, 4096)}, rank=512, seed=1
    )
    size = _weights(big).stat().st_size
    with stack.client() as client:
        body = client.post(
            "/v1/merges",
            content=b"{" + b" " * stack.settings.max_request_bytes + b"}",
            headers={"content-type": "application/json"},
        )
        job = client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": str(big)}]}).json()
        done = stack.wait_terminal(client, job["id"])
    assert (body.status_code, body.json()["error"]["code"]) == (413, "request_too_large")
    assert size > limit and (done["status"], done["error"]["code"]) == ("failed", "adapter_too_large"), (size, limit, done)
    return {"body_limit": f"413 over {stack.settings.max_request_bytes} B", "adapter_limit": f"adapter_too_large over {limit} B"}
