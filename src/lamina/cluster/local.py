"""The single-node implementations of the cluster seams (`cluster.api`): one node, every
lease its own, nothing to tell anyone."""

from __future__ import annotations

from lamina.cluster.api import ChangeHandler, LeaseLost


class LocalLeases:
    """Every lease is this node's: nobody else could hold it."""

    ttl_s = float("inf")

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def acquire(self, key: str) -> bool:
        self._held.add(key)
        return True

    async def release(self, key: str) -> None:
        self._held.discard(key)

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def on_lost(self, callback: LeaseLost) -> None:
        """Never called: a local lease cannot be lost."""


class NoFeed:
    """No other node reads the database: changes concern nobody else."""

    async def publish(self, area: str, key: str) -> None:
        return None

    def subscribe(self, handler: ChangeHandler) -> None:
        return None
