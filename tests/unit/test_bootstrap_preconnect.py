"""The Python bootstrap's connection to the Runtime API made ahead of need (`preconnect`), as
Lamina's zygote makes it in environments waiting in its pool: a real listener on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lamina.runtimes.python import bootstrap


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(5)
    yield sock
    sock.close()
    bootstrap._preconnected = None


def _serve_one(conn: socket.socket, seen: list[bytes]) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    seen.append(data)
    body = b'{"ok": true}'
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r1\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_the_first_request_goes_on_the_connection_made_ahead(listener: socket.socket) -> None:
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    bootstrap.preconnect(address)
    # Connected before any client exists: the server can accept it ahead of the first request.
    conn, _ = listener.accept()
    seen: list[bytes] = []
    server = threading.Thread(target=_serve_one, args=(conn, seen))
    server.start()
    client = bootstrap.RuntimeClient(address)
    headers, body = client.next()
    server.join(5)
    assert body == b'{"ok": true}' and headers.get("Lambda-Runtime-Aws-Request-Id") == "r1"
    assert seen and seen[0].startswith(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1")
    assert bootstrap._preconnected is None  # used once
    client.close()
    conn.close()


def test_another_address_connects_afresh(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    bootstrap.preconnect(f"127.0.0.1:{port}")
    ahead, _ = listener.accept()
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    other.settimeout(5)
    client = bootstrap.RuntimeClient(f"127.0.0.1:{other.getsockname()[1]}")
    sock = client._connect()
    conn, _ = other.accept()
    assert bootstrap._preconnected is not None  # kept for its own address
    for s in (sock, conn, other, ahead):
        s.close()
    bootstrap._preconnected[1].close()


def test_nothing_listening_leaves_no_connection() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    bootstrap.preconnect(f"127.0.0.1:{port}")
    assert bootstrap._preconnected is None
