"""The convention parameters (docs/METHOD.md §8): each changes the result exactly as documented, so each
test here fails if its parameter is ignored."""

import pytest
import torch

from merge_core.adapters import LoraAdapter, LoraModule
from merge_core.engine import merge_adapters
from merge_core.errors import RankRequiredError
from merge_core.ops.select import StreamingKth
from merge_core.ops.sparsify import band_mask, keep_count
from merge_core.registry import get_method, validate_spec
from merge_core.spec import parse_spec
from support.factories import memory_adapter

SHAPES = {"a.q": (24, 16), "a.v": (12, 16), "b.q": (24, 16)}


def run(method_name, adapters, params=None, **kwargs):
    """The conventions' oracles are stated at λ = 1 (the sums and means themselves), so λ is 1 here, not auto."""
    method = get_method(method_name)
    kwargs.setdefault("rank", None)
    kwargs.setdefault("output_kind", "merged_model")
    params = {"scaling": 1.0, **(params or {})}
    return merge_adapters(adapters, method, method.parse_params(params), dtype=torch.float64, **kwargs)


def rows(*values):
    """One adapter per row: a 1×n module whose update is that row exactly."""
    return [
        LoraAdapter(
            modules={
                "m": LoraModule(A=torch.tensor([v], dtype=torch.float64), B=torch.ones(1, 1, dtype=torch.float64), scale=1.0)
            }
        )
        for v in values
    ]


def dense(adapters, name, weights=None):
    weights = weights or [1.0] * len(adapters)
    return [
        w * a.modules[name].scale * a.modules[name].B @ a.modules[name].A for a, w in zip(adapters, weights) if name in a.modules
    ]


def test_ties_normalize_divisor_and_zero_vote():
    adapters = rows([3.0, -1.0, 1.0, 2.0], [1.0, 2.0, -1.0, -4.0])
    weights = [2.0, 0.5]  # updates [6,-2,2,4] and [0.5,1,-0.5,-2]: sums 6.5, -1, 1.5, 2
    cases = {
        (True, "count", "none"): [3.25, 0.0 - 2.0, 2.0, 4.0],
        (True, "weight_sum", "none"): [6.5 / 2.5, -2.0 / 2.0, 2.0 / 2.0, 4.0 / 2.0],
        (False, "count", "none"): [6.5, -2.0, 2.0, 4.0],
    }
    for (normalize, divisor, zero_vote), expected in cases.items():
        params = {"density": 1.0, "normalize": normalize, "divisor": divisor, "zero_vote": zero_vote}
        merged = run("ties", adapters, params, weights=weights)
        assert torch.allclose(merged.delta("m"), torch.tensor([expected], dtype=torch.float64)), (params, merged.delta("m"))
    # a zero vote: [1, -1] sums to 0; 'none' keeps nothing, 'positive' elects + (mergekit, PEFT)
    tie = rows([1.0, 2.0], [-1.0, 3.0])
    assert run("ties", tie, {"density": 1.0}).delta("m").tolist() == [[0.0, 2.5]]
    assert run("ties", tie, {"density": 1.0, "zero_vote": "positive"}).delta("m").tolist() == [[1.0, 2.5]]


def test_dare_ties_and_breadcrumbs_ties_take_the_consensus_options():
    adapters = rows([3.0, -1.0], [1.0, 2.0])
    mean = run("dare_ties", adapters, {"drop_rate": 0.0}).delta("m")
    total = run("dare_ties", adapters, {"drop_rate": 0.0, "normalize": False}).delta("m")
    assert mean.tolist() == [[2.0, 2.0]] and total.tolist() == [[4.0, 2.0]]
    crumbs = {"beta": 1.0, "gamma": 0.0}
    assert run("breadcrumbs_ties", adapters, crumbs).delta("m").tolist() == [[4.0, 2.0]]  # mergekit's default: the sum
    assert run("breadcrumbs_ties", adapters, {**crumbs, "normalize": True}).delta("m").tolist() == [[2.0, 2.0]]


