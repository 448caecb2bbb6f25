"""The quality benchmark's two factor-level tricks, checked on small synthetic adapters."""

import torch

from benchmarks.quality.apart import merge_apart
from merge_core.engine import merge_adapters
from merge_core.registry import get_method
from support.factories import memory_adapter

SHAPES = {"l0.q": (12, 10), "l0.up": (20, 10)}


def adapters():
    return [memory_adapter(SHAPES, rank=3, seed=seed, scale=0.5 + seed) for seed in (1, 2, 3)]


def test_task_arithmetic_apart_is_the_product_of_sums_with_its_cross_terms():
    ads, ta = adapters(), get_method("task_arithmetic")
    deltas = merge_apart(ads, ta, ta.parse_params({"scaling": 0.7}))
    for name in SHAPES:
        B = sum(a.modules[name].scale * a.modules[name].B.double() for a in ads)
        A = sum(a.modules[name].A.double() for a in ads)
        torch.testing.assert_close(deltas[name].double(), 0.7 * B @ A, rtol=1e-5, atol=1e-6)
        on_product = sum(a.modules[name].scale * a.modules[name].B.double() @ a.modules[name].A.double() for a in ads)
        assert not torch.allclose(deltas[name].double(), 0.7 * on_product, atol=1e-3)


def test_dense_methods_merge_each_factor_at_its_own_shape():
    ads, ties = adapters(), get_method("ties")
    deltas = merge_apart(ads, ties, ties.parse_params({"density": 0.5}))
    assert {name: tuple(d.shape) for name, d in deltas.items()} == SHAPES
    assert all(torch.isfinite(d).all() and d.abs().sum() > 0 for d in deltas.values())


def test_merged_factor_blocks_are_the_adapters_own_updates():
    """What the ortho_mu table relies on: without decoupling, block i of the merged factors is adapter i."""
    ads, do = adapters(), get_method("do_merging")
    params = do.parse_params({"orthogonalize": False, "decouple": False, "scaling": 1.0})
    merged = merge_adapters(ads, do, params, dtype=torch.float64)
    for i, adapter in enumerate(ads):
        block = slice(3 * i, 3 * i + 3)
        for name, (B, A) in merged.modules.items():
            module = adapter.modules[name]
            torch.testing.assert_close(B[:, block] @ A[block], module.scale * module.B.double() @ module.A.double())
