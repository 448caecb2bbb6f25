"""Source strings and the path rules (issue 11): the pure functions of jobs/sources.py, which the API
runs on every submission. The worker's staging is tested in tests/worker/test_local_sources.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.sources import (
    InvalidDestinationError,
    InvalidSourceError,
    LocalPathNotAllowedError,
    check_base_model,
    check_source,
    confine,
    destination_kind,
    parse_s3,
    real_path,
)
from support.factories import confinement_world, write_adapter_folder

FIELD = "adapters[0].source"


@pytest.fixture
def world(tmp_path):
    return confinement_world(tmp_path)


# -- source strings -------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["/roots/a\x00b", "/roots/a\nb", "file:///roots/a\x00", "/roots/ok\n"])
def test_control_characters_in_local_paths_are_invalid(world, source):
    with pytest.raises(InvalidSourceError, match="control characters"):
        check_source(source, None, local_roots=[world[0]], field=FIELD)


@pytest.mark.parametrize("source", ["org/name\n", "org/name\r", "a..b/c", "a--b/c", "org/na\x00me", " org/name", "org/name.git"])
def test_bad_hub_ids_are_refused(source):
    with pytest.raises(InvalidSourceError, match=r"not a Hub ID \(org/name"):
        check_source(source, None, local_roots=[], field=FIELD)


@pytest.mark.parametrize("revision", ["main\n", "v1\r", "a..b", "", "x" * 256, "ma in"])
def test_bad_revisions_are_refused(revision):
    with pytest.raises(InvalidSourceError, match="revision"):
        check_source("org/name", revision, local_roots=[], field=FIELD)


def test_good_strings_pass():
    assert check_source("org/name", "refs/pr/1", local_roots=[], field=FIELD) == "hub"
    assert check_source("s3://bucket/p/q", None, local_roots=[], field=FIELD) == "s3"
    assert destination_kind("hf://org/name") == "hub" and destination_kind("s3://bucket/out") == "s3"
    assert destination_kind(None) == destination_kind("local") == "local"


@pytest.mark.parametrize("destination", ["hf://org/name\n", "hf://a..b/c..d", "hf://a--b/c", "hf://org/name/extra"])
def test_bad_hub_destinations_are_refused(destination):
    with pytest.raises(InvalidDestinationError, match="hf://org/name"):
        destination_kind(destination)


@pytest.mark.parametrize("uri", ["s3://bucket/prefix\n", "s3://bucket\n"])
def test_s3_uris_with_a_trailing_newline_are_refused(uri):
    with pytest.raises(InvalidSourceError, match="s3://bucket/prefix"):
        parse_s3(uri, field="output.destination")


def test_relative_file_uri_is_refused(world, monkeypatch):
    monkeypatch.chdir(world[0])
    with pytest.raises(InvalidSourceError, match="absolute"):
        confine("file://adapter", [world[0]], field=FIELD)


# -- confine (the path rules) ----------------------------------------------------------------------
def test_real_path_agrees_with_realpath(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "rel").symlink_to("a/b")
    (tmp_path / "abs").symlink_to(tmp_path / "rel")
    (tmp_path / "a" / "up").symlink_to("..")
    for raw in ("abs", "abs/../b", "a/up/rel/x", "rel/../../a", "missing/../a/./b", "a/up/up/up"):
        path = tmp_path / raw
        assert real_path(path, roots=None, field=FIELD, shown=raw) == Path(os.path.realpath(path)), raw


def test_symlink_loops_are_refused(tmp_path):
    (tmp_path / "x").symlink_to(tmp_path / "y")
    (tmp_path / "y").symlink_to(tmp_path / "x")
    with pytest.raises(LocalPathNotAllowedError, match="levels of symlinks"):
        confine(str(tmp_path / "x"), [tmp_path], field=FIELD)


def test_symlink_policy_and_data_dir(world, tmp_path):
    roots, data, outside = world
    adapter = write_adapter_folder(roots / "real", seed=1)
    (roots / "inner-link").symlink_to(adapter)
    (roots / "out-link").symlink_to(outside)
    assert confine(str(roots / "inner-link"), [roots], field=FIELD) == adapter
    with pytest.raises(LocalPathNotAllowedError, match="LORAMERGE_LOCAL_SYMLINKS=refuse"):
        confine(str(roots / "inner-link"), [roots], field=FIELD, symlinks="refuse")
    with pytest.raises(LocalPathNotAllowedError, match="outside the allowed local roots"):
        confine(str(roots / "out-link"), [roots], field=FIELD)
    # A symlink above the roots (an operator's /data -> /mnt/data) is followed even with "refuse".
    (tmp_path / "alias").symlink_to(roots)
    assert confine(str(tmp_path / "alias" / "real"), [roots], field=FIELD, symlinks="refuse") == adapter
    # The data dir is never a source, even when an operator puts it under a root.
    inner_data = roots / "service-data"
    inner_data.mkdir()
    with pytest.raises(LocalPathNotAllowedError, match="data directory"):
        confine(str(inner_data), [roots], field=FIELD, data_dir=inner_data)
    with pytest.raises(LocalPathNotAllowedError, match="data directory"):
        confine(str(roots), [roots], field=FIELD, data_dir=roots)


# -- base models (issue 13) ------------------------------------------------------------------------
def test_base_model_follows_the_source_rules(world):
    roots = world[0]
    (roots / "base").mkdir()
    assert check_base_model("org/base", "v1.0", local_roots=[]) == "hub"
    assert check_base_model(str(roots / "base"), None, local_roots=[roots]) == "local"
    with pytest.raises(InvalidSourceError, match=r"output\.base_model: .*not a Hub ID"):
        check_base_model("org/../base", None, local_roots=[roots])
    with pytest.raises(InvalidSourceError, match=r"output\.base_model_revision: revision 'main\\n'"):
        check_base_model("org/base", "main\n", local_roots=[roots])
    with pytest.raises(LocalPathNotAllowedError, match=r"output\.base_model: .*outside the allowed local roots"):
        check_base_model("/etc", None, local_roots=[roots])
    with pytest.raises(InvalidSourceError, match=r"output\.base_model: .*s3:// is not supported"):
        check_base_model("s3://bucket/base", None, local_roots=[roots])


def test_a_revision_goes_only_with_a_hub_base_model(world):
    roots = world[0]
    with pytest.raises(InvalidSourceError, match=r"output\.base_model_revision: only a Hub base model has a revision") as caught:
        check_base_model(str(roots / "base"), "main", local_roots=[roots])
    assert caught.value.details == {"field": "output.base_model_revision"}


def test_a_relative_path_names_only_folders_within_the_roots(tmp_path, monkeypatch):
    """`team/a0` under the server's current folder but outside every root is not named to the tenant:
    it is taken for a Hub ID, as it would be on any other server (no probe of the server's disk)."""
    root = tmp_path / "root"
    (root / "team" / "a0").mkdir(parents=True)
    (tmp_path / "elsewhere" / "etc" / "ssh").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert check_source("etc/ssh", None, local_roots=[root], field="adapters[0].source") == "hub"
    with pytest.raises(InvalidSourceError, match=str(root / "team" / "a0")):
        check_source("team/a0", None, local_roots=[root], field="adapters[0].source")
    monkeypatch.chdir(root)  # the current folder within a root: its folders are meant
    with pytest.raises(InvalidSourceError, match="local sources must be absolute paths"):
        check_source("team/a0", None, local_roots=[root], field="adapters[0].source")


def test_a_relative_xdg_data_home_is_ignored(monkeypatch, tmp_path):
    from jobs.settings import default_data_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/x")  # the XDG rule: relative values are invalid, ignored
    assert default_data_dir() == tmp_path / ".local" / "share" / "loramerge"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "loramerge"
