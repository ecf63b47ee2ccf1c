"""Account and reserved concurrency across three nodes on one PostgreSQL database
(`cluster.concurrency.ClusterConcurrency`): the limits hold whatever node an invocation
lands on, slots move between nodes (to a node that wants them, even from a busy one), a
lowered limit holds, and a node's grants outlive it by `ttl_s`, no more, no less."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from tests.cluster._engines import Postgres
from tests.conftest import free_port

from lamina.cluster.api import ClusterConfigError
from lamina.cluster.concurrency import UNRESERVED_POOL, ClusterConcurrency, reserved_pool
from lamina.errors import TooManyRequestsError
from lamina.models import FunctionConfig, InvokeRequest
from lamina.observability import Metrics
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.scheduler import Scheduler
from lamina.scheduler.concurrency import ACCOUNT_EXCEEDED, RESERVED_EXCEEDED, Lease
from lamina.settings import ClusterSettings, Settings
from lamina.store.concurrency_grants import GrantStore, GrantStoreUnavailable, concurrency_pools

T = TypeVar("T")

TTL_S = 4.0
HEARTBEAT_S = 0.3
#: generous: the machine is shared and loaded
DEADLINE_S = 15.0


@contextlib.asynccontextmanager
async def cluster(
    url: str, n: int = 3, limit: int = 10, heartbeat_s: float = HEARTBEAT_S
) -> AsyncIterator[list[ClusterConcurrency]]:
    nodes = [
        ClusterConcurrency(
            limit, GrantStore(url), f"node-{i}", ttl_s=TTL_S, heartbeat_s=heartbeat_s
        )
        for i in range(n)
    ]
    for node in nodes:
        await node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def hold(node: ClusterConcurrency, name: str) -> AbstractContextManager[Lease]:
    """One lease, entered (the caller exits it to release); TooManyRequestsError if none."""
    held = node.try_hold(name) or await node.hold_async(name)
    held.__enter__()
    return held


async def refused(node: ClusterConcurrency, name: str) -> str | None:
    """The Reason of a 429 for one more lease of `name` on `node`; None if it was granted
    (and is released again at once)."""
    try:
        held = await hold(node, name)
    except TooManyRequestsError as e:
        return str(e.fields["Reason"])
    held.__exit__(None, None, None)
    return None


async def eventually(
    attempt: Callable[[], Awaitable[AbstractContextManager[Lease]]],
    deadline_s: float = DEADLINE_S,
) -> AbstractContextManager[Lease]:
    """`attempt()` until it grants a lease (slots given back by other nodes come within a
    heartbeat or two)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await attempt()
        except TooManyRequestsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def grants(url: str, pool: str) -> dict[str, int]:
    """The slots of `pool` the database grants each node now."""
    store = GrantStore(url)
    try:
        return store.grants(pool)
    finally:
        store.dispose()


def granted(url: str, pool: str) -> int:
    """The slots of `pool` the database grants all nodes together now."""
    return sum(grants(url, pool).values())


#: seconds a test's async part may take: past it, every task's stack is printed and the test
#: fails where it waited (rather than hanging until pytest-timeout ends the whole run)
RUN_LIMIT_S = 120.0


def run_bounded(main: Awaitable[None]) -> None:
    async def bounded() -> None:
        try:
            await asyncio.wait_for(main, RUN_LIMIT_S)
        except TimeoutError:
            for task in asyncio.all_tasks():
                print(f"--- {task!r}", file=sys.stderr)
                task.print_stack(file=sys.stderr)
            raise

    asyncio.run(bounded())


def release(held: list[AbstractContextManager[Lease]]) -> None:
    for h in held:
        h.__exit__(None, None, None)
    held.clear()


