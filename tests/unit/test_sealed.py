"""Secrets at rest: a sealed value unseals only with its key and its context, unaltered."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lamina.store.sealed import KEY_FILE, SealedError, Sealer


def test_round_trip_and_the_key_file(tmp_path: Path) -> None:
    sealer = Sealer.open(tmp_path)
    sealed = sealer.seal(b"s3cret", b"fn:$LATEST")
    assert b"s3cret" not in sealed
    assert sealer.unseal(sealed, b"fn:$LATEST") == b"s3cret"
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    # The same directory gives the same key back.
    assert Sealer.open(tmp_path).unseal(sealed, b"fn:$LATEST") == b"s3cret"
    assert sealer.seal(b"s3cret") != sealer.seal(b"s3cret")  # a fresh nonce each time


def test_refuses_altered_moved_or_foreign_values(tmp_path: Path) -> None:
    sealer = Sealer.open(tmp_path / "a")
    sealed = sealer.seal(b"value", b"row-1")
    with pytest.raises(SealedError):
        sealer.unseal(sealed, b"row-2")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedError):
        sealer.unseal(altered, b"row-1")
    with pytest.raises(SealedError):
        Sealer.open(tmp_path / "b").unseal(sealed, b"row-1")
    with pytest.raises(SealedError):
        sealer.unseal(b"plain text", b"row-1")
