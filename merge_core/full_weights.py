"""What an adapter carries beside its LoRA factors, merged as METHOD.md §7 defines it.

- Full weights (``modules_to_save`` such as classification heads, saved ``base_layer`` copies such as
  resized embeddings): identical copies pass through once; copies that differ follow
  ``output.full_weights`` (``error``, ``first``, ``average``, ``per_adapter``).
- Biases (``lora_bias`` vectors, biases trained under ``bias: all|lora_only``): their updates are merged
  with the method's own weights, which only a method linear in the update defines, and its layer's λ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from merge_core.adapters import FullWeight, LoraAdapter
from merge_core.base_model import BaseWeights
from merge_core.errors import NAME_SHOWN, BaseModelRequiredError, BiasNotMergeableError, FullWeightsConflictError, shown
from merge_core.registry import MergeMethod
from merge_core.spec import FullWeightsPolicy

if TYPE_CHECKING:
    from merge_core.engine import MergedAdapter

_KIND_SHOWN = {"modules_to_save": "modules_to_save", "saved_base_layer": "a saved base layer", "trained_bias": "a trained bias"}


@dataclass
class FullWeightsPlan:
    """``shared`` goes with the merged body; ``per_adapter[i]`` beside it for adapter i (policy ``per_adapter``).
    ``decisions`` says, per tensor, what happened, for the model card and the diagnostics."""

    shared: dict[str, FullWeight] = field(default_factory=dict)
    per_adapter: dict[int, dict[str, FullWeight]] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)


def plan_full_weights(adapters: Sequence[LoraAdapter], policy: FullWeightsPolicy) -> FullWeightsPlan:
    """Decide every full-weight tensor (trained biases excluded: ``merge_bias_updates`` merges those).

    Raises:
        FullWeightsConflictError: copies differ and the policy is ``error``, or ``average`` meets
            copies of different shapes (classification heads of different label sets).
    """
    plan = FullWeightsPlan()
    names = sorted({n for a in adapters for n, w in a.full_weights.items() if w.kind != "trained_bias"})
    for name in names:
        carriers = [(i, a.full_weights[name]) for i, a in enumerate(adapters) if name in a.full_weights]
        first = carriers[0][1]
        kind = _KIND_SHOWN[first.kind]
        same = all(w.tensor.shape == first.tensor.shape and torch.equal(w.tensor, first.tensor) for _, w in carriers[1:])
        outcome = "identical: passed through once" if len(carriers) > 1 else "one adapter carries it: passed through"
        own_copy = policy == "per_adapter" and first.kind == "modules_to_save" and len(carriers) == 1  # one task's head
        if same and not own_copy:
            plan.shared[name] = first
        elif policy == "error":
            raise FullWeightsConflictError(
                f"adapters {[i for i, _ in carriers]} carry different full weights for {shown(name)} ({kind}); a merge of "
                "LoRA updates cannot combine whole tensors, so choose output.full_weights: 'per_adapter' (each adapter's "
                "own beside the merged body, e.g. one classification head per task), 'first' (adapter "
                f"{carriers[0][0]}'s), or 'average' (same shapes only)",
                tensor=name[:NAME_SHOWN],
                adapters=[i for i, _ in carriers],
            )
        elif policy == "first":
            plan.shared[name] = first
            outcome = f"differ: adapter {carriers[0][0]}'s kept (first)"
        elif policy == "average":
            shapes = {tuple(w.tensor.shape) for _, w in carriers}
            if len(shapes) > 1:
                raise FullWeightsConflictError(
                    f"full weights {shown(name)} ({kind}) have different shapes {sorted(shapes)} across adapters (e.g. "
                    "classification heads of different label sets) and cannot be averaged; choose output.full_weights: "
                    "'per_adapter' or 'first'",
                    tensor=name[:NAME_SHOWN],
                )
            mean = torch.stack([w.tensor.double() for _, w in carriers]).mean(0).to(first.tensor.dtype)
            plan.shared[name] = FullWeight(mean, first.key, first.kind)
            outcome = f"differ: averaged over adapters {[i for i, _ in carriers]}"
        else:
            for i, weight in carriers:
                plan.per_adapter.setdefault(i, {})[name] = weight
            folders = ", ".join(f"per_adapter/{i}/" for i, _ in carriers)
            outcome = f"each adapter's own kept beside the body ({folders})"
        plan.decisions.append({"tensor": name, "kind": first.kind, "adapters": [i for i, _ in carriers], "outcome": outcome})
    return plan


def bias_updates(
    adapters: Sequence[LoraAdapter],
    weights: Sequence[float],
    method: MergeMethod,
    base: BaseWeights | None,
) -> dict[str, list[torch.Tensor]]:
    """``parameter name -> [w_i Δb_i]`` over the adapters that train that bias, in float64, checked before
    the merge (``merge_bias_updates`` adds them up after it). ``Δb_i`` is ``s_i · lora_B.bias``
    (``lora_bias``) or ``b_i − b0`` (a full bias trained under ``bias: all|lora_only``, which needs the base's ``b0``).

    Raises:
        BiasNotMergeableError: trained biases and a method that is not linear in the update.
        BaseModelRequiredError: full trained biases and no base model.
    """
    updates: dict[str, list[torch.Tensor]] = {}
    for adapter, weight in zip(adapters, weights):
        for name, module in adapter.modules.items():
            if module.bias is not None:
                updates.setdefault(f"{name}.bias", []).append(weight * module.scale * module.bias.double())
        for name, full in adapter.full_weights.items():
            if full.kind != "trained_bias":
                continue
            if base is None:
                raise BaseModelRequiredError(
                    f"{adapter.source} trained its biases (bias={adapter.config.get('bias')!r}) and saved them whole; their "
                    "update b_i − b0 needs the base's biases: set output.base_model to the model it was trained on"
                )
            updates.setdefault(name, []).append(weight * (full.tensor.double() - base.get(name).double()))
    if updates and not method.linear:
        raise BiasNotMergeableError(
            f"the adapters train biases ({len(updates)} of them, e.g. {shown(next(iter(updates)))}), and {method.name} is "
            "not linear in the update, so it defines no merged bias; merge them with task_arithmetic, or use adapters "
            "trained with bias='none' and lora_bias=false",
            method=method.name,
        )
    return updates


def merge_bias_updates(updates: dict[str, list[torch.Tensor]], merged: MergedAdapter) -> dict[str, torch.Tensor]:
    """``parameter name -> Δb = λ Σ_i w_i Δb_i``, with λ of the bias's layer where its LoRA update was merged
    (the layer's update is then ``λ Σ_i w_i (ΔW_i, Δb_i)``), else λ by the same rule on the bias updates alone."""
    out = {}
    for name, parts in updates.items():
        layer = merged.diagnostics.get(name.removesuffix(".bias"), {})
        lam = layer["scaling"] if "scaling" in layer else merged.scaling.vector_lambda(parts)
        out[name] = lam * torch.stack(parts).sum(0)
    return out
