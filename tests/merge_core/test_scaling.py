"""``scaling`` (λ): numbers and the data-free rules (``merge_core/scaling.py``, docs/METHOD.md §0), each
checked on an example whose λ is known by hand; ``auto``'s table; what the results say about λ."""

import ast
import json
import math
from pathlib import Path
from typing import get_args

import pytest
import torch
from safetensors.torch import load_file

from merge_core import errors
from merge_core.adapters import LoraAdapter, LoraModule
from merge_core.engine import MergedAdapter, merge_adapters
from merge_core.full_weights import merge_bias_updates
from merge_core.pipeline import DIAGNOSTICS_NAME, run_merge
from merge_core.registry import MethodParams, get_method, list_methods, register
from merge_core.scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM, SCALING_CHOICES, Scaling, ScalingRule, auto_table, resolve
from merge_core.spec import parse_spec
from support.factories import memory_adapter, write_adapter_folder


def unit_updates(n: int, size: int = 8, norm: float = 1.5) -> list[LoraAdapter]:
    """``n`` rank-1 updates ``norm · e_i e_iᵀ``: orthogonal to each other, of equal norm."""
    eye = torch.eye(size, dtype=torch.float64)
    return [LoraAdapter(modules={"m": LoraModule(A=eye[i : i + 1], B=norm * eye[:, i : i + 1], scale=1.0)}) for i in range(n)]


def rows(*values):
    """One adapter per row: a 1×k module whose update is that row exactly."""
    one = torch.ones(1, 1, dtype=torch.float64)
    return [LoraAdapter(modules={"m": LoraModule(A=torch.tensor([v], dtype=torch.float64), B=one, scale=1.0)}) for v in values]


def run(method_name, adapters, params, **kwargs):
    method = get_method(method_name)
    parsed = method.parse_params(params)
    kwargs.setdefault(
        "output_kind", "adapter" if method.factored and getattr(parsed, "factored_result", True) else "merged_model"
    )
    return merge_adapters(adapters, method, parsed, dtype=torch.float64, **kwargs)


def total(adapters, weights=None):
    weights = weights or [1.0] * len(adapters)
    return sum(w * a.modules["m"].scale * a.modules["m"].B @ a.modules["m"].A for a, w in zip(adapters, weights))


@pytest.mark.parametrize(("scaling", "expected"), [("1/n", 0.25), ("1/sqrt(n)", 0.5), ("norm_match", 0.5), (0.3, 0.3)])
def test_each_rule_on_orthogonal_updates_of_equal_norm(scaling, expected):
    """Four orthogonal updates of norm c: their sum has norm 2c, so norm_match gives 1/√4, as 1/sqrt(n) does."""
    adapters = unit_updates(4)
    merged = run("task_arithmetic", adapters, {"scaling": scaling})
    assert merged.diagnostics["m"]["scaling"] == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(merged.delta("m"), expected * total(adapters), rtol=1e-12, atol=1e-14)


def test_norm_match_of_tsv_at_equal_norms_is_one_over_sqrt_n():
    """TSV-M's result has norm sqrt(Σ‖ΔW_i‖²) when it keeps every component: random updates of norm 1 give 1/√n."""
    adapters = [memory_adapter({"m": (64, 48)}, rank=4, seed=seed) for seed in range(3)]
    for adapter in adapters:
        module = adapter.modules["m"]
        adapter.modules["m"] = LoraModule(A=module.A, B=module.B, scale=1 / float((module.B @ module.A).norm()))
    merged = run("tsv", adapters, {"scaling": "norm_match"})
    assert merged.diagnostics["m"]["scaling"] == pytest.approx(3**-0.5, rel=1e-9)


