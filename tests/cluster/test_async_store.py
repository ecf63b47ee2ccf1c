"""The async queue's store on NATS JetStream (`cluster.async_store`) and the adoption of a dead
node's events (`cluster.adoption`), on the test's own 3-server NATS cluster.

The store's contract runs against both stores (SQLite and JetStream); the rest is JetStream's
own: events are a node's own, replicated (they survive kill -9 of the NATS server the client
uses, the bucket's leader), an unreachable NATS is an OSError, and a dead node's events move
to one live node exactly once even when two adopters race."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import nats
import pytest
from nats.aio.client import Client
from tests.cluster._engines import NatsCluster, nats_cluster

from lamina.cluster.adoption import EventAdoption
from lamina.cluster.api import NodeDirectory, NodeInfo
from lamina.cluster.async_store import JetStreamEventStore
from lamina.cluster.hashing import owner as rendezvous_owner
from lamina.events.async_queue import AsyncQueue
from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.observability import Metrics
from lamina.settings import Settings
from lamina.store.event_queue import DroppedEvent, EventStore, QueuedEvent, SqliteEventStore


def event(i: int, payload: bytes = b'{"i": 1}', at: float = 0.0) -> QueuedEvent:
    return QueuedEvent(f"id-{i}", "fn", None, payload, enqueued_at=at or 1000.0 + i)


async def connect(urls: Sequence[str], **options: Any) -> Client:
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.2)
    return await nats.connect(servers=list(urls), **options)


def cluster_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def jetstream_store(
    urls: Sequence[str], cluster: str, node: str = "a"
) -> AsyncIterator[JetStreamEventStore]:
    nc = await connect(urls)
    # as a node's (NatsLink.REQUEST_TIMEOUT_S): a stream electing a leader answers late
    store = JetStreamEventStore(nc, nc.jetstream(timeout=10.0), cluster, node)
    try:
        yield store
    finally:
        await store.close()
        await nc.close()


class Stores:
    """Opens the store under test (the same data each time) for one test."""

    def __init__(self, kind: str, tmp_path: Path, nats3: NatsCluster) -> None:
        self.kind = kind
        self._path = tmp_path / "events.db"
        self._urls = nats3.urls
        self._cluster = cluster_name()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[EventStore]:
        if self.kind == "sqlite":
            sqlite = SqliteEventStore(self._path)
            sqlite.open()
            try:
                yield sqlite
            finally:
                await sqlite.close()
            return
        async with jetstream_store(self._urls, self._cluster) as store:
            yield store


@pytest.fixture(params=["sqlite", "jetstream"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, nats3: NatsCluster) -> Stores:
    return Stores(request.param, tmp_path, nats3)


# -- the EventStore contract, on both stores ----------------------------------------------


def test_stored_events_load_back_oldest_first_with_every_field(stores: Stores) -> None:
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=abcdef01:3"

    async def main() -> list[QueuedEvent]:
        async with stores.open() as store:
            await store.add([event(2), event(1)])
            await store.add([QueuedEvent("q", "other", "live", b"[]", 999.0, 1, 5.0, trace)])
        async with stores.open() as store:
            return await store.load(1 << 20)

    loaded = asyncio.run(main())
    assert [e.id for e in loaded] == ["q", "id-1", "id-2"]
    q = loaded[0]
    assert (q.function_name, q.qualifier, q.payload, q.enqueued_at, q.attempts, q.due) == (
        "other",
        "live",
        b"[]",
        999.0,
        1,
        5.0,
    )
    assert q.trace == trace
    assert loaded[1].qualifier is None


def test_payloads_past_the_budget_are_read_back_when_asked(stores: Stores) -> None:
    async def main() -> None:
        async with stores.open() as store:
            await store.add([event(i, payload=b"x" * 100) for i in range(5)])
            loaded = await store.load(250)
            assert [e.payload is not None for e in loaded] == [True, True, False, False, False]
            assert await store.payload("id-4") == b"x" * 100
            assert await store.payload("nope") is None

    asyncio.run(main())


def test_finish_stores_follow_ups_and_the_drop_record(stores: Stores) -> None:
    async def main() -> None:
        async with stores.open() as store:
            await store.add([event(1), event(2)])
            drop = DroppedEvent("id-1", "fn", None, "RetriesExhausted", 3, 1001.0, 2000.0, "E")
            await store.finish("id-1", [event(3)], drop)
            await store.reschedule("id-2", 1, 77.0)
            await store.finish("id-9")  # not stored: nothing happens
            assert [(e.id, e.attempts, e.due) for e in await store.load(1 << 20)] == [
                ("id-2", 1, 77.0),
                ("id-3", 0, 0.0),
            ]
            assert await store.dropped(10) == [drop]
            await store.finish("id-2")
            await store.finish("id-3")
            assert await store.load(1 << 20) == []

    asyncio.run(main())


def test_a_closed_store_refuses(stores: Stores) -> None:
    async def main() -> None:
        async with stores.open() as store:
            pass
        with pytest.raises(OSError):
            await store.add([event(1)])

    asyncio.run(main())


# -- JetStream's own ----------------------------------------------------------------------


def test_a_node_loads_only_its_own_events(nats3: NatsCluster) -> None:
    cluster = cluster_name()

    async def main() -> None:
        async with (
            jetstream_store(nats3.urls, cluster, "a") as a,
            jetstream_store(nats3.urls, cluster, "b") as b,
        ):
            await a.add([event(1), event(2)])
            await b.add([event(3)])
            await b.finish("id-1")  # b's finish concerns b's events only
            assert [e.id for e in await a.load(1 << 20)] == ["id-1", "id-2"]
            assert [e.id for e in await b.load(1 << 20)] == ["id-3"]
            assert await a.nodes_with_events() == {"a", "b"}

    asyncio.run(main())


def test_the_bucket_is_replicated_on_three_servers_and_keeps_no_markers(
    nats3: NatsCluster,
) -> None:
    cluster = cluster_name()

    async def main() -> None:
        async with jetstream_store(nats3.urls, cluster) as store:
            await store.add([event(i) for i in range(20)])
            for i in range(20):
                await store.finish(f"id-{i}")
            js = cast(Any, store)._js
            info = await js.stream_info(store.stream)
            assert info.config.num_replicas == 3
            assert info.state.messages == 0, "finished events leave nothing behind"

    asyncio.run(main())


def test_dropped_records_are_the_newest_first(nats3: NatsCluster) -> None:
    cluster = cluster_name()

    async def main() -> None:
        async with jetstream_store(nats3.urls, cluster) as store:
            drops = [
                DroppedEvent(f"id-{i}", "fn", "q", "EventAgeExceeded", 0, 1.0, 2.0 + i)
                for i in range(5)
            ]
            await store.add([event(i) for i in range(5)])
            for d in drops:
                await store.finish(d.id, (), d)
            assert await store.dropped(3) == drops[::-1][:3]
            assert await store.dropped(100) == drops[::-1]

    asyncio.run(main())


def test_an_unreachable_nats_is_an_oserror_naming_jetstream() -> None:
    """With its only NATS server killed, a change fails with OSError (once the request times
    out), and so does every call on a connection that was closed."""

    async def main(server: NatsCluster) -> None:
        nc = await connect(server.urls)
        store = JetStreamEventStore(nc, nc.jetstream(), cluster_name(), "a")
        await store.add([event(1)])
        info = await nc.jetstream().stream_info(store.stream)
        assert info.config.num_replicas == 1, "one server: one replica"
        server.servers[0].kill()
        with pytest.raises(OSError, match="NATS JetStream"):
            await store.add([event(2)])
        await nc.close()
        with pytest.raises(OSError, match="connection to NATS is closed"):
            await store.load(1 << 20)

    with nats_cluster(1) as single:
        asyncio.run(main(single))


def test_acknowledged_events_survive_kill_9_of_the_leader_the_client_uses(
    nats3: NatsCluster,
) -> None:
    """The client is connected to the bucket's stream leader; it is killed mid-run. Every
    add that was acknowledged (before, during and after the loss) loads back from the two
    servers left; adds go on succeeding once a new leader is elected."""
    cluster = cluster_name()
    killed = None

    async def main() -> None:
        nonlocal killed
        async with jetstream_store(nats3.urls, cluster) as first:
            await first.add([event(0)])
            info = await cast(Any, first)._js.stream_info(first.stream)
        leader = next(s for s in nats3.servers if s.name == info.cluster.leader)
        others = [s.url for s in nats3.servers if s is not leader]
        nc = await connect([leader.url, *others], dont_randomize=True)
        assert nc.connected_url is not None and nc.connected_url.port == leader.port
        store = JetStreamEventStore(nc, nc.jetstream(), cluster, "a")
        acknowledged = {"id-0"}

        async def add(i: int) -> None:
            with contextlib.suppress(OSError):  # refused while the cluster fails over
                await store.add([event(i)])
                acknowledged.add(f"id-{i}")

        await asyncio.gather(*(add(i) for i in range(1, 200)))
        killed = leader
        adding = [asyncio.ensure_future(add(i)) for i in range(200, 400)]
        leader.kill()
        await asyncio.gather(*adding)
        deadline = time.monotonic() + 60
        while "id-400" not in acknowledged:  # the bucket takes changes again
            assert time.monotonic() < deadline, "no new leader took the bucket"
            await add(400)
            await asyncio.sleep(0.1)
        await nc.close()
        assert len(acknowledged) >= 200
        # The store's other stream (dropped events) may still be electing its leader: an
        # open that times out meanwhile is tried again (as a node's next call does), for up to
        # a minute.
        deadline = time.monotonic() + 60
        while True:
            try:
                async with jetstream_store(others, cluster) as again:
                    loaded = {e.id for e in await again.load(1 << 30)}
                break
            except OSError:
                assert time.monotonic() < deadline, "the bucket never opened again"
                await asyncio.sleep(0.5)
        assert acknowledged <= loaded

    try:
        asyncio.run(main())
    finally:
        if killed is not None:
            killed.start()
            nats3.wait_ready()


# -- adoption -----------------------------------------------------------------------------


class Directory:
    """A `NodeDirectory` whose live nodes the test sets."""

    def __init__(self, me: str, live: set[str]) -> None:
        self.self_name = me
        self.names = live

    def live(self) -> list[NodeInfo]:
        return [NodeInfo(n, f"http://{n}", 0.0, 0.0) for n in sorted(self.names)]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Taken:
    """Stands for the AsyncQueue: what adoption hands over."""

    def __init__(self) -> None:
        self.events: list[QueuedEvent] = []

    def adopt(self, events: Sequence[QueuedEvent]) -> None:
        self.events.extend(events)


def test_a_dead_nodes_events_move_once_to_its_rendezvous_owner(nats3: NatsCluster) -> None:
    """X dies with 40 events stored; Y and Z check (both seeing only each other): nothing
    moves before X has been missing for the TTL, then its owner takes all of them, once."""
    cluster = cluster_name()
    now = [100.0]

    async def main() -> None:
        async with (
            jetstream_store(nats3.urls, cluster, "X") as x,
            jetstream_store(nats3.urls, cluster, "Y") as y,
            jetstream_store(nats3.urls, cluster, "Z") as z,
        ):
            payloads = {f"id-{i}": f'{{"n": {i}}}'.encode() for i in range(40)}
            await x.add([QueuedEvent(k, "fn", None, v, 1000.0) for k, v in payloads.items()])
            taken = {"Y": Taken(), "Z": Taken()}
            adopters = [
                EventAdoption(
                    store,
                    cast(NodeDirectory, Directory(store.node, {"Y", "Z"})),
                    ttl_s=5.0,
                    clock=lambda: now[0],
                )
                for store in (y, z)
            ]
            for adopter, name in zip(adopters, taken, strict=True):
                await adopter.start(taken[name])
                await adopter.close()  # checks driven by the test from here
            now[0] += 4.0
            await asyncio.gather(*(a.check() for a in adopters))
            assert not taken["Y"].events and not taken["Z"].events, "X missing < TTL"
            now[0] += 2.0
            await asyncio.gather(*(a.check() for a in adopters))
            owner = rendezvous_owner("X", ["Y", "Z"])
            other = "Z" if owner == "Y" else "Y"
            assert owner is not None
            assert {e.id: e.payload for e in taken[owner].events} == payloads
            assert taken[other].events == []
            assert await x.load(1 << 20) == []
            mine = y if owner == "Y" else z
            assert {e.id for e in await mine.load(1 << 20)} == set(payloads)
            await asyncio.gather(*(a.check() for a in adopters))
            assert len(taken[owner].events) == 40, "nothing adopted twice"

    asyncio.run(main())


def test_two_adopters_racing_take_each_event_exactly_once(nats3: NatsCluster) -> None:
    """Both Y and Z believe they own dead X (their views differ) and move its 300 events at
    the same time: each event ends up run by one of them and stored under that one's name."""
    cluster = cluster_name()

    async def main() -> None:
        async with (
            jetstream_store(nats3.urls, cluster, "X") as x,
            jetstream_store(nats3.urls, cluster, "Y") as y,
            jetstream_store(nats3.urls, cluster, "Z") as z,
        ):
            ids = {f"id-{i}" for i in range(300)}
            await x.add([QueuedEvent(i, "fn", None, b"{}", 1000.0) for i in ids])
            taken = {"Y": Taken(), "Z": Taken()}
            adopters = {
                name: EventAdoption(
                    store, cast(NodeDirectory, Directory(name, {"Y", "Z"})), ttl_s=5.0
                )
                for name, store in (("Y", y), ("Z", z))
            }
            for name, adopter in adopters.items():
                cast(Any, adopter)._queue = taken[name]
            counts = await asyncio.gather(adopters["Y"].adopt("X"), adopters["Z"].adopt("X"))
            by_y = {e.id for e in taken["Y"].events}
            by_z = {e.id for e in taken["Z"].events}
            assert sum(counts) == 300
            assert by_y | by_z == ids and not by_y & by_z
            assert {e.id for e in await y.load(1 << 20)} == by_y
            assert {e.id for e in await z.load(1 << 20)} == by_z
            assert await x.load(1 << 20) == []
            assert "X" not in await x.nodes_with_events()

    asyncio.run(main())


