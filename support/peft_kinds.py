"""Adapters as people publish them, built with PEFT itself on tiny models made from configs (no download).

Kinds: a BERT and a GPT-2 (``Conv1D``, fan_in_fan_out) sequence classifier whose head PEFT saves whole
(``modules_to_save``), a Llama with resized embeddings and LoRA on ``embed_tokens``/``lm_head`` (PEFT saves
their ``base_layer.weight`` whole), DoRA, LoRA on embeddings, ``lora_bias``, ``bias="all"|"lora_only"``, and
the config forms (regex or ``all-linear`` targets, ``layers_to_transform``, ``exclude_modules``), plus
prompt/prefix tuning. Every trained tensor is randomized so each adapter clearly changes the model.

References, PEFT's own: :func:`own_update` is what one adapter does to every parameter of the model it
was trained on, split into an additive update (``merge_and_unload`` minus the base; for DoRA layers the
effective weight of PEFT's *forward* pass minus the base, because PEFT's DoRA merges have had bugs, issues
#3608 and #3761) and the tensors the adapter replaces whole (heads, saved embedding layers).
:func:`reference_model` builds base + Σ updates with chosen replacements; :func:`logits` runs fixed ids.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

HIDDEN = 32
VOCAB = 97
RESIZED_VOCAB = 100
PEFT_PREFIX = "base_model.model."
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


# ----------------------------------------------------------------------------------------------- bases


def make_bert_base(folder: Path, *, num_labels: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT sequence classifier, hidden 32, saved with ``save_pretrained``."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def make_gpt2_base(folder: Path, *, num_labels: int = 2, seed: int = 0) -> Path:
    """A 2-layer GPT-2 sequence classifier (``Conv1D`` layers, head ``score`` without bias); pad id 0."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=HIDDEN,
        n_layer=2,
        n_head=4,
        n_positions=64,
        vocab_size=VOCAB,
        num_labels=num_labels,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


def make_llama_base(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama, hidden 32, vocab 97, untied embeddings (as support/tiny_llama.py)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_resized_llama(base_folder: Path, folder: Path, *, vocab: int = RESIZED_VOCAB, seed: int = 0) -> Path:
    """The Llama base with its vocabulary grown to ``vocab`` (new rows drawn by transformers, as a user's
    ``resize_token_embeddings`` after adding tokens), saved so that every adapter trained on it shares the rows."""
    torch.manual_seed(seed)
    model = CausalLM(base_folder).load()
    model.resize_token_embeddings(vocab)
    model.save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class SeqCls:
    """The model a sequence-classification adapter was trained on: the base folder with a ``num_labels`` head
    (a head of another size than the base's is drawn anew at every load, as transformers does, so such an
    adapter must train its head: ``task_type="SEQ_CLS"`` makes it a ``modules_to_save``)."""

    folder: Path
    num_labels: int

    vocab = VOCAB

    def load(self, folder: Path | None = None):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            str(folder or self.folder), num_labels=self.num_labels, ignore_mismatched_sizes=True, dtype=torch.float32
        ).eval()


@dataclass(frozen=True)
class CausalLM:
    folder: Path

    @property
    def vocab(self) -> int:
        return json.loads((Path(self.folder) / "config.json").read_text())["vocab_size"]

    def load(self, folder: Path | None = None):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(folder or self.folder), dtype=torch.float32).eval()


Base = SeqCls | CausalLM


# -------------------------------------------------------------------------------------------- adapters


