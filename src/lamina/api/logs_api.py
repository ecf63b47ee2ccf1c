"""The CloudWatch Logs API (2014-03-28) over the log store, on the server's own port.

The protocol is AWS's JSON 1.1: `POST /`, the operation in `X-Amz-Target:
Logs_20140328.<Operation>`, a JSON body in and out, and errors as HTTP 400 with
`{"__type": ..., "message": ...}` (botocore reads the type from `__type`). That error shape
differs from the Lambda REST API's, so this module renders its own errors rather than going
through `api.errors`. Wire names (logGroupName, nextForwardToken, ...) stop here: the store
speaks in `LogGroup`, `LogStream` and `LogEvent`.

Paging tokens are positions, not offsets, so a page stays correct while functions keep
writing: a group or stream listing continues after the sort key of the last item returned, and
event reads continue after (or before) the (timestamp, id) of the last event returned (see
`_Gap`). Tokens are opaque to callers and checked when they come back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from lamina import untrusted_json
from lamina.api.context import app_state
from lamina.api.errors import internal_error
from lamina.api.wire import aws_json_error, aws_json_response, null_members
from lamina.observability.filter_pattern import FilterPatternError
from lamina.observability.filter_pattern import parse as parse_filter_pattern
from lamina.observability.log_store import LogEvent, LogGroup, LogStore, LogStream

TARGET_PREFIX = "Logs_20140328."

# Limits from the botocore model (DescribeLimit, EventsLimit, Days).
DESCRIBE_LIMIT = 50
EVENTS_LIMIT = 10_000
RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557}
    | {2922, 3288, 3653}
)
# FilterLogEvents reads at most this many events per call, matching or not, and hands back a
# nextToken for the rest, as CloudWatch does: a rare phrase over a large group costs several
# calls, never one unbounded one.
FILTER_SCAN_BUDGET = 20_000
_SCAN_BATCH = 2_000
#: the largest `long` of the model (timestamps in ms, limits): what the store can hold
_LONG_MAX = 2**63 - 1
_GROUP_NAME = re.compile(r"[\.\-_/#A-Za-z0-9]+")
_LOG_GROUP_ARN = re.compile(r"arn:[^:]+:logs:[^:]*:[^:]*:log-group:([^:]+)(?::\*)?")


class LogsApiError(Exception):
    """An error of the Logs API, rendered in the JSON protocol's shape."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _invalid(message: str) -> LogsApiError:
    return LogsApiError("InvalidParameterException", message)


def no_group() -> LogsApiError:
    return LogsApiError("ResourceNotFoundException", "The specified log group does not exist.")


def no_stream() -> LogsApiError:
    return LogsApiError("ResourceNotFoundException", "The specified log stream does not exist.")


def bad_token() -> LogsApiError:
    return _invalid("The specified nextToken is invalid.")


def _error(error: LogsApiError) -> Response:
    return aws_json_error(error.error_type, error.message, error.status)


