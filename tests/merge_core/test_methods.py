"""Contract tests over every registered method, plus exactness of the factored paths in float64."""

import pytest
import torch

from merge_core.engine import merge_adapters
from merge_core.errors import RankRequiredError
from merge_core.registry import get_method, list_methods
from support.factories import memory_adapter

SHAPES = {"a.q": (24, 16), "a.v": (12, 16), "b.q": (24, 16)}
# Parameters under which merging one adapter must return it unchanged.
IDENTITY_PARAMS = {
    "do_merging": {},
    "task_arithmetic": {},
    "ties": {"density": 1.0},
    "dare_linear": {"drop_rate": 0.0},
    "dare_ties": {"drop_rate": 0.0},
    "breadcrumbs": {"beta": 1.0, "gamma": 0.0},
    "breadcrumbs_ties": {"beta": 1.0, "gamma": 0.0},
    "knots": {"density": 1.0},
    "tsv": {},
    "drm": {"density": 1.0},
    "peft_linear": {},
}


def run(method_name, adapters, params=None, **kwargs):
    method = get_method(method_name)
    kwargs.setdefault("rank", None if method.factored else 64)
    return merge_adapters(adapters, method, method.parse_params(params or {}), dtype=torch.float64, **kwargs)


def dense_updates(adapters, name, weights=None):
    weights = weights or [1.0] * len(adapters)
    return [
        w * a.modules[name].scale * a.modules[name].B @ a.modules[name].A for a, w in zip(adapters, weights) if name in a.modules
    ]


def rel(x, y):
    return float((x - y).norm() / y.norm())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("method_name", sorted(IDENTITY_PARAMS))
def test_the_device_does_not_change_the_result(method_name):
    """Seeded masks (DARE) are drawn on the CPU, so every method gives the CPU's result on a GPU too."""
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=2, seed=2)]
    params = {"seed": 3} if "seed" in get_method(method_name).params_model.model_fields else {}
    on_cpu, on_gpu = (run(method_name, adapters, params, device=d) for d in ("cpu", "cuda"))
    for name in SHAPES:
        assert rel(on_gpu.delta(name), on_cpu.delta(name)) < 1e-9, name


def test_identity_table_covers_every_method():
    assert set(IDENTITY_PARAMS) == {m.name for m in list_methods()}


@pytest.mark.parametrize("scaling", ["auto", "1/n", "1/sqrt(n)", "norm_match", 1.0])
@pytest.mark.parametrize("method_name", sorted(IDENTITY_PARAMS))
def test_one_adapter_with_weight_one_returns_itself(method_name, scaling, device):
    """The identity contract (METHOD.md §0) under the default scaling "auto" and every rule: each is 1 at n = 1."""
    adapter = memory_adapter(SHAPES, rank=4, seed=1, scale=2.0)
    merged = run(method_name, [adapter], {**IDENTITY_PARAMS[method_name], "scaling": scaling}, device=device)
    for name in SHAPES:
        assert rel(merged.delta(name), dense_updates([adapter], name)[0]) < 1e-6, name
        assert merged.diagnostics[name]["scaling"] == pytest.approx(1.0, abs=1e-12), name


@pytest.mark.parametrize("method_name", sorted(IDENTITY_PARAMS))
def test_adapters_with_different_ranks_and_modules(method_name, device):
    adapters = [
        memory_adapter(SHAPES, rank=2, seed=1),
        memory_adapter(SHAPES, rank=8, seed=2, scale=0.5),
        memory_adapter({"a.q": SHAPES["a.q"]}, rank=4, seed=3, scale=3.0),
    ]
    merged = run(method_name, adapters, device=device)
    assert set(merged.modules) == set(SHAPES)
    for name, (out, inp) in SHAPES.items():
        B, A = merged.modules[name]
        assert B.shape[0] == out and A.shape[1] == inp and B.shape[1] == A.shape[0]
        assert torch.isfinite(B).all() and torch.isfinite(A).all()
        assert merged.delta(name).norm() > 0


def test_factored_methods_reject_nothing_and_dense_methods_need_a_rank():
    adapter = memory_adapter(SHAPES, rank=2, seed=1)
    for method in list_methods():
        if method.factored:
            run(method.name, [adapter], rank=None)
        else:
            with pytest.raises(RankRequiredError):
                run(method.name, [adapter], rank=None)