def test_weights_enter_norm_match_as_the_method_applies_them_and_never_n():
    adapters, weights = unit_updates(4), [2.0, 1.0, 1.0, -1.0]
    merged = run("task_arithmetic", adapters, {"scaling": "norm_match"}, weights=weights)
    expected = (2 + 1 + 1 + 1) / 4 / math.sqrt(4 + 1 + 1 + 1)  # mean of ‖w_i ΔW_i‖ over ‖Σ w_i ΔW_i‖ (c cancels)
    assert merged.diagnostics["m"]["scaling"] == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(merged.delta("m"), expected * total(adapters, weights), rtol=1e-12, atol=1e-14)
    averaged = run("task_arithmetic", adapters, {"scaling": "1/n"}, weights=weights)
    assert averaged.diagnostics["m"]["scaling"] == 0.25  # n counts adapters; a weight is a change of lora_alpha


def test_norm_match_of_a_dense_result():
    """TIES (density 1) on disjoint rows keeps both: [3, 4, 0, 0], norm 5, against a mean norm of 3.5."""
    merged = run("ties", rows([3.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0]), {"density": 1.0, "scaling": "norm_match"})
    assert merged.diagnostics["m"]["scaling"] == pytest.approx(0.7, rel=1e-12)
    torch.testing.assert_close(merged.delta("m"), torch.tensor([[2.1, 2.8, 0.0, 0.0]], dtype=torch.float64))


def test_norm_match_leaves_an_empty_result_at_one():
    merged = run("ties", rows([1.0, 2.0], [-1.0, -2.0]), {"density": 1.0, "scaling": "norm_match"})  # every vote is 0
    assert merged.diagnostics["m"]["scaling"] == 1.0 and not merged.delta("m").any()


def test_n_counts_the_adapters_that_carry_the_module():
    adapters = unit_updates(3)
    solo = LoraModule(A=torch.ones(1, 5, dtype=torch.float64), B=torch.ones(3, 1, dtype=torch.float64), scale=2.0)
    adapters[0].modules["solo"] = solo
    merged = run("task_arithmetic", adapters, {"scaling": "1/n"})
    assert merged.diagnostics["m"]["scaling"] == pytest.approx(1 / 3) and merged.diagnostics["solo"]["scaling"] == 1.0
    torch.testing.assert_close(merged.delta("solo"), 2.0 * solo.B @ solo.A)  # carried by one adapter: itself
    summary = merged.summary()
    assert (summary["scaling_requested"], summary["scaling_rule"]) == ("1/n", "1/n")
    assert summary["scaling_min"] == pytest.approx(1 / 3) and summary["scaling_max"] == 1.0
    assert summary["scaling_mean"] == pytest.approx(2 / 3)


def test_auto_is_one_table_row_per_method_and_every_choice_is_in_the_schema():
    assert set(AUTO_SCALING) == set(AUTO_SCALING_CAUSAL_LM) == {m.name for m in list_methods()}
    for method in list_methods():
        params = method.parse_params({})
        assert params.scaling == "auto"
        expected = Scaling("auto", AUTO_SCALING[method.name], auto_table="AUTO_SCALING", auto_row=method.name)
        assert resolve(method.name, params) == expected
        described = method.describe()
        assert described["auto_scaling"] == AUTO_SCALING[method.name]
        assert described["auto_scaling_causal_lm"] == AUTO_SCALING_CAUSAL_LM[method.name]
        schema = described["params_schema"]["properties"]["scaling"]
        assert schema["default"] == "auto"
        assert [o.get("enum") for o in schema["anyOf"]] == [None, list(SCALING_CHOICES)]
        assert schema["anyOf"][0]["type"] == "number"


