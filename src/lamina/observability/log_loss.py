"""Lost log lines: why they were lost, the marker line that says so, and the rate limit.

Lambda never drops a function's logs; a self-hosted box has to, or one chatty function fills
its disk and takes the control plane down with it (see docs/log-limits.md). Whatever drops
lines here counts them (`Losses`) and, as soon as it can write to the stream again, puts one
marker line there saying how many lines and bytes went and why: Text format a bracketed line,
JSON format Lambda's own `platform.logsDropped` record (the Telemetry API's shape:
`reason`, `droppedRecords`, `droppedBytes`). Each loss is also counted by the
`lamina_log_dropped_lines_total` and `lamina_log_dropped_bytes_total` metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

#: a function wrote faster than its log rate limit (`--log-rate-limit`, `--log-burst`)
RATE_LIMIT = "rate_limit"
#: the log store was at its disk cap or at the free-space reserve, and nothing older could go
DISK_CAP = "disk_cap"
#: an environment's buffer was full while the store was behind
BUFFER_FULL = "buffer_full"
#: the store could not write them (disk full, I/O error)
WRITE_FAILED = "write_failed"

_WHY = {
    RATE_LIMIT: "the function wrote faster than its log rate limit",
    DISK_CAP: "the log store had no room left under its disk cap",
    BUFFER_FULL: "written faster than they could be stored",
    WRITE_FAILED: "the log store could not write them",
}

#: `on_loss(function, reason, lines, bytes)`: told of every loss as it happens (the metrics)
LossObserver = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class LogSource:
    """Where a batch of lines goes and what it needs to say a loss there: the stream, the
    function writing it (the metrics' label) and the stream's format."""

    group: str
    stream: str
    function: str = ""
    json: bool = False


class Losses:
    """Lines and bytes lost per reason, not yet reported in the stream."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, reason: str, lines: int, size: int, at_ms: int) -> None:
        """Count a loss; `at_ms` is when the first line lost was written (the marker stands
        there in the stream)."""
        counts = self._counts.get(reason)
        if counts is None:
            self._counts[reason] = [lines, size, at_ms]
        else:
            counts[0] += lines
            counts[1] += size
            counts[2] = min(counts[2], at_ms)

    def items(self) -> list[tuple[str, int, int]]:
        """(reason, lines, bytes) of each reason with a loss."""
        return [(reason, lines, size) for reason, (lines, size, _) in self._counts.items()]

    def markers(self, json_format: bool) -> list[tuple[int, str]]:
        """One marker event `(timestamp_ms, message)` per reason, stamped when the first line
        it stands for was written (the counts stay: `clear()` once they are stored)."""
        return [
            (at, marker(reason, lines, size, json_format))
            for reason, (lines, size, at) in self._counts.items()
        ]

    def clear(self) -> None:
        self._counts.clear()


def marker(reason: str, lines: int, size: int, json_format: bool) -> str:
    """The line that stands in a stream for `lines` lines (`size` bytes) lost for `reason`."""
    why = _WHY.get(reason, reason)
    if json_format:
        record = {
            "reason": f"Some logs were dropped: {why}.",
            "droppedRecords": lines,
            "droppedBytes": size,
        }
        return json.dumps(
            {"time": iso_now(), "type": "platform.logsDropped", "record": record},
            separators=(",", ":"),
        )
    return f"[lamina: {lines} log lines ({size} bytes) dropped: {why}]"


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class RateLimiter:
    """A token bucket of bytes: `rate` a second, holding at most `burst`. One per function,
    shared by its environments. `allow(n)` is two float operations, cheap enough per line."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def refill(self, now: float | None = None) -> None:
        """Add what has accrued since the last refill (call once per chunk read, not per
        line: the clock costs more than the bucket)."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def allow(self, size: int) -> bool:
        """Take `size` bytes from the bucket if it holds them."""
        if self._tokens >= size:
            self._tokens -= size
            return True
        return False

    def covers(self, size: int) -> bool:
        """Whether `size` more bytes would fit now (without taking them)."""
        return self._tokens >= size
