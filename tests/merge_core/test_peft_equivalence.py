"""PEFT 0.21.2's add_weighted_adapter against ours on real PEFT adapters (docs/METHOD.md §8):
``cat`` = task_arithmetic, ``linear`` = peft_linear, ``ties_svd`` = ties with PEFT's conventions
(count divisor, + on a zero vote, int(d·n) entries) at unit weights (PEFT elects signs before weighting)."""

import pytest
import torch

from merge_core.adapters import load_adapter
from merge_core.engine import merge_adapters
from merge_core.registry import get_method
from support.tiny_llama import load_base, make_base, make_peft_adapter

peft = pytest.importorskip("peft")
TARGETS = ["k_proj", "v_proj"]  # both 16×32: svd_rank 16 is full rank


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_eq")
    base = make_base(root / "base")
    a = make_peft_adapter(base, root / "a", seed=1, r=4, lora_alpha=8, target_modules=TARGETS)
    b = make_peft_adapter(base, root / "b", seed=2, r=4, lora_alpha=4, target_modules=TARGETS)
    return base, [a, b]


def peft_merge(base, folders, weights, combination, **kwargs):
    model = peft.PeftModel.from_pretrained(load_base(base), folders[0], adapter_name="a0")
    model.load_adapter(folders[1], adapter_name="a1")
    model.add_weighted_adapter(["a0", "a1"], weights, "merged", combination, **kwargs)
    return {
        name: module.get_delta_weight("merged").double()
        for name, module in model.base_model.model.named_modules()
        if hasattr(module, "get_delta_weight") and "merged" in getattr(module, "lora_A", {})
    }


def ours(folders, method_name, params, weights):
    method = get_method(method_name)
    adapters = [load_adapter(f) for f in folders]
    kind = "adapter" if method.factored else "merged_model"
    params = method.parse_params({"scaling": 1.0, **params})  # PEFT's combinations apply the weights alone: λ = 1
    return merge_adapters(adapters, method, params, weights=weights, dtype=torch.float64, output_kind=kind)


def rel(x, y):
    return float((x - y).norm() / y.norm())


@pytest.mark.parametrize(
    ("combination", "method", "params", "weights", "kwargs"),
    [
        ("cat", "task_arithmetic", {}, [0.7, 1.3], {}),
        ("linear", "peft_linear", {}, [0.7, 1.3], {}),
        (
            "ties_svd",
            "ties",
            {"density": 0.5, "divisor": "count", "zero_vote": "positive", "keep_count": "floor"},
            [1.0, 1.0],
            {},
        ),
    ],
)
def test_peft_combination_equals_ours(world, combination, method, params, weights, kwargs):
    base, folders = world
    if combination == "ties_svd":
        kwargs = {"density": 0.5, "svd_rank": 16}  # full rank: no truncation
    theirs = peft_merge(base, folders, weights, combination, **kwargs)
    merged = ours(folders, method, params, weights)
    assert set(theirs) == set(merged.names())
    for name, delta in theirs.items():
        assert rel(merged.delta(name), delta) < 1e-5, (name, rel(merged.delta(name), delta))
