"""`auth.canonical` against AWS's published SigV4 test vectors and, over a generated table of
requests, against the canonical requests botocore's own signer computes (how the verifier
built them before it built them itself)."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders

from lamina.auth.canonical import (
    canonical_path,
    canonical_query,
    canonical_request,
    signature,
    signing_key,
    string_to_sign,
)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# -- AWS's SigV4 test suite ------------------------------------------------------------------
# The "Signature Version 4 test suite" of the AWS General Reference: credentials AKIDEXAMPLE,
# 20150830T123600Z, us-east-1, service "service", host example.amazonaws.com.
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_DATE = "20150830T123600Z"
VANILLA = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
UNRESERVED = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUITE: list[tuple[str, str, str, str, dict[str, str], bytes, str]] = [
    # name, method, path, query, extra headers (as parsed, repeated ones joined), body, sig
    ("get-vanilla", "GET", "/", "", {}, b"", VANILLA),
    ("get-vanilla-empty-path", "GET", "", "", {}, b"", VANILLA),
    (
        "get-vanilla-query-order-key-case",
        "GET",
        "/",
        "Param2=value2&Param1=value1",
        {},
        b"",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    (
        "get-vanilla-query-order-key",
        "GET",
        "/",
        "Param1=value2&Param1=value1",
        {},
        b"",
        "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
    ),
    (
        "get-vanilla-query-order-value",
        "GET",
        "/",
        "Param1=value2&Param1=Value1",
        {},
        b"",
        "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
    ),
    (
        "get-vanilla-query-unreserved",
        "GET",
        "/",
        f"{UNRESERVED}={UNRESERVED}",
        {},
        b"",
        "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    ),
    (
        "get-vanilla-utf8-query",
        "GET",
        "/",
        "%E1%88%B4=bar",
        {},
        b"",
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    ),
    (
        "get-unreserved",
        "GET",
        f"/{UNRESERVED}",
        "",
        {},
        b"",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    ("get-relative", "GET", "/example/..", "", {}, b"", VANILLA),
    ("get-relative-relative", "GET", "/example1/example2/../..", "", {}, b"", VANILLA),
    ("get-slash", "GET", "//", "", {}, b"", VANILLA),
    ("get-slash-dot-slash", "GET", "/./", "", {}, b"", VANILLA),
    (
        "get-slash-pointless-dot",
        "GET",
        "/./example",
        "",
        {},
        b"",
        "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
    ),
    (
        "get-slashes",
        "GET",
        "//example//",
        "",
        {},
        b"",
        "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
    ),
    (
        "get-header-value-trim",
        "GET",
        "/",
        "",
        {"my-header1": "value1", "my-header2": '"a   b   c"'},
        b"",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    (
        "get-header-key-duplicate",
        "GET",
        "/",
        "",
        {"my-header1": "value2,value2,value1"},
        b"",
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    ),
    (
        "get-header-value-order",
        "GET",
        "/",
        "",
        {"my-header1": "value4,value1,value3,value2"},
        b"",
        "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
    ),
    (
        "post-vanilla",
        "POST",
        "/",
        "",
        {},
        b"",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    (
        "post-vanilla-query",
        "POST",
        "/",
        "Param1=value1",
        {},
        b"",
        "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    ),
    (
        "post-header-value-case",
        "POST",
        "/",
        "",
        {"my-header1": "VALUE1"},
        b"",
        "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    ),
    (
        "post-x-www-form-urlencoded",
        "POST",
        "/",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        b"Param1=value1",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    ),
]


@pytest.mark.parametrize("case", SUITE, ids=[c[0] for c in SUITE])
def test_aws_signature_v4_test_suite(case: tuple[Any, ...]) -> None:
    _, method, path, query, extra, body, expected = case
    headers = {"host": "example.amazonaws.com", "x-amz-date": SUITE_DATE, **extra}
    canonical = canonical_request(
        method, path, query, headers, sorted(headers), hashlib.sha256(body).hexdigest()
    )
    key = signing_key(SUITE_SECRET, SUITE_DATE[:8], "us-east-1", "service")
    to_sign = string_to_sign(SUITE_DATE, "20150830/us-east-1/service/aws4_request", canonical)
    assert hmac.digest(key, to_sign, "sha256").hex() == expected
    for _ in range(2):  # the signer's key is made once, then reused
        assert signature(SUITE_SECRET, "20150830", "us-east-1", "service", to_sign) == expected


def test_canonical_pieces() -> None:
    # Non-S3 services encode the (already encoded) path once more.
    assert canonical_path("/2015-03-31/functions/a%3A1/invocations") == (
        "/2015-03-31/functions/a%253A1/invocations"
    )
    assert canonical_path("/a b/ü") == "/a%20b/%C3%BC"
    assert canonical_path("") == "/"
    assert canonical_path("/a/./b/../../c//d/") == "/c/d/"
    assert canonical_path("/.hidden/x") == "/.hidden/x"
    assert canonical_query("") == ""
    assert canonical_query("Qualifier=1") == "Qualifier=1"
    assert canonical_query("flag") == "flag="
    assert canonical_query("b=2&a=&a&=x&a=1") == "=x&a=&a=&a=1&b=2"


# -- equivalence with botocore's signer --------------------------------------------------------


class _BotocoreCanonical(SigV4Auth):
    """botocore's signer told which headers were signed and what the payload hash is: the
    verifier's canonicalisation before `auth.canonical` (the oracle here)."""

    def __init__(self, signed: Sequence[str], payload_hash: str) -> None:
        super().__init__(None, "lambda", "us-east-1")  # type: ignore[arg-type]
        self._signed = signed
        self._payload_hash = payload_hash

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        return headers

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def botocore_canonical(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    signed: Sequence[str],
    payload_hash: str,
) -> str:
    url = f"http://{headers.get('host', 'localhost')}{raw_path}"
    if query:
        url += "?" + query
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    return str(_BotocoreCanonical(signed, payload_hash).canonical_request(request))


