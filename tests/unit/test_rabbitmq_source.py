"""The RabbitMQ source's pure parts: Lambda's spelling of AMQP values and the words of its
errors. (The source itself is tested against the real broker in
tests/system/test_rabbitmq_source.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import aiormq
import pytest
from pamqp.commands import Connection as ConnectionFrame
from pamqp.exceptions import AMQPInternalError

from lamina.events.sources.rabbitmq import RabbitSource, _header_value, _java_date
from lamina.mappings import Connection, EventSourceMapping, MappingState, SourceKind

PLUS_2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC), "Jan 1, 1970, 12:33:41 AM"),  # AWS's
        (datetime(2024, 3, 9, 12, 0, 0, tzinfo=UTC), "Mar 9, 2024, 12:00:00 PM"),
        (datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), "Dec 31, 2024, 11:59:59 PM"),
        # in UTC whatever the zone it came with
        (
            datetime(2024, 7, 1, 2, 5, 9, tzinfo=timezone(timedelta(hours=2))),
            "Jul 1, 2024, 12:05:09 AM",
        ),
        (datetime(2024, 7, 1, 9, 5, 9), "Jul 1, 2024, 9:05:09 AM"),  # naive: taken as UTC
    ],
)
def test_dates_as_gson_writes_them(when: datetime, text: str) -> None:
    assert _java_date(when) == text


def test_header_values_as_lambda_writes_them() -> None:
    assert _header_value("value1") == {"bytes": [118, 97, 108, 117, 101, 49]}
    assert _header_value("ü") == {"bytes": [-61, -68]}
    assert _header_value(b"\x01\x80") == [1, -128]
    assert _header_value(10) == 10 and _header_value(True) is True
    assert _header_value(None) is None and _header_value(2.5) == 2.5
    assert _header_value(Decimal("3")) == 3 and _header_value(Decimal("0.25")) == 0.25
    assert _header_value([{"a": "b"}, 1]) == [{"a": {"bytes": [98]}}, 1]


def _source(
    url: str = "amqp://reader:hunter2@mq.example:5673/", vhost: str = "/shop"
) -> RabbitSource:
    mapping = EventSourceMapping(
        uuid="u",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn="arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
        kind=SourceKind.RABBITMQ,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=0.0,
        last_result="No records processed",
        batch_size=100,
        batching_window_s=0,
        queues=("orders",),
    )
    return RabbitSource(mapping, Connection(SourceKind.RABBITMQ, url, virtual_host="/shop"))


def _close(text: str) -> ConnectionFrame.Close:
    return ConnectionFrame.Close(reply_code=530, reply_text=text)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            aiormq.exceptions.AMQPConnectionError(111, "Connect call failed ('10.0.0.1', 5673)"),
            "cannot reach broker at mq.example:5673: connection refused",
        ),
        (
            aiormq.exceptions.AMQPConnectionError(-2, "Name or service not known"),
            "cannot reach broker at mq.example:5673: unknown host",
        ),
        (TimeoutError(), "cannot reach broker at mq.example:5673: timed out"),
        (
            aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            "authentication failed for user reader",
        ),
        (
            AMQPInternalError(
                "one of ['Connection.OpenOk']", _close("NOT_ALLOWED - vhost /shop not found")
            ),
            "virtual host /shop does not exist",
        ),
        (
            AMQPInternalError(
                "x", _close("NOT_ALLOWED - access to vhost '/shop' refused for user 'reader'")
            ),
            "user reader may not access virtual host /shop",
        ),
        (
            aiormq.exceptions.ChannelNotFoundEntity(
                "NOT_FOUND - no queue 'orders' in vhost '/shop'"
            ),
            "queue orders does not exist in virtual host /shop",
        ),
        (
            aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - access to queue 'orders'"),
            "user reader may not read queue orders in virtual host /shop",
        ),
        (
            aiormq.exceptions.ConnectionClosed(
                320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
            ),
            "lost the connection to the broker at mq.example:5673: CONNECTION_FORCED - broker "
            "forced connection closure with reason 'shutdown'",
        ),
        (ConnectionResetError(), "lost the connection to the broker at mq.example:5673"),
    ],
)
def test_errors_in_words_without_the_password(exc: BaseException, text: str) -> None:
    explained = str(_source()._explain(exc))
    assert explained == text
    assert "hunter2" not in explained


def test_prefetch_is_two_batches_per_concurrent_batch_within_amqps_limit() -> None:
    assert _source().prefetch == 200
