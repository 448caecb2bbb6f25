"""mergekit 0.1.5 configuration files: ``loramerge merge config.yml`` gives the model ``mergekit-yaml`` gives.

The expected outputs in fixtures/mergekit were written by mergekit 0.1.5 itself from the committed inputs
(scripts/make_mergekit_fixture.py; mergekit lives in its own environment, its pins clash with ours, and
installing it takes longer than CI allows), so CI compares against mergekit without it. Where
``LORAMERGE_MERGEKIT_YAML`` names a ``mergekit-yaml``, the same comparison also runs against it live.

Errors are measured on the update (merged - base) per tensor, relative in Frobenius norm. Bound: 1e-5
for every method. TIES-family methods may exceed it up to 1e-3 where mergekit's float32 updates
(``(W0 + ΔW) - W0``, rounded) flip an entry at the trim threshold or a sign near zero; on this fixture
none flips (measured about 1e-7 for every method).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from merge_core.errors import InvalidParamsError, InvalidSpecError, UnknownMethodError
from merge_core.mergekit import MAX_YAML_BYTES, mergekit_to_spec, parse_mergekit_yaml
from merge_core.spec import parse_spec

FIXTURE = Path(__file__).parent / "fixtures" / "mergekit"
CASES = sorted(p.stem for p in (FIXTURE / "configs").glob("*.yml"))
TIES_FAMILY = {"ties", "ties_sum", "dare_ties", "breadcrumbs_ties"}


def loramerge(*args, cwd=FIXTURE):
    return subprocess.run(
        [sys.executable, "-m", "merge_core.cli", "merge", *args, "--quiet"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def update_errors(ours: dict, theirs: dict, base: dict) -> dict[str, float]:
    errors = {}
    for name, tensor in theirs.items():
        expected = tensor.double() - base[name].double()
        errors[name] = float((ours[name].double() - base[name].double() - expected).norm() / expected.norm())
    return errors


def check_against(out: Path, expected: dict, case: str) -> None:
    base = load_file(str(FIXTURE / "base" / "model.safetensors"))
    ours = load_file(str(out / "model.safetensors"))
    assert set(ours) == set(base)
    errors = update_errors(ours, expected, base)
    bound = 1e-3 if case in TIES_FAMILY else 1e-5
    assert max(errors.values()) <= bound, (case, errors)
    assert max(errors.values()) <= 1e-5, (case, errors)  # measured: no entry flips on this fixture
    for name in set(base) - set(expected):  # tensors no LoRA touches: the base's, as mergekit's within rounding
        assert torch.equal(ours[name], base[name]), name


@pytest.mark.parametrize("case", CASES)
def test_loramerge_merge_matches_mergekit_fixture(case, tmp_path):
    result = loramerge(str(FIXTURE / "configs" / f"{case}.yml"), "--out", str(tmp_path / case))
    assert result.returncode == 0, result.stderr
    assert {"model.safetensors", "config.json"} <= set(json.loads(result.stdout)["files"])
    check_against(tmp_path / case, load_file(str(FIXTURE / "expected" / f"{case}.safetensors")), case)


def test_every_shared_method_has_a_fixture():
    from merge_core.mergekit import SHARED_METHODS

    methods = {parse_mergekit_yaml((FIXTURE / "configs" / f"{c}.yml").read_text())["merge_method"] for c in CASES}
    assert methods == set(SHARED_METHODS)
    for case in CASES:  # non-unit weights everywhere
        weights = [
            m["parameters"]["weight"] for m in parse_mergekit_yaml((FIXTURE / "configs" / f"{case}.yml").read_text())["models"]
        ]
        assert len(set(weights)) == len(weights) and 1.0 not in weights


@pytest.mark.skipif(not os.environ.get("LORAMERGE_MERGEKIT_YAML"), reason="LORAMERGE_MERGEKIT_YAML names no mergekit-yaml")
@pytest.mark.parametrize("case", CASES)
def test_loramerge_merge_matches_live_mergekit(case, tmp_path):
    config = FIXTURE / "configs" / f"{case}.yml"
    theirs = tmp_path / "mergekit"
    subprocess.run(
        [os.environ["LORAMERGE_MERGEKIT_YAML"], str(config), str(theirs), "--lora-merge-cache", str(tmp_path / "cache")]
        + ["--quiet", "--no-write-model-card"],
        cwd=FIXTURE,
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    result = loramerge(str(config), "--out", str(tmp_path / "ours"))
    assert result.returncode == 0, result.stderr
    expected = load_file(str(next(theirs.glob("*.safetensors"))))
    fixture = load_file(str(FIXTURE / "expected" / f"{case}.safetensors"))
    check_against(tmp_path / "ours", {k: expected[k] for k in fixture}, case)


def test_adapter_output_on_request_is_exact_for_factored_methods(tmp_path):
    """``--adapter``: linear becomes task_arithmetic, exact as a LoRA; its update equals mergekit's."""
    result = loramerge(str(FIXTURE / "configs" / "linear.yml"), "--out", str(tmp_path / "a"), "--adapter")
    assert result.returncode == 0, result.stderr
    from merge_core.adapters import load_adapter

    merged = load_adapter(tmp_path / "a")
    base = load_file(str(FIXTURE / "base" / "model.safetensors"))
    expected = load_file(str(FIXTURE / "expected" / "linear.safetensors"))
    for name, tensor in expected.items():
        module = merged.modules[name.removesuffix(".weight")]
        delta = module.scale * module.B.double() @ module.A.double()
        reference = tensor.double() - base[name].double()
        assert float((delta - reference).norm() / reference.norm()) < 1e-5


