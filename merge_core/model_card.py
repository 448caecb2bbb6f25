"""The README.md model card that always travels with a result: provenance first, then diagnostics."""

from __future__ import annotations

import json
import platform

import torch

import merge_core
from merge_core.engine import MergedAdapter
from merge_core.spec import MergeSpec


def render_model_card(
    spec: MergeSpec,
    merged: MergedAdapter,
    sources: list[dict],
    *,
    elapsed_s: float | None = None,
    full_weights: list[dict] | None = None,
    biases: list[str] | None = None,
    base_model: dict | None = None,
) -> str:
    """``sources``: one dict per adapter with ``source``, ``revision`` (resolved, when known), ``weight``.
    ``full_weights``: the decisions of ``plan_full_weights``; ``biases``: the merged bias names;
    ``base_model``: ``{"source", "revision"}`` of the base model the merge read, when it read one."""
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
    if spec.output.base_model or base_model:
        shown_base = base_model or {"source": spec.output.base_model, "revision": spec.output.base_model_revision}
        lines += [f"Base model: `{shown_base['source']}` at revision {shown_base.get('revision') or '-'}.", ""]
    lines += [f"Base model check: `{spec.base_model_check}`.", ""]
    if merged.dense:
        lines += [f"{len(merged.dense)} modules are DoRA updates merged densely from the base weights (METHOD.md §7).", ""]
    rank = spec.output.rank if spec.output.rank is not None else "exact (sum of input ranks)"
    lines += [f"Output: {spec.output.kind}, rank {rank}, dtype {spec.output.dtype}.", "", "## Diagnostics", ""]
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.6g} |" for k, v in summary.items()]
    if full_weights:
        lines += ["", f"## Full weights (`output.full_weights: {spec.output.full_weights}`)", ""]
        lines += ["| tensor | kind | adapters | outcome |", "|---|---|---|---|"]
        lines += [f"| `{d['tensor']}` | {d['kind']} | {d['adapters']} | {d['outcome']} |" for d in full_weights]
    if biases:
        lines += ["", "## Biases", "", f"{len(biases)} trained biases merged with the method's weights (linear in the update)."]
    lines += ["", "Per-module values are in `merge_diagnostics.json`.", ""]
    return "\n".join(lines)
