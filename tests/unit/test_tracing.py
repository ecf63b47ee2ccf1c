"""The X-Ray header as traces read it, TracingConfig's sampling decision, the OTLP JSON
encoding, and the exporter's bounded buffer (against a receiver of the test's own)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lamina.models import FunctionConfig, InvokeRequest
from lamina.observability import tracing
from lamina.observability.tracing import Exporter, Resource, Span, parse_header
from lamina.scheduler.traces import Tracing

ROOT = "1-5759e988-bd862e3fe1be46a994272793"


def test_parse_header_reads_the_decision_and_keeps_the_rest() -> None:
    h = parse_header(f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=abcdef01:2")
    assert h is not None
    assert h.trace_id == "5759e988bd862e3fe1be46a994272793"
    assert (h.parent, h.sampled, h.rest) == ("53995c3f42cd8ad8", True, ("Lineage=abcdef01:2",))
    assert h.text("0123456789abcdef", True) == (
        f"Root={ROOT};Parent=0123456789abcdef;Sampled=1;Lineage=abcdef01:2"
    )
    # The caller's "no" stands; Lamina's own new-chain header (no Parent) is no decision.
    refused = parse_header(f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0")
    assert refused is not None and refused.sampled is False
    fresh = parse_header(f"Root={ROOT};Sampled=0")
    assert fresh is not None and fresh.sampled is None
    undecided = parse_header(f"Root={ROOT};Sampled=?")
    assert undecided is not None and undecided.sampled is None


@pytest.mark.parametrize(
    "header",
    ["", "Sampled=1", "Root=1-zzzzzzzz-bd862e3fe1be46a994272793", "Root=1-5759e988", "garbage"],
)
def test_parse_header_without_a_valid_root(header: str) -> None:
    assert parse_header(header) is None


def test_a_bad_parent_is_dropped() -> None:
    h = parse_header(f"Root={ROOT};Parent=nothex!nothex!!;Sampled=1")
    assert h is not None and h.parent is None


def _config(mode: str, environment: dict[str, str] | None = None) -> FunctionConfig:
    return FunctionConfig(
        name="f",
        version="$LATEST",
        runtime="python3.11",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_sha256="x",
        code_size=1,
        revision_id="r",
        last_modified=datetime.now(UTC),
        environment=environment or {},
        tracing_mode=mode,
    )


def _tracing() -> Tracing:
    return Tracing(Exporter("http://127.0.0.1:9"), "us-east-1", "000000000000")


def test_pass_through_follows_the_caller_and_active_samples_the_undecided() -> None:
    t = _tracing()
    fresh = InvokeRequest("r", b"{}", "arn", trace_id=f"Root={ROOT};Sampled=0")
    assert t.begin(_config("PassThrough"), fresh)[1] is None
    asked = InvokeRequest("r", b"{}", "arn", trace_id=f"Root={ROOT};Sampled=1")
    request, trace = t.begin(_config("PassThrough"), asked)
    assert trace is not None
    assert request.trace_id == f"Root={ROOT};Parent={trace.handler_id};Sampled=1"
    # Active: the first undecided request of a second is sampled; a caller's "no" is not.
    t2 = _tracing()
    assert t2.begin(_config("Active"), fresh)[1] is not None
    refused = InvokeRequest("r", b"{}", "arn", trace_id=f"Root={ROOT};Parent={'a' * 16};Sampled=0")
    assert t2.begin(_config("Active"), refused)[1] is None


def test_the_sampler_takes_one_a_second_then_about_five_percent() -> None:
    sampler = tracing.Sampler()
    taken = sum(sampler.sample() for _ in range(20000))
    # 1 from the reservoir (perhaps 2 if the second turns) + 5% of the rest.
    assert 700 <= taken <= 1300


def test_function_env_points_an_sdk_at_lamina_with_a_token_it_checks() -> None:
    t = _tracing()
    env = t.function_env(_config("Active"), "http://127.0.0.1:8484")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:8484"
    name, _, token = env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"].partition("=")
    assert name == "x-lamina-trace-token" and t.check(token) == "f"
    assert t.check(token.replace("f.", "g.")) is None and t.check("") is None
    assert _tracing().check(token) is None  # another server's key
    own = _config("Active", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert t.function_env(own, "http://127.0.0.1:8484") == {}


def test_otlp_json_types_attributes_and_times() -> None:
    span = Span(
        "ab" * 16, "cd" * 8, None, "n", 5, 3, attributes={"b": True, "i": 7, "f": 0.5, "s": "x"}
    )
    out = span.otlp()
    assert "parentSpanId" not in out
    assert out["startTimeUnixNano"] == "5" and out["endTimeUnixNano"] == "5"  # never negative
    assert out["attributes"] == [
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "7"}},
        {"key": "f", "value": {"doubleValue": 0.5}},
        {"key": "s", "value": {"stringValue": "x"}},
    ]


class _Collector:
    def __init__(self, status: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector(200)
    yield c
    c.http.shutdown()
    c.http.server_close()


RESOURCE = Resource("f", "$LATEST", 128, "us-east-1", "000000000000")


def _spans(n: int) -> list[Span]:
    return [Span("ab" * 16, f"{i:016x}", None, "s", 1, 2) for i in range(n)]


def test_the_exporter_batches_by_resource_and_drops_past_its_buffer(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "BUFFER_SPANS", 600)

    async def run() -> Exporter:
        exporter = Exporter(collector.url)
        exporter.start()
        exporter.add(RESOURCE, _spans(700))
        await asyncio.sleep(tracing.FLUSH_INTERVAL_S + 0.5)
        await exporter.stop()
        return exporter

    exporter = asyncio.run(run())
    assert exporter.dropped == 100 and exporter.exported == 600
    sizes = [len(b["resourceSpans"][0]["scopeSpans"][0]["spans"]) for b in collector.bodies]
    assert sizes == [tracing.BATCH_SPANS, 600 - tracing.BATCH_SPANS]
    attrs = collector.bodies[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "faas.name", "value": {"stringValue": "f"}} in attrs


def test_a_failing_collector_costs_the_batch_not_the_caller() -> None:
    failing = _Collector(503)

    async def run() -> Exporter:
        exporter = Exporter(failing.url)
        exporter.start()
        exporter.add(RESOURCE, _spans(3))
        await asyncio.sleep(tracing.FLUSH_INTERVAL_S + 0.5)
        await exporter.stop()
        return exporter

    try:
        exporter = asyncio.run(run())
    finally:
        failing.http.shutdown()
        failing.http.server_close()
    assert (exporter.failed_posts, exporter.dropped, exporter.exported) == (1, 3, 0)
