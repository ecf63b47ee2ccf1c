"""Pages of a function's per-qualifier resources (aliases, URL configs, event-invoke configs),
as Lambda's List operations return them: in a fixed order, after a marker, up to a limit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from lamina.models import LATEST

T = TypeVar("T")


def qualifier_order(qualifier: str) -> tuple[int, int, str]:
    """Listing order: `$LATEST`, then versions by number, then aliases by name."""
    if qualifier == LATEST:
        return (0, 0, "")
    if qualifier.isdigit():
        return (1, int(qualifier), "")
    return (2, 0, qualifier)


def page(
    items: Iterable[T],
    name: Callable[[T], str],
    limit: int,
    marker: str | None,
    order: Callable[[str], Any] = qualifier_order,
) -> tuple[list[T], str | None]:
    """The items after `marker` (a name, as the previous page's answer gave it) in `order` of
    their `name`, at most `limit`, and the marker of the next page if there is one."""
    found = sorted(items, key=lambda item: order(name(item)))
    if marker:
        after = order(marker)
        found = [item for item in found if order(name(item)) > after]
    taken = found[:limit]
    return taken, name(taken[-1]) if len(found) > limit else None