def test_rendezvous_owner_is_stable_and_spreads() -> None:
    nodes = [f"n{i}" for i in range(4)]
    owners = {k: rendezvous_owner(k, nodes) for k in (f"dead{i}" for i in range(200))}
    assert set(owners.values()) == set(nodes)
    assert all(rendezvous_owner(k, nodes[::-1]) == o for k, o in owners.items())
    fewer = [n for n in nodes if n != "n0"]
    assert all(rendezvous_owner(k, fewer) == o for k, o in owners.items() if o != "n0")
    assert rendezvous_owner("x", []) is None


# -- the async queue on JetStream ---------------------------------------------------------


class _Functions:
    """The few things the async queue asks of the FunctionService, for function "fn"."""

    def __init__(self) -> None:
        self.event_invoke = self
        self.recursion = self

    def effective(self, name: str, qualifier: str | None) -> None:
        return None

    def ref(self, name: str, qualifier: str | None) -> tuple[str, str | None]:
        return (name, qualifier)

    def resolve(self, ref: tuple[str, str | None]) -> FunctionConfig:
        from datetime import UTC, datetime

        return FunctionConfig(
            name=ref[0],
            version="$LATEST",
            runtime="python3.11",
            handler="h.h",
            role="arn:aws:iam::000000000000:role/x",
            code_sha256="ab" * 32,
            code_size=1,
            revision_id="r1",
            last_modified=datetime.now(UTC),
        )

    def trace(self, name: str, trace: str | None) -> tuple[str, bool]:
        return (trace or "", True)

    def arn(self, name: str, qualifier: str | None) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{name}"

    def latest(self, name: str) -> None:
        return None


