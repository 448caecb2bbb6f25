"""Speed and memory of merge_core against PEFT's add_weighted_adapter, on Llama-3-8B shapes.

8 adapters, r=16, all seven linear modules per layer (hidden 4096, intermediate 14336, kv 1024).
Everything runs in one process on the same adapters; slow peers run on fewer layers and are scaled
per layer (said in the output). Run:  .venv/bin/python -m benchmarks.bench_merge [--layers 32] ...
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.memory import measure
from merge_core.adapters import LoraAdapter, LoraModule
from merge_core.engine import merge_adapters, resolve_device
from merge_core.ops.orthogonalize import orthogonalize
from merge_core.registry import get_method

HIDDEN, INTER, KV = 4096, 14336, 1024
MODULES = {
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (KV, HIDDEN),
    "self_attn.v_proj": (KV, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (INTER, HIDDEN),
    "mlp.up_proj": (INTER, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTER),
}


def make_adapters(n: int, rank: int, layers: int, seed: int = 0) -> list[LoraAdapter]:
    gen = torch.Generator().manual_seed(seed)
    adapters = []
    for _ in range(n):
        modules = {}
        for layer in range(layers):
            for suffix, (out, inp) in MODULES.items():
                A = torch.randn(rank, inp, generator=gen) / inp**0.5
                B = torch.randn(out, rank, generator=gen) * 0.01
                modules[f"model.layers.{layer}.{suffix}"] = LoraModule(A=A, B=B, scale=2.0)
        adapters.append(LoraAdapter(modules=modules, base_model="meta-llama/Meta-Llama-3-8B"))
    return adapters


def subset(adapters: list[LoraAdapter], layers: int) -> list[LoraAdapter]:
    keep = {f"model.layers.{i}." for i in range(layers)}
    return [
        LoraAdapter(modules={k: v for k, v in a.modules.items() if any(k.startswith(p) for p in keep)}, base_model=a.base_model)
        for a in adapters
    ]


def core_space_tsv(adapters: list[LoraAdapter], device) -> dict:
    """Peer for measurement only: TSV-M in Core Space (Panariello et al., NeurIPS 2025), ported from the
    description of their ``get_core_matrices`` + TSV: per module, the stacked ``A``s and ``B``s give
    reference bases ``V_A``, ``U_B``; each task becomes an ``R × R`` core ``U_Bᵀ (s B_i A_i) V_A``; TSV-M
    merges the cores (per-task SVD truncated to ``R/n``, polar factors of the concatenated singular
    vectors) and the result is mapped back. Module by module, as their code loops."""
    with measure(device) as stats:
        for name in adapters[0].modules:
            mods = [a.modules[name] for a in adapters]
            A = torch.cat([m.A for m in mods]).to(device)  # (R, in)
            B = torch.cat([m.scale * m.B for m in mods], dim=1).to(device)  # (out, R)
            V_A = torch.linalg.svd(A, full_matrices=False)[2].T  # (in, R)
            U_B = torch.linalg.svd(B, full_matrices=False)[0]  # (out, R)
            cores = [U_B.T @ (m.scale * m.B.to(device)) @ (m.A.to(device) @ V_A) for m in mods]
            keep = max(1, cores[0].shape[0] // len(cores))
            svds = [torch.linalg.svd(c) for c in cores]
            U = torch.cat([u[:, :keep] for u, _, _ in svds], dim=1)
            S = torch.cat([s_[:keep] for _, s_, _ in svds])
            Vh = torch.cat([vh[:keep] for _, _, vh in svds], dim=0)
            P, _, Qh = torch.linalg.svd(U, full_matrices=False)
            X, _, Yh = torch.linalg.svd(Vh, full_matrices=False)
            merged = (P @ Qh) @ torch.diag(S) @ (X @ Yh)
            _ = U_B @ merged @ V_A.T  # mapped back: the dense update a merged model stores
    return stats


def run_ours(adapters, name: str, params: dict, rank, device) -> dict:
    method = get_method(name)
    with measure(device) as stats:
        merge_adapters(adapters, method, method.parse_params(params), rank=rank, device=device)
    return stats


def run_peft(adapters: list[LoraAdapter], combination: str, rank: int) -> dict:
    """PEFT add_weighted_adapter on a model that holds just these layers' linear modules (CPU)."""
    from peft import LoraConfig, get_peft_model

    names = sorted(adapters[0].modules)
    root = torch.nn.Module()
    for name in names:  # build the module tree with uninitialized base weights (shape is all PEFT needs)
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        out, inp = adapters[0].modules[name].shape
        parent.add_module(parts[-1], torch.nn.utils.skip_init(torch.nn.Linear, inp, out, bias=False))
    r = adapters[0].modules[names[0]].rank
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=sorted({n.rsplit(".", 1)[-1] for n in names}))
    model = get_peft_model(root, config, adapter_name="a0")
    for i in range(1, len(adapters)):
        model.add_adapter(f"a{i}", config)
    modules = dict(model.base_model.model.named_modules())
    with torch.no_grad():
        for i, adapter in enumerate(adapters):
            for name, mod in adapter.modules.items():
                modules[name].lora_A[f"a{i}"].weight.copy_(mod.A)
                modules[name].lora_B[f"a{i}"].weight.copy_(mod.B)
    kwargs = {"svd_rank": rank, "density": 0.2} if combination == "ties_svd" else {}
    with measure(torch.device("cpu")) as stats:
        model.add_weighted_adapter(
            [f"a{i}" for i in range(len(adapters))], [1.0] * len(adapters), "merged", combination, **kwargs
        )
    return stats


