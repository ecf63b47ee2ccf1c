"""Traces: Lambda's `TracingConfig` over the X-Ray trace header, exported as OpenTelemetry
spans over OTLP/HTTP (JSON encoding) to `--otlp-endpoint`.

The trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1`) carries one trace
through every hop; its Root is the W3C/OTLP trace id (the 32 hex digits without `1-` and
`-`). A function's `Mode` decides whether an invocation is sampled: `PassThrough` follows the
caller's decision only (no decision: not sampled); `Active` samples, when the caller made no
decision, the first request of each second and 5% of the rest (X-Ray's default rule).

A sampled invocation's spans, built after the fact from the times Lamina already keeps:

    Invoke <function>      (SERVER; child of the caller's Parent, if any)
      ├─ Queued            (an asynchronous event's time in the queue)
      ├─ Cold start        (a new environment)
      │    ├─ Sandbox      (the sandbox made: zygote fork, namespaces, cgroup)
      │    ├─ Runtime start
      │    └─ Init         (the function's init phase)
      ├─ Invocation        (the handler; its span id is the Parent the function is given)
      └─ Overhead          (extensions still working after the response)

Export never blocks an invocation: spans go into a bounded buffer that a background task
posts in batches; a full buffer drops spans, a failed post drops its batch, both counted and
logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: spans kept waiting for export at most; more are dropped (and counted)
BUFFER_SPANS = 8192
#: spans in one OTLP request at most
BATCH_SPANS = 512
#: seconds a span may wait for its batch to fill
FLUSH_INTERVAL_S = 0.25
#: X-Ray's default sampling rule: this many requests a second, then this fraction of the rest
RESERVOIR_PER_S = 1
FIXED_RATE = 0.05

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
STATUS_ERROR = 2


def span_id() -> str:
    return os.urandom(8).hex()


@dataclass(frozen=True)
class TraceHeader:
    """The fields of an X-Ray trace header Lamina reads; `rest` keeps the others (Lineage)
    in order."""

    root: str
    parent: str | None
    #: True/False: the caller's decision; None: no decision
    sampled: bool | None
    rest: tuple[str, ...] = ()

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the W3C/OTLP trace id."""
        return self.root[2:].replace("-", "")

    def text(self, parent: str | None, sampled: bool) -> str:
        fields = [f"Root={self.root}"]
        if parent:
            fields.append(f"Parent={parent}")
        fields.append(f"Sampled={int(sampled)}")
        return ";".join([*fields, *self.rest])


def parse_header(header: str) -> TraceHeader | None:
    """The header's fields; None without a valid Root. A header Lamina made for a new chain
    (`Sampled=0` with no `Parent`: `ids.trace_id`) counts as one with no decision."""
    root = parent = None
    sampled: bool | None = None
    rest: list[str] = []
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "Root":
            root = value
        elif key == "Parent":
            parent = value
        elif key == "Sampled":
            sampled = value == "1" if value in ("0", "1") else None
        else:
            rest.append(f"{key}={value}")
    if root is None or len(root) != 35 or root[:2] != "1-" or root[10] != "-":
        return None
    try:
        int(root[2:10] + root[11:], 16)
    except ValueError:
        return None
    if parent is not None and (len(parent) != 16 or not _is_hex(parent)):
        parent = None
    if sampled is False and parent is None:
        sampled = None
    return TraceHeader(root, parent, sampled, tuple(rest))


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


class Sampler:
    """X-Ray's default rule for `Active` functions without a caller's decision."""

    def __init__(self) -> None:
        self._second = 0
        self._taken = 0

    def sample(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            self._second, self._taken = now, 0
        if self._taken < RESERVOIR_PER_S:
            self._taken += 1
            return True
        return os.urandom(1)[0] < 256 * FIXED_RATE


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    kind: int = SPAN_KIND_INTERNAL
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    error: str | None = None
    #: (trace id, span id) of spans in other traces this one follows from
    links: tuple[tuple[str, str], ...] = ()

    def otlp(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start_ns),
            "endTimeUnixNano": str(max(self.end_ns, self.start_ns)),
            "attributes": attributes(self.attributes),
        }
        if self.parent_id:
            out["parentSpanId"] = self.parent_id
        if self.error is not None:
            out["status"] = {"code": STATUS_ERROR, "message": self.error}
        if self.links:
            out["links"] = [{"traceId": t, "spanId": s} for t, s in self.links]
        return out


