"""The per-module loop: group same-shaped modules into batches, run the method kernel on the chosen
device, apply the output-rank policy, report progress, stop cleanly on cancel: at a batch boundary, or
at a checkpoint inside a kernel that iterates (``ModuleBatch.checkpoint``).

DoRA modules take the dense path (METHOD.md §7): each adapter's effective update is computed from
the base weight one module at a time and handed to the method as its exact SVD factors, so every
method runs on it unchanged; the result is kept dense unless ``rank`` truncates it."""

from __future__ import annotations

import shutil
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from merge_core.adapters import LoraAdapter, LoraModule, StoredTensor, materialized
from merge_core.base_model import BaseWeights
from merge_core.batch import BatchResult, ModuleBatch
from merge_core.errors import (
    NAME_SHOWN,
    BaseModelError,
    BaseModelMismatchError,
    BaseModelRequiredError,
    DeviceOutOfMemoryError,
    InvalidAdapterConfigError,
    MergeCancelledError,
    MergeDivergedError,
    ShapeMismatchError,
    shown,
)
from merge_core.ops.lowrank import randomized_svd, svd_from_factors, truncate
from merge_core.registry import MergeMethod, MethodParams, SeededParams
from merge_core.safetensors_writer import save_tensors
from merge_core.scaling import Scaling
from merge_core.scaling import apply as apply_scaling
from merge_core.scaling import resolve as resolve_scaling
from merge_core.spec import BaseModelCheck

Progress = Callable[[str, int, int], None]  # (stage, done, total)
OomPolicy = Literal["cpu", "fail"]
BATCH_ELEMENTS = 1 << 25  # factor elements per batch (~128 MiB in float32): amortizes kernel launches


