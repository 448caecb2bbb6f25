"""OSRM initialisation ("Unraveling LoRA Interference: Orthogonal Subspaces for Robust
Model Merging"): for each task t and target module, ``A_t`` spans the r directions in which the other
tasks' inputs to that module vary least; ``B_t = 0``. docs/METHOD.md states every choice.

The base model runs once over every task's samples, in batches; a forward pre-hook on each target
module pools its input per sample and adds it to per-task statistics (a sum per task; with the
``sample_covariance`` variant also the Gram matrix ``Σ h hᵀ``), so memory never grows with the number
of samples. Then each task's ``A`` is solved from the statistics of the *other* tasks.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from merge_core.errors import (
    BaseModelError,
    InvalidSamplesError,
    InvalidSpecError,
    MergeCancelledError,
    UnknownModuleError,
)
from merge_core.osrm.spec import OsrmParams

Progress = Callable[[str, int, int], None]
EPS64 = torch.finfo(torch.float64).eps


# -- the base model ----------------------------------------------------------------------------------
def model_class(config):
    """The class the folder's ``config.json`` names (``architectures[0]``) if transformers has it, else
    ``AutoModel``: the adapter's module names are those of this class (PEFT loads them by name)."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return transformers.AutoModel


def load_base_model(folder: Path, device: str = "cpu") -> nn.Module:
    """The base model in float32, in eval mode, from local files only (no remote code)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"the base model's config.json is missing or unreadable: {exc}", base_model=str(folder)) from None
    if getattr(config, "is_encoder_decoder", False):
        raise InvalidSpecError(
            f"the base model is encoder-decoder ({config.model_type}); OSRM initialisation supports encoder-only and "
            "decoder-only models"
        )
    cls = model_class(config)
    try:
        model = cls.from_pretrained(
            str(folder), dtype=torch.float32, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"the base model could not be loaded: {exc}", base_model=str(folder)) from None
    return model.to(device).eval()


def module_names_from_config(folder: Path) -> list[tuple[str, bool]]:
    """``(name, is_linear)`` for every module of the folder's model, built on the meta device from its
    config alone (no weights read): the API checks ``target_modules`` against it before queueing."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model = model_class(config)._from_config(config)
    return [(name, isinstance(module, nn.Linear)) for name, module in model.named_modules()]


def matches(name: str, key: str) -> bool:
    """PEFT's rule for a ``target_modules`` list entry: the full name, or its last dotted parts."""
    return name == key or name.endswith("." + key)


def target_names(modules: list[tuple[str, bool]], target_modules: list[str]) -> list[str]:
    """The linear modules PEFT would wrap; UnknownModuleError for an entry that matches none."""
    chosen: list[str] = []
    for key in target_modules:
        found = [(name, linear) for name, linear in modules if matches(name, key)]
        if not found:
            raise UnknownModuleError(f"target module {key!r} matches no module of the base model", module=key)
        if not any(linear for _, linear in found):
            raise UnknownModuleError(
                f"target module {key!r} matches {found[0][0]!r}, which is not a linear layer (OSRM initialises nn.Linear)",
                module=key,
            )
        chosen += [name for name, linear in found if linear and name not in chosen]
    return [name for name, linear in modules if name in chosen]  # in model order


def tokenize(folder: Path, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the base model's own tokenizer (special tokens added, truncated)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BaseModelError(
            f"the base model has no usable tokenizer ({type(exc).__name__}); give the samples as input_ids",
            base_model=str(folder),
        ) from None
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return [list(row) for row in ids]


# -- statistics ----------------------------------------------------------------------------------------
@dataclass
class ModuleStats:
    """One module's statistics per task: the sum of its pooled rows, their count, and (sample_covariance)
    their Gram matrix Σ h hᵀ; float64."""

    sums: list[torch.Tensor]
    counts: list[int]
    grams: list[torch.Tensor] | None = None


@dataclass
class Statistics:
    modules: dict[str, ModuleStats] = field(default_factory=dict)
    rows_per_task: list[int] = field(default_factory=list)


def pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Rows of one module input ``x`` for a batch whose attention mask is ``mask`` [batch, tokens]."""
    if x.dim() == 2 and x.shape[0] == mask.shape[0]:  # one vector per sample (a pooler): that is the row
        return x
    x = x.reshape(mask.shape[0], mask.shape[1], -1) if x.dim() != 3 else x
    if pooling == "tokens":
        return x[mask]
    if pooling == "last":
        last = mask.long().sum(1) - 1
        return x[torch.arange(x.shape[0], device=x.device), last]
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1)


def collect(
    model: nn.Module,
    names: list[str],
    samples: list[list[list[int]]],
    params: OsrmParams,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Statistics:
    """Run ``model`` over each task's samples (``samples[t]``: token id lists) in batches of
    ``params.batch_size`` and accumulate each named module's pooled inputs per task."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    covariance = params.variant == "sample_covariance"
    modules = dict(model.named_modules())
    stats = Statistics()
    for name in names:
        width = modules[name].in_features
        stats.modules[name] = ModuleStats(
            sums=[torch.zeros(width, dtype=torch.float64, device=device) for _ in samples],
            counts=[0 for _ in samples],
            grams=[torch.zeros(width, width, dtype=torch.float64, device=device) for _ in samples] if covariance else None,
        )
    current: dict = {}

    def hook(name: str):
        def pre(module, args, kwargs=None):
            x = args[0] if args else next(iter((kwargs or {}).values()))
            rows = pool(x.detach(), current["mask"], params.pooling).to(torch.float64)
            st, t = stats.modules[name], current["task"]
            st.sums[t] += rows.sum(0)
            st.counts[t] += rows.shape[0]
            if st.grams is not None:
                st.grams[t] += rows.T @ rows

        return pre

    for t, rows in enumerate(samples):
        for i, row in enumerate(rows):
            if max(row) >= vocab:
                raise InvalidSamplesError(
                    f"task {t}: sample {i} has a token id {max(row)} outside the base model's vocabulary ({vocab})", task=t
                )
    batches = [
        (t, rows[i : i + params.batch_size]) for t, rows in enumerate(samples) for i in range(0, len(rows), params.batch_size)
    ]
    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        for done, (t, batch) in enumerate(batches):
            if should_cancel is not None and should_cancel():
                raise MergeCancelledError("cancelled during the forward passes", stage="forward")
            width = max(len(row) for row in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.bool)
            for j, row in enumerate(batch):  # right padding: a sample's own positions never see the padding
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = True
            current.update(task=t, mask=mask.to(device))
            with torch.no_grad():
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
            if progress is not None:
                progress("forward", done + 1, len(batches))
    finally:
        for handle in handles:
            handle.remove()
    stats.rows_per_task = [stats.modules[names[0]].counts[t] for t in range(len(samples))] if names else []
    return stats


# -- the solution ----------------------------------------------------------------------------------------
@dataclass
class Solved:
    A: torch.Tensor  # r x n, float64, orthonormal rows
    residual: float  # tr(A S Aᵀ): the other tasks' energy A keeps
    energy: float  # tr(S)
    zero_variance_dims: int  # directions in which the other tasks do not vary at all


def _random_frame(basis: torch.Tensor | None, n: int, r: int, generator: torch.Generator, *, inside: bool) -> torch.Tensor:
    """r orthonormal rows drawn at random (seeded) inside span(basis) (``inside``) or orthogonal to it."""
    g = torch.randn(n, r, generator=generator, dtype=torch.float64)
    for _ in range(2):  # twice: the second pass removes what rounding left of the first
        if basis is not None and basis.shape[1]:
            g = basis @ (basis.T @ g) if inside else g - basis @ (basis.T @ g)
        g, _ = torch.linalg.qr(g)
    return g.T.contiguous()


def solve(stats: ModuleStats, task: int, r: int, params: OsrmParams, generator: torch.Generator) -> Solved:
    """``A_t`` = the r eigenvectors of the other tasks' S with the smallest eigenvalues (A Aᵀ = I)."""
    others = [i for i in range(len(stats.sums)) if i != task]
    n = stats.sums[0].shape[0]
    if r > n:
        raise InvalidSpecError(f"r = {r} is more than the module's input width {n}", r=r, width=n)
    if params.variant == "task_means":  # H: one row per other task, its mean pooled feature (Eq. 4)
        H = torch.stack([stats.sums[i].cpu() / max(stats.counts[i], 1) for i in others])
        rows = H.shape[0]
        S = H.T @ H / max(rows - 1, 1)
        _, sigma, Vh = torch.linalg.svd(H, full_matrices=False)
        rank = int((sigma > sigma.max() * max(H.shape) * EPS64).sum()) if sigma.numel() and sigma.max() > 0 else 0
        null = n - rank
        if null >= r:  # every direction orthogonal to the rows has zero variance: draw the frame among them
            A = _random_frame(Vh[:rank].T, n, r, generator, inside=False)
        else:
            A = torch.linalg.eigh(S)[1][:, :r].T
    else:  # H: every pooled row of the other tasks (Eq. 2-3); S accumulated as Σ h hᵀ
        rows = sum(stats.counts[i] for i in others)
        S = sum(stats.grams[i].cpu() for i in others) / max(rows - 1, 1)
        values, vectors = torch.linalg.eigh(S)
        tol = max(float(values[-1]), 0.0) * n * EPS64 * 8
        null = int((values <= tol).sum())
        if null >= r:
            A = _random_frame(vectors[:, :null], n, r, generator, inside=True)
        else:
            A = vectors[:, :r].T.contiguous()
    residual = float(torch.trace(A @ S @ A.T))
    return Solved(A=A, residual=max(residual, 0.0), energy=float(torch.trace(S)), zero_variance_dims=null)


def generator_for(seed: int, task: str, module: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(f"{task}\0{module}".encode())) % (2**63))
