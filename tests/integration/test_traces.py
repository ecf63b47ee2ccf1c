"""Traces: TracingConfig's sampling over the X-Ray header, the header the function sees, and
the spans a server started with `--otlp-endpoint` posts to an OTLP/HTTP receiver of the
test's own (parent/child links, cold-start phases, the async queue and a destination)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, fetch, wait_for
from tests.integration.extension_code import PY_EXTENSION
from tests.integration.test_events_api import allow_events
from tests.integration.test_function_urls import make_public
from tests.integration.test_layers import exe_zip

from lamina.runtimes.images import SdkState
from lamina.scheduler.traces import TOKEN_HEADER

ACCOUNT = "000000000000"

ECHO_TRACE = """
import os
def handler(event, context):
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID", "")}
"""


class Receiver:
    """A tiny OTLP/HTTP (JSON) receiver: every span posted to /v1/traces, by trace id."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: dict[str, dict[str, Any]] = {}
        #: protobuf requests, as they came
        self.protobuf: list[bytes] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                kind = self.headers["content-type"]
                ok = self.path == "/v1/traces" and kind in (
                    "application/json",
                    "application/x-protobuf",
                )
                if ok and kind == "application/json":
                    receiver.take(json.loads(body))
                elif ok:
                    with receiver.lock:
                        receiver.protobuf.append(body)
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def take(self, body: dict[str, Any]) -> None:
        with self.lock:
            for rs in body["resourceSpans"]:
                attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        self.spans.append(span)
                        self.resources[span["spanId"]] = attrs

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def wait(self, trace_id: str, names: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The trace's spans by name once every name in `names` is among them."""

        def ready() -> dict[str, list[dict[str, Any]]] | None:
            by_name: dict[str, list[dict[str, Any]]] = {}
            for span in self.trace(trace_id):
                by_name.setdefault(span["name"], []).append(span)
            return by_name if names <= by_name.keys() else None

        found: dict[str, list[dict[str, Any]]] = wait_for(ready, 10, f"spans {names}")
        return found

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
    runtime_images: dict[str, SdkState],
    receiver: Receiver,
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("traces")
    srv = Server(data_dir=base / "data", extra_args=("--otlp-endpoint", receiver.endpoint)).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def fns(traced: Server) -> Iterator[Functions]:
    f = Functions(traced.client())
    yield f
    f.cleanup()


def _root() -> str:
    return f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"


def _invoke(server: Server, name: str, trace: str | None = None, kind: str = "") -> Any:
    headers = {"x-amzn-trace-id": trace} if trace else {}
    if kind:
        headers["x-amz-invocation-type"] = kind
    r = SIGNED_HTTP.post(
        f"{server.endpoint}/2015-03-31/functions/{name}/invocations",
        content=b"{}",
        headers=headers,
    )
    assert r.status_code == (202 if kind == "Event" else 200), r.text
    return r.json() if kind != "Event" else None


def _fields(header: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in header.split(";"))


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def test_active_continues_the_callers_trace_with_cold_start_phases(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    name = fns.create(ECHO_TRACE, TracingConfig={"Mode": "Active"})["FunctionName"]
    root, parent = _root(), os.urandom(8).hex()
    seen = _fields(_invoke(traced, name, f"Root={root};Parent={parent};Sampled=1")["trace"])
    assert seen["Root"] == root and seen["Sampled"] == "1"
    trace_id = root[2:].replace("-", "")
    spans = receiver.wait(
        trace_id,
        {f"Invoke {name}", "Invocation", "Cold start", "Sandbox", "Runtime start", "Init"},
    )
    (top,) = spans[f"Invoke {name}"]
    (handler,) = spans["Invocation"]
    (cold,) = spans["Cold start"]
    # The caller's span is the parent; the function's Parent is the handler's span.
    assert top["parentSpanId"] == parent and top["kind"] == 2
    assert handler["parentSpanId"] == top["spanId"]
    assert seen["Parent"] == handler["spanId"]
    assert cold["parentSpanId"] == top["spanId"]
    for phase in ("Sandbox", "Runtime start", "Init"):
        (span,) = spans[phase]
        assert span["parentSpanId"] == cold["spanId"]
        assert int(cold["startTimeUnixNano"]) <= int(span["startTimeUnixNano"])
        assert int(span["endTimeUnixNano"]) <= int(cold["endTimeUnixNano"])
    assert int(cold["endTimeUnixNano"]) <= int(handler["endTimeUnixNano"])
    assert _attrs(top)["faas.coldstart"] is True
    assert receiver.resources[top["spanId"]]["service.name"] == {"stringValue": name}

    # Warm: the same shape without the cold start; a new trace when none is given (the
    # first request of a second is sampled).
    time.sleep(1.05)
    warm = _fields(_invoke(traced, name)["trace"])
    assert warm["Sampled"] == "1"
    warm_id = warm["Root"][2:].replace("-", "")
    spans = receiver.wait(warm_id, {f"Invoke {name}", "Invocation"})
    (top,) = spans[f"Invoke {name}"]
    assert "parentSpanId" not in top
    assert spans["Invocation"][0]["spanId"] == warm["Parent"]
    assert "Cold start" not in spans and _attrs(top)["faas.coldstart"] is False


def test_pass_through_follows_the_callers_decision_only(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    name = fns.create(ECHO_TRACE)["FunctionName"]  # PassThrough, the default
    time.sleep(1.05)  # a fresh second: Active would sample this one
    unsampled = _fields(_invoke(traced, name)["trace"])
    assert unsampled["Sampled"] == "0" and "Parent" not in unsampled
    root = _root()
    sampled = _fields(_invoke(traced, name, f"Root={root};Sampled=1")["trace"])
    receiver.wait(root[2:].replace("-", ""), {f"Invoke {name}", "Invocation"})
    assert "Parent" in sampled
    # Posted before the sampled one's spans (one exporter, in order): nothing came.
    assert receiver.trace(unsampled["Root"][2:].replace("-", "")) == []
    refused = _fields(_invoke(traced, name, f"Root={_root()};Sampled=0")["trace"])
    assert refused["Sampled"] == "0"


def test_async_invoke_keeps_the_trace_through_the_queue_and_destination(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    lam = traced.client()
    target = fns.create(ECHO_TRACE)["FunctionName"]
    name = fns.create(ECHO_TRACE, TracingConfig={"Mode": "Active"})["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        DestinationConfig={
            "OnSuccess": {"Destination": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{target}"}
        },
    )
    root = _root()
    _invoke(traced, name, f"Root={root};Sampled=1", kind="Event")
    trace_id = root[2:].replace("-", "")
    spans = receiver.wait(trace_id, {f"Invoke {name}", "Queued", f"Invoke {target}"})
    (top,) = spans[f"Invoke {name}"]
    (dest_top,) = spans[f"Invoke {target}"]
    # Each asynchronous invocation (the event, then the destination's) waited in the queue.
    queued = {s["parentSpanId"]: s for s in spans["Queued"]}
    assert queued.keys() == {top["spanId"], dest_top["spanId"]}
    mine = queued[top["spanId"]]
    assert int(mine["startTimeUnixNano"]) <= int(mine["endTimeUnixNano"])
    assert _attrs(top)["faas.trigger"] == "pubsub"
    # The destination's invocation continues from the handler's span that produced it.
    handlers = {s["parentSpanId"]: s for s in spans["Invocation"]}
    assert dest_top["parentSpanId"] == handlers[top["spanId"]]["spanId"]
    assert receiver.resources[dest_top["spanId"]]["faas.name"] == {"stringValue": target}


OWN_SPAN = """
import json, os, time, urllib.request

def handler(event, context):
    fields = dict(p.split("=", 1) for p in os.environ["_X_AMZN_TRACE_ID"].split(";"))
    now = time.time_ns()
    span = {
        "traceId": fields["Root"][2:].replace("-", ""),
        "spanId": os.urandom(8).hex(),
        "parentSpanId": fields["Parent"],
        "name": "my work",
        "kind": 1,
        "startTimeUnixNano": str(now - 1000000),
        "endTimeUnixNano": str(now),
    }
    body = {"resourceSpans": [{"resource": {"attributes": []},
            "scopeSpans": [{"scope": {"name": "handler"}, "spans": [span]}]}]}
    name, _, value = os.environ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"].partition("=")
    request = urllib.request.Request(
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", name: value},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return {"status": response.status, "span": span["spanId"]}
"""


def test_the_functions_own_spans_join_its_trace(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    name = fns.create(OWN_SPAN, TracingConfig={"Mode": "Active"})["FunctionName"]
    root = _root()
    out = _invoke(traced, name, f"Root={root};Sampled=1")
    assert out["status"] == 200
    spans = receiver.wait(root[2:].replace("-", ""), {"Invocation", "my work"})
    (mine,) = spans["my work"]
    assert mine["spanId"] == out["span"]
    assert mine["parentSpanId"] == spans["Invocation"][0]["spanId"]


TOKEN = """
import os
def handler(event, context):
    return os.environ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"].partition("=")[2]
"""


def test_the_span_receiver_takes_only_lamina_tokens(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    url = f"{traced.endpoint}/v1/traces"
    body = b'{"resourceSpans": []}'
    json_type = {"content-type": "application/json"}
    refused = httpx.post(url, content=body, headers=json_type)
    assert refused.status_code == 403
    assert refused.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    name = fns.create(TOKEN)["FunctionName"]
    token = _invoke(traced, name)
    assert token.startswith(f"{name}.")
    forged = httpx.post(url, content=body, headers={**json_type, TOKEN_HEADER: token[:-1]})
    assert forged.status_code == 403
    signed = {TOKEN_HEADER: token}
    ok = httpx.post(url, content=body, headers={**json_type, **signed})
    assert ok.status_code == 200 and ok.json() == {}
    # Protobuf passes through byte for byte (a span-less ExportTraceServiceRequest with one
    # empty ResourceSpans: field 1, length 0).
    proto = httpx.post(
        url, content=b"\x0a\x00", headers={"content-type": "application/x-protobuf", **signed}
    )
    assert proto.status_code == 200 and proto.content == b""
    assert proto.headers["content-type"] == "application/x-protobuf"
    assert b"\x0a\x00" in receiver.protobuf
    wrong_type = httpx.post(url, content=body, headers={"content-type": "text/plain", **signed})
    assert wrong_type.status_code == 400
    assert wrong_type.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    big = httpx.post(url, content=b" " * (4 * 1024 * 1024 + 1), headers={**json_type, **signed})
    assert big.status_code == 413


def test_extension_time_after_the_response_is_an_overhead_span(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    lam = traced.client()
    layer = lam.publish_layer_version(
        LayerName=f"l-{os.urandom(6).hex()}",
        Content={"ZipFile": exe_zip({"extensions/rec": PY_EXTENSION}, ("extensions/rec",))},
    )
    try:
        name = fns.create(
            ECHO_TRACE,
            TracingConfig={"Mode": "Active"},
            Layers=[layer["LayerVersionArn"]],
            Environment={"Variables": {"EXT_POST_PROCESS_S": "0.3"}},
        )["FunctionName"]
        root = _root()
        _invoke(traced, name, f"Root={root};Sampled=1")
        spans = receiver.wait(root[2:].replace("-", ""), {f"Invoke {name}", "Overhead"})
        (top,), (overhead,) = spans[f"Invoke {name}"], spans["Overhead"]
        assert overhead["parentSpanId"] == top["spanId"]
        took = int(overhead["endTimeUnixNano"]) - int(overhead["startTimeUnixNano"])
        assert took >= 200_000_000  # the extension's post-processing, after the response
        assert int(overhead["startTimeUnixNano"]) >= int(spans["Invocation"][0]["endTimeUnixNano"])
    finally:
        lam.delete_layer_version(
            LayerName=layer["LayerArn"].split(":")[-1], VersionNumber=layer["Version"]
        )


def test_a_function_url_continues_the_requests_trace(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    lam = traced.client()
    name = fns.create(ECHO_TRACE)["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    root, parent = _root(), os.urandom(8).hex()
    status, _, body = fetch(
        url, headers={"X-Amzn-Trace-Id": f"Root={root};Parent={parent};Sampled=1"}
    )
    assert status == 200, body
    seen = _fields(json.loads(body)["trace"])
    assert seen["Root"] == root
    spans = receiver.wait(root[2:].replace("-", ""), {f"Invoke {name}", "Invocation"})
    (top,) = spans[f"Invoke {name}"]
    assert top["parentSpanId"] == parent and _attrs(top)["faas.trigger"] == "http"
    assert seen["Parent"] == spans["Invocation"][0]["spanId"]


def test_put_events_carries_the_trace_to_a_rules_target(
    traced: Server, fns: Functions, receiver: Receiver
) -> None:
    events = traced.client("events")
    name = fns.create(ECHO_TRACE)["FunctionName"]
    allow_events(fns.client, name)
    rule = f"r-{os.urandom(4).hex()}"
    source = f"app.{os.urandom(4).hex()}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}))
    try:
        arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
        events.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": arn}])
        root, parent = _root(), os.urandom(8).hex()

        def add_trace(request: Any, **_: Any) -> None:
            request.headers["X-Amzn-Trace-Id"] = f"Root={root};Parent={parent};Sampled=1"

        events.meta.events.register("before-sign.events.PutEvents", add_trace)
        sent = events.put_events(Entries=[{"Source": source, "DetailType": "t", "Detail": "{}"}])
        assert sent["FailedEntryCount"] == 0
        spans = receiver.wait(root[2:].replace("-", ""), {f"Invoke {name}", "Queued"})
        (top,) = spans[f"Invoke {name}"]
        assert top["parentSpanId"] == parent
        # Exported spans are counted on /metrics.
        text = httpx.get(traced.endpoint + "/metrics", timeout=5).text
        exported = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('lamina_trace_spans_total{outcome="exported"}')
        ]
        assert exported and exported[0] > 0
    finally:
        events.remove_targets(Rule=rule, Ids=["t"])
        events.delete_rule(Name=rule)