def test_keep_count_rules():
    assert [keep_count(0.4, 10, r) for r in ("ceil", "floor", "floor_plus_one")] == [4, 4, 5]
    assert [keep_count(0.41, 10, r) for r in ("ceil", "floor", "floor_plus_one")] == [5, 4, 5]
    assert keep_count(0.01, 10, "floor") == 1 and keep_count(1.0, 10, "floor_plus_one") == 10
    adapter = rows([5.0, 4.0, 3.0, 2.0, 1.0])
    kept = {
        r: int((run("ties", adapter, {"density": 0.4, "keep_count": r}).delta("m") != 0).sum())
        for r in ("ceil", "floor_plus_one")
    }
    assert kept == {"ceil": 2, "floor_plus_one": 3}


def test_breadcrumbs_scope_row_or_tensor():
    x = torch.tensor([[[10.0, 1.0, 2.0, 3.0], [0.1, 0.2, 0.3, 0.4]]], dtype=torch.float64)
    per_row = band_mask(x, gamma=0.25, beta=0.5)
    per_tensor = band_mask(x, gamma=0.125, beta=0.5, scope="tensor")
    assert per_row.tolist() == [[[False, False, True, True], [False, True, True, False]]]
    assert per_tensor.tolist() == [[[False, True, True, True], [False, False, False, True]]]
    adapters = [memory_adapter(SHAPES, rank=4, seed=s) for s in (1, 2)]
    row = run("breadcrumbs", adapters, {"beta": 0.5, "gamma": 0.1})
    tensor = run("breadcrumbs", adapters, {"beta": 0.5, "gamma": 0.1, "scope": "tensor"})
    for name in SHAPES:
        reference = 0
        for d in dense(adapters, name):
            flat = d.abs().flatten()
            order = flat.argsort(descending=True)
            keep = torch.zeros_like(flat, dtype=torch.bool)
            n = flat.numel()
            keep[order[int(0.1 * n) : int(0.1 * n) + int(0.5 * n + 0.999999)]] = True
            reference = reference + d * keep.reshape(d.shape)
        assert torch.allclose(tensor.delta(name), reference)
        assert not torch.allclose(row.delta(name), reference)


def test_streaming_kth_is_exact():
    gen = torch.Generator().manual_seed(0)
    pieces = [torch.randn(n, generator=gen) * s for n, s in ((1000, 1.0), (50_000, 0.01), (7, 100.0), (30_000, 1e-30))]
    pieces.append(torch.zeros(100))
    pieces.append(torch.full((500,), 0.5))  # ties at a value
    everything = torch.cat([p.abs().double() for p in pieces]).sort(descending=True).values
    for k in (1, 2, 100, 1007, 1500, 51_000, 81_000, everything.numel()):
        s = StreamingKth()
        for p in pieces:
            s.add(p)
        s.target(k)
        for p in pieces:
            s.add(p)
        assert s.value() == float(everything[k - 1]), k


@pytest.mark.parametrize("method_name", ["ties", "knots"])
def test_model_wide_trimming_equals_one_threshold_over_every_module(method_name):
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=2, seed=2, scale=3.0)]
    adapters.append(memory_adapter({"a.q": SHAPES["a.q"]}, rank=3, seed=3, scale=0.5))
    params = {"density": 0.3, "scope": "model"}
    model = run(method_name, adapters, params, batch_elements=1 if method_name == "knots" else 1 << 25)
    module = run(method_name, adapters, {"density": 0.3})
    if method_name == "ties":  # the reference: each adapter's threshold over all its modules, then TIES per module
        from merge_core.ops.sparsify import disjoint_merge

        for name in SHAPES:
            tasks = []
            for a in adapters:
                if name not in a.modules:
                    continue
                everything = torch.cat([(m.scale * m.B @ m.A).abs().flatten() for m in a.modules.values()])
                k = keep_count(0.3, everything.numel())
                threshold = everything.sort(descending=True).values[k - 1]
                d = a.modules[name].scale * a.modules[name].B @ a.modules[name].A
                tasks.append(d * (d.abs() >= threshold))
            assert torch.allclose(model.delta(name), disjoint_merge(tasks), rtol=1e-12, atol=1e-15), name
    assert any(not torch.allclose(model.delta(n), module.delta(n)) for n in SHAPES)
    # and batching does not change it
    again = run(method_name, adapters, params, batch_elements=1 << 25 if method_name == "knots" else 1)
    for name in SHAPES:
        assert torch.allclose(model.delta(name), again.delta(name), rtol=1e-10, atol=1e-14)


