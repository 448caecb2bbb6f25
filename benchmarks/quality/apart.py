"""A and B merged apart: the paper's "Separate" rows (Tables 10-12) for any method of merge_core.

Each adapter's ``A_i`` (and, separately, its scaled ``B_i``) is handed to the method as if it were a
task update, written as a LoRA with an identity factor, so the method's own kernel merges it. The
result is ``ΔW = λ · B_merged @ A_merged``, cross terms ``B_i A_j`` included. Kernels return their
merge at λ = 1 (the engine, bypassed here, would scale it), so λ is applied once, to the product, as the
paper's β is; a rule (``"auto"``, ``"1/n"``, ...) resolves as the engine's does, on the product.
"""

from __future__ import annotations

import zlib

import torch

from merge_core.adapters import LoraAdapter
from merge_core.batch import BatchResult, ModuleBatch
from merge_core.registry import MergeMethod, MethodParams
from merge_core.scaling import resolve


def _product(out: BatchResult) -> torch.Tensor:
    return out.dense if out.dense is not None else out.B @ out.A


def _merge_factor(method: MergeMethod, params: MethodParams, name: str, side: str, factors, coefs) -> torch.Tensor:
    rank = factors[0].shape[0 if side == "A" else 1]
    eye = torch.eye(rank, dtype=torch.float64)[None]
    stacked = [f.double()[None] for f in factors]
    batch = ModuleBatch(
        names=[name],
        A=stacked if side == "A" else [eye] * len(stacked),
        B=[eye] * len(stacked) if side == "A" else stacked,
        coef=[torch.tensor([c], dtype=torch.float64) for c in coefs],
        seeds=[zlib.crc32(f"{name}/{side}".encode())],
    )
    return _product(method.kernel(batch, params))[0]


def merge_apart(adapters: list[LoraAdapter], method: MergeMethod, params: MethodParams) -> dict:
    """``{module: λ · merge(B_1..B_n) @ merge(A_1..A_n)}`` with λ from ``params.scaling``; ranks must match per module."""
    scaling = resolve(method.name, params)
    deltas = {}
    for name in adapters[0].modules:
        modules = [a.modules[name] for a in adapters]
        A = _merge_factor(method, params, name, "A", [m.A for m in modules], [1.0] * len(modules))
        B = _merge_factor(method, params, name, "B", [m.B for m in modules], [m.scale for m in modules])
        product = B @ A

        def norms(product=product, modules=modules):
            each = torch.stack([(m.scale * m.B.double() @ m.A.double()).norm() for m in modules])
            return each[:, None], product.norm()[None]

        deltas[name] = (float(scaling.lambdas(len(modules), 1, norms)[0]) * product).float()
    return deltas