@dataclass
class MergedAdapter:
    """The merged update of every module as LoRA factors ``B (out, r)``, ``A (r, in)`` with scale 1,
    or, for a full-rank update kept exact (DoRA into a merged model), as a dense ``(out, in)`` in ``dense``.
    ``embeddings`` names the modules that are embedding layers (their ``ΔW`` is never transposed).
    ``scaling`` is λ as the method's parameters asked for it and the rule it resolved to; each module's λ is
    its diagnostic ``scaling``.

    A merge given a ``spill_dir`` keeps each batch's result on disk there (``StoredTensor``), so memory
    holds one batch, not the whole output; read factors with ``factors(name)``. The folder is removed
    when this object is garbage collected (or at exit)."""

    modules: dict[str, tuple[torch.Tensor | StoredTensor, torch.Tensor | StoredTensor]]
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)
    base_model: str | None = None
    fan_in_fan_out: bool = False
    dense: dict[str, torch.Tensor | StoredTensor] = field(default_factory=dict)
    embeddings: set[str] = field(default_factory=set)
    spill_dir: Path | None = field(default=None, repr=False)
    scaling: Scaling | None = None

    def __post_init__(self) -> None:
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            weakref.finalize(self, shutil.rmtree, self.spill_dir, True)

    def names(self) -> list[str]:
        return sorted(set(self.modules) | set(self.dense))

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        B, A = self.modules[name]
        return materialized(B), materialized(A)

    def delta(self, name: str, *, device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``ΔW`` of one module, formed on ``device`` (CPU by default) in ``dtype`` (float64 by default)."""
        if name in self.dense:
            return materialized(self.dense[name]).to(device=device, dtype=dtype)
        B, A = self.factors(name)
        return B.to(device=device, dtype=dtype) @ A.to(device=device, dtype=dtype)

    def weight_shape(self, name: str) -> tuple[int, int]:
        """The shape of ``weight_delta(name)``, without computing it."""
        if name in self.dense:
            out, inp = self.dense[name].shape
        else:
            out, inp = self.modules[name][0].shape[0], self.modules[name][1].shape[1]
        return (inp, out) if self.fan_in_fan_out and name not in self.embeddings else (out, inp)

    def weight_delta(self, name: str, **where) -> torch.Tensor:
        """``ΔW`` in the base weight's own layout: transposed for GPT-2's ``Conv1D`` (fan_in_fan_out)."""
        delta = self.delta(name, **where)
        return delta.T if self.fan_in_fan_out and name not in self.embeddings else delta

    def summary(self) -> dict[str, float | str]:
        """Mean and max of every per-module diagnostic (and the least λ), after the λ asked for and its rule."""
        keys = sorted({k for d in self.diagnostics.values() for k in d})
        out: dict[str, float | str] = {"modules": len(self.names())}  # a count: an int in JSON too
        if self.scaling is not None:
            out.update(scaling_requested=self.scaling.requested, scaling_rule=self.scaling.rule)
            if self.scaling.auto_table is not None:
                out["scaling_auto_table"] = self.scaling.auto_table
        for key in keys:
            values = [d[key] for d in self.diagnostics.values() if key in d]
            out[f"{key}_mean"] = sum(values) / len(values)
            if key == "scaling":
                out[f"{key}_min"] = min(values)
            out[f"{key}_max"] = max(values)
        return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_compatible(adapters: Sequence[LoraAdapter], base_model_check: BaseModelCheck = "strict") -> None:
    """Same base model name (``strict``), same fan_in_fan_out, and one shape and kind per module."""
    bases = {a.base_model for a in adapters if a.base_model}
    if len(bases) > 1 and base_model_check == "strict":
        raise BaseModelMismatchError(
            f"adapters were trained on base models of different names: {sorted(bases)}; merge adapters of one base "
            "model, or, if these are one model under other names (a 4-bit or renamed copy), set "
            'base_model_check: "same_shapes" (the shapes of every shared module must then agree)',
            base_models=sorted(bases),
        )
    if len({a.fan_in_fan_out for a in adapters}) > 1:
        raise InvalidAdapterConfigError("adapters disagree on fan_in_fan_out; they cannot target the same layers")
    shapes: dict[str, tuple[tuple[int, int], bool, str]] = {}
    for adapter in adapters:
        for name, module in adapter.modules.items():
            seen = shapes.setdefault(name, (module.shape, module.embedding, adapter.source))
            if seen[:2] != (module.shape, module.embedding):
                kinds = ["embedding" if e else "linear" for e in (seen[1], module.embedding)]
                raise ShapeMismatchError(
                    f"module {shown(name)} is a {kinds[0]} {list(seen[0])} in {seen[2]} but a {kinds[1]} "
                    f"{list(module.shape)} in {adapter.source}",
                    module=name[:NAME_SHOWN],
                )


def check_against_base(adapters: Sequence[LoraAdapter], base: BaseWeights) -> None:
    """Every adapter module has a base weight of its shape (an adapter's own saved copy of the layer
    counts instead, e.g. embeddings resized for new tokens), and every whole tensor an adapter carries
    fits the base's: same dimensions, only the first (labels of a head, rows of a resized vocabulary)
    may differ; a trained bias must match exactly."""
    for adapter in adapters:
        for name, module in adapter.modules.items():
            key = f"{name}.weight"
            if key in adapter.full_weights:
                shape = tuple(adapter.full_weights[key].tensor.shape)
            elif key in base:
                shape = base.shape(key)
            else:
                raise BaseModelError(
                    f"the base model has no weight {shown(key)} for a module of {adapter.source}; is it the model the "
                    "adapters were trained on?",
                    module=name[:NAME_SHOWN],
                )
            expected = module.shape[::-1] if adapter.fan_in_fan_out and not module.embedding else module.shape
            if shape != tuple(expected):
                raise ShapeMismatchError(
                    f"module {shown(name)} of {adapter.source} updates a {list(expected)} weight, but the base model's "
                    f"is {list(shape)}",
                    module=name[:NAME_SHOWN],
                )
        for name, full in adapter.full_weights.items():
            if name not in base:
                continue  # a head the base does not have (a classifier on a causal LM's body)
            have, want = tuple(full.tensor.shape), base.shape(name)
            fits = have == want or (full.kind != "trained_bias" and len(have) == len(want) and have[1:] == want[1:])
            if not fits:
                raise ShapeMismatchError(
                    f"{adapter.source} carries {shown(name)} as {list(have)}, which does not fit the base model's "
                    f"{list(want)} (only the first dimension, a head's labels or a vocabulary's rows, may differ)",
                    tensor=name[:NAME_SHOWN],
                )


def dora_update(module: LoraModule, W0: torch.Tensor) -> torch.Tensor:
    """DoRA's effective update as PEFT's forward pass applies it, in float64:
    ``ΔW = m ⊙ V / ‖V‖_row − W0`` with ``V = W0 + s B A`` (``W0`` in ``(out, in)`` layout)."""
    W0 = W0.double()
    V = W0 + module.scale * (module.B.double() @ module.A.double())
    return (module.magnitude.double() / V.norm(dim=1)).unsqueeze(1) * V - W0


def merge_adapters(
    adapters: Sequence[LoraAdapter],
    method: MergeMethod,
    params: MethodParams,
    *,
    weights: Sequence[float] | None = None,
    rank: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_elements: int = BATCH_ELEMENTS,
    base: BaseWeights | None = None,
    base_model_check: BaseModelCheck = "strict",
    output_kind: str = "adapter",
    on_oom: OomPolicy = "cpu",
    spill_dir: Path | None = None,
) -> MergedAdapter:
    """Merge ``adapters`` module by module, batching modules of the same shape.

    Args:
        adapters: loaded adapters (``load_adapter``) of one base model; target modules may differ.
        method, params: a registered method and its parsed parameters (``validate_spec``); ``params.scaling`` is
            resolved here (``merge_core.scaling``; ``"auto"`` reads the adapters' PEFT ``task_type``) and applied
            to each module's result.
        weights: ``weights[i]`` multiplies adapter i's update ``ΔW_i`` (default 1 each).
        rank: ``None`` keeps the exact result (factors, or for a dense method into a ``merged_model`` the dense
            update in ``MergedAdapter.dense``); an integer truncates each module by SVD to at most that rank and
            reports the relative error as ``compression_error``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``/None (CUDA when available).
        progress: ``progress(stage, done, total)`` per batch and inside long kernels.
        should_cancel: asked at the same points; True raises MergeCancelledError.
        batch_elements: upper bound of one batch's factor elements (memory per batch).
        base: the base model's weights; needed for DoRA modules, and checked against every module's shape.
        base_model_check: ``strict`` refuses adapters whose base model names differ; ``same_shapes`` does not.
        output_kind: ``merged_model`` lets a dense method run without ``rank``.
        on_oom: a batch that runs the device out of memory is split in halves and retried; a single module
            that still does not fit runs on the CPU (``"cpu"``) or raises DeviceOutOfMemoryError (``"fail"``).
        spill_dir: keep each batch's result in files there instead of memory (``MergedAdapter``).

    Raises:
        RankRequiredError: a dense method without ``rank`` for an adapter.
        BaseModelRequiredError: DoRA modules and no ``base``.
        BaseModelMismatchError, ShapeMismatchError: adapters that cannot be merged together.
        MergeDivergedError: the result holds NaN or Inf.
        MergeCancelledError: ``should_cancel`` said so.
    """
    method.check_rank(rank, output_kind, params)
    check_compatible(adapters, base_model_check)
    if base is not None:
        check_against_base(adapters, base)
    elif any(m.dora for a in adapters for m in a.modules.values()):
        raise BaseModelRequiredError(
            "DoRA adapters change the base weight's norms, so their update depends on it: set output.base_model "
            "to the model they were trained on"
        )
    weights = list(weights) if weights is not None else [1.0] * len(adapters)
    device = resolve_device(device)
    factored = method.factored and getattr(params, "factored_result", True)  # DO-Merging around TIES is dense
    batches = _plan_batches(adapters, factored, device_batch_elements(device, batch_elements, dtype))
    total = sum(len(names) for names, _ in batches)
    seed = params.seed if isinstance(params, SeededParams) else 0
    if getattr(params, "compute_dtype", None) == "float64":
        dtype = torch.float64
    result = MergedAdapter(
        modules={},
        base_model=adapters[0].base_model,
        fan_in_fan_out=adapters[0].fan_in_fan_out,
        embeddings={n for a in adapters for n, m in a.modules.items() if m.embedding},
        spill_dir=spill_dir,
        scaling=resolve_scaling(method.name, params, [a.config.get("task_type") for a in adapters]),
    )
    done = 0

    def cancel_point(where: str) -> None:
        if should_cancel is not None and should_cancel():
            raise MergeCancelledError(f"cancelled after {done} of {total} modules{where}", done=done, total=total)

    def checkpoint(stage: str, step: int, steps: int) -> None:
        cancel_point(f", in the batch after them at {stage} step {step} of {steps}")
        if progress is not None:
            progress(stage, step, steps)

    def scan():  # every batch once more, for a method's prepass (model-wide trimming)
        for k, (names, members) in enumerate(batches):
            checkpoint("scan", k, len(batches))
            yield _build_batch(adapters, weights, names, members, device, dtype, seed, base)

    if method.prepass is not None:
        params = method.prepass(params, scan)

    def run(names: list[str], members, on: torch.device) -> None:
        batch = _build_batch(adapters, weights, names, members, on, dtype, seed, base)
        batch.checkpoint = checkpoint
        out = apply_scaling(result.scaling, batch, method.kernel(batch, params))
        _check_finite(out, names, method.name)
        _collect(result, names, out, rank, seed, keep_dense=any(dora for _, dora in members))

    for names, members in batches:
        cancel_point("")
        run_guarded(lambda part, on, members=members: run(part, members, on), names, device, on_oom)
        done += len(names)
        if progress is not None:
            progress("merge", done, total)
    return result


def run_guarded(
    run: Callable[[list[str], torch.device], None], names: list[str], device: torch.device, on_oom: OomPolicy
) -> None:
    """``run(names, device)``, splitting the batch in halves when the device runs out of memory; a single
    module that still does not fit runs on the CPU (``on_oom="cpu"``) or fails as ``device_out_of_memory``."""
    try:
        run(names, device)
        return
    except torch.OutOfMemoryError:
        _release(device)
    if len(names) > 1:
        half = len(names) // 2
        run_guarded(run, names[:half], device, on_oom)
        run_guarded(run, names[half:], device, on_oom)
    elif on_oom == "cpu" and device.type != "cpu":
        run(names, torch.device("cpu"))
    else:
        raise DeviceOutOfMemoryError(
            f"module {shown(names[0])} alone does not fit in the memory of {device}; free the device, use one with "
            "more memory, or let the worker fall back to the CPU (LORAMERGE_OOM_FALLBACK=cpu)",
            device=str(device),
            module=names[0][:NAME_SHOWN],
        )


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# A batch's working set is several times its factors (copies, Gram matrices, products, the output):
# a GPU batch gets at most this share of the free memory, counted in factor elements.
DEVICE_MEMORY_SHARE = 0.25
WORKING_SET_FACTOR = 8


def device_batch_elements(device: torch.device, batch_elements: int, dtype: torch.dtype) -> int:
    """The batch budget on ``device``: ``batch_elements``, lowered on a GPU to what its free memory holds
    (``DEVICE_MEMORY_SHARE`` of it, for a working set of ``WORKING_SET_FACTOR`` times the factors). A
    batch that still runs out of memory is split (``run_guarded``)."""
    if device.type != "cuda":
        return batch_elements
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * DEVICE_MEMORY_SHARE) // (torch.empty((), dtype=dtype).element_size() * WORKING_SET_FACTOR)
    return max(1, min(batch_elements, fits))


def _plan_batches(adapters, factored: bool, batch_elements: int) -> list[tuple[list[str], list[tuple[int, bool]]]]:
    """Group modules by (shape, carrying adapters, their ranks, DoRA or not); split groups to fit the budget.
    A DoRA member counts with the full rank ``min(out, in)`` of its dense update."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted({n for a in adapters for n in a.modules}):
        shape = next(a.modules[name].shape for a in adapters if name in a.modules)
        members = tuple(
            (i, min(shape) if a.modules[name].dora else a.modules[name].rank, a.modules[name].dora)
            for i, a in enumerate(adapters)
            if name in a.modules
        )
        groups.setdefault((shape, members), []).append(name)
    plan = []
    for (shape, members), names in groups.items():
        per_module = sum(r for _, r, _ in members) * (shape[0] + shape[1])
        size = max(1, batch_elements // per_module) if factored else 1
        for start in range(0, len(names), size):
            plan.append((names[start : start + size], [(i, dora) for i, _, dora in members]))
    return plan


def _build_batch(adapters, weights, names, members, device, dtype, seed, base) -> ModuleBatch:
    A, B, coef = [], [], []
    for i, dora in members:
        adapter = adapters[i]
        if dora:  # the exact dense update as SVD factors: U·S and Vᴴ (scale and all folded into B)
            factors = [
                torch.linalg.svd(dora_update(adapter.modules[n], _base_weight(adapter, n, base)), full_matrices=False)
                for n in names
            ]
            B.append(torch.stack([U * S for U, S, _ in factors]).to(device=device, dtype=dtype))
            A.append(torch.stack([Vh for _, _, Vh in factors]).to(device=device, dtype=dtype))
            coef.append(torch.full((len(names),), weights[i], device=device, dtype=dtype))
            continue
        A.append(torch.stack([adapter.modules[n].A for n in names]).to(device=device, dtype=dtype))
        B.append(torch.stack([adapter.modules[n].B for n in names]).to(device=device, dtype=dtype))
        coef.append(torch.tensor([adapter.modules[n].scale * weights[i] for n in names], device=device, dtype=dtype))
    seeds = [(seed * 0x9E3779B1 + zlib.crc32(n.encode())) % 2**63 for n in names]
    carriers = [i for i, _ in members]
    return ModuleBatch(names, A, B, coef, seeds, adapters=carriers, weights=[weights[i] for i in carriers])


def _base_weight(adapter: LoraAdapter, name: str, base: BaseWeights) -> torch.Tensor:
    """``W0`` of a module in ``(out, in)`` layout: the adapter's own saved copy if it has one, else the base's."""
    key = f"{name}.weight"
    W0 = adapter.full_weights[key].tensor if key in adapter.full_weights else base.get(key)
    return W0.T if adapter.fan_in_fan_out and not adapter.modules[name].embedding else W0


def _check_finite(out: BatchResult, names: list[str], method: str) -> None:
    """Inputs were checked finite on load, so NaN/Inf here means the method diverged: fail, never save it."""
    for tensor in (out.dense, out.B, out.A):
        if tensor is None:
            continue
        bad = ~torch.isfinite(tensor).flatten(1).all(-1)
        if bad.any():
            modules = [name for name, b in zip(names, bad.tolist()) if b]
            raise MergeDivergedError(
                f"{method} produced non-finite values in {len(modules)} module(s), first {shown(modules[0])}; "
                "its parameters make it numerically unstable",
                method=method,
                modules=[m[:NAME_SHOWN] for m in modules[:10]],
            )


def _collect(result: MergedAdapter, names, out: BatchResult, rank: int | None, seed: int, *, keep_dense: bool) -> None:
    diagnostics = {k: v.detach().double().cpu().tolist() for k, v in out.diagnostics.items()}
    for j, name in enumerate(names):
        result.diagnostics[name] = {k: float(v[j]) for k, v in diagnostics.items()}
    if out.dense is not None and rank is not None:
        n, rows, cols = out.dense.shape
        total_sq = out.dense.double().square().sum((-1, -2))
        U, S, Vh = randomized_svd(out.dense, min(rank, rows, cols), seed=seed)
        B, A, error = truncate(U, S, Vh, rank, total_sq=total_sq)
    elif rank is not None:
        B, A, error = truncate(*svd_from_factors(out.B, out.A), rank)
    elif keep_dense or out.dense is not None:  # exact full rank (DoRA; a dense method into a merged_model)
        dense = (out.dense if out.dense is not None else out.B.double() @ out.A.double()).cpu()
        for name, kept in zip(names, _keep(result, names, {"dense": dense})):
            result.dense[name] = kept["dense"]
        return
    else:
        B, A, error = *balance(out.B, out.A), None
    if error is not None:
        for j, name in enumerate(names):
            result.diagnostics[name]["compression_error"] = float(error[j])
    for name, kept in zip(names, _keep(result, names, {"B": B.cpu(), "A": A.cpu()})):
        result.modules[name] = (kept["B"], kept["A"])


def _keep(result: MergedAdapter, names: list[str], stacked: dict[str, torch.Tensor]) -> list[dict]:
    """Per module of a batch, ``{part: its slice}``: in memory, or references into one spill file
    written for the whole batch (``StoredTensor``) when the merge spills."""
    if result.spill_dir is None:
        return [{part: t[j] for part, t in stacked.items()} for j in range(len(names))]
    path = result.spill_dir / f"batch-{sum(1 for _ in result.spill_dir.iterdir()):06d}.safetensors"
    save_tensors({f"{part}.{j}": t[j].contiguous() for part, t in stacked.items() for j in range(len(names))}, path)
    return [
        {part: StoredTensor(path, f"{part}.{j}", tuple(t[j].shape)) for part, t in stacked.items()} for j in range(len(names))
    ]


def balance(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each rank component so ``‖B[:, k]‖ = ‖A[k, :]‖``: same product, no fp16 under/overflow."""
    nb, na = B.norm(dim=-2), A.norm(dim=-1)
    ok = (nb > 0) & (na > 0)
    c = torch.where(ok, (na / nb.where(ok, torch.ones_like(nb))).sqrt(), torch.ones_like(nb))
    return B * c.unsqueeze(-2), A / c.unsqueeze(-1)