def test_compute_dtype_float64_is_exact_float32_is_not():
    adapters = [memory_adapter(SHAPES, rank=4, seed=s, scale=1.0 + s / 3) for s in (1, 2, 3)]
    method = get_method("ties")
    reference = run("ties", adapters, {"density": 0.3})  # float64 throughout (the engine's dtype)
    results = {}
    for compute in ("float32", "float64"):
        results[compute] = merge_adapters(
            adapters,
            method,
            method.parse_params({"density": 0.3, "compute_dtype": compute, "scaling": 1.0}),
            output_kind="merged_model",
        )
    for name in SHAPES:
        assert torch.equal(results["float64"].delta(name), reference.delta(name))
        assert results["float32"].dense[name].dtype == torch.float32
        assert not torch.equal(results["float32"].delta(name), reference.delta(name))


def test_dare_rescale_rules():
    adapters = [memory_adapter({"m": (64, 64)}, rank=4, seed=1)]
    delta = dense(adapters, "m")[0]
    results = {
        r: run("dare_linear", adapters, {"drop_rate": 0.3, "seed": 5, "rescale": r}).delta("m") for r in ("inverse", "l1", "none")
    }
    kept = results["none"] != 0
    assert torch.allclose(results["none"], delta * kept)
    assert torch.allclose(results["inverse"], delta * kept / 0.7)
    assert torch.allclose(results["l1"].abs().sum(), delta.abs().sum())  # mergekit: each module keeps its L1 norm
    assert not torch.allclose(results["l1"], results["inverse"])


@pytest.mark.parametrize("method_name", ["ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties"])
def test_dense_methods_need_no_rank_into_a_merged_model(method_name, tmp_path):
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=2, seed=2)]
    with pytest.raises(RankRequiredError):
        run(method_name, adapters, output_kind="adapter")
    exact = run(method_name, adapters)
    truncated = run(method_name, adapters, rank=64, output_kind="adapter")  # rank ≥ min(out, in): exact as factors too
    assert not exact.modules and set(exact.dense) == set(SHAPES)
    for name in SHAPES:
        assert torch.allclose(exact.delta(name), truncated.delta(name), rtol=1e-9, atol=1e-12)
    spec = {
        "method": method_name,
        "adapters": [{"source": "/a"}, {"source": "/b"}],
        "output": {"kind": "merged_model", "base_model": "/m"},
    }
    validate_spec(parse_spec(spec))
    with pytest.raises(RankRequiredError, match="merged_model"):
        validate_spec(parse_spec({**spec, "output": {"kind": "adapter"}}))


def test_a_dense_merge_into_a_model_end_to_end(tmp_path):
    from safetensors.torch import load_file

    from merge_core.pipeline import run_merge
    from support.factories import write_adapter_folder, write_base_model_folder

    base = write_base_model_folder(tmp_path / "base")
    a = write_adapter_folder(tmp_path / "a", rank=4, seed=1)
    b = write_adapter_folder(tmp_path / "b", rank=2, seed=2)
    spec = parse_spec(
        {
            "method": "ties",
            "adapters": [{"source": str(a)}, {"source": str(b), "weight": 0.5}],
            "params": {"density": 0.5, "compute_dtype": "float64"},
            "output": {"kind": "merged_model", "base_model": str(base)},
        }
    )
    outcome = run_merge(spec, tmp_path / "out")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    original = load_file(str(base / "model.safetensors"))
    for name in outcome.merged.dense:
        expected = (original[f"{name}.weight"].double() + outcome.merged.delta(name)).float()
        assert torch.equal(written[f"{name}.weight"], expected)
