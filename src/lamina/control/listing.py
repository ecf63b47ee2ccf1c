"""Pages of listings as Lambda's List operations return them: in a fixed order, after a
marker, up to a limit; and the markers themselves.

A marker is opaque to callers: the operation that issued it and the key of the last item
returned, base64url-encoded JSON. One that does not decode to that shape, or was issued by
another operation, is refused (Lambda's InvalidParameterValueException) rather than read as
"from the start": a client that mangled its marker must not be handed the first page again
and loop, or silently miss items.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from lamina.errors import InvalidParameterValueError, LaminaError
from lamina.models import LATEST

T = TypeVar("T")

#: the longest marker taken (ours are far shorter; a key is at most a few hundred characters)
MARKER_MAX_CHARS = 2048


def invalid_marker() -> LaminaError:
    return InvalidParameterValueError("Invalid Marker.")


def encode_marker(operation: str, key: str) -> str:
    """The marker of the page after the item whose key is `key`, for `operation`."""
    return base64.urlsafe_b64encode(json.dumps([operation, key]).encode()).decode().rstrip("=")


def decode_marker(
    operation: str,
    marker: object,
    error: Callable[[], LaminaError] = invalid_marker,
) -> str:
    """The key a marker of `operation` carries; `error()` is raised for anything else."""
    if not isinstance(marker, str) or not marker or len(marker) > MARKER_MAX_CHARS:
        raise error()
    try:
        raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError):
        raise error() from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or decoded[0] != operation
        or not isinstance(decoded[1], str)
    ):
        raise error()
    return decoded[1]


def qualifier_order(qualifier: str) -> tuple[int, int, str]:
    """Listing order: `$LATEST`, then versions by number, then aliases by name."""
    if qualifier == LATEST:
        return (0, 0, "")
    if qualifier.isdigit():
        return (1, int(qualifier), "")
    return (2, 0, qualifier)


def page(
    operation: str,
    items: Iterable[T],
    name: Callable[[T], str],
    limit: int,
    marker: str | None,
    order: Callable[[str], Any] = qualifier_order,
) -> tuple[list[T], str | None]:
    """The items after `marker` (as the previous page of `operation` gave it) in `order` of
    their `name`, at most `limit`, and the marker of the next page if there is one."""
    found = sorted(items, key=lambda item: order(name(item)))
    if marker:
        after = order(decode_marker(operation, marker))
        found = [item for item in found if order(name(item)) > after]
    taken = found[:limit]
    return taken, encode_marker(operation, name(taken[-1])) if len(found) > limit else None
