"""The Telemetry API (`PUT /2022-07-01/telemetry`) and the older Logs API
(`PUT /2020-08-15/logs`) of one execution environment.

An extension subscribes a listener of its own (an HTTP server inside the sandbox, at
`http://sandbox.localdomain:PORT/...`) to some of three streams: `platform` (Lambda's
lifecycle events), `function` (the runtime's log lines) and `extension` (the extensions'
log lines). Lamina batches the events as Lambda does (`buffering`: at most `maxItems`
events or `maxBytes` bytes, or what `timeoutMs` gathered) and POSTs each batch, a JSON
array, to the listener, one batch at a time per subscriber.

The two APIs differ only in their event names and records: the Telemetry API reports
`platform.initStart`, `platform.runtimeDone`... with metrics and status; the Logs API
`platform.start`, `platform.end`, `platform.report`. Each event is built for the APIs that
have subscribers only, so an environment without subscribers pays one check per event.

Events from before a subscription (the init phase: `platform.initStart`, init-time log
lines) are kept, up to `BACKLOG_EVENTS`, and handed to each subscriber when it subscribes,
as Lambda delivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lamina import untrusted_json
from lamina.runtime_api.extensions import ExtensionError, http_json

log = logging.getLogger(__name__)

TELEMETRY_SCHEMAS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
TYPES = frozenset({"platform", "function", "extension"})
#: hosts a listener URI may name: all mean the sandbox itself
SANDBOX_HOSTS = frozenset({"sandbox.localdomain", "sandbox", "localhost", "127.0.0.1"})
BACKLOG_EVENTS = 1000
POST_TIMEOUT_S = 5.0
#: batches waiting for a slow listener, per subscriber; later ones are dropped (memory stays
#: bounded whatever the function writes)
MAX_QUEUED_BATCHES = 16

#: Lambda's buffering bounds (min, max, default) per API
_TELEMETRY_BUFFERING = {
    "maxItems": (25, 10000, 1000),
    "maxBytes": (262144, 1048576, 262144),
    "timeoutMs": (25, 30000, 1000),
}
_LOGS_BUFFERING = {
    "maxItems": (1000, 10000, 10000),
    "maxBytes": (262144, 1048576, 262144),
    "timeoutMs": (25, 30000, 1000),
}

#: a socket connected to a port on the sandbox's own loopback
Connector = Callable[[int], Awaitable[socket.socket]]


def iso_time(epoch_s: float | None = None) -> str:
    now = time.time() if epoch_s is None else epoch_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


@dataclass(eq=False)
class Subscriber:
    name: str
    logs_api: bool
    types: frozenset[str]
    port: int
    path: str
    max_items: int
    max_bytes: int
    timeout_ms: int
    pending: list[dict[str, Any]] = field(default_factory=list)
    pending_bytes: int = 0
    timer: asyncio.TimerHandle | None = None
    batches: deque[bytes] = field(default_factory=deque)
    sender: asyncio.Task[None] | None = None


class Telemetry:
    """One environment's subscriptions and the events it sends them."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._telemetry = False  # some subscriber on the Telemetry API
        self._logs = False  # some subscriber on the Logs API
        #: events kept for later subscribers, by API (None once no longer kept)
        self._backlog: dict[bool, list[tuple[str, dict[str, Any]]]] | None = {
            False: [],
            True: [],
        }
        self.connect: Connector | None = None
        self._closed = False

    @property
    def active(self) -> bool:
        """Anyone to send to (or a backlog to keep)."""
        return bool(self._subs) or self._backlog is not None

    @property
    def wants_lines(self) -> bool:
        return any(s.types & {"function", "extension"} for s in self._subs) or (
            self._backlog is not None
        )

    def end_backlog(self) -> None:
        """The init phase is over: later subscribers get events from then on."""
        self._backlog = None

    # -- subscribing ---------------------------------------------------------------

    def subscribe(self, name: str, body: bytes, logs_api: bool) -> bytes:
        try:
            request = untrusted_json.loads(body or b"{}")
        except ValueError as e:
            raise ExtensionError("400 Bad Request", "ValidationError", f"Invalid JSON: {e}") from e
        if not isinstance(request, dict):
            raise ExtensionError("400 Bad Request", "ValidationError", "Expected a JSON object")
        if not logs_api:
            schema = request.get("schemaVersion")
            if schema not in TELEMETRY_SCHEMAS:
                raise ExtensionError(
                    "400 Bad Request",
                    "ValidationError",
                    f"schemaVersion must be one of {sorted(TELEMETRY_SCHEMAS)}",
                )
        types = request.get("types")
        if not isinstance(types, list) or not types or not set(types) <= TYPES:
            raise ExtensionError(
                "400 Bad Request",
                "ValidationError",
                f"types must be a non-empty list of {sorted(TYPES)}",
            )
        dest = request.get("destination")
        if not isinstance(dest, dict) or dest.get("protocol") != "HTTP":
            raise ExtensionError(
                "400 Bad Request",
                "ValidationError",
                "destination.protocol must be HTTP (TCP is not supported by Lamina)",
            )
        uri = dest.get("URI")
        parts = urlsplit(uri) if isinstance(uri, str) else None
        if (
            parts is None
            or parts.scheme != "http"
            or parts.hostname not in SANDBOX_HOSTS
            or not _port(parts)
        ):
            raise ExtensionError(
                "400 Bad Request",
                "ValidationError",
                "destination.URI must be http://sandbox.localdomain:PORT/PATH",
            )
        bounds = _LOGS_BUFFERING if logs_api else _TELEMETRY_BUFFERING
        buffering = request.get("buffering") or {}
        if not isinstance(buffering, dict):
            raise ExtensionError("400 Bad Request", "ValidationError", "buffering: an object")
        values = {}
        for key, (low, high, default) in bounds.items():
            value = buffering.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ExtensionError(
                    "400 Bad Request",
                    "ValidationError",
                    f"buffering.{key} must be an integer from {low} to {high}",
                )
            values[key] = value
        sub = Subscriber(
            name=name,
            logs_api=logs_api,
            types=frozenset(types),
            port=_port(parts),
            path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            max_items=values["maxItems"],
            max_bytes=values["maxBytes"],
            timeout_ms=values["timeoutMs"],
        )
        # A second subscription of the same extension to the same API replaces the first.
        self._subs = [s for s in self._subs if (s.name, s.logs_api) != (name, logs_api)]
        self._subs.append(sub)
        self._telemetry = any(not s.logs_api for s in self._subs)
        self._logs = any(s.logs_api for s in self._subs)
        if logs_api:
            self._add(
                sub,
                "platform",
                _event(
                    "platform.logsSubscription",
                    {"name": name, "state": "Subscribed", "types": sorted(types)},
                ),
            )
        else:
            self._add(
                sub,
                "platform",
                _event(
                    "platform.telemetrySubscription",
                    {"name": name, "state": "Subscribed", "types": sorted(types)},
                ),
            )
        if self._backlog is not None:
            for category, event in self._backlog[logs_api]:
                self._add(sub, category, event)
        return http_json("200 OK", b'"OK"')

    # -- events --------------------------------------------------------------------

    def platform(
        self,
        telemetry: tuple[str, dict[str, Any]] | None,
        logs_api: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """One platform event, as each API names it (None: that API has no such event)."""
        stamp = iso_time()
        if telemetry is not None:
            self._emit(False, "platform", _event(*telemetry, stamp))
        if logs_api is not None:
            self._emit(True, "platform", _event(*logs_api, stamp))

    # Lambda's platform events, each in the shape of each API.

    def restore_start(self, function: str, version: str, instance: str, memory_mb: int) -> None:
        """A SnapStart environment's Restore phase began (Lambda's platform.restoreStart)."""
        record = {
            "functionName": function,
            "functionVersion": version,
            "instanceId": instance,
            "instanceMaxMemory": memory_mb,
        }
        self.platform(("platform.restoreStart", record))

    def restore_done(self, status: str, duration_ms: float, error_type: str | None) -> None:
        """The Restore phase ended: platform.restoreRuntimeDone and platform.restoreReport."""
        record: dict[str, Any] = {"status": status}
        if error_type:
            record["errorType"] = error_type
        self.platform(("platform.restoreRuntimeDone", record))
        metrics = {"metrics": {"durationMs": round(duration_ms, 3)}}
        self.platform(("platform.restoreReport", {**record, **metrics}))
        self.end_backlog()

    def init_start(
        self,
        function: str,
        version: str,
        instance: str,
        memory_mb: int,
        kind: str = "on-demand",
    ) -> None:
        record = {
            "initializationType": kind,
            "phase": "init",
            "functionName": function,
            "functionVersion": version,
            "instanceId": instance,
            "instanceMaxMemory": memory_mb,
        }
        self.platform(("platform.initStart", record))

    def init_done(
        self, status: str, duration_ms: float, error_type: str | None, kind: str = "on-demand"
    ) -> None:
        """The init phase ended (`success` or `failure`): later subscribers get events from
        now on only."""
        record: dict[str, Any] = {"initializationType": kind, "phase": "init"}
        record["status"] = status
        if error_type:
            record["errorType"] = error_type
        self.platform(("platform.initRuntimeDone", record))
        metrics = {"metrics": {"durationMs": round(duration_ms, 3)}}
        self.platform(("platform.initReport", {**record, **metrics}))
        self.end_backlog()

    def extension(self, name: str, events: Iterable[str]) -> None:
        record = {"name": name, "state": "Ready", "events": sorted(events)}
        self.platform(("platform.extension", record), ("platform.extension", record))

    def invoke_start(self, request_id: str, version: str, trace_id: str) -> None:
        record: dict[str, Any] = {"requestId": request_id, "version": version}
        if trace_id:
            record["tracing"] = {"type": "X-Amzn-Trace-Id", "value": trace_id}
        logs_record = {"requestId": request_id, "version": version}
        self.platform(("platform.start", record), ("platform.start", logs_record))

    def runtime_done(
        self,
        request_id: str,
        status: str,
        duration_ms: float,
        produced_bytes: int,
        error_type: str | None,
    ) -> None:
        """The runtime answered (`success`, `error`, `failure` or `timeout`)."""
        record: dict[str, Any] = {
            "requestId": request_id,
            "status": status,
            "metrics": {"durationMs": round(duration_ms, 3), "producedBytes": produced_bytes},
        }
        if error_type:
            record["errorType"] = error_type
        logs_record = {"requestId": request_id, "status": status}
        self.platform(("platform.runtimeDone", record), ("platform.runtimeDone", logs_record))

    def report(self, request_id: str, record: dict[str, Any]) -> None:
        """The invocation's REPORT (`record`: the Telemetry API's, with its `metrics`)."""
        self.platform(("platform.report", record), ("platform.end", {"requestId": request_id}))
        logs_record = {"requestId": request_id, "metrics": record["metrics"]}
        self.platform(None, ("platform.report", logs_record))

    def line(self, category: str, stamp_ms: int, record: object) -> None:
        """A log line of the function (`function`) or of an extension (`extension`): its
        text, or the JSON object it holds (JSON log format)."""
        event = {"time": iso_time(stamp_ms / 1000), "type": category, "record": record}
        self._emit(False, category, event)
        self._emit(True, category, event)

    def _emit(self, logs_api: bool, category: str, event: dict[str, Any]) -> None:
        if self._backlog is not None:
            kept = self._backlog[logs_api]
            if len(kept) < BACKLOG_EVENTS:
                kept.append((category, event))
        if self._logs if logs_api else self._telemetry:
            for sub in self._subs:
                if sub.logs_api == logs_api:
                    self._add(sub, category, event)

    def _add(self, sub: Subscriber, category: str, event: dict[str, Any]) -> None:
        if category not in sub.types or self._closed:
            return
        sub.pending.append(event)
        sub.pending_bytes += len(json.dumps(event))
        if len(sub.pending) >= sub.max_items or sub.pending_bytes >= sub.max_bytes:
            self._flush(sub)
        elif sub.timer is None:
            loop = asyncio.get_running_loop()
            sub.timer = loop.call_later(sub.timeout_ms / 1000, self._flush, sub)

    def _flush(self, sub: Subscriber) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        if not sub.pending:
            return
        events, sub.pending, sub.pending_bytes = sub.pending, [], 0
        if len(sub.batches) >= MAX_QUEUED_BATCHES:
            log.debug(
                "telemetry to %s: listener too slow, %d events dropped", sub.name, len(events)
            )
            return
        sub.batches.append(json.dumps(events, separators=(",", ":")).encode())
        if sub.sender is None or sub.sender.done():
            sub.sender = asyncio.get_running_loop().create_task(self._send(sub))

    async def _send(self, sub: Subscriber) -> None:
        while sub.batches:
            body = sub.batches.popleft()
            if self.connect is None:
                continue
            try:
                await asyncio.wait_for(self._post(sub, body), POST_TIMEOUT_S)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                # Lambda drops what its subscriber does not take; so does Lamina.
                log.debug("telemetry to %s dropped: %s", sub.name, e)

    async def _post(self, sub: Subscriber, body: bytes) -> None:
        assert self.connect is not None
        sock = await self.connect(sub.port)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(
                (
                    f"POST {sub.path} HTTP/1.1\r\nHost: sandbox.localdomain:{sub.port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
                + body
            )
            await writer.drain()
            await reader.readline()  # the status line: the listener took the batch
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def drain(self, within_s: float) -> None:
        """Send what is buffered now, waiting at most `within_s` (the environment ends)."""
        for sub in self._subs:
            self._flush(sub)
        senders = [s.sender for s in self._subs if s.sender is not None and not s.sender.done()]
        if senders:
            await asyncio.wait(senders, timeout=within_s)

    def close(self) -> None:
        self._closed = True
        for sub in self._subs:
            if sub.timer is not None:
                sub.timer.cancel()
            if sub.sender is not None:
                sub.sender.cancel()
        self._subs = []
        self._telemetry = self._logs = False
        self._backlog = None


def _event(kind: str, record: dict[str, Any], stamp: str | None = None) -> dict[str, Any]:
    return {"time": stamp or iso_time(), "type": kind, "record": record}


def _port(parts: Any) -> int:
    try:
        return int(parts.port or 0)
    except ValueError:
        return 0
