"""An execution environment's log: what its runtime writes, framed by Lambda's platform lines.

The runtime's stdout and stderr go straight to the environment's log file (the kernel buffers
them; Lamina spends nothing per line). Around each invocation Lamina appends Lambda's
`START`, `END` and `REPORT` lines to the same file, through its own O_APPEND descriptor, so
the lines of one invocation sit between its START and its REPORT.

Trade-off: those appends are small writes to the page cache made on the event loop; they do
not wait for the disk. The CloudWatch-style log store (its own issue) replaces this file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from lamina import limits


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


class EnvironmentLog:
    """The log file of one execution environment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        """Create the file (blocking: call it off the event loop)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, text: str) -> None:
        if self._fd is not None:
            os.write(self._fd, text.encode())

    def size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd is not None else 0

    def start(self, request_id: str, version: str) -> None:
        self.write(f"START RequestId: {request_id} Version: {version}\n")

    def finish(self, report: Report, note: str | None = None) -> None:
        lines = f"{note}\n" if note else ""
        lines += f"END RequestId: {report.request_id}\n" + report.line()
        self.write(lines)

    def tail(self, since: int, limit: int = limits.TAIL_LOG_MAX_BYTES) -> bytes:
        """The last `limit` bytes written since offset `since` (blocking read, page cache)."""
        with open(self.path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(since, end - limit))
            return f.read()
