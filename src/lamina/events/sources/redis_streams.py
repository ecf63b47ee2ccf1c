"""Redis Streams as a stream source (`StreamSource`), with redis.asyncio.

One consumer group per mapping, `lamina-<mapping uuid>`, on the mapping's stream key, read with
XREADGROUP by one consumer (`lamina`); `checkpoint` is XACK. The group's pending entries list
is the record of what was read but not checkpointed: on open they are read again first, in
order, so a killed Lamina loses nothing. How an entry looks to the function:

- `data` is the entry's `data` field if it has one, else the JSON object of all its fields
  (names and values as UTF-8 text);
- `partitionKey` is its `partitionKey` field if it has one, else the entry id;
- `sequenceNumber` is the entry id (`<ms>-<n>`), `approximateArrivalTimestamp` the id's
  milliseconds (the time Redis added it, for ids Redis chose).

Starting position, used only when the group is created: TRIM_HORIZON reads the whole stream,
LATEST what is added after the mapping was created, AT_TIMESTAMP the entries whose ids are at
or after that millisecond. The group is created with MKSTREAM: a stream key that does not exist
yet is created empty (Redis producers create streams on their first XADD), so a mapping may
come before its producer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from lamina.events.sources import stream_events
from lamina.events.sources.api import SourceUnavailable, StreamRecord, redacted_url
from lamina.mappings import Connection, EventSourceMapping

#: the one consumer of each group (a mapping's stream is read by one task)
CONSUMER = "lamina"
#: the most entries one read asks for (more come with the next read)
MAX_READ = 1000
_MAX_SEQ = 18446744073709551615  # the largest sequence part of a stream id
_TIMEOUT_S = 30.0
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


def group_name(mapping: EventSourceMapping) -> str:
    """The consumer group of a mapping."""
    return f"lamina-{mapping.uuid}"


class RedisStream:
    """One mapping's view of one Redis stream key."""

    shard_id = stream_events.SHARD_ID

    def __init__(self, mapping: EventSourceMapping, connection: Connection) -> None:
        if not connection.stream:
            raise ValueError("a Redis connection names its stream key")
        self.mapping = mapping
        self.url = connection.url
        self.key = connection.stream
        self.group = group_name(mapping)
        self._r: aioredis.Redis | None = None
        # "0": our pending entries first (read again after a restart), then ">": new ones
        self._cursor = "0"

    def _client(self) -> aioredis.Redis:
        if self._r is None:
            self._r = aioredis.from_url(
                self.url,
                socket_connect_timeout=5,
                socket_timeout=_TIMEOUT_S,
                decode_responses=False,
            )
        return self._r

    async def open(self, starting_position: str, starting_timestamp: float | None) -> None:
        """Connect and create the group at the starting position if it does not exist."""
        r = self._client()
        start = _group_start(starting_position, starting_timestamp)
        try:
            await r.xgroup_create(self.key, self.group, id=start, mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):  # BUSYGROUP: the group exists, keep its place
                await self.close()
                raise SourceUnavailable(self._says(e)) from None
        except _REDIS_ERRORS as e:
            await self.close()
            raise SourceUnavailable(self._says(e)) from None
        self._cursor = "0"

    async def read(self, max_records: int, wait_s: float) -> list[StreamRecord]:
        r = self._client()
        count = min(max(1, max_records), MAX_READ)
        try:
            if self._cursor != ">":
                entries = _entries(
                    await r.xreadgroup(self.group, CONSUMER, {self.key: self._cursor}, count=count)
                )
                if entries:
                    self._cursor = _text(entries[-1][0])
                    return await self._records(entries)
                self._cursor = ">"  # the pending entries are all handed out again
            block = int(wait_s * 1000) if wait_s > 0 else None
            entries = _entries(
                await r.xreadgroup(self.group, CONSUMER, {self.key: ">"}, count=count, block=block)
            )
        except _REDIS_ERRORS as e:
            raise SourceUnavailable(self._says(e)) from None
        return await self._records(entries)

    async def _records(self, entries: list[Any]) -> list[StreamRecord]:
        out: list[StreamRecord] = []
        gone: list[str] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if not fields:
                # deleted or trimmed after it was read: nothing left to deliver
                gone.append(entry_id)
                continue
            out.append(self._record(entry_id, fields))
        if gone:
            await self._client().xack(self.key, self.group, *gone)
        return out

    def _record(self, entry_id: str, fields: dict[bytes, bytes]) -> StreamRecord:
        data = fields.get(b"data")
        if data is None:
            data = json.dumps(
                {_text(k): _text(v) for k, v in fields.items()}, separators=(",", ":")
            ).encode()
        key_field = fields.get(b"partitionKey")
        key = _text(key_field) if key_field is not None else entry_id
        arrived = int(entry_id.partition("-")[0]) / 1000
        record = stream_events.stream_record(
            self.mapping, self.shard_id, entry_id, key, data, arrived, self.mapping.role_arn
        )
        return StreamRecord(entry_id, key, data, arrived, record, entry_id)

    async def checkpoint(self, records: Sequence[StreamRecord]) -> None:
        if not records:
            return
        try:
            await self._client().xack(self.key, self.group, *[r.sequence for r in records])
        except _REDIS_ERRORS as e:
            raise SourceUnavailable(self._says(e)) from None

    async def lag(self) -> int | None:
        """Entries not yet read by the group (XINFO GROUPS `lag`, Redis 7+; None when Redis
        cannot tell, e.g. after entries were deleted)."""
        try:
            groups = await self._client().xinfo_groups(self.key)
        except _REDIS_ERRORS as e:
            raise SourceUnavailable(self._says(e)) from None
        for g in groups:
            if _text(g.get("name", b"")) == self.group:
                lag = g.get("lag")
                return int(lag) if lag is not None else None
        return None

    async def close(self) -> None:
        """Disconnect. The group stays: it is the checkpoint. A second call does nothing."""
        r, self._r = self._r, None
        if r is not None:
            await r.aclose()

    async def forget(self) -> None:
        """Destroy the consumer group (the mapping is being deleted). Raises
        `SourceUnavailable` if Redis cannot be reached."""
        try:
            await self._client().xgroup_destroy(self.key, self.group)
        except _REDIS_ERRORS as e:
            raise SourceUnavailable(self._says(e)) from None
        finally:
            await self.close()

    def _says(self, e: BaseException) -> str:
        why = str(e).strip() or type(e).__name__
        return f"Redis stream {self.key} at {redacted_url(self.url)}: {why}"


def _group_start(position: str, timestamp: float | None) -> str:
    """The group's last-delivered id for a starting position: entries after it are read."""
    if position == "LATEST":
        return "$"
    if position == "AT_TIMESTAMP" and timestamp is not None:
        ms = int(timestamp * 1000)
        # everything at or after `ms`: the group starts after the last possible id before it
        return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0"
    return "0"


def _entries(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply for one key."""
    # RESP2 (the client's default): [[key, [(id, fields), ...]]]
    return list(reply[0][1]) if reply else []


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