def ortho_scaling(device, rank_total: int, steps: int) -> list[tuple[int, float, float]]:
    """Per-step time of the span-reduced orthogonalization as the hidden size grows."""
    rows = []
    for d in (1024, 2048, 4096, 8192, 16384):
        X = torch.randn(32, rank_total, d, device=device)
        ranks = [rank_total // 8] * 8
        orthogonalize(X, ranks, steps=2, lr=0.1, mu=1.0)  # warm-up
        timings = {}
        for n in (0, steps):
            with measure(device) as st:
                orthogonalize(X, ranks, steps=n, lr=0.1, mu=1.0)
            timings[n] = st["seconds"]
        rows.append((d, (timings[steps] - timings[0]) / steps * 1e3 / 32, timings[0] * 1e3 / 32))
    return rows


def fmt(stats: dict, scale: float = 1.0) -> str:
    return f"{stats['seconds'] * scale:9.2f} s  {stats['peak_bytes'] / 2**20:9.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--dense-layers", type=int, default=1, help="layers for our dense TIES (scaled per layer)")
    parser.add_argument("--peft-layers", type=int, default=1, help="layers for PEFT (scaled per layer); 0 skips PEFT")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.adapters} adapters r={args.rank}, {args.layers} layers x 7 modules"
    )
    t0 = time.perf_counter()
    adapters = make_adapters(args.adapters, args.rank, args.layers)
    print(f"built adapters in {time.perf_counter() - t0:.1f} s\n")
    results = {}
    results["do_merging"] = run_ours(adapters, "do_merging", {}, None, device)
    print(
        f"ours  do_merging (full, exact rank {args.adapters * args.rank})   {args.layers:2d} layers {fmt(results['do_merging'])}"
    )
    results["task_arithmetic"] = run_ours(adapters, "task_arithmetic", {}, None, device)
    print(f"ours  task_arithmetic (exact)                  {args.layers:2d} layers {fmt(results['task_arithmetic'])}")
    results["do_merging_r16"] = run_ours(adapters, "do_merging", {}, args.rank, device)
    print(f"ours  do_merging -> rank {args.rank} (SVD from factors)  {args.layers:2d} layers {fmt(results['do_merging_r16'])}")
    for name in ("tsv", "knots"):  # exact low rank from factors: QR/SVD-bound
        results[name] = run_ours(adapters, name, {}, None, device)
        print(
            f"ours  {name} (exact, rank <= {args.adapters * args.rank})            {args.layers:2d} layers {fmt(results[name])}"
        )
    results["core_space_tsv"] = core_space_tsv(adapters, device)
    print(f"peer  Core Space TSV-M (port, dense map back)    {args.layers:2d} layers {fmt(results['core_space_tsv'])}")
    print(f"ratio Core Space TSV-M / ours tsv: {results['core_space_tsv']['seconds'] / results['tsv']['seconds']:8.2f}x")
    dense = subset(adapters, args.dense_layers)
    scale_dense = args.layers / args.dense_layers
    results["ties"] = run_ours(dense, "ties", {"density": 0.2}, args.rank, device)
    print(
        f"ours  ties -> rank {args.rank} (dense)      {args.dense_layers:2d} layers, x{scale_dense:.0f} {fmt(results['ties'], scale_dense)}"
    )
    ours = results["do_merging"]["seconds"]
    if args.peft_layers:
        few = subset(adapters, args.peft_layers)
        scale_peft = args.layers / args.peft_layers
        for combination in ("cat", "ties_svd"):
            results[f"peft_{combination}"] = run_peft(few, combination, args.rank)
            print(
                f"peft  add_weighted_adapter {combination:8}   {args.peft_layers:2d} layers, x{scale_peft:.0f} {fmt(results[f'peft_{combination}'], scale_peft)}"
            )
        print(
            f"\nratio PEFT ties_svd (rank {args.rank}, scaled to {args.layers} layers) / ours do_merging full: "
            f"{results['peft_ties_svd']['seconds'] * scale_peft / ours:8.1f}x"
        )
        print(
            f"ratio PEFT ties_svd / ours do_merging -> rank {args.rank} (equal output rank):      "
            f"{results['peft_ties_svd']['seconds'] * scale_peft / results['do_merging_r16']['seconds']:8.1f}x"
        )
        print(
            f"ratio PEFT cat / ours task_arithmetic (same exact result):                  "
            f"{results['peft_cat']['seconds'] * scale_peft / results['task_arithmetic']['seconds']:8.1f}x"
        )
    print(
        f"ratio ours ties (dense) / ours do_merging:                                  {results['ties']['seconds'] * scale_dense / ours:8.1f}x"
    )
    print(
        f"\northogonalization, R={args.adapters * args.rank}, 100 steps, per module: hidden size -> ms per step, ms setup (Gram + projection)"
    )
    for d, per_step, setup in ortho_scaling(device, args.adapters * args.rank, 100):
        print(f"  d={d:6d}  {per_step:7.3f} ms/step  {setup:7.2f} ms setup")


if __name__ == "__main__":
    main()
