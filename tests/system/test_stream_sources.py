"""The stream sources against real brokers: NATS JetStream (127.0.0.1:4222) and Redis
(127.0.0.1:6379), each test on a stream of its own, removed afterwards; the broker-restart
tests start their own nats-server / redis-server on a free port.

What is checked: records in order with their Kinesis shape, checkpoint then reopen resumes after
the checkpoint, records read but not checkpointed are read again (in order) after a reopen,
starting positions (and that they apply only to a new consumer), lag, the delivery rules over a
real source (partial batch failure), an unreachable or restarted broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis
from tests.conftest import free_port

from lamina.events.sources.api import (
    MappingStats,
    Outcome,
    SourceUnavailable,
    StreamRecord,
)
from lamina.events.sources.nats import NatsStream, consumer_name
from lamina.events.sources.redis_streams import RedisStream, group_name
from lamina.events.sources.streams import Pacing, deliver_stream
from lamina.mappings import Connection, EventSourceMapping, MappingState, SourceKind

pytestmark = pytest.mark.system

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
FAST = Pacing(function_error=(0.01, 0.02), throttle=(0.01, 0.02), poll_s=0.2, lag_every_s=0.0)


def mapping(kind: SourceKind, stream: str, **kw: Any) -> EventSourceMapping:
    service = "nats" if kind is SourceKind.NATS else "redis"
    m = EventSourceMapping(
        uuid=str(uuid.uuid4()),
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn=f"arn:aws:{service}:us-east-1:000000000000:broker:local:stream/{stream}",
        kind=kind,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=0.0,
        last_result="",
        batch_size=10,
        batching_window_s=0,
        starting_position="TRIM_HORIZON",
    )
    return replace(m, **kw)


def datas(records: Sequence[StreamRecord]) -> list[bytes]:
    return [r.data for r in records]


async def read_all(source: Any, at_least: int, within_s: float = 5.0) -> list[StreamRecord]:
    out: list[StreamRecord] = []
    deadline = time.monotonic() + within_s
    while len(out) < at_least and time.monotonic() < deadline:
        out += await source.read(100, 0.2)
    return out


# NATS


async def ack_floor(js: Any, stream: str, consumer: str, expected: int) -> Any:
    """The consumer's info once its ack floor reached `expected` (or after 5 s): the server
    applies acks to the consumer after it has answered the flush that sent them."""
    deadline = time.monotonic() + 5.0
    while True:
        info = await js.consumer_info(stream, consumer)
        if info.ack_floor.stream_seq >= expected or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def nats_stream(url: str = NATS_URL) -> AsyncIterator[tuple[str, Any]]:
    """A JetStream stream of its own (subjects `<name>.>`) and a publisher; removed after."""
    name = "t" + uuid.uuid4().hex[:12]
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield name, js
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        await nc.close()


def nats_source(m: EventSourceMapping, stream: str, url: str = NATS_URL) -> NatsStream:
    return NatsStream(m, Connection(SourceKind.NATS, url, stream=stream))


def test_nats_records_in_order_with_kinesis_shape() -> None:
    async def main() -> None:
        async with nats_stream() as (name, js):
            before = time.time()
            for i in range(5):
                await js.publish(f"{name}.key{i % 2}", f"m{i}".encode())
            m = mapping(SourceKind.NATS, name)
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            try:
                got = await read_all(source, 5)
            finally:
                await source.close()
            assert datas(got) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
            assert [r.sequence for r in got] == ["1", "2", "3", "4", "5"]
            assert [r.key for r in got] == [f"{name}.key0", f"{name}.key1"] * 2 + [f"{name}.key0"]
            assert before - 1 <= got[0].arrived_at <= time.time() + 1
            kinesis = got[1].record["kinesis"]
            assert kinesis["partitionKey"] == f"{name}.key1"
            assert kinesis["sequenceNumber"] == "2"
            assert base64.b64decode(kinesis["data"]) == b"m1"
            assert got[1].record["eventSource"] == "lamina:nats"
            assert got[1].record["eventSourceARN"] == m.source_arn

    asyncio.run(main())


def test_nats_reopen_resumes_after_checkpoint_and_rereads_the_rest_in_order() -> None:
    async def main() -> None:
        async with nats_stream() as (name, js):
            for i in range(6):
                await js.publish(f"{name}.a", f"m{i}".encode())
            m = mapping(SourceKind.NATS, name)
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            got = await read_all(source, 6)
            await source.checkpoint(got[:2])
            await source.close()  # m2..m5 were read, never checkpointed
            await js.publish(f"{name}.a", b"m6")

            again = nats_source(m, name)
            # a different starting position changes nothing: the consumer exists
            await again.open("LATEST", None)
            try:
                got = await read_all(again, 5)
                assert datas(got) == [b"m2", b"m3", b"m4", b"m5", b"m6"]
                await again.checkpoint(got)
                info = await ack_floor(js, name, consumer_name(m), 7)
                assert info.ack_floor.stream_seq == 7
            finally:
                await again.close()

            third = nats_source(m, name)
            await third.open("TRIM_HORIZON", None)
            try:
                assert await third.read(10, 0.3) == []
            finally:
                await third.close()

    asyncio.run(main())


def test_nats_redelivery_of_held_records_is_not_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record held past the ack wait (a long retry) is sent again by the server: the
    source hands it out once, and the checkpoint acks it for good."""
    monkeypatch.setattr("lamina.events.sources.nats.ACK_WAIT_S", 1.0)

    async def main() -> None:
        async with nats_stream() as (name, js):
            await js.publish(f"{name}.a", b"m0")
            await js.publish(f"{name}.a", b"m1")
            m = mapping(SourceKind.NATS, name)
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            try:
                got = await read_all(source, 2)
                await asyncio.sleep(1.5)  # past the ack wait: the server sends them again
                await js.publish(f"{name}.a", b"m2")
                later = await read_all(source, 1, within_s=2.0)
                assert datas(later) == [b"m2"]
                await source.checkpoint([*got, *later])
                info = await ack_floor(js, name, consumer_name(m), 3)
                assert info.ack_floor.stream_seq == 3
                assert info.num_ack_pending == 0
            finally:
                await source.close()

    asyncio.run(main())


