#!/usr/bin/env python3
"""A custom runtime (provided.al2023) in Python that streams its handler's response.

The handler (`file.function` in _HANDLER) is a generator: each bytes (or str) it yields goes
out at once as a chunk of the Runtime API's streaming response mode; an exception it raises
mid-stream is reported in the HTTP trailers, as Lambda reads them. docs/streaming.md shows
this file.
"""

import base64
import importlib
import json
import os
import socket
import sys
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = f"http://{API}/2018-06-01/runtime"


def stream_response(request_id, chunks):
    host, port = API.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            (
                f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
                f"Host: {API}\r\n"
                "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
                "Transfer-Encoding: chunked\r\n"
                "Trailer: Lambda-Runtime-Function-Error-Type,"
                " Lambda-Runtime-Function-Error-Body\r\n"
                "Content-Type: text/plain\r\n\r\n"
            ).encode()
        )
        trailers = b""
        try:
            for chunk in chunks:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if data:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        except Exception as e:  # mid-stream: the error goes in the trailers
            error = {"errorType": type(e).__name__, "errorMessage": str(e)}
            encoded = base64.b64encode(json.dumps(error).encode()).decode()
            trailers = (
                f"Lambda-Runtime-Function-Error-Type: {type(e).__name__}\r\n"
                f"Lambda-Runtime-Function-Error-Body: {encoded}\r\n"
            ).encode()
        sock.sendall(b"0\r\n" + trailers + b"\r\n")
        sock.recv(4096)  # Lambda's 202 Accepted


def main():
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    module, function = os.environ["_HANDLER"].rsplit(".", 1)
    handler = getattr(importlib.import_module(module), function)
    while True:
        with urllib.request.urlopen(f"{BASE}/invocation/next") as resp:
            request_id = resp.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(resp.read())
        stream_response(request_id, handler(event, None))


main()
