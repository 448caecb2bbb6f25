"""Local confinement (issue 11): the worker's race-free staging of adapters and base models in
worker/sources/local.py. No service needed. The path rules it builds on (jobs/sources.py) are tested in
tests/jobs/test_sources.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from jobs.sources import LocalPathNotAllowedError
from merge_core.adapters import load_adapter
from merge_core.errors import AdapterTooLargeError, PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from support.factories import SECRET, SHAPES, confinement_world, write_adapter_folder
from worker.sources import local as local_sources
from worker.sources.local import Confinement, open_confined, stage_base_model, stage_local

FIELD = "adapters[0].source"


@pytest.fixture
def world(tmp_path):
    return confinement_world(tmp_path)


def _rules(world, symlinks="within_roots"):
    roots, data, _ = world
    return Confinement([roots], data, symlinks)


def _adapter_with(folder: Path, name: str, target: Path) -> Path:
    """A valid adapter folder whose ``name`` is replaced by a symlink to ``target``."""
    write_adapter_folder(folder, seed=1)
    (folder / name).unlink()
    (folder / name).symlink_to(target)
    return folder


def _assert_no_leak(exc: BaseException, into: Path) -> None:
    text = str(exc) + repr(getattr(exc, "details", {}))
    assert SECRET.decode() not in text and hashlib.sha256(SECRET).hexdigest() not in text
    assert not (into / "adapter_model.safetensors").exists()


# -- staging adapters --------------------------------------------------------------------------------
def test_stage_copies_and_pins_by_sha256(world, tmp_path):
    roots = world[0]
    adapter = write_adapter_folder(roots / "a", seed=1)
    into = tmp_path / "staging" / "0"
    resolved = stage_local(str(adapter), confinement=_rules(world), into=into, field=FIELD)
    assert resolved.path == into and sorted(os.listdir(into)) == ["adapter_config.json", "adapter_model.safetensors"]
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert resolved.revision == "sha256:" + hashlib.sha256(weights).hexdigest()
    assert (into / "adapter_model.safetensors").read_bytes() == weights
    assert load_adapter(into).modules.keys() == load_adapter(adapter).modules.keys()


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
@pytest.mark.parametrize("target", ["outside", "secret.key"])
def test_file_symlinked_out_of_the_roots_is_refused(world, tmp_path, name, target):
    roots, data, outside = world
    aim = outside / "secret.bin" if target == "outside" else data / "secret.key"
    folder = _adapter_with(roots / "evil", name, aim)
    into = tmp_path / "staging" / "0"
    with pytest.raises(LocalPathNotAllowedError, match="outside the allowed local roots") as caught:
        stage_local(str(folder), confinement=_rules(world), into=into, field=FIELD)
    assert caught.value.code == "local_path_not_allowed"
    _assert_no_leak(caught.value, into)


def test_secret_key_is_refused_even_with_the_data_dir_under_a_root(tmp_path):
    roots = tmp_path / "roots"
    data = roots / "data"
    data.mkdir(parents=True)
    (data / "secret.key").write_bytes(SECRET)
    folder = _adapter_with(roots / "evil", "adapter_model.safetensors", data / "secret.key")
    into = tmp_path / "staging"
    with pytest.raises(LocalPathNotAllowedError, match="data directory") as caught:
        stage_local(str(folder), confinement=Confinement([roots], data), into=into, field=FIELD)
    _assert_no_leak(caught.value, into)
    with pytest.raises(LocalPathNotAllowedError, match="data directory"):
        stage_local(str(data), confinement=Confinement([roots], data), into=into, field=FIELD)


def test_symlinked_folder_out_of_the_roots_is_refused(world, tmp_path):
    roots, _, outside = world
    write_adapter_folder(outside / "adapter", seed=2)
    (roots / "linked").symlink_to(outside / "adapter")
    into = tmp_path / "staging"
    with pytest.raises(LocalPathNotAllowedError) as caught:
        stage_local(str(roots / "linked"), confinement=_rules(world), into=into, field=FIELD)
    _assert_no_leak(caught.value, into)


def test_symlinks_within_the_roots_follow_the_setting(world, tmp_path):
    roots = world[0]
    shared = write_adapter_folder(roots / "shared", seed=3)
    folder = _adapter_with(roots / "uses-shared", "adapter_model.safetensors", Path("../shared/adapter_model.safetensors"))
    resolved = stage_local(str(folder), confinement=_rules(world), into=tmp_path / "s0", field=FIELD)
    assert resolved.revision == "sha256:" + hashlib.sha256((shared / "adapter_model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(LocalPathNotAllowedError, match="follows none"):
        stage_local(str(folder), confinement=_rules(world, "refuse"), into=tmp_path / "s1", field=FIELD)


def test_a_hard_link_is_an_ordinary_file(world, tmp_path):
    roots, _, outside = world
    source = write_adapter_folder(outside / "adapter", seed=4)
    folder = roots / "hard"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        os.link(source / name, folder / name)
    resolved = stage_local(str(folder), confinement=_rules(world, "refuse"), into=tmp_path / "s", field=FIELD)
    assert resolved.revision.startswith("sha256:")


def test_a_hard_link_into_the_data_dir_is_refused(world, tmp_path):
    """The outside tester's case: secret.key hard-linked under a root, as an adapter's weights and as a
    base model's extra file. A path check cannot see it; the inode lookup does."""
    roots, data, _ = world
    folder = write_adapter_folder(roots / "hard-secret", seed=5)
    (folder / "adapter_model.safetensors").unlink()
    os.link(data / "secret.key", folder / "adapter_model.safetensors")
    into = tmp_path / "s"
    with pytest.raises(LocalPathNotAllowedError, match="hard link to a file of the service's data dir") as caught:
        stage_local(str(folder), confinement=_rules(world), into=into, field=FIELD)
    _assert_no_leak(caught.value, into)
    base = _base_model(roots / "base-hard")
    os.link(data / "secret.key", base / "extra.txt")
    with pytest.raises(LocalPathNotAllowedError, match="hard link"):
        stage_base_model(str(base), confinement=_rules(world), into=tmp_path / "staged-base").close()