def test_the_yaml_key_asks_for_an_adapter_and_dense_methods_then_need_a_rank(tmp_path):
    text = (FIXTURE / "configs" / "ties.yml").read_text()
    (tmp_path / "ties.yml").write_text(text + "loramerge: {output: {kind: adapter}}\n")
    result = loramerge(str(tmp_path / "ties.yml"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "[rank_required]" in result.stderr
    (tmp_path / "ties.yml").write_text(text + "loramerge: {output: {kind: adapter, rank: 4}}\n")
    result = loramerge(str(tmp_path / "ties.yml"), "--out", str(tmp_path / "y"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "y" / "adapter_config.json").read_text())["r"] == 4


def test_a_peft_folder_names_a_lora_like_base_plus_lora():
    plus = mergekit_to_spec((FIXTURE / "configs" / "ties.yml").read_text())
    folder = mergekit_to_spec((FIXTURE / "configs" / "ties.yml").read_text().replace("base+lora_c", "lora_c"))
    assert plus == folder
    assert plus["method"] == "ties" and plus["output"] == {"kind": "merged_model", "base_model": "base", "dtype": "float32"}
    assert plus["params"] == {
        "compute_dtype": "float64",
        "normalize": True,
        "divisor": "weight_sum",
        "zero_vote": "positive",
        "scaling": 1.1,
        "density": 0.4,
        "keep_count": "floor",
        "scope": "module",
    }
    assert [a["weight"] for a in plus["adapters"]] == [0.7, 1.3, 0.5]
    parse_spec(plus)


def test_translations_of_linear_and_task_arithmetic():
    base = "models:\n  - model: b+x\n    parameters: {weight: 2.0}\n  - model: b+y\n    parameters: {weight: 6.0}\n"
    assert mergekit_to_spec("merge_method: linear\n" + base)["params"] == {"scaling": 1 / 8}
    with_base = "merge_method: linear\nbase_model: b\nparameters: {weight: 2.0}\n" + base
    assert mergekit_to_spec(with_base)["params"] == {"scaling": 1 / 10}  # base_model is one more input of linear
    spec = mergekit_to_spec("merge_method: task_arithmetic\nbase_model: b\nparameters: {normalize: true, lambda: 0.5}\n" + base)
    assert spec["params"] == {"scaling": 0.5 / 8}
    spec = mergekit_to_spec("merge_method: dare_ties\nbase_model: b\nparameters: {density: 0.25}\n" + base)
    assert spec["params"]["drop_rate"] == 0.75 and spec["params"]["rescale"] == "l1" and spec["params"]["normalize"] is False


def test_every_translation_carries_mergekit_s_lambda_as_a_number():
    """Our default scaling is "auto"; a mergekit configuration means its own λ (1 unless given), always."""
    sums_to_one = (
        "merge_method: linear\nparameters: {normalize: false}\nmodels:\n  - model: b+x\n    parameters: {weight: 0.25}\n"
    )
    sums_to_one += "  - model: b+y\n    parameters: {weight: 0.75}\n"
    assert mergekit_to_spec(sums_to_one)["params"] == {"scaling": 1.0}
    for path in sorted((FIXTURE / "configs").glob("*.yml")):
        scaling = mergekit_to_spec(path.read_text())["params"]["scaling"]
        assert isinstance(scaling, float), (path.name, scaling)


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("merge_method: slerp\nbase_model: b\nmodels: [b+x]\n", UnknownMethodError, "slerp"),
        ("merge_method: nope\nmodels: [b+x]\n", UnknownMethodError, "nope"),
        ("merge_method: ties\nbase_model: b\nmodels: [b+x]\nfoo: 1\n", InvalidSpecError, "foo"),
        ("merge_method: ties\nbase_model: b\nslices: []\nmodels: [b+x]\n", InvalidSpecError, "slices"),
        (
            "merge_method: ties\nbase_model: b\nmodels:\n  - model: b+x\n    parameters: {weight: 1, epsilon: 0.1}\n",
            InvalidParamsError,
            "epsilon",
        ),
        ("merge_method: ties\nbase_model: b\nmodels:\n  - model: b+x\n    extra: 1\n", InvalidSpecError, "extra"),
        ("merge_method: ties\nbase_model: b\nmodels: [b+x]\n", InvalidParamsError, "weight is required"),
        (
            "merge_method: ties\nbase_model: b\nmodels:\n  - model: c+x\n    parameters: {weight: 1}\n",
            InvalidSpecError,
            "base model",
        ),
        (
            "merge_method: linear\nparameters: {normalize: false}\nmodels:\n  - model: b+x\n    parameters: {weight: 0.4}\n",
            InvalidParamsError,
            "normalize",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels:\n  - model: b+x\n    parameters: {weight: 1, density: [0.1, 0.5]}\n",
            InvalidParamsError,
            "gradients",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels:\n  - {model: b+x, parameters: {weight: 1, density: 0.2}}\n"
            "  - {model: b+y, parameters: {weight: 1, density: 0.5}}\n",
            InvalidParamsError,
            "density differs",
        ),
        (
            "merge_method: ties\nbase_model: b\nparameters: {rescale: true, weight: 1}\nmodels: [b+x]\n",
            InvalidParamsError,
            "rescale",
        ),
        ("merge_method: ties\nbase_model: b\ndtype: int8\nparameters: {weight: 1}\nmodels: [b+x]\n", InvalidSpecError, "int8"),
        ("- a\n- b\n", InvalidSpecError, "mapping"),
        ("merge_method: [unclosed\n", InvalidSpecError, "not valid YAML"),
        ("merge_method: ties\nbase_model: &b b\nmodels: [*b]\n", InvalidSpecError, "aliases"),
        ("merge_method: !!python/object:os.system ties\n", InvalidSpecError, "not valid YAML"),
    ],
)
def test_bad_configurations_name_what_is_wrong(text, error, words):
    with pytest.raises(error) as exc:
        mergekit_to_spec(text)
    assert words in exc.value.message


def test_size_is_bounded():
    with pytest.raises(InvalidSpecError, match="at most"):
        parse_mergekit_yaml(b"#" * (MAX_YAML_BYTES + 1))


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "c.yml").write_text("merge_method: slerp\nbase_model: b\nmodels: [b+x]\n")
    result = loramerge(str(tmp_path / "c.yml"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2 and "[unknown_method]" in result.stderr and "slerp" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    shutil.copytree(FIXTURE / "base", tmp_path / "full")
    (tmp_path / "d.yml").write_text("merge_method: ties\nbase_model: base\nmodels:\n  - {model: full, parameters: {weight: 1}}\n")
    result = loramerge(str(tmp_path / "d.yml"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2 and "full model, not a LoRA" in result.stderr
