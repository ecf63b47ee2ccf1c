"""The RabbitMQ source (`events/sources/rabbitmq.py`) against the real broker at
127.0.0.1:5672: receiving, acknowledging, releasing (redelivery, then the queue's own
dead-lettering), Lambda's `aws:rmq` event, and every way the broker can be unusable."""

from __future__ import annotations

import asyncio
import base64
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from tests._rabbit import HOST, PORT, URL, count, declare, private_vhost, publish, vhost_url
from tests._tcp_proxy import TcpProxy
from tests.conftest import free_port

from lamina.events.sources.api import SourceUnavailable
from lamina.events.sources.rabbitmq import RabbitSource
from lamina.mappings import Connection, EventSourceMapping, MappingState, SourceKind

pytestmark = pytest.mark.system

BROKER_ARN = "arn:aws:mq:us-east-1:000000000000:broker:test:b-0b6a2d1e-9c0b-4f0e-9a57-0c7d4e1f2a3b"


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    with private_vhost() as name:
        yield name


def mapping(queue: str, batch_size: int = 10, concurrency: int | None = None) -> Any:
    return EventSourceMapping(
        uuid=str(uuid.uuid4()),
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn=BROKER_ARN,
        kind=SourceKind.RABBITMQ,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=time.time(),
        last_result="No records processed",
        batch_size=batch_size,
        batching_window_s=0,
        maximum_concurrency=concurrency,
        queues=(queue,),
    )


