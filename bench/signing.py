"""SigV4 signing for the benchmarks, which measure Lamina with authentication on (its default).

Two ways, both producing requests Lamina verifies exactly as it verifies boto3's:

* `signed_headers`: botocore's own `SigV4Auth` signs one request. AWS accepts a signed request
  again, unchanged, for as long as its `X-Amz-Date` is within 5 minutes of the server's clock
  (SigV4 has no nonce; replay protection is the time window, and TLS in front of it), and so
  does Lamina: a load tool that cannot sign (wrk) replays one signed request, with
  `wrk_script` writing the Lua that sends its headers.
* `FastSigner`: per-request signing for clients whose bodies differ per request (bench/async.py
  numbers each event). botocore's signer costs about 100 µs of Python per request, which would
  make the client the bottleneck; this one builds the same canonical request for one fixed
  request shape, with the signing key derived once per day, so a request costs two SHA-256s
  and one HMAC (a few µs). `FastSigner.self_check` compares it with botocore's signature for
  the same request and time, so the two cannot drift apart silently.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

#: the admin key every benchmark starts Lamina with (`lamina serve --admin-key ID:SECRET`)
ADMIN_KEY = ("test", "test")
REGION = "us-east-1"
SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
#: AWS (and Lamina) refuse a signature whose X-Amz-Date is further than this from their clock
REPLAY_WINDOW_S = 300.0


def admin_key_args() -> list[str]:
    """`lamina serve` arguments that make `ADMIN_KEY` its admin key."""
    return ["--admin-key", f"{ADMIN_KEY[0]}:{ADMIN_KEY[1]}"]


def signed_headers(
    method: str, url: str, body: bytes, headers: Mapping[str, str]
) -> dict[str, str]:
    """`headers` plus the SigV4 ones (X-Amz-Date, Authorization) for one request, signed by
    botocore with `ADMIN_KEY` for `lambda` in `REGION`: what boto3 would send."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(*ADMIN_KEY), SERVICE, REGION).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def _lua_string(value: str) -> str:
    # Header values and JSON bodies here are ASCII without newlines; escape what Lua needs.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(path: Path, method: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Write a wrk Lua script sending one request (method, body, headers) over and over.

    wrk adds Host (from the URL, as the request was signed with) and Content-Length itself.
    """
    lines = [f"wrk.method = {_lua_string(method)}", f"wrk.body = {_lua_string(body.decode())}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length"):
            continue
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    path.write_text("\n".join(lines) + "\n")


class FastSigner:
    """Signs many requests of one shape (method, path, fixed headers; the body varies) with
    `ADMIN_KEY`, as botocore would sign them (see the module docstring).

    The signed headers are `host`, `x-amz-date` and every header in `fixed` (names
    lower-case, values without surrounding blanks); `query` is the canonical query string
    (pairs sorted, names and values URI-encoded; empty for none) and is sent as given.
    """

    def __init__(
        self, method: str, path: str, host: str, fixed: Mapping[str, str], query: str = ""
    ) -> None:
        self._method = method
        self._path = path
        self._query = query
        self._host = host
        self._fixed = dict(fixed)
        names = sorted([*self._fixed, "host", "x-amz-date"])
        self._signed = ";".join(names)
        self._names = names
        self._day = ""
        self._key = b""
        self._second = -1
        self._amz_date = ""

    def _date(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._amz_date

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = f"AWS4{ADMIN_KEY[1]}".encode()
            for part in (day, REGION, SERVICE, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day, self._key = day, key
        return self._key

    def headers(self, body: bytes, now: float | None = None) -> dict[str, str]:
        """X-Amz-Date and Authorization for a request with `body`, signed at `now`."""
        amz_date = self._date(time.time() if now is None else now)
        day = amz_date[:8]
        values = {**self._fixed, "host": self._host, "x-amz-date": amz_date}
        canonical = "\n".join(
            [
                self._method,
                self._path,
                self._query,
                *(f"{name}:{values[name]}" for name in self._names),
                "",
                self._signed,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{day}/{REGION}/{SERVICE}/aws4_request"
        to_sign = "\n".join(
            [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        authorization = (
            f"{ALGORITHM} Credential={ADMIN_KEY[0]}/{scope}, "
            f"SignedHeaders={self._signed}, Signature={signature}"
        )
        return {"X-Amz-Date": amz_date, "Authorization": authorization}

    def self_check(self, body: bytes) -> None:
        """Raise `AssertionError` unless botocore signs `body` the same way at the same time."""
        url = f"http://{self._host}{self._path}" + (f"?{self._query}" if self._query else "")
        theirs = signed_headers(self._method, url, body, self._fixed)
        stamp = time.strptime(theirs["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        ours = self.headers(body, now=float(calendar.timegm(stamp)))
        if ours["Authorization"] != theirs["Authorization"]:
            raise AssertionError(
                f"FastSigner disagrees with botocore:\n {ours['Authorization']}\n "
                f"{theirs['Authorization']}"
            )