def test_the_auto_table_module_holds_the_table_alone_and_only_rules():
    """The quality benchmark leaves auto_scaling.py out of its result keys (keys.library_fingerprint): that is
    only sound while the module can change nothing but which rule ``auto`` names."""
    import merge_core.auto_scaling as table_module

    tree = ast.parse(Path(table_module.__file__).read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert all(isinstance(node, ast.AnnAssign) for node in body)
    assert [node.target.id for node in body] == ["AUTO_SCALING", "AUTO_SCALING_CAUSAL_LM"]
    assert all(isinstance(v, ast.Constant) for node in body for v in node.value.values)  # literals, nothing computed
    assert set(AUTO_SCALING.values()) <= set(get_args(ScalingRule))
    assert set(AUTO_SCALING_CAUSAL_LM.values()) <= {"1", *get_args(ScalingRule)}  # "1": the full sum


@pytest.mark.parametrize(
    ("task_types", "table"),
    [
        (["CAUSAL_LM", "CAUSAL_LM"], "AUTO_SCALING_CAUSAL_LM"),
        (["causal_lm"], "AUTO_SCALING"),  # PEFT refuses any spelling but its own, so nothing else declares it
        (["CAUSAL_LM "], "AUTO_SCALING"),
        (["CAUSAL_LM", "SEQ_CLS"], "AUTO_SCALING"),  # a classifier among them: its head reads the update
        (["CAUSAL_LM", None], "AUTO_SCALING"),  # not declared: nothing says no head reads it
        ([], "AUTO_SCALING"),
        ([["CAUSAL_LM"], {"x": 1}], "AUTO_SCALING"),  # a hostile config's value is just not CAUSAL_LM
    ],
)
def test_auto_reads_the_causal_lm_table_only_when_every_adapter_declares_it(task_types, table):
    assert auto_table(task_types) == table
    scaling = resolve("tsv", get_method("tsv").parse_params({}), task_types)
    assert scaling.auto_table == table
    if table == "AUTO_SCALING_CAUSAL_LM":
        assert (scaling.rule, scaling.value) == ("fixed", 1.0)
    else:
        assert scaling.rule == AUTO_SCALING["tsv"]
    assert resolve("tsv", get_method("tsv").parse_params({"scaling": "1/n"}), task_types) == Scaling("1/n", "1/n")
    assert resolve("tsv", get_method("tsv").parse_params({"scaling": 0.5}), task_types) == Scaling(0.5, "fixed", 0.5)


def test_a_method_without_an_auto_row_cannot_register():
    with pytest.raises(RuntimeError, match="AUTO_SCALING"):
        register("not_in_the_table", MethodParams, factored=True, summary="-")(lambda batch, params: None)
    AUTO_SCALING["in_one_table_only"] = "1/n"
    try:
        with pytest.raises(RuntimeError, match="AUTO_SCALING_CAUSAL_LM"):
            register("in_one_table_only", MethodParams, factored=True, summary="-")(lambda batch, params: None)
    finally:
        del AUTO_SCALING["in_one_table_only"]
    with pytest.raises(errors.UnknownMethodError):
        get_method("not_in_the_table")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("half", "must be a number or one of 'auto', '1/n', '1/sqrt(n)', 'norm_match'"),
        (1e3, "between -100 and 100"),
        (None, "got None"),
    ],
)
def test_a_bad_scaling_says_what_it_takes(value, words):
    with pytest.raises(errors.InvalidParamsError, match=r"^ties: scaling: ") as exc:
        get_method("ties").parse_params({"scaling": value})
    assert words in exc.value.message


