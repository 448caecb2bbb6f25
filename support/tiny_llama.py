"""A tiny Llama built from a config (no download) and real PEFT adapters trained-looking at random."""

from __future__ import annotations

from pathlib import Path

import torch


def make_base(folder: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=97
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def load_base(folder: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def make_peft_adapter(base_folder: Path, folder: Path, *, seed: int, **lora_kwargs) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_base(base_folder), LoraConfig(init_lora_weights=False, **lora_kwargs))
    with torch.no_grad():  # PEFT's random init leaves B small; make every update clearly non-zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


def logits(model, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits
