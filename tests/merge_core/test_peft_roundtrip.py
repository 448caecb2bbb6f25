"""Real PEFT files in, PEFT loads what we write, and the forward pass equals base + merged update."""

import pytest
import torch

from merge_core.adapters import load_adapter
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from support.tiny_llama import load_base, logits, make_base, make_peft_adapter

peft = pytest.importorskip("peft")
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    base = make_base(root / "base")
    adapters = [
        make_peft_adapter(base, root / "a", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        make_peft_adapter(
            base,
            root / "b",
            seed=2,
            r=8,
            lora_alpha=4,
            use_rslora=True,
            target_modules=ATTN + MLP,
            rank_pattern={"o_proj": 2},
            alpha_pattern={"down_proj": 3},
        ),
        make_peft_adapter(base, root / "c", seed=3, r=2, lora_alpha=16, target_modules=MLP),
    ]
    return root, base, adapters


def test_scale_folding_matches_peft_delta_weights(world):
    _, base, adapters = world
    for folder in adapters:
        ours = load_adapter(folder)
        model = peft.PeftModel.from_pretrained(load_base(base), folder)
        checked = 0
        for name, module in model.base_model.model.named_modules():
            if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
                mine = ours.modules[name]
                expected = module.get_delta_weight("default")
                assert torch.allclose(mine.scale * mine.B @ mine.A, expected, atol=1e-6), name
                checked += 1
        assert checked == len(ours.modules) > 0


def merged_forward_reference(base_folder, merged):
    model = load_base(base_folder)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in merged.modules:
            params[f"{name}.weight"] += merged.delta(name).float()
    return logits(model)


@pytest.mark.parametrize(
    ("method", "params", "rank"),
    [("do_merging", {}, None), ("task_arithmetic", {"scaling": 0.5}, None), ("ties", {"density": 0.5}, 4), ("knots", {}, None)],
)
def test_peft_loads_the_merged_adapter_and_forward_matches(world, method, params, rank):
    root, base, adapters = world
    spec = parse_spec(
        {
            "method": method,
            "adapters": [{"source": str(a)} for a in adapters],
            "params": params,
            "output": {"rank": rank},
        }
    )
    out = root / f"out-{method}"
    outcome = run_merge(spec, out)
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(outcome.files)
    model = peft.PeftModel.from_pretrained(load_base(base), out)
    got = logits(model)
    expected = merged_forward_reference(base, outcome.merged)
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    assert not torch.allclose(got, logits(load_base(base)), atol=1e-3)  # the update really does something
    card = (out / "README.md").read_text()
    assert method in card and str(adapters[0]) in card


def test_merged_model_output_equals_peft_with_the_adapter(world):
    root, base, adapters = world
    spec = parse_spec(
        {
            "method": "do_merging",
            "adapters": [{"source": str(a)} for a in adapters],
            "output": {"kind": "merged_model", "base_model": str(base)},
        }
    )
    outcome = run_merge(spec, root / "merged-model")
    assert "config.json" in outcome.files
    expected = merged_forward_reference(base, outcome.merged)
    got = logits(load_base(root / "merged-model"))
    assert torch.allclose(got, expected, atol=1e-4)


def test_sharded_merged_model(world, tmp_path):
    from merge_core.merged_model import write_merged_model

    _, base, adapters = world
    merged = run_merge(
        parse_spec({"method": "task_arithmetic", "adapters": [{"source": str(adapters[0])}]}), tmp_path / "adapter"
    ).merged
    files = write_merged_model(merged, base, tmp_path / "sharded", dtype="bfloat16", shard_bytes=20_000)
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files
    model = load_base(tmp_path / "sharded")
    assert next(model.parameters()).dtype == torch.float32  # loaded as asked; stored bf16
    q = dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    reference = dict(load_base(base).named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    expected = (reference.double() + merged.delta("model.layers.0.self_attn.q_proj")).to(torch.bfloat16).float()
    assert torch.equal(q, expected)
