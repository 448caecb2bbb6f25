"""OSRM initialisation (merge_core.osrm) on real transformers models built locally (tiny Llama, tiny BERT).

The reference is computed here directly: each sample run alone (no padding), the module's inputs caught
by a forward hook and pooled by hand; the adapters must be orthonormal, orthogonal to the other tasks'
pooled features (task_means) or span the least-variance eigenvectors of their S (sample_covariance),
load in PEFT as trainable with exactly the saved A, and leave the base's outputs unchanged (B = 0)."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from merge_core.cli import main
from merge_core.errors import InvalidSamplesError, MergeError, TooManySamplesError, UnknownModuleError
from merge_core.osrm import parse_jsonl, run_init
from merge_core.osrm.core import load_base_model
from merge_core.osrm.spec import MAX_SAMPLES_PER_TASK, InitSpec, TaskSamples
from support.peft_kinds import make_bert_base
from support.tiny_llama import make_base
from support.tiny_tokenizer import make_word_tokenizer

PREFIX = "base_model.model."


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = make_base(tmp_path_factory.mktemp("osrm") / "llama")
    return make_word_tokenizer(folder, 97, bos=True)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_bert_base(tmp_path_factory.mktemp("osrm") / "bert")


def task_ids(n_tasks: int, per_task: int, seed: int = 0, vocab: int = 97) -> list[dict]:
    """Tasks drawn from disjoint token ranges, samples of varied lengths (so batches carry padding)."""
    g = torch.Generator().manual_seed(seed)
    width = vocab // n_tasks
    tasks = []
    for t in range(n_tasks):
        rows = []
        for _ in range(per_task):
            length = int(torch.randint(3, 12, (1,), generator=g))
            rows.append(torch.randint(t * width, (t + 1) * width, (length,), generator=g).tolist())
        tasks.append({"name": f"task{t}", "input_ids": rows})
    return tasks


def direct_rows(folder, spec: InitSpec, pooling: str = "mean") -> dict[str, list[torch.Tensor]]:
    """module -> per task, the pooled rows (float64), each sample run alone."""
    model = load_base_model(folder)
    caught: dict[str, torch.Tensor] = {}
    names = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in spec.target_modules
    ]
    handles = [
        dict(model.named_modules())[n].register_forward_hook(lambda m, args, out, n=n: caught.__setitem__(n, args[0].detach()))
        for n in names
    ]
    rows = {n: [] for n in names}
    for task in spec.tasks:
        per = {n: [] for n in names}
        for sample in task.input_ids[: spec.params.samples_per_task]:
            with torch.no_grad():
                model(input_ids=torch.tensor([sample]))
            for n in names:
                x = caught[n][0].double()
                per[n].append(x.mean(0) if pooling == "mean" else x[-1])
        for n in names:
            rows[n].append(torch.stack(per[n]))
    for h in handles:
        h.remove()
    return rows


def adapter_A(folder, task: str) -> dict[str, torch.Tensor]:
    tensors = load_file(str(folder / task / "adapter_model.safetensors"))
    assert all(not v.any() for k, v in tensors.items() if k.endswith("lora_B.weight"))
    return {k.removeprefix(PREFIX).removesuffix(".lora_A.weight"): v.double() for k, v in tensors.items() if "lora_A" in k}


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_task_means_rows_are_orthonormal_and_orthogonal_to_the_other_tasks_means(llama, tmp_path, pooling):
    spec = InitSpec(
        base_model=str(llama),
        target_modules=["q_proj", "v_proj", "down_proj"],
        r=4,
        lora_alpha=8,
        tasks=task_ids(3, 10),
        params={"batch_size": 4, "pooling": pooling},
    )
    outcome = run_init(spec, tmp_path / "out", base_model_dir=llama)
    assert outcome.summary["interference_ratio_max"] < 1e-12
    rows = direct_rows(llama, spec, pooling)
    for t, task in enumerate(spec.tasks):
        for name, A in adapter_A(tmp_path / "out", task.name).items():
            assert torch.allclose(A @ A.T, torch.eye(4, dtype=torch.float64), atol=1e-6)
            for other, H in enumerate(rows[name]):
                mean = H.mean(0)
                projected = (A @ mean).norm() / mean.norm()
                if other != t:
                    assert projected < 1e-5, (task.name, name, other, projected)


def test_sample_covariance_spans_the_least_variance_eigenvectors(llama, tmp_path):
    """With more rows than the width, S is full rank: A must span its r smallest eigenvectors."""
    spec = InitSpec(
        base_model=str(llama),
        target_modules=["q_proj"],
        r=3,
        lora_alpha=6,
        tasks=task_ids(3, 25, seed=1),
        params={"variant": "sample_covariance", "batch_size": 7},
    )
    run_init(spec, tmp_path / "out", base_model_dir=llama)
    rows = direct_rows(llama, spec)
    for t, task in enumerate(spec.tasks):
        for name, A in adapter_A(tmp_path / "out", task.name).items():
            H = torch.cat([h for i, h in enumerate(rows[name]) if i != t])
            assert H.shape[0] > H.shape[1]
            S = H.T @ H / (H.shape[0] - 1)
            values, vectors = torch.linalg.eigh(S)
            assert values[0] > 0  # full rank: the solution is unique up to a rotation of the frame
            V = vectors[:, :3]
            assert torch.allclose(A.T @ A, V @ V.T, atol=1e-4), name
            assert torch.allclose(A @ A.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
            assert torch.trace(A @ S @ A.T) == pytest.approx(float(values[:3].sum()), rel=1e-3)


def test_bert_adapter_loads_in_peft_trainable_with_exactly_our_A(bert, tmp_path):
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    spec = InitSpec(base_model=str(bert), target_modules=["query", "value"], r=4, lora_alpha=16, tasks=task_ids(2, 6, vocab=97))
    run_init(spec, tmp_path / "out", base_model_dir=bert)
    folder = tmp_path / "out" / "task0"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (4, 16, ["query", "value"])
    assert "OSRM" in (folder / "README.md").read_text()
    base = BertForSequenceClassification.from_pretrained(bert).eval()
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    model = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(bert), folder, is_trainable=True)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-6)  # B = 0: the base, unchanged
    saved = load_file(str(folder / "adapter_model.safetensors"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) == 8
    for key, value in saved.items():  # PEFT did not draw a new A: the loaded one is ours, bit for bit
        name = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        assert torch.equal(loaded[name].detach(), value), key
        assert loaded[name].requires_grad
    model.train()
    loss = model(input_ids=ids).logits.pow(2).sum()
    loss.backward()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    optimizer.step()
    B = next(p for n, p in model.named_parameters() if "lora_B" in n)
    assert B.abs().sum() > 0  # trains: B moves off zero (and A gets gradients from then on)


def test_texts_go_through_the_base_models_tokenizer(llama, tmp_path):
    texts = [[" ".join(f"w{(t * 30 + i + j) % 90}" for j in range(5)) for i in range(6)] for t in range(2)]
    spec = InitSpec(
        base_model=str(llama),
        target_modules=["q_proj"],
        r=2,
        lora_alpha=4,
        tasks=[{"name": f"t{t}", "texts": texts[t]} for t in range(2)],
    )
    run_init(spec, tmp_path / "texts", base_model_dir=llama)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    as_ids = spec.model_copy(
        update={"tasks": [TaskSamples(name=f"t{t}", input_ids=tokenizer(texts[t])["input_ids"]) for t in range(2)]}
    )
    assert tokenizer(texts[0][0])["input_ids"][0] == 2  # [BOS] added, as the model would see it in training
    run_init(as_ids, tmp_path / "ids", base_model_dir=llama)
    for t in ("t0", "t1"):
        from_texts = load_file(str(tmp_path / "texts" / t / "adapter_model.safetensors"))
        from_ids = load_file(str(tmp_path / "ids" / t / "adapter_model.safetensors"))
        assert from_texts.keys() == from_ids.keys()
        assert all(torch.equal(from_texts[k], from_ids[k]) for k in from_texts)


def base_spec(llama, **changes) -> dict:
    return {"base_model": str(llama), "target_modules": ["q_proj"], "r": 2, "lora_alpha": 4, "tasks": task_ids(2, 3), **changes}


def raised(data: dict) -> MergeError:
    with pytest.raises(ValidationError) as info:
        InitSpec.model_validate(data)
    return next(e["ctx"]["error"] for e in info.value.errors() if isinstance((e.get("ctx") or {}).get("error"), MergeError))


@pytest.mark.parametrize(
    "tasks, error",
    [
        ([{"name": "a", "texts": []}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a", "texts": ["  "]}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a", "texts": ["x"] * (MAX_SAMPLES_PER_TASK + 1)}, {"name": "b", "texts": ["x"]}], TooManySamplesError),
        ([{"name": "a", "texts": ["x"]}, {"name": "A", "texts": ["y"]}], InvalidSamplesError),
        ([{"name": "a", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a"}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a", "texts": ["x"], "input_ids": [[1]]}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a", "input_ids": [[]]}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "a", "file": "/x/a.csv"}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
        ([{"name": "../a", "texts": ["x"]}, {"name": "b", "texts": ["x"]}], InvalidSamplesError),
    ],
    ids=["no_samples", "blank", "too_many", "duplicate", "one_task", "none", "two_kinds", "empty_ids", "not_jsonl", "bad_name"],
)
def test_bad_tasks_are_refused_with_their_codes(llama, tasks, error):
    assert type(raised(base_spec(llama, tasks=tasks))) is error


@pytest.mark.parametrize("modules", [["nope"], ["embed_tokens"]])
def test_unknown_or_non_linear_modules_are_refused(llama, tmp_path, modules):
    spec = InitSpec.model_validate(base_spec(llama, target_modules=modules))
    with pytest.raises(UnknownModuleError, match=modules[0]):
        run_init(spec, tmp_path / "out", base_model_dir=llama)


def test_token_ids_outside_the_vocabulary_are_refused(llama, tmp_path):
    spec = InitSpec.model_validate(
        base_spec(llama, tasks=[{"name": "a", "input_ids": [[5, 500]]}, {"name": "b", "input_ids": [[1]]}])
    )
    with pytest.raises(InvalidSamplesError, match="vocabulary"):
        run_init(spec, tmp_path / "out", base_model_dir=llama)


def test_parse_jsonl():
    task = TaskSamples(name="a", file="/x/a.jsonl")
    assert parse_jsonl(b'{"text": "one"}\n\n{"text": "two"}\n{"text": "three"}\n', task, 2) == ["one", "two"]
    assert parse_jsonl(b'{"input_ids": [1, 2]}\n', task, 5) == [[1, 2]]
    with pytest.raises(InvalidSamplesError, match="line 2"):
        parse_jsonl(b'{"text": "one"}\nnot json\n', task, 5)
    with pytest.raises(InvalidSamplesError, match="line 1"):
        parse_jsonl(b'{"label": 1}\n', task, 5)
    with pytest.raises(InvalidSamplesError, match="no samples"):
        parse_jsonl(b"\n", task, 5)
    with pytest.raises(InvalidSamplesError, match="empty text"):
        parse_jsonl(b'{"text": " "}\n', task, 5)


def test_cli_init_reads_jsonl_files(llama, tmp_path, capsys):
    lines = "\n".join(json.dumps({"text": f"w{i} w{i + 1} w{i + 2}"}) for i in range(8))
    (tmp_path / "a.jsonl").write_text(lines)
    spec = base_spec(llama, tasks=[{"name": "a", "file": str(tmp_path / "a.jsonl")}, task_ids(2, 3)[1]])
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["init", str(tmp_path / "spec.json"), str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == ["a", "task1"]
    record = json.loads((tmp_path / "out" / "osrm_init.json").read_text())
    assert record["tasks"][0]["samples"] == 8 and record["params"]["samples_per_task"] == 100
    bad = base_spec(llama, tasks=[{"name": "a", "texts": []}, {"name": "b", "texts": ["x"]}])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["init", str(tmp_path / "bad.json"), str(tmp_path / "out2"), "--quiet"]) == 2
    assert "error [invalid_samples]" in capsys.readouterr().err


def test_model_card_and_config_name_the_base_models_revision(llama, tmp_path):
    """A pinned base (the service passes a Hub base model's commit sha): the card's snippet loads that commit."""
    spec = InitSpec.model_validate({**base_spec(llama, tasks=task_ids(2, 3)), "base_model_revision": "0123abcd" * 5})
    run_init(spec, tmp_path / "out", base_model_dir=llama)
    card = (tmp_path / "out" / "task0" / "README.md").read_text()
    assert f'from_pretrained("{llama}", revision="{"0123abcd" * 5}")' in card and f"at `{'0123abcd' * 5}`" in card
    assert json.loads((tmp_path / "out" / "task0" / "adapter_config.json").read_text())["revision"] == "0123abcd" * 5
    unpinned = InitSpec.model_validate(base_spec(llama, tasks=task_ids(2, 3)))
    run_init(unpinned, tmp_path / "plain", base_model_dir=llama)
    assert f'from_pretrained("{llama}")' in (tmp_path / "plain" / "task0" / "README.md").read_text()
