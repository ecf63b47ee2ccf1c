"""Front workers (`lamina.front.worker`, `lamina.api.workers`): processes that accept on the
main address, read and verify Invokes and forward them to the server, and hand every other
connection over to it. What a client sees must not change: Invokes and every other API on one
keep-alive connection, pipelined requests answered in order, a deleted key refused at once
although a worker has used it, a worker that dies replaced, and a server killed with -9
taking its workers along."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.conftest import ADMIN_KEY, Functions, Server, lamina, wait_for
from tests.integration.test_authorization import client, new_key

from lamina.settings import default_workers

pytestmark = pytest.mark.control_plane

ECHO = "def handler(event, context):\n    return {'got': event, 'fn': context.function_name}\n"


def worker_pids(server: Server) -> list[int]:
    """The server's front workers (its children running `lamina.front.worker`)."""
    assert server.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == server.proc.pid and b"lamina.front.worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def signed(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    key: tuple[str, str] = ADMIN_KEY,
) -> dict[str, str]:
    """The headers of `method path` signed by `key`, as boto3 would send them."""
    request = AWSRequest(method=method, url=server.endpoint + path, data=body)
    SigV4Auth(Credentials(*key), "lambda", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def read_response(reader: Any) -> bytes:
    """One 200 response's body off a stream that holds several."""
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200 "), status
    length = None
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    assert length is not None
    body: bytes = reader.read(length)
    return body


def invoke_path(name: str) -> str:
    return f"/2015-03-31/functions/{name}/invocations"


def test_invokes_and_other_calls_share_one_keep_alive_connection(
    server: Server, functions: Functions
) -> None:
    assert len(worker_pids(server)) == default_workers()
    name = functions.create(ECHO)["FunctionName"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:

        def call(method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
            conn.request(method, path, body=body, headers=signed(server, method, path, body))
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

        status, headers, body = call("POST", invoke_path(name), b'{"n": 1}')
        assert conn.sock is not None
        local = conn.sock.getsockname()
        assert status == 200, body
        assert json.loads(body) == {"got": {"n": 1}, "fn": name}
        assert headers["x-amz-executed-version"] == "$LATEST"
        assert headers["x-amzn-requestid"]
        # Another API on the same connection (the worker hands it over to the server)...
        status, _, body = call("GET", "/2015-03-31/functions/")
        assert status == 200, body
        assert name in {f["FunctionName"] for f in json.loads(body)["Functions"]}
        # ...and an Invoke after it, still on it.
        status, _, body = call("POST", invoke_path(name), b'{"n": 2}')
        assert status == 200 and json.loads(body)["got"] == {"n": 2}
        # An error answered on it too, in Lambda's shape.
        status, headers, body = call("POST", invoke_path("no-such-function"), b"{}")
        assert status == 404 and headers["x-amzn-errortype"] == "ResourceNotFoundException"
        assert conn.sock is not None and conn.sock.getsockname() == local
    finally:
        conn.close()


def test_pipelined_invokes_are_answered_in_order(server: Server, functions: Functions) -> None:
    name = functions.create(ECHO)["FunctionName"]
    requests = b""
    for n in range(3):
        body = json.dumps({"n": n}).encode()
        head = f"POST {invoke_path(name)} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        for k, v in signed(server, "POST", invoke_path(name), body).items():
            head += f"{k}: {v}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        requests += head.encode() + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(requests)  # all three in one write: each waits for the one before
        reader = sock.makefile("rb")
        got = [json.loads(read_response(reader))["got"]["n"] for _ in range(3)]
    assert got == [0, 1, 2]


def test_a_deleted_key_is_refused_at_once(
    server: Server, functions: Functions, tmp_path: Path
) -> None:
    name = functions.create(ECHO)["FunctionName"]
    key = new_key(server, tmp_path, {"Effect": "Allow", "Action": "lambda:*", "Resource": "*"})
    user = client(server, key)
    for _ in range(2 * default_workers()):  # every worker has seen the key by now
        assert user.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200
    deleted = lamina("keys", "delete", key["AccessKeyId"], endpoint=server.endpoint)
    assert deleted.returncode == 0, deleted.stderr
    for _ in range(2 * default_workers()):
        with pytest.raises(ClientError) as refused:
            user.invoke(FunctionName=name, Payload=b"{}")
        assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_key_limited_by_policy_is_limited_through_the_workers(
    server: Server, functions: Functions, tmp_path: Path
) -> None:
    allowed = functions.create(ECHO)["FunctionName"]
    other = functions.create(ECHO)["FunctionName"]
    resource = f"arn:aws:lambda:us-east-1:000000000000:function:{allowed}"
    key = new_key(
        server,
        tmp_path,
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": resource},
    )
    user = client(server, key)
    assert user.invoke(FunctionName=allowed, Payload=b"{}")["StatusCode"] == 200
    with pytest.raises(ClientError) as denied:
        user.invoke(FunctionName=other, Payload=b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"user/{key['User']}" in denied.value.response["Error"]["Message"]


def test_a_worker_that_dies_is_replaced(
    own_server: Callable[..., Server], functions: Functions
) -> None:
    srv = own_server(None, "--workers", "2")
    lam = srv.client()
    fn = Functions(lam)
    try:
        name = fn.create(ECHO)["FunctionName"]
        before = worker_pids(srv)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: len(set(worker_pids(srv)) - set(before)) == 1, 20, "a new worker")
        for _ in range(10):  # new connections each: whichever worker accepts, it is served
            fresh = srv.client()
            assert fresh.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200
            fresh.close()
    finally:
        fn.cleanup()
    assert srv.stop() == 0, srv.log()


def test_a_server_killed_takes_its_workers_along(own_server: Callable[..., Server]) -> None:
    srv = own_server(None, "--workers", "2")
    workers = worker_pids(srv)
    assert len(workers) == 2
    srv.stop(signal.SIGKILL)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    wait_for(gone, 10, "the workers gone with their server")


def test_without_workers_the_server_accepts_itself(
    own_server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = own_server(None, "--workers", "0")
    assert worker_pids(srv) == []
    lam = srv.client()
    fn = Functions(lam)
    try:
        name = fn.create(ECHO)["FunctionName"]
        started = time.monotonic()
        resp = lam.invoke(FunctionName=name, Payload=b'{"a": 1}')
        assert json.loads(resp["Payload"].read())["got"] == {"a": 1}
        assert time.monotonic() - started < 30
    finally:
        fn.cleanup()


def test_an_idle_keep_alive_connection_is_closed(server: Server, functions: Functions) -> None:
    from lamina.front.worker import KEEP_ALIVE_S

    name = functions.create(ECHO)["FunctionName"]
    body = b"{}"
    head = f"POST {invoke_path(name)} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    for k, v in signed(server, "POST", invoke_path(name), body).items():
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        reader = sock.makefile("rb")
        read_response(reader)
        started = time.monotonic()
        assert reader.read(1) == b""  # the server closed it...
        waited = time.monotonic() - started
    assert KEEP_ALIVE_S - 0.5 <= waited <= KEEP_ALIVE_S + 5  # ...after the keep-alive time


def test_sigterm_lets_a_forwarded_invoke_finish(own_server: Callable[..., Server]) -> None:
    srv = own_server(None, "--workers", "1", "--shutdown-grace", "20")
    lam = srv.client()
    fn = Functions(lam)
    name = fn.create(
        "import time\ndef handler(event, context):\n    time.sleep(2)\n    return 'done'\n"
    )["FunctionName"]
    outcome: list[Any] = []

    def call() -> None:
        try:
            resp = lam.invoke(FunctionName=name, Payload=b"{}")
            outcome.append((resp["StatusCode"], resp["Payload"].read()))
        except Exception as e:
            outcome.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)  # running by now (a cold start takes milliseconds)
    assert srv.stop(signal.SIGTERM, timeout=60) == 0, srv.log()
    caller.join(30)
    assert outcome == [(200, b'"done"')]


def test_a_handover_waits_for_the_answer_still_going_out(
    server: Server, functions: Functions
) -> None:
    big = functions.create("def handler(event, context):\n    return 'x' * 5_000_000\n")
    name = big["FunctionName"]
    body = b"{}"
    invoke = f"POST {invoke_path(name)} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    for k, v in signed(server, "POST", invoke_path(name), body).items():
        invoke += f"{k}: {v}\r\n"
    invoke += f"Content-Length: {len(body)}\r\n\r\n"
    listing = f"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    for k, v in signed(server, "GET", "/2015-03-31/functions/").items():
        listing += f"{k}: {v}\r\n"
    listing += "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        # The Invoke's 5 MB answer fills the socket; the listing behind it is the server's
        # to answer, and only after the last byte of the answer before it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(invoke.encode() + body + listing.encode())
        time.sleep(1.0)  # not reading: the worker's write stays buffered meanwhile
        reader = sock.makefile("rb")
        first = read_response(reader)
        assert first == b'"' + b"x" * 5_000_000 + b'"'
        listed = json.loads(read_response(reader))
        assert name in {f["FunctionName"] for f in listed["Functions"]}