def test_nats_starting_positions() -> None:
    async def main() -> None:
        async with nats_stream() as (name, js):
            await js.publish(f"{name}.a", b"old1")
            await js.publish(f"{name}.a", b"old2")
            await asyncio.sleep(0.05)
            cut = time.time()
            await asyncio.sleep(0.05)
            await js.publish(f"{name}.a", b"new1")

            latest = nats_source(mapping(SourceKind.NATS, name), name)
            at = nats_source(mapping(SourceKind.NATS, name), name)
            horizon = nats_source(mapping(SourceKind.NATS, name), name)
            await latest.open("LATEST", None)
            await at.open("AT_TIMESTAMP", cut)
            await horizon.open("TRIM_HORIZON", None)
            try:
                await js.publish(f"{name}.a", b"new2")
                assert datas(await read_all(latest, 1)) == [b"new2"]
                assert datas(await read_all(at, 2)) == [b"new1", b"new2"]
                assert datas(await read_all(horizon, 4)) == [b"old1", b"old2", b"new1", b"new2"]
            finally:
                for s in (latest, at, horizon):
                    await s.close()

    asyncio.run(main())


def test_nats_lag_and_forget() -> None:
    async def main() -> None:
        async with nats_stream() as (name, js):
            for i in range(5):
                await js.publish(f"{name}.a", f"m{i}".encode())
            m = mapping(SourceKind.NATS, name)
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            assert await source.lag() == 5
            got = await source.read(2, 1.0)
            assert len(got) == 2
            assert await source.lag() == 3
            await source.forget()
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.consumer_info(name, consumer_name(m))

    asyncio.run(main())


def test_nats_unknown_stream_and_unreachable_server() -> None:
    async def main() -> None:
        missing = "t" + uuid.uuid4().hex[:12]
        source = nats_source(mapping(SourceKind.NATS, missing), missing)
        with pytest.raises(SourceUnavailable, match=f"NATS stream {missing} does not exist"):
            await source.open("TRIM_HORIZON", None)
        port = free_port()
        url = f"nats://user:secret@127.0.0.1:{port}"
        down = nats_source(mapping(SourceKind.NATS, "x"), "x", url)
        with pytest.raises(SourceUnavailable, match="cannot be reached") as raised:
            await down.open("TRIM_HORIZON", None)
        assert "secret" not in str(raised.value)

    asyncio.run(main())


