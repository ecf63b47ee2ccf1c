"""Response streaming: InvokeWithResponseStream through boto3, RESPONSE_STREAM function URLs
through curl, the Runtime API's streaming mode (a Python custom runtime, Node's
`awslambda.streamifyResponse`), errors and timeouts mid-stream, limits and disconnects."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.conftest import Functions, Server
from tests.integration.test_authorization import arn, new_key
from tests.integration.test_authorization import client as user_client
from tests.integration.test_custom_runtime import create, zip_dir
from tests.integration.test_function_urls import curl, make_public

BOOTSTRAP = (Path(__file__).parent / "streaming_bootstrap.py").read_text()

# Writes a chunk stamped with the time it was written, sleeps, writes another: a client that
# holds the first chunk before the second one's stamp got it before the function ended.
PY_STREAMER = """import json, time

def handler(event, context):
    if "body" in event:  # through a function URL: the request's body
        event = json.loads(event["body"] or "{}")
    pause = event.get("pause", 0.5)
    for i in range(event.get("chunks", 2)):
        if i:
            time.sleep(pause)
        yield json.dumps({"i": i, "t": time.time()}) + "\\n"
    if event.get("fail"):
        raise ValueError("broke mid-stream")
    if event.get("hang"):
        time.sleep(60)
    if event.get("big"):
        block = b"x" * (1024 * 1024)
        for _ in range(event["big"]):
            yield block
"""


def _py_streamer(lam: Any, functions: Functions, **kw: Any) -> str:
    zipped = zip_dir(
        Path("/nonexistent"),
        {"bootstrap": (BOOTSTRAP, 0o755), "function.py": (PY_STREAMER, 0o644)},
    )
    name = f"stream-{len(functions.names)}-{time.monotonic_ns() % 10**8}"
    return create(lam, functions, name, zipped, Handler="function.handler", **kw)


def _events(resp: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """The stream's events, each with the time it arrived."""
    out = []
    with contextlib.closing(resp["EventStream"]) as stream:
        for event in stream:
            out.append((time.time(), event))
    return out


def _chunks(events: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, bytes]]:
    return [(t, e["PayloadChunk"]["Payload"]) for t, e in events if "PayloadChunk" in e]


def test_first_chunk_arrives_before_the_function_ends(lam: Any, functions: Functions) -> None:
    name = _py_streamer(lam, functions, Timeout=10)
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause": 0.5}')
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    events = _events(resp)
    chunks = _chunks(events)
    text = b"".join(c for _, c in chunks).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["i"] for line in lines] == [0, 1]
    first_arrival = chunks[0][0]
    # the first chunk was in the client's hands before the function wrote its second
    assert first_arrival < lines[1]["t"]
    assert first_arrival >= lines[0]["t"]
    last = events[-1][1]
    assert "InvokeComplete" in last
    assert "ErrorCode" not in last["InvokeComplete"]


def test_error_mid_stream(lam: Any, functions: Functions) -> None:
    name = _py_streamer(lam, functions, Timeout=10)
    resp = lam.invoke_with_response_stream(
        FunctionName=name, Payload=b'{"pause": 0.01, "fail": true}', LogType="Tail"
    )
    events = _events(resp)
    assert len(_chunks(events)) >= 1
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "ValueError"
    assert done["ErrorDetails"] == "broke mid-stream"
    tail = base64.b64decode(done["LogResult"]).decode()  # the log's tail, as Invoke's
    assert "REPORT RequestId:" in tail and "Billed Duration:" in tail
    # the environment is still good: the next invoke streams
    again = _chunks(_events(lam.invoke_with_response_stream(FunctionName=name, Payload=b"{}")))
    assert len(b"".join(c for _, c in again).splitlines()) == 2


def test_timeout_mid_stream(lam: Any, functions: Functions) -> None:
    name = _py_streamer(lam, functions, Timeout=1)
    resp = lam.invoke_with_response_stream(
        FunctionName=name, Payload=b'{"pause": 0.01, "hang": true}'
    )
    events = _events(resp)
    assert len(_chunks(events)) == 2  # what was written before the timeout went out
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in done["ErrorDetails"]
    # the environment was recycled: a new one answers
    again = _chunks(_events(lam.invoke_with_response_stream(FunctionName=name, Payload=b"{}")))
    assert len(b"".join(c for _, c in again).splitlines()) == 2


def test_buffered_function_is_one_chunk(lam: Any, functions: Functions) -> None:
    name = functions.create("def handler(e, c):\n    return {'echo': e}\n")["FunctionName"]
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"a": 1}')
    events = _events(resp)
    assert [e for _, e in events][:-1] == [{"PayloadChunk": {"Payload": b'{"echo": {"a": 1}}'}}]
    assert "InvokeComplete" in events[-1][1]
    failing = functions.create("def handler(e, c):\n    raise KeyError('k')\n")["FunctionName"]
    done = _events(lam.invoke_with_response_stream(FunctionName=failing))[-1][1]
    assert done["InvokeComplete"]["ErrorCode"] == "KeyError"