def source(
    vhost: str, queue: str, url: str = URL, batch_size: int = 10, concurrency: int | None = None
) -> RabbitSource:
    return RabbitSource(
        mapping(queue, batch_size, concurrency),
        Connection(kind=SourceKind.RABBITMQ, url=url, virtual_host=vhost),
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def new_queue(vhost: str, arguments: dict[str, Any] | None = None) -> str:
    queue = f"q-{uuid.uuid4().hex[:10]}"
    await declare(vhost, queue, arguments)
    return queue


async def receive_all(src: RabbitSource, n: int, within_s: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + within_s
    while len(got) < n and time.monotonic() < deadline:
        got += await src.receive(n - len(got), 0.5)
    return got


def bodies(messages: list[Any]) -> list[bytes]:
    return [m.body for m in messages]


def test_receive_acknowledge_and_backlog(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        sent = [f"m{i}".encode() for i in range(25)]
        await publish(vhost, queue, sent)
        src = source(vhost, queue, batch_size=10)
        await src.open()
        got: list[Any] = []
        while len(got) < 25:
            batch = await src.receive(10, 5)
            assert 0 < len(batch) <= 10
            await src.acknowledge(batch)
            got += batch
        assert sorted(bodies(got)) == sorted(sent)
        assert len({m.id for m in got}) == 25
        assert await src.backlog() == 0
        await src.close()
        await src.close()  # a second close does nothing
        assert await count(vhost, queue) == 0  # acknowledged: gone for good

    run(test)


def test_receive_waits_up_to_wait_s_and_caps_at_max(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        src = source(vhost, queue, batch_size=5)
        await src.open()
        try:
            started = time.monotonic()
            assert await src.receive(5, 0.3) == []
            assert 0.25 <= time.monotonic() - started < 2
            await publish(vhost, queue, [b"a", b"b", b"c", b"d", b"e", b"f", b"g"])
            await asyncio.sleep(0.3)
            first = await src.receive(3, 1)
            assert bodies(first) == [b"a", b"b", b"c"]  # in queue order, at most max
            rest = await receive_all(src, 4)
            assert bodies(rest) == [b"d", b"e", b"f", b"g"]
            await src.acknowledge(rest)
            await src.acknowledge(first)  # out of order: one frame each
            assert await src.backlog() == 0
        finally:
            await src.close()
        assert await count(vhost, queue) == 0

    run(test)


def test_prefetch_bounds_what_the_broker_hands_over(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        await publish(vhost, queue, [str(i).encode() for i in range(100)])
        src = source(vhost, queue, batch_size=10)  # one poller: 2 batches in hand at most
        assert src.prefetch == 20
        await src.open()
        try:
            await asyncio.sleep(0.5)
            held = await src.receive(1000, 0.5)
            assert len(held) == 20
            assert await src.backlog() == 80
            await src.acknowledge(held)
            more = await receive_all(src, 20)
            assert len(more) == 20
            await src.release(more)
        finally:
            await src.close()
        assert await count(vhost, queue) == 80
        assert source(vhost, queue, batch_size=10, concurrency=4).prefetch == 80
        assert source(vhost, queue, batch_size=10_000, concurrency=10).prefetch == 65535

    run(test)


def test_release_redelivers_with_the_redelivered_flag(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        await publish(vhost, queue, [b"x", b"y"])
        src = source(vhost, queue)
        await src.open()
        try:
            first = await receive_all(src, 2)
            assert [m.record["redelivered"] for m in first] == [False, False]
            await src.release(first)
            again = await receive_all(src, 2)
            assert sorted(bodies(again)) == [b"x", b"y"]
            assert [m.record["redelivered"] for m in again] == [True, True]
            await src.acknowledge(again)
        finally:
            await src.close()
        assert await count(vhost, queue) == 0

    run(test)


def test_the_queues_delivery_limit_then_dead_letters(vhost: str) -> None:
    """After the retries the broker's policy applies, as on Lambda: a quorum queue with
    `x-delivery-limit` dead-letters the message to its dead-letter exchange."""

    async def test() -> None:
        dlq = await new_queue(vhost)
        queue = await new_queue(
            vhost,
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": 2,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        )
        await publish(vhost, queue, [b"poison"])
        src = source(vhost, queue)
        await src.open()
        try:
            deliveries = 0
            while True:
                got = await src.receive(10, 2)
                if not got:
                    break
                deliveries += 1
                await src.release(got)
        finally:
            await src.close()
        assert deliveries == 3  # the first delivery and two redeliveries
        assert await count(vhost, dlq) == 1
        assert await count(vhost, queue) == 0

    run(test)


def test_close_hands_everything_back(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        await publish(vhost, queue, [b"1", b"2", b"3", b"4"])
        src = source(vhost, queue, batch_size=10)
        await src.open()
        held = await receive_all(src, 2)  # with "the runner"; the other two still buffered
        await src.close()
        with pytest.raises(SourceUnavailable):
            await src.acknowledge(held)  # too late: the broker has them again
        other = source(vhost, queue)
        await other.open()
        try:
            back = await receive_all(other, 4)
            assert sorted(bodies(back)) == [b"1", b"2", b"3", b"4"]
            assert all(m.record["redelivered"] for m in back)
            await other.acknowledge(back)
        finally:
            await other.close()

    run(test)


def test_reopen_after_close(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        src = source(vhost, queue)
        await src.open()
        await src.close()
        with pytest.raises(SourceUnavailable, match="not connected"):
            await src.receive(1, 0)
        await publish(vhost, queue, [b"after"])
        await src.open()
        try:
            got = await receive_all(src, 1)
            assert bodies(got) == [b"after"]
            await src.acknowledge(got)
        finally:
            await src.close()

    run(test)


def test_aws_rmq_event_with_every_property(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        stamp = datetime(2024, 3, 9, 14, 5, 7, tzinfo=UTC)
        body = b'{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}'
        await publish(
            vhost,
            queue,
            [body],
            content_type="application/json",
            content_encoding="utf-8",
            headers={
                "header1": "value1",
                "unicode": "é",
                "numberInHeader": 10,
                "flag": True,
                "ratio": 0.5,
                "raw": bytearray(b"\x00\xff"),
                "price": Decimal("12.5"),
                "nested": {"k": "v", "n": [1, "two"]},
                "nothing": None,
            },
            delivery_mode=2,
            priority=7,
            correlation_id="corr-1",
            reply_to="replies",
            expiration=60,
            message_id="msg-1",
            timestamp=stamp,
            type="order.created",
            user_id="guest",
            app_id="shop",
        )
        # with as few properties as a client sends (aio-pika's Message would fill some in)
        conn = await aio_pika.connect(vhost_url(vhost))
        async with conn:
            channel = await (await conn.channel()).get_underlay_channel()
            await channel.basic_publish(b"plain", routing_key=queue)
        src = source(vhost, queue)
        await src.open()
        try:
            got = await receive_all(src, 2)
            event = src.event(got)
            await src.acknowledge(got)
        finally:
            await src.close()

        assert list(event) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
        assert event["eventSource"] == "aws:rmq"
        assert event["eventSourceArn"] == BROKER_ARN
        assert list(event["rmqMessagesByQueue"]) == [f"{queue}::{vhost}"]
        full, plain = event["rmqMessagesByQueue"][f"{queue}::{vhost}"]
        assert full == {
            "basicProperties": {
                "contentType": "application/json",
                "contentEncoding": "utf-8",
                "headers": {
                    "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
                    "unicode": {"bytes": [-61, -87]},  # Java's signed bytes of UTF-8 "é"
                    "numberInHeader": 10,
                    "flag": True,
                    "ratio": 0.5,
                    "raw": [0, -1],
                    "price": 12.5,
                    "nested": {"k": {"bytes": [118]}, "n": [1, {"bytes": [116, 119, 111]}]},
                    "nothing": None,
                },
                "deliveryMode": 2,
                "priority": 7,
                "correlationId": "corr-1",
                "replyTo": "replies",
                "expiration": "60000",
                "messageId": "msg-1",
                "timestamp": "Mar 9, 2024, 2:05:07 PM",
                "type": "order.created",
                "userId": "guest",
                "appId": "shop",
                "clusterId": "",  # what aio-pika's publisher sends: present, empty
                "bodySize": len(body),
            },
            "redelivered": False,
            "data": base64.b64encode(body).decode(),
        }
        props = plain["basicProperties"]
        assert list(props) == list(full["basicProperties"])  # every key, always
        absent = [
            "contentType",
            "contentEncoding",
            "headers",
            "priority",
            "correlationId",
            "replyTo",
            "expiration",
            "timestamp",
            "type",
            "userId",
            "appId",
        ]  # aiormq's publisher always sets deliveryMode, messageId and an empty clusterId
        assert {k: props[k] for k in absent} == dict.fromkeys(absent)
        assert props["bodySize"] == 5
        assert base64.b64decode(plain["data"]) == b"plain"
        assert src.failed_ids({"batchItemFailures": []}, got) is None

    run(test)


# -- the broker unusable ----------------------------------------------------------------------


def unavailable(src: RabbitSource) -> str:
    async def test() -> str:
        try:
            await src.open()
        except SourceUnavailable as exc:
            return str(exc)
        finally:
            await src.close()
        raise AssertionError("open() succeeded")

    return asyncio.run(asyncio.wait_for(test(), 30))


def test_unreachable_broker(vhost: str) -> None:
    port = free_port()
    text = unavailable(source(vhost, "q", url=f"amqp://guest:guest@127.0.0.1:{port}/"))
    assert text == f"cannot reach broker at 127.0.0.1:{port}: connection refused"


def test_bad_password_is_named_without_the_password(vhost: str) -> None:
    text = unavailable(source(vhost, "q", url=f"amqp://guest:s3cr3t-pw@{HOST}:{PORT}/"))
    assert text == "authentication failed for user guest"
    assert "s3cr3t" not in text


def test_missing_queue(vhost: str) -> None:
    text = unavailable(source(vhost, "no-such-queue"))
    assert text == f"queue no-such-queue does not exist in virtual host {vhost}"


def test_missing_virtual_host() -> None:
    text = unavailable(source("lamina-absent-" + uuid.uuid4().hex, "q"))
    assert text.startswith("virtual host lamina-absent-")
    assert text.endswith(" does not exist")


def test_queue_deleted_while_consuming(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        src = source(vhost, queue)
        await src.open()
        try:
            conn = await aio_pika.connect(vhost_url(vhost))
            async with conn:
                channel = await conn.channel()
                await channel.queue_delete(queue)
            with pytest.raises(SourceUnavailable, match=f"queue {queue} .* was deleted"):
                await src.receive(10, 0.5)
            with pytest.raises(SourceUnavailable, match=queue):
                await src.backlog()
        finally:
            await src.close()

    run(test)


# aiormq 6.9 leaves the StreamWriter of a connection cut by the peer unclosed (its writer
# task is cancelled before it closes the writer), which Python reports as a ResourceWarning
# when the object is collected; harmless, and nothing of ours to close. The test collects
# garbage before it ends, so that the report lands here and not in a later test.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <function (StreamWriter|_SelectorTransport)\.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
def test_connection_lost_midway_then_reopened(vhost: str) -> None:
    async def test() -> None:
        queue = await new_queue(vhost)
        await publish(vhost, queue, [b"a", b"b", b"c"])
        with TcpProxy(HOST, PORT) as proxy:
            url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
            src = source(vhost, queue, url=url)
            await src.open()
            try:
                held = await receive_all(src, 3)
                assert len(held) == 3
                await asyncio.to_thread(proxy.stop)
                with pytest.raises(SourceUnavailable) as lost:
                    for _ in range(20):
                        await src.receive(10, 0.5)
                assert f"127.0.0.1:{proxy.port}" in str(lost.value)
                with pytest.raises(SourceUnavailable):
                    await src.acknowledge(held)
                with pytest.raises(SourceUnavailable, match="connection refused"):
                    await src.open()
                await asyncio.to_thread(proxy.start)
                await src.open()
                again = await receive_all(src, 3)
                assert sorted(bodies(again)) == [b"a", b"b", b"c"]  # nothing lost
                await src.acknowledge(again)
            finally:
                await src.close()
        # The acknowledgements went out through the proxy before the close: the broker
        # settles them, but a count read at once on another connection may come first.
        for _ in range(50):
            if await count(vhost, queue) == 0:
                break
            await asyncio.sleep(0.1)
        assert await count(vhost, queue) == 0

    run(test)
    gc.collect()
