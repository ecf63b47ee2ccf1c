"""Execution environments' logs: what each runtime writes, framed by Lambda's platform lines.

A runtime's stdout and stderr are one pipe read by the event loop (`EnvironmentLog.pipe`);
the environment's extensions, if any, write to a second one (their lines go to the same
stream, as on Lambda, but the Telemetry API tells them apart as `extension` lines).
Lamina appends Lambda's `START`, `END` and `REPORT` lines around each invocation into the same
stream, so the lines of one invocation sit between its START and its REPORT; before END is
added, whatever the runtime wrote is drained from the pipe (it wrote it before answering).

Each line becomes one CloudWatch-style event of the environment's log group and stream,
stamped with the time it was read from the pipe; a line without its newline yet is held until
the newline comes, or until the invocation ends or the environment closes. Events wait in
per-environment buffers, and one `LogWriter` task hands them to the `LogStore` every
`FLUSH_INTERVAL_S` (the store writes them off the event loop). The store is where logs are
kept and queried (the Logs API, `lamina logs`); there is no second copy elsewhere, so the
store's disk cap bounds them all.

A runtime may write faster than the store's disk takes it. The writer hands nothing more to a
store whose backlog is past `MAX_STORE_BACKLOG_BYTES`, and each environment's buffer is capped
at `MAX_PENDING_BYTES`; what does not fit is dropped and replaced by an event saying how much.
Memory stays bounded and the event loop never waits for the disk. Each function may also be
held to a rate (a token bucket of bytes per second with a burst, shared by its environments:
`--log-rate-limit`, `--log-burst`); lines over it are dropped the same way. Every such loss
is counted per reason and said in the stream by a marker line (see `log_loss`).

A function's `LoggingConfig` decides the shape: in Text format the platform lines are Lambda's
text lines; in JSON format they are Lambda's `platform.*` JSON records (`platform.start`,
`platform.report`, and `platform.runtimeDone` at DEBUG), kept or dropped by SystemLogLevel, and
the function's own lines are dropped when under ApplicationLogLevel: a line that is a JSON
object has the level its `level` member names, any other line is INFO (Lambda's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from lamina import limits
from lamina.models import APPLICATION_LOG_LEVELS, SYSTEM_LOG_LEVELS, LoggingConfig
from lamina.observability import log_loss
from lamina.observability.log_loss import LogSource, Losses, LossObserver, RateLimiter
from lamina.observability.log_store import LogStore

FLUSH_INTERVAL_S = 0.2
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: bytes the store may have queued and unwritten before environments' events wait (and,
#: once their own buffers are full, are dropped)
MAX_STORE_BACKLOG_BYTES = 8 * 1024 * 1024
#: the longest line held whole while its newline has not come (a longer one is cut in
#: pieces); the store splits lines into events of CloudWatch's 256 KB anyway
MAX_LINE_BYTES = 1024 * 1024
_READ_CHUNK = 65536
#: seconds between two loss markers of one environment in the middle of an invocation (a
#: flood would otherwise leave one at every hand-over); START, END and close always say
#: what was lost before them
MARKER_INTERVAL_S = 1.0
# What one invocation keeps in memory for LogType=Tail: enough that the last 4 KB survive.
_TAIL_KEEP = 2 * limits.TAIL_LOG_MAX_BYTES


@dataclass(frozen=True)
class Report:
    """What Lambda's REPORT line says about one invocation."""

    request_id: str
    duration_ms: float
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None = None
    #: whether the init duration is billed (custom runtimes), as Lambda bills it
    bill_init: bool = False
    #: "timeout" or "error" when the runtime did not answer normally
    status: str | None = None
    error_type: str | None = None
    #: the function and version that ran (not part of the line: for metering)
    function_name: str = ""
    version: str = ""
    #: SnapStart: the Restore Duration of a restored environment's first invocation (the
    #: restore and the after-restore hooks, until the runtime asked for work)
    restore_duration_ms: float | None = None

    def billed_ms(self) -> int:
        billed = self.duration_ms
        if self.bill_init and self.init_duration_ms is not None:
            billed += self.init_duration_ms
        return max(math.ceil(billed), 1)

    def billed_restore_ms(self) -> int | None:
        """Billed Restore Duration: Lambda bills a Python SnapStart function's restore (the
        runtime's reload and its after-restore hooks). Lamina's restore is the runtime's own
        work from the fork on, so all of it is billed, rounded up to the ms."""
        if self.restore_duration_ms is None:
            return None
        return max(math.ceil(self.restore_duration_ms), 1)

    def metered_ms(self) -> int:
        """What metering bills for the invocation: Billed Duration plus Billed Restore
        Duration, if any (both at the function's memory, as Lambda charges them)."""
        return self.billed_ms() + (self.billed_restore_ms() or 0)

    def record(self) -> dict[str, object]:
        """The `record` of Lambda's JSON `platform.report` event."""
        metrics: dict[str, object] = {
            "durationMs": round(self.duration_ms, 3),
            "billedDurationMs": self.billed_ms(),
            "memorySizeMB": self.memory_size_mb,
            "maxMemoryUsedMB": self.max_memory_used_mb,
        }
        if self.init_duration_ms is not None:
            metrics["initDurationMs"] = round(self.init_duration_ms, 3)
        restore = self.billed_restore_ms()
        if self.restore_duration_ms is not None and restore is not None:
            metrics["restoreDurationMs"] = round(self.restore_duration_ms, 3)
            metrics["billedRestoreDurationMs"] = restore
        out: dict[str, object] = {
            "requestId": self.request_id,
            "metrics": metrics,
            "status": self.status or "success",
        }
        if self.error_type:
            out["errorType"] = self.error_type
        return out

    def line(self) -> str:
        parts = [
            f"REPORT RequestId: {self.request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {self.billed_ms()} ms",
            f"Memory Size: {self.memory_size_mb} MB",
            f"Max Memory Used: {self.max_memory_used_mb} MB",
        ]
        if self.init_duration_ms is not None:
            parts.append(f"Init Duration: {self.init_duration_ms:.2f} ms")
        restore = self.billed_restore_ms()
        if self.restore_duration_ms is not None and restore is not None:
            parts.append(f"Restore Duration: {self.restore_duration_ms:.2f} ms")
            parts.append(f"Billed Restore Duration: {restore} ms")
        if self.status:
            parts.append(f"Status: {self.status}")
        if self.error_type:
            parts.append(f"Error Type: {self.error_type}")
        return "\t".join(parts) + "\t\n"


