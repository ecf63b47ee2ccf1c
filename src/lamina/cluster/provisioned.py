"""Provisioned concurrency in a cluster: a version's provisioned environments are kept on one
node, the node the version hashes to among the healthy live nodes (as its on-demand
environments gather there), not on every node. Invoke routing sends invocations to where idle
environments are, so they are used from every node. When the live nodes change, each node
works out again which versions are its own: the new owner starts them, the old one stops
them. GetProvisionedConcurrencyConfig on any node counts what every node reports ready in its
heartbeat."""

from __future__ import annotations

import asyncio
import logging

from lamina.cluster.api import NodeDirectory
from lamina.cluster.hashing import owner
from lamina.cluster.tasks import cancel_and_wait
from lamina.models import FunctionConfig
from lamina.scheduler import Scheduler

log = logging.getLogger(__name__)

#: seconds between looks at the live nodes
LOOK_S = 1.0


class ProvisionedPlacement:
    """`ProvisionedConcurrency.on_change` and `.status` for a cluster node."""

    def __init__(self, scheduler: Scheduler, directory: NodeDirectory) -> None:
        self._scheduler = scheduler
        self._directory = directory
        #: what the control plane asks for, per version
        self._wanted: dict[tuple[str, str], tuple[FunctionConfig, int]] = {}
        #: how many this node keeps now, per version
        self._kept: dict[tuple[str, str], int] = {}
        self._nodes: tuple[str, ...] = ()
        self._task: asyncio.Task[None] | None = None

    def on_change(self, config: FunctionConfig, count: int) -> None:
        key = (config.name, config.version)
        if count:
            self._wanted[key] = (config, count)
        else:
            self._wanted.pop(key, None)
        self._apply(key, config, count)

    def status(self, config: FunctionConfig) -> tuple[int, str | None]:
        """(environments ready in the cluster, this node's failure to provision, if any)."""
        ready, failure = self._scheduler.provisioned(config)
        key = f"{config.name}:{config.version}"
        me = self._directory.self_name
        for node in self._directory.live():
            if node.name != me:
                ready += node.load.provisioned.get(key, 0)
        return ready, failure

    def _apply(self, key: tuple[str, str], config: FunctionConfig, count: int) -> None:
        owner = self._owner(key)
        mine = count if owner == self._directory.self_name else 0
        kept = self._kept.get(key, 0)
        if kept != mine:
            log.info(
                "provisioned concurrency of %s:%s: %d wanted, %d kept here (owner: %s)",
                *key,
                count,
                mine,
                owner,
            )
        if mine or kept:
            # Told again even when the count is what this node keeps: the scheduler may have
            # replaced the version's pool since (its configuration changed as another node's
            # change was read), and a new pool keeps nothing until it is told, as on a
            # single server, where every change of the settings tells the scheduler.
            self._scheduler.provision(config, mine)
        if mine:
            self._kept[key] = mine
        else:
            self._kept.pop(key, None)

    def _owner(self, key: tuple[str, str]) -> str | None:
        nodes = [n.name for n in self._directory.live() if n.healthy]
        return owner(f"{key[0]}:{key[1]}", nodes) or self._directory.self_name

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _follow(self) -> None:
        """When the live nodes change, place every version again."""
        while True:
            nodes = tuple(n.name for n in self._directory.live() if n.healthy)
            if nodes != self._nodes:
                self._nodes = nodes
                for key, (config, count) in list(self._wanted.items()):
                    self._apply(key, config, count)
            await asyncio.sleep(LOOK_S)
