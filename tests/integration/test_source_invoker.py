"""The mappings' failure destinations (`events/sources/invoker.py`): a function's through the
async queue, an SQS queue's at the SQS-API endpoint (moto's server stands in for SQS), and a
readable `SourceUnavailable` when a destination cannot be reached. (Invoking through the
scheduler is exercised end to end in test_event_sources.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.integration.test_code_from_s3 import moto_server
from tests.unit.source_fakes import mapping

from lamina.arns import FunctionRef
from lamina.errors import ResourceNotFoundError
from lamina.events.sources.api import SourceUnavailable
from lamina.events.sources.invoker import SchedulerInvoker
from lamina.settings import Settings

pytestmark = pytest.mark.control_plane

RECORD = {"requestContext": {"condition": "RetryAttemptsExhausted"}, "version": "1.0"}


class FakeAsyncQueue:
    def __init__(self, fail: bool = False) -> None:
        self.accepted: list[tuple[str, str | None, Any]] = []
        self.fail = fail

    async def accept(
        self, name: str, qualifier: str | None, payload: bytes, rid: str, trace: str = ""
    ) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.accepted.append((name, qualifier, json.loads(payload)))


class FakeFunctions:
    """Every function exists but `missing`."""

    def resolve(self, ref: FunctionRef) -> None:
        if ref.name == "missing":
            raise ResourceNotFoundError(f"Function not found: {ref.name}")


def invoker(tmp_path: Path, queue: Any = None, sqs_endpoint: str | None = None) -> Any:
    settings = Settings(data_dir=tmp_path, sqs_endpoint=sqs_endpoint)
    functions: Any = FakeFunctions()
    return SchedulerInvoker(settings, functions, None, queue or FakeAsyncQueue())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto-dest")) as url:
        yield url


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_a_function_destination_gets_the_record_through_the_async_queue(tmp_path: Path) -> None:
    queue = FakeAsyncQueue()
    inv = invoker(tmp_path, queue)
    target = "arn:aws:lambda:us-east-1:000000000000:function:sink:live"
    asyncio.run(inv.send_to_failure_destination(mapping(on_failure=target), RECORD))
    assert queue.accepted == [("sink", "live", RECORD)]


def test_a_destination_that_cannot_take_the_record_is_source_unavailable(tmp_path: Path) -> None:
    inv = invoker(tmp_path, FakeAsyncQueue(fail=True))
    target = "arn:aws:lambda:us-east-1:000000000000:function:sink"
    with pytest.raises(SourceUnavailable, match="No space left"):
        asyncio.run(inv.send_to_failure_destination(mapping(on_failure=target), RECORD))
    # A function deleted since the mapping named it: its record would only be dropped.
    deleted = "arn:aws:lambda:us-east-1:000000000000:function:missing"
    queue = FakeAsyncQueue()
    with pytest.raises(SourceUnavailable, match="Function not found"):
        asyncio.run(
            invoker(tmp_path, queue).send_to_failure_destination(
                mapping(on_failure=deleted), RECORD
            )
        )
    assert queue.accepted == []
    sqs_target = "arn:aws:sqs:us-east-1:000000000000:failures"
    with pytest.raises(SourceUnavailable, match="--sqs-endpoint"):
        asyncio.run(inv.send_to_failure_destination(mapping(on_failure=sqs_target), RECORD))
    with pytest.raises(SourceUnavailable, match="OnFailure destination"):
        asyncio.run(
            inv.send_to_failure_destination(
                mapping(on_failure="arn:aws:sns:us-east-1:000000000000:topic"), RECORD
            )
        )


def test_an_sqs_destination_gets_the_record_as_a_message(tmp_path: Path, endpoint: str) -> None:
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    name = f"failures-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        inv = invoker(tmp_path, sqs_endpoint=endpoint)

        async def send_twice() -> None:
            try:
                await inv.send_to_failure_destination(mapping(on_failure=arn), RECORD)
                await inv.send_to_failure_destination(mapping(on_failure=arn), {"n": 2})
            finally:
                await inv.close()

        asyncio.run(send_twice())
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies = sorted((json.loads(m["Body"]) for m in got["Messages"]), key=len)
        assert bodies == [{"n": 2}, RECORD]
        missing = arn.replace(name, name + "-missing")
        inv = invoker(tmp_path, sqs_endpoint=endpoint)

        async def send_missing() -> None:
            try:
                await inv.send_to_failure_destination(mapping(on_failure=missing), RECORD)
            finally:
                await inv.close()

        with pytest.raises(SourceUnavailable, match=r"NonExistentQueue|QueueDoesNotExist"):
            asyncio.run(send_missing())
    finally:
        sqs.delete_queue(QueueUrl=url)
        sqs.close()
