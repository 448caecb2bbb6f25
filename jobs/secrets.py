"""Per-job Hub tokens at rest: Fernet-encrypted with the server's key, so Redis never holds plaintext.

The key comes from ``LORAMERGE_SECRET_KEY``; when unset (the embedded default) one is generated once
in the data dir with mode 0600 and shared by the API and its worker through that file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from jobs.settings import Settings


class TokenBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenBox:
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().encode())
        return cls(_key_file(settings.data_dir / "secret.key"))

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """The token, or None when it was sealed with another key (the job then runs without it)."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None


def _key_file(path: Path) -> bytes:
    """Create the key once, readable by its owner only; concurrent starters all end up reading the same
    file (link is atomic). A key file others may read is refused: it decrypts every stored token."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileExposedError(
            f"{path} may be read by other users (mode {stat.S_IMODE(mode):o}); it decrypts the stored Hub tokens: "
            f"chmod 600 {path} (and replace the key if others may have read it)"
        )
    return path.read_bytes().strip()


class KeyFileExposedError(ValueError):
    """``secret.key`` is readable by group or others."""
