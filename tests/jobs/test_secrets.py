"""secret.key decrypts every stored Hub token: created for its owner only, refused when others can read it."""

import stat

import pytest

from jobs.secrets import KeyFileExposedError, TokenBox
from jobs.settings import Settings, default_data_dir


def test_the_key_is_created_readable_by_its_owner_only(tmp_path):
    box = TokenBox.from_settings(Settings(data_dir=tmp_path / "data"))
    key = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert box.open(box.seal("hf_token")) == "hf_token"


def test_a_key_others_can_read_is_refused_with_the_fix(tmp_path):
    TokenBox.from_settings(Settings(data_dir=tmp_path))
    key = tmp_path / "secret.key"
    key.chmod(0o644)
    with pytest.raises(KeyFileExposedError, match="chmod 600") as exc:
        TokenBox.from_settings(Settings(data_dir=tmp_path))
    assert key.read_text().strip() not in str(exc.value)


def test_the_default_data_folder_is_the_users_not_the_current_one(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LORAMERGE_DATA_DIR", raising=False)
    assert default_data_dir() == tmp_path / "xdg" / "loramerge"
    assert Settings().data_dir == (tmp_path / "xdg" / "loramerge").resolve()
    monkeypatch.delenv("XDG_DATA_HOME")
    assert ".local/share/loramerge" in str(default_data_dir())
