"""DO-Merging in factored form equals the literal dense algorithm (METHOD.md §1) to 1e-6 in float64."""

import pytest
import torch

from merge_core import errors
from merge_core.engine import merge_adapters
from merge_core.ops.orthogonalize import orthogonalize
from merge_core.registry import get_method
from support.factories import memory_adapter
from support.references import orthogonalize_dense

SHAPES = {"l0.q": (48, 32), "l0.down": (32, 80), "l1.q": (48, 32)}


def dense_do_merging(adapters, name, *, orthogonalize_on, decouple, axis, steps, lr, mu, scaling, weights):
    """Literal reference: dense GD on full factors, dense magnitudes, dense merge."""
    mods = [(a.modules[name], w) for a, w in zip(adapters, weights) if name in a.modules]
    As = [m.A for m, _ in mods]
    Bs = [w * m.scale * m.B for m, w in mods]
    ranks = [A.shape[0] for A in As]
    if orthogonalize_on and len(mods) > 1:
        A_hat = orthogonalize_dense(torch.cat(As)[None], ranks, steps=steps, lr=lr, mu=mu)[0]
        Bt_hat = orthogonalize_dense(torch.cat([B.T for B in Bs])[None], ranks, steps=steps, lr=lr, mu=mu)[0]
        As = list(torch.split(A_hat, ranks))
        Bs = [bt.T for bt in torch.split(Bt_hat, ranks)]
    Ws = [B @ A for B, A in zip(Bs, As)]
    if not decouple:
        return scaling * sum(Ws)
    if axis == "out":
        alphas = [W.norm(dim=1, keepdim=True) for W in Ws]
    elif axis == "in":
        alphas = [W.norm(dim=0, keepdim=True) for W in Ws]
    else:
        alphas = [W.norm() for W in Ws]
    mean_alpha = sum(alphas) / len(alphas)
    directions = [torch.where(a > 0, W / a, torch.zeros_like(W)) for W, a in zip(Ws, alphas)]
    return scaling * mean_alpha * sum(directions)


def make_adapters():
    return [
        memory_adapter(SHAPES, rank=2, seed=11, scale=2.0),
        memory_adapter(SHAPES, rank=8, seed=12, scale=0.5),
        memory_adapter({k: SHAPES[k] for k in ("l0.q", "l1.q")}, rank=4, seed=13, scale=1.0),
    ]


@pytest.mark.parametrize("orthogonalize_on", [True, False])
@pytest.mark.parametrize("decouple", [True, False])
@pytest.mark.parametrize("axis", ["out", "in", "matrix"])
def test_factored_equals_dense(orthogonalize_on, decouple, axis):
    adapters = make_adapters()
    weights = [1.0, 0.7, 1.3]
    params = dict(
        orthogonalize=orthogonalize_on,
        decouple=decouple,
        magnitude_axis=axis,
        ortho_steps=40,
        ortho_lr=0.2,
        ortho_mu=0.5,
        scaling=0.8,
    )
    method = get_method("do_merging")
    merged = merge_adapters(adapters, method, method.parse_params(params), weights=weights, dtype=torch.float64)
    for name in SHAPES:
        reference = dense_do_merging(
            adapters,
            name,
            orthogonalize_on=orthogonalize_on,
            decouple=decouple,
            axis=axis,
            steps=40,
            lr=0.2,
            mu=0.5,
            scaling=0.8,
            weights=weights,
        )
        error = float((merged.delta(name) - reference).norm() / reference.norm())
        assert error < 1e-6, (name, error)
        assert merged.modules[name][0].shape[1] == sum(a.modules[name].rank for a in adapters if name in a.modules)


def test_neither_switch_is_task_arithmetic():
    adapters = make_adapters()
    do = get_method("do_merging")
    ta = get_method("task_arithmetic")
    a = merge_adapters(adapters, do, do.parse_params({"orthogonalize": False, "decouple": False}), dtype=torch.float64)
    b = merge_adapters(adapters, ta, ta.parse_params({}), dtype=torch.float64)
    for name in SHAPES:
        assert torch.allclose(a.delta(name), b.delta(name), rtol=0, atol=1e-12)


def test_equal_weights_scale_the_result():
    adapters = make_adapters()
    method = get_method("do_merging")
    params = method.parse_params({})
    one = merge_adapters(adapters, method, params, dtype=torch.float64)
    three = merge_adapters(adapters, method, params, weights=[3.0, 3.0, 3.0], dtype=torch.float64)
    for name in SHAPES:
        assert torch.allclose(three.delta(name), 3 * one.delta(name), rtol=1e-9, atol=1e-12)


def test_span_reduced_descent_equals_full_descent_and_reduces_overlap():
    gen = torch.Generator().manual_seed(0)
    ranks = [3, 5, 2]
    X = torch.randn(2, sum(ranks), 500, generator=gen, dtype=torch.float64)
    X[:, 3:8] += 0.8 * X[:, :1]  # correlated blocks: real overlap to remove
    fast, stats = orthogonalize(X, ranks, steps=60, lr=0.1, mu=1.0)
    slow = orthogonalize_dense(X, ranks, steps=60, lr=0.1, mu=1.0)
    assert float((fast - slow).norm() / slow.norm()) < 1e-10
    assert (stats.overlap_after < 0.5 * stats.overlap_before).all()
    assert (stats.max_perturbation > 0).all() and (stats.max_perturbation < 1).all()


def test_zero_block_is_left_alone():
    X = torch.randn(1, 6, 40, dtype=torch.float64)
    X[:, 2:4] = 0
    out, _ = orthogonalize(X, [2, 2, 2], steps=20, lr=0.1, mu=1.0)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 2:4], torch.zeros_like(out[:, 2:4]))


def test_diagnostics_are_reported_per_module():
    merged = merge_adapters(
        make_adapters(), get_method("do_merging"), get_method("do_merging").parse_params({}), dtype=torch.float64
    )
    diag = merged.diagnostics["l0.q"]
    assert diag["overlap_A_after"] < diag["overlap_A_before"]
    assert diag["overlap_B_after"] < diag["overlap_B_before"]
    assert 0 < diag["magnitude_spread"]
    summary = merged.summary()
    assert summary["modules"] == 3 and "max_perturbation_max" in summary


def test_unstable_descent_fails_instead_of_saving_nan():
    """lr·μ < 1 passes validation, but a step this large still diverges: the engine must refuse the NaNs."""
    do = get_method("do_merging")
    with pytest.raises(errors.MergeDivergedError) as exc:
        merge_adapters(make_adapters(), do, do.parse_params({"ortho_lr": 10.0, "ortho_mu": 0.0}))
    assert exc.value.code == "merge_diverged" and exc.value.details["modules"]
    # The check is static only where it must be: without orthogonalization μ plays no part.
    assert do.parse_params({"ortho_mu": 10.0, "orthogonalize": False}).ortho_mu == 10.0


def test_descent_calls_back_every_few_steps_and_stops_when_the_callback_raises():
    X = torch.randn(1, 6, 40, dtype=torch.float64)
    seen = []
    out, _ = orthogonalize(X, [2, 2, 2], steps=35, lr=0.1, mu=1.0, on_steps=seen.append)
    assert {10, 20, 30} <= set(seen) and seen[-1] == 35 and seen == sorted(seen)  # every 10 steps (or 0.2 s), and the last
    assert torch.equal(out, orthogonalize(X, [2, 2, 2], steps=35, lr=0.1, mu=1.0)[0])  # the callback changes nothing

    class Stop(Exception):
        pass

    def stop_at_30(step):
        if step >= 30:
            raise Stop

    with pytest.raises(Stop):
        orthogonalize(X, [2, 2, 2], steps=10_000, lr=0.1, mu=1.0, on_steps=stop_at_30)


def test_do_merging_reports_orthogonalize_steps_of_both_descents():
    method = get_method("do_merging")
    seen = []
    merge_adapters(
        make_adapters(),
        method,
        method.parse_params({"ortho_steps": 20}),
        dtype=torch.float64,
        progress=lambda *a: seen.append(a),
    )
    ortho = [done for stage, done, total in seen if stage == "orthogonalize" and total == 40]
    # Two shape groups, one batch each: A's steps then B's, one count out of 2 × ortho_steps per batch.
    assert len(ortho) == len([a for a in seen if a[0] == "orthogonalize"]) and ortho.count(40) == 2
    assert {10, 20, 30} <= set(ortho)
    assert seen[-1] == ("merge", len(SHAPES), len(SHAPES))


@pytest.mark.parametrize(("mu", "shared"), [(1.0, 0.0), (1.0, 0.5), (0.3, 0.2), (0.01, 0.5)])
def test_early_stop_stays_within_1e6_of_the_full_descent(mu, shared):
    torch.manual_seed(3)
    n, r, d = 4, 8, 256
    X = torch.randn(5, n * r, d, dtype=torch.float64) / d**0.5 + shared * torch.randn(5, 1, d, dtype=torch.float64) / d**0.5
    full, full_stats = orthogonalize(X, [r] * n, steps=300, lr=0.1, mu=mu)
    fast, stats = orthogonalize(X, [r] * n, steps=300, lr=0.1, mu=mu, tol=1e-7)
    relative = ((fast - full).norm(dim=(-1, -2)) / full.norm(dim=(-1, -2))).max()
    assert relative <= 1e-6, float(relative)
    assert full_stats.steps_run.tolist() == [300] * 5
    if mu >= 0.3:  # a strong penalty contracts fast: the descent settles long before 300 steps
        assert stats.steps_run.max() < 300


