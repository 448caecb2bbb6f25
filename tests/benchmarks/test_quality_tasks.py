"""The quality benchmark's data: splits stratified by label and free of repeated texts, WordNet texts
without the word they define, the lexicographer names read from the file given."""

from collections import Counter

import pytest

from benchmarks.quality.tasks import _TASKS, _lexnames, allocate, definition, load_task, unique


@pytest.mark.parametrize("name", ["tweet_sentiment", "bbc_topic"])
def test_splits_keep_the_label_proportions(name):
    texts, labels = unique(*_TASKS[name]())
    full = Counter(labels)
    data = load_task(name, n_train=2000, n_val=200, n_test=200)
    for split in (data.train, data.val, data.test):
        counts = Counter(split[1])
        for i, label in enumerate(data.labels):
            assert abs(counts[i] - len(split[1]) * full[label] / len(labels)) < 1, (name, label)
    assert not set(data.test[0]) & set(data.train[0]) and not set(data.val[0]) & set(data.train[0])


def test_allocate_follows_the_proportions_and_the_counts():
    assert allocate(10, [30, 60, 10]) == [3, 6, 1]
    assert allocate(4, [1, 1, 1, 1, 100]) == [0, 0, 0, 0, 4]
    assert allocate(7, [3, 3, 1]) == [3, 3, 1]  # all of it: no class gives more than it has


def test_repeated_texts_are_kept_once_and_conflicting_ones_dropped():
    assert unique(["a", "b", "a", "c", "c"], ["x", "y", "x", "x", "y"]) == (["a", "b"], ["x", "y"])


def test_lexnames_reads_the_file_it_is_given(tmp_path):
    path = tmp_path / "lexnames"
    path.write_text("03\tnoun.Tops\t1\n04\tnoun.custom\t1\n")
    assert _lexnames(path) == {3: "noun.Tops", 4: "noun.custom"}
    assert _lexnames(tmp_path / "missing")[13] == "noun.food"  # lexnames(5WN) when the file is absent


def test_wordnet_text_is_the_definition_without_the_word():
    gloss = ' the destruction of an enemy plane; a kill counts once; "the pilot reported two kills"  '
    assert definition(gloss, ["kill", "killing(a)"]) == "the destruction of an enemy plane; a ___ counts once"
