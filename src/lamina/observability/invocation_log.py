"""The invocation log: every invocation's request and outcome, kept for a while to replay.

`lamina replay REQUEST_ID` (see docs/replay.md) runs a past invocation again; for that this
node keeps, per invocation it runs (sync, each attempt of an async event, event sources,
HTTP routes and URLs, durable steps): the request (payload, ClientContext, tenant id, trace
id, the ARN the caller invoked, the source) and the outcome (executed version, function
error, the start of the response, duration).

Off the hot path: `InvocationLog.record` appends a tuple to a bounded deque and returns;
nothing is formatted or written there, and nobody is woken. One writer thread comes by every
`BATCH_S`, formats what piled up as JSON lines and appends them, one write per batch, to
segment files, `<dir>/<start-ms>.jsonl`, one per `segment_s` (a
quarter of the retention, between 1 s and 5 min). When the deque is full a record is dropped
and counted, never waited for: an invocation must not slow down because a disk is slow.

Retention: a segment goes once everything in it is older than the retention (the writer
sweeps every `sweep_s`, which follows the retention so a short one is honoured quickly), and
the oldest segments go first when they add up to more than `max_bytes`. A lookup also skips
records older than the retention, so an expired record is never answered even between
sweeps.

The files hold event payloads: they are private (0600 in a 0700 directory, as the rest of
the data directory; `datadir.make_private` fixes older ones).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.models import InvokeRequest, InvokeResult

log = logging.getLogger(__name__)

#: records waiting for the writer at most; more are dropped (and counted)
QUEUE_MAX = 10_000
#: seconds between the writer's rounds: records are formatted and written in batches
BATCH_S = 0.2
#: bytes of a response payload kept with its record (the rest is cut, and marked so)
RESPONSE_MAX_BYTES = 256 * 1024
#: seconds between two warnings about dropped records
_WARN_EVERY_S = 10.0
_SUFFIX = ".jsonl"
#: one encoder for every record (json.dumps with options builds one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_SEGMENT = re.compile(r"(\d+)\.jsonl")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str) -> float:
    """Seconds in `24h`, `30m`, `2s`, `7d`, `0` (a bare number is seconds); ValueError if
    it is none of these."""
    m = _DURATION.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"expected a duration like 24h, 30m, 2s or 0, got {value!r}")
    return float(m[1]) * _UNIT_S[m[2] or "s"]


def segment_seconds(retention_s: float) -> float:
    """How much time one segment file covers: a quarter of the retention, 1 s to 5 min."""
    return min(300.0, max(1.0, retention_s / 4))


def sweep_seconds(retention_s: float) -> float:
    """How often expired segments are looked for: a quarter of the retention, 0.25 s to
    1 min (a test's `2s` retention is honoured within a second)."""
    return min(60.0, max(0.25, retention_s / 4))


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class _Pending:
    """A record as the hot path hands it over: references only, formatted later."""

    function_name: str
    version: str
    request: InvokeRequest
    started: float
    result: InvokeResult | None
    error_type: str | None


class InvocationLog:
    """The invocation records of this node: written by one thread, read by lookups.

    `start()` starts the writer, `close()` writes what is queued and stops it; `record` may be
    called from the event loop at any time (before `start` too: the records wait). `find`
    and `flush` block: call them in a thread."""

    def __init__(
        self,
        directory: Path,
        retention_s: float,
        max_bytes: int,
        *,
        queue_max: int = QUEUE_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_s <= 0:
            raise ValueError("retention must be positive (0 means: no InvocationLog at all)")
        self.directory = directory
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.segment_s = segment_seconds(retention_s)
        self.sweep_s = sweep_seconds(retention_s)
        self._clock = clock
        self._queue: deque[_Pending | threading.Event] = deque()
        self._queue_max = queue_max
        #: records dropped because the writer was behind
        self.dropped = 0
        self._warned = -_WARN_EVERY_S
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # The writer's own state (only its thread touches these after `start`).
        self._file: Any = None
        self._file_start = -1
        self._sizes: dict[Path, int] = {}
        self._total = 0
        self._last_sweep = 0.0

    # -- the hot path ---------------------------------------------------------------------

    def record(
        self,
        function_name: str,
        version: str,
        request: InvokeRequest,
        started: float,
        result: InvokeResult | None,
        error_type: str | None = None,
    ) -> None:
        """Keep one invocation: its `result`, or the Lamina error it ended in (`error_type`,
        a throttle for instance). Never blocks; drops the record when the writer is behind."""
        if len(self._queue) >= self._queue_max:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned >= _WARN_EVERY_S:
                self._warned = now
                log.warning(
                    "invocation log: %d record(s) dropped so far: the writer is behind "
                    "(a slow disk?); those invocations cannot be replayed",
                    self.dropped,
                )
            return
        # No wake-up of the writer: it comes by every BATCH_S and takes what has piled up.
        # Waking it per record cost a thread switch, a contended GIL and a write(2) per
        # invocation, which `make bench` measured as a third more server CPU per invoke.
        self._queue.append(_Pending(function_name, version, request, started, result, error_type))

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scan()
        self._thread = threading.Thread(target=self._run, name="invocation-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer (blocking)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before this call is written (blocking); False if
        the writer did not get there within `timeout`."""
        if self._thread is None:
            return False
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    # -- lookups --------------------------------------------------------------------------

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The newest record of `request_id` (its last attempt) not older than the
        retention; None if there is none. Blocking: reads segment files, newest first."""
        needle = json.dumps({"requestId": request_id}, separators=(",", ":"))[1:-1].encode()
        oldest = self._clock() - self.retention_s
        for path in reversed(self._segments()):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # swept meanwhile
                continue
            at = data.rfind(needle)
            while at >= 0:
                start = data.rfind(b"\n", 0, at) + 1
                end = data.find(b"\n", at)
                line = data[start : end if end >= 0 else len(data)]
                with contextlib.suppress(ValueError):
                    found: dict[str, Any] = json.loads(line)
                    if found.get("requestId") == request_id:
                        return found if found.get("time", 0) >= oldest else None
                at = data.rfind(needle, 0, start)
        return None

    # -- the writer -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(min(BATCH_S, self.sweep_s))
            self._wake.clear()
            self._drain()
            now = self._clock()
            if now - self._last_sweep >= self.sweep_s:
                self._last_sweep = now
                self.sweep(now)
            if self._stopping:
                self._drain()
                self._close_file()
                return

    def _drain(self) -> None:
        wrote = False
        waiting: list[threading.Event] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, threading.Event):
                waiting.append(item)
                continue
            try:
                self._write(item)
                wrote = True
            except Exception:  # a record that cannot be written must not stop the writer
                log.exception("invocation log: a record of %s was not written", item.function_name)
        if wrote and self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
            if self._total > self.max_bytes:
                self._trim()
        for done in waiting:
            done.set()

    def _write(self, item: _Pending) -> None:
        line = (_ENCODER.encode(to_record(item)) + "\n").encode()
        # Segments by the time of writing, not of the invocation's start: they only grow at
        # the end, and every record in one is older than the segment's end.
        start_ms = int(self._clock() // self.segment_s * self.segment_s * 1000)
        if self._file is None or start_ms != self._file_start:
            self._open(start_ms)
        self._file.write(line)
        path = self._path(self._file_start)
        self._sizes[path] = self._sizes.get(path, 0) + len(line)
        self._total += len(line)

    def _open(self, start_ms: int) -> None:
        self._close_file()
        path = self._path(start_ms)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=64 * 1024)
        self._file_start = start_ms
        self._sizes.setdefault(path, 0)

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
            self._file_start = -1

    def _path(self, start_ms: int) -> Path:
        return self.directory / f"{start_ms}{_SUFFIX}"

    def _segments(self) -> list[Path]:
        """The segment files, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = sorted(int(m[1]) for name in names if (m := _SEGMENT.fullmatch(name)))
        return [self._path(start) for start in found]

    def _scan(self) -> None:
        """Learn the segments' sizes (a restart finds those of the last run)."""
        self._sizes = {}
        for path in self._segments():
            with contextlib.suppress(FileNotFoundError):
                self._sizes[path] = path.stat().st_size
        self._total = sum(self._sizes.values())

    def sweep(self, now: float | None = None) -> int:
        """Remove the segments whose every record is older than the retention, then the
        oldest ones while they add up to more than `max_bytes`; the number removed. Called
        by the writer thread (or, in tests, by whoever owns a log that was not started)."""
        now = self._clock() if now is None else now
        removed = 0
        for path in self._segments():
            start_s = int(path.name.removesuffix(_SUFFIX)) / 1000
            if start_s + self.segment_s > now - self.retention_s:
                break  # this one, and every later one, holds records still kept
            removed += self._remove(path)
        if self._total > self.max_bytes:
            removed += self._trim()
        return removed

    def _trim(self) -> int:
        removed = 0
        for path in self._segments():
            if self._total <= self.max_bytes:
                break
            if path == self._path(self._file_start):
                self._close_file()  # the open segment alone is over the cap: start afresh
            removed += self._remove(path)
        return removed

    def _remove(self, path: Path) -> int:
        if path == self._path(self._file_start):
            self._close_file()
        self._total -= self._sizes.pop(path, 0)
        try:
            path.unlink()
        except FileNotFoundError:
            return 0
        return 1


def to_record(item: _Pending) -> dict[str, Any]:
    """The JSON record of one invocation (the shape `GET /lamina/invocations/{id}` answers
    with; docs/replay.md describes it)."""
    request, result = item.request, item.result
    parts = request.invoked_arn.split(":")
    record: dict[str, Any] = {
        "requestId": request.request_id,
        "attempt": request.attempt,
        "time": item.started,
        "functionName": item.function_name,
        "invokedArn": request.invoked_arn,
        "qualifier": parts[7] if len(parts) == 8 else None,
        "source": request.source,
        "clientContext": request.client_context,
        "tenantId": request.tenant_id,
        "traceId": request.trace_id or None,
    }
    record.update(_payload("payload", request.payload))
    if result is None:
        record["outcome"] = {
            "status": "Error",
            "errorType": item.error_type,
            "executedVersion": item.version,
        }
        return record
    outcome: dict[str, Any] = {
        "status": result.function_error or "Success",
        "functionError": result.function_error,
        "errorType": result.error_type,
        "executedVersion": result.executed_version,
        "durationMs": round(result.duration_ms, 3),
        "initDurationMs": result.init_duration_ms,
    }
    response = result.payload
    if len(response) > RESPONSE_MAX_BYTES:
        outcome["responseTruncated"] = True
        response = response[:RESPONSE_MAX_BYTES]
    outcome.update(_payload("response", response))
    record["outcome"] = outcome
    return record


def _payload(key: str, data: bytes) -> dict[str, str]:
    try:
        return {key: data.decode()}
    except UnicodeDecodeError:  # a cut in the middle of a character, or not text at all
        return {key + "Base64": base64.b64encode(data).decode()}


def payload_of(record: dict[str, Any], key: str = "payload") -> bytes:
    """A record's payload (or `response`) as bytes, however it was kept."""
    if key + "Base64" in record:
        return base64.b64decode(record[key + "Base64"])
    value = record.get(key)
    return value.encode() if isinstance(value, str) else b""
