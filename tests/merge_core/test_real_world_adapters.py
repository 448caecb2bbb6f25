"""Issue 13: adapters as people publish them, built with PEFT itself on tiny models (support/peft_kinds.py).

Task Arithmetic at scaling 1 must give the logits of the base with each adapter's own update added, as PEFT
computes it (``merge_and_unload``; PEFT's forward pass for DoRA), within 1e-4, whether the result is written
as an adapter that PEFT loads or as a merged model. Full-weight tensors (heads, saved embeddings) follow
``output.full_weights``; every refusal is checked by its code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from merge_core.errors import MergeError
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from support import peft_kinds as K

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
ATOL = 1e-4
PREFIX = K.PEFT_PREFIX


@dataclass
class Built:
    """One adapter: the model it was trained on, its folder, and PEFT's view of what it does."""

    base: K.SeqCls | K.CausalLM
    folder: Path
    update: K.Update


def build(root: Path, name: str, base, **config) -> Built:
    folder = K.make_adapter(base, root / name, **config)
    return Built(base, folder, K.own_update(base, folder))


class World(dict):
    """name -> Built, plus the base folder(s) under attributes."""


def build_all(root: Path, table: dict[str, tuple]) -> World:
    """``table``: name -> (the model it is trained on, LoraConfig keywords with ``seed``/``head_seed``)."""
    return World({name: build(root, name, base, **config) for name, (base, config) in table.items()})


SEQ_CLS = {"task_type": "SEQ_CLS"}
LLAMA_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]

