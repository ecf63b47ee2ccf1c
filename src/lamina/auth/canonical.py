"""SigV4's canonical request, string to sign and signing key, from a request as it arrived.

The rules are AWS's for every service but S3 ("Create a canonical request for Signature
Version 4"), in the form botocore's `SigV4Auth` applies them, since boto3 and the AWS CLI are
the clients whose signatures must check:

- the path is the one sent, still percent-encoded, with dot segments and repeated slashes
  removed and then URI-encoded once more (every byte but unreserved characters and `/`): the
  double encoding of every service but S3, which the client applied to the same wire path;
- the query string is taken as sent (clients send it encoded already): its `key=value` pairs
  are sorted by key, then value, and a pair without `=` counts as `key=`;
- each signed header is `name:value`, its value's runs of whitespace folded to one space and
  its ends trimmed, a repeated header's values joined with `,`; names sorted; a name listed
  as signed but absent from the request is left out of both lists;
- the payload hash is the hex SHA-256 the caller passes (of the body, or a placeholder).

`tests/unit/test_sigv4_canonical.py` holds this module to botocore's own canonical requests
over a generated table of paths, queries and headers. Where a request is one no HTTP client
sends (a raw `#` or tab in the path, a host header with a `/`), the result is computed from
what arrived rather than from a URL rebuilt from it, so it can differ from botocore's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


#: a path that is its own canonical form: a leading slash, no empty segment, no segment
#: starting with a dot, only unreserved characters (Invoke's path, most of the API's)
_CANONICAL_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+/?|/")


def canonical_path(raw_path: str) -> str:
    """The canonical URI of `raw_path` (the path as sent, percent-encoded)."""
    if _CANONICAL_PATH.fullmatch(raw_path):
        return raw_path
    path = raw_path if _is_normal(raw_path) else _remove_dot_segments(raw_path)
    return quote(path, safe="/~")


def _is_normal(path: str) -> bool:
    # A path with a leading slash, no empty segment and no segment starting with a dot is
    # its own normal form: only the encoding is left to do.
    return path.startswith("/") and "//" not in path and "/." not in path


def _remove_dot_segments(path: str) -> str:
    """RFC 3986's dot-segment removal, which also drops empty segments (AWS collapses
    repeated slashes); a leading and a trailing slash are kept, and an empty path is `/`."""
    if not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    head = "/" if path[0] == "/" else ""
    tail = "/" if path[-1] == "/" and kept else ""
    return head + "/".join(kept) + tail


def canonical_query(query: str) -> str:
    """The canonical query string of `query`, as sent (already encoded)."""
    if not query:
        return ""
    if "&" not in query:
        # One parameter: nothing to sort (the common case of a qualified Invoke).
        return query if "=" in query else query + "="
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> tuple[str, str]:
    """The canonical headers block (each line ending in a newline; a lone newline if none)
    and the signed-headers list, for the lower-cased names in `signed` that `headers`
    (lower-cased names, a repeated header's values joined with `,`) holds."""
    names: list[str] = []
    lines: list[str] = []
    for name in sorted(signed):
        value = headers.get(name)
        if value is None:
            continue
        folded = " ".join(value.split())
        if names and names[-1] == name:
            # A name listed twice contributes its value twice, as botocore's signer has it.
            lines[-1] += "," + folded
        else:
            names.append(name)
            lines.append(f"{name}:{folded}")
    # The block ends with a newline even when empty, so the request has a blank line there.
    return "\n".join(lines) + "\n", ";".join(names)


def canonical_request(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    signed: Iterable[str],
    payload_hash: str,
) -> str:
    """The canonical request of one HTTP request (see the module's docstring)."""
    block, names = canonical_headers(headers, signed)
    return "\n".join(
        (
            method.upper(),
            canonical_path(raw_path),
            canonical_query(query),
            block,
            names,
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> bytes:
    """What the signing key signs: the algorithm, the request's time (`YYYYMMDDTHHMMSSZ`),
    the credential scope (`date/region/service/aws4_request`) and the canonical request's
    hash, UTF-8 encoded."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}".encode()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's signing key for a secret and a credential scope's date (`YYYYMMDD`), region
    and service."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def signature(secret: str, date: str, region: str, service: str, to_sign: bytes) -> str:
    """The signature (hex) of a string to sign, with the signing key of this secret and
    scope."""
    mac = _signer(secret, date, region, service).copy()
    mac.update(to_sign)
    return mac.hexdigest()


@lru_cache(maxsize=1024)
def _signer(secret: str, date: str, region: str, service: str) -> hmac.HMAC:
    # The signing key is four of a check's five HMACs and changes once a day per key, so it
    # is cached (bounded, least recently used out), as an HMAC already keyed with it: a copy
    # of one costs less than keying a new one. Keyed by the secret itself, so a key deleted
    # or replaced can never sign with a stale entry.
    return hmac.new(signing_key(secret, date, region, service), digestmod=hashlib.sha256)
