"""AWS Signature Version 4 verification, for every request that speaks an AWS protocol.

Two forms are accepted, as AWS accepts them: the `Authorization` header
(`AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
SignedHeaders=<a;b>, Signature=<hex>`) and the presigned query string (`X-Amz-Algorithm`,
`X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`).

The canonical request is built straight from what arrived (`auth.canonical`: the raw path and
query, the headers the client says it signed), by the rules botocore signs with; its unit tests
hold it to botocore's own canonical requests, so what boto3 and the AWS CLI sign is what is
checked. Every request is checked in full; what is cached is only what does not depend on the
request: the signing key per (secret, date, region, service), which saves four of the five
HMACs, the time an `X-Amz-Date` stamp names, and the key store's principals. A request costs
two SHA-256s and one HMAC (about 3x that floor in all: see bench/sigv4.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol
from urllib.parse import parse_qsl

from lamina.auth.canonical import ALGORITHM, canonical_request, signature, string_to_sign
from lamina.auth.principal import Principal
from lamina.errors import LaminaError

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: how far a signed request's time may be from the server's, either way (AWS: 5 minutes)
MAX_SKEW = dt.timedelta(minutes=5)
#: the longest a presigned URL may live (AWS: 7 days)
MAX_EXPIRES_S = 7 * 24 * 3600
#: the services boto3 signs Lamina's APIs for (`lambda` also signs Lamina's own endpoints)
SERVICES = ("lambda", "logs", "events")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_PART = re.compile(r"\s*(\w+)=([^,\s]*)\s*")
#: the Authorization header as SDKs lay it out (anything else is read part by part)
_AUTH_LAYOUT = re.compile(
    ALGORITHM + r" Credential=([^,\s]*), ?SignedHeaders=([^,\s]*), ?Signature=([^,\s]*)"
)
#: a SignedHeaders list that is already lower-case, trimmed and without empty names
_SIGNED_LAYOUT = re.compile(r"[a-z0-9-]+(?:;[a-z0-9-]+)*")


class AuthError(LaminaError):
    """A request whose signature does not prove who sent it; always 403, as AWS answers."""

    status = 403
    fault = "User"


class MissingAuthenticationToken(AuthError):
    error_type = "MissingAuthenticationTokenException"

    def __init__(self) -> None:
        super().__init__("Missing Authentication Token")


class UnrecognizedClient(AuthError):
    error_type = "UnrecognizedClientException"

    def __init__(self) -> None:
        super().__init__("The security token included in the request is invalid.")


class InvalidSignature(AuthError):
    error_type = "InvalidSignatureException"
    MISMATCH = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details."
    )

    def __init__(self, message: str = MISMATCH) -> None:
        super().__init__(message)


class IncompleteSignature(AuthError):
    error_type = "IncompleteSignatureException"


class ExpiredToken(AuthError):
    error_type = "ExpiredTokenException"

    def __init__(self) -> None:
        super().__init__("The security token included in the request is expired")


class SecretLookup(Protocol):
    """What the verifier needs from a key store (`auth.keys.KeyStore` is one)."""

    def secret_for(self, access_key_id: str, session_token: str | None) -> str:
        """The secret of a live key; raises `UnrecognizedClient` / `ExpiredToken`."""
        ...

    def principal(self, access_key_id: str) -> Principal:
        """The caller an access key (or session) stands for."""
        ...


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs of one HTTP request, as it arrived."""

    method: str
    #: the path as sent, still percent-encoded (ASGI's `raw_path`)
    raw_path: str
    #: the query string as sent
    query: str
    #: header names lower-cased; a repeated header's values joined with ","
    headers: Mapping[str, str]
    body: bytes


