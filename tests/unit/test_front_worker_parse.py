"""Which requests a front worker reads itself (`lamina.front.worker._parse_head`): plain
Invokes only, framed by exactly one Content-Length; anything else is the server's to read, so
that no request is framed differently by the worker and by the server."""

from __future__ import annotations

import pytest

from lamina.front.worker import _parse_head

PATH = b"/2015-03-31/functions/f1/invocations"
AUTH = (
    b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE00000000/20260101/us-east-1/"
    b"lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
)


def head(*lines: bytes, request_line: bytes = b"POST " + PATH + b" HTTP/1.1") -> bytes:
    return b"\r\n".join([request_line, *lines])


BASE = (b"Host: 127.0.0.1:8484", b"X-Amz-Date: 20260101T000000Z", AUTH, b"Content-Length: 2")


def test_a_plain_signed_invoke_is_taken() -> None:
    parsed = _parse_head(head(*BASE), auth=True)
    assert parsed is not None
    raw_path, query, headers, names, length, close = parsed
    assert (raw_path, query, length, close) == (PATH, b"", 2, False)
    assert names["host"] == "127.0.0.1:8484" and ("content-length", "2") in [
        (n.decode(), v.decode()) for n, v in headers
    ]


def test_qualifier_and_connection_close_are_kept() -> None:
    parsed = _parse_head(
        head(
            *BASE, b"Connection: close", request_line=b"POST " + PATH + b"?Qualifier=live HTTP/1.1"
        ),
        auth=True,
    )
    assert parsed is not None and parsed[1] == b"Qualifier=live" and parsed[5] is True


@pytest.mark.parametrize(
    "request_head",
    [
        head(*BASE, request_line=b"GET " + PATH + b" HTTP/1.1"),
        head(*BASE, request_line=b"POST " + PATH + b" HTTP/1.0"),
        head(*BASE, request_line=b"POST /2015-03-31/functions/ HTTP/1.1"),
        head(*BASE, request_line=b"POST /2015-03-31/functions/a%2Fb/invocations HTTP/1.1"),
        head(
            *BASE, request_line=b"POST /lambda-url/abc/2015-03-31/functions/f/invocations HTTP/1.1"
        ),
        head(*BASE, b"Transfer-Encoding: chunked"),
        head(*BASE, b"Content-Length: 2"),  # two of them
        head(*BASE[:3], b"Content-Length: -2"),
        head(*BASE[:3], b"Content-Length: 2x"),
        head(*BASE[:3]),  # none
        head(*BASE, b"Expect: 100-continue"),
        head(*BASE, b"X-Amz-Target: Logs_20140328.GetLogEvents"),
        head(*BASE, b"X-Amz-Security-Token: token"),
        head(*BASE, b"Connection: upgrade", b"Upgrade: websocket"),
        head(b"Host: abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws", *BASE[1:]),
        head(*BASE, b"Host: 127.0.0.1:8484"),  # a second Host
        head(*BASE[1:]),  # no Host
        head(*BASE, b" folded: value"),
        head(*BASE, b"Bad Header: value"),
        head(*BASE, b"X-Thing: a\nb"),
        head(*BASE, b"X-Thing: a\x00b"),
        head(BASE[0], BASE[1], BASE[3]),  # unsigned
        head(BASE[0], BASE[1], b"Authorization: Basic dXNlcjpwYXNz", BASE[3]),
        head(BASE[0], BASE[1], AUTH, b"Content-Length: 7000000"),  # over the sync limit
    ],
)
def test_anything_else_is_the_servers(request_head: bytes) -> None:
    assert _parse_head(request_head, auth=True) is None


def test_with_authentication_off_an_unsigned_invoke_is_taken() -> None:
    assert _parse_head(head(BASE[0], BASE[3]), auth=False) is not None
