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
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


def canonical_path(raw_path: str) -> str:
    """The canonical URI of `raw_path` (the path as sent, percent-encoded)."""
    path = raw_path if _is_normal(raw_path) else _remove_dot_segments(raw_path)
    # quote() returns its input unchanged, quickly, when every character is safe.
    return quote(path, safe="/~")


def _is_normal(path: str) -> bool:
    # A path with a leading slash, no empty segment and no segment starting with a dot is
    # its own normal form: the common case skips the segment walk.
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
    values: dict[str, list[str]] = {}
    for name in signed:
        value = headers.get(name)
        if value is not None:
            # A name listed twice contributes its value twice, as botocore's signer has it.
            values.setdefault(name, []).append(value)
    names = sorted(values)
    lines = [f"{name}:{','.join(' '.join(v.split()) for v in values[name])}" for name in names]
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


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's signing key for a secret and a credential scope's date (`YYYYMMDD`), region
    and service. Cached (bounded, least recently used first out) because it is four of the
    five HMACs of a check and changes once a day per key; keyed by the secret itself, so a key
    deleted or replaced can never sign with a stale entry."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key