# Pieces of paths, queries and header values: unreserved and reserved characters, raw and
# percent-encoded (either case), UTF-8 as it arrives (latin-1 decoded bytes), dot segments.
_PATH_BITS = [
    *"aZ09-._~",
    *"!$&'()*+,;=:@",
    " ",
    "%20",
    "%2F",
    "%2f",
    "%3A",
    "%25",
    "%E2%82%AC",
    "%e2%82%ac",
    "\xc3\xa9",  # é sent as raw UTF-8 bytes
    "ü",
    "€",
    ".",
    "..",
    "",
    "function:name",
    "2015-03-31",
    "invocations",
]
_QUERY_BITS = [
    *"aZ09-._~",
    "%20",
    "+",
    "%2B",
    "%3D",
    "%26",
    "%E1%88%B4",
    "%e1%88%b4",
    "X-Amz-Date",
    "Qualifier",
    "$LATEST",
    "%24LATEST",
    "",
    "=",
    "ü",
]
_VALUE_BITS = [
    "a",
    "B",
    " ",
    "  ",
    "\t",
    "\xa0",
    ",",
    '"',
    "x y",
    "VALUE",
    "value",
    "application/json",
    "é",
    "1",
    ";",
    ":",
]
_HOSTS = ["127.0.0.1:8484", "localhost", "lambda.us-east-1.amazonaws.com", "[::1]:8484"]
_HEADER_NAMES = ["content-type", "x-amz-target", "my-header", "x-amz-security-token", "accept"]


def _random_case(rng: random.Random) -> tuple[str, str, str, dict[str, str], list[str], str]:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "get", "Patch"])
    segments = ["".join(rng.choices(_PATH_BITS, k=rng.randint(0, 4))) for _ in range(4)]
    path = "/" + "/".join(segments[: rng.randint(0, 4)])
    if rng.random() < 0.2:
        path += "/"
    pairs = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5])):
        key = "".join(rng.choices(_QUERY_BITS, k=rng.randint(0, 3)))
        value = "".join(rng.choices(_QUERY_BITS, k=rng.randint(0, 3)))
        pairs.append(key if rng.random() < 0.1 else f"{key}={value}")
    if pairs and rng.random() < 0.3:
        pairs.append(pairs[0])  # a repeated key (and value)
    query = "&".join(pairs)
    headers = {"host": rng.choice(_HOSTS), "x-amz-date": "20260101T000000Z"}
    for name in rng.sample(_HEADER_NAMES, rng.randint(0, 3)):
        # Values as an HTTP parser hands them over: ends trimmed, repeats joined with ",".
        values = ["".join(rng.choices(_VALUE_BITS, k=rng.randint(0, 5))).strip(" \t")]
        values += [values[0].upper()] * rng.randint(0, 2)
        headers[name] = ",".join(values)
    signed = [name for name in headers if rng.random() < 0.8] + ["host"]
    if rng.random() < 0.2:
        signed.append("x-absent")  # named as signed, but not sent
    if rng.random() < 0.1:
        signed.append(rng.choice(signed))  # named twice
    rng.shuffle(signed)
    body_hash = hashlib.sha256(path.encode()).hexdigest()
    payload = rng.choice([EMPTY_SHA256, "UNSIGNED-PAYLOAD", body_hash])
    return method, path, query, headers, signed, payload


def test_canonical_requests_match_botocores_over_a_generated_table() -> None:
    rng = random.Random(19)
    for _ in range(4000):
        case = _random_case(rng)
        assert canonical_request(*case) == botocore_canonical(*case), case


def test_string_to_sign_matches_botocores() -> None:
    request = AWSRequest(method="GET", url="http://127.0.0.1:8484/x")
    request.context["timestamp"] = "20260101T000000Z"
    signer = SigV4Auth(None, "lambda", "us-east-1")  # type: ignore[arg-type]
    canonical = "GET\n/x\n\nhost:127.0.0.1:8484\n\nhost\n" + EMPTY_SHA256 + "\nü"
    expected = signer.string_to_sign(request, canonical).encode()
    scope = "20260101/us-east-1/lambda/aws4_request"
    assert string_to_sign("20260101T000000Z", scope, canonical) == expected
