"""Lambda's rule for nodejs24.x and later: callback-style handlers fail at init
(`Runtime.CallbackHandlerDeprecated`); earlier Node.js runtimes run them. The bootstrap runs on
the host's node against a Runtime API of the test's own (the rule follows the Lambda runtime
named in AWS_EXECUTION_ENV, not the node binary's version)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lamina.runtimes.catalog import NODE_BOOTSTRAP

CALLBACK_HANDLER = "exports.handler = (event, context, callback) => callback(null, 'called');\n"
ASYNC_THREE_ARGS = "exports.handler = async (event, context, callback) => 'async';\n"


class RuntimeApi(ThreadingHTTPServer):
    """Hands out one event, then holds the next poll; records what the runtime posts."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posted: list[tuple[str, dict[str, str], Any]] = []
        self.handed_out = False
        self.done = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.server.handed_out:
            self.server.done.wait(20)  # the next poll: hold it until the test ends
            return
        self.server.handed_out = True
        body = b"{}"
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", "9999999999999")
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:::function:f")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posted.append((self.path, dict(self.headers), json.loads(raw or b"null")))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.done.set()


@pytest.fixture
def api() -> Iterator[RuntimeApi]:
    server = RuntimeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.done.set()
    server.shutdown()
    server.server_close()


def _run(api: RuntimeApi, tmp_path: Path, runtime: str, code: str) -> subprocess.Popen[bytes]:
    node = shutil.which("node")
    assert node is not None, "the Node.js runtime tests need node on the host"
    (tmp_path / "index.js").write_text(code)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "_HANDLER": "index.handler",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
    }
    return subprocess.Popen(
        [node, str(NODE_BOOTSTRAP)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _first_post(api: RuntimeApi, proc: subprocess.Popen[bytes]) -> tuple[str, Any]:
    try:
        assert api.done.wait(20), "the runtime posted nothing"
        path, _, body = api.posted[0]
        return path, body
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_nodejs24_refuses_a_callback_handler_at_init(api: RuntimeApi, tmp_path: Path) -> None:
    proc = _run(api, tmp_path, "nodejs24.x", CALLBACK_HANDLER)
    path, body = _first_post(api, proc)
    assert path == "/2018-06-01/runtime/init/error"
    assert body["errorType"] == "Runtime.CallbackHandlerDeprecated"
    assert "async" in body["errorMessage"]
    assert not api.handed_out  # no invocation was asked for


def test_nodejs22_still_runs_a_callback_handler(api: RuntimeApi, tmp_path: Path) -> None:
    proc = _run(api, tmp_path, "nodejs22.x", CALLBACK_HANDLER)
    path, body = _first_post(api, proc)
    assert (path, body) == ("/2018-06-01/runtime/invocation/req-1/response", "called")


def test_nodejs24_runs_an_async_handler_whatever_its_arity(api: RuntimeApi, tmp_path: Path) -> None:
    proc = _run(api, tmp_path, "nodejs24.x", ASYNC_THREE_ARGS)
    path, body = _first_post(api, proc)
    assert (path, body) == ("/2018-06-01/runtime/invocation/req-1/response", "async")
