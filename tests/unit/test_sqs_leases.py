"""The SQS source's handling of what it leases, against a fake SQS-API client (the real
endpoint's behaviour is tested in tests/integration/test_sqs_source.py): batches filled from
several calls, messages handed back when a receive is cancelled, the visibility heartbeat and
its 12-hour limit, failed deletes tried once more, errors after a partial receive."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from lamina.events.sources import sqs as sqs_module
from lamina.events.sources.api import SourceUnavailable
from lamina.events.sources.sqs import SqsSource
from lamina.events.sources.sqs_client import SqsUnreachable
from lamina.mappings import RESULT_NONE, Connection, EventSourceMapping, MappingState, SourceKind

T = TypeVar("T")
ARN = "arn:aws:sqs:us-east-1:123456789012:q"


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 20)

    return asyncio.run(bounded())


class FakeSqs:
    """Answers the calls the source makes; `waiting` messages are handed out in order."""

    endpoint = "http://fake"

    def __init__(self, visibility_timeout: int = 30) -> None:
        self.visibility_timeout = visibility_timeout
        self.waiting: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: receipt handles whose delete fails this many more times
        self.delete_failures: dict[str, int] = {}
        #: ReceiveMessage calls that block until cancelled (after this many have answered)
        self.block_receives_after: int | None = None
        self.receive_error_after: int | None = None
        self._receives = 0
        #: set when a receive blocks
        self.blocked = asyncio.Event()

    def add(self, n: int) -> None:
        start = len(self.waiting)
        for i in range(start, start + n):
            self.waiting.append(
                {
                    "MessageId": f"m{i}",
                    "ReceiptHandle": f"h{i}",
                    "MD5OfBody": "x",
                    "Body": f"body {i}",
                    "Attributes": {"SentTimestamp": "1700000000000"},
                }
            )

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(
        self, operation: str, params: dict[str, Any], *, read_timeout: float = 30
    ) -> Any:
        self.calls.append((operation, params))
        if operation == "GetQueueUrl":
            return {"QueueUrl": "http://fake/123456789012/q"}
        if operation == "GetQueueAttributes":
            return {
                "Attributes": {
                    "VisibilityTimeout": str(self.visibility_timeout),
                    "ApproximateNumberOfMessages": str(len(self.waiting)),
                }
            }
        if operation == "ReceiveMessage":
            self._receives += 1
            if self.receive_error_after is not None and self._receives > self.receive_error_after:
                raise SqsUnreachable("cannot reach the SQS endpoint http://fake: gone")
            if self.block_receives_after is not None and self._receives > self.block_receives_after:
                self.blocked.set()
                await asyncio.Event().wait()
            n = params["MaxNumberOfMessages"]
            out, self.waiting = self.waiting[:n], self.waiting[n:]
            return {"Messages": out}
        if operation in ("DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
            failed = []
            for entry in params["Entries"]:
                left = self.delete_failures.get(entry["ReceiptHandle"], 0)
                if operation == "DeleteMessageBatch" and left:
                    self.delete_failures[entry["ReceiptHandle"]] = left - 1
                    failed.append(
                        {"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid", "Message": "no"}
                    )
            return {"Successful": [], "Failed": failed}
        raise AssertionError(operation)

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for op, params in self.calls if op == operation]


def make_source(fake: FakeSqs) -> SqsSource:
    mapping = EventSourceMapping(
        uuid="u",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn=ARN,
        kind=SourceKind.SQS,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=time.time(),
        last_result=RESULT_NONE,
        batch_size=10,
        batching_window_s=0,
    )
    source = SqsSource(mapping, Connection(SourceKind.SQS, "http://fake", queue_name="q"))
    source._client = fake  # type: ignore[assignment]
    return source


def test_a_large_batch_is_one_long_poll_then_calls_that_do_not_wait() -> None:
    fake = FakeSqs()
    fake.add(25)

    async def scenario() -> int:
        src = make_source(fake)
        await src.open()
        try:
            return len(await src.receive(30, 20))
        finally:
            await src.close()

    assert run(scenario()) == 25
    receives = fake.of("ReceiveMessage")
    assert [(r["MaxNumberOfMessages"], r["WaitTimeSeconds"]) for r in receives] == [
        (10, 20),
        (10, 0),
        (10, 0),
    ]
    assert receives[0]["MessageSystemAttributeNames"] == ["All"]
    assert receives[0]["MessageAttributeNames"] == ["All"]
    url = fake.of("GetQueueUrl")[0]
    assert url == {"QueueName": "q", "QueueOwnerAWSAccountId": "123456789012"}


def test_a_cancelled_receive_hands_back_what_it_had_leased() -> None:
    fake = FakeSqs()
    fake.add(10)
    fake.block_receives_after = 1  # the second call (filling the batch) never answers

    async def scenario() -> None:
        src = make_source(fake)
        await src.open()
        try:
            poll = asyncio.create_task(src.receive(20, 1))
            await fake.blocked.wait()
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
        finally:
            await src.close()

    run(scenario())
    (back,) = fake.of("ChangeMessageVisibilityBatch")
    assert [e["ReceiptHandle"] for e in back["Entries"]] == [f"h{i}" for i in range(10)]
    assert {e["VisibilityTimeout"] for e in back["Entries"]} == {0}


def test_an_error_after_a_partial_receive_hands_over_what_came() -> None:
    fake = FakeSqs()
    fake.add(10)
    fake.receive_error_after = 1

    async def scenario() -> None:
        src = make_source(fake)
        await src.open()
        try:
            assert len(await src.receive(20, 1)) == 10
            with pytest.raises(SourceUnavailable, match="cannot reach"):
                await src.receive(20, 1)
        finally:
            await src.close()

    run(scenario())


def test_heartbeat_extends_until_settled() -> None:
    fake = FakeSqs(visibility_timeout=1)  # extended every half second
    fake.add(2)

    async def scenario() -> tuple[int, int]:
        src = make_source(fake)
        await src.open()
        try:
            a, b = await src.receive(10, 0)
            await asyncio.sleep(1.3)
            await src.acknowledge([a])
            while_held = len(fake.of("ChangeMessageVisibilityBatch"))
            await asyncio.sleep(1.0)
            await src.release([b])
            await asyncio.sleep(1.0)  # nothing held: nothing extended
            return while_held, len(fake.of("ChangeMessageVisibilityBatch"))
        finally:
            await src.close()

    while_held, in_all = run(scenario())
    assert while_held >= 2
    extensions = fake.of("ChangeMessageVisibilityBatch")
    assert all(e["VisibilityTimeout"] == 1 for call in extensions for e in call["Entries"])
    # After the acknowledgement only b was extended; after the release nothing was.
    later = extensions[while_held:]
    assert later and all([e["ReceiptHandle"] for e in c["Entries"]] == ["h1"] for c in later)
    assert in_all - while_held <= 3


def test_heartbeat_gives_up_at_sqs_twelve_hour_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeSqs(visibility_timeout=1)
    fake.add(1)
    monkeypatch.setattr(sqs_module, "_MAX_VISIBILITY_S", 1.7)

    async def scenario() -> None:
        src = make_source(fake)
        await src.open()
        try:
            await src.receive(10, 0)
            await asyncio.sleep(1.5)
        finally:
            await src.close()

    with caplog.at_level(logging.WARNING, logger="lamina.events.sources.sqs"):
        run(scenario())
    # Extended at 0.5 s (to 1.5 s); at 1 s another second would pass the limit: let go.
    assert len(fake.of("ChangeMessageVisibilityBatch")) == 1
    assert any("12 hours" in r.getMessage() for r in caplog.records)


def test_a_failed_delete_is_tried_once_more() -> None:
    fake = FakeSqs()
    fake.add(12)
    fake.delete_failures = {"h3": 1, "h11": 2}

    async def scenario() -> None:
        src = make_source(fake)
        await src.open()
        try:
            got = await src.receive(12, 0)
            await src.acknowledge(got)
        finally:
            await src.close()

    run(scenario())
    deletes = [[e["ReceiptHandle"] for e in c["Entries"]] for c in fake.of("DeleteMessageBatch")]
    # 10 + the retry of h3, then 2 + the retry of h11 (which fails again: logged, not raised).
    assert deletes == [[f"h{i}" for i in range(10)], ["h3"], ["h10", "h11"], ["h11"]]


def test_a_visibility_timeout_of_zero_is_not_extended() -> None:
    fake = FakeSqs(visibility_timeout=0)
    fake.add(1)

    async def scenario() -> None:
        src = make_source(fake)
        await src.open()
        try:
            await src.receive(10, 0)
            await asyncio.sleep(0.3)
        finally:
            await src.close()

    run(scenario())
    assert fake.of("ChangeMessageVisibilityBatch") == []