def make_adapter(base: Base, folder: Path, *, seed: int, head_seed: int | None = None, **config) -> Path:
    """Build a LoRA adapter with PEFT on ``base`` (``LoraConfig(**config)``), randomize everything PEFT
    trains, and ``save_pretrained`` it into ``folder``.

    ``lora_B``/``lora_embedding_B`` are redrawn from N(0, 0.1) (PEFT's init leaves B small or zero), DoRA magnitudes are
    scaled by ``1 + 0.2 N(0,1)``, trained biases (``bias``, ``lora_bias``) get ``N(0, 0.05)`` added, and
    ``modules_to_save`` heads are redrawn from ``head_seed`` (default ``seed + 1000``): two adapters with one
    ``head_seed`` and one ``num_labels`` carry identical heads.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(base.load(), LoraConfig(init_lora_weights=False, **config))
    heads = torch.Generator().manual_seed(seed + 1000 if head_seed is None else head_seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad or "lora_A" in name or "lora_embedding_A" in name:
                continue
            if ".modules_to_save." in name:
                param.copy_(torch.randn(param.shape, generator=heads) * 0.05)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.randn_like(param))
            elif "lora_embedding_B" in name or ("lora_B" in name and name.endswith(".weight")):
                param.normal_(0, 0.1)
            else:  # lora_B.bias (lora_bias), base biases trained under bias="all"/"lora_only"
                param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(folder)
    return folder


def make_prompt_learning_adapter(base: CausalLM, folder: Path, kind: str = "PROMPT_TUNING") -> Path:
    """A prompt-tuning or prefix-tuning adapter (not LoRA; merge_core refuses these)."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    config_cls = {"PROMPT_TUNING": PromptTuningConfig, "PREFIX_TUNING": PrefixTuningConfig}[kind]
    torch.manual_seed(0)
    get_peft_model(base.load(), config_cls(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(folder)
    return folder


def copy_with_config(source: Path, folder: Path, **changes) -> Path:
    """A copy of an adapter folder with keys of ``adapter_config.json`` set (as older or hand-edited files)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / CONFIG).read_text())
    config.update(changes)
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes in a PEFT ``adapter_model.safetensors``."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS), framework="pt") as fh:
        return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / WEIGHTS))


# ------------------------------------------------------------------------------------------ references


@dataclass
class Update:
    """What one adapter does to the model it was trained on, by model parameter name (``classifier.weight``):
    ``deltas`` add to the base (only non-zero ones kept), ``full`` replace the base value whole."""

    deltas: dict[str, torch.Tensor]
    full: dict[str, torch.Tensor] = field(default_factory=dict)


def dora_effective_weight(layer) -> torch.Tensor:
    """PEFT's DoRA forward of one wrapped linear layer (eval mode, active adapter) as a weight in the base
    layer's own layout: the layer applied to the identity, minus the base bias (``(in, out)``), transposed to
    ``(out, in)`` unless the layer is a ``Conv1D`` (fan_in_fan_out)."""
    base = layer.get_base_layer()
    eye = torch.eye(layer.in_features, dtype=base.weight.dtype)
    out = layer(eye)
    if getattr(base, "bias", None) is not None:
        out = out - base.bias
    return (out if layer.fan_in_fan_out else out.T).contiguous()


def own_update(base: Base, folder: Path) -> Update:
    """PEFT's view of one adapter: ``merge_and_unload()`` minus the base for every parameter, except DoRA
    layers, whose effective weight comes from PEFT's forward pass; heads (``modules_to_save``) and saved
    embedding ``base_layer`` weights go into ``full``."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    reference = {name: t.clone() for name, t in base.load().state_dict().items()}
    model = PeftModel.from_pretrained(base.load(), str(folder)).eval()
    inner = model.base_model.model
    heads, dora = set(), {}
    with torch.no_grad():
        for name, module in inner.named_modules():
            if isinstance(module, ModulesToSaveWrapper):
                heads |= {f"{name}.{p}" for p, _ in module.modules_to_save["default"].named_parameters()}
            elif isinstance(module, LoraLayer) and "default" in getattr(module, "lora_magnitude_vector", {}):
                dora[f"{name}.weight"] = dora_effective_weight(module)
        merged = model.merge_and_unload().state_dict()
    full = {name: merged[name].clone() for name in heads}
    for key, tensor in saved_tensors(folder).items():  # embed_tokens / lm_head saved whole: the base PEFT trained on
        if key.endswith(".base_layer.weight"):
            name = key.removeprefix(PEFT_PREFIX).replace(".base_layer.weight", ".weight")
            assert torch.equal(tensor, reference[name]), key
            full[name] = reference[name].clone()
    deltas = {}
    for name, value in merged.items():
        if name in heads or not value.is_floating_point():
            continue
        delta = dora.get(name, value) - reference[name]
        if delta.abs().max() > 0:
            deltas[name] = delta
    return Update(deltas, full)


def reference_model(base: Base, updates: list[Update], full: dict[str, torch.Tensor] | None = None):
    """``base`` with every update's deltas added and ``full`` (name -> tensor) put in place."""
    model = base.load()
    state = model.state_dict()
    with torch.no_grad():
        for name, value in (full or {}).items():
            state[name] = value.clone()
        for update in updates:
            for name, delta in update.deltas.items():
                state[name] = state[name] + delta
    model.load_state_dict(state)
    return model


def first_full(updates: list[Update]) -> dict[str, torch.Tensor]:
    """Policy ``first``: each full weight from the first adapter that carries it."""
    out: dict[str, torch.Tensor] = {}
    for update in updates:
        for name, value in update.full.items():
            out.setdefault(name, value)
    return out


def mean_full(updates: list[Update]) -> dict[str, torch.Tensor]:
    """Policy ``average``: the mean of each full weight over the adapters that carry it."""
    names = {name for update in updates for name in update.full}
    return {name: torch.stack([u.full[name] for u in updates if name in u.full]).mean(0) for name in names}


def input_ids(vocab: int, seed: int = 0) -> torch.Tensor:
    """Fixed ids ``(2, 8)`` in ``[1, vocab)`` (0 is GPT-2's pad here); the last ids of the vocabulary are
    always present, so resized rows are read."""
    ids = torch.randint(1, vocab, (2, 8), generator=torch.Generator().manual_seed(seed))
    ids[0, -1], ids[1, 3] = vocab - 1, vocab - 2
    return ids


def logits(model, vocab: int, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids(vocab, seed)).logits
