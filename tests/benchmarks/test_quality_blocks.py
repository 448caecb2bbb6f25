"""The quality benchmark's building blocks, checked on small synthetic adapters and data: its factor-level
tricks, scaling a λ = 1 merge, the edge flag, row keys, named scalings."""

from types import SimpleNamespace
from typing import Literal

import pytest
import torch

from benchmarks.quality import sweep
from benchmarks.quality.apart import merge_apart
from benchmarks.quality.configs import ablation_configs, main_configs
from benchmarks.quality.keys import ROOT, files_fingerprint, library_fingerprint
from benchmarks.quality.run import configs_for, rows_on
from benchmarks.quality.sweep import accepts_scaling_name, canonical, choose_scaling
from merge_core.engine import merge_adapters
from merge_core.methods.do_merging import DOMergingParams
from merge_core.registry import MethodParams, get_method, list_methods
from merge_core.scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM
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


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_every_method_scales_its_result_by_lambda(name):
    """What lets the benchmark merge once at λ = 1 and scale: merge(λ) = λ · merge(1), engine truncation included.
    A method for which this fails must be merged per λ in benchmarks/quality/sweep.py."""
    ads, method = adapters(), get_method(name)
    rank = None if method.factored else 6
    at = {s: merge_adapters(ads, method, method.parse_params({"scaling": s}), rank=rank, dtype=torch.float64) for s in (1.0, 0.3)}
    for module in SHAPES:
        torch.testing.assert_close(at[0.3].delta(module), 0.3 * at[1.0].delta(module), rtol=1e-7, atol=1e-10)


def test_apart_merges_scale_by_lambda():
    ads, ties = adapters(), get_method("ties")
    one, part = (merge_apart(ads, ties, ties.parse_params({"density": 0.5, "scaling": s})) for s in (1.0, 0.3))
    for module in SHAPES:
        torch.testing.assert_close(part[module], 0.3 * one[module])


def test_chosen_lambda_is_flagged_on_either_edge_of_the_grid():
    grid = [0.1, 0.3, 1.0]
    assert choose_scaling({0.1: 0.5, 0.3: 0.7, 1.0: 0.6}, grid) == (0.3, False)
    assert choose_scaling({0.1: 0.9, 0.3: 0.7, 1.0: 0.6}, grid) == (0.1, True)
    assert choose_scaling({0.1: 0.5, 0.3: 0.7, 1.0: 0.8}, grid) == (1.0, True)
    assert choose_scaling({0.1: 0.5, 0.3: 0.8, 1.0: 0.8}, grid) == (0.3, False)  # a tie goes to the smaller λ


def test_rows_equal_to_the_main_row_share_its_key():
    """Ablation rows whose parameters are the defaults compute nothing of their own (same store key)."""
    main = next(c for c in main_configs(rank=80) if c["name"] == "do_merging")
    ablations = {c["name"]: c for c in ablation_configs()}
    same = ["DO ortho=True decouple=True", "DO magnitude_axis=out", f"DO ortho_mu={DOMergingParams().ortho_mu}"]
    assert all(canonical(ablations[name]) == canonical(main) for name in same)
    assert canonical(ablations["DO ortho_mu=5.0"]) != canonical(main)
    ties = next(c for c in main_configs(rank=80) if c["name"] == "ties")
    assert canonical(ties) != canonical({**ties, "rank": 40}) != canonical({**ties, "apart": True})


class _Named(MethodParams):
    scaling: float | Literal["auto", "1/n"] = 1.0


def test_named_scalings_are_read_from_the_method_schema(monkeypatch):
    """The library's schema says which names a method takes (all four since `scaling: "auto"` landed); a
    schema with fewer names enables only those."""
    assert all(accepts_scaling_name("task_arithmetic", name) for name in ("auto", "1/n", "1/sqrt(n)", "norm_match"))
    assert not accepts_scaling_name("task_arithmetic", "half")
    fake = SimpleNamespace(params_model=_Named, parse_params=_Named.model_validate)
    monkeypatch.setattr(sweep, "get_method", lambda name: fake)
    assert accepts_scaling_name("task_arithmetic", "auto") and accepts_scaling_name("x", "1/n")
    assert not accepts_scaling_name("x", "norm_match")


def test_later_replicates_compute_only_the_key_rows():
    configs = configs_for("same", rank=80, smoke=False)
    assert rows_on(configs, 0, 1) == configs and rows_on(configs, 2, None) == configs
    later = {c["name"] for c in rows_on(configs, 1, 1)}
    assert later == {c["name"] for c in rows_on(configs, 0, 0)}  # --all-rows-on 0: key rows from the first
    assert later == {c["name"] for c in configs if c["table"] == "main"} | {
        "DO(tsv) both",
        "DO(tsv) ortho only",
        "DO(tsv) decouple only",
    }


def test_the_auto_table_is_left_out_of_result_keys_and_nothing_else_is(tmp_path):
    """A new ``AUTO_SCALING`` row must not recompute stored merges (none reads it: run.scaled_units reports
    ``auto`` as the unit of the rule the row names); any other library file must."""

    def fingerprint() -> str:  # uncached: the files change between calls
        return files_fingerprint.__wrapped__(str(tmp_path), "*.py", leave_out=("auto_scaling.py",))

    (tmp_path / "engine.py").write_text("x = 1\n")
    (tmp_path / "auto_scaling.py").write_text('AUTO_SCALING: dict[str, str] = {"tsv": "1/n"}\n')
    key = fingerprint()
    (tmp_path / "auto_scaling.py").write_text('AUTO_SCALING: dict[str, str] = {"tsv": "norm_match"}\n')
    assert fingerprint() == key
    (tmp_path / "engine.py").write_text("x = 2\n")
    assert fingerprint() != key
    assert library_fingerprint() == files_fingerprint(str(ROOT / "merge_core"), "*.py", leave_out=("auto_scaling.py",))
    assert library_fingerprint() != files_fingerprint(str(ROOT / "merge_core"), "*.py")


def test_auto_is_reported_as_what_its_table_row_names_for_the_replicate_s_adapters():
    """Per configuration, with its parameters: DO-Merging without orthogonalization reads its inner method's row;
    the decoder's LLM adapters read AUTO_SCALING_CAUSAL_LM (λ = 1 but for A and B merged apart)."""
    from benchmarks.quality.decoder_bench import DecoderReplicate

    encoder, decoder = [sweep.Replicate.adapter_task_type] * 5, [DecoderReplicate.adapter_task_type] * 5
    assert all(sweep.auto_scaling(c, encoder) == AUTO_SCALING[c["method"]] for c in main_configs(rank=0))
    no_ortho = {"method": "do_merging", "params": {"orthogonalize": False, "merge": "ties"}}
    assert sweep.auto_scaling(no_ortho, encoder) == AUTO_SCALING["ties"]
    on_decoder = {c["method"]: sweep.auto_scaling(c, decoder) for c in main_configs(rank=0)}
    assert on_decoder.pop("peft_linear") == AUTO_SCALING_CAUSAL_LM["peft_linear"] != "1"  # A and B apart: a rule
    assert set(on_decoder.values()) == {1.0} and len(on_decoder) == 9
