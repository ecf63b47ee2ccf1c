"""The async queue's store in cluster mode: accepted events in a NATS JetStream KV bucket.

`JetStreamEventStore` implements `store.event_queue.EventStore` on a KV bucket
`<cluster>_async`, replicated on up to three NATS servers, so an accepted event survives the
loss of the node that accepted it (another node adopts it: `cluster.adoption`) and of any one
NATS server. Each event is one key, `<node>.<event id>`: a node loads only its own, and an
adopter moves a dead node's keys under its own name.

A value is the event's metadata as one compact JSON line, then its payload. The bucket keeps
one revision per key, and a finished event's key is purged from the stream (no delete marker
left behind), so the bucket holds what is queued and nothing more.

JetStream has no transaction over several keys: `finish` stores the follow-ups (and the record
of a dropped event) first and removes the event last, so a crash in between runs the event
again rather than lose what it led to — at least once, as Lambda's async invocations are.
Every coroutine returns once JetStream acknowledged the change (stored on a majority of the
bucket's replicas); NATS errors and timeouts are raised as `OSError`.

Records of dropped events go to a stream `<cluster>_async_dropped` of their own (the newest
10,000 kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from lamina import limits
from lamina.cluster.nats import while_leaderless
from lamina.store.event_queue import DroppedEvent, QueuedEvent

#: the largest value: an event (Lambda's 256 KB payload) or a destination record carrying
#: it and the function's response (up to 6 MB, as a synchronous one), with room for JSON's
#: escapes. NATS also refuses messages above its `max_payload` (1 MB by default): a cluster's
#: servers are run with 8 MB, as invoke routing needs anyway.
MAX_VALUE_BYTES = limits.SYNC_PAYLOAD_MAX_BYTES + 2 * limits.ASYNC_PAYLOAD_MAX_BYTES
#: records of dropped events kept
DROPPED_KEEP = 10_000
#: replicas of the bucket and the dropped stream at most (JetStream's own limit is 5; 3 keeps
#: every change acknowledged by two servers while one is down)
MAX_REPLICAS = 3
#: seconds an accepted event waits for its stream to have a leader (JetStream elects one in
#: 4 to 9 s after losing it) before the Invoke is refused
ELECTION_WAIT_S = 10.0
#: changes in flight at once when many are asked together (an adoption, a big `add`)
_IN_FLIGHT = 256
#: JetStream's "wrong last sequence" (a compare-and-set that lost)
_WRONG_LAST_SEQUENCE = (10071, 10164)


def bucket_name(cluster: str) -> str:
    return f"{cluster}_async"


def replicas_for(nc: Client) -> int:
    """min(3, the NATS cluster's size), from the servers the connected one announces."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    urls = info.get("connect_urls") or []
    return max(1, min(MAX_REPLICAS, len(urls)))


def encode(event: QueuedEvent) -> bytes:
    meta = [
        event.function_name,
        event.qualifier,
        event.enqueued_at,
        event.attempts,
        event.due,
        event.trace,
    ]
    assert event.payload is not None
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + event.payload


def decode(event_id: str, value: bytes, with_payload: bool = True) -> QueuedEvent:
    line, _, payload = value.partition(b"\n")
    name, qualifier, enqueued_at, attempts, due, trace = json.loads(line)
    return QueuedEvent(
        event_id,
        name,
        qualifier,
        payload if with_payload else None,
        enqueued_at,
        attempts,
        due,
        trace,
    )


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """NATS failures as the `OSError` the event store's callers handle, saying what failed."""
    try:
        yield
    except nats.errors.Error as e:  # (its timeouts are OSErrors too: they say what, here)
        raise OSError(f"{what} in NATS JetStream: {_describe(e)}") from e


def _describe(e: Exception) -> str:
    if isinstance(e, nats.js.errors.APIError) and e.description:
        return str(e.description)
    if isinstance(e, nats.errors.ConnectionClosedError):
        return "the connection to NATS is closed"
    if isinstance(e, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return "no JetStream server answered (is the NATS cluster up?)"
    return str(e) or type(e).__name__


def is_wrong_last_sequence(e: Exception) -> bool:
    return isinstance(e, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(e, nats.js.errors.APIError) and e.err_code in _WRONG_LAST_SEQUENCE
    )


class JetStreamEventStore:
    """The events of node `node` in the bucket `<cluster>_async` (created on first use, with
    `replicas` copies: by default min(3, the NATS cluster's size))."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        cluster: str,
        node: str,
        replicas: int | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self.cluster = cluster
        self.node = node
        self._replicas = replicas
        self.bucket = bucket_name(cluster)
        self.stream = f"KV_{self.bucket}"
        self._dropped_stream = f"{cluster}_async_dropped"
        self._dropped_subject = f"{cluster}.async.dropped"
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    # -- EventStore ----------------------------------------------------------------------

    async def add(self, events: Sequence[QueuedEvent]) -> None:
        kv = await self._bucket()
        with nats_errors("cannot store the event"):
            if len(events) == 1:
                await self._put_waiting(kv, self.key(events[0].id), encode(events[0]))
                return
            done = await _gather_limited(
                [kv.put(self.key(e.id), encode(e)) for e in events], return_exceptions=True
            )
            failed = next((r for r in done if isinstance(r, BaseException)), None)
            if failed is None:
                return
            # Leave the store as it was: take back the events that were stored.
            with contextlib.suppress(nats.errors.Error, OSError):
                await _gather_limited(
                    [
                        self._purge(self.key(e.id))
                        for e, r in zip(events, done, strict=True)
                        if not isinstance(r, BaseException)
                    ]
                )
            raise failed

    async def _put_waiting(self, kv: KeyValue, key: str, value: bytes) -> None:
        """Put one event, waiting out a stream without a leader (NATS answers at once that
        nobody responds while its servers elect one, which takes seconds): an Invoke is
        refused only when the store stays unable to take it for `ELECTION_WAIT_S`."""
        await while_leaderless(lambda: kv.put(key, value), ELECTION_WAIT_S, 0.25)

    async def finish(
        self,
        event_id: str,
        follow_ups: Sequence[QueuedEvent] = (),
        dropped: DroppedEvent | None = None,
    ) -> None:
        if follow_ups:
            await self.add(follow_ups)
        if dropped is not None:
            await self._record_dropped(dropped)
        await self._bucket()
        with nats_errors("cannot remove the finished event"):
            await self._purge(self.key(event_id))

    async def reschedule(self, event_id: str, attempts: int, due: float) -> None:
        kv = await self._bucket()
        key = self.key(event_id)
        with nats_errors("cannot reschedule the event"):
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return  # finished, or adopted by another node meanwhile
            event = decode(event_id, entry.value or b"")
            event.attempts, event.due = attempts, due
            try:
                # Compare-and-set: an event another node adopted meanwhile is not recreated.
                await kv.update(key, encode(event), last=entry.revision)
            except nats.js.errors.Error as e:
                if not is_wrong_last_sequence(e):
                    raise

    async def payload(self, event_id: str) -> bytes | None:
        kv = await self._bucket()
        with nats_errors("cannot read the event"):
            try:
                entry = await kv.get(self.key(event_id))
            except nats.js.errors.KeyNotFoundError:
                return None
        return decode(event_id, entry.value or b"").payload

    async def load(self, with_payload_bytes: int) -> list[QueuedEvent]:
        events = []
        budget = with_payload_bytes
        async for event_id, value, _ in self.entries(self.node):
            event = decode(event_id, value)
            assert event.payload is not None
            budget -= len(event.payload)
            if budget < 0:
                event.payload = None
            events.append(event)
        events.sort(key=lambda e: e.enqueued_at)
        if budget < 0:
            # Payloads were dropped in the order they came; keep the oldest events' instead.
            return await self._refill(events, with_payload_bytes)
        return events

    async def dropped(self, limit: int) -> list[DroppedEvent]:
        await self._bucket()
        with nats_errors("cannot read the dropped events"):
            info = await self._js.stream_info(self._dropped_stream)
            last, first = info.state.last_seq, info.state.first_seq
            seqs = list(range(last, max(first, last - limit + 1) - 1, -1)) if last else []
            msgs = await _gather_limited(
                [self._js.get_msg(self._dropped_stream, seq=s) for s in seqs],
                return_exceptions=True,
            )
        records = []
        for msg in msgs:
            if isinstance(msg, nats.js.errors.NotFoundError):
                continue  # pruned meanwhile
            if isinstance(msg, BaseException):
                with nats_errors("cannot read the dropped events"):
                    raise msg
            records.append(DroppedEvent(*json.loads(msg.data or b"[]")))
        return records

    async def close(self) -> None:
        """Nothing to flush (every change was acknowledged); the connection is its owner's."""
        self._closed = True

    # -- what adoption uses ----------------------------------------------------------------

    def key(self, event_id: str, node: str | None = None) -> str:
        return f"{node or self.node}.{event_id}"

    async def kv(self) -> KeyValue:
        return await self._bucket()

    async def nodes_with_events(self) -> set[str]:
        """The names of the nodes that have events stored."""
        return {key.split(".", 1)[0] for key in await self._keys(">")}

    async def entries(self, node: str) -> AsyncIterator[tuple[str, bytes, int]]:
        """(event id, stored value, revision) of every event of `node`, read a batch at a
        time (a backlog's payloads need not fit in memory at once)."""
        kv = await self._bucket()
        keys = sorted(await self._keys(f"{node}.>"))
        for at in range(0, len(keys), _IN_FLIGHT):
            with nats_errors("cannot read the stored events"):
                found = await asyncio.gather(
                    *(kv.get(key) for key in keys[at : at + _IN_FLIGHT]),
                    return_exceptions=True,
                )
                failed = next(
                    (
                        e
                        for e in found
                        if isinstance(e, BaseException)
                        and not isinstance(e, nats.js.errors.KeyNotFoundError)
                    ),
                    None,
                )
                if failed is not None:
                    raise failed
            for entry in found:
                if isinstance(entry, KeyValue.Entry):  # (not: finished or moved meanwhile)
                    yield entry.key.split(".", 1)[1], entry.value or b"", entry.revision or 0

    async def _keys(self, pattern: str) -> list[str]:
        """The keys matching `pattern` that hold a value or a delete marker, as the stream's
        leader knows them (every acknowledged change is in it), a page at a time."""
        await self._bucket()
        prefix = f"$KV.{self.bucket}."
        api = getattr(self._js, "_prefix", "$JS.API")
        keys: list[str] = []
        with nats_errors("cannot list the stored events"):
            while True:
                request = {"subjects_filter": prefix + pattern, "offset": len(keys)}
                reply = await self._nc.request(
                    f"{api}.STREAM.INFO.{self.stream}", json.dumps(request).encode(), timeout=10
                )
                info = json.loads(reply.data)
                if "error" in info:
                    raise OSError(
                        f"cannot list the stored events in NATS JetStream: "
                        f"{info['error'].get('description', info['error'])}"
                    )
                subjects = info.get("state", {}).get("subjects") or {}
                keys.extend(subject[len(prefix) :] for subject in subjects)
                if not subjects or len(keys) >= info.get("total", 0):
                    return keys

    async def purge(self, key: str) -> None:
        """Remove `key` and every trace of it from the stream."""
        with nats_errors("cannot remove the event"):
            await self._purge(key)

    # -- inside ----------------------------------------------------------------------------

    async def _purge(self, key: str) -> None:
        await self._js.purge_stream(self.stream, subject=f"$KV.{self.bucket}.{key}")

    async def _record_dropped(self, d: DroppedEvent) -> None:
        record = [
            d.id,
            d.function_name,
            d.qualifier,
            d.reason,
            d.attempts,
            d.enqueued_at,
            d.dropped_at,
            d.detail,
        ]
        with nats_errors("cannot record the dropped event"):
            await self._js.publish(
                self._dropped_subject,
                json.dumps(record, separators=(",", ":")).encode(),
                stream=self._dropped_stream,
            )

    async def _refill(self, events: list[QueuedEvent], budget: int) -> list[QueuedEvent]:
        """Give the oldest events their payloads back while they fit in `budget`."""
        held = sum(len(e.payload) for e in events if e.payload is not None)
        for event in events:
            if event.payload is not None:
                continue
            payload = await self.payload(event.id)
            if payload is None or held + len(payload) > budget:
                break
            event.payload = payload
            held += len(payload)
        return events

    async def _bucket(self) -> KeyValue:
        if self._closed:
            raise OSError("the event store is closed")
        if self._kv is not None:
            return self._kv
        async with self._opening:
            if self._kv is None:
                self._kv = await self._open()
        return self._kv

    async def _open(self) -> KeyValue:
        replicas = self._replicas or replicas_for(self._nc)
        with nats_errors(f"cannot open the bucket {self.bucket}"):
            try:
                # Usually there: opening it asks only the bucket's leader, which answers
                # while the NATS cluster elects a new meta leader (creating asks that one).
                kv = await self._js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await self._create()
            await _ensure_stream(
                self._js,
                StreamConfig(
                    name=self._dropped_stream,
                    subjects=[self._dropped_subject],
                    max_msgs=DROPPED_KEEP,
                    discard=DiscardPolicy.OLD,
                    num_replicas=replicas,
                    storage=StorageType.FILE,
                ),
            )
        return kv

    async def _create(self) -> KeyValue:
        replicas = self._replicas or replicas_for(self._nc)
        try:
            return await self._js.create_key_value(
                KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    replicas=replicas,
                    max_value_size=MAX_VALUE_BYTES,
                    storage=StorageType.FILE,
                )
            )
        except nats.js.errors.BadRequestError:
            # Made meanwhile by another node (with the replicas it saw): use it.
            return await self._js.key_value(self.bucket)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or leave it as it is if it exists (another node made it)."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.stream_info(config.name)  # created by another node meanwhile


async def _gather_limited(coros: list[Any], return_exceptions: bool = False) -> list[Any]:
    """Run `coros` concurrently, at most `_IN_FLIGHT` at once; their results in order."""
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=return_exceptions)
