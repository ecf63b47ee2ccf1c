"""Rendezvous (highest-random-weight) hashing: which live node a key belongs to. Invoke
routing concentrates a version's environments on its node with it (`cluster.routing`), and
ownership deals jobs out with it (`cluster.ownership`). When a node leaves, only its keys move;
when one joins, it takes a fair share from each."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(key: str, node: str) -> int:
    """The node's 64-bit rendezvous weight for `key`: the same on every node and across
    restarts (BLAKE2b, not Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{key}\x00{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, nodes: Iterable[str]) -> str | None:
    """The node `key` hashes to among `nodes` (highest random weight; ties, practically
    impossible, by name); None when there are none."""
    best: tuple[int, str] | None = None
    for node in nodes:
        candidate = (weight(key, node), node)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