def test_do_merging_reports_the_steps_it_saved():
    do = get_method("do_merging")
    merged = merge_adapters(make_adapters(), do, do.parse_params({"ortho_mu": 1.0, "ortho_steps": 400}), dtype=torch.float64)
    saved = [d["ortho_steps_saved"] for d in merged.diagnostics.values()]
    assert all(0 < s < 800 for s in saved), saved
    exact = merge_adapters(
        make_adapters(), do, do.parse_params({"ortho_mu": 1.0, "ortho_steps": 400, "ortho_tol": 0}), dtype=torch.float64
    )
    assert all(d["ortho_steps_saved"] == 0 for d in exact.diagnostics.values())
    for name in merged.modules:
        assert torch.allclose(merged.delta(name), exact.delta(name), rtol=0, atol=1e-6 * exact.delta(name).norm())


INNER_IDENTITY = {
    "ties": {"density": 1.0},
    "breadcrumbs": {"beta": 1.0, "gamma": 0.0},
    "dare_linear": {"drop_rate": 0.0},
    "tsv": {},
    "knots": {"density": 1.0},
}


@pytest.mark.parametrize("inner", sorted(INNER_IDENTITY))
@pytest.mark.parametrize("decouple", [True, False])
def test_do_merging_around_another_method_keeps_the_identity_contract(inner, decouple):
    """One adapter, weight 1: orthogonalizing does nothing, its direction times its own magnitude is itself,
    and each inner method at its identity parameters returns its input."""
    do = get_method("do_merging")
    adapter = memory_adapter(SHAPES, rank=4, seed=5, scale=2.0)
    params = do.parse_params({"merge": inner, "merge_params": INNER_IDENTITY[inner], "decouple": decouple})
    merged = merge_adapters([adapter], do, params, rank=None if params.factored_result else 8, dtype=torch.float64)
    for name in SHAPES:
        expected = adapter.modules[name].scale * adapter.modules[name].B @ adapter.modules[name].A
        assert torch.allclose(merged.delta(name), expected, atol=1e-8 * expected.norm()), (inner, name)


@pytest.mark.parametrize("inner", ["ties", "tsv"])
def test_without_either_component_the_inner_method_is_run_as_it_is(inner):
    do, plain = get_method("do_merging"), get_method(inner)
    adapters = make_adapters()
    rank = None if plain.factored else 12
    wrapped = merge_adapters(
        adapters, do, do.parse_params({"merge": inner, "orthogonalize": False, "decouple": False}), rank=rank, dtype=torch.float64
    )
    alone = merge_adapters(adapters, plain, plain.parse_params({}), rank=rank, dtype=torch.float64)
    for name in alone.modules:
        assert torch.allclose(wrapped.delta(name), alone.delta(name), atol=1e-10), name


def test_do_merging_around_a_dense_method_needs_a_rank_for_an_adapter_and_refuses_model_wide_trimming():
    from merge_core.registry import validate_spec
    from merge_core.spec import parse_spec

    spec = {"method": "do_merging", "adapters": [{"source": "/a"}], "params": {"merge": "ties"}}
    with pytest.raises(errors.RankRequiredError):
        validate_spec(parse_spec(spec))
    validate_spec(parse_spec({**spec, "output": {"kind": "merged_model", "base_model": "/b"}}))
    validate_spec(parse_spec({**spec, "params": {"merge": "tsv"}}))  # factored inside: exact, no rank
    with pytest.raises(errors.InvalidParamsError, match="scope"):
        get_method("do_merging").parse_params({"merge": "ties", "merge_params": {"scope": "model"}})
    with pytest.raises(errors.InvalidParamsError, match="density"):
        get_method("do_merging").parse_params({"merge": "ties", "merge_params": {"density": 7}})


def test_zero_descent_steps_leave_the_factors_as_they_are():
    X = torch.randn(2, 6, 10, dtype=torch.float64)
    out, stats = orthogonalize(X, [3, 3], steps=0, lr=0.1, mu=0.01, tol=1e-7)
    assert torch.allclose(out, X) and stats.steps_run.tolist() == [0, 0]
    do = get_method("do_merging")
    merge_adapters(make_adapters(), do, do.parse_params({"ortho_steps": 0}), dtype=torch.float64)
