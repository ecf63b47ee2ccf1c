"""The Logs API of a cluster: every node's lines, read from any node.

Each node keeps its own log store (the write path stays local: a line goes to the node's
SQLite file and nowhere else). Reads fan out over NATS request/reply: `LogsResponder` answers
queries of this node's store on `<cluster>.logs.<node>`, and `ClusterLogs` asks every live
node at once, waits at most `timeout_s`, and merges. A node that does not answer in time is
left out of the answer and named in the server log: a Logs API call never fails because one
node is gone.

How each operation merges:
- DescribeLogGroups: groups by name (stored bytes summed, the earliest creation time, the
  retention a node has set); DescribeLogStreams: the union of the streams (a name on two nodes
  is one stream: sizes summed, its first and last events the earliest and latest). Both are
  then ordered and paged by the Logs API's own code (`Context.listing`).
- GetLogEvents: a stream lives on one node; the first call asks every node and uses the one
  that has it, and the tokens name that node (`f/TS/ID/NODE`), so later calls go to it alone.
- FilterLogEvents: each node runs the query on its own events from its own position; the
  answers are merged in (timestamp, node, id) order, and the nextToken carries every node's
  position (see `_merge`), so that pages neither skip nor repeat lines. eventIds are
  `NODE:ID` (ids grow per node; `lamina logs --follow` keeps the newest per node).
- PutRetentionPolicy, DeleteRetentionPolicy, DeleteLogGroup: sent to every live node; they
  succeed if one node had the group. Retention is kept per node, as each node's store
  prunes by it: a node that was down at the time, or a group first created later on another
  node, keeps its own setting until it is set again.

Requests and replies are compact JSON, a reply at most MAX_REPLY_BYTES (and the NATS
servers' max_payload): a node whose page of events would not fit answers a smaller page
(fewer events, with its own token for the rest), which the merge handles as any page, and
a listing that would not fit comes in parts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lamina import untrusted_json
from lamina.api.context import AppState
from lamina.api.logs_api import (
    EVENTS_LIMIT,
    OPERATIONS,
    Context,
    LogsApiError,
    Params,
    bad_token,
    decode_token,
    encode_token,
    no_group,
    no_stream,
)
from lamina.cluster.api import NodeDirectory
from lamina.observability.log_store import LogGroup, LogStream
from lamina.settings import ClusterSettings

log = logging.getLogger(__name__)

#: seconds a reader waits for the nodes' answers
DEFAULT_TIMEOUT_S = 5.0
#: bytes of a reply at most (less if the NATS servers' max_payload is less): a cluster's NATS
#: takes 8 MB messages for invocations, but a page of logs need not hold up the connection
MAX_REPLY_BYTES = 1024 * 1024
#: bytes of a reply kept below that limit (the message's own framing)
_PAYLOAD_MARGIN = 4096
#: an id above any event's: a position after every event of a millisecond
_AFTER_ALL_IDS = 2**62
#: the operations that change a group: sent to every node
_WRITES = ("PutRetentionPolicy", "DeleteRetentionPolicy", "DeleteLogGroup")
#: the queries only nodes ask each other (raw rows, unpaged)
_LIST_GROUPS = "ListGroups"
_LIST_STREAMS = "ListStreams"
_NOT_FOUND = "ResourceNotFoundException"
_FAILED = "ServiceUnavailableException"


def logs_subject(cluster_name: str, node: str) -> str:
    """Where `node` answers queries of its log store."""
    return f"{cluster_name}.logs.{node}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class LogsResponder:
    """Answers the cluster's queries of this node's log store (`ctx.store`), each in a task of
    its own so that a long FilterLogEvents scan does not hold up the others."""

    def __init__(
        self,
        nc: Client,
        ctx: Context,
        cluster_name: str,
        node_name: str,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._nc = nc
        self._ctx = ctx
        self._max_reply_bytes = max_reply_bytes
        self.subject = logs_subject(cluster_name, node_name)
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(self.subject, cb=self._on_request)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            reply = _dumps({"ok": await self._run(msg.data)})
            if len(reply) > self._nc.max_payload:
                raise ValueError(f"an answer of {len(reply)} bytes does not fit a NATS message")
        except LogsApiError as e:
            reply = _dumps({"error": [e.error_type, e.message]})
        except Exception as e:  # a reader must get an answer, whatever went wrong here
            log.exception("logs: could not answer a query from another node")
            reply = _dumps({"error": [_FAILED, f"{type(e).__name__}: {e}"]})
        if msg.reply:
            with contextlib.suppress(Exception):  # the reader may be gone: nobody to tell
                await msg.respond(reply)

    async def _run(self, data: bytes) -> dict[str, Any]:
        try:
            request = untrusted_json.loads(data)
        except ValueError as e:
            raise LogsApiError("SerializationException", f"not JSON: {e}") from e
        if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
            raise LogsApiError("SerializationException", "expected {op, body}")
        op, body = request.get("op"), request["body"]
        if op in (_LIST_GROUPS, _LIST_STREAMS):
            return await self._list(op, Params(body))
        handler = OPERATIONS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise LogsApiError("UnknownOperationException", f"No operation {op!r}")
        result = await handler(Params(body), self._ctx)
        # A page too large for one message is asked again smaller, until it fits.
        room = self._room()
        while len(_dumps({"ok": result})) > room and len(result.get("events", ())) > 1:
            body = {**body, "limit": len(result["events"]) // 2}
            result = await handler(Params(body), self._ctx)
        return result

    def _room(self) -> int:
        return min(self._nc.max_payload, self._max_reply_bytes) - _PAYLOAD_MARGIN

    async def _list(self, op: str, params: Params) -> dict[str, Any]:
        """The groups, or a group's streams, as rows, by name after `after`: as many as fit
        one message (`more`: there are others)."""
        store = self._ctx.store
        await store.flush()
        rows: list[list[Any]]
        if op == _LIST_GROUPS:
            rows = [list(dataclasses.astuple(g)) for g in await store.groups(params.text("prefix"))]
        else:
            group = params.text("group", required=True)
            assert group is not None
            try:
                streams = await store.streams(group, params.text("prefix"))
            except KeyError as e:
                raise no_group() from e
            rows = [list(dataclasses.astuple(s))[1:] for s in streams]
        after = params.text("after")
        if after is not None:
            rows = [row for row in rows if row[0] > after]
        room = self._room()
        size, fit = 0, 0
        for row in rows:
            size += len(_dumps(row)) + 1
            if size > room:
                break
            fit += 1
        return {"rows": rows[:fit], "more": fit < len(rows)}


async def join(
    nc: Client, state: AppState, cluster: ClusterSettings, directory: NodeDirectory
) -> LogsResponder:
    """Cluster mode at start-up: answer the cluster's queries of this node's log store, and
    let the Logs API read every node's (`state.logs`). The responder is closed before the
    log store is."""
    if state.log_store is None:
        raise ValueError("the log store is wired in before the cluster's logs")
    ctx = Context(state.log_store, state.settings.region, state.settings.account_id)
    responder = LogsResponder(nc, ctx, cluster.name, cluster.node_name)
    await responder.start()
    state.logs = ClusterLogs(nc, directory, cluster.name)
    return responder


@dataclass(frozen=True)
class _Answer:
    """What one node answered: a result, or the Logs API error it raised."""

    node: str
    result: dict[str, Any] | None = None
    error: LogsApiError | None = None


class ClusterLogs:
    """The Logs API over every live node's store (`api.logs_api.LogsReader`)."""

    def __init__(
        self,
        nc: Client,
        directory: NodeDirectory,
        cluster_name: str = "lamina",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._nc = nc
        self._directory = directory
        self._cluster_name = cluster_name
        self.timeout_s = timeout_s

    async def call(self, operation: str, p: Params, ctx: Context) -> dict[str, Any]:
        if operation in ("DescribeLogGroups", "DescribeLogStreams"):
            return await OPERATIONS[operation](p, dataclasses.replace(ctx, listing=_Merged(self)))
        if operation == "GetLogEvents":
            return await self._get_log_events(p)
        if operation == "FilterLogEvents":
            return await self._filter_log_events(p)
        if operation in _WRITES:
            return await self._everywhere(operation, p.body)
        raise LogsApiError("UnknownOperationException", f"No operation {operation}")

    # -- asking the nodes ----------------------------------------------------------------

    async def ask(self, op: str, bodies: dict[str, dict[str, Any]]) -> list[_Answer]:
        """Ask each node named in `bodies` (its request's body) at once; the answers of those
        that answered within the timeout, by node name."""
        answers = await asyncio.gather(
            *(self._ask_one(node, op, body) for node, body in sorted(bodies.items()))
        )
        return [a for a in answers if a is not None]

    async def ask_live(self, op: str, body: dict[str, Any]) -> list[_Answer]:
        """Ask every live node the same."""
        return await self.ask(op, {n.name: body for n in self._directory.live()})

    async def _ask_one(self, node: str, op: str, body: dict[str, Any]) -> _Answer | None:
        subject = logs_subject(self._cluster_name, node)
        try:
            msg = await self._nc.request(
                subject, _dumps({"op": op, "body": body}), timeout=self.timeout_s
            )
            reply = json.loads(msg.data)
        except Exception as e:  # gone, slow, or garbled: left out, and said
            log.warning(
                "logs: node %s left out of %s: no answer (%s; waited at most %.1f s)",
                node,
                op,
                type(e).__name__,
                self.timeout_s,
            )
            return None
        if isinstance(reply, dict) and isinstance(reply.get("ok"), dict):
            return _Answer(node, result=reply["ok"])
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, list) and len(error) == 2 and error[0] == _FAILED:
            log.warning("logs: node %s left out of %s: it failed (%s)", node, op, error[1])
            return None
        if isinstance(error, list) and len(error) == 2:
            return _Answer(node, error=LogsApiError(str(error[0]), str(error[1])))
        log.warning("logs: node %s left out of %s: an answer of the wrong shape", node, op)
        return None

    # -- operations ----------------------------------------------------------------------

    async def _everywhere(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """A change of a group, on every live node: done if any node had the group."""
        answers = await self.ask_live(op, body)
        _raise_unexpected(answers)
        if any(a.result is not None for a in answers):
            return {}
        raise _first_error(answers)

    async def _get_log_events(self, p: Params) -> dict[str, Any]:
        body = dict(p.body)
        token = p.text("nextToken")
        if token is None:
            answers = await self.ask_live("GetLogEvents", body)
            _raise_unexpected(answers)
            found = [a for a in answers if a.result is not None]
            if not found:
                if any(a.error and a.error.message == no_stream().message for a in answers):
                    raise no_stream()
                raise _first_error(answers)
            answer = next((a for a in found if a.result and a.result.get("events")), found[0])
        else:
            parts = token.split("/")
            if (
                len(parts) != 4
                or parts[0] not in ("f", "b")
                or not all(_is_int(n) for n in parts[1:3])
                or not parts[3]
            ):
                raise bad_token()
            node = parts[3]
            body["nextToken"] = "/".join(parts[:3])
            live = {n.name for n in self._directory.live()}
            answers = await self.ask("GetLogEvents", {node: body} if node in live else {})
            if not answers:
                if node not in live:
                    log.warning("logs: node %s left out of GetLogEvents: not live", node)
                # The node is away: nothing new, and the same place to poll from.
                place = "/".join(parts[1:])
                return {
                    "events": [],
                    "nextForwardToken": f"f/{place}",
                    "nextBackwardToken": f"b/{place}",
                }
            answer = answers[0]
            if answer.error is not None:
                raise answer.error
        result = dict(answer.result or {})
        for key in ("nextForwardToken", "nextBackwardToken"):
            if isinstance(result.get(key), str):
                result[key] = f"{result[key]}/{answer.node}"
        return result

    async def _filter_log_events(self, p: Params) -> dict[str, Any]:
        token = p.text("nextToken")
        positions = _decode_positions(token) if token is not None else {}
        limit = p.integer("limit", low=1, high=EVENTS_LIMIT) or EVENTS_LIMIT
        live = [n.name for n in self._directory.live()]
        bodies: dict[str, dict[str, Any]] = {}
        for node in live:
            body = {k: v for k, v in p.body.items() if k != "nextToken"}
            if node in positions:
                body["nextToken"] = encode_token(list(positions[node]))
            bodies[node] = body
        answers = await self.ask("FilterLogEvents", bodies)
        _raise_unexpected(answers)
        pages = {a.node: a.result for a in answers if a.result is not None}
        if answers and not pages:
            raise _first_error(answers)
        events, next_positions = _merge(pages, limit)
        answered = {a.node for a in answers}
        for node in live:
            if node in positions and node not in answered and next_positions:
                next_positions[node] = positions[node]  # silent this time: kept where it was
        out: dict[str, Any] = {"events": events, "searchedLogStreams": []}
        if next_positions:
            out["nextToken"] = _encode_positions(next_positions)
        return out


class _Merged:
    """The Describe operations' listing (`api.logs_api.Listing`), merged from every node."""

    def __init__(self, logs: ClusterLogs) -> None:
        self._logs = logs

    async def flush(self) -> None:
        """Each node flushes its own store before it lists."""

    async def groups(self, prefix: str | None = None) -> list[LogGroup]:
        rows = await self._rows(_LIST_GROUPS, {"prefix": prefix} if prefix else {})
        if rows is None:
            return []
        merged: dict[str, LogGroup] = {}
        for node_rows in rows.values():
            for row in node_rows:
                group = LogGroup(*row)
                seen = merged.get(group.name)
                if seen is not None:
                    group = LogGroup(
                        group.name,
                        min(seen.created_ms, group.created_ms),
                        seen.retention_days if seen.retention_days else group.retention_days,
                        seen.stored_bytes + group.stored_bytes,
                    )
                merged[group.name] = group
        return sorted(merged.values(), key=lambda g: g.name)

    async def streams(self, group: str, prefix: str | None = None) -> list[LogStream]:
        body: dict[str, Any] = {"group": group}
        if prefix:
            body["prefix"] = prefix
        rows = await self._rows(_LIST_STREAMS, body)
        if rows is None:
            raise KeyError(group)
        merged: dict[str, LogStream] = {}
        for node_rows in rows.values():
            for row in node_rows:
                stream = LogStream(group, *row)
                seen = merged.get(stream.name)
                if seen is not None:
                    stream = LogStream(
                        group,
                        stream.name,
                        min(seen.created_ms, stream.created_ms),
                        _least(seen.first_event_ms, stream.first_event_ms),
                        _most(seen.last_event_ms, stream.last_event_ms),
                        _most(seen.last_ingestion_ms, stream.last_ingestion_ms),
                        seen.stored_bytes + stream.stored_bytes,
                    )
                merged[stream.name] = stream
        return sorted(merged.values(), key=lambda s: s.name)

    async def _rows(self, op: str, body: dict[str, Any]) -> dict[str, list[list[Any]]] | None:
        """Every answering node's rows, asked again from the last name a node gave while it
        has more; None if no node had the group (or no node answered)."""
        answers = await self._logs.ask_live(op, body)
        _raise_unexpected(answers)
        rows: dict[str, list[list[Any]]] = {}
        while answers:
            more: dict[str, dict[str, Any]] = {}
            for answer in answers:
                if answer.result is None:
                    continue
                part = answer.result.get("rows", [])
                rows.setdefault(answer.node, []).extend(part)
                if answer.result.get("more") and part:
                    more[answer.node] = {**body, "after": part[-1][0]}
            answers = await self._logs.ask(op, more) if more else []
            _raise_unexpected(answers)
        return rows or None


def _is_int(text: str) -> bool:
    return text.removeprefix("-").isdigit()


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _raise_unexpected(answers: list[_Answer]) -> None:
    """A node's error other than "not found" (a bad parameter, a bad token) is the caller's:
    every node would say the same."""
    for answer in answers:
        if answer.error is not None and answer.error.error_type != _NOT_FOUND:
            raise answer.error


def _first_error(answers: list[_Answer]) -> LogsApiError:
    for answer in answers:
        if answer.error is not None:
            return answer.error
    return LogsApiError(
        "ServiceUnavailableException", "No node of the cluster answered in time.", status=503
    )


# -- FilterLogEvents: merging pages, and the positions a token carries -------------------

#: (timestamp, node, id): the order of events across nodes (within a node, its own order)
_Key = tuple[int, str, int]
#: a node's position in its own (timestamp, id) order: it has read every event up to it
_Position = tuple[int, int]


def _merge(
    pages: dict[str, dict[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], dict[str, _Position]]:
    """The merged page of the nodes' FilterLogEvents answers, and each node's position after
    it (empty when every node has been read to its end).

    Each node read its events in order up to a place of its own (its nextToken), or to its
    end (no nextToken), and matched some of them. Everything up to the least of those places
    (`bound`, in (timestamp, node, id) order) has been read on every node, so the matches up
    to `bound` can be given in order; the first `limit` of them are. The page ends at `cut`:
    the last event given if the page is full, else `bound`. Each node then continues from
    `cut`, or from its own place if that is earlier; the matches past `cut` are read again
    by the next call, never skipped."""
    bound: _Key | None = None
    matched: list[tuple[_Key, dict[str, Any]]] = []
    reached: dict[str, _Position | None] = {}
    for node, page in pages.items():
        token = page.get("nextToken")
        place = tuple(decode_token(token, (int, int))) if isinstance(token, str) else None
        reached[node] = (place[0], place[1]) if place else None
        if place is not None:
            key = (place[0], node, place[1])
            bound = key if bound is None else min(bound, key)
        for event in page.get("events", []):
            matched.append(((int(event["timestamp"]), node, int(event["eventId"])), event))
    matched.sort(key=lambda m: m[0])
    if bound is not None:
        matched = [m for m in matched if m[0] <= bound]
    given = matched[:limit]
    cut = given[-1][0] if len(given) == limit else bound
    events = [{**event, "eventId": f"{key[1]}:{key[2]}"} for key, event in given]
    if cut is None:
        return events, {}
    positions: dict[str, _Position] = {}
    for node, place in reached.items():
        at_cut = _project(cut, node)
        positions[node] = at_cut if place is None else min(place, at_cut)
    return events, positions


def _project(cut: _Key, node: str) -> _Position:
    """`cut` in `node`'s own order: after its events up to `cut` in (timestamp, node, id)."""
    ts, cut_node, cut_id = cut
    if node < cut_node:
        return (ts, _AFTER_ALL_IDS)
    if node == cut_node:
        return (ts, cut_id)
    return (ts, -1)


def _encode_positions(positions: dict[str, _Position]) -> str:
    data = _dumps({node: list(place) for node, place in sorted(positions.items())})
    return "c" + base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_positions(token: str) -> dict[str, _Position]:
    if not token.startswith("c"):
        raise bad_token()
    text = token[1:]
    try:
        value = untrusted_json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error) as e:
        raise bad_token() from e
    if not isinstance(value, dict):
        raise bad_token()
    positions: dict[str, _Position] = {}
    for node, place in value.items():
        if (
            not isinstance(place, list)
            or len(place) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in place)
        ):
            raise bad_token()
        positions[node] = (place[0], place[1])
    return positions