def test_a_swap_between_check_and_open_is_caught(world, tmp_path, monkeypatch):
    """The path is checked, then a folder on it becomes a symlink out of the roots before the open."""
    roots, _, outside = world
    folder = write_adapter_folder(roots / "victim" / "a", seed=5)
    checked = {"p": (folder / "adapter_model.safetensors").resolve()}
    monkeypatch.setattr(Confinement, "path", lambda self, path, *, field, shown: checked["p"])
    write_adapter_folder(outside / "a", seed=6)
    os.rename(roots / "victim", tmp_path / "moved")
    (roots / "victim").symlink_to(outside)
    with pytest.raises(LocalPathNotAllowedError, match="changed into a symlink"):
        open_confined(folder / "adapter_model.safetensors", _rules(world), field=FIELD, shown="x")


def test_fifos_oversize_and_pickles(world, tmp_path):
    roots = world[0]
    fifo = write_adapter_folder(roots / "fifo", seed=1)
    (fifo / "adapter_model.safetensors").unlink()
    os.mkfifo(fifo / "adapter_model.safetensors")
    with pytest.raises(SourceNotFoundError, match="not a regular file"):  # and it does not hang
        stage_local(str(fifo), confinement=_rules(world), into=tmp_path / "s0", field=FIELD)
    big = write_adapter_folder(roots / "big", seed=1)
    with pytest.raises(AdapterTooLargeError):
        stage_local(str(big), confinement=_rules(world), into=tmp_path / "s1", field=FIELD, max_bytes=100)
    assert not (tmp_path / "s1" / "adapter_model.safetensors").exists()
    pickled = write_adapter_folder(roots / "pickled", seed=1)
    os.rename(pickled / "adapter_model.safetensors", pickled / "adapter_model.bin")
    with pytest.raises(PickleRefusedError):
        stage_local(str(pickled), confinement=_rules(world), into=tmp_path / "s2", field=FIELD)


# -- base models -------------------------------------------------------------------------------------
def _base_model(folder: Path, *, sharded: bool = False) -> Path:
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    weights = {f"{name}.weight": torch.randn(*shape, generator=gen) for name, shape in SHAPES.items()}
    if sharded:
        (folder / "shards").mkdir()
        weight_map = {}
        for i, (name, tensor) in enumerate(weights.items()):
            save_file({name: tensor}, str(folder / "shards" / f"part-{i}.safetensors"))
            weight_map[name] = f"shards/part-{i}.safetensors"
        (folder / "model.safetensors.index.json").write_text(__import__("json").dumps({"weight_map": weight_map}))
    else:
        save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    return folder


def _merged_model(adapter: Path, base: str, out: Path) -> set[str]:
    spec = {
        "method": "task_arithmetic",
        "adapters": [{"source": str(adapter)}],
        "output": {"kind": "merged_model", "base_model": base},
    }
    return set(run_merge(parse_spec(spec), out).files)


@pytest.mark.parametrize("sharded", [False, True])
def test_staged_base_model_merges_like_the_folder(world, tmp_path, sharded):
    roots = world[0]
    base = _base_model(roots / "base", sharded=sharded)
    adapter = write_adapter_folder(roots / "a", seed=1)
    with stage_base_model(str(base), confinement=_rules(world), into=tmp_path / "staged-base") as staged:
        assert staged.path == tmp_path / "staged-base"
        files = _merged_model(adapter, str(staged.path), tmp_path / "via-staging")
    assert files == _merged_model(adapter, str(base), tmp_path / "direct")
    for name in files - {"merge_spec.json", "README.md", "merge_diagnostics.json"}:
        assert (tmp_path / "via-staging" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name


@pytest.mark.parametrize("attack", ["config-to-secret", "shard-to-outside", "index-dotdot", "index-absolute", "folder-link"])
def test_base_model_files_out_of_the_roots_are_refused(world, tmp_path, attack):
    roots, data, outside = world
    base = _base_model(roots / "base", sharded=attack.startswith(("index", "shard")))
    index = base / "model.safetensors.index.json"
    if attack == "config-to-secret":  # merged_model copies config.json into the result: a read primitive
        (base / "config.json").unlink()
        (base / "config.json").symlink_to(data / "secret.key")
    elif attack == "shard-to-outside":
        (base / "shards" / "part-0.safetensors").unlink()
        (base / "shards" / "part-0.safetensors").symlink_to(outside / "secret.bin")
    elif attack == "index-dotdot":
        index.write_text(index.read_text().replace("shards/part-0", "../../outside/secret"))
    elif attack == "index-absolute":
        index.write_text(index.read_text().replace("shards/part-0.safetensors", str(outside / "secret.bin")))
    else:
        (roots / "base-link").symlink_to(outside)
        base = roots / "base-link"
    with pytest.raises(LocalPathNotAllowedError) as caught:
        stage_base_model(str(base), confinement=_rules(world), into=tmp_path / "staged-base").close()
    assert SECRET.decode() not in str(caught.value)


def test_staged_base_model_without_proc_checks_in_place(world, tmp_path, monkeypatch):
    base = _base_model(world[0] / "base")
    monkeypatch.setattr(local_sources, "PROC_FD", tmp_path / "no-proc")
    with stage_base_model(str(base), confinement=_rules(world), into=tmp_path / "staged") as staged:
        assert staged.path == base and not (tmp_path / "staged").exists()
