"""Safe extraction of a result tar: whatever the archive holds, nothing lands outside the target folder,
and the folder appears only when the whole tar is good."""

from __future__ import annotations

import io
import tarfile

import pytest

from loramerge_client.artifact import IterReader, extract
from loramerge_client.errors import InvalidResponseError, UnsafeArtifactError

TOP = "loramerge-3f2c"


def tar_of(*members: tuple[str, bytes | None, bytes]) -> bytes:
    """(name, type, content-or-linkname) members; type None: a regular file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind is None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = kind
                info.linkname = payload.decode()
                tar.addfile(info)
    return buffer.getvalue()


def chunks(data: bytes, size: int = 7) -> IterReader:
    return IterReader(iter([data[i : i + size] for i in range(0, len(data), size)]))


GOOD = [(f"{TOP}/adapter_config.json", None, b'{"r": 4}'), (f"{TOP}/sub/merge_diagnostics.json", None, b"[]" * 5000)]


def test_good_tar_extracts_without_its_top_folder(tmp_path):
    out = extract(chunks(tar_of(*GOOD)), tmp_path / "merged", expect_files=[{"path": "adapter_config.json", "size": 8}])
    assert out == tmp_path / "merged"
    assert (out / "adapter_config.json").read_bytes() == b'{"r": 4}'
    assert (out / "sub" / "merge_diagnostics.json").read_bytes() == b"[]" * 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no staging folder left


def test_an_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "merged").mkdir()
    extract(chunks(tar_of(*GOOD)), tmp_path / "merged")
    assert (tmp_path / "merged" / "adapter_config.json").is_file()


def test_a_folder_with_files_is_refused(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        extract(chunks(tar_of(*GOOD)), tmp_path / "merged")
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["keep"]


@pytest.mark.parametrize(
    ("member", "error"),
    [
        pytest.param(("/etc/evil", None, b"x"), UnsafeArtifactError, id="absolute path"),
        pytest.param((f"{TOP}/../evil", None, b"x"), UnsafeArtifactError, id="dot-dot"),
        pytest.param((f"{TOP}/a/../../evil", None, b"x"), UnsafeArtifactError, id="dot-dot deeper"),
        pytest.param((f"{TOP}/link", tarfile.SYMTYPE, b"/etc/passwd"), UnsafeArtifactError, id="symlink out"),
        pytest.param((f"{TOP}/link", tarfile.SYMTYPE, b"adapter_config.json"), UnsafeArtifactError, id="symlink in"),
        pytest.param((f"{TOP}/hard", tarfile.LNKTYPE, b"/etc/passwd"), UnsafeArtifactError, id="hard link"),
        pytest.param((f"{TOP}/dev", tarfile.CHRTYPE, b""), UnsafeArtifactError, id="device"),
        pytest.param((f"{TOP}/fifo", tarfile.FIFOTYPE, b""), UnsafeArtifactError, id="fifo"),
        pytest.param(("elsewhere/evil", None, b"x"), UnsafeArtifactError, id="another top folder"),
        pytest.param((f"{TOP}/adapter_config.json", None, b"again"), UnsafeArtifactError, id="duplicate"),
        pytest.param((f"{TOP}\\..\\evil", None, b"x"), UnsafeArtifactError, id="backslashes"),
    ],
)
def test_unsafe_members_refuse_the_whole_archive(tmp_path, member, error):
    target = tmp_path / "out" / "merged"
    with pytest.raises(error):
        extract(chunks(tar_of(*GOOD, member)), target)
    assert not target.exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the staging folder is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_cut_off_or_garbled_tar_leaves_nothing(tmp_path):
    data = tar_of(*GOOD)
    for broken in (data[:700], data[:1024], data[:1500], data[:2048], b"not a tar at all" * 64):  # 1024: between members
        with pytest.raises((InvalidResponseError, UnsafeArtifactError)):
            extract(chunks(broken), tmp_path / "merged")
        assert not (tmp_path / "merged").exists() and list(tmp_path.iterdir()) == []


def test_files_the_result_lists_must_be_there_with_their_size(tmp_path):
    with pytest.raises(InvalidResponseError, match="lacks"):
        extract(chunks(tar_of(*GOOD)), tmp_path / "a", expect_files=[{"path": "adapter_model.safetensors", "size": 1}])
    with pytest.raises(InvalidResponseError, match="bytes"):
        extract(chunks(tar_of(*GOOD)), tmp_path / "b", expect_files=[{"path": "adapter_config.json", "size": 9}])
    assert list(tmp_path.iterdir()) == []