class LogWriter:
    """Hands every environment's buffered events to the log store, in batches."""

    def __init__(
        self,
        store: LogStore | None = None,
        *,
        rate_bytes_s: float | None = None,
        burst_bytes: float | None = None,
        on_loss: LossObserver | None = None,
    ) -> None:
        #: called with every invocation's report as its REPORT line is written
        self.on_report: list[Callable[[Report], None]] = []
        #: where events go; None keeps none (tests of the scheduler alone)
        self.store = store
        #: told of lines dropped here (the metrics); the store tells of its own
        self.on_loss = on_loss
        # Each function's bucket (None: no limit), shared by its environments.
        self._rate = rate_bytes_s
        self._burst = burst_bytes if burst_bytes is not None else rate_bytes_s
        self._limiters: dict[str, RateLimiter] = {}
        self._dirty: set[EnvironmentLog] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        if store is not None:
            store.before_flush.append(self.flush)

    def log(
        self,
        group: str = "",
        stream: str = "",
        logging: LoggingConfig | None = None,
        function: str = "",
    ) -> EnvironmentLog:
        return EnvironmentLog(self, group, stream, logging, function)

    def limiter(self, function: str) -> RateLimiter | None:
        """The function's log rate bucket (None when logs are not rate-limited)."""
        if self._rate is None or self._burst is None:
            return None
        bucket = self._limiters.get(function)
        if bucket is None:
            bucket = self._limiters[function] = RateLimiter(self._rate, self._burst)
        return bucket

    def _mark(self, log: EnvironmentLog) -> None:
        self._dirty.add(log)
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self._hand_over(force=False)

    async def flush(self) -> None:
        """Hand everything buffered so far over (the store's own flush awaits this before it
        waits for its writer)."""
        await self._hand_over(force=True)

    async def _hand_over(self, force: bool) -> None:
        store = self.store
        if not force and store is not None and store.backlog_bytes > MAX_STORE_BACKLOG_BYTES:
            return  # the disk is behind: environments' buffers hold (and cap) the rest
        dirty, self._dirty = self._dirty, set()
        for log in dirty:
            events = log._take(force)
            if events and store is not None and log.group:
                store.append(log.group, log.stream, events, log.source)

    async def close(self) -> None:
        """Hand over what is left; the writer's task ends (the store is closed by its owner)."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._hand_over(force=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EnvironmentLog:
    """The log of one execution environment."""

    def __init__(
        self,
        writer: LogWriter,
        group: str = "",
        stream: str = "",
        logging: LoggingConfig | None = None,
        function: str = "",
    ) -> None:
        #: the CloudWatch-style log group (`/aws/lambda/NAME`) and stream it belongs to
        self.group = group
        self.stream = stream
        logging = logging or LoggingConfig()
        #: what the store needs to mark a loss of its own in this stream
        self.source = LogSource(group, stream, function, logging.json)
        self._writer = writer
        self._limiter = writer.limiter(function)
        self._events: list[tuple[int, str]] = []
        self._pending = 0  # bytes in _events
        self._losses = Losses()
        self._noted_at = -math.inf  # monotonic time of the last loss marker
        #: the start of a line whose newline has not come yet, and when it was read
        self._pipe = _Reader(None, "function")
        self._extra: list[_Reader] = []
        #: called with (category, stamp ms, text) for each line read (the Telemetry API)
        self.listener: Callable[[str, int, str], None] | None = None
        #: the current invocation's text, kept when its caller asked for the tail
        self._capture: bytearray | None = None
        #: JSON format: platform records as JSON, and lines under the levels dropped
        self._json = logging.json
        self._app_level = _rank(APPLICATION_LOG_LEVELS, logging.application_log_level)
        self._system_level = _rank(SYSTEM_LOG_LEVELS, logging.system_log_level)

    # -- the runtime's output ------------------------------------------------------

    def pipe(self, category: str = "function", on_eof: Callable[[], None] | None = None) -> int:
        """Make a pipe the runtime (`function`) or the extensions (`extension`) write to;
        returns its write end for the sandbox (the caller closes it once the sandbox holds
        it). `on_eof` runs when every writer is gone."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        if category == "function":
            reader = self._pipe
            reader.fd, reader.on_eof = read_end, on_eof
        else:
            reader = _Reader(read_end, category, on_eof)
            self._extra.append(reader)
        asyncio.get_running_loop().add_reader(read_end, self._drain_one, reader)
        return write_end

    def drain(self) -> None:
        """Take whatever the runtime (and the extensions) wrote so far (never blocks)."""
        self._drain_one(self._pipe)
        for reader in self._extra:
            self._drain_one(reader)

    def _drain_one(self, reader: _Reader) -> None:
        while reader.fd is not None:
            try:
                data = os.read(reader.fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer is gone
                self._close_reader(reader)
                return
            self._output(data, reader)
            if len(data) < _READ_CHUNK:
                return

    def _close_reader(self, reader: _Reader) -> None:
        if reader.fd is not None:
            asyncio.get_running_loop().remove_reader(reader.fd)
            os.close(reader.fd)
            reader.fd = None
            if reader.on_eof is not None:
                reader.on_eof()

    def _close_pipe(self) -> None:
        self._close_reader(self._pipe)
        for reader in self._extra:
            self._close_reader(reader)
        self._extra = []

    # -- platform lines ------------------------------------------------------------

    def start(self, request_id: str, version: str, capture: bool = False) -> None:
        self.drain()  # what the runtime wrote before (its init phase) comes before START
        self._end_partials()
        self._capture = bytearray() if capture else None
        if self._json:
            self._record("INFO", "platform.start", {"requestId": request_id, "version": version})
        else:
            self._platform(f"START RequestId: {request_id} Version: {version}")

    def restore_start(self, runtime: str) -> None:
        """SnapStart: a restored environment's RESTORE_START (Lambda's line names the runtime
        version and its ARN; Lamina's runtimes have no versions: the runtime, as Lambda
        spells it, `python:3.12`)."""
        version = re.sub(r"^([a-z]+)(\d)", r"\1:\2", runtime)
        if self._json:
            self._record("INFO", "platform.restoreStart", {"runtimeVersion": version})
        else:
            self._platform(f"RESTORE_START Runtime Version: {version}")

    def restore_report(self, duration_ms: float) -> None:
        """SnapStart: RESTORE_REPORT once the restore (and its after-restore hooks) is done,
        before the first invocation's START."""
        self.drain()  # what the hooks wrote comes first
        self._end_partials()
        if self._json:
            record: dict[str, object] = {
                "status": "success",
                "metrics": {"durationMs": round(duration_ms, 3)},
            }
            self._record("INFO", "platform.restoreReport", record)
        else:
            self._platform(f"RESTORE_REPORT Restore Duration: {duration_ms:.2f} ms")

    def finish(self, report: Report, note: str | None = None) -> bytes | None:
        """Add END and REPORT (in JSON format: `platform.runtimeDone` and `platform.report`,
        whose status says what the text's `note` would); returns the invocation's last 4 KB
        if it was captured."""
        self.drain()
        self._end_partials()
        if self._json:
            done: dict[str, object] = {
                "requestId": report.request_id,
                "status": report.status or "success",
            }
            self._record("DEBUG", "platform.runtimeDone", done)
            self._record("INFO", "platform.report", report.record())
        else:
            if note:
                self._platform(note)
            self._platform(f"END RequestId: {report.request_id}")
            self._platform(report.line().removesuffix("\n"))
        for observe in self._writer.on_report:
            observe(report)
        captured, self._capture = self._capture, None
        if captured is None:
            return None
        return bytes(captured[-limits.TAIL_LOG_MAX_BYTES :])

    def close(self) -> None:
        """The environment is gone: read what is left and hand it over."""
        self.drain()
        self._close_pipe()
        self._end_partials()
        self._note_dropped()
        self._writer._mark(self)

    # -- buffering -----------------------------------------------------------------

    def _output(self, data: bytes, reader: _Reader | None = None) -> None:
        """What the runtime (or, through `reader`, an extension) wrote: one event per
        complete line."""
        reader = reader or self._pipe
        self._keep_tail(data)
        now = _now_ms()
        if self._limiter is not None:
            self._limiter.refill()
        head, newline, rest = data.rpartition(b"\n")
        if newline:
            text = (reader.partial + head).decode("utf-8", "replace")
            stamp = reader.partial_ms if reader.partial else now
            reader.partial = b""
            lines = text.split("\n")
            self._line(reader, stamp, lines[0])
            for line in lines[1:]:
                self._line(reader, now, line)
        if rest:
            if not reader.partial:
                reader.partial_ms = now
            reader.partial += rest
            if len(reader.partial) > MAX_LINE_BYTES:  # held no longer: cut here
                self._line(reader, reader.partial_ms, reader.partial.decode("utf-8", "replace"))
                reader.partial = b""
        self._writer._mark(self)

    def _line(self, reader: _Reader, stamp: int, line: str) -> None:
        self._event(stamp, line)
        if self.listener is not None:
            self.listener(reader.category, stamp, line)

    def _end_partials(self) -> None:
        """A line never finished ends with the invocation (or environment)."""
        for reader in (self._pipe, *self._extra):
            if reader.partial:
                self._line(reader, reader.partial_ms, reader.partial.decode("utf-8", "replace"))
                reader.partial = b""
                self._writer._mark(self)

    def _platform(self, line: str) -> None:
        """Lamina's own lines are always kept, after a note of anything dropped before."""
        self._keep_tail(f"{line}\n".encode())
        self._note_dropped()
        self._events.append((_now_ms(), line))
        self._pending += len(line)
        self._writer._mark(self)

    def _record(self, level: str, kind: str, record: dict[str, object]) -> None:
        """One of Lambda's JSON platform events, if SystemLogLevel lets `level` through."""
        if _rank(SYSTEM_LOG_LEVELS, level) < self._system_level:
            return
        self._platform(_compact({"time": log_loss.iso_now(), "type": kind, "record": record}))

    def _event(self, stamp: int, line: str) -> None:
        if self._json and _line_rank(line) < self._app_level:
            return  # under ApplicationLogLevel: Lambda does not send it
        # Characters stand for bytes in the checks (exact for ASCII, close otherwise): the
        # exact count is taken only for what is dropped.
        if self._limiter is not None and not self._limiter.allow(len(line) + 1):
            size = len(line.encode("utf-8", "replace")) + 1
            self._losses.add(log_loss.RATE_LIMIT, 1, size, stamp)
            return
        if self._pending + len(line) > MAX_PENDING_BYTES:
            size = len(line.encode("utf-8", "replace")) + 1
            self._losses.add(log_loss.BUFFER_FULL, 1, size, stamp)
            return
        self._events.append((stamp, line))
        self._pending += len(line)

    def _note_dropped(self) -> None:
        """Put a marker for what was dropped since the last one into the stream (and tell
        the metrics): before every platform line and at every hand-over."""
        if not self._losses:
            return
        observe = self._writer.on_loss
        if observe is not None:
            for reason, lines, size in self._losses.items():
                observe(self.source.function, reason, lines, size)
        self._events.extend(self._losses.markers(self._json))
        self._losses.clear()
        self._noted_at = time.monotonic()

    def _keep_tail(self, data: bytes) -> None:
        if self._capture is not None:
            self._capture += data
            if len(self._capture) > _TAIL_KEEP:
                del self._capture[: -limits.TAIL_LOG_MAX_BYTES]

    def _take(self, force: bool = False) -> list[tuple[int, str]]:
        if self._losses:
            if force or time.monotonic() - self._noted_at >= MARKER_INTERVAL_S:
                self._note_dropped()
            else:
                self._writer._mark(self)  # said at a later hand-over
        events, self._events = self._events, []
        self._pending = 0
        return events


@dataclass(eq=False)
class _Reader:
    """One pipe into the log and the start of a line not finished yet."""

    fd: int | None
    category: str
    on_eof: Callable[[], None] | None = None
    partial: bytes = b""
    partial_ms: int = 0


def _rank(levels: tuple[str, ...], level: str | None) -> int:
    """How detailed `level` is among `levels` (0: most); no level lets everything through."""
    if level is None:
        return 0
    try:
        return levels.index(level)
    except ValueError:
        return levels.index("INFO")


def _line_rank(line: str) -> int:
    """A function's line's application level: a JSON object's `level` member (as Lambda
    reads it: any case; missing or unknown is INFO), INFO for any other line."""
    level = "INFO"
    if line.startswith("{"):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("level"), str):
            level = value["level"].upper()
    return _rank(APPLICATION_LOG_LEVELS, level)


def _compact(value: object) -> str:
    """JSON as Lambda writes its platform records: no spaces."""
    return json.dumps(value, separators=(",", ":"))
