"""Execution environments' logs: what each runtime writes, framed by Lambda's platform lines.

A runtime's stdout and stderr are one pipe read by the event loop (`EnvironmentLog.attach`).
Lamina appends Lambda's `START`, `END` and `REPORT` lines around each invocation into the same
stream, so the lines of one invocation sit between its START and its REPORT; before END is
added, whatever the runtime wrote is drained from the pipe (it wrote it before answering).

Nothing here touches a disk on the event loop: text goes into per-environment buffers, and
one `LogWriter` task hands them to a worker thread that appends them to
`<data-dir>/logs/<function>/<environment>.log` every `FLUSH_INTERVAL_S`. A buffer that the
writer cannot keep up with is capped at `MAX_PENDING_BYTES`; what is dropped is replaced by a
line saying how much (the CloudWatch-style log store, its own issue, builds on this).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lamina import limits

FLUSH_INTERVAL_S = 0.2
MAX_PENDING_BYTES = 8 * 1024 * 1024
_READ_CHUNK = 65536
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

    def billed_ms(self) -> int:
        billed = self.duration_ms
        if self.bill_init and self.init_duration_ms is not None:
            billed += self.init_duration_ms
        return max(math.ceil(billed), 1)

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
        if self.status:
            parts.append(f"Status: {self.status}")
        if self.error_type:
            parts.append(f"Error Type: {self.error_type}")
        return "\t".join(parts) + "\t\n"


class LogWriter:
    """Appends every environment's buffered log text to its file, off the event loop."""

    def __init__(self) -> None:
        #: called with every invocation's report as its REPORT line is written
        self.on_report: list[Callable[[Report], None]] = []
        self._dirty: set[EnvironmentLog] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one batch at a time, so a file's appends stay in order
        self._stopping = False

    def log(self, path: Path, group: str = "", stream: str = "") -> EnvironmentLog:
        return EnvironmentLog(path, self, group, stream)

    def _mark(self, log: EnvironmentLog) -> None:
        self._dirty.add(log)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()

    async def flush(self) -> None:
        """Write out everything buffered so far."""
        async with self._lock:
            batch = [(log, log._take()) for log in self._dirty]
            self._dirty.clear()
            batch = [(log, data) for log, data in batch if data or log.closing]
            if batch:
                await asyncio.get_running_loop().run_in_executor(None, _write_batch, batch)

    async def close(self) -> None:
        """Write out what is left; the writer's task ends (it is never cancelled mid-batch)."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def _write_batch(batch: list[tuple[EnvironmentLog, bytes]]) -> None:
    for log, data in batch:
        try:
            if data:
                if log.fd is None:
                    log.path.parent.mkdir(parents=True, exist_ok=True)
                    log.fd = os.open(log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                os.write(log.fd, data)
        except OSError:
            pass  # a full or vanished disk must not take the server down; the text is lost
        if log.closing and log.fd is not None:
            os.close(log.fd)
            log.fd = None


class EnvironmentLog:
    """The log of one execution environment."""

    def __init__(self, path: Path, writer: LogWriter, group: str = "", stream: str = "") -> None:
        self.path = path
        #: the CloudWatch-style log group (`/aws/lambda/NAME`) and stream it belongs to
        self.group = group
        self.stream = stream
        self._writer = writer
        self._pending = bytearray()
        self._dropped = 0
        self._pipe: int | None = None
        #: the current invocation's text, kept when its caller asked for the tail
        self._capture: bytearray | None = None
        self.fd: int | None = None  # the file, owned by the writer's thread
        self.closing = False

    # -- the runtime's output ------------------------------------------------------

    def pipe(self) -> int:
        """Make the pipe the runtime writes to; returns its write end for the sandbox (the
        caller closes it once the runtime holds it)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        self._pipe = read_end
        asyncio.get_running_loop().add_reader(read_end, self.drain)
        return write_end

    def drain(self) -> None:
        """Take whatever the runtime has written so far (never blocks)."""
        fd = self._pipe
        while fd is not None:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer is gone
                self._close_pipe()
                return
            self._append(data)
            if len(data) < _READ_CHUNK:
                return

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            asyncio.get_running_loop().remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None

    # -- platform lines ------------------------------------------------------------

    def start(self, request_id: str, version: str, capture: bool = False) -> None:
        self.drain()  # what the runtime wrote before (its init phase) comes before START
        self._capture = bytearray() if capture else None
        self._append(f"START RequestId: {request_id} Version: {version}\n".encode())

    def finish(self, report: Report, note: str | None = None) -> bytes | None:
        """Add END and REPORT; returns the invocation's last 4 KB if it was captured."""
        self.drain()
        text = f"{note}\n" if note else ""
        text += f"END RequestId: {report.request_id}\n" + report.line()
        self._append(text.encode())
        for observe in self._writer.on_report:
            observe(report)
        captured, self._capture = self._capture, None
        if captured is None:
            return None
        return bytes(captured[-limits.TAIL_LOG_MAX_BYTES :])

    def close(self) -> None:
        """The environment is gone: read what is left, then let the writer close the file."""
        self.drain()
        self._close_pipe()
        self.closing = True
        self._writer._mark(self)

    # -- buffering -----------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        if self._capture is not None:
            self._capture += data
            if len(self._capture) > _TAIL_KEEP:
                del self._capture[: -limits.TAIL_LOG_MAX_BYTES]
        if len(self._pending) + len(data) > MAX_PENDING_BYTES:
            self._dropped += len(data)
        else:
            self._pending += data
        self._writer._mark(self)

    def _take(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        if self._dropped:
            data += (
                f"[lamina: {self._dropped} bytes of log dropped: written faster than "
                f"they could be stored]\n".encode()
            )
            self._dropped = 0
        return data
