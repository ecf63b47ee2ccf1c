"""RabbitMQ as a `QueueSource`: Lambda's Amazon MQ for RabbitMQ event source, fed by any
RabbitMQ broker (AMQP 0-9-1, through aio-pika and the aiormq channel beneath it).

How it reads. One connection and one channel per mapping; a consumer on `mapping.queues[0]`
with manual acknowledgement pushes deliveries into an in-process buffer, which `receive`
drains. The channel's prefetch (basic.qos) bounds what the broker hands over unacknowledged:
two batches per poller, so that one batch can fill while the previous one is with the
function. Lambda runs one poller per RabbitMQ mapping (the Lambda guide: "For RabbitMQ, the
number of concurrent execution environments is limited to 1 for each Amazon MQ event source
mapping"); Lamina runs `ScalingConfig.MaximumConcurrency` of them when it is set.

How it settles. A batch the function succeeded for is acknowledged (basic.ack); a failed one
is handed back with basic.nack(requeue=True): RabbitMQ delivers it again with `redelivered`
set, and the queue's own policy bounds the retries (a quorum queue's `x-delivery-limit`, then
its dead-letter exchange), as on Lambda, which leaves redelivery and dead-lettering of
RabbitMQ messages to the broker. Nothing is acknowledged before the function succeeded; a
closed channel (ours, on `close`, or a crash of the whole server) makes the broker requeue
everything it had handed us, so nothing is lost.

Lambda's MQ source has no `ReportBatchItemFailures` (`FunctionResponseTypes` is for SQS,
Kinesis, DynamoDB and Kafka only): a batch succeeds or fails whole, and `failed_ids`
answers None.

The event is Lambda's `aws:rmq` event: `rmqMessagesByQueue` keyed `<queue>::<vhost>`, each
message's `basicProperties` as Lambda's poller (a Java client serialized with Gson) writes
them: string header values as `{"bytes": [...]}` (Java's signed bytes), byte-array values as
a bare list of bytes, timestamps as Gson's default date text (`Jan 1, 1970, 12:33:41 AM`, UTC),
absent properties as null, `bodySize` the body's length; `data` the base64 body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import aiormq.abc
from pamqp.commands import Basic
from pamqp.exceptions import PAMQPException
from yarl import URL

from lamina.events.sources.api import Message, SourceUnavailable
from lamina.mappings import Connection, EventSourceMapping

log = logging.getLogger(__name__)

#: AMQP's prefetch count is an unsigned short
_MAX_PREFETCH = 65535
#: how long connecting (TCP, TLS, AMQP handshake) may take before the broker counts as unreachable
CONNECT_TIMEOUT_S = 10.0
#: how long one broker round trip (declare, consume, qos) may take
_RPC_TIMEOUT_S = 10.0

# What talking to a broker may raise: aiormq's errors, pamqp's protocol errors (an unexpected
# Connection.Close during the handshake surfaces as one), and the socket's.
_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    PAMQPException,
    ConnectionError,
    OSError,
    TimeoutError,
)


class RabbitSource:
    """One mapping's consumer of one RabbitMQ queue (the `QueueSource` contract of
    `events/sources/api.py`). `open` may be called again after `close` (or after a failure):
    each opening is a new connection, and messages leased by an earlier one cannot be
    settled any more (the broker has requeued them)."""

    def __init__(self, mapping: EventSourceMapping, connection: Connection) -> None:
        if not mapping.queues:
            raise ValueError("a RabbitMQ mapping names one queue")
        self._mapping = mapping
        self.queue = mapping.queues[0]
        self.virtual_host = connection.virtual_host or "/"
        self._url = _with_vhost(connection.url, self.virtual_host)
        self._where = f"{self._url.host}:{self._url.port or 5672}"
        self._user = self._url.user or "guest"
        self.pollers = max(1, mapping.maximum_concurrency or 1)
        self.prefetch = min(_MAX_PREFETCH, 2 * mapping.batch_size * self.pollers)
        self._key = f"{self.queue}::{self.virtual_host}"

        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        #: a channel of its own for backlog()'s passive declares (a failed one closes it)
        self._side: aio_pika.abc.AbstractChannel | None = None
        self._consumer_tag: str | None = None
        #: deliveries not yet received by the runner; None marks a lost connection
        self._buffer: asyncio.Queue[Message | None] = asyncio.Queue()
        #: delivery tags handed over and not yet settled, in delivery (= tag) order
        self._unsettled: dict[int, None] = {}
        self._settling = asyncio.Lock()
        self._failure: SourceUnavailable | None = None
        self._generation = 0
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check the queue exists, and start consuming."""
        await self.close()
        self._closing = False
        self._failure = None
        self._generation += 1
        self._buffer = asyncio.Queue()
        self._unsettled = {}
        conn = aio_pika.Connection(self._url)
        self._connection = conn
        try:
            await conn.connect(timeout=CONNECT_TIMEOUT_S)
            channel = await conn.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=self.prefetch, timeout=_RPC_TIMEOUT_S)
            raw = await channel.get_underlay_channel()
            # A missing queue closes the channel it was asked on; checking here first gives
            # the readable "does not exist" rather than a consume refused.
            await raw.queue_declare(self.queue, passive=True, timeout=_RPC_TIMEOUT_S)
            self._channel = raw
            generation = self._generation
            conn.close_callbacks.add(lambda _c, exc: self._lost(generation, exc))
            channel.close_callbacks.add(lambda _c, exc: self._lost(generation, exc))
            ok = await raw.basic_consume(
                self.queue,
                lambda delivered: self._on_delivery(generation, delivered),
                no_ack=False,
                timeout=_RPC_TIMEOUT_S,
            )
            self._consumer_tag = ok.consumer_tag
        except _BROKER_ERRORS as exc:
            failure = self._explain(exc)
            await self.close()
            raise failure from None
        log.info(
            "rabbitmq: mapping %s consuming %s in vhost %s at %s (prefetch %d)",
            self._mapping.uuid,
            self.queue,
            self.virtual_host,
            self._where,
            self.prefetch,
        )

    async def close(self) -> None:
        """Disconnect. The broker requeues every message not yet acknowledged (with
        `redelivered` set), the ones still buffered here and the ones with the runner alike.
        A second call does nothing."""
        self._closing = True
        conn, self._connection = self._connection, None
        channel = self._channel if self._failure is None else None
        self._channel = self._side = None
        self._consumer_tag = None
        self._unsettled = {}
        self._drop_buffer()
        if channel is not None:
            # Closed first, and waited for: the broker answers a channel's close only after
            # the frames sent before it (the last acknowledgements), whereas the connection
            # is closed without waiting, and a socket closed with deliveries still unread
            # is reset, which can drop what the broker had not read yet (those messages
            # would come again: at least once, but needlessly).
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError, TimeoutError):
                async with asyncio.timeout(_RPC_TIMEOUT_S):
                    await channel.close()
        if conn is not None:
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await conn.close()

    # -- receiving -------------------------------------------------------------------------

    async def receive(self, max_messages: int, wait_s: float) -> list[Message]:
        """Up to `max_messages` delivered messages, waiting up to `wait_s` for the first."""
        self._check()
        batch: list[Message] = []
        if self._buffer.empty():
            try:
                async with asyncio.timeout(max(0.0, wait_s)):
                    first = await self._buffer.get()
            except TimeoutError:
                self._check_consumer()
                return batch
            if first is None:
                self._buffer.put_nowait(None)
                self._check()
            else:
                batch.append(first)
        while len(batch) < max_messages:
            try:
                item = self._buffer.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is None:  # lost meanwhile: what is in hand can no longer be settled
                self._buffer.put_nowait(None)
                self._check()
                break
            batch.append(item)
        return batch

    async def _on_delivery(self, generation: int, delivered: aiormq.abc.DeliveredMessage) -> None:
        # aiormq runs each delivery's callback as a task of its own, in delivery order.
        if generation != self._generation or self._closing or self._failure is not None:
            return  # a late delivery of a closed channel: the broker has requeued it
        tag = delivered.delivery_tag
        if tag is None:  # only basic.get-empty has none; a consumer always gets one
            return
        self._unsettled[tag] = None
        props = delivered.header.properties
        body = delivered.body
        record = {
            "basicProperties": _basic_properties(props, len(body)),
            "redelivered": bool(delivered.redelivered),
            "data": base64.b64encode(body).decode("ascii"),
        }
        sent_at = props.timestamp.timestamp() if props.timestamp is not None else None
        self._buffer.put_nowait(
            Message(
                id=f"{generation}-{tag}",
                body=body,
                record=record,
                token=(generation, tag),
                sent_at=sent_at,
            )
        )

    # -- settling --------------------------------------------------------------------------

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        """basic.ack: the broker forgets them."""
        await self._settle(messages, ack=True)

    async def release(self, messages: Sequence[Message]) -> None:
        """basic.nack with requeue: the broker delivers them again (`redelivered` set), or
        dead-letters them when the queue's delivery limit is reached."""
        await self._settle(messages, ack=False)

    async def _settle(self, messages: Sequence[Message], *, ack: bool) -> None:
        if not messages:
            return
        # One settlement at a time: its frames go out over several awaits, and another
        # poller's `multiple` ack sent between them would settle tags this one is about to
        # settle singly (the broker then closes the channel: "unknown delivery tag").
        async with self._settling:
            await self._settle_now(messages, ack=ack)

    async def _settle_now(self, messages: Sequence[Message], *, ack: bool) -> None:
        channel = self._channel
        tags = sorted(tag for generation, tag in (m.token for m in messages))
        stale = any(m.token[0] != self._generation for m in messages)
        if stale or channel is None or self._failure is not None:
            # The channel they came on is gone, and the broker requeued them with it.
            raise self._failure or SourceUnavailable(
                f"the connection to the broker at {self._where} was closed before "
                f"{len(messages)} message(s) were settled; the broker delivers them again"
            )
        wanted = set(tags)
        # One frame settles them all when they are exactly the oldest unsettled deliveries
        # (the common case: one poller, batches in delivery order); else one frame each.
        covers_prefix = True
        for tag in self._unsettled:
            if tag > tags[-1]:
                break
            if tag not in wanted:
                covers_prefix = False
                break
        frames = [(tags[-1], True)] if covers_prefix else [(t, False) for t in tags]
        for tag in tags:
            self._unsettled.pop(tag, None)
        try:
            for i, (tag, multiple) in enumerate(frames):
                last = i == len(frames) - 1  # wait for the socket once, after the last frame
                if ack:
                    await channel.basic_ack(tag, multiple=multiple, wait=last)
                else:
                    await channel.basic_nack(tag, multiple=multiple, requeue=True, wait=last)
        except _BROKER_ERRORS as exc:
            raise self._explain(exc) from None

    # -- the event -------------------------------------------------------------------------

    def event(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Lambda's `aws:rmq` event for the batch."""
        return {
            "eventSource": "aws:rmq",
            "eventSourceArn": self._mapping.source_arn,
            "rmqMessagesByQueue": {self._key: [m.record for m in messages]},
        }

    def failed_ids(self, response: Any, messages: Sequence[Message]) -> set[str] | None:
        """Always None: Lambda's MQ source has no partial batch responses, so a failed
        batch fails whole (and a mapping for RabbitMQ cannot ask for them)."""
        return None

    async def backlog(self) -> int | None:
        """Messages ready in the queue (not counting those handed to consumers), from a
        passive declare on a channel of its own (a failed declare closes its channel)."""
        self._check()
        conn = self._connection
        if conn is None:
            return None
        try:
            side = self._side
            if side is None or side.is_closed:
                side = await conn.channel(publisher_confirms=False)
                self._side = side
            raw = await side.get_underlay_channel()
            ok = await raw.queue_declare(self.queue, passive=True, timeout=_RPC_TIMEOUT_S)
        except _BROKER_ERRORS as exc:
            self._side = None
            raise self._explain(exc) from None
        return ok.message_count

    # -- failures --------------------------------------------------------------------------

    def _lost(self, generation: int, exc: BaseException | None) -> None:
        """The connection or the channel closed under us (broker down, queue deleted with
        its channel, a network cut)."""
        if generation != self._generation or self._closing or self._failure is not None:
            return
        self._failure = (
            self._explain(exc)
            if exc is not None and not isinstance(exc, asyncio.CancelledError)
            else SourceUnavailable(f"the broker at {self._where} closed the connection")
        )
        log.warning("rabbitmq: mapping %s: %s", self._mapping.uuid, self._failure)
        self._channel = self._side = None
        self._drop_buffer()
        self._buffer.put_nowait(None)

    def _drop_buffer(self) -> None:
        # Buffered deliveries of a closed channel are the broker's again; handing them to
        # the function would only make acknowledgements that cannot be sent.
        while True:
            try:
                self._buffer.get_nowait()
            except asyncio.QueueEmpty:
                return

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._channel is None:
            raise SourceUnavailable(f"not connected to the broker at {self._where}")

    def _check_consumer(self) -> None:
        # RabbitMQ cancels a consumer whose queue was deleted (basic.cancel); aiormq then
        # just forgets it, so an idle source looks for its consumer while it waits.
        channel = self._channel
        if channel is None or self._consumer_tag is None:
            return
        consumers = getattr(channel, "consumers", None)
        if isinstance(consumers, dict) and self._consumer_tag not in consumers:
            self._failure = SourceUnavailable(
                f"queue {self.queue} in virtual host {self.virtual_host} was deleted "
                "(the broker cancelled the consumer)"
            )
            raise self._failure

    def _explain(self, exc: BaseException) -> SourceUnavailable:
        """A broker library's error, in words a user can act on (never with a password)."""
        if isinstance(exc, SourceUnavailable):
            return exc
        text = _reply_text(exc)
        vhost, queue = self.virtual_host, self.queue
        if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | _AuthError):
            return SourceUnavailable(f"authentication failed for user {self._user}")
        if text.startswith("NOT_ALLOWED") and "vhost" in text:
            if "not found" in text:
                return SourceUnavailable(f"virtual host {vhost} does not exist")
            return SourceUnavailable(f"user {self._user} may not access virtual host {vhost}")
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity) or text.startswith("NOT_FOUND"):
            return SourceUnavailable(f"queue {queue} does not exist in virtual host {vhost}")
        if isinstance(exc, aiormq.exceptions.ChannelAccessRefused) or text.startswith(
            "ACCESS_REFUSED"
        ):
            return SourceUnavailable(
                f"user {self._user} may not read queue {queue} in virtual host {vhost}"
            )
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return SourceUnavailable(f"cannot reach broker at {self._where}: timed out")
        if isinstance(exc, aiormq.exceptions.ConnectionClosed):
            # The broker closed it (e.g. CONNECTION_FORCED on a restart); its code is no errno.
            detail = f": {text}" if text else ""
            return SourceUnavailable(f"lost the connection to the broker at {self._where}{detail}")
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if errno is not None:  # connecting failed: (errno, "Connect call failed ...")
            reason = _ERRNO_TEXT.get(errno, str(exc.args[1]) if len(exc.args) > 1 else "")
            return SourceUnavailable(f"cannot reach broker at {self._where}: {reason}")
        if isinstance(exc, ConnectionError):
            detail = f": {text}" if text else ""
            return SourceUnavailable(f"lost the connection to the broker at {self._where}{detail}")
        detail = text or type(exc).__name__
        return SourceUnavailable(f"broker at {self._where}: {detail}")


