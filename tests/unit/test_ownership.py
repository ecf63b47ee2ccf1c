"""Ownership (`cluster/ownership.py`) of jobs among nodes sharing fake leases: the jobs split by
rendezvous; a node that dies loses its jobs to the others once its leases expire, not before; a
node that joins gets its share without a job running on two nodes at once; a lost lease stops
the job at once; a job nobody runs is rescued after `ttl_s`, and stays put; one node with local
leases owns everything at once and looks at nothing in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from tests.unit.lease_fakes import FakeDirectory, LeaseBoard
from tests.unit.source_fakes import FakeControl, FakeInvoker, FakeQueue, mapping

from lamina.cluster.local import LocalLeases
from lamina.cluster.ownership import Ownership, rendezvous
from lamina.events.sources.manager import SourceRunner
from lamina.mappings import Connection, EventSourceMapping, SourceKind
from lamina.observability import Metrics
from lamina.settings import Settings

KEYS = [f"mapping/{i:02d}" for i in range(24)]


class Cluster:
    """Nodes over one lease board and one shared view of the live nodes; each node records
    which jobs run on it, and every start checks that the job runs nowhere else."""

    def __init__(self, board: LeaseBoard | None = None) -> None:
        self.board = board or LeaseBoard(ttl_s=3.0)
        self.view: set[str] = set()
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, *, live: bool = True) -> Node:
        if live:
            self.view.add(name)
        node = Node(self, name)
        self.nodes[name] = node
        return node

    def runners(self, key: str) -> list[str]:
        return [n.name for n in self.nodes.values() if key in n.running]


class Node:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.running: set[str] = set()
        self.started: list[str] = []
        self.stopped: list[str] = []
        #: at each stop: who held the lease (a hand-over must stop before it releases)
        self.holder_at_stop: dict[str, str | None] = {}
        #: if set, a stop takes until it is set (a job finishing what it does)
        self.stop_gate: asyncio.Event | None = None
        self.jobs = Ownership(
            cluster.board.leases(name),
            FakeDirectory(name, cluster.view),
            started=self._started,
            stopped=self._stopped,
            clock=cluster.board.time,
        )

    def _run(self, key: str) -> None:
        others = [n for n in self.cluster.runners(key) if n != self.name]
        assert not others, f"{key} starts on {self.name} while running on {others}"
        self.running.add(key)

    async def _started(self, key: str) -> None:
        self.started.append(key)
        self._run(key)

    async def _stopped(self, key: str) -> None:
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        self.stopped.append(key)
        self.holder_at_stop[key] = self.cluster.board.holders.get(key)
        self.running.discard(key)

    async def want(self, *keys: str) -> None:
        for key in keys:
            if await self.jobs.want(key):
                self._run(key)

    def owned(self) -> set[str]:
        return {k for k in KEYS if self.jobs.owns(k)}


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def share(key_owner: str, nodes: set[str]) -> set[str]:
    return {k for k in KEYS if rendezvous(k, nodes) == key_owner}


def test_rendezvous_is_stable_and_moves_only_the_leaving_nodes_share() -> None:
    three = {k: rendezvous(k, ["a", "b", "c"]) for k in KEYS}
    assert three == {k: rendezvous(k, ["c", "a", "b"]) for k in KEYS}  # order does not matter
    assert set(three.values()) == {"a", "b", "c"}
    two = {k: rendezvous(k, ["a", "b"]) for k in KEYS}
    assert all(two[k] == owner for k, owner in three.items() if owner != "c")
    assert rendezvous("x", []) is None


def test_jobs_split_between_two_nodes_by_rendezvous() -> None:
    async def go() -> None:
        c = Cluster()
        a, b = c.node("a"), c.node("b")
        await a.want(*KEYS)
        await b.want(*KEYS)
        assert a.owned() == share("a", {"a", "b"}) and a.owned()
        assert b.owned() == share("b", {"a", "b"}) and b.owned()
        assert a.owned() | b.owned() == set(KEYS)
        # a look changes nothing: each holds its rightful share
        await a.jobs.evaluate()
        await b.jobs.evaluate()
        assert a.owned() == share("a", {"a", "b"}) and b.owned() == share("b", {"a", "b"})
        assert a.stopped == b.stopped == []
        assert all(len(c.runners(k)) == 1 for k in KEYS)

    run(go)


def test_a_node_leaving_loses_its_jobs_once_its_leases_expire_not_before() -> None:
    async def go() -> None:
        c = Cluster()
        a, b = c.node("a"), c.node("b")
        await a.want(*KEYS)
        await b.want(*KEYS)
        a_share = a.owned()
        c.board.kill("a")
        c.view.discard("a")  # its heartbeat stopped too
        await b.jobs.evaluate()
        assert b.owned() == share("b", {"a", "b"})  # a's leases have not expired
        await c.board.advance(2.9)
        await b.jobs.evaluate()
        assert b.owned() == share("b", {"a", "b"})
        await c.board.advance(0.2)  # 3.1 s after a's last renewal: its leases have expired
        await b.jobs.evaluate()
        assert b.owned() == set(KEYS)
        assert set(b.started) == a_share  # reported: b starts each of them

    run(go)


def test_a_node_joining_gets_its_share_without_a_job_running_on_both() -> None:
    async def go() -> None:
        c = Cluster()
        a = c.node("a")
        await a.want(*KEYS)
        assert a.owned() == set(KEYS)
        b = c.node("b")  # joins: both now see {a, b}
        await b.want(*KEYS)
        assert b.owned() == set()  # a still holds its share
        moving = share("b", {"a", "b"})
        await a.jobs.evaluate()  # a stops b's share, then releases it
        assert set(a.stopped) == moving
        assert all(a.holder_at_stop[k] == "a" for k in moving)  # stopped before released
        assert a.owned() == share("a", {"a", "b"})
        await b.jobs.evaluate()  # b's next look takes it (Node._run checks it runs nowhere)
        assert b.owned() == moving and set(b.started) == moving
        assert all(len(c.runners(k)) == 1 for k in KEYS)
        # and it stays so
        await a.jobs.evaluate()
        await b.jobs.evaluate()
        assert a.owned() | b.owned() == set(KEYS) and not a.owned() & b.owned()

    run(go)


def test_a_lost_lease_stops_the_job_at_once_and_another_node_takes_it() -> None:
    async def go() -> None:
        c = Cluster()
        a, b = c.node("a"), c.node("b")
        await a.want(*KEYS)
        await b.want(*KEYS)
        a_share = a.owned()
        c.board.cut_off("a")  # a runs on, but cannot renew
        await c.board.advance(1.0)
        assert a.owned() == a_share and a.stopped == []
        await c.board.advance(2.5)  # a's renewal finds its leases gone
        assert a.owned() == set()  # at once: no longer a's
        await asyncio.sleep(0)  # the stops run in tasks of their own, started at once
        assert set(a.stopped) == a_share and a.running == set()
        c.view.discard("a")  # and its heartbeat has expired for the others
        await b.jobs.evaluate()
        assert b.owned() == set(KEYS)

    run(go)


def test_a_lost_job_is_not_taken_again_before_it_has_stopped() -> None:
    async def go() -> None:
        c = Cluster()
        a = c.node("a")
        slow = a.stop_gate = asyncio.Event()  # batches in flight finishing
        await a.want(KEYS[0])
        c.board.cut_off("a")  # a blip: a's lease expires...
        await c.board.advance(3.5)
        del c.board.silent_since["a"]  # ...and the lease service is back
        assert not a.jobs.owns(KEYS[0])
        await a.jobs.evaluate()
        assert not a.jobs.owns(KEYS[0]) and a.started == []  # still stopping
        slow.set()
        await asyncio.sleep(0)
        assert a.stopped == [KEYS[0]]
        await a.jobs.evaluate()
        assert a.jobs.owns(KEYS[0]) and a.started == [KEYS[0]]

    run(go)


def test_a_job_nobody_runs_is_rescued_after_the_ttl_and_stays_put() -> None:
    async def go() -> None:
        c = Cluster()
        a, b = c.node("a"), c.node("b")
        # a is live but does not take its share (it does not know these jobs yet)
        await b.want(*KEYS)
        orphans = share("a", {"a", "b"})
        assert b.owned() == share("b", {"a", "b"})
        await c.board.advance(2.0)
        await b.jobs.evaluate()
        assert b.owned() == share("b", {"a", "b"})  # a gets its chance first
        await c.board.advance(1.5)
        await b.jobs.evaluate()
        assert b.owned() == set(KEYS) and set(b.started) == orphans
        # a wants them now: they stay with b while the live nodes stay the same
        await a.want(*KEYS)
        for _ in range(3):
            await c.board.advance(1.0)
            await a.jobs.evaluate()
            await b.jobs.evaluate()
        assert b.owned() == set(KEYS) and a.owned() == set() and b.stopped == []
        # a node joins: the live set changed, so the shares are dealt again
        c.node("c", live=True)
        await b.jobs.evaluate()
        await a.jobs.evaluate()
        assert a.owned() == share("a", {"a", "b", "c"})
        assert all(len(c.runners(k)) <= 1 for k in KEYS)

    run(go)


def test_dropping_a_job_releases_it_for_nobody_and_a_failing_lease_service_is_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        c = Cluster()
        a = c.node("a")
        await a.want(KEYS[0])
        assert c.board.holder(KEYS[0]) == "a"
        await a.jobs.drop(KEYS[0])
        assert c.board.holder(KEYS[0]) is None and not a.jobs.owns(KEYS[0])
        await a.jobs.evaluate()
        assert c.board.holder(KEYS[0]) is None  # not wanted: not taken again
        c.board.cut_off("a")
        await a.want(KEYS[1])  # the lease service cannot be reached: not owned, no error
        await a.jobs.evaluate()
        assert not a.jobs.owns(KEYS[1])
        assert sum("cannot take the lease of" in r.getMessage() for r in caplog.records) == 1

    run(go)


def test_one_node_with_local_leases_owns_everything_at_once_with_no_background_task() -> None:
    async def go() -> None:
        started: list[str] = []

        async def note(key: str) -> None:
            started.append(key)

        leases = LocalLeases()
        jobs = Ownership(leases, None, started=note, stopped=note)
        jobs.start()
        assert jobs._task is None
        for key in KEYS:
            assert await jobs.want(key)
        assert leases.held() == set(KEYS) and started == []
        await jobs.drop(KEYS[0])
        assert not jobs.owns(KEYS[0]) and KEYS[0] not in leases.held()
        await jobs.close()
        assert leases.held() == frozenset()

    run(go)


def test_the_background_look_hands_over_when_a_node_joins() -> None:
    async def go() -> None:
        c = Cluster(LeaseBoard(ttl_s=1.5, clock=time.monotonic))
        a = c.node("a")
        b = c.node("b", live=False)
        a.jobs.start()
        b.jobs.start()
        await a.want(*KEYS)
        await b.want(*KEYS)
        assert a.owned() == set(KEYS) and b.owned() == set()
        c.view.add("b")
        deadline = time.monotonic() + 10
        while b.owned() != share("b", {"a", "b"}):
            assert time.monotonic() < deadline, "b did not get its share"
            await asyncio.sleep(0.02)
        assert a.owned() == share("a", {"a", "b"})
        assert all(len(c.runners(k)) == 1 for k in KEYS)
        await a.jobs.close()
        await b.jobs.close()
        assert c.board.holders == {}

    run(go)


def test_a_mapping_runs_only_while_its_lease_is_held_and_a_lost_one_acknowledges_nothing() -> None:
    async def go() -> None:
        board = LeaseBoard(ttl_s=3.0)
        queues: list[FakeQueue] = []

        def make(m: EventSourceMapping, connection: Connection) -> FakeQueue:
            queues.append(FakeQueue(["a"] if not queues else []))
            return queues[-1]

        invoker = FakeInvoker()
        invoker.hold = asyncio.Event()  # the first batch is still in flight when the lease goes
        runner = SourceRunner(
            Settings(shutdown_grace_s=1),
            FakeControl(mapping()),
            invoker,
            {SourceKind.SQS: make},
            Metrics(),
            leases=board.leases("a"),
            directory=FakeDirectory("a", {"a"}),
        )
        await runner.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not invoker.events:
            assert asyncio.get_running_loop().time() < deadline, "the mapping did not run"
            await asyncio.sleep(0.01)
        board.cut_off("a")
        await board.advance(3.5)  # lost: stopped as a disable stops it, after the grace
        await runner.wait_idle()
        while queues[0].closed == 0:
            assert asyncio.get_running_loop().time() < deadline, "the source was not closed"
            await asyncio.sleep(0.01)
        assert queues[0].acked == [] and [m.id for m in queues[0].ready] == ["m1"]
        stats = runner.stats("u-1")
        assert stats is not None and stats.pollers == 0
        await runner.close()

    run(go)


def test_a_rescued_job_goes_back_to_its_rightful_owner_in_the_end() -> None:
    """A rightful owner that could not take its job when the live nodes last changed (it was
    still stopping it, after a partition) gets it back from the rescuer after 2 TTLs, without
    the live nodes changing again."""

    async def go() -> None:
        c = Cluster()
        a, b = c.node("a"), c.node("b")
        await b.want(*KEYS)
        orphans = share("a", {"a", "b"})
        await c.board.advance(3.5)
        await b.jobs.evaluate()
        assert b.owned() == set(KEYS)  # rescued: a did not take its share in time
        await a.want(*KEYS)
        await c.board.advance(6.5)  # past 2 TTLs since the rescue
        await b.jobs.evaluate()
        await a.jobs.evaluate()
        assert a.owned() == orphans and b.owned() == share("b", {"a", "b"})
        assert all(len(c.runners(k)) <= 1 for k in KEYS)

    run(go)