def test_account_limit_holds_across_nodes_in_any_spread(database_url: str) -> None:
    async def run() -> None:
        async with cluster(database_url) as nodes:
            rng = random.Random(20)
            for spread in ([0] * 10, [0, 1, 2] * 3 + [1], [rng.randrange(3) for _ in range(10)]):
                held = [await eventually(lambda i=i: hold(nodes[i], "f")) for i in spread]
                # Every node's slack given back or not, the 11th is refused everywhere.
                for _ in range(3):
                    for node in nodes:
                        assert await refused(node, "f") == ACCOUNT_EXCEEDED
                    await asyncio.sleep(HEARTBEAT_S)
                assert granted(database_url, UNRESERVED_POOL) <= 10
                assert sum(n.running() for n in nodes) == 10
                release(held)

    run_bounded(run())


def test_a_slot_released_on_one_node_is_taken_on_another(database_url: str) -> None:
    async def run() -> None:
        async with cluster(database_url) as nodes:
            held = [await hold(nodes[0], "f") for _ in range(10)]
            assert await refused(nodes[1], "f") == ACCOUNT_EXCEEDED
            release(held[:1])
            started = time.monotonic()
            moved = await eventually(lambda: hold(nodes[1], "f"))
            # Not at once: node-0 keeps what it used until a renewal finds it unused.
            assert time.monotonic() - started < DEADLINE_S
            assert grants(database_url, UNRESERVED_POOL) == {"node-0": 9, "node-1": 1}
            assert await refused(nodes[0], "f") == ACCOUNT_EXCEEDED
            assert await refused(nodes[2], "f") == ACCOUNT_EXCEEDED
            release([moved, *held[1:]])

    run_bounded(run())


def test_reserved_concurrency_holds_across_nodes(database_url: str) -> None:
    async def run() -> None:
        async with cluster(database_url) as nodes:
            for node in nodes:
                node.set_reserved("r", 3)
                assert node.unreserved_limit == 7
            held = [await eventually(lambda i=i: hold(nodes[i], "r")) for i in range(3)]
            for node in nodes:
                assert await refused(node, "r") == RESERVED_EXCEEDED
            # The rest of the account is the unreserved pool's: 7, not 10.
            others = [await eventually(lambda i=i: hold(nodes[i % 3], "g")) for i in range(7)]
            for node in nodes:
                assert await refused(node, "g") == ACCOUNT_EXCEEDED
                assert await refused(node, "r") == RESERVED_EXCEEDED
            assert granted(database_url, reserved_pool("r")) <= 3
            # A raised reservation reaches every node: one more on any of them.
            for node in nodes:
                node.set_reserved("r", 4)
            held.append(await eventually(lambda: hold(nodes[2], "r")))
            assert await refused(nodes[0], "r") == RESERVED_EXCEEDED
            release(held)
            release(others)

    run_bounded(run())


def test_a_dead_nodes_grants_come_back_after_ttl_not_before(database_url: str) -> None:
    async def run() -> None:
        async with cluster(database_url) as nodes:
            [await hold(nodes[0], "f") for _ in range(10)]
            await nodes[0].close(give_back=False)  # its leases never released: it "died"
            died = time.monotonic()
            while time.monotonic() < died + TTL_S / 2:
                assert await refused(nodes[1], "f") == ACCOUNT_EXCEEDED
                await asyncio.sleep(0.1)
            await eventually(lambda: hold(nodes[1], "f"), DEADLINE_S + TTL_S)
            back = time.monotonic() - died
            # Its last renewal was at most a heartbeat (and a round trip) before it died.
            assert TTL_S - HEARTBEAT_S - 0.5 <= back <= TTL_S + DEADLINE_S
            taken = [await eventually(lambda: hold(nodes[2], "f")) for _ in range(9)]
            assert await refused(nodes[2], "f") == ACCOUNT_EXCEEDED
            release(taken)

    run_bounded(run())