def test_task_arithmetic_is_the_weighted_sum_at_rank_sum_r():
    adapters = [memory_adapter(SHAPES, rank=2, seed=1), memory_adapter(SHAPES, rank=6, seed=2, scale=4.0)]
    merged = run("task_arithmetic", adapters, {"scaling": 0.7}, weights=[1.5, -0.5])
    for name in SHAPES:
        expected = 0.7 * sum(dense_updates(adapters, name, [1.5, -0.5]))
        assert rel(merged.delta(name), expected) < 1e-12
        assert merged.modules[name][0].shape[1] == 8


@pytest.mark.parametrize(("method_name", "extra"), [("dare_linear", {}), ("dare_ties", {}), ("knots", {"merge": "dare_ties"})])
def test_dare_is_deterministic_under_a_seed(method_name, extra):
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=4, seed=2)]
    first = run(method_name, adapters, {"seed": 7, "drop_rate": 0.5, **extra})
    again = run(method_name, adapters, {"seed": 7, "drop_rate": 0.5, **extra}, batch_elements=1)
    other = run(method_name, adapters, {"seed": 8, "drop_rate": 0.5, **extra})
    for name in SHAPES:
        assert torch.equal(first.delta(name), again.delta(name))
        assert not torch.allclose(first.delta(name), other.delta(name))


def test_ties_elects_signs_and_averages_agreeing_entries():
    # Two rank-1 updates on a 1x4 module: entries chosen so every TIES rule shows.
    from merge_core.adapters import LoraAdapter, LoraModule

    def one(row):
        return LoraAdapter(
            modules={
                "m": LoraModule(A=torch.tensor([row], dtype=torch.float64), B=torch.ones(1, 1, dtype=torch.float64), scale=1.0)
            }
        )

    merged = run("ties", [one([3.0, -1.0, 0.1, 2.0]), one([1.0, 2.0, -0.2, -1.0])], {"density": 0.75, "scaling": 1.0}, rank=1)
    # trimmed: [3,-1,0,2] and [1,2,0,-1]; signs: +,+,0,+; agreeing means: 2, 2, 0, 2
    assert torch.allclose(merged.delta("m"), torch.tensor([[2.0, 2.0, 0.0, 2.0]], dtype=torch.float64))


def test_output_rank_gives_the_best_rank_k_approximation_and_reports_its_error():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=4, seed=2)]
    merged = run("task_arithmetic", adapters, {"scaling": 1.0}, rank=3)
    for name in SHAPES:
        dense = sum(dense_updates(adapters, name))
        U, S, Vh = torch.linalg.svd(dense)
        best = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
        assert rel(merged.delta(name), best) < 1e-10
        expected_error = float(S[3:].square().sum().sqrt() / S.square().sum().sqrt())
        assert merged.diagnostics[name]["compression_error"] == pytest.approx(expected_error, rel=1e-9)


def test_dense_methods_compress_with_a_reported_error():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=4, seed=2)]
    merged = run("ties", adapters, {"density": 0.5}, rank=4)
    for name in SHAPES:
        err = merged.diagnostics[name]["compression_error"]
        assert 0 < err < 1
        assert merged.modules[name][0].shape[1] == 4


def test_rank_is_capped_at_the_module_size():
    adapters = [memory_adapter({"m": (6, 5)}, rank=4, seed=1), memory_adapter({"m": (6, 5)}, rank=4, seed=2)]
    merged = run("ties", adapters, {"density": 0.5}, rank=100)
    assert merged.modules["m"][0].shape[1] == 5
    assert merged.diagnostics["m"]["compression_error"] < 1e-7


def test_kth_largest_is_exact_on_large_inputs():
    from merge_core.ops.sparsify import kth_largest

    gen = torch.Generator().manual_seed(3)
    values = torch.randn(2_000_003, generator=gen).abs()
    values[:1000] = 0.5  # ties near a quantile do not break it
    for k in (1, 7, 400_000, 1_000_000, 1_999_999):
        assert kth_largest(values, k) == values.kthvalue(values.numel() - k + 1).values
