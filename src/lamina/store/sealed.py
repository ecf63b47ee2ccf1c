"""Secrets at rest: authenticated encryption with a key kept in the data directory.

`Sealer` encrypts with AES-256-GCM under a 32-byte key read from (or, the first time,
created in) `<data-dir>/secret.key`, mode 0600. A sealed value is a version byte, the 12-byte
nonce and the ciphertext with its tag; `unseal` refuses anything altered (`SealedError`).
Whoever can read the key file can read the secrets: the key protects copies of the
databases (backups, a stray `cp`), not a compromised host. `KMSKeyArn` on a function is
accepted and recorded, but this key is what encrypts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "secret.key"
_VERSION = b"\x01"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class SealedError(ValueError):
    """A sealed value that is not one, or was sealed under another key or altered."""


class Sealer:
    """Seals and unseals bytes under one key. Thread-safe (it holds no mutable state)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValueError(f"a sealing key is {_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def open(cls, data_dir: Path) -> Sealer:
        """The data directory's sealer, creating its key (0600) on first use."""
        path = data_dir / KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(_KEY_BYTES)
            data_dir.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting at once must not each write a key of their own.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                key = path.read_bytes()
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
                    f.flush()
                    os.fsync(f.fileno())
        return cls(key)

    def seal(self, plain: bytes, context: bytes = b"") -> bytes:
        """Encrypt `plain`; `context` (e.g. the row it belongs to) must be given again to
        unseal, so a sealed value cannot be moved to another row unnoticed."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, context)

    def unseal(self, sealed: bytes, context: bytes = b"") -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SealedError("not a sealed value")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], context)
        except InvalidTag:
            raise SealedError("sealed under another key, or altered") from None