def test_bad_input(lam: Any, lam_unchecked: Any, functions: Functions) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName="no-such-function")
    name = functions.create("def handler(e, c):\n    return 1\n")["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=name, Qualifier="nope")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_with_response_stream(FunctionName=name, Payload=b"{not json")
    with pytest.raises(lam_unchecked.exceptions.ClientError) as e:
        lam_unchecked.invoke_with_response_stream(FunctionName=name, InvocationType="Event")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    dry = lam.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun")
    assert dry["StatusCode"] == 204
    assert _events(dry) == []


def _signed_socket(server: Server, name: str, payload: bytes) -> socket.socket:
    """A raw connection carrying a signed InvokeWithResponseStream request (so that the
    test can drop it mid-stream)."""
    path = f"/2021-11-15/functions/{name}/response-streaming-invocations"
    request = AWSRequest(method="POST", url=server.endpoint + path, data=payload)
    SigV4Auth(Credentials("test", "test"), "lambda", "us-east-1").add_auth(request)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    for key, value in request.headers.items():
        head += f"{key}: {value}\r\n"
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head.encode() + payload)
    return sock


def test_client_disconnect_frees_the_environment(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = _py_streamer(lam, functions, Timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    log_from = len(server.log())
    with _signed_socket(server, name, b'{"pause": 0.3, "chunks": 3}') as sock:
        sock.settimeout(10)
        got = b""
        while b"PayloadChunk" not in got:
            data = sock.recv(65536)
            assert data, got
            got += data
        assert got.startswith(b"HTTP/1.1 200")
    # the caller went away mid-stream; its one concurrency slot comes back once the function
    # ends, and its environment serves the next invoke
    deadline = time.monotonic() + 10
    while True:
        try:
            again = lam.invoke_with_response_stream(FunctionName=name, Payload=b"{}")
            break
        except lam.exceptions.TooManyRequestsException:
            assert time.monotonic() < deadline, "the concurrency lease leaked"
            time.sleep(0.05)
    assert len(b"".join(c for _, c in _chunks(_events(again))).splitlines()) == 2
    assert "Traceback" not in server.log()[log_from:]


# -- Node: awslambda.streamifyResponse -----------------------------------------------------------

NODE_STREAMER = """
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.requestContext) event = JSON.parse(event.body || '{}'); // through a function URL
  if (event.http) {
    responseStream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 201,
      headers: { 'x-custom': 'yes', 'content-type': 'text/plain' },
      cookies: ['a=1', 'b=2; Path=/'],
    });
  } else {
    responseStream.setContentType('application/x-ndjson');
  }
  if (event.pipe) {
    await pipeline(Readable.from(['p1 ', 'p2 ', 'p3']), responseStream);
    return;
  }
  responseStream.write(JSON.stringify({ i: 0, t: Date.now() / 1000 }) + '\\n');
  if (event.crash) setTimeout(() => { throw new RangeError('uncaught mid-stream'); }, 1);
  await sleep(event.pause ?? 500);
  if (event.fail) throw new TypeError('node broke mid-stream');
  responseStream.write(JSON.stringify({ i: 1, t: Date.now() / 1000 }) + '\\n');
  responseStream.end();
});
"""


def _node_streamer(functions: Functions, **kw: Any) -> str:
    name: str = functions.create(
        {"index.js": NODE_STREAMER}, handler="index.handler", runtime="nodejs20.x", **kw
    )["FunctionName"]
    return name


def test_node_streams_to_boto3(lam: Any, functions: Functions) -> None:
    name = _node_streamer(functions, Timeout=10)
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause": 500}')
    chunks = _chunks(_events(resp))
    lines = [json.loads(x) for x in b"".join(c for _, c in chunks).splitlines()]
    assert [x["i"] for x in lines] == [0, 1]
    assert chunks[0][0] < lines[1]["t"]  # the first chunk arrived before the second was written
    # plain Invoke of the same function: its whole response, buffered
    whole = lam.invoke(FunctionName=name, Payload=b'{"pause": 1}')
    assert len(whole["Payload"].read().splitlines()) == 2


def test_node_pipeline_and_error_mid_stream(lam: Any, functions: Functions) -> None:
    name = _node_streamer(functions, Timeout=10)
    piped = _chunks(
        _events(lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pipe": 1}'))
    )
    assert b"".join(c for _, c in piped) == b"p1 p2 p3"
    events = _events(
        lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause": 1, "fail": 1}')
    )
    assert len(_chunks(events)) == 1
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "TypeError"
    assert done["ErrorDetails"] == "node broke mid-stream"


# -- function URLs with InvokeMode RESPONSE_STREAM ---------------------------------------------


def _streaming_url(lam: Any, name: str) -> str:
    url: str = lam.create_function_url_config(
        FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"
    )["FunctionUrl"]
    make_public(lam, name)
    return url


def test_curl_no_buffer_gets_chunks_as_written(lam: Any, functions: Functions) -> None:
    name = _node_streamer(functions, Timeout=10)
    url = _streaming_url(lam, name)
    proc = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--no-buffer",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            '{"pause": 500}',
            url,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_arrival = time.time()
        rest = proc.stdout.read()
    finally:
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    lines = [json.loads(x) for x in (first + rest).splitlines()]
    assert [x["i"] for x in lines] == [0, 1]
    assert first_arrival < lines[1]["t"]  # curl had the first line before the second existed


def test_url_prelude_sets_status_headers_cookies(lam: Any, functions: Functions) -> None:
    name = _node_streamer(functions, Timeout=10)
    url = _streaming_url(lam, name)
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            '{"http": 1, "pause": 1}',
            url,
        ],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].split()[1] == "201"
    headers = [tuple(x.split(": ", 1)) for x in lines[1:]]
    lowered = [(k.lower(), v) for k, v in headers]
    assert ("x-custom", "yes") in lowered
    assert ("content-type", "text/plain") in lowered
    assert [v for k, v in lowered if k == "set-cookie"] == ["a=1", "b=2; Path=/"]
    assert ("transfer-encoding", "chunked") in lowered
    assert [json.loads(x)["i"] for x in body.splitlines()] == [0, 1]  # no prelude in the body


def test_url_python_custom_runtime_and_buffered_handler(lam: Any, functions: Functions) -> None:
    name = _py_streamer(lam, functions, Timeout=10)
    url = _streaming_url(lam, name)
    status, body = curl(
        "-X", "POST", "-H", "content-type: application/json", "-d", '{"pause": 0.01}', url
    )
    assert status == 200
    assert [json.loads(x)["i"] for x in body.splitlines()] == [0, 1]
    buffered = functions.create(
        "def handler(e, c):\n    return {'statusCode': 202, 'body': 'whole'}\n"
    )["FunctionName"]
    status, body = curl(_streaming_url(lam, buffered))
    assert (status, body) == (202, "whole")
    # an error before the first byte is Lambda's 502
    status, _ = curl(
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        '{"pause": 0, "chunks": 0, "fail": true}',
        url,
    )
    assert status == 502


def test_authorized_as_invoke_function(
    server: Server, lam: Any, functions: Functions, tmp_path: Path
) -> None:
    allowed = functions.create("def handler(e, c):\n    return 'ok'\n")["FunctionName"]
    other = functions.create("def handler(e, c):\n    return 'ok'\n")["FunctionName"]
    statement = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn(allowed)}
    user = user_client(server, new_key(server, tmp_path, statement))
    events = [e for _, e in _events(user.invoke_with_response_stream(FunctionName=allowed))]
    assert events[0] == {"PayloadChunk": {"Payload": b'"ok"'}}
    with pytest.raises(ClientError) as denied:
        user.invoke_with_response_stream(FunctionName=other)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "lambda:InvokeFunction" in denied.value.response["Error"]["Message"]


def test_node_uncaught_error_mid_stream(lam: Any, functions: Functions) -> None:
    name = _node_streamer(functions, Timeout=10)
    events = _events(
        lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause": 200, "crash": 1}')
    )
    assert len(_chunks(events)) == 1
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "RangeError"
    assert done["ErrorDetails"] == "uncaught mid-stream"
    # the runtime exited, as AWS's does after an uncaught error: a new environment answers
    again = _chunks(
        _events(lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause": 1}'))
    )
    assert len(b"".join(c for _, c in again).splitlines()) == 2


def test_url_client_disconnect_frees_the_environment(lam: Any, functions: Functions) -> None:
    name = _py_streamer(lam, functions, Timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    url = _streaming_url(lam, name)
    json_post = ["-X", "POST", "-H", "content-type: application/json"]
    proc = subprocess.Popen(
        ["curl", "-sS", "--no-buffer", *json_post, "-d", '{"pause": 0.3, "chunks": 3}', url],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert json.loads(proc.stdout.readline())["i"] == 0
        proc.kill()  # the caller goes away mid-stream
        proc.wait(10)
    deadline = time.monotonic() + 10
    while True:
        status, body = curl("-X", "POST", "-H", "content-type: application/json", "-d", "{}", url)
        if status != 429:
            break
        assert time.monotonic() < deadline, "the concurrency lease leaked"
        time.sleep(0.05)
    assert status == 200 and len(body.splitlines()) == 2


def test_qualifier_client_context_and_executed_version(lam: Any, functions: Functions) -> None:
    name = functions.create(
        "def handler(e, c):\n"
        "    return {'custom': c.client_context.custom, 'arn': c.invoked_function_arn}\n",
        Publish=True,
    )["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp = lam.invoke_with_response_stream(FunctionName=name, Qualifier="live", ClientContext=cc)
    assert resp["ExecutedVersion"] == "1"
    assert resp["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    (_, first), (_, complete) = _events(resp)
    out = json.loads(first["PayloadChunk"]["Payload"])
    assert out["custom"] == {"k": "v"}
    assert out["arn"].endswith(f":function:{name}:live")
    assert complete == {"InvokeComplete": {}}
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_with_response_stream(FunctionName=name, ClientContext="not base64!")
