"""The SigV4 verifier without a server: requests signed by botocore (header and presigned
forms, with and without a session token) are accepted as they arrive on the wire, and any
change to what was signed is refused with AWS's error."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lamina.api.http_front import signed_request
from lamina.auth.principal import Principal
from lamina.auth.sigv4 import (
    AuthError,
    ExpiredToken,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    SignedRequest,
    UnrecognizedClient,
    Verifier,
)

KEY, SECRET = "AKIAEXAMPLE000000001", "s3cr3t/EXAMPLE+KEY"
SESSION, SESSION_SECRET, TOKEN = "ASIAEXAMPLE000000001", "session-secret", "tok/en+=="
HOST = "127.0.0.1:8484"


class Keys:
    """A key store of one long-term key and one session (`SecretLookup`)."""

    def __init__(self) -> None:
        self.expired = False

    def secret_for(self, access_key_id: str, session_token: str | None) -> str:
        if access_key_id == KEY:
            return SECRET
        if access_key_id == SESSION and session_token == TOKEN:
            if self.expired:
                raise ExpiredToken()
            return SESSION_SECRET
        raise UnrecognizedClient()

    def principal(self, access_key_id: str) -> Principal:
        return Principal(access_key_id, f"arn:aws:iam::000000000000:user/{access_key_id}", "0")


def wire(request: AWSRequest) -> SignedRequest:
    """`request` as the server sees it: the raw path and query, lower-cased header names,
    ends of values trimmed by the HTTP parser."""
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v.strip(" \t") for k, v in prepared.headers.items()}
    headers.setdefault("host", parts.netloc)
    body = prepared.body or b""
    return SignedRequest(
        method=prepared.method,
        raw_path=parts.path or "/",
        query=parts.query,
        headers=headers,
        body=body if isinstance(body, bytes) else body.encode(),
    )


def verify(request: SignedRequest, service: str | None = "lambda", **kw: Any) -> Principal:
    return Verifier(Keys(), "us-east-1", **kw).verify(request, service)


def sign(request: AWSRequest, *, token: str | None = None, service: str = "lambda") -> AWSRequest:
    creds = Credentials(SESSION, SESSION_SECRET, token) if token else Credentials(KEY, SECRET)
    SigV4Auth(creds, service, "us-east-1").add_auth(request)
    return request


def presign(request: AWSRequest, expires: int = 60, *, token: str | None = None) -> AWSRequest:
    creds = Credentials(SESSION, SESSION_SECRET, token) if token else Credentials(KEY, SECRET)
    SigV4QueryAuth(creds, "lambda", "us-east-1", expires=expires).add_auth(request)
    return request


def replace(request: SignedRequest, **changes: Any) -> SignedRequest:
    fields = {
        "method": request.method,
        "raw_path": request.raw_path,
        "query": request.query,
        "headers": dict(request.headers),
        "body": request.body,
    }
    fields.update(changes)
    return SignedRequest(**fields)


# Path segments and query values as a client encodes them for the wire.
_WORDS = ["fn", "2015-03-31", "a b", "ü€", "name:1", "$LATEST", "x/y", "100%", "~._-", "+", ""]


def _random_request(rng: random.Random) -> AWSRequest:
    method = rng.choice(["GET", "POST", "PUT", "DELETE"])
    path = "/" + "/".join(quote(rng.choice(_WORDS), safe="") for _ in range(rng.randint(0, 4)))
    params = [
        (quote(rng.choice(_WORDS), safe="-_.~"), quote(rng.choice(_WORDS), safe="-_.~"))
        for _ in range(rng.choice([0, 0, 1, 3]))
    ]
    url = f"http://{HOST}{path}"
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params)
    headers = {}
    if rng.random() < 0.5:
        headers["Content-Type"] = "application/json"
    if rng.random() < 0.5:
        headers["X-Custom"] = rng.choice(["a  b", "A,B", "x\t y", "é"])
    body = b"" if method in ("GET", "DELETE") else rng.randbytes(rng.randint(0, 64))
    return AWSRequest(method=method, url=url, headers=headers, data=body)


def _tamperings(request: SignedRequest) -> list[SignedRequest]:
    headers = dict(request.headers)
    out = [
        replace(request, method="PATCH"),
        replace(request, raw_path=request.raw_path.rstrip("/") + "/x"),
        replace(request, query=request.query + ("&" if request.query else "") + "extra=1"),
        replace(request, body=request.body + b"!"),
        replace(request, headers=headers | {"host": "127.0.0.1:1"}),
        replace(request, headers=headers | {"x-amz-date": "20000101T000000Z"}),
    ]
    if "x-custom" in headers:
        out.append(replace(request, headers=headers | {"x-custom": headers["x-custom"] + "z"}))
    return out


def test_botocore_signed_requests_verify_and_any_change_is_refused() -> None:
    rng = random.Random(19)
    for _ in range(300):
        token = TOKEN if rng.random() < 0.3 else None
        arrived = wire(sign(_random_request(rng), token=token))
        assert verify(arrived).access_key_id == (SESSION if token else KEY), arrived
        for tampered in _tamperings(arrived):
            with pytest.raises(AuthError):
                verify(tampered)


def test_presigned_urls_verify_and_any_change_is_refused() -> None:
    rng = random.Random(20)
    for _ in range(100):
        request = _random_request(rng)
        request.method, request.data = "GET", b""
        token = TOKEN if rng.random() < 0.3 else None
        arrived = wire(presign(request, token=token))
        assert not arrived.headers.get("authorization")
        assert verify(arrived).access_key_id == (SESSION if token else KEY), arrived
        for tampered in _tamperings(arrived)[:4]:
            with pytest.raises(InvalidSignature):
                verify(tampered)
        longer = arrived.query.replace("X-Amz-Expires=60", "X-Amz-Expires=61")
        with pytest.raises(InvalidSignature):
            verify(replace(arrived, query=longer))


def test_payload_hash_header_forms() -> None:
    body = b'{"a": 1}'
    signed = wire(sign(AWSRequest("POST", f"http://{HOST}/f", data=body)))
    true_hash = hashlib.sha256(body).hexdigest()
    headers = dict(signed.headers)
    # A sent hash that is the body's is fine; any other (UNSIGNED-PAYLOAD too, and the
    # streaming forms) is refused for a header-signed request.
    for sent in ("UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "0" * 64):
        with pytest.raises(InvalidSignature):
            verify(replace(signed, headers=headers | {"x-amz-content-sha256": sent}))
    resigned = AWSRequest("POST", f"http://{HOST}/f", data=body)
    resigned.headers["X-Amz-Content-SHA256"] = true_hash
    assert verify(wire(sign(resigned))).access_key_id == KEY


def test_a_presigned_url_cannot_be_given_another_body_through_the_hash_header() -> None:
    # SigV4QueryAuth signs the hash of the body it was given: the URL is for that body only.
    request = AWSRequest("PUT", f"http://{HOST}/f", data=b"")
    arrived = wire(presign(request))
    empty = hashlib.sha256(b"").hexdigest()
    headers = dict(arrived.headers)
    assert verify(replace(arrived, headers=headers | {"x-amz-content-sha256": empty}))
    other = replace(arrived, body=b"other", headers=headers | {"x-amz-content-sha256": empty})
    with pytest.raises(InvalidSignature):
        verify(other)
    with pytest.raises(InvalidSignature):
        verify(replace(arrived, body=b"other"))


def _header_request(**headers: str) -> SignedRequest:
    return SignedRequest("GET", "/f", "", {"host": HOST, **headers}, b"")


def test_errors_and_messages() -> None:
    now = dt.datetime.now(dt.UTC)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz[:8]
    good = f"Credential={KEY}/{day}/us-east-1/lambda/aws4_request"
    cases: list[tuple[dict[str, str], type[AuthError], str]] = [
        ({}, MissingAuthenticationToken, "Missing Authentication Token"),
        (
            {"authorization": "AWS4-HMAC-SHA1 x"},
            IncompleteSignature,
            "Unsupported authorization type: AWS4-HMAC-SHA1",
        ),
        (
            {"authorization": "AWS4-HMAC-SHA256 Credential=a/b", "x-amz-date": amz},
            IncompleteSignature,
            "Authorization header requires 'SignedHeaders' parameter. Authorization header "
            "requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential=a/b",
        ),
        (
            {"authorization": f"AWS4-HMAC-SHA256 {good}, SignedHeaders=host, Signature=00"},
            IncompleteSignature,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
            f"header. Authorization=AWS4-HMAC-SHA256 {good}, SignedHeaders=host, Signature=00",
        ),
        (
            {
                "authorization": f"AWS4-HMAC-SHA256 {good}, SignedHeaders=host, Signature=00",
                "x-amz-date": "2026-01-01T00:00:00Z",
            },
            IncompleteSignature,
            "Date must be in ISO-8601 'basic format'. Got '2026-01-01T00:00:00Z'. See "
            "http://en.wikipedia.org/wiki/ISO_8601",
        ),
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=K/x/us-east-1/lambda/aws4_request,"
                " SignedHeaders=host, Signature=00",
                "x-amz-date": amz,
            },
            InvalidSignature,
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: 'x' != '{day}', from '{amz}'.",
        ),
        (
            {
                "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/{day}/eu-west-1/lambda/"
                "aws4_request, SignedHeaders=host, Signature=00",
                "x-amz-date": amz,
            },
            InvalidSignature,
            "Credential should be scoped to a valid region. "
            f"Credential={KEY}/{day}/eu-west-1/lambda/aws4_request",
        ),
        (
            {
                "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/{day}/us-east-1/s3/"
                "aws4_request, SignedHeaders=host, Signature=00",
                "x-amz-date": amz,
            },
            InvalidSignature,
            "Credential should be scoped to correct service: 'lambda'. ",
        ),
        (
            {
                "authorization": f"AWS4-HMAC-SHA256 {good}, SignedHeaders=x-amz-date, Signature=00",
                "x-amz-date": amz,
            },
            InvalidSignature,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ),
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=AKIANOSUCH/"
                f"{day}/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00",
                "x-amz-date": amz,
            },
            UnrecognizedClient,
            "The security token included in the request is invalid.",
        ),
        (
            {
                "authorization": f"AWS4-HMAC-SHA256 {good}, SignedHeaders=host, Signature=00",
                "x-amz-date": amz,
            },
            InvalidSignature,
            InvalidSignature.MISMATCH,
        ),
    ]
    for headers, error, message in cases:
        with pytest.raises(error) as e:
            verify(_header_request(**headers), now=lambda: now)
        assert e.value.message == message
        assert e.value.status == 403


def test_clock_skew_and_expiry() -> None:
    arrived = wire(sign(AWSRequest("GET", f"http://{HOST}/f")))
    signed_at = dt.datetime.strptime(arrived.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    signed_at = signed_at.replace(tzinfo=dt.UTC)
    for minutes in (-4, 4):
        assert verify(arrived, now=lambda m=minutes: signed_at + dt.timedelta(minutes=m))
    with pytest.raises(InvalidSignature) as late:
        verify(arrived, now=lambda: signed_at + dt.timedelta(minutes=6))
    assert late.value.message.startswith("Signature expired: ")
    assert late.value.message.endswith(" - 5 min.)")
    with pytest.raises(InvalidSignature) as early:
        verify(arrived, now=lambda: signed_at - dt.timedelta(minutes=6))
    assert early.value.message.startswith("Signature not yet current: ")

    url = wire(presign(AWSRequest("GET", f"http://{HOST}/f"), expires=600))
    assert verify(url, now=lambda: signed_at + dt.timedelta(seconds=599))
    with pytest.raises(InvalidSignature) as expired:
        verify(url, now=lambda: signed_at + dt.timedelta(seconds=601))
    assert expired.value.message.endswith(" - 600 sec.)")


def test_session_tokens() -> None:
    arrived = wire(sign(AWSRequest("GET", f"http://{HOST}/f"), token=TOKEN))
    assert verify(arrived).access_key_id == SESSION
    headers = dict(arrived.headers)
    with pytest.raises(UnrecognizedClient):
        verify(replace(arrived, headers={k: v for k, v in headers.items() if "token" not in k}))
    with pytest.raises(UnrecognizedClient):
        verify(replace(arrived, headers=headers | {"x-amz-security-token": TOKEN + "x"}))
    keys = Keys()
    keys.expired = True
    with pytest.raises(ExpiredToken):
        Verifier(keys, "us-east-1").verify(arrived, "lambda")


def test_service_scope_binding() -> None:
    logs = wire(sign(AWSRequest("POST", f"http://{HOST}/", data=b"{}"), service="logs"))
    assert verify(logs, "logs").access_key_id == KEY
    assert verify(logs, None).access_key_id == KEY  # an unknown operation: any of Lamina's
    with pytest.raises(InvalidSignature) as e:
        verify(logs, "lambda")
    assert e.value.message == "Credential should be scoped to correct service: 'lambda'. "


def test_authorization_header_layouts() -> None:
    arrived = wire(sign(AWSRequest("GET", f"http://{HOST}/f")))
    headers = dict(arrived.headers)
    credential, signed, sig = (
        part.split("=", 1)[1] for part in headers["authorization"].split(" ", 1)[1].split(", ")
    )
    assert signed == "host;x-amz-date"
    same = [
        f"AWS4-HMAC-SHA256 Credential={credential},SignedHeaders={signed},Signature={sig}",
        f" AWS4-HMAC-SHA256 Signature={sig} , Credential={credential},SignedHeaders={signed} ",
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=Host;;X-Amz-Date;, "
        f"Signature={sig}, Other=1",
        f"AWS4-HMAC-SHA256 Credential=x, Credential={credential}, SignedHeaders={signed}, "
        f"Signature={sig}",
    ]
    for auth in same:
        assert verify(replace(arrived, headers=headers | {"authorization": auth})), auth
    different = [
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature={sig}",
        # a header that was sent but not signed, named as signed
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=authorization;{signed}, "
        f"Signature={sig}",
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature={sig}0",
    ]
    for auth in different:
        with pytest.raises(InvalidSignature):
            verify(replace(arrived, headers=headers | {"authorization": auth}))
    with pytest.raises(IncompleteSignature):
        verify(replace(arrived, headers=headers | {"authorization": "aws4-hmac-sha256 " + sig}))


def test_odd_input_is_refused_not_crashed_on() -> None:
    arrived = wire(sign(AWSRequest("GET", f"http://{HOST}/f")))
    headers = dict(arrived.headers)
    auth = headers["authorization"]
    odd = [
        # A signature of non-hex text (compared as bytes, never a TypeError).
        replace(arrived, headers=headers | {"authorization": auth[:-4] + "ÿÿÿÿ"}),
        # A host no URL parser takes (it is compared, not parsed).
        replace(arrived, headers=headers | {"host": "[::1"}),
        # A fragment or a tab in the raw path is part of what was signed, not dropped.
        replace(arrived, raw_path="/f#x"),
        replace(arrived, raw_path="/f\t"),
        replace(arrived, raw_path="/f", query="#x=1"),
    ]
    for request in odd:
        with pytest.raises(InvalidSignature):
            verify(request)
    # A path that normalises to the signed one is the same request to SigV4.
    assert verify(replace(arrived, raw_path="/./f")).access_key_id == KEY


@pytest.mark.parametrize(
    "stamp",
    [
        "20260102T030405Z",
        "20241229T235959Z",
        "20240229T000000Z",
        "20230229T000000Z",
        "20261301T000000Z",
        "20260100T000000Z",
        "20260101T240000Z",
        "20260101T006000Z",
        "20260101T000060Z",
        "20260101T000061Z",
        "2026011T0000000Z",
        "2026-01-01T00:00",
        "20260101T000000z",
        "20260101 000000Z",
        "\u0662\u0660\u0662\u06660101T000000Z",  # Arabic-Indic digits: isdigit(), not ASCII
        "",
    ],
)
def test_date_parsing_decides_as_strptime(stamp: str) -> None:
    try:
        expected: dt.datetime | None = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.UTC
        )
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(IncompleteSignature):
            Verifier._parse_date(stamp)
    else:
        assert Verifier._parse_date(stamp) == expected


def test_the_request_as_the_server_hands_it_over() -> None:
    arrived = wire(sign(AWSRequest("POST", f"http://{HOST}/a%20b/f?x=1&y", data=b"{}")))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/a b/f",
        "raw_path": arrived.raw_path.encode(),
        "query_string": arrived.query.encode(),
        # ASGI servers lower-case names; a repeated header arrives once per line
        "headers": [(k.encode(), v.encode("latin-1")) for k, v in arrived.headers.items()]
        + [(b"x-repeated", b"a"), (b"X-Repeated", b"b")],
    }
    request = signed_request(scope, b"{}")
    assert request.headers["x-repeated"] == "a,b"
    assert (request.raw_path, request.query) == ("/a%20b/f", "x=1&y")
    assert verify(request).access_key_id == KEY