def test_a_node_cut_from_the_database_runs_within_its_grant_then_refuses(
    pg: Postgres, database_url: str
) -> None:
    proxy = _Proxy(pg.port)
    cut_url = database_url.replace(f":{pg.port}/", f":{proxy.port}/")

    async def run() -> None:
        async with cluster(database_url, n=1) as (other,):
            # Renewed by hand only: its grant is exactly what it took (no give-back).
            cut = ClusterConcurrency(10, GrantStore(cut_url), "cut", ttl_s=TTL_S, heartbeat_s=3600)
            await cut.start()
            held = [await hold(cut, "f") for _ in range(7)]
            assert cut.granted(UNRESERVED_POOL) == 9
            taken = time.monotonic()
            proxy.cut()
            held += [await hold(cut, "f") for _ in range(2)]  # its grant, no I/O
            assert await refused(cut, "f") == ACCOUNT_EXCEEDED
            # The one slot left is the other node's; nothing beyond.
            held_other = [await eventually(lambda: hold(other, "f"))]
            assert await refused(other, "f") == ACCOUNT_EXCEEDED
            # Slots it released are its own again while its grant lasts, not after.
            release(held[6:])
            del held[6:]
            again = cut.try_hold("f")
            assert again is not None
            again.__enter__()
            held.append(again)
            await asyncio.sleep(taken + TTL_S - time.monotonic())
            assert cut.try_hold("f") is None
            assert await refused(cut, "f") == ACCOUNT_EXCEEDED
            # ...and the database gives them to the node that can reach it.
            held_other += [await eventually(lambda: hold(other, "f")) for _ in range(9)]
            assert await refused(other, "f") == ACCOUNT_EXCEEDED
            release(held_other)
            release(held)
            await cut.close(give_back=False)

    try:
        run_bounded(run())
    finally:
        proxy.cut()


