"""JSON that comes from outside (request bodies, payloads, event patterns, function results),
parsed with a nesting limit.

Python's decoder and encoder recurse once per level of nesting: a document nested a hundred
thousand deep would raise `RecursionError` (a server error, not the caller's), and one just
under the interpreter's limit would parse here and fail later, wherever it is re-encoded.
`loads` refuses both with `NestingError`, a `ValueError` as any other malformed JSON is, so
every caller's existing "not JSON" answer covers it.
"""

from __future__ import annotations

import json
from typing import Any

from lamina.limits import JSON_MAX_DEPTH


class NestingError(ValueError):
    """JSON nested deeper than `JSON_MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {JSON_MAX_DEPTH} levels")


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads`, refusing documents nested deeper than `JSON_MAX_DEPTH` (`NestingError`).
    Raises `ValueError` (`UnicodeDecodeError` included) for anything that is not JSON."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise NestingError() from None
    # A document cannot nest deeper than it has brackets: counting them (at C speed) spares
    # the walk for nearly every document.
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    else:
        brackets = data.count(b"[") + data.count(b"{")
    if (
        brackets > JSON_MAX_DEPTH
        and isinstance(value, (dict, list))
        and depth_exceeds(value, JSON_MAX_DEPTH)
    ):
        raise NestingError()
    return value


def depth_exceeds(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether decoded JSON `value` nests deeper than `limit` levels: walked a level at a
    time, not recursively, and only its containers are kept from one level to the next."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below += [c for c in children if type(c) is dict or type(c) is list]
        level = below
        depth += 1
    return False
