"""Malformed requests get an AWS-shaped error, never a 500, and a failure of ours leaves the
connection usable (issue 15, items 4 and 5)."""

from __future__ import annotations

import http.client
import json
import sqlite3
from collections.abc import Callable

import httpx
from tests.conftest import SIGNED, Server


def signed(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Request:
    """`method url` signed as the admin key, ready to send on any connection."""
    request = httpx.Request(method, url, content=body, headers=headers or {})
    return next(SIGNED.auth_flow(request))


def send(
    conn: http.client.HTTPConnection, request: httpx.Request
) -> tuple[int, dict[str, str], bytes]:
    """One request on `conn` (kept alive), and its (status, headers by lower name, body)."""
    target = request.url.raw_path.decode()
    conn.request(request.method, target, body=request.content, headers=dict(request.headers))
    response = conn.getresponse()
    return (
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        response.read(),
    )


def test_internal_error_keeps_the_connection(own_server: Callable[..., Server]) -> None:
    """A failure of ours (here a damaged store: a table gone under the running server) gets
    ServiceException without internal names, is logged, and the keep-alive connection
    answers the next request."""
    server = own_server()
    with sqlite3.connect(server.data_dir / "lamina.db") as db:
        db.execute("DROP TABLE layer_versions")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, headers, body = send(conn, signed("GET", server.endpoint + "/2018-10-31/layers"))
        assert status == 500
        assert headers["x-amzn-errortype"] == "ServiceException"
        error = json.loads(body)
        assert error["Type"] == "Service"
        assert "OperationalError" not in error["message"]
        assert "layer_versions" not in error["message"]
        # The same connection, next request: answered.
        status, _, body = send(conn, signed("GET", server.endpoint + "/2015-03-31/functions"))
        assert status == 200, body
        assert json.loads(body) == {"Functions": []}
    finally:
        conn.close()
    assert "layer_versions" in server.log()  # the detail went to the server's log