_AuthError = aiormq.exceptions.AuthenticationError

#: socket errors as words (connect's errno; negative ones are the resolver's)
_ERRNO_TEXT = {
    111: "connection refused",
    110: "connection timed out",
    113: "no route to host",
    101: "network unreachable",
    104: "connection reset",
    -2: "unknown host",
    -3: "temporary failure resolving the host name",
    -5: "the host name has no address",
}


def _reply_text(exc: BaseException) -> str:
    """The broker's own words (`reply_text` of its Close frame, e.g. "NOT_FOUND - no queue
    'q' in vhost '/'"), wherever aiormq or pamqp put them."""
    for arg in exc.args:
        reply = getattr(arg, "reply_text", None)
        if isinstance(reply, str):
            return reply
        if isinstance(arg, str) and arg[:1].isupper() and " - " in arg:
            return arg
    return ""


def _with_vhost(url: str, vhost: str) -> URL:
    """The broker URL with its path naming `vhost` (AMQP URIs carry the vhost %-encoded)."""
    return URL(url).with_path("/" + quote(vhost, safe=""), encoded=True)


# -- Lambda's spelling of AMQP properties ----------------------------------------------------


def _basic_properties(props: Basic.Properties, body_size: int) -> dict[str, Any]:
    return {
        "contentType": props.content_type,
        "contentEncoding": props.content_encoding,
        "headers": (
            {k: _header_value(v) for k, v in props.headers.items()}
            if props.headers is not None
            else None
        ),
        "deliveryMode": props.delivery_mode,
        "priority": props.priority,
        "correlationId": props.correlation_id,
        "replyTo": props.reply_to,
        "expiration": props.expiration,
        "messageId": props.message_id,
        "timestamp": _java_date(props.timestamp) if props.timestamp is not None else None,
        "type": props.message_type,
        "userId": props.user_id,
        "appId": props.app_id,
        "clusterId": props.cluster_id,
        "bodySize": body_size,
    }


def _header_value(value: Any) -> Any:
    """One header value as Lambda writes it: the Java client reads an AMQP long string as a
    `LongString`, which Gson serializes as `{"bytes": [...]}`; a byte array as a bare list;
    Java bytes are signed."""
    if isinstance(value, str):
        return {"bytes": _signed(value.encode())}
    if isinstance(value, bytes | bytearray | memoryview):
        return _signed(bytes(value))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return _java_date(value)
    if isinstance(value, dict):
        return {str(k): _header_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_header_value(v) for v in value]
    return str(value)


def _signed(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def _java_date(when: datetime) -> str:
    """Gson's default text of a `java.util.Date` in UTC, e.g. `Jan 1, 1970, 12:33:41 AM`."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    hour = when.hour % 12 or 12
    half = "AM" if when.hour < 12 else "PM"
    return f"{when:%b} {when.day}, {when.year}, {hour}:{when:%M:%S} {half}"
