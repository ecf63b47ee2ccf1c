"""JSON from outside: parsed with a nesting limit, refused as malformed past it."""

from __future__ import annotations

import json

import pytest

from lamina import untrusted_json
from lamina.limits import JSON_MAX_DEPTH


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "[1]" + "}" * (depth - 1)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_at_the_limit_parses_past_it_is_refused(as_bytes: bool) -> None:
    ok, deep = nested(JSON_MAX_DEPTH), nested(JSON_MAX_DEPTH + 1)
    assert untrusted_json.loads(ok.encode() if as_bytes else ok) == json.loads(ok)
    with pytest.raises(untrusted_json.NestingError):
        untrusted_json.loads(deep.encode() if as_bytes else deep)


def test_far_past_the_limit_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        untrusted_json.loads("[" * 200_000 + "]" * 200_000)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 5000, "t": ["{" * 5000]})
    assert untrusted_json.loads(text)["s"] == "[" * 5000


def test_wide_documents_are_not_deep() -> None:
    wide = json.dumps([{"a": [i]} for i in range(5000)])
    assert len(untrusted_json.loads(wide)) == 5000


def test_malformed_json_is_a_value_error() -> None:
    for bad in (b"{", b"\xff", b"[1,]", b"1" * 5000):
        with pytest.raises(ValueError):
            untrusted_json.loads(bad)
