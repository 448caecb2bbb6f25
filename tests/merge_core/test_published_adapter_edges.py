"""Edges an outside tester found in merging adapters as PEFT publishes them: tied embeddings, biases on
models whose layers are not all biased, whole tensors that do not fit the base, quantized bases, a head
that only one adapter carries, a revision given to a local base model."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_core import errors
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from support import peft_kinds as K

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=97
)


def merge(out, adapters, **output):
    # PEFT's forward pass with every adapter active adds the updates up: Task Arithmetic at λ = 1, not auto
    adapters = [{"source": str(a)} for a in adapters]
    spec = {"method": "task_arithmetic", "adapters": adapters, "params": {"scaling": 1.0}, "output": output}
    return run_merge(parse_spec(spec), out)


def peft_forward(base, adapters):
    """Logits of PEFT's own forward pass with every adapter active at once."""
    model = peft.PeftModel.from_pretrained(base.load(), str(adapters[0]), adapter_name="a0")
    for i, folder in enumerate(adapters[1:], 1):
        model.load_adapter(str(folder), adapter_name=f"a{i}")
    model.base_model.set_adapter([f"a{i}" for i in range(len(adapters))])
    return K.logits(model.eval(), base.vocab)


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    root = tmp_path_factory.mktemp("tied")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, tie_word_embeddings=True)).save_pretrained(root / "base")
    base = K.CausalLM(root / "base")
    return root, base, K.make_adapter(base, root / "emb", seed=2, r=2, lora_alpha=4, target_modules=["v_proj", "embed_tokens"])


def test_a_tied_model_is_untied_so_the_merged_model_does_what_the_adapter_does(tied):
    root, base, adapter = tied
    merge(root / "model", [adapter], kind="merged_model", base_model=str(base.folder))
    config = json.loads((root / "model" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    weights = load_file(str(root / "model" / "model.safetensors"))
    assert not torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])  # the head keeps W0
    got = K.logits(base.load(root / "model"), base.vocab)
    torch.testing.assert_close(got, peft_forward(base, [adapter]), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """q/k/v carry biases, o_proj none (Qwen2's layout)."""
    root = tmp_path_factory.mktemp("qwen")
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY, tie_word_embeddings=False)).save_pretrained(root / "base")
    base = K.CausalLM(root / "base")
    every = K.make_adapter(base, root / "all", seed=1, r=4, lora_alpha=8, bias="all", target_modules=["q_proj", "o_proj"])
    lora_bias = K.make_adapter(base, root / "lb", seed=3, r=2, lora_alpha=4, lora_bias=True, target_modules=["q_proj", "v_proj"])
    return root, base, [every, lora_bias]


def test_merged_biases_go_whole_where_the_base_has_them_so_peft_can_merge_the_adapter(qwen):
    root, base, adapters = qwen
    merge(root / "out", adapters, base_model=str(base.folder))
    config = json.loads((root / "out" / "adapter_config.json").read_text())
    assert config["lora_bias"] is False  # every changed bias exists in the base: written whole
    reference = peft_forward(base, adapters)
    loaded = peft.PeftModel.from_pretrained(base.load(), str(root / "out"))
    torch.testing.assert_close(K.logits(loaded.eval(), base.vocab), reference, rtol=0, atol=1e-4)
    merged = peft.PeftModel.from_pretrained(base.load(), str(root / "out")).merge_and_unload()  # raised before
    torch.testing.assert_close(K.logits(merged.eval(), base.vocab), reference, rtol=0, atol=1e-4)


def test_lora_bias_on_a_layer_without_bias_cannot_become_a_merged_model(tmp_path):
    base_folder = K.make_llama_base(tmp_path / "base")  # Llama's projections have no bias
    adapter = K.make_adapter(K.CausalLM(base_folder), tmp_path / "lb", seed=1, r=2, lora_bias=True, target_modules=["q_proj"])
    with pytest.raises(errors.BiasNotMergeableError, match="write an adapter"):
        merge(tmp_path / "out", [adapter], kind="merged_model", base_model=str(base_folder))
    assert not (tmp_path / "out").exists()


def _with_head(source, folder, shape):
    """A copy of ``source`` whose classifier head has another shape."""
    K.copy_with_config(source, folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors["base_model.model.classifier.weight"] = torch.randn(shape)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    base = K.SeqCls(K.make_bert_base(root / "base", num_labels=2), 2)
    return root, base, K.make_adapter(base, root / "a", seed=1, r=2, task_type="SEQ_CLS", target_modules=["query"])


@pytest.mark.parametrize("shape", [(2, 31), (2, 32, 1)])
def test_a_head_that_does_not_fit_the_base_is_refused(bert, tmp_path, shape):
    root, base, adapter = bert
    bad = _with_head(adapter, tmp_path / "bad", shape)
    with pytest.raises(errors.ShapeMismatchError, match="classifier.weight"):
        merge(tmp_path / "out", [bad], kind="merged_model", base_model=str(base.folder))
    wider = _with_head(adapter, tmp_path / "labels", (5, 32))  # another label count is fine
    merge(tmp_path / "ok", [wider], kind="merged_model", base_model=str(base.folder))
    assert len(json.loads((tmp_path / "ok" / "config.json").read_text())["id2label"]) == 5


def test_per_adapter_keeps_a_head_only_one_adapter_carries_beside_the_body(bert, tmp_path):
    root, base, adapter = bert
    plain = K.make_adapter(K.CausalLM(base.folder), tmp_path / "plain", seed=4, r=2, target_modules=["value"])
    outcome = merge(tmp_path / "out", [plain, adapter], full_weights="per_adapter")
    assert "base_model.model.classifier.weight" not in load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert "per_adapter/1/adapter_model.safetensors" in outcome.files
    card = (tmp_path / "out" / "README.md").read_text()
    assert "per_adapter/1/" in card and "{i}" not in card


def test_a_quantized_base_is_refused_with_what_to_use_instead(bert, tmp_path):
    root, base, adapter = bert
    quantized = tmp_path / "q"
    quantized.mkdir()
    config = json.loads((base.folder / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "bitsandbytes"}}))
    save_file(load_file(str(base.folder / "model.safetensors")), str(quantized / "model.safetensors"))
    with pytest.raises(errors.BaseModelError, match="bitsandbytes.*unquantized"):
        merge(tmp_path / "out", [adapter], kind="merged_model", base_model=str(quantized))


def test_a_revision_means_nothing_for_a_local_base_model(bert, tmp_path):
    root, base, adapter = bert
    with pytest.raises(errors.InvalidSpecError, match="base_model_revision"):
        merge(tmp_path / "out", [adapter], base_model=str(base.folder), base_model_revision="abc123")
    with pytest.raises(errors.InvalidSpecError, match="needs output.base_model"):
        merge(tmp_path / "out", [adapter], base_model_revision="abc123")
    with pytest.raises(errors.BaseModelError, match="fetched by the service"):
        merge(tmp_path / "out", [adapter], kind="merged_model", base_model="meta-llama/Llama-3.2-1B")
