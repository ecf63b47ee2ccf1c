"""The node's NATS parts (`cluster.nats`, `nodes`, `leases`, `blobs`, `feed`) against a real
3-server NATS JetStream cluster: each test under a prefix of its own, as an isolated Lamina
cluster. Nodes that must die for real (kill -9) run in subprocesses (`_nats_holder.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._tcp_proxy import TcpProxy
from tests.cluster._engines import NatsCluster, nats_server_bin
from tests.conftest import free_port

from lamina.cluster.api import AREAS, ClusterConfigError, NodeLoad
from lamina.cluster.blobs import CorruptBlob, NatsBlobStore
from lamina.cluster.feed import NatsFeed
from lamina.cluster.leases import NatsLeases
from lamina.cluster.nats import NatsLink, kv_key, kv_name
from lamina.cluster.nodes import NatsNodeDirectory

HOLDER = Path(__file__).with_name("_nats_holder.py")


#: seconds a test's whole async part may take: past it the test fails with a traceback of
#: where it waited (rather than hanging until pytest-timeout ends the whole run)
RUN_LIMIT_S = 180.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, RUN_LIMIT_S))


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float, what: str
) -> float:
    """Poll `check` until true; the seconds it took. Fails after `within` seconds."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def link_to(urls: list[str], prefix: str, name: str = "node") -> NatsLink:
    link = NatsLink(prefix)
    await link.connect(urls, name, timeout_s=10)
    return link


def directory(link: NatsLink, name: str, ttl_s: float = 2.0) -> NatsNodeDirectory:
    return NatsNodeDirectory(link, name, f"http://{name}:8484", ttl_s, ttl_s / 5, NodeLoad)


def names(d: NatsNodeDirectory) -> list[str]:
    return [n.name for n in d.live()]