class Recorder:
    """An invoker whose function fails records whose data is `bad` (ReportBatchItemFailures)
    until told otherwise."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.fail = True

    async def invoke(self, m: EventSourceMapping, event: dict[str, Any]) -> Outcome:
        failures = []
        for r in event["Records"]:
            data = base64.b64decode(r["kinesis"]["data"])
            self.seen.append(data)
            if data == b"bad" and self.fail:
                failures.append({"itemIdentifier": r["kinesis"]["sequenceNumber"]})
        return Outcome("ok", json.dumps({"batchItemFailures": failures}).encode())

    async def send_to_failure_destination(
        self, m: EventSourceMapping, record: dict[str, Any]
    ) -> None:
        raise AssertionError("no destination here")


async def deliver_for(m: EventSourceMapping, source: Any, invoker: Recorder, s: float) -> None:
    task = asyncio.create_task(
        deliver_stream(m, source, invoker, lambda r: None, MappingStats(), pacing=FAST)
    )
    await asyncio.sleep(s)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_nats_delivery_checkpoints_up_to_the_failed_record() -> None:
    async def main() -> None:
        async with nats_stream() as (name, js):
            for data in (b"a", b"b", b"bad", b"c"):
                await js.publish(f"{name}.k", data)
            m = mapping(SourceKind.NATS, name, report_batch_item_failures=True)
            invoker = Recorder()
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            try:
                await deliver_for(m, source, invoker, 0.5)
            finally:
                await source.close()
            assert invoker.seen[:4] == [b"a", b"b", b"bad", b"c"]
            assert set(invoker.seen[4:]) == {b"bad", b"c"}  # retried from the failed one
            info = await ack_floor(js, name, consumer_name(m), 2)
            assert info.ack_floor.stream_seq == 2

            invoker.fail = False
            invoker.seen.clear()
            source = nats_source(m, name)
            await source.open("TRIM_HORIZON", None)
            try:
                await deliver_for(m, source, invoker, 0.5)
            finally:
                await source.close()
            assert invoker.seen == [b"bad", b"c"]
            info = await ack_floor(js, name, consumer_name(m), 4)
            assert info.ack_floor.stream_seq == 4

    asyncio.run(main())


@contextlib.contextmanager
def own_nats_server() -> Iterator[tuple[str, Any]]:
    """A nats-server with JetStream on a free port and a store of its own, and (stop, start)
    to stop it (SIGTERM: a restart, not a crash, which could lose the server's own last writes)
    and start it again on the same port and store."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed")
    port = free_port()
    store = Path(tempfile.mkdtemp(prefix="lamina-nats-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        _wait_port(port)

    def kill() -> None:
        procs[-1].terminate()
        procs[-1].wait()

    start()
    try:
        yield f"nats://127.0.0.1:{port}", (kill, start)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(store, ignore_errors=True)


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_nats_server_restart_is_reported_then_resumed() -> None:
    with own_nats_server() as (url, (kill, start)):

        async def main() -> None:
            async with nats_stream(url) as (name, js):
                for i in range(4):
                    await js.publish(f"{name}.a", f"m{i}".encode())
                m = mapping(SourceKind.NATS, name)
                source = nats_source(m, name, url)
                await source.open("TRIM_HORIZON", None)
                got = await read_all(source, 4)
                await source.checkpoint(got[:2])
                kill()
                with pytest.raises(SourceUnavailable):
                    await source.read(10, 0.5)
                await source.close()
                start()
                again = nats_source(m, name, url)
                await again.open("TRIM_HORIZON", None)
                try:
                    assert datas(await read_all(again, 2)) == [b"m2", b"m3"]
                finally:
                    await again.close()

        asyncio.run(main())


# Redis


@contextlib.asynccontextmanager
async def redis_stream(url: str = REDIS_URL) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    key = "lamina-test-" + uuid.uuid4().hex
    r = aioredis.from_url(url)
    try:
        yield key, r
    finally:
        with contextlib.suppress(Exception):
            await r.delete(key)
        await r.aclose()


def redis_source(m: EventSourceMapping, key: str, url: str = REDIS_URL) -> RedisStream:
    return RedisStream(m, Connection(SourceKind.REDIS, url, stream=key))


def test_redis_records_with_fields_mapped_to_kinesis() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            id1 = (await r.xadd(key, {"data": b"\x00raw", "partitionKey": "p1"})).decode()
            id2 = (await r.xadd(key, {"a": "1", "b": "two"})).decode()
            m = mapping(SourceKind.REDIS, key)
            source = redis_source(m, key)
            await source.open("TRIM_HORIZON", None)
            try:
                got = await read_all(source, 2)
            finally:
                await source.close()
            assert [r.sequence for r in got] == [id1, id2]
            assert got[0].data == b"\x00raw"
            assert got[0].key == "p1"
            assert json.loads(got[1].data) == {"a": "1", "b": "two"}
            assert got[1].key == id2
            assert got[0].arrived_at == int(id1.split("-")[0]) / 1000
            assert got[0].record["eventSource"] == "lamina:redis"
            assert got[1].record["kinesis"]["partitionKey"] == id2
            assert got[0].record["eventID"] == f"shardId-000000000000:{id1}"

    asyncio.run(main())


def test_redis_reopen_rereads_pending_first_then_new() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            for i in range(5):
                await r.xadd(key, {"data": f"m{i}"})
            m = mapping(SourceKind.REDIS, key)
            source = redis_source(m, key)
            await source.open("TRIM_HORIZON", None)
            got = await read_all(source, 5)
            await source.checkpoint(got[:2])
            await source.close()
            await r.xadd(key, {"data": "m5"})

            again = redis_source(m, key)
            await again.open("LATEST", None)  # the group exists: its place stands
            try:
                got = await read_all(again, 4)
                assert datas(got) == [b"m2", b"m3", b"m4", b"m5"]
                await again.checkpoint(got)
                pending = await r.xpending(key, group_name(m))
                assert pending["pending"] == 0
            finally:
                await again.close()

    asyncio.run(main())


def test_redis_starting_positions_and_lag() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            await r.xadd(key, {"data": "old"})
            await asyncio.sleep(0.01)
            cut = time.time()
            await asyncio.sleep(0.01)
            await r.xadd(key, {"data": "new1"})
            latest = redis_source(mapping(SourceKind.REDIS, key), key)
            at = redis_source(mapping(SourceKind.REDIS, key), key)
            horizon = redis_source(mapping(SourceKind.REDIS, key), key)
            await latest.open("LATEST", None)
            await at.open("AT_TIMESTAMP", cut)
            await horizon.open("TRIM_HORIZON", None)
            try:
                await r.xadd(key, {"data": "new2"})
                assert await horizon.lag() == 3
                assert datas(await read_all(latest, 1)) == [b"new2"]
                assert datas(await read_all(at, 2)) == [b"new1", b"new2"]
                assert datas(await read_all(horizon, 3)) == [b"old", b"new1", b"new2"]
                assert await horizon.lag() == 0
            finally:
                for s in (latest, at, horizon):
                    await s.close()

    asyncio.run(main())


def test_redis_at_timestamp_includes_the_exact_millisecond() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            await r.xadd(key, {"data": "before"}, id="1000-5")
            await r.xadd(key, {"data": "at"}, id="2000-0")
            source = redis_source(mapping(SourceKind.REDIS, key), key)
            await source.open("AT_TIMESTAMP", 2.0)
            try:
                assert datas(await read_all(source, 1)) == [b"at"]
            finally:
                await source.close()

    asyncio.run(main())


def test_redis_delivery_and_forget() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            for data in ("a", "bad", "b"):
                await r.xadd(key, {"data": data})
            m = mapping(SourceKind.REDIS, key, report_batch_item_failures=True)
            invoker = Recorder()
            source = redis_source(m, key)
            await source.open("TRIM_HORIZON", None)
            try:
                await deliver_for(m, source, invoker, 0.5)
            finally:
                await source.close()
            pending = await r.xpending(key, group_name(m))
            assert pending["pending"] == 2  # "bad" and what follows it
            invoker.fail = False
            invoker.seen.clear()
            source = redis_source(m, key)
            await source.open("TRIM_HORIZON", None)
            await deliver_for(m, source, invoker, 0.5)
            assert invoker.seen == [b"bad", b"b"]
            assert (await r.xpending(key, group_name(m)))["pending"] == 0
            await source.forget()
            assert await r.xinfo_groups(key) == []

    asyncio.run(main())


def test_redis_wrong_type_and_unreachable() -> None:
    async def main() -> None:
        async with redis_stream() as (key, r):
            await r.set(key, "not a stream")
            source = redis_source(mapping(SourceKind.REDIS, key), key)
            with pytest.raises(SourceUnavailable, match="WRONGTYPE"):
                await source.open("TRIM_HORIZON", None)
        port = free_port()
        down = redis_source(
            mapping(SourceKind.REDIS, "x"), "x", f"redis://:secret@127.0.0.1:{port}/0"
        )
        with pytest.raises(SourceUnavailable) as raised:
            await down.open("TRIM_HORIZON", None)
        assert "secret" not in str(raised.value)

    asyncio.run(main())


def test_redis_server_restart_is_reported_then_resumed() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="lamina-redis-"))
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]

    def start() -> subprocess.Popen[bytes]:
        started = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(port)
        return started

    proc = start()
    url = f"redis://127.0.0.1:{port}/0"
    try:

        async def main() -> None:
            nonlocal proc
            async with redis_stream(url) as (key, r):
                for i in range(4):
                    await r.xadd(key, {"data": f"m{i}"})
                m = mapping(SourceKind.REDIS, key)
                source = redis_source(m, key, url)
                await source.open("TRIM_HORIZON", None)
                got = await read_all(source, 4)
                await source.checkpoint(got[:2])
                proc.kill()
                proc.wait()
                with pytest.raises(SourceUnavailable):
                    await source.read(10, 0.2)
                await source.close()
                proc = start()
                again = redis_source(m, key, url)
                await again.open("TRIM_HORIZON", None)
                try:
                    assert datas(await read_all(again, 2)) == [b"m2", b"m3"]
                finally:
                    await again.close()

        asyncio.run(main())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