async def dispatch(request: Request) -> Response:
    """`POST /`: find the operation named by X-Amz-Target and answer it."""
    target = request.headers.get("x-amz-target", "")
    try:
        handler = OPERATIONS.get(target.removeprefix(TARGET_PREFIX))
        if not target.startswith(TARGET_PREFIX) or handler is None:
            raise LogsApiError(
                "UnknownOperationException", f"No operation {target or '(no X-Amz-Target)'}"
            )
        state = app_state(request)
        store = state.log_store
        if store is None:
            raise LogsApiError(
                "ServiceUnavailableException", "This server keeps no logs.", status=503
            )
        try:
            body = untrusted_json.loads(await request.body() or b"{}")
        except ValueError as e:
            raise LogsApiError("SerializationException", f"The body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise LogsApiError("SerializationException", "The body must be a JSON object.")
        nulls = null_members(body)
        if nulls:
            raise _invalid(nulls)
        ctx = Context(store, state.settings.region, state.settings.account_id)
        if state.logs is None:
            return aws_json_response(await handler(Params(body), ctx))
        return aws_json_response(
            await state.logs.call(target.removeprefix(TARGET_PREFIX), Params(body), ctx)
        )
    except LogsApiError as e:
        return _error(e)
    except Exception as e:  # the JSON protocol's shape even for our own failures
        error = internal_error(e, target)
        return _error(LogsApiError("ServiceUnavailableException", error.message, status=500))


class Listing(Protocol):
    """What DescribeLogGroups and DescribeLogStreams read: this node's store, or the merged
    listing of every node's (`cluster.logs`)."""

    async def flush(self) -> None: ...

    async def groups(self, prefix: str | None = None) -> list[LogGroup]: ...

    async def streams(self, group: str, prefix: str | None = None) -> list[LogStream]:
        """The group's streams; KeyError if there is no such group."""


class LogsReader(Protocol):
    """Where the Logs API reads in cluster mode (`cluster.logs.ClusterLogs`: every live node's
    store). A single-machine server has none: the operations read `Context.store` directly."""

    async def call(self, operation: str, p: Params, ctx: Context) -> dict[str, Any]:
        """Answer `operation` (a name of OPERATIONS) or raise LogsApiError."""


@dataclass(frozen=True)
class Context:
    store: LogStore
    region: str
    account_id: str
    #: what the Describe operations list (None: `store`)
    listing: Listing | None = None

    @property
    def listed(self) -> Listing:
        return self.listing or self.store

    def group_arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{group}"


class Params:
    """Typed access to a request body's members, refusing wrong types and out-of-range values
    with InvalidParameterException (boto3 checks these too, but other clients may not)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                raise _invalid(f"{name} is required.")
            return None
        if not isinstance(value, str) or not value:
            raise _invalid(f"{name} must be a non-empty string.")
        return value

    def integer(self, name: str, *, low: int = 0, high: int = _LONG_MAX) -> int | None:
        """An integer member in [low, high] (by default, any the model's `long` holds)."""
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"{name} must be an integer.")
        if not low <= value <= high:
            raise _invalid(f"{name} must be between {low} and {high}; got {value}.")
        return value

    def flag(self, name: str) -> bool:
        value = self.body.get(name, False)
        if not isinstance(value, bool):
            raise _invalid(f"{name} must be true or false.")
        return value

    def names(self, name: str, *, max_items: int) -> list[str] | None:
        value = self.body.get(name)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= max_items
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise _invalid(f"{name} must be a list of 1 to {max_items} names.")
        return value

    def group(self) -> str:
        """logGroupName, or logGroupIdentifier (a name or a log group ARN): exactly one."""
        name = self.text("logGroupName")
        identifier = self.text("logGroupIdentifier")
        if name is not None and identifier is not None:
            raise _invalid("Give logGroupName or logGroupIdentifier, not both.")
        if identifier is not None:
            match = _LOG_GROUP_ARN.fullmatch(identifier)
            name = match[1] if match else identifier
        if name is None:
            raise _invalid("logGroupName or logGroupIdentifier is required.")
        if not _GROUP_NAME.fullmatch(name) or len(name) > 512:
            raise _invalid(f"Invalid log group name: {name!r}.")
        return name


# -- paging ------------------------------------------------------------------------------


def encode_token(key: Sequence[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_token(token: str, shape: Sequence[type]) -> list[Any]:
    """The sort key a token carries, which must have `shape` (the types of its members): a
    token of any other shape is refused, not read as "from the start"."""
    try:
        key = untrusted_json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error) as e:
        raise bad_token() from e
    if (
        not isinstance(key, list)
        or len(key) != len(shape)
        or not all(
            isinstance(k, t) and not isinstance(k, bool) for k, t in zip(key, shape, strict=True)
        )
    ):
        raise bad_token()
    return key


def _page_after(
    items: list[Any],
    key: Callable[[Any], list[Any]],
    shape: Sequence[type],
    token: str | None,
    limit: int,
    *,
    descending: bool = False,
) -> tuple[list[Any], str | None]:
    """The `limit` items past the token's key (items are sorted by `key`, whose members have
    the types `shape`, descending or not), and the token for the rest, if any."""
    if token is not None:
        after = decode_token(token, shape)
        items = [item for item in items if (key(item) < after if descending else key(item) > after)]
    page = items[:limit]
    more = len(items) > limit
    return page, encode_token(key(page[-1])) if more else None


@dataclass(frozen=True, order=True)
class _Gap:
    """A place between two events of the (timestamp, id) order: after every event whose
    (timestamp_ms, id) is <= (ts, id), before every other. Ids are integers, so the gap just
    before an event is (its timestamp, its id - 1), and the gap before every event at time T
    is (T, -1)."""

    ts: int
    id: int

    @classmethod
    def after(cls, event: LogEvent) -> _Gap:
        return cls(event.timestamp_ms, event.id)

    @classmethod
    def before(cls, event: LogEvent) -> _Gap:
        return cls(event.timestamp_ms, event.id - 1)

    def token(self, direction: str) -> str:
        return f"{direction}/{self.ts}/{self.id}"

    @classmethod
    def parse(cls, token: str) -> tuple[str, _Gap]:
        parts = token.split("/")
        if len(parts) != 3 or parts[0] not in ("f", "b"):
            raise bad_token()
        try:
            return parts[0], cls(int(parts[1]), int(parts[2]))
        except ValueError as e:
            raise bad_token() from e


@dataclass(frozen=True)
class _Scope:
    """Which events of a group a read covers: streams and the time range [start, end)."""

    group: str
    streams: list[str] | None
    stream_prefix: str | None
    start_ms: int | None
    end_ms: int | None

    def covers(self, ts: int) -> bool:
        return (self.start_ms is None or ts >= self.start_ms) and (
            self.end_ms is None or ts < self.end_ms
        )

    async def read(self, store: LogStore, **kwargs: Any) -> list[LogEvent]:
        start, end = kwargs.pop("start_ms", None), kwargs.pop("end_ms", None)
        if self.start_ms is not None:
            start = self.start_ms if start is None else max(start, self.start_ms)
        if self.end_ms is not None:
            end = self.end_ms if end is None else min(end, self.end_ms)
        if start is not None and end is not None and start >= end:
            return []
        try:
            return await store.events(
                self.group,
                streams=self.streams,
                stream_prefix=self.stream_prefix,
                start_ms=start,
                end_ms=end,
                **kwargs,
            )
        except KeyError as e:
            raise no_group() from e

    async def after(self, store: LogStore, gap: _Gap, limit: int) -> list[LogEvent]:
        """The first `limit` events after `gap`, oldest first. Two reads keep the order exact
        when several events share the gap's millisecond: the rest of that millisecond by id,
        then everything later by (timestamp, id)."""
        events: list[LogEvent] = []
        if self.covers(gap.ts):
            same_ms = await self.read(
                store, start_ms=gap.ts, end_ms=gap.ts + 1, after_id=gap.id, limit=limit
            )
            events = sorted(same_ms, key=_order)[:limit]
        if len(events) < limit:
            later = await self.read(store, start_ms=gap.ts + 1, limit=limit - len(events))
            events += sorted(later, key=_order)
        return events

    async def before(self, store: LogStore, gap: _Gap, limit: int) -> list[LogEvent]:
        """The last `limit` events before `gap`, oldest first (the mirror of `after`)."""
        events: list[LogEvent] = []
        if self.covers(gap.ts):
            same_ms = await self.read(
                store,
                start_ms=gap.ts,
                end_ms=gap.ts + 1,
                before_id=gap.id + 1,
                limit=limit,
                newest_first=True,
            )
            events = sorted(same_ms, key=_order, reverse=True)[:limit]
        if len(events) < limit:
            earlier = await self.read(
                store, end_ms=gap.ts, limit=limit - len(events), newest_first=True
            )
            events += sorted(earlier, key=_order, reverse=True)
        return events[::-1]


def _order(event: LogEvent) -> tuple[int, int]:
    return (event.timestamp_ms, event.id)


# -- operations --------------------------------------------------------------------------


async def describe_log_groups(p: Params, ctx: Context) -> dict[str, Any]:
    prefix = p.text("logGroupNamePrefix")
    limit = p.integer("limit", low=1, high=DESCRIBE_LIMIT) or DESCRIBE_LIMIT
    await ctx.listed.flush()
    groups = sorted(await ctx.listed.groups(prefix), key=lambda g: g.name)
    page, token = _page_after(groups, lambda g: [g.name], (str,), p.text("nextToken"), limit)
    out: dict[str, Any] = {"logGroups": [_group_shape(g, ctx) for g in page]}
    if token:
        out["nextToken"] = token
    return out


def _group_shape(group: LogGroup, ctx: Context) -> dict[str, Any]:
    arn = ctx.group_arn(group.name)
    shape: dict[str, Any] = {
        "logGroupName": group.name,
        "creationTime": group.created_ms,
        "metricFilterCount": 0,
        "arn": arn + ":*",
        "logGroupArn": arn,
        "storedBytes": group.stored_bytes,
        "logGroupClass": "STANDARD",
    }
    if group.retention_days is not None:
        shape["retentionInDays"] = group.retention_days
    return shape


async def describe_log_streams(p: Params, ctx: Context) -> dict[str, Any]:
    group = p.group()
    prefix = p.text("logStreamNamePrefix")
    order_by = p.text("orderBy") or "LogStreamName"
    if order_by not in ("LogStreamName", "LastEventTime"):
        raise _invalid("orderBy must be LogStreamName or LastEventTime.")
    if order_by == "LastEventTime" and prefix is not None:
        raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
    descending = p.flag("descending")
    limit = p.integer("limit", low=1, high=DESCRIBE_LIMIT) or DESCRIBE_LIMIT
    await ctx.listed.flush()
    try:
        streams = await ctx.listed.streams(group, prefix)
    except KeyError as e:
        raise no_group() from e

    def key(s: LogStream) -> list[Any]:
        if order_by == "LastEventTime":
            return [s.last_event_ms or 0, s.name]
        return [s.name]

    streams.sort(key=key, reverse=descending)
    shape = (int, str) if order_by == "LastEventTime" else (str,)
    page, token = _page_after(
        streams, key, shape, p.text("nextToken"), limit, descending=descending
    )
    out: dict[str, Any] = {"logStreams": [_stream_shape(s, ctx) for s in page]}
    if token:
        out["nextToken"] = token
    return out


def _stream_shape(stream: LogStream, ctx: Context) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "logStreamName": stream.name,
        "creationTime": stream.created_ms,
        "arn": f"{ctx.group_arn(stream.group)}:log-stream:{stream.name}",
        "storedBytes": stream.stored_bytes,
    }
    for member, value in (
        ("firstEventTimestamp", stream.first_event_ms),
        ("lastEventTimestamp", stream.last_event_ms),
        ("lastIngestionTime", stream.last_ingestion_ms),
    ):
        if value is not None:
            shape[member] = value
    return shape


async def get_log_events(p: Params, ctx: Context) -> dict[str, Any]:
    """One stream's events, a page at a time, in CloudWatch's two directions: without a token,
    the first page from the head (startFromHead) or the last page before the tail; then
    nextForwardToken (f/...) for newer events and nextBackwardToken (b/...) for older ones.
    A token that finds nothing comes back unchanged, so a caller can poll it for new events."""
    group = p.group()
    stream = p.text("logStreamName", required=True)
    assert stream is not None
    start_ms, end_ms = p.integer("startTime"), p.integer("endTime")
    limit = p.integer("limit", low=1, high=EVENTS_LIMIT) or EVENTS_LIMIT
    token = p.text("nextToken")
    scope = _Scope(group, [stream], None, start_ms, end_ms)
    await ctx.store.flush()
    await _check_stream(ctx.store, group, stream)
    if token is not None:
        direction, gap = _Gap.parse(token)
    elif p.flag("startFromHead"):
        direction, gap = "f", _Gap(start_ms if start_ms is not None else 0, -1)
    else:
        direction, gap = "b", _Gap(end_ms if end_ms is not None else 2**62, -1)
    if direction == "f":
        events = await scope.after(ctx.store, gap, limit)
    else:
        events = await scope.before(ctx.store, gap, limit)
    if events:
        forward, backward = _Gap.after(events[-1]), _Gap.before(events[0])
    elif token is None and direction == "b":
        # Nothing in the stream (in range): both tokens wait at the start of the range.
        forward = backward = _Gap(start_ms if start_ms is not None else 0, -1)
    else:
        forward = backward = gap
    return {
        "events": [
            {"timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.ingestion_ms}
            for e in events
        ],
        "nextForwardToken": forward.token("f"),
        "nextBackwardToken": backward.token("b"),
    }


async def _check_stream(store: LogStore, group: str, stream: str) -> None:
    try:
        streams = await store.streams(group, stream)
    except KeyError as e:
        raise no_group() from e
    if not any(s.name == stream for s in streams):
        raise no_stream()


async def filter_log_events(p: Params, ctx: Context) -> dict[str, Any]:
    """Events of a group, across streams in (timestamp, id) order, that match a filter
    pattern. Reads at most FILTER_SCAN_BUDGET events per call; nextToken continues after the
    last event read, matching or not."""
    group = p.group()
    streams = p.names("logStreamNames", max_items=100)
    stream_prefix = p.text("logStreamNamePrefix")
    if streams is not None and stream_prefix is not None:
        raise _invalid("Give logStreamNames or logStreamNamePrefix, not both.")
    start_ms, end_ms = p.integer("startTime"), p.integer("endTime")
    limit = p.integer("limit", low=1, high=EVENTS_LIMIT) or EVENTS_LIMIT
    pattern_text = p.body.get("filterPattern", "")
    if not isinstance(pattern_text, str) or len(pattern_text) > 1024:
        raise _invalid("filterPattern must be a string of at most 1024 characters.")
    try:
        pattern = parse_filter_pattern(pattern_text)
    except FilterPatternError as e:
        raise _invalid(f"Invalid filter pattern: {e}") from e
    token = p.text("nextToken")
    gap = _Gap(start_ms if start_ms is not None else 0, -1)
    if token is not None:
        key = decode_token(token, (int, int))
        gap = max(gap, _Gap(key[0], key[1]))
    scope = _Scope(group, streams, stream_prefix, start_ms, end_ms)
    await ctx.store.flush()
    matched: list[LogEvent] = []
    scanned = 0
    exhausted = False
    while len(matched) < limit and scanned < FILTER_SCAN_BUDGET:
        batch = await scope.after(ctx.store, gap, min(_SCAN_BATCH, FILTER_SCAN_BUDGET - scanned))
        if not batch:
            exhausted = True
            break
        for event in batch:
            gap = _Gap.after(event)
            scanned += 1
            if pattern.matches_everything or pattern.matches(event.message):
                matched.append(event)
                if len(matched) == limit:
                    break
    out: dict[str, Any] = {
        "events": [
            {
                "logStreamName": e.stream,
                "timestamp": e.timestamp_ms,
                "message": e.message,
                "ingestionTime": e.ingestion_ms,
                "eventId": str(e.id),
            }
            for e in matched
        ],
        "searchedLogStreams": [],
    }
    if not exhausted:
        out["nextToken"] = encode_token([gap.ts, gap.id])
    return out


async def put_retention_policy(p: Params, ctx: Context) -> dict[str, Any]:
    group = p.group()
    days = p.integer("retentionInDays", low=1)
    if days is None:
        raise _invalid("retentionInDays is required.")
    if days not in RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in sorted(RETENTION_DAYS))
        raise _invalid(f"retentionInDays must be one of {allowed}; got {days}.")
    await ctx.store.flush()  # a group is created by its first events, which may be queued
    return await _on_group(ctx.store.set_retention(group, days))


async def delete_retention_policy(p: Params, ctx: Context) -> dict[str, Any]:
    group = p.group()
    await ctx.store.flush()
    return await _on_group(ctx.store.set_retention(group, None))


async def delete_log_group(p: Params, ctx: Context) -> dict[str, Any]:
    group = p.group()
    await ctx.store.flush()
    return await _on_group(ctx.store.delete_group(group))


async def _on_group(change: Awaitable[None]) -> dict[str, Any]:
    try:
        await change
    except KeyError as e:
        raise no_group() from e
    return {}


OPERATIONS: dict[str, Callable[[Params, Context], Awaitable[dict[str, Any]]]] = {
    "DescribeLogGroups": describe_log_groups,
    "DescribeLogStreams": describe_log_streams,
    "GetLogEvents": get_log_events,
    "FilterLogEvents": filter_log_events,
    "PutRetentionPolicy": put_retention_policy,
    "DeleteRetentionPolicy": delete_retention_policy,
    "DeleteLogGroup": delete_log_group,
}
