"""Environment variables sealed per row: plain dicts above the store, ciphertext in it."""

from __future__ import annotations

import pytest

from lamina.store import environment
from lamina.store.sealed import SealedError, Sealer

KEY = bytes(range(32))


def test_a_sealed_environment_opens_only_in_its_own_row() -> None:
    sealer = Sealer(KEY)
    stored = environment.seal(sealer, "fn", "$LATEST", {"TOKEN": "hunter2"})
    assert "hunter2" not in stored
    assert environment.unseal(sealer, "fn", "$LATEST", stored) == {"TOKEN": "hunter2"}
    with pytest.raises(SealedError, match="fn:1"):
        environment.unseal(sealer, "fn", "1", stored)
    with pytest.raises(SealedError, match=r"other:\$LATEST"):
        environment.unseal(sealer, "other", "$LATEST", stored)
    with pytest.raises(SealedError, match=r"secret\.key"):
        environment.unseal(Sealer(bytes(32)), "fn", "$LATEST", stored)


def test_a_row_stored_in_clear_is_read_as_it_is() -> None:
    assert environment.unseal(Sealer(KEY), "fn", "1", {"A": "b"}) == {"A": "b"}