@contextlib.contextmanager
def holder_process(
    urls: list[str], prefix: str, name: str, ttl_s: float, key: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A node in a subprocess: in the directory as `name`, holding `key`; killed after."""
    argv = [sys.executable, str(HOLDER), prefix, name, str(ttl_s), str(ttl_s / 5), ",".join(urls)]
    proc = subprocess.Popen(
        [*argv, *([key] if key else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError(f"holder did not start: {proc.communicate()[1]}")
        yield proc
    finally:
        proc.kill()
        proc.communicate()


# --- the link ----------------------------------------------------------------------------


def test_keys_encode_any_string_legally_and_back() -> None:
    for name in ["rule/default/name", "0b6e-4c1a_x", "a.b c=d", "ünï", "", ".lead"]:
        key = kv_key(name)
        assert all(c.isascii() and (c.isalnum() or c in "-_/=") for c in key)
        assert kv_name(key) == name
    assert kv_key("rule/default/name") == "rule/default/name"


def test_connect_refuses_an_unreachable_nats_within_the_timeout() -> None:
    url = f"nats://127.0.0.1:{free_port()}"

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(ClusterConfigError) as err:
            await NatsLink().connect([url], "n", timeout_s=1.5)
        assert time.monotonic() - start < 6
        assert str(err.value) == f"cannot reach NATS at {url}: connection refused"

    run(main())


def test_connect_refuses_a_nats_without_jetstream(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [nats_server_bin(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def main() -> None:
            link = NatsLink()
            await eventually(lambda: _listening(port), 10, "nats-server listening")
            with pytest.raises(ClusterConfigError) as err:
                await link.connect([f"nats://127.0.0.1:{port}"], "n", timeout_s=5)
            assert str(err.value) == (
                f"NATS at nats://127.0.0.1:{port} has no JetStream: start nats-server with -js"
            )
            assert not link.healthy

        run(main())
    finally:
        proc.kill()
        proc.wait()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def test_buckets_are_replicated_on_three_servers(nats3: NatsCluster) -> None:
    async def main() -> None:
        link = await link_to(nats3.urls, new_prefix())
        try:
            assert link.replicas == 3
            kv = await link.key_value("nodes", ttl_s=2)
            # a second node creating it at the same time gets the same bucket
            again = await link.key_value("nodes", ttl_s=2)
            status = await kv.status()
            assert status.stream_info.config.num_replicas == 3
            assert again._stream == kv._stream
            # a node with another TTL would hold leases by other rules: refused
            first = NatsLeases(link, "first", 2.0)
            await first.start()
            await first.close()
            with pytest.raises(ClusterConfigError) as err:
                await NatsLeases(link, "late", 3.0).start()
            assert str(err.value) == (
                f"the NATS bucket {link.prefix}_leases keeps entries 2 s, this node 3 s: "
                "every node of a cluster needs the same heartbeat TTL "
                "(run the same Lamina version on every node)"
            )
        finally:
            await link.close()

    run(main())


# --- the node directory ------------------------------------------------------------------


def test_directories_see_each_other_and_close_removes_at_once(nats3: NatsCluster) -> None:
    prefix = new_prefix()

    async def main() -> None:
        a_link, b_link = await link_to(nats3.urls, prefix), await link_to(nats3.urls, prefix)
        # heartbeats every second, kept 5 s: leaving within 2 s is not an expiry
        a, b = directory(a_link, "a", 5.0), directory(b_link, "b", 5.0)
        await a.start()
        await b.start()
        try:
            await eventually(lambda: names(a) == names(b) == ["a", "b"], 3, "a and b see both")
            seen = {n.name: n for n in a.live()}["b"]
            assert seen.endpoint == "http://b:8484" and seen.healthy
            await b.close()
            await eventually(lambda: names(a) == ["a"], 2, "a sees b leave")
        finally:
            await a.close()
            await a_link.close()
            await b_link.close()

    run(main())


def test_a_live_name_is_refused(nats3: NatsCluster) -> None:
    prefix = new_prefix()

    async def main() -> None:
        a_link, b_link = await link_to(nats3.urls, prefix), await link_to(nats3.urls, prefix)
        a = directory(a_link, "same")
        await a.start()
        try:
            with pytest.raises(ClusterConfigError) as err:
                await directory(b_link, "same").start()
            message = str(err.value)
            assert message.startswith("a live node is already named same (at http://same:8484,")
            assert message.endswith(" s ago)")
        finally:
            await a.close()
            await a_link.close()
            await b_link.close()

    run(main())


def test_a_node_whose_connection_closes_leaves_within_ttl(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    ttl = 2.0

    async def main() -> None:
        a_link, b_link = await link_to(nats3.urls, prefix), await link_to(nats3.urls, prefix)
        a, b = directory(a_link, "a", ttl), directory(b_link, "b", ttl)
        await a.start()
        await b.start()
        try:
            await eventually(lambda: names(b) == ["a", "b"], 2, "b sees a")
            await a_link.close()  # no a.close(): a vanishes without a word
            assert names(b) == ["a", "b"]
            took = await eventually(lambda: names(b) == ["b"], ttl + 2, "b sees a expire")
            assert took > ttl / 2
        finally:
            await a.close()
            await b.close()
            await b_link.close()

    run(main())


def test_a_killed_node_leaves_within_ttl(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    ttl = 2.0

    async def main() -> None:
        link = await link_to(nats3.urls, prefix)
        b = directory(link, "b", ttl)
        await b.start()
        try:
            with holder_process(nats3.urls, prefix, "a", ttl) as proc:
                await eventually(lambda: names(b) == ["a", "b"], 3, "b sees a")
                proc.kill()
                proc.wait()
                await eventually(lambda: names(b) == ["b"], ttl + 2, "b sees killed a expire")
        finally:
            await b.close()
            await link.close()

    run(main())


# --- leases ------------------------------------------------------------------------------


def test_leases_are_exclusive_reacquirable_and_released(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    key = "rule/default/every-minute"

    async def main() -> None:
        a_link, b_link = await link_to(nats3.urls, prefix), await link_to(nats3.urls, prefix)
        a, b = NatsLeases(a_link, "a", 2.0), NatsLeases(b_link, "b", 2.0)
        await a.start()
        await b.start()
        try:
            assert await a.acquire(key)
            assert not await b.acquire(key)
            assert await a.acquire(key)
            assert a.held() == {key} and b.held() == frozenset()
            # renewed past its TTL: still a's
            await asyncio.sleep(3)
            assert a.held() == {key}
            assert not await b.acquire(key)
            await a.release(key)
            assert a.held() == frozenset()
            assert await b.acquire(key)
            assert not await a.acquire(key)
        finally:
            await a.close()
            await b.close()
            await a_link.close()
            await b_link.close()

    run(main())


def test_a_killed_holders_lease_is_free_after_ttl_and_not_before(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    ttl = 3.0
    key = str(uuid.uuid4())

    async def main() -> None:
        link = await link_to(nats3.urls, prefix)
        leases = NatsLeases(link, "b", ttl)
        await leases.start()
        try:
            with holder_process(nats3.urls, prefix, "a", ttl, key) as proc:
                assert not await leases.acquire(key)
                proc.kill()
                proc.wait()
                killed = time.monotonic()
                await eventually(lambda: leases.acquire(key), ttl + 3, "b takes the lease")
                waited = time.monotonic() - killed
            # a renewed at most ttl/3 before it died
            assert waited > ttl * 2 / 3 - 0.2
        finally:
            await leases.close()
            await link.close()

    run(main())


def test_a_cut_off_holder_loses_its_lease_before_another_can_take_it() -> None:
    # one server: a NATS cluster would tell the client its other servers, around the proxy
    ttl = 4.5
    key = "mapping-1"
    with lone_nats() as port, TcpProxy("127.0.0.1", port) as proxy:

        async def main() -> None:
            prefix = new_prefix()
            cut_link = await link_to([f"nats://127.0.0.1:{proxy.port}"], prefix, "a")
            other_link = await link_to([f"nats://127.0.0.1:{port}"], prefix, "b")
            cut, other = NatsLeases(cut_link, "a", ttl), NatsLeases(other_link, "b", ttl)
            lost: list[tuple[str, float]] = []

            async def on_lost(k: str) -> None:
                lost.append((k, time.monotonic()))

            cut.on_lost(on_lost)
            await cut.start()
            await other.start()
            cut_dir, other_dir = directory(cut_link, "a", ttl), directory(other_link, "b", ttl)
            await cut_dir.start()
            await other_dir.start()
            try:
                assert await cut.acquire(key)
                await eventually(lambda: names(cut_dir) == ["a", "b"], 3, "a sees b")
                await asyncio.sleep(0.5)
                await asyncio.to_thread(proxy.stop)
                cut_at = time.monotonic()
                await eventually(lambda: bool(lost), ttl, "the cut-off holder reports it lost")
                # given up while its entry still stands: nobody could have taken it yet
                assert not await other.acquire(key)
                assert lost[0][0] == key and cut.held() == frozenset()
                assert lost[0][1] - cut_at < ttl
                await eventually(lambda: other.acquire(key), ttl + 3, "another takes it")
                assert not cut_link.healthy and cut_link.problem is not None
                assert cut_link.problem.startswith("NATS unreachable since ")
                # the cut-off node keeps its view as last seen, marked stale; the others see
                # it leave
                await eventually(lambda: names(other_dir) == ["b"], ttl + 2, "b sees a leave")
                # (past the TTL of every entry it saw)
                await asyncio.sleep(max(0.0, cut_at + ttl + 0.2 - time.monotonic()))
                assert cut_dir.stale and names(cut_dir) == ["a", "b"]
                assert not other_dir.stale
            finally:
                await proxy_start(proxy)
                await cut_dir.close()
                await other_dir.close()
                await cut.close()
                await other.close()
                await cut_link.close()
                await other_link.close()

        run(main())


@contextlib.contextmanager
def lone_nats() -> Iterator[int]:
    """A JetStream server of its own, not in a cluster; its port."""
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen(
            [nats_server_bin(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(eventually(lambda: _listening(port), 10, "nats-server listening"))
            yield port
        finally:
            proc.kill()
            proc.wait()


async def proxy_start(proxy: TcpProxy) -> None:
    await asyncio.to_thread(proxy.start)


def test_killing_the_nats_server_keeps_leases_and_heartbeats(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    ttl = 6.0
    key = "schedule/x"

    async def main() -> None:
        # The victim leads neither bucket's stream: a stream whose leader is killed -9 has
        # none until its servers elect one (JetStream's election timeout is 4 to 9 s), and
        # no lease can be renewed for that long. Leases and heartbeats survive losing the
        # server a node is connected to; losing a stream leader may cost every lease.
        b_link = await link_to(nats3.urls, prefix, "b")
        leaders = set()
        for bucket in ("leases", "nodes"):
            kv = await b_link.key_value(bucket, ttl_s=ttl)
            info = (await kv.status()).stream_info
            assert info.cluster is not None
            leaders.add(info.cluster.leader)
        victim = next(s for s in nats3.servers if s.name not in leaders)
        await b_link.close()
        others = [s.url for s in nats3.servers if s is not victim]
        b_link = await link_to(others, prefix, "b")
        # a knows only the victim at first; the server tells it the others
        a_link = await link_to([victim.url], prefix, "a")
        url = a_link.connected_url
        assert url == victim.url
        a_dir, b_dir = directory(a_link, "a", ttl), directory(b_link, "b", ttl)
        leases = NatsLeases(a_link, "a", ttl)
        lost: list[str] = []

        async def on_lost(k: str) -> None:
            lost.append(k)

        leases.on_lost(on_lost)
        await a_dir.start()
        await b_dir.start()
        await leases.start()
        try:
            assert await leases.acquire(key)
            await eventually(lambda: names(b_dir) == ["a", "b"], 3, "b sees a")
            await asyncio.to_thread(victim.kill)
            await eventually(
                lambda: a_link.healthy and a_link.connected_url != url, 15, "a reconnects"
            )
            beat = {n.name: n for n in b_dir.live()}["a"].heartbeat_at
            await asyncio.sleep(ttl * 1.5)
            assert leases.held() == {key} and not lost
            entry = await leases.kv.get(kv_key(key))
            assert entry.value == b"a"
            seen = {n.name: n for n in b_dir.live()}
            assert "a" in seen and seen["a"].heartbeat_at > beat + ttl
            # and a's watcher (its consumer may have died with the server) still hears b
            seen = {n.name: n for n in a_dir.live()}
            assert "b" in seen and seen["b"].heartbeat_at > beat + ttl
            assert not a_dir.stale
        finally:
            await asyncio.to_thread(_restart, nats3, victim)
            await leases.close()
            await a_dir.close()
            await b_dir.close()
            await a_link.close()
            await b_link.close()

    run(main())


def _restart(cluster: NatsCluster, server: Any) -> None:
    server.start()
    cluster.wait_ready()


# --- code blobs --------------------------------------------------------------------------


def test_blobs_round_trip_verified(nats3: NatsCluster, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "code.zip"
    source.write_bytes(data)

    async def main() -> None:
        link = await link_to(nats3.urls, new_prefix())
        blobs = NatsBlobStore(link)
        try:
            assert not await blobs.fetch(digest, tmp_path / "absent")
            await blobs.put(digest, source)
            await blobs.put(digest, source)  # present: nothing to do
            dest = tmp_path / "out" / "code.zip"
            assert await blobs.fetch(digest, dest)
            assert dest.read_bytes() == data
            assert sorted(p.name for p in dest.parent.iterdir()) == ["code.zip"]

            # an object whose content is not its name's is refused, and nothing is written
            wrong = hashlib.sha256(b"other").hexdigest()
            obs = await link.object_store("code")
            await obs.put(wrong, data[:1000])
            with pytest.raises(CorruptBlob):
                await blobs.fetch(wrong, tmp_path / "bad" / "code.zip")
            assert list((tmp_path / "bad").iterdir()) == []
            # a file stored under a digest that is not its own is refused and not kept
            misnamed = hashlib.sha256(b"x").hexdigest()
            with pytest.raises(CorruptBlob):
                await blobs.put(misnamed, source)
            assert not await blobs.fetch(misnamed, tmp_path / "misnamed")

            await blobs.delete(digest)
            await blobs.delete(digest)
            assert not await blobs.fetch(digest, tmp_path / "gone")
        finally:
            await link.close()

    run(main())


# --- the change feed ---------------------------------------------------------------------


def test_feed_tells_other_nodes_and_resyncs_after_a_reconnect(nats3: NatsCluster) -> None:
    prefix = new_prefix()
    with TcpProxy("127.0.0.1", nats3.servers[0].port) as proxy:

        async def main() -> None:
            a_link = await link_to(nats3.urls, prefix, "a")
            b_link = await link_to([f"nats://127.0.0.1:{proxy.port}"], prefix, "b")
            a, b = NatsFeed(a_link, "a"), NatsFeed(b_link, "b")
            heard_a: list[tuple[str, str]] = []
            heard_b: list[tuple[str, str]] = []

            async def record_a(area: str, key: str) -> None:
                heard_a.append((area, key))

            async def failing(area: str, key: str) -> None:
                raise RuntimeError("a handler's bug")

            async def record_b(area: str, key: str) -> None:
                heard_b.append((area, key))

            a.subscribe(record_a)
            b.subscribe(failing)
            b.subscribe(record_b)
            await a.start()
            await b.start()
            await b_link.nc.flush()

            async def connected(sender: NatsFeed, heard: list[tuple[str, str]]) -> None:
                """Until the servers have told each other of the subscriptions (a NATS
                cluster drops what is published before that; a node starting loads after
                subscribing, so it misses nothing it needs)."""

                async def probed() -> bool:
                    await sender.publish("function", "probe")
                    await asyncio.sleep(0.1)
                    return bool(heard)

                await eventually(probed, 15, "the subscription known across the cluster")
                await asyncio.sleep(0.2)  # late probes
                heard.clear()

            try:
                await connected(a, heard_b)
                await connected(b, heard_a)
                await a.publish("function", "my-fn")
                await a.publish("rule", "default/every-minute")
                await eventually(lambda: len(heard_b) == 2, 5, "b hears a's two changes")
                assert heard_b == [("function", "my-fn"), ("rule", "default/every-minute")]
                await b.publish("role", "r")
                await eventually(lambda: heard_a == [("role", "r")], 5, "a hears b's change")
                assert heard_b[2:] == []

                # b is cut off (it reconnects, here to another server of the cluster): it
                # may have missed changes, so its handlers re-read every area
                await asyncio.to_thread(proxy.stop)
                await eventually(lambda: len(heard_b) >= 2 + len(AREAS), 15, "b resyncs")
                assert heard_b[2 : 2 + len(AREAS)] == [(area, "*") for area in AREAS]
                assert heard_a == [("role", "r")]
            finally:
                await a.close()
                await b.close()
                await a_link.close()
                await b_link.close()

        run(main())
