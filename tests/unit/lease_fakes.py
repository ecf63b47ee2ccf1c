"""Fakes of the cluster seams that ownership uses (`cluster.api`): leases several nodes share
in memory, with time the test moves, and a directory whose live nodes the test sets.

A node's leases never expire while it renews them (a node renews in the background); a node
`kill`ed or `cut_off` stops renewing, and its leases expire `ttl_s` later. A cut-off node is
alive but cannot reach the lease service: it cannot acquire, and it is told (`on_lost`) of each
lease it held once that lease has expired, as a real one finds out when its renewal fails.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina.cluster.api import LeaseLost, NodeInfo


class LeaseBoard:
    """The shared lease service: who holds which key, and since when each silent node has
    not renewed."""

    def __init__(self, ttl_s: float = 3.0, clock: Callable[[], float] | None = None) -> None:
        self.ttl_s = ttl_s
        #: the time the test moves (`advance`), unless a clock is given
        self.now = 0.0
        self._clock = clock
        self.holders: dict[str, str] = {}
        self.silent_since: dict[str, float] = {}
        self.dead: set[str] = set()
        self.nodes: dict[str, FakeLeases] = {}
        #: every successful acquire, in order: (node, key)
        self.acquired: list[tuple[str, str]] = []

    def time(self) -> float:
        return self._clock() if self._clock is not None else self.now

    def leases(self, node: str) -> FakeLeases:
        self.nodes[node] = FakeLeases(self, node)
        return self.nodes[node]

    def holder(self, key: str) -> str | None:
        node = self.holders.get(key)
        if node is None:
            return None
        since = self.silent_since.get(node)
        if since is not None and self.time() >= since + self.ttl_s:
            return None
        return node

    def kill(self, node: str) -> None:
        """The node's process is gone: nothing renews its leases, nobody is told."""
        self.silent_since[node] = self.time()
        self.dead.add(node)

    def cut_off(self, node: str) -> None:
        """The node runs on but cannot reach the lease service."""
        self.silent_since[node] = self.time()

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        await self.expire()

    async def expire(self) -> None:
        """What each cut-off node's failing renewal finds out: its expired leases are lost."""
        for node, since in list(self.silent_since.items()):
            if node not in self.dead and self.time() >= since + self.ttl_s:
                await self.nodes[node].lose_all()


class FakeLeases:
    """One node's `Leases` on a `LeaseBoard`."""

    def __init__(self, board: LeaseBoard, node: str) -> None:
        self.board = board
        self.node = node
        self._held: set[str] = set()
        self._lost: list[LeaseLost] = []

    @property
    def ttl_s(self) -> float:
        return self.board.ttl_s

    async def acquire(self, key: str) -> bool:
        if self.node in self.board.silent_since:
            raise ConnectionError("the lease service cannot be reached")
        holder = self.board.holder(key)
        if holder is not None and holder != self.node:
            return False
        self.board.holders[key] = self.node
        if key not in self._held:
            self.board.acquired.append((self.node, key))
        self._held.add(key)
        return True

    async def release(self, key: str) -> None:
        self._held.discard(key)
        if self.board.holders.get(key) == self.node:
            del self.board.holders[key]

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def on_lost(self, callback: LeaseLost) -> None:
        self._lost.append(callback)

    async def lose_all(self) -> None:
        for key in sorted(self._held):
            self._held.discard(key)
            if self.board.holders.get(key) == self.node:
                del self.board.holders[key]
            for callback in self._lost:
                await callback(key)


class FakeDirectory:
    """A `NodeDirectory` whose live nodes are the names in `view` (a set the test changes;
    several nodes may share one)."""

    def __init__(self, name: str, view: set[str]) -> None:
        self._name = name
        self.view = view

    @property
    def self_name(self) -> str:
        return self._name

    def live(self) -> list[NodeInfo]:
        return [NodeInfo(n, f"http://{n}.invalid", 0.0, 0.0) for n in sorted(self.view)]

    async def start(self) -> None:
        self.view.add(self._name)

    async def close(self) -> None:
        self.view.discard(self._name)
