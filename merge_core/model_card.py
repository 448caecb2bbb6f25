"""The README.md model card that always travels with a result: provenance first, then diagnostics."""

from __future__ import annotations

import json
import platform

import torch

import merge_core
from merge_core.engine import MergedAdapter
from merge_core.spec import MergeSpec


def render_model_card(spec: MergeSpec, merged: MergedAdapter, sources: list[dict], *, elapsed_s: float | None = None) -> str:
    """``sources``: one dict per adapter with ``source``, ``revision`` (resolved, when known), ``weight``."""
    summary = merged.summary()
    front = ["---", "library_name: peft", "tags:", "- lora", "- loramerge", f"- {spec.method}"]
    if merged.base_model:
        front.insert(2, f"base_model: {merged.base_model}")
    lines = front + ["---", "", f"# Merged LoRA adapter ({spec.method})", ""]
    lines += [
        f"Made by loramerge {merge_core.__version__} (torch {torch.__version__}, Python {platform.python_version()})"
        + (f" in {elapsed_s:.1f} s." if elapsed_s is not None else "."),
        "",
        "## Sources",
        "",
        "| # | source | revision | weight |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i} | `{s['source']}` | {s.get('revision') or '-'} | {s.get('weight', 1.0)} |" for i, s in enumerate(sources)]
    lines += ["", "## Method", "", f"`{spec.method}` with parameters:", "", "```json"]
    lines += [json.dumps(spec.params, indent=2, sort_keys=True), "```", ""]
    rank = spec.output.rank if spec.output.rank is not None else "exact (sum of input ranks)"
    lines += [f"Output: {spec.output.kind}, rank {rank}, dtype {spec.output.dtype}.", "", "## Diagnostics", ""]
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.6g} |" for k, v in summary.items()]
    lines += ["", "Per-module values are in `merge_diagnostics.json`.", ""]
    return "\n".join(lines)