@pytest.mark.parametrize("seed", [1, 2])
def test_racing_holds_on_three_nodes_never_pass_the_limits(database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    running = {"f": 0, "r": 0}
    peak = {"f": 0, "r": 0}
    granted = {"f": 0, "r": 0}

    async def worker(node: ClusterConcurrency, name: str, until: float) -> None:
        while time.monotonic() < until:
            try:
                held = await hold(node, name)
            except TooManyRequestsError:
                await asyncio.sleep(rng.uniform(0, 0.02))
                continue
            running[name] += 1
            granted[name] += 1
            peak[name] = max(peak[name], running[name])
            await asyncio.sleep(rng.uniform(0, 0.03))
            running[name] -= 1
            held.__exit__(None, None, None)

    async def run() -> None:
        async with cluster(database_url) as nodes:
            for node in nodes:
                node.set_reserved("r", 3)
            until = time.monotonic() + 3.0
            await asyncio.gather(
                *(worker(nodes[i % 3], "f" if i % 4 else "r", until) for i in range(60))
            )
            assert sum(n.running() for n in nodes) == 0

    run_bounded(run())
    assert peak["f"] <= 7 and peak["r"] <= 3
    # Not a vacuous pass: the nodes really ran invocations at once, many of them.
    assert peak["f"] >= 4 and peak["r"] >= 2
    assert granted["f"] > 50 and granted["r"] > 20


class _Proxy:
    """A TCP relay to PostgreSQL that the test can cut: every connection through it is
    closed and no new one is accepted (a node that lost its network to the database)."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _sleep(event: Any, context: Any) -> Any:
    time.sleep(event["sleep"])
    return "slept"


def test_schedulers_of_two_nodes_share_the_account_limit(tmp_path: Path, database_url: str) -> None:
    """The scheduler's own path (try_hold, then hold_async when a node's grant is used up):
    two nodes, an account limit of 2, two slow invocations on one node throttle the other."""
    config = FunctionConfig(
        name="fn",
        version="$LATEST",
        runtime="python3.11",
        handler="h.sleep",
        role="arn:aws:iam::000000000000:role/x",
        code_sha256="ab" * 32,
        code_size=1,
        revision_id="r1",
        last_modified=datetime.now(UTC),
        timeout=30,
    )

    def request(sleep: float) -> InvokeRequest:
        return InvokeRequest(
            request_id=str(uuid.uuid4()),
            payload=json.dumps({"sleep": sleep}).encode(),
            invoked_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
        )

    async def run() -> None:
        backend = FakeBackend({"h.sleep": _sleep})
        catalog = RuntimeCatalog(
            [RuntimeInfo("python3.11", "/nonexistent/python3.11", tmp_path / "runtime")]
        )
        schedulers = []
        for name in ("a", "b"):
            settings = Settings(
                data_dir=tmp_path / name,
                concurrency_limit=2,
                cluster=ClusterSettings(
                    database_url,
                    ("nats://127.0.0.1:1",),
                    name,
                    heartbeat_s=HEARTBEAT_S,
                    ttl_s=TTL_S,
                ),
            )
            concurrency = ClusterConcurrency.for_node(settings)
            assert concurrency is not None
            await concurrency.start()
            sched = Scheduler(
                settings,
                backend,
                catalog,
                Metrics(),
                task_root=lambda sha: tmp_path / "task",
                concurrency=concurrency,
            )
            sched.start()
            schedulers.append((sched, concurrency))
        (a, a_concurrency), (b, _) = schedulers
        try:
            slow = [asyncio.create_task(a.invoke(config, request(3.0))) for _ in range(2)]
            deadline = time.monotonic() + DEADLINE_S
            while a_concurrency.running("fn") < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            with pytest.raises(TooManyRequestsError) as throttled:
                await b.invoke(config, request(0))
            assert throttled.value.fields["Reason"] == ACCOUNT_EXCEEDED
            for result in await asyncio.gather(*slow):
                assert result.function_error is None
            # Both slots are node a's until it gives them back; then node b runs.
            ran = await eventually_invoke(lambda: b.invoke(config, request(0)))
            assert json.loads(ran.payload) == "slept"
        finally:
            for sched, concurrency in schedulers:
                await sched.close()
                await concurrency.close()
            await backend.close()

    run_bounded(run())


async def eventually_invoke(invoke: Callable[[], Awaitable[T]]) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return await invoke()
        except TooManyRequestsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_a_node_that_cannot_reach_the_database_does_not_start() -> None:
    port = free_port()
    url = f"postgresql://lamina@127.0.0.1:{port}/grants"
    node = ClusterConcurrency(10, GrantStore(url), "lone", ttl_s=TTL_S, heartbeat_s=HEARTBEAT_S)

    async def run() -> None:
        with pytest.raises(ClusterConfigError) as refused:
            await node.start()
        await node.close(give_back=False)
        message = str(refused.value)
        assert message.startswith(f"cannot reach the database at 127.0.0.1:{port}/grants: ")
        assert "Connection refused" in message or "connection refused" in message

    run_bounded(run())


def test_a_busy_node_shares_a_pool_another_node_wants(database_url: str) -> None:
    """Node 0 re-takes every slot it frees at once; node 1 still gets its share (the
    nodes' fair share of the pool) within a few heartbeats rather than waiting forever."""

    async def run() -> None:
        async with cluster(database_url, n=2) as (busy, other):
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    try:
                        held = await hold(busy, "f")
                    except TooManyRequestsError:
                        await asyncio.sleep(0.01)
                        continue
                    await asyncio.sleep(0.05)
                    held.__exit__(None, None, None)

            workers = [asyncio.create_task(worker()) for _ in range(12)]
            deadline = time.monotonic() + DEADLINE_S
            while busy.running() < 10:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            taken = [await eventually(lambda: hold(other, "f")) for _ in range(5)]
            assert other.running() == 5
            deadline = time.monotonic() + DEADLINE_S
            while busy.running() > 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
            release(taken)

    run_bounded(run())


def test_nodes_starting_together_create_the_tables_once(database_url: str) -> None:
    async def run() -> None:
        nodes = [
            ClusterConcurrency(10, GrantStore(database_url), f"n{i}", ttl_s=TTL_S, heartbeat_s=1)
            for i in range(4)
        ]
        await asyncio.gather(*(node.start() for node in nodes))
        held = await hold(nodes[3], "f")
        held.__exit__(None, None, None)
        for node in nodes:
            await node.close()

    run_bounded(run())


def test_a_lowered_reservation_holds_across_busy_nodes(database_url: str) -> None:
    """Both nodes run two invocations of `r` at a time, well within its reservation of 6
    (neither ever wants more); the reservation drops to 2 on both: within a few heartbeats
    both together run at most 2, not 2 each."""
    stop = asyncio.Event()
    running = [0]

    async def worker(node: ClusterConcurrency) -> None:
        while not stop.is_set():
            try:
                held = await hold(node, "r")
            except TooManyRequestsError:
                await asyncio.sleep(0.01)
                continue
            running[0] += 1
            await asyncio.sleep(0.03)
            running[0] -= 1
            held.__exit__(None, None, None)

    async def run() -> None:
        async with cluster(database_url, n=2) as nodes:
            for node in nodes:
                node.set_reserved("r", 6)
            workers = [asyncio.create_task(worker(nodes[i % 2])) for i in range(4)]
            deadline = time.monotonic() + DEADLINE_S
            while running[0] < 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            for node in nodes:
                node.set_reserved("r", 2)
            # Settled: 2 at most for a whole second, at every look.
            deadline = time.monotonic() + DEADLINE_S
            settled_at = None
            while settled_at is None or time.monotonic() < settled_at + 1.0:
                assert time.monotonic() < deadline
                if running[0] > 2:
                    settled_at = None
                elif settled_at is None:
                    settled_at = time.monotonic()
                await asyncio.sleep(0.01)
            assert granted(database_url, reserved_pool("r")) <= 3
            stop.set()
            await asyncio.gather(*workers)

    run_bounded(run())


def test_a_grant_call_blocked_on_a_lock_fails_instead_of_waiting_for_good(
    database_url: str,
) -> None:
    """A transaction that holds a pool's row and never ends (a stuck client) must not hold
    a node's store thread for good: the statement times out and the call reports the
    database as unavailable, so the node refuses beyond its grants and can still shut down."""
    store = GrantStore(database_url, statement_timeout_s=0.5)
    stuck = GrantStore(database_url)
    try:
        store.create_all()
        store.take(UNRESERVED_POOL, "a", 1, 1, 10, TTL_S)
        with stuck._engine.begin() as c:  # a client that holds the row and never ends
            c.execute(
                select(concurrency_pools.c.pool)
                .where(concurrency_pools.c.pool == UNRESERVED_POOL)
                .with_for_update()
            )
            started = time.monotonic()
            with pytest.raises(GrantStoreUnavailable) as failed:
                store.take(UNRESERVED_POOL, "a", 2, 2, 10, TTL_S)
            assert 0.4 < time.monotonic() - started < 3
            assert "statement timeout" in str(failed.value)
        # The lock gone, the same store works again.
        assert store.take(UNRESERVED_POOL, "a", 2, 2, 10, TTL_S) == 2
    finally:
        store.dispose()
        stuck.dispose()


def test_close_ends_even_if_the_renewers_cancellation_is_lost(database_url: str) -> None:
    """On Python 3.11 `asyncio.wait_for` returns the inner call's result instead of raising
    when a cancellation arrives just as that call completes, so cancelling the renewer does
    not always stop it. `close()` awaits the renewer: it must end because the node closed,
    not only because it was cancelled (this hung CI twice)."""

    async def run() -> None:
        node = ClusterConcurrency(10, GrantStore(database_url), "n", ttl_s=TTL_S, heartbeat_s=0.05)
        await node.start()
        renewer = node._renewer
        assert renewer is not None
        renewer.cancel = lambda *args, **kwargs: False  # type: ignore[method-assign]
        started = time.monotonic()
        await asyncio.wait_for(node.close(), 5)
        assert time.monotonic() - started < 2
        assert renewer.done() and not renewer.cancelled()

    run_bounded(run())
