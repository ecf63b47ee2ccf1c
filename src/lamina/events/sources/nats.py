"""NATS JetStream as a stream source (`StreamSource`), with nats-py.

One durable pull consumer per mapping, `lamina-<mapping uuid>`, on the mapping's stream, with
explicit acks. The checkpoint is the consumer's ack floor, kept by the NATS server: `checkpoint`
acks every record up to the checkpoint, so a killed Lamina loses nothing and re-reads from
there. How a record looks to the function:

- `partitionKey` is the message's subject (JetStream has no partition key; the subject is what
  producers use to tell kinds or owners of messages apart, so per-key order is per subject);
- `sequenceNumber` is the stream sequence, `approximateArrivalTimestamp` the time the server
  stored the message, `data` its payload (headers are not passed on).

Starting position, used only when the consumer does not exist yet: TRIM_HORIZON delivers the
whole stream, LATEST what is published after the mapping was created (pinned at creation to the
stream's next sequence), AT_TIMESTAMP what the server stored from that time on.

Reopening resumes in order at the ack floor: if the consumer has deliveries that were never
acked (Lamina stopped mid-batch), it is recreated to start right after the floor (or at its
original start if nothing was acked yet) rather than waiting for JetStream's redelivery, which
would come after the ack wait and out of order.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from lamina.events.sources import stream_events
from lamina.events.sources.api import SourceUnavailable, StreamRecord, redacted_url
from lamina.mappings import Connection, EventSourceMapping

log = logging.getLogger(__name__)

#: a record held longer than this (a batch retried for long, an open tumbling window) is sent
#: again by the server; `read` drops such repeats, so this only bounds the server's work
ACK_WAIT_S = 3600.0
#: the most messages one read asks for (more come with the next read): keeps one reply well
#: inside the subscription's pending limits whatever the BatchSize
MAX_FETCH = 1000
_CONNECT_TIMEOUT_S = 5.0
_REQUEST_TIMEOUT_S = 5
# what a broker library may raise on a lost connection or a refused request
_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


def consumer_name(mapping: EventSourceMapping) -> str:
    """The durable consumer of a mapping."""
    return f"lamina-{mapping.uuid}"


class NatsStream:
    """One mapping's view of one JetStream stream. Not safe for concurrent `read`s (the
    delivery rules read from one task)."""

    shard_id = stream_events.SHARD_ID

    def __init__(self, mapping: EventSourceMapping, connection: Connection) -> None:
        if not connection.stream:
            raise ValueError("a NATS connection names its stream")
        self.mapping = mapping
        self.url = connection.url
        self.stream = connection.stream
        self.consumer = consumer_name(mapping)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._last_seq = 0  # the highest stream sequence handed out this session
        # the ack subject of the latest delivery of each held message (not the message: a
        # long tumbling window holds many)
        self._unacked: dict[int, str] = {}
        self._problem: str | None = None

    # connection

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and self._nc.is_connected:
            return self._js

        async def on_error(e: Exception) -> None:
            self._problem = str(e) or type(e).__name__

        try:
            # no reconnecting inside the client: a lost server surfaces as SourceUnavailable,
            # the runner reports it and reopens
            # (nats-py retries a first connect forever unless attempts are bounded)
            self._nc = await nats.connect(
                servers=[self.url],
                connect_timeout=_CONNECT_TIMEOUT_S,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=on_error,
            )
        except _NATS_ERRORS as e:
            why = self._problem or _why(e)  # the refused connection rather than "no servers"
            raise SourceUnavailable(
                f"NATS at {redacted_url(self.url)} cannot be reached: {why}"
            ) from None
        self._js = self._nc.jetstream(timeout=_REQUEST_TIMEOUT_S)
        return self._js

    async def open(self, starting_position: str, starting_timestamp: float | None) -> None:
        """Connect, create the durable consumer if it does not exist (at the starting
        position) or reposition it at its ack floor, and bind to it."""
        js = await self._connect()
        try:
            try:
                stream = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                raise SourceUnavailable(f"NATS stream {self.stream} does not exist") from None
            try:
                info = await js.consumer_info(self.stream, self.consumer)
            except nats.js.errors.NotFoundError:
                config = self._config(starting_position, starting_timestamp, stream.state.last_seq)
                await js.add_consumer(self.stream, config)
            else:
                if info.num_ack_pending:
                    await self._reposition(js, info)
            self._sub = await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
        except SourceUnavailable:
            await self.close()
            raise
        except _NATS_ERRORS as e:
            await self.close()
            raise SourceUnavailable(f"NATS stream {self.stream}: {_why(e)}") from None
        self._last_seq = 0
        self._unacked.clear()

    def _config(self, position: str, timestamp: float | None, last_seq: int) -> ConsumerConfig:
        config = ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            # the delivery rules bound what they hold; no server-side cap that a long
            # tumbling window could run into
            max_ack_pending=-1,
            max_deliver=-1,
            description=f"Lamina event-source mapping {self.mapping.uuid}",
        )
        if position == "AT_TIMESTAMP" and timestamp is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
        elif position == "LATEST":
            # pinned now, so that recreating the consumer later starts at the same place
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = last_seq + 1
        else:
            config.deliver_policy = DeliverPolicy.ALL
        return config

    async def _reposition(self, js: JetStreamContext, info: Any) -> None:
        """Start the consumer again right after its ack floor, in order."""
        config: ConsumerConfig = info.config
        floor = info.ack_floor
        if floor is not None and floor.consumer_seq > 0:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = floor.stream_seq + 1
            config.opt_start_time = None
        # else nothing was acked yet: the original start position stands
        await js.delete_consumer(self.stream, self.consumer)
        await js.add_consumer(self.stream, config)

    # reading

    async def read(self, max_records: int, wait_s: float) -> list[StreamRecord]:
        if self._sub is None:
            raise SourceUnavailable("the NATS source is not open")
        try:
            batch = min(max(1, max_records), MAX_FETCH)
            msgs = await self._sub.fetch(batch, timeout=max(wait_s, 0.05))
        except nats.errors.TimeoutError:
            return []
        except _NATS_ERRORS as e:
            raise SourceUnavailable(self._lost(e)) from None
        out: list[StreamRecord] = []
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq in self._unacked or seq <= self._last_seq:
                # redelivered after the ack wait while still held: keep the newest delivery
                # for the ack, hand the record out only once
                if seq in self._unacked:
                    self._unacked[seq] = msg.reply
                continue
            self._last_seq = seq
            self._unacked[seq] = msg.reply
            arrived = meta.timestamp.timestamp()
            sequence = str(seq)
            record = stream_events.stream_record(
                self.mapping,
                self.shard_id,
                sequence,
                msg.subject,
                msg.data,
                arrived,
                self.mapping.role_arn,
            )
            out.append(StreamRecord(sequence, msg.subject, msg.data, arrived, record, seq))
        return out

    async def checkpoint(self, records: Sequence[StreamRecord]) -> None:
        """Ack each record (the server's ack floor moves past them); returns once the server
        has them."""
        nc = self._nc
        if nc is None:
            raise SourceUnavailable("the NATS source is not open")
        try:
            for r in records:
                reply = self._unacked.pop(int(r.token), None)
                if reply:
                    await nc.publish(reply)  # an empty message to the ack subject: an ack
            await nc.flush(timeout=_REQUEST_TIMEOUT_S)
        except _NATS_ERRORS as e:
            raise SourceUnavailable(self._lost(e)) from None

    async def lag(self) -> int | None:
        """Messages of the stream the consumer has not delivered yet."""
        if self._js is None:
            return None
        try:
            info = await self._js.consumer_info(self.stream, self.consumer)
        except _NATS_ERRORS as e:
            raise SourceUnavailable(self._lost(e)) from None
        pending: int | None = info.num_pending
        return pending

    async def close(self) -> None:
        """Disconnect (pending acks are flushed first). The consumer stays: it is the
        checkpoint. A second call does nothing."""
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        self._unacked.clear()
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await nc.flush(timeout=2)
        except _NATS_ERRORS:
            pass  # acks not flushed are redelivered: at least once
        finally:
            await nc.close()

    async def forget(self) -> None:
        """Delete the durable consumer (the mapping is being deleted). Raises
        `SourceUnavailable` if the server cannot be reached; a consumer already gone is fine."""
        js = await self._connect()
        try:
            await js.delete_consumer(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            pass
        except _NATS_ERRORS as e:
            raise SourceUnavailable(self._lost(e)) from None
        finally:
            await self.close()

    def _lost(self, e: BaseException) -> str:
        why = self._problem or _why(e)
        return f"NATS stream {self.stream} at {redacted_url(self.url)}: {why}"


def _why(e: BaseException) -> str:
    text = str(e).strip()
    return text or type(e).__name__
