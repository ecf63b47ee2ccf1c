"""Console session tokens: sealed, expiring, bound to their purpose; the cookie helpers."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from lamina.auth.console_session import (
    MAX_TOKEN_CHARS,
    SessionTokens,
    token_in,
    without_token,
)
from lamina.auth.sigv4 import ExpiredToken, MissingAuthenticationToken
from lamina.store.sealed import Sealer

NOW = 1_800_000_000.0


def tokens(key: bytes | None = None, ttl_s: int = 3600) -> SessionTokens:
    return SessionTokens(Sealer(key or secrets.token_bytes(32)), ttl_s, clock=lambda: NOW)


def test_a_token_names_its_key_until_it_expires() -> None:
    key = secrets.token_bytes(32)
    token, session = tokens(key, ttl_s=900).mint("AKIAEXAMPLE")
    assert session.access_key_id == "AKIAEXAMPLE" and session.expires == NOW + 900
    assert "AKIAEXAMPLE" not in token and "=" not in token
    # Any holder of the same sealing key (another node of a cluster) reads it.
    assert tokens(key).check(token) == session
    later = SessionTokens(Sealer(key), clock=lambda: NOW + 900)
    with pytest.raises(ExpiredToken):
        later.check(token)


def test_altered_foreign_and_junk_tokens_are_no_session() -> None:
    key = secrets.token_bytes(32)
    made = tokens(key)
    token, _ = made.mint("AKIAEXAMPLE")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[20] ^= 0x40
    altered = base64.urlsafe_b64encode(bytes(raw)).decode()
    sealer = Sealer(key)
    # The same key's seal of the same content, for another purpose (a key's secret is
    # sealed with its id as context): not a token.
    plain = json.dumps({"k": "AKIAEXAMPLE", "e": NOW + 60}).encode()
    foreign = base64.urlsafe_b64encode(sealer.seal(plain, b"AKIAEXAMPLE")).decode()
    not_an_object = base64.urlsafe_b64encode(
        sealer.seal(b"[1]", b"lamina-console-session")
    ).decode()
    wrong_types = base64.urlsafe_b64encode(
        sealer.seal(b'{"k": 1, "e": "soon"}', b"lamina-console-session")
    ).decode()
    junk = [
        altered,
        foreign,
        not_an_object,
        wrong_types,
        tokens().mint("AKIAEXAMPLE")[0],  # another server's
        "",
        "%%%",
        "\u00e9t\u00e9",
        "A" * (MAX_TOKEN_CHARS + 1),
        "AAAA",
    ]
    for bad in junk:
        with pytest.raises(MissingAuthenticationToken):
            made.check(bad)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("lamina-console=abc", "abc"),
        ("a=1; lamina-console=abc; b=2", "abc"),
        ("a=1, lamina-console=abc", "abc"),  # two Cookie headers, joined
        ("lamina-consoles=abc", None),
        ("lamina-console", None),
        ("", None),
        ("lamina-console=", ""),
    ],
)
def test_token_in(header: str, token: str | None) -> None:
    assert token_in(header) == token


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("a=1; lamina-console=abc; b=2", "a=1; b=2"),
        ("lamina-console=abc", ""),
        ("a=1", "a=1"),
        ("lamina-consoles=x;lamina-console=y", "lamina-consoles=x"),
    ],
)
def test_without_token(header: str, kept: str) -> None:
    assert without_token(header) == kept