def test_do_merging_applies_one_rule_once():
    do = get_method("do_merging")
    assert resolve("do_merging", do.parse_params({})).rule == AUTO_SCALING["do_merging"] == "norm_match"
    assert AUTO_SCALING["task_arithmetic"] != "norm_match" != AUTO_SCALING["dare_linear"]  # so the two lines below tell
    # Without the descent the updates keep their overlap: auto is then the inner method's rule.
    assert resolve("do_merging", do.parse_params({"orthogonalize": False})).rule == AUTO_SCALING["task_arithmetic"]
    assert resolve("do_merging", do.parse_params({"orthogonalize": False})).auto_row == "task_arithmetic"  # the card says so
    assert resolve("do_merging", do.parse_params({"ortho_steps": 0, "merge": "dare_linear"})).rule == AUTO_SCALING["dare_linear"]
    llm = ["CAUSAL_LM"] * 2
    assert resolve("do_merging", do.parse_params({}), llm).value == resolve("tsv", do.parse_params({}), llm).value == 1.0
    for rule in ("auto", "1/n", "norm_match"):
        with pytest.raises(errors.InvalidParamsError, match="give .* as do_merging's own scaling"):
            do.parse_params({"merge": "ties", "merge_params": {"scaling": rule}})
    # The inner method runs at 1 unless given a number; that number and do_merging's own multiply.
    adapters = rows([3.0, -1.0, 0.5], [1.0, 2.0, -0.5])
    wrapped = run(
        "do_merging",
        adapters,
        {"merge": "ties", "orthogonalize": False, "decouple": False, "scaling": 2.0, "merge_params": {"scaling": 0.5}},
    )
    plain = run("ties", adapters, {"scaling": 1.0})
    torch.testing.assert_close(wrapped.delta("m"), plain.delta("m"), rtol=1e-12, atol=1e-14)
    assert wrapped.diagnostics["m"]["scaling"] == 2.0


def test_a_bias_takes_its_layer_s_lambda_or_the_rule_on_the_biases_alone():
    b1, b2 = torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 4.0], dtype=torch.float64)
    merged = MergedAdapter(modules={}, diagnostics={"l": {"scaling": 0.3}}, scaling=Scaling("norm_match", "norm_match"))
    out = merge_bias_updates({"l.bias": [b1, b2], "other.bias": [b1, b2]}, merged)
    torch.testing.assert_close(out["l.bias"], 0.3 * (b1 + b2))  # the layer's update is λ Σ w_i (ΔW_i, Δb_i)
    torch.testing.assert_close(out["other.bias"], 0.7 * (b1 + b2))  # no LoRA there: norm_match on the biases


def test_the_diagnostics_and_the_model_card_say_what_was_asked_and_applied(tmp_path):
    a = write_adapter_folder(tmp_path / "a", rank=4, seed=1)
    b = write_adapter_folder(tmp_path / "b", rank=2, seed=2)

    def merge(out, method, params):
        spec = {"method": method, "adapters": [{"source": str(a)}, {"source": str(b), "weight": 0.5}], "params": params}
        outcome = run_merge(parse_spec(spec), tmp_path / out)
        saved = json.loads((tmp_path / out / DIAGNOSTICS_NAME).read_text())
        return outcome.summary, saved, (tmp_path / out / "README.md").read_text()

    summary, saved, card = merge("auto", "task_arithmetic", {})
    assert saved["summary"] == summary
    one_over_sqrt2 = 1 / math.sqrt(2)  # Task Arithmetic's auto is 1/sqrt(n), two adapters
    assert (summary["scaling_requested"], summary["scaling_rule"]) == ("auto", "1/sqrt(n)")
    assert summary["scaling_mean"] == pytest.approx(one_over_sqrt2, rel=1e-12)
    assert all(module["scaling"] == pytest.approx(one_over_sqrt2, rel=1e-12) for module in saved["modules"].values())
    assert (
        "Scaling (λ): `auto`, which here is `1/sqrt(n)` (merge_core/auto_scaling.py `AUTO_SCALING`, row "
        "`task_arithmetic`; from the quality benchmark); λ = 0.707107 in every module" in card
    )
    assert "λ = 0.707107 in every module (n: the adapters that carry the module)." in card

    summary, saved, card = merge("norm", "do_merging", {"scaling": "norm_match"})
    assert summary["scaling_rule"] == "norm_match" and summary["scaling_min"] < summary["scaling_max"]
    low, high = (min(m["scaling"] for m in saved["modules"].values()), max(m["scaling"] for m in saved["modules"].values()))
    assert (summary["scaling_min"], summary["scaling_max"]) == (low, high)
    assert f"Scaling (λ): `norm_match`; λ per module: mean {summary['scaling_mean']:.6g}, min {low:.6g}, max {high:.6g}." in card

    summary, _, card = merge("fixed", "tsv", {"scaling": 0.25})
    assert (summary["scaling_requested"], summary["scaling_rule"], summary["scaling_max"]) == (0.25, "fixed", 0.25)
    assert "Scaling (λ): 0.25; λ = 0.25 in every module." in card
    assert "scaling_auto_table" not in summary