def _auth_parts(auth: str) -> dict[str, str]:
    """The `name=value` parts of an Authorization header of SigV4's algorithm."""
    fast = _AUTH_LAYOUT.fullmatch(auth)
    if fast is not None:
        # The layout every SDK sends: the parts the general reading below would find.
        return {"Credential": fast[1], "SignedHeaders": fast[2], "Signature": fast[3]}
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(f"Unsupported authorization type: {algorithm[:32]}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        m = _AUTH_PART.fullmatch(item)
        if m:
            parts[m[1]] = m[2]
    return parts


def _signed_names(signed_headers: str) -> list[str]:
    """The header names a `SignedHeaders` list names, lower-cased, empty ones left out."""
    if _SIGNED_LAYOUT.fullmatch(signed_headers):
        return signed_headers.split(";")  # already what the general reading makes of it
    return [h.strip().lower() for h in signed_headers.split(";") if h.strip()]


@lru_cache(maxsize=256)
def _parse_amz_date(amz_date: str) -> dt.datetime | None:
    """The time an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`) names, or None if it names none. Cached:
    every request signed in the same second carries the same stamp."""
    # The form every client sends, read by hand (strptime costs more than the rest of the
    # check); anything else goes to strptime, which decides as it always has.
    if (
        len(amz_date) == 16
        and amz_date.isascii()
        and amz_date[8] == "T"
        and amz_date[15] == "Z"
        and amz_date[:8].isdigit()
        and amz_date[9:15].isdigit()
    ):
        try:
            return dt.datetime(
                int(amz_date[0:4]),
                int(amz_date[4:6]),
                int(amz_date[6:8]),
                int(amz_date[9:11]),
                int(amz_date[11:13]),
                int(amz_date[13:15]),
                tzinfo=dt.UTC,
            )
        except ValueError:
            pass
    try:
        return dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


class Verifier:
    """Checks SigV4 signatures against the keys `keys` knows, for one region."""

    def __init__(
        self,
        keys: SecretLookup,
        region: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._keys = keys
        self._region = region
        self._now = now

    @staticmethod
    def is_signed(request: SignedRequest) -> bool:
        """Whether the request carries a signature of either form (else it is anonymous)."""
        return "authorization" in request.headers or "X-Amz-Signature" in request.query

    def verify(self, request: SignedRequest, service: str | None) -> Principal:
        """The principal that signed `request`, or an `AuthError` saying why not.

        `service` is the API the request addresses: its credential scope must name it (a
        Lambda request signed for `logs` is refused, as AWS refuses it). None, for a request
        whose API is unknown (it will be answered UnknownOperation), takes any of `SERVICES`.
        """
        services = SERVICES if service is None else (service,)
        auth = request.headers.get("authorization")
        if auth is not None:
            return self._verify_header(request, auth, services)
        if "X-Amz-Signature" in request.query:
            return self._verify_query(request, services)
        raise MissingAuthenticationToken()

    def _verify_header(
        self, request: SignedRequest, auth: str, services: tuple[str, ...]
    ) -> Principal:
        parts = _auth_parts(auth)
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
        if missing:
            raise IncompleteSignature(
                " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
                + f" Authorization={auth[:200]}"
            )
        amz_date = request.headers.get("x-amz-date")
        if amz_date is None:
            raise IncompleteSignature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                f"'Date' header. Authorization={auth[:200]}"
            )
        token = request.headers.get("x-amz-security-token")
        body_hash = hashlib.sha256(request.body).hexdigest()
        sent_hash = request.headers.get("x-amz-content-sha256")
        if sent_hash is not None and sent_hash != body_hash:
            # UNSIGNED-PAYLOAD is for presigned URLs only: every header-signed body is hashed.
            raise InvalidSignature()
        when = self._parse_date(amz_date)
        self._check_skew(amz_date, when)
        return self._check(
            request,
            parts["Credential"],
            amz_date,
            parts["SignedHeaders"],
            parts["Signature"],
            token,
            (body_hash,),
            services,
            query=request.query,
        )

    def _verify_query(self, request: SignedRequest, services: tuple[str, ...]) -> Principal:
        params = dict(parse_qsl(request.query, keep_blank_values=True))
        needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders")
        missing = [k for k in needed if k not in params]
        if missing or params.get("X-Amz-Algorithm") != ALGORITHM:
            raise IncompleteSignature(
                "AWS query-string parameters must include "
                + ", ".join(f"'{k}'" for k in (*needed, "X-Amz-Signature"))
                + ". Re-examine the query-string parameters."
            )
        amz_date = params["X-Amz-Date"]
        when = self._parse_date(amz_date)
        try:
            expires = int(params.get("X-Amz-Expires", str(MAX_EXPIRES_S)))
        except ValueError:
            raise IncompleteSignature("X-Amz-Expires must be a number of seconds") from None
        if not 0 < expires <= MAX_EXPIRES_S:
            raise IncompleteSignature(
                f"X-Amz-Expires must be between 1 and {MAX_EXPIRES_S} seconds"
            )
        now = self._now()
        if now > when + dt.timedelta(seconds=expires):
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - dt.timedelta(seconds=expires)).strftime(_AMZ_DATE)} "
                f"({now.strftime(_AMZ_DATE)} - {expires} sec.)"
            )
        if when - now > MAX_SKEW:
            self._check_skew(amz_date, when)
        # The canonical query string is every parameter but the signature itself.
        query = "&".join(
            p for p in request.query.split("&") if not p.startswith("X-Amz-Signature=")
        )
        body_hash = hashlib.sha256(request.body).hexdigest()
        # botocore's query signer hashes the (empty) body; other signers send
        # UNSIGNED-PAYLOAD, which a presigned URL may: either proves the key.
        payload_hashes: tuple[str, ...] = (body_hash, UNSIGNED_PAYLOAD)
        sent_hash = request.headers.get("x-amz-content-sha256")
        if sent_hash is not None:
            # A client that sends the header signs with it: it must be the body's hash or
            # say the body is unsigned, else a URL signed for one body would take another.
            # Any other value matches nothing (refused after the scope's checks, as before).
            payload_hashes = (sent_hash,) if sent_hash in payload_hashes else ()
        return self._check(
            request,
            params["X-Amz-Credential"],
            amz_date,
            params["X-Amz-SignedHeaders"],
            params.get("X-Amz-Signature", ""),
            params.get("X-Amz-Security-Token"),
            payload_hashes,
            services,
            query=query,
        )

    def _check(
        self,
        request: SignedRequest,
        credential: str,
        amz_date: str,
        signed_headers: str,
        sent_signature: str,
        token: str | None,
        payload_hashes: tuple[str, ...],
        services: tuple[str, ...],
        *,
        query: str,
    ) -> Principal:
        scope = credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise IncompleteSignature(
                f"Credential should be scoped to a valid region. Credential={credential[:200]}"
            )
        key_id, date, region, service, _ = scope
        if date != amz_date[:8]:
            raise InvalidSignature(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if region != self._region:
            raise InvalidSignature(
                f"Credential should be scoped to a valid region. Credential={credential[:200]}"
            )
        if service not in services:
            # AWS's wording, which names the one service the endpoint answers for.
            raise InvalidSignature(
                "Credential should be scoped to correct service: "
                + " or ".join(f"'{s}'" for s in services)
                + ". "
            )
        signed = _signed_names(signed_headers)
        if "host" not in signed:
            raise InvalidSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        secret = self._keys.secret_for(key_id, token)
        scope_text = f"{date}/{region}/{service}/aws4_request"
        # Compared as bytes: a signature is hex, but what arrived may be any text.
        sent = sent_signature.encode()
        for payload_hash in payload_hashes:
            canonical = canonical_request(
                request.method, request.raw_path, query, request.headers, signed, payload_hash
            )
            to_sign = string_to_sign(amz_date, scope_text, canonical)
            expected = signature(secret, date, region, service, to_sign).encode()
            if hmac.compare_digest(expected, sent):
                return self._keys.principal(key_id)
        raise InvalidSignature()

    @staticmethod
    def _parse_date(amz_date: str) -> dt.datetime:
        when = _parse_amz_date(amz_date)
        if when is None:
            raise IncompleteSignature(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date[:32]}'. See "
                "http://en.wikipedia.org/wiki/ISO_8601"
            )
        return when

    def _check_skew(self, amz_date: str, when: dt.datetime) -> None:
        now = self._now()
        skew = when - now
        if skew < -MAX_SKEW:
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} - 5 min.)"
            )
        if skew > MAX_SKEW:
            raise InvalidSignature(
                f"Signature not yet current: {amz_date} is still later than "
                f"{(now + MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} + 5 min.)"
            )