class _Scheduler:
    """Runs an event's payload: {"fail": n} fails its first n attempts."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def invoke(self, config: FunctionConfig, request: InvokeRequest) -> InvokeResult:
        n = self.attempts[request.request_id] = self.attempts.get(request.request_id, 0) + 1
        if json.loads(request.payload).get("fail", 0) >= n:
            return InvokeResult(b'{"errorType": "ValueError"}', "$LATEST", "Unhandled")
        return InvokeResult(b"null", "$LATEST")


def test_the_async_queue_runs_and_retries_events_stored_in_jetstream(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    """60 events accepted into an AsyncQueue on the JetStream store all run; one failing
    twice is retried (rescheduled in the bucket) and then succeeds; the bucket is empty
    after; an event adopted from another node runs too."""
    cluster = cluster_name()

    async def main() -> None:
        async with jetstream_store(nats3.urls, cluster, "a") as store:
            scheduler = _Scheduler()
            settings = Settings(data_dir=tmp_path, retry_base_delay_s=0.3)
            queue = AsyncQueue(
                settings, store, cast(Any, _Functions()), cast(Any, scheduler), Metrics()
            )
            await queue.start()
            await asyncio.gather(
                *(queue.accept("fn", None, b'{"n": 1}', f"ok-{i}") for i in range(60)),
                queue.accept("fn", None, b'{"fail": 2}', "flaky"),
            )
            await store.add([QueuedEvent("moved", "fn", None, b"{}", time.time())])
            queue.adopt([QueuedEvent("moved", "fn", None, b"{}", time.time())])
            deadline = time.monotonic() + 30
            while queue.counts["succeeded"] < 62:
                assert time.monotonic() < deadline, queue.counts
                await asyncio.sleep(0.05)
            assert scheduler.attempts["flaky"] == 3
            assert queue.counts["retried"] == 2
            assert await store.load(1 << 20) == []
            await queue.close()

    asyncio.run(main())


class _Stuck:
    """A scheduler whose invocations never end (the node dies before any does)."""

    async def invoke(self, config: FunctionConfig, request: InvokeRequest) -> InvokeResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_dead_nodes_backlog_runs_on_the_node_that_adopts_it(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    """Node a accepts 500 events and dies before finishing any; node b, once a has been gone
    for the TTL, moves them and runs each one, and the bucket ends empty."""
    cluster = cluster_name()
    settings = Settings(data_dir=tmp_path, shutdown_grace_s=0)

    async def main() -> None:
        async with (
            jetstream_store(nats3.urls, cluster, "a") as a,
            jetstream_store(nats3.urls, cluster, "b") as b,
        ):
            dying = AsyncQueue(settings, a, cast(Any, _Functions()), cast(Any, _Stuck()), Metrics())
            await dying.start()
            ids = {f"e-{i}" for i in range(500)}
            await asyncio.gather(*(dying.accept("fn", None, b"{}", i) for i in ids))
            await dying.close()  # its attempts are cut short: every event is still stored
            scheduler = _Scheduler()
            queue = AsyncQueue(
                settings, b, cast(Any, _Functions()), cast(Any, scheduler), Metrics()
            )
            await queue.start()
            adoption = EventAdoption(
                b, cast(NodeDirectory, Directory("b", {"b"})), ttl_s=0.5, interval_s=0.1
            )
            await adoption.start(queue)
            deadline = time.monotonic() + 60
            while queue.counts["succeeded"] < 500:
                assert time.monotonic() < deadline, queue.counts
                await asyncio.sleep(0.05)
            await adoption.close()
            assert set(scheduler.attempts) == ids
            assert await b.load(1 << 20) == []
            assert await b.nodes_with_events() == set()
            await queue.close()

    asyncio.run(main())


def test_a_node_back_within_the_ttl_keeps_its_events(nats3: NatsCluster) -> None:
    """X misses a few heartbeats (gone from the live nodes for less than the TTL) and comes
    back: Y, its owner, moves nothing; gone again for the full TTL, it is adopted."""
    cluster = cluster_name()
    now = [0.0]

    async def main() -> None:
        async with (
            jetstream_store(nats3.urls, cluster, "X") as x,
            jetstream_store(nats3.urls, cluster, "Y") as y,
        ):
            await x.add([event(1), event(2)])
            directory = Directory("Y", {"Y"})
            taken = Taken()
            adoption = EventAdoption(
                y, cast(NodeDirectory, directory), ttl_s=5.0, clock=lambda: now[0]
            )
            cast(Any, adoption)._queue = taken
            await adoption.check()  # X missing since 0
            now[0] = 4.0
            directory.names = {"X", "Y"}
            await adoption.check()  # back
            directory.names = {"Y"}
            now[0] = 6.0
            await adoption.check()  # missing again, since 6
            assert taken.events == []
            assert {e.id for e in await x.load(1 << 20)} == {"id-1", "id-2"}
            now[0] = 11.0
            await adoption.check()
            assert sorted(e.id for e in taken.events) == ["id-1", "id-2"]

    asyncio.run(main())