def test_llm_adapters_merge_to_the_full_sum_under_auto_and_the_card_says_why(tmp_path):
    """``auto`` for adapters that all declare ``task_type: CAUSAL_LM``: λ = 1 (``AUTO_SCALING_CAUSAL_LM``), the
    same merge as ``"scaling": 1``; one classifier among them and the general table applies again."""

    def merge(out, method, params, task_types):
        sources = []
        for i, task_type in enumerate(task_types):
            folder = write_adapter_folder(tmp_path / f"{out}-in{i}", rank=2 + i, seed=i + 1, config={"task_type": task_type})
            sources.append({"source": str(folder)})
        outcome = run_merge(parse_spec({"method": method, "adapters": sources, "params": params}), tmp_path / out)
        tensors = load_file(str(tmp_path / out / "adapter_model.safetensors"))
        declared = json.loads((tmp_path / out / "adapter_config.json").read_text())["task_type"]
        return outcome.summary, tensors, (tmp_path / out / "README.md").read_text(), declared

    summary, auto, card, declared = merge("auto", "task_arithmetic", {}, ["CAUSAL_LM", "CAUSAL_LM"])
    assert declared == "CAUSAL_LM"  # so merging the result with more LLM adapters reads the same table
    assert (summary["scaling_requested"], summary["scaling_rule"]) == ("auto", "fixed")
    assert summary["scaling_auto_table"] == "AUTO_SCALING_CAUSAL_LM"
    assert summary["scaling_min"] == summary["scaling_max"] == 1.0
    assert (
        "Scaling (λ): `auto`, which here is λ = 1 (merge_core/auto_scaling.py `AUTO_SCALING_CAUSAL_LM`, row "
        "`task_arithmetic`: every adapter declares task_type CAUSAL_LM; from the quality benchmark); λ = 1 in every "
        "module." in card
    )
    _, one, _, _ = merge("one", "task_arithmetic", {"scaling": 1.0}, ["CAUSAL_LM", "CAUSAL_LM"])
    assert auto.keys() == one.keys() and all(torch.equal(auto[k], one[k]) for k in auto)

    summary, _, _, _ = merge("peft", "peft_linear", {}, ["CAUSAL_LM", "CAUSAL_LM"])  # A and B apart keep their rule
    assert (summary["scaling_rule"], summary["scaling_auto_table"]) == (
        AUTO_SCALING_CAUSAL_LM["peft_linear"],
        "AUTO_SCALING_CAUSAL_LM",
    )
    summary, _, card, declared = merge("mixed", "task_arithmetic", {}, ["CAUSAL_LM", "SEQ_CLS"])
    assert declared is None  # a mix declares no kind, whatever the adapters' order
    assert (summary["scaling_rule"], summary["scaling_auto_table"]) == (AUTO_SCALING["task_arithmetic"], "AUTO_SCALING")
    assert summary["scaling_max"] == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def test_the_readme_methods_table_says_what_auto_is():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Methods\n", 1)[1].split("\n\n", 1)[0].strip()
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    shown = {cells[0].strip("| `"): cells[2].split("`")[1] for cells in rows}
    assert shown == AUTO_SCALING
    shown = {cells[0].strip("| `"): cells[3].split("`")[1] for cells in rows}
    assert shown == AUTO_SCALING_CAUSAL_LM
