"""Keeping every node's in-memory control state in step with the shared database.

Each service keeps what it serves from in memory (functions and their settings, roles, rules,
mappings, brokers, routes, keys), filled at start. In a cluster the database is shared and
another node may change it: a writer, once its change is committed, tells the other nodes
(`tell`: the area and key of `cluster.api.AREAS`), and each of them re-reads that key through
the service's `refresh` (`ChangeApplier`), which updates the service's caches and fires its
local subscribers as a change made there would, and only for what actually changed.

On one machine the feed is `cluster.local.NoFeed`: nobody else to tell.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from lamina.cluster.api import ChangeFeed

log = logging.getLogger(__name__)

#: what a write is answered when another node's write of the same key reached the database
#: first (its constraints catch what a node's in-memory checks could not see)
CONCURRENT_CHANGE = (
    "The resource was changed by another request at the same time; read it again and retry."
)

#: `refresh(key)`: re-read `key` ("*": the whole area) from the database
Refresh = Callable[[str], Awaitable[None]]


async def tell(feed: ChangeFeed, area: str, key: str) -> None:
    """Tell the other nodes that `area`/`key` changed. A feed that cannot is logged, not the
    writer's failure: the change is committed, and a node that missed it catches up when it
    resynchronises ("*")."""
    try:
        await feed.publish(area, key)
    except Exception as e:
        log.warning("could not tell the other nodes that %s %s changed: %s", area, key, e)


class ChangeApplier:
    """The `ChangeFeed` handler of a node: each area's change goes to its service's
    `refresh`. A refresh that fails is logged (the node keeps serving what it had)."""

    def __init__(self, areas: Mapping[str, Refresh]) -> None:
        self._areas = areas

    async def __call__(self, area: str, key: str) -> None:
        refresh = self._areas.get(area)
        if refresh is None:
            log.warning("a change of unknown area %r (key %r) was ignored", area, key)
            return
        try:
            await refresh(key)
        except Exception:
            log.exception("could not apply another node's change of %s %s", area, key)

    async def resync(self) -> None:
        """Re-read every area whole (after missed changes: a reconnect, say)."""
        for area in self._areas:
            await self(area, "*")
