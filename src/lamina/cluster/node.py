"""This node's part in its cluster (`lamina serve --cluster`): the NATS link and everything on
it, built and joined before the app is (a node that cannot join says why and exits), started
with the app's lifespan once its services are loaded, and closed after them.

What runs where (see docs/cluster.md): the control plane's state is in PostgreSQL (`store/`,
opened by `store.open`); code is shared through a JetStream object store (`cluster.code`);
the node directory, leases and change feed are JetStream KV buckets and subjects
(`cluster.nodes`, `cluster.leases`, `cluster.feed`); the async queue is a replicated KV
bucket (`cluster.async_store`, `cluster.adoption`); invocations are forwarded over NATS
request/reply (`cluster.routing`) and the Logs API reads every node's store the same way
(`cluster.logs`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from lamina.cluster.adoption import EventAdoption
from lamina.cluster.api import NodeLoad
from lamina.cluster.async_store import JetStreamEventStore
from lamina.cluster.blobs import NatsBlobStore
from lamina.cluster.feed import NatsFeed
from lamina.cluster.leases import NatsLeases
from lamina.cluster.nats import NatsLink
from lamina.cluster.nodes import NatsNodeDirectory
from lamina.cluster.routing import NatsRouter
from lamina.settings import ClusterSettings, Settings
from lamina.store.engine import describe

if TYPE_CHECKING:
    from lamina.api.context import AppState
    from lamina.cluster.logs import LogsResponder

log = logging.getLogger(__name__)

#: seconds a node waits for NATS to answer when it joins
JOIN_TIMEOUT_S = 10.0
#: seconds between re-reads of the whole control plane (the change feed is at most once)
RESYNC_S = 60.0


class ClusterNode:
    """Built by `lamina serve` before the app; `join` connects and registers the node."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        assert settings.cluster is not None
        self.settings = settings
        self.cluster: ClusterSettings = settings.cluster
        self.name = self.cluster.node_name
        self.endpoint = self.cluster.advertise_url or settings.endpoint_url
        self._engine = engine
        self.link = NatsLink(self.cluster.name)
        #: what the heartbeat reports of this node's load (the app sets it)
        self.load: Callable[[], NodeLoad] = NodeLoad
        self.directory = NatsNodeDirectory(
            self.link,
            self.name,
            self.endpoint,
            self.cluster.ttl_s,
            self.cluster.heartbeat_s,
            load=lambda: self.load(),
            problems=self.problems,
        )
        self.leases = NatsLeases(self.link, self.name, self.cluster.ttl_s)
        self.blobs = NatsBlobStore(self.link)
        self.feed = NatsFeed(self.link, self.name)
        self.event_store: JetStreamEventStore | None = None
        self.adoption: EventAdoption | None = None
        self.router: NatsRouter | None = None
        self._logs: LogsResponder | None = None
        self._database_problem: str | None = None
        self._watch: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Connect to NATS, open the shared buckets and register this node; raises
        `ClusterConfigError` saying why it cannot (NATS unreachable or without JetStream, a
        live node with this name)."""
        await self.link.connect(self.cluster.nats_urls, self.name, JOIN_TIMEOUT_S)
        try:
            await self.blobs.start()
            self.event_store = JetStreamEventStore(
                self.link.nc, self.link.js, self.cluster.name, self.name, self.link.replicas
            )
            self.adoption = EventAdoption(self.event_store, self.directory, self.cluster.ttl_s)
            await self.directory.start()
        except BaseException:
            await self.link.close()
            raise

    async def start_feed(self) -> None:
        """Hear the other nodes' changes (before the app's services load their state)."""
        await self.feed.start()
        self._resync = asyncio.get_running_loop().create_task(self._resync_now_and_then())

    async def _resync_now_and_then(self) -> None:
        """A change whose news was lost (NATS routes down between two servers) is applied
        within a minute anyway: every area is re-read, and only what differs is acted on."""
        while True:
            await asyncio.sleep(RESYNC_S)
            await self.feed.resync()

    async def start(self, state: AppState, local_idle: Callable[[str, str], int]) -> None:
        """Once the app's services are loaded: hold leases, answer forwarded invocations and
        log queries, and watch the database."""
        from lamina.api.invoke import run_forwarded
        from lamina.cluster.logs import join as join_logs

        await self.leases.start()
        self.router = NatsRouter(self.link.nc, self.directory, local_idle, prefix=self.cluster.name)
        await self.router.serve(lambda invoke: run_forwarded(state, invoke))
        state.router = self.router
        self._logs = await join_logs(self.link.nc, state, self.cluster, self.directory)
        self._watch = asyncio.get_running_loop().create_task(self._watch_database())

    def problems(self) -> list[str]:
        """What keeps this node from working as a full member now (empty: nothing)."""
        found = []
        if self.link.problem:
            found.append(self.link.problem)
        if self._database_problem:
            found.append(self._database_problem)
        return found

    async def _watch_database(self) -> None:
        """A cheap query every heartbeat: a node that lost its database says so in /health
        and `lamina nodes` until it is back."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self._ping_database)
                if self._database_problem:
                    log.warning("cluster: the database is back")
                self._database_problem = None
            except SQLAlchemyError as e:
                if self._database_problem is None:
                    since = time.strftime("%H:%M:%S")
                    self._database_problem = (
                        f"database unreachable since {since}: {describe(self.cluster.database_url)}"
                    )
                    log.warning("cluster: %s (%s)", self._database_problem, type(e).__name__)
            await asyncio.sleep(self.cluster.heartbeat_s)

    def _ping_database(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Leave: stop answering, give leases up, remove this node's entry, disconnect."""
        for task in (self._watch, self._resync):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.router is not None:
            await self.router.close()
        if self._logs is not None:
            await self._logs.close()
        await self.feed.close()
        await self.leases.close()
        await self.directory.close()
        await self.link.close()
