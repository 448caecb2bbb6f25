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
    dora_modules: int = 0,
) -> str:
    """``sources``: one dict per adapter with ``source``, ``revision`` (resolved, when known), ``weight``.
    ``full_weights``: the decisions of ``plan_full_weights``; ``biases``: the merged bias names;
    ``dora_modules``: how many input modules were DoRA."""
    summary = merged.summary()
    model = spec.output.kind == "merged_model"
    front = ["---", f"library_name: {'transformers' if model else 'peft'}", "tags:", "- lora", "- loramerge", f"- {spec.method}"]
    if merged.base_model:
        front.insert(2, f"base_model: {merged.base_model}")
    title = "Model merged from LoRA adapters" if model else "Merged LoRA adapter"
    lines = front + ["---", "", f"# {title} ({spec.method})", ""]
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
    if merged.scaling is not None:
        lines += [_scaling_line(merged, summary), ""]
    if spec.output.base_model:
        revision = f" at commit {spec.output.base_model_revision}" if spec.output.base_model_revision else ""
        lines += [f"Base model: `{spec.output.base_model}`{revision}.", ""]
    lines += [f"Base model check: `{spec.base_model_check}`.", ""]
    lines += [_output_line(spec, merged, dora_modules), "", "## Diagnostics", ""]
    numbers = {k: v for k, v in summary.items() if not isinstance(v, str)}  # the scaling rule is said above
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.6g} |" for k, v in numbers.items()]
    if full_weights:
        lines += ["", f"## Full weights (`output.full_weights: {spec.output.full_weights}`)", ""]
        lines += ["| tensor | kind | adapters | outcome |", "|---|---|---|---|"]
        lines += [f"| `{d['tensor']}` | {d['kind']} | {d['adapters']} | {d['outcome']} |" for d in full_weights]
        if any("per_adapter/" in d["outcome"] for d in full_weights):
            lines += ["", _PER_ADAPTER_MODEL if model else _PER_ADAPTER_ADAPTER]
    if biases:
        lines += ["", "## Biases", "", f"{len(biases)} trained biases merged with the method's weights (linear in the update)."]
    lines += ["", "Per-module values are in `merge_diagnostics.json`.", ""]
    return "\n".join(lines)


_PER_ADAPTER_ADAPTER = (
    "The top level holds the merged body without these tensors (a head there would be untrained). Each task's own "
    'are in `per_adapter/<i>/`, a complete PEFT adapter: `PeftModel.from_pretrained(base, "per_adapter/<i>")`.'
)
_PER_ADAPTER_MODEL = (
    "The top-level model holds none of these tensors, not even the base's own (an untrained head must not pass for a "
    "trained one). Each task's are in `per_adapter/<i>/full_weights.safetensors`, keyed by parameter name: "
    "`model.load_state_dict(safetensors.torch.load_file(path), strict=False)` after loading the merged model with "
    "that task's label count."
)


def _scaling_line(merged: MergedAdapter, summary: dict) -> str:
    scaling = merged.scaling
    requested = f"`{scaling.requested}`" if isinstance(scaling.requested, str) else f"{scaling.requested:g}"
    if scaling.requested == "auto":
        rule = f"λ = {scaling.value:g}" if scaling.rule == "fixed" else f"`{scaling.rule}`"
        why = ": every adapter declares task_type CAUSAL_LM" if scaling.auto_table == "AUTO_SCALING_CAUSAL_LM" else ""
        requested += (
            f", which here is {rule} (merge_core/auto_scaling.py `{scaling.auto_table}`, row `{scaling.auto_row}`{why}; "
            "from the quality benchmark)"
        )
    line = f"Scaling (λ): {requested}"
    if "scaling_min" not in summary:
        return line + "."
    low, high = summary["scaling_min"], summary["scaling_max"]
    if low == high:
        line += f"; λ = {low:.6g} in every module"
    else:
        line += f"; λ per module: mean {summary['scaling_mean']:.6g}, min {low:.6g}, max {high:.6g}"
    if scaling.rule in ("1/n", "1/sqrt(n)"):
        line += " (n: the adapters that carry the module)"
    return line + "."


def _output_line(spec: MergeSpec, merged: MergedAdapter, dora_modules: int) -> str:
    if spec.output.rank is not None:
        form = f"each module's update truncated to rank {spec.output.rank} (error: `compression_error`)"
    elif spec.output.kind == "merged_model":
        form = "W0 + ΔW written exactly"
    else:
        form = "exact LoRA (rank up to the sum of input ranks)"
    line = f"Output: {spec.output.kind}, {form}, dtype {spec.output.dtype}."
    if dora_modules:
        kept = "kept dense (exact)" if merged.dense else "truncated as above"
        line += (
            f" {dora_modules} input modules were DoRA: their updates were computed from the base weights and merged "
            f"densely, {kept} (METHOD.md §7)."
        )
    return line
