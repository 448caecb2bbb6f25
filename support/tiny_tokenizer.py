"""A word-level tokenizer built locally (no download) for the tiny test models: ``w0 .. w{n}`` are
tokens, anything else is ``[UNK]``; saved with ``save_pretrained`` so ``AutoTokenizer`` loads it."""

from __future__ import annotations

from pathlib import Path


def make_word_tokenizer(folder: Path, vocab_size: int, *, bos: bool = False) -> Path:
    """Ids 0-2 are ``[PAD]``, ``[UNK]``, ``[BOS]``; ``w{i}`` is id ``i + 3`` (``vocab_size`` ids in all).
    ``bos``: prepend ``[BOS]`` to every text (as Llama tokenizers do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, **{f"w{i}": i + 3 for i in range(vocab_size - 3)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]")
    fast.save_pretrained(folder)
    return folder