# ------------------------------------------------------------------------------------------------ worlds


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """BERT SEQ_CLS: heads of 2, 3 and 2 labels (a and c compatible for averaging, b not)."""
    root = tmp_path_factory.mktemp("bert")
    base = K.make_bert_base(root / "base", num_labels=2)
    two, three = K.SeqCls(base, 2), K.SeqCls(base, 3)
    world = build_all(
        root,
        {
            "a": (two, dict(SEQ_CLS, seed=1, r=4, lora_alpha=8, target_modules=["query", "value"])),
            "b": (
                three,
                dict(SEQ_CLS, seed=2, r=2, lora_alpha=4, use_rslora=True, target_modules=["query", "key", "value", "dense"]),
            ),
            "c": (two, dict(SEQ_CLS, seed=3, r=8, lora_alpha=8, target_modules=["key", "dense"])),
        },
    )
    world.root, world.base = root, base
    return world


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """GPT-2 SEQ_CLS (Conv1D, fan_in_fan_out): g1 and g2 carry identical `score` heads, g3 a 3-label one."""
    root = tmp_path_factory.mktemp("gpt2")
    base = K.make_gpt2_base(root / "base", num_labels=2)
    two, three = K.SeqCls(base, 2), K.SeqCls(base, 3)
    world = build_all(
        root,
        {
            "g1": (two, dict(SEQ_CLS, seed=11, head_seed=7, r=4, target_modules=["c_attn", "c_proj"])),
            "g2": (two, dict(SEQ_CLS, seed=12, head_seed=7, r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"])),
            "g3": (three, dict(SEQ_CLS, seed=13, r=4, target_modules=["c_proj", "c_fc"])),
        },
    )
    assert world["g1"].update.full.keys() == {"score.weight"}
    assert torch.equal(world["g1"].update.full["score.weight"], world["g2"].update.full["score.weight"])
    world.root, world.base = root, base
    return world


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    return K.make_llama_base(tmp_path_factory.mktemp("llama") / "base")


@pytest.fixture(scope="module")
def resized(tmp_path_factory, llama_base):
    """Two adapters trained on one resized Llama (vocab 97 -> 100) with LoRA on embed_tokens and lm_head: PEFT
    saves both layers' base_layer.weight whole, identical in the two files. e3 was trained on another resize."""
    root = tmp_path_factory.mktemp("resized")
    base100 = K.CausalLM(K.make_resized_llama(llama_base, root / "base100"))
    other100 = K.CausalLM(K.make_resized_llama(llama_base, root / "other100", seed=1))  # other new rows
    world = build_all(
        root,
        {
            "e1": (base100, dict(seed=21, r=4, lora_alpha=8, target_modules=["embed_tokens", "lm_head", "q_proj", "v_proj"])),
            "e2": (base100, dict(seed=22, r=2, lora_alpha=2, target_modules=["embed_tokens", "lm_head", "o_proj", "gate_proj"])),
            "e3": (other100, dict(seed=23, r=2, lora_alpha=4, target_modules=["embed_tokens", "lm_head", "q_proj"])),
        },
    )
    full1, full2, full3 = (world[n].update.full for n in ("e1", "e2", "e3"))
    assert full1.keys() == full2.keys() == {"model.embed_tokens.weight", "lm_head.weight"}
    assert all(torch.equal(full1[n], full2[n]) and full1[n].shape[0] == 100 for n in full1)
    assert not torch.equal(full3["model.embed_tokens.weight"], full1["model.embed_tokens.weight"])
    world.root, world.base, world.resized = root, llama_base, base100.folder
    return world


@pytest.fixture(scope="module")
def llama(tmp_path_factory, llama_base):
    """On the plain Llama: DoRA (two, plus a plain LoRA to mix in), embedding LoRA without resizing, and the
    config forms people publish."""
    root = tmp_path_factory.mktemp("llama-kinds")
    on = K.CausalLM(llama_base)
    world = build_all(
        root,
        {
            "dora1": (on, dict(seed=31, r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"])),
            "dora2": (on, dict(seed=32, r=2, lora_alpha=4, use_dora=True, target_modules=LLAMA_ATTN[1:] + ["up_proj"])),
            "lora": (on, dict(seed=33, r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj"])),
            "emb1": (on, dict(seed=34, r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"])),
            "emb2": (on, dict(seed=35, r=2, lora_alpha=4, target_modules=["embed_tokens"])),
            "regex": (on, dict(seed=36, r=2, lora_alpha=4, target_modules=r".*\.layers\.1\.self_attn\.(q|v)_proj")),
            "all_linear": (on, dict(seed=37, r=2, lora_alpha=4, target_modules="all-linear")),
            "layers": (
                on,
                dict(seed=38, r=2, target_modules=["q_proj", "k_proj"], layers_to_transform=[1], layers_pattern="layers"),
            ),
            "exclude": (on, dict(seed=39, r=2, target_modules=LLAMA_ATTN, exclude_modules=r".*\.layers\.0\.self_attn\.o_proj")),
        },
    )
    old = K.copy_with_config(world["lora"].folder, root / "merge_weights", merge_weights=False)
    world["merge_weights"] = Built(on, old, K.own_update(on, old))
    assert world["emb1"].update.full.keys() == world["emb2"].update.full.keys() == {"model.embed_tokens.weight"}
    world.root, world.base = root, llama_base
    return world


@pytest.fixture(scope="module")
def bias(tmp_path_factory, bert):
    """On the BERT base: lora_bias (no head), bias="all" and bias="lora_only" (SEQ_CLS, 2-label heads)."""
    root = tmp_path_factory.mktemp("bias")
    on = K.SeqCls(bert.base, 2)
    world = build_all(
        root,
        {
            "lb1": (on, dict(seed=41, r=4, lora_alpha=8, lora_bias=True, target_modules=["query", "value", "dense"])),
            "lb2": (on, dict(seed=42, r=2, lora_alpha=4, lora_bias=True, target_modules=["key", "value"])),
            "ba": (on, dict(SEQ_CLS, seed=43, r=2, bias="all", target_modules=["query", "value"])),
            "bl": (on, dict(SEQ_CLS, seed=44, r=4, bias="lora_only", target_modules=["key", "dense"])),
        },
    )
    world.root, world.base = root, bert.base
    return world


# ----------------------------------------------------------------------------------------------- helpers


def spec(adapters, *, method="task_arithmetic", params=None, check=None, **output) -> dict:
    data = {
        "method": method,
        "adapters": [{"source": str(b.folder)} for b in adapters],
        "params": {"scaling": 1.0} if params is None else params,
        "output": output,
    }
    if check is not None:
        data["base_model_check"] = check
    return data


def merge(out: Path, adapters, **kw):
    return run_merge(parse_spec(spec(adapters, **kw)), out)


def refused(code: str, out: Path, adapters, **kw) -> MergeError:
    with pytest.raises(MergeError) as info:
        merge(out, adapters, **kw)
    assert info.value.code == code, (info.value.code, info.value.message)
    assert not out.exists()  # nothing half-written
    return info.value


def assert_close(got: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert got.shape == expected.shape, (tuple(got.shape), tuple(expected.shape))
    err = float((got - expected).abs().max())
    assert err <= atol, f"max |logit difference| {err:.3g} > {atol}"


def expected_logits(base, adapters, full) -> torch.Tensor:
    return K.logits(K.reference_model(base, [b.update for b in adapters], full), base.vocab)


def peft_logits(base, folder: Path) -> torch.Tensor:
    return K.logits(peft.PeftModel.from_pretrained(base.load(), str(folder)).eval(), base.vocab)


def model_logits(folder: Path, vocab: int, *, seq_cls: bool = False, full_weights: Path | None = None, **kw) -> torch.Tensor:
    """A merged model folder loaded as users load it (``from_pretrained``), full weights put in if given."""
    auto = transformers.AutoModelForSequenceClassification if seq_cls else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(str(folder), dtype=torch.float32, **kw).eval()
    if full_weights is not None:
        tensors = load_file(str(full_weights))
        _, unexpected = model.load_state_dict(tensors, strict=False)
        assert not unexpected, unexpected
    return K.logits(model, vocab)


def model_keys(folder: Path) -> set[str]:
    """Tensor names in every safetensors file of a merged model folder (sharded or not)."""
    keys = set()
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as fh:
            keys |= set(fh.keys())
    return keys


# ---------------------------------------------------------------------------- the references themselves

BUILT = {
    "bert": ["a", "b", "c"],
    "gpt2": ["g1", "g3"],
    "resized": ["e1", "e2", "e3"],
    "llama": ["dora1", "dora2", "emb1", "regex", "all_linear", "layers", "exclude", "merge_weights"],
    "bias": ["lb1", "ba", "bl"],
}
ALL_BUILT = [(world, name) for world, names in BUILT.items() for name in names]


@pytest.mark.parametrize(("world", "name"), ALL_BUILT)
def test_reference_update_reproduces_pefts_forward(request, world, name):
    """Self-check of support/peft_kinds: base + the adapter's own update (+ its full weights) is PEFT's model."""
    built = request.getfixturevalue(world)[name]
    expected = peft_logits(built.base, built.folder)
    assert_close(expected_logits(built.base, [built], built.update.full), expected, atol=1e-5)
    assert float((expected - K.logits(built.base.load(), built.base.vocab)).abs().max()) > 10 * ATOL  # it does something


def test_peft_key_names(bert, gpt2, resized, llama, bias):
    """What PEFT writes, as merge_core must read it (documents the quirks)."""
    keys = K.saved_keys(bert["a"].folder)
    assert {PREFIX + "classifier.weight", PREFIX + "classifier.bias"} <= keys.keys()  # modules_to_save: no infix
    assert not any(".modules_to_save." in k or "original_module" in k for k in keys)
    assert K.saved_keys(gpt2["g1"].folder)[PREFIX + "score.weight"] == (2, 32)
    assert json.loads((gpt2["g1"].folder / K.CONFIG).read_text())["fan_in_fan_out"] is True
    keys = K.saved_keys(resized["e1"].folder)
    assert keys[PREFIX + "model.embed_tokens.base_layer.weight"] == (100, 32)
    assert keys[PREFIX + "lm_head.base_layer.weight"] == (100, 32)
    assert keys[PREFIX + "model.embed_tokens.lora_embedding_A"] == (4, 100)  # no ".weight" suffix; A is (r, vocab)
    assert keys[PREFIX + "model.embed_tokens.lora_embedding_B"] == (32, 4)
    assert keys[PREFIX + "lm_head.lora_B.weight"] == (100, 4)
    assert K.saved_keys(llama["emb2"].folder)[PREFIX + "model.embed_tokens.base_layer.weight"] == (97, 32)
    assert K.saved_keys(llama["dora1"].folder)[PREFIX + "model.layers.0.self_attn.v_proj.lora_magnitude_vector"] == (16,)
    assert K.saved_keys(bias["lb1"].folder)[PREFIX + "bert.encoder.layer.0.attention.self.query.lora_B.bias"] == (32,)
    keys = K.saved_keys(bias["ba"].folder)  # bias="all": every bias of the model, whole, under module names...
    assert PREFIX + "bert.encoder.layer.0.attention.self.key.bias" in keys  # ...not targeted: plain name
    assert PREFIX + "bert.encoder.layer.0.attention.self.query.base_layer.bias" in keys  # targeted: base_layer infix
    assert PREFIX + "bert.embeddings.LayerNorm.bias" in keys
    # ...and the head's bias three times: the saved head, the live copy, and the untrained original
    assert {
        PREFIX + "classifier.bias",
        PREFIX + "classifier.modules_to_save.bias",
        PREFIX + "classifier.original_module.bias",
    } <= keys.keys()
    tensors = K.saved_tensors(bias["ba"].folder)
    assert torch.equal(tensors[PREFIX + "classifier.bias"], tensors[PREFIX + "classifier.modules_to_save.bias"])
    keys = K.saved_keys(bias["bl"].folder)  # bias="lora_only": the biases of the targeted layers only
    assert PREFIX + "bert.encoder.layer.0.attention.self.key.base_layer.bias" in keys
    assert PREFIX + "bert.encoder.layer.0.attention.self.query.bias" not in keys


# ------------------------------------------------------------------------------------ sequence classifiers

PER_ADAPTER = [("bert", ("a", "b")), ("gpt2", ("g1", "g3"))]


@pytest.mark.parametrize(("world", "names"), PER_ADAPTER)
def test_per_adapter_heads_as_adapters(request, tmp_path, world, names):
    """Each per_adapter/<i> folder is a PEFT adapter: merged body + task i's own head."""
    w = request.getfixturevalue(world)
    adapters = [w[n] for n in names]
    merge(tmp_path / "out", adapters, full_weights="per_adapter")
    heads = {PREFIX + name for b in adapters for name in b.update.full}
    assert not heads & K.saved_keys(tmp_path / "out").keys()  # the body at the top, no head there
    for i, built in enumerate(adapters):
        got = peft_logits(built.base, tmp_path / "out" / "per_adapter" / str(i))
        assert_close(got, expected_logits(built.base, adapters, built.update.full))


@pytest.fixture(scope="module")
def per_adapter_models(request, tmp_path_factory):
    """merged_model + per_adapter for each world of PER_ADAPTER, merged once: (adapters, out folder)."""
    done = {}
    for world, names in PER_ADAPTER:
        w = request.getfixturevalue(world)
        adapters = [w[n] for n in names]
        out = tmp_path_factory.mktemp(f"per-adapter-{world}") / "out"
        merge(out, adapters, kind="merged_model", base_model=str(w.base), full_weights="per_adapter")
        done[world] = adapters, out
    return done


@pytest.mark.parametrize("world", [w for w, _ in PER_ADAPTER])
def test_per_adapter_heads_as_merged_model(per_adapter_models, world):
    """merged_model + per_adapter: each task's head in per_adapter/<i>/full_weights.safetensors, keyed by model
    parameter names, loads onto the merged body and gives that task's logits."""
    adapters, out = per_adapter_models[world]
    for i, built in enumerate(adapters):
        full = out / "per_adapter" / str(i) / "full_weights.safetensors"
        assert set(load_file(str(full))) == set(built.update.full)
        got = model_logits(
            out,
            built.base.vocab,
            seq_cls=True,
            full_weights=full,
            num_labels=built.base.num_labels,
            ignore_mismatched_sizes=True,  # the head is replaced just below, whatever the top level holds
        )
        assert_close(got, expected_logits(built.base, adapters, built.update.full))


@pytest.mark.parametrize("world", [w for w, _ in PER_ADAPTER])
def test_per_adapter_merged_model_top_level_has_no_head(per_adapter_models, world):
    """The top level is the merged body only: no head, not even the base's, so that
    `from_pretrained(out, num_labels=k)` works for every task's k without ignore_mismatched_sizes."""
    adapters, out = per_adapter_models[world]
    heads = {name for b in adapters for name in b.update.full}
    assert not heads & model_keys(out), sorted(heads & model_keys(out))


@pytest.mark.parametrize("names", [("a", "c"), ("a", "b")], ids=["same-shapes", "different-shapes"])
def test_differing_heads_are_refused_by_default(bert, tmp_path, names):
    error = refused("full_weights_conflict", tmp_path / "out", [bert[n] for n in names])
    assert "per_adapter" in error.message and "first" in error.message  # names the policies that would accept the job


def test_average_of_heads_with_different_shapes_is_refused(bert, tmp_path):
    error = refused("full_weights_conflict", tmp_path / "out", [bert["a"], bert["b"]], full_weights="average")
    assert "per_adapter" in error.message


@pytest.mark.parametrize("kind", ["adapter", "merged_model"])
def test_first_head(bert, tmp_path, kind):
    """`first` keeps adapter 0's head, here 3 labels on a 2-label base: the merged model's config follows it."""
    adapters = [bert["b"], bert["a"]]
    expected = expected_logits(bert["b"].base, adapters, bert["b"].update.full)
    if kind == "adapter":
        merge(tmp_path / "out", adapters, full_weights="first")
        got = peft_logits(bert["b"].base, tmp_path / "out")
    else:
        merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(bert.base), full_weights="first")
        got = model_logits(tmp_path / "out", K.VOCAB, seq_cls=True)  # no num_labels given: the folder says 3
    assert_close(got, expected)


@pytest.mark.parametrize("kind", ["adapter", "merged_model"])
def test_average_head(bert, tmp_path, kind):
    adapters = [bert["a"], bert["c"]]
    full = K.mean_full([b.update for b in adapters])
    expected = expected_logits(bert["a"].base, adapters, full)
    if kind == "adapter":
        merge(tmp_path / "out", adapters, full_weights="average")
        got = peft_logits(bert["a"].base, tmp_path / "out")
    else:
        merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(bert.base), full_weights="average")
        got = model_logits(tmp_path / "out", K.VOCAB, seq_cls=True)
    assert_close(got, expected)
    first = expected_logits(bert["a"].base, adapters, bert["a"].update.full)
    assert float((got - first).abs().max()) > 1e-3  # the mean really is not adapter 0's head


@pytest.mark.parametrize("policy", ["error", "first", "average"])
def test_identical_heads_pass_through_conv1d(gpt2, tmp_path, policy):
    """GPT-2 (Conv1D, fan_in_fan_out) with identical `score` heads: merged under any policy, as adapter and model."""
    adapters = [gpt2["g1"], gpt2["g2"]]
    base = gpt2["g1"].base
    expected = expected_logits(base, adapters, gpt2["g1"].update.full)
    merge(tmp_path / "adapter", adapters, full_weights=policy)
    assert_close(peft_logits(base, tmp_path / "adapter"), expected)
    merge(tmp_path / "model", adapters, kind="merged_model", base_model=str(gpt2.base), full_weights=policy)
    assert_close(model_logits(tmp_path / "model", K.VOCAB, seq_cls=True), expected)


# ------------------------------------------------------------------- resized embeddings, lm_head, embeddings


def test_resized_embeddings_and_lm_head_lora_as_adapter(resized, tmp_path):
    adapters = [resized["e1"], resized["e2"]]
    base = resized["e1"].base
    merge(tmp_path / "out", adapters)  # identical base_layer copies: no policy needed
    saved = K.saved_tensors(tmp_path / "out")
    for name, value in resized["e1"].update.full.items():  # the saved copies pass through once, unchanged
        key = PREFIX + name.replace(".weight", ".base_layer.weight")
        assert key in saved and torch.equal(saved[key].float(), value), key
    assert_close(peft_logits(base, tmp_path / "out"), expected_logits(base, adapters, resized["e1"].update.full))


def test_differing_saved_embeddings(resized, tmp_path):
    """Adapters that each added their own tokens carry different embed_tokens/lm_head copies: refused by default
    (their base names differ too, hence same_shapes), merged on adapter 0's layers under `first`."""
    adapters = [resized["e1"], resized["e3"]]
    error = refused("full_weights_conflict", tmp_path / "refused", adapters, check="same_shapes")
    assert "per_adapter" in error.message
    merge(tmp_path / "out", adapters, check="same_shapes", full_weights="first")
    base = resized["e1"].base
    assert_close(peft_logits(base, tmp_path / "out"), expected_logits(base, adapters, resized["e1"].update.full))


@pytest.mark.parametrize("which", ["original", "resized"])
def test_resized_embeddings_and_lm_head_lora_as_merged_model(resized, tmp_path, which):
    """From the original base (vocab 97) the merged model takes the adapters' resized layers (vocab 100)."""
    adapters = [resized["e1"], resized["e2"]]
    base_model = resized.base if which == "original" else resized.resized
    merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(base_model))
    expected = expected_logits(resized["e1"].base, adapters, resized["e1"].update.full)
    assert_close(model_logits(tmp_path / "out", K.RESIZED_VOCAB), expected)


@pytest.mark.parametrize("kind", ["adapter", "merged_model"])
def test_embedding_lora(llama, tmp_path, kind):
    adapters = [llama["emb1"], llama["emb2"], llama["lora"]]
    base = llama["emb1"].base
    expected = expected_logits(base, adapters, llama["emb1"].update.full)
    if kind == "adapter":
        merge(tmp_path / "out", adapters)
        got = peft_logits(base, tmp_path / "out")
    else:
        merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(llama.base))
        got = model_logits(tmp_path / "out", K.VOCAB)
    assert_close(got, expected)


# ------------------------------------------------------------------------------------------------- DoRA

DORA = ("dora1", "dora2", "lora")


def test_dora_merged_model_matches_pefts_forward(llama, tmp_path):
    """Two DoRA adapters sharing v_proj plus a plain LoRA: W0 + Σ (each adapter's forward-pass weight − W0)."""
    adapters = [llama[n] for n in DORA]
    merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(llama.base))
    assert_close(model_logits(tmp_path / "out", K.VOCAB), expected_logits(adapters[0].base, adapters, {}))


def test_dora_as_adapter_at_full_rank_is_exact(llama, tmp_path):
    """Rank 32 covers every module of the tiny Llama (min(out, in) <= 32): the adapter is the exact merge."""
    adapters = [llama[n] for n in DORA]
    outcome = merge(tmp_path / "out", adapters, rank=32, base_model=str(llama.base))
    assert outcome.summary["compression_error_max"] < 1e-4
    assert_close(peft_logits(adapters[0].base, tmp_path / "out"), expected_logits(adapters[0].base, adapters, {}))


def test_dora_as_adapter_reports_compression_error(llama, tmp_path):
    """A DoRA update rescales the rows of W0 too: full rank, so rank 2 loses something and says how much."""
    outcome = merge(tmp_path / "out", [llama[n] for n in DORA], rank=2, base_model=str(llama.base))
    assert outcome.summary["compression_error_max"] > 1e-3
    assert peft_logits(llama["dora1"].base, tmp_path / "out").isfinite().all()  # PEFT loads and runs it


def test_dora_needs_the_base_model(llama, tmp_path):
    refused("base_model_required", tmp_path / "out", [llama["dora1"], llama["dora2"]], rank=4)


def test_dora_as_adapter_needs_a_rank(llama, tmp_path):
    refused("rank_required", tmp_path / "out", [llama["dora1"], llama["dora2"]], base_model=str(llama.base))


# ------------------------------------------------------------------------------------------------- biases


@pytest.mark.parametrize("kind", ["adapter", "merged_model"])
def test_lora_bias_merges_with_task_arithmetic(bias, tmp_path, kind):
    """lora_bias is an update (scale · lora_B.bias): no base model needed for an adapter."""
    adapters = [bias["lb1"], bias["lb2"]]
    base = adapters[0].base
    expected = expected_logits(base, adapters, {})
    if kind == "adapter":
        merge(tmp_path / "out", adapters)
        got = peft_logits(base, tmp_path / "out")
    else:
        merge(tmp_path / "out", adapters, kind="merged_model", base_model=str(bias.base))
        got = model_logits(tmp_path / "out", K.VOCAB, seq_cls=True)
    assert_close(got, expected)


@pytest.mark.parametrize("kind", ["adapter", "merged_model"])
def test_trained_biases_merge_with_the_base_model(bias, tmp_path, kind):
    """bias="all" and "lora_only" store trained bias values whole: update = value - base, summed."""
    adapters = [bias["ba"], bias["bl"], bias["lb1"]]
    base = adapters[0].base
    expected = expected_logits(base, adapters, K.first_full([b.update for b in adapters]))
    merge(tmp_path / "out", adapters, kind=kind, base_model=str(bias.base), full_weights="first")
    if kind == "adapter":
        got = peft_logits(base, tmp_path / "out")
    else:
        got = model_logits(tmp_path / "out", K.VOCAB, seq_cls=True)
    assert_close(got, expected)


@pytest.mark.parametrize(
    ("names", "method", "params", "output"),
    [
        (("lb1", "lb2"), "do_merging", {}, {}),
        (("lb1", "lb2"), "ties", {"density": 0.5}, {"rank": 4}),
        (("ba", "bl"), "ties", {"density": 0.5}, {"rank": 4, "full_weights": "first"}),
    ],
    ids=["lora_bias-do_merging", "lora_bias-ties", "bias_all-ties"],
)
def test_biases_refused_by_methods_not_linear_in_the_update(bias, tmp_path, names, method, params, output):
    refused(
        "bias_not_mergeable",
        tmp_path / "out",
        [bias[n] for n in names],
        method=method,
        params=params,
        base_model=str(bias.base),
        **output,
    )


@pytest.mark.parametrize("name", ["ba", "bl"])
def test_trained_biases_need_the_base_model(bias, tmp_path, name):
    refused("base_model_required", tmp_path / "out", [bias[name]])


# ------------------------------------------------------------------------------- base model, config forms


def test_base_model_names_strict_or_same_shapes(bert, tmp_path):
    renamed = K.copy_with_config(bert["a"].folder, tmp_path / "renamed", base_model_name_or_path="acme/bert-tiny-4bit")
    adapters = [bert["a"], Built(bert["a"].base, renamed, bert["a"].update)]
    error = refused("base_model_mismatch", tmp_path / "strict", adapters)
    assert "base_model_check" in error.message
    merge(tmp_path / "same", adapters, check="same_shapes")
    expected = expected_logits(bert["a"].base, adapters, bert["a"].update.full)
    assert_close(peft_logits(bert["a"].base, tmp_path / "same"), expected)


@pytest.mark.parametrize("form", ["regex", "all_linear", "layers", "exclude", "merge_weights"])
def test_config_forms(llama, tmp_path, form):
    adapters = [llama[form], llama["regex" if form == "merge_weights" else "lora"]]  # merge_weights is a copy of lora
    base = adapters[0].base
    expected = expected_logits(base, adapters, K.first_full([b.update for b in adapters]))
    merge(tmp_path / "adapter", adapters)
    assert_close(peft_logits(base, tmp_path / "adapter"), expected)
    merge(tmp_path / "model", adapters, kind="merged_model", base_model=str(llama.base))
    assert_close(model_logits(tmp_path / "model", K.VOCAB), expected)


def test_config_form_references_target_what_they_say(llama):
    """The forms select what they claim (so test_config_forms covers them)."""

    def modules(name):
        return {n.rsplit(".", 1)[0] for n in llama[name].update.deltas}

    assert modules("regex") == {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}
    assert len(modules("all_linear")) == 14 and "lm_head" not in modules("all_linear")
    assert modules("layers") == {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"}
    assert "model.layers.0.self_attn.o_proj" not in modules("exclude") and "model.layers.1.self_attn.o_proj" in modules("exclude")


@pytest.mark.parametrize("kind", ["enable_lora", "PROMPT_TUNING", "PREFIX_TUNING"])
def test_unsupported_adapters(gpt2, llama, tmp_path, kind):
    if kind == "enable_lora":  # the old fused-QKV MergedLinear form
        folder = K.copy_with_config(gpt2["g1"].folder, tmp_path / "old", enable_lora=[True, False, True], merge_weights=True)
        adapters = [Built(gpt2["g1"].base, folder, K.Update({})), gpt2["g2"]]
    else:
        folder = K.make_prompt_learning_adapter(K.CausalLM(llama.base), tmp_path / "prompt", kind)
        adapters = [llama["lora"], Built(llama["lora"].base, folder, K.Update({}))]
    refused("unsupported_adapter", tmp_path / "out", adapters)