def attributes(values: Mapping[str, str | int | float | bool]) -> list[dict[str, Any]]:
    """OTLP JSON's typed key-values (64-bit integers as strings, as the mapping says)."""
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            typed: dict[str, Any] = {"boolValue": value}
        elif isinstance(value, int):
            typed = {"intValue": str(value)}
        elif isinstance(value, float):
            typed = {"doubleValue": value}
        else:
            typed = {"stringValue": value}
        out.append({"key": key, "value": typed})
    return out


@dataclass(frozen=True)
class Resource:
    """Who the spans are about: one function version (OpenTelemetry's FaaS conventions)."""

    function: str
    version: str
    memory_mb: int
    region: str
    account: str

    def otlp(self) -> dict[str, Any]:
        return {
            "attributes": attributes(
                {
                    "service.name": self.function,
                    "service.namespace": "lamina",
                    "faas.name": self.function,
                    "faas.version": self.version,
                    "faas.max_memory": self.memory_mb * 1024 * 1024,
                    "cloud.provider": "aws",
                    "cloud.platform": "aws_lambda",
                    "cloud.region": self.region,
                    "cloud.account.id": self.account,
                }
            )
        }


class Exporter:
    """Posts spans to `<endpoint>/v1/traces` in the background (see the module's note)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        #: told (outcome, spans) as spans are exported or dropped (the Prometheus counter)
        self._on_count = on_count
        self._buffer: deque[tuple[Resource, Span]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._timeout_s = timeout_s
        #: spans dropped (buffer full or post failed), and posts that failed
        self.dropped = 0
        self.failed_posts = 0
        self.exported = 0
        self._last_warning = 0.0

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, resource: Resource, spans: Iterable[Span]) -> None:
        for span in spans:
            if len(self._buffer) >= BUFFER_SPANS:
                self.dropped += 1
                self._count("dropped", 1)
                self._warn("the trace buffer is full: spans dropped")
                continue
            self._buffer.append((resource, span))
        self._wake.set()

    async def forward(self, body: bytes, content_type: str) -> int:
        """Pass a function's own OTLP request on unchanged; the endpoint's status (502 when
        it cannot be reached)."""
        assert self._client is not None
        try:
            response = await self._client.post(
                self.endpoint + "/v1/traces", content=body, headers={"content-type": content_type}
            )
        except httpx.HTTPError as e:
            self.failed_posts += 1
            self._warn(f"forwarding a function's spans failed: {e}")
            return 502
        return response.status_code

    async def stop(self) -> None:
        """Post what is buffered (briefly), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), 2.0)
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL_S)  # let the batch fill
            await self._flush()

    async def _flush(self) -> None:
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(BATCH_SPANS, len(self._buffer)))]
            await self._post(batch)

    async def _post(self, batch: list[tuple[Resource, Span]]) -> None:
        assert self._client is not None
        by_resource: dict[Resource, list[dict[str, Any]]] = {}
        for resource, span in batch:
            by_resource.setdefault(resource, []).append(span.otlp())
        body = {
            "resourceSpans": [
                {
                    "resource": resource.otlp(),
                    "scopeSpans": [{"scope": {"name": "lamina"}, "spans": spans}],
                }
                for resource, spans in by_resource.items()
            ]
        }
        try:
            response = await self._client.post(
                self.endpoint + "/v1/traces",
                content=json.dumps(body, separators=(",", ":")).encode(),
                headers={"content-type": "application/json"},
            )
            ok = response.status_code < 300
            reason = f"HTTP {response.status_code}"
        except httpx.HTTPError as e:
            ok, reason = False, str(e) or type(e).__name__
        if ok:
            self.exported += len(batch)
            self._count("exported", len(batch))
        else:
            self.failed_posts += 1
            self.dropped += len(batch)
            self._count("dropped", len(batch))
            self._warn(f"exporting {len(batch)} spans to {self.endpoint} failed: {reason}")

    def _count(self, outcome: str, spans: int) -> None:
        if self._on_count is not None:
            self._on_count(outcome, spans)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s (%d spans dropped so far)", message, self.dropped)
