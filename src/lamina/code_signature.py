"""Lamina's code signature: how a signed deployment package carries its signature.

AWS Signer hands back a signed copy of the zip, and Lambda finds the signature in the package
itself. Lamina does the same with a format of its own, kept in the zip's archive comment (the
comment is not content: unzipping ignores it, and the function's files are untouched):

    lamina-code-signature-v1:<base64url of a JSON object>

The object holds `profile` (the signing profile version ARN, which names the trusted public
key), `job` (an id for this signing, reported as the function's SigningJobArn), `signed` and
`expires` (Unix seconds) and `signature` (base64url). What is signed is the text

    lamina-code-signature-v1\\n<sha256 hex of the unsigned zip>\\n<profile>\\n<job>\\n
    <signed>\\n<expires>

where the unsigned zip is the package with an empty comment: signing replaces the comment,
verification puts the empty one back and hashes. So every byte of content, the profile and
the validity period are covered, and a package stays signed only as it was signed.

Keys: Ed25519, ECDSA (P-256/P-384/P-521, SHA-256 digest) or RSA (PKCS#1 v1.5, SHA-256), PEM.
This module is a leaf: the server verifies with it, `lamina sign` signs with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PREFIX = b"lamina-code-signature-v1:"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_COMMENT_MAX = 0xFFFF

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class MalformedSignatureError(ValueError):
    """The package carries something that claims to be a Lamina signature but cannot be read."""


@dataclass(frozen=True)
class Signature:
    """A package's signature, as read from it (not yet verified)."""

    profile: str
    job: str
    signed: int
    expires: int
    value: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _eocd(data: bytes) -> int:
    """The offset of the zip's end-of-central-directory record (the one whose comment runs
    to the end of the data); ValueError if there is none."""
    start = max(0, len(data) - _EOCD_SIZE - _COMMENT_MAX)
    at = len(data) - _EOCD_SIZE
    while at >= start:
        at = data.rfind(_EOCD, start, at + 4)
        if at < 0:
            break
        length = int.from_bytes(data[at + 20 : at + 22], "little")
        if at + _EOCD_SIZE + length == len(data):
            return at
        at -= 1
    raise ValueError("not a zip archive")


def split(data: bytes) -> tuple[bytes, Signature | None]:
    """(the package with an empty comment, its signature or None if it is unsigned).
    MalformedSignatureError for a comment that starts like a signature but is not one;
    ValueError for data that is not a zip at all."""
    at = _eocd(data)
    comment = data[at + _EOCD_SIZE :]
    unsigned = data[: at + 20] + b"\x00\x00"
    if not comment.startswith(PREFIX):
        return unsigned, None
    try:
        body: Any = json.loads(_unb64(comment[len(PREFIX) :].decode("ascii")))
        sig = Signature(
            profile=body["profile"],
            job=body["job"],
            signed=body["signed"],
            expires=body["expires"],
            value=_unb64(body["signature"]),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise MalformedSignatureError("the package's signature cannot be read") from e
    if not (
        isinstance(sig.profile, str)
        and isinstance(sig.job, str)
        and type(sig.signed) is int
        and type(sig.expires) is int
    ):
        raise MalformedSignatureError("the package's signature cannot be read")
    return unsigned, sig


def signed_text(unsigned: bytes, profile: str, job: str, signed: int, expires: int) -> bytes:
    """What the signature covers (see the module's docstring)."""
    digest = hashlib.sha256(unsigned).hexdigest()
    return f"lamina-code-signature-v1\n{digest}\n{profile}\n{job}\n{signed}\n{expires}".encode()


def load_public_key(pem: bytes) -> PublicKey:
    """A PEM public key of a kind Lamina verifies with; ValueError otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except UnsupportedAlgorithm as e:
        raise ValueError(f"unsupported key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError("the key must be Ed25519, ECDSA or RSA")
    return key


def load_private_key(pem: bytes) -> PrivateKey:
    """A PEM private key (unencrypted) of a kind Lamina signs with; ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except UnsupportedAlgorithm as e:
        raise ValueError(f"unsupported key: {e}") from None
    except TypeError as e:  # an encrypted key, given no password
        raise ValueError(str(e)) from None
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise ValueError("the key must be Ed25519, ECDSA or RSA")
    return key


def verify(key: PublicKey, unsigned: bytes, sig: Signature) -> bool:
    """Whether `sig` is `key`'s signature of this unsigned package and its own fields."""
    text = signed_text(unsigned, sig.profile, sig.job, sig.signed, sig.expires)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig.value, text)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig.value, text, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(sig.value, text, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def sign(data: bytes, key: PrivateKey, profile: str, signed: int, expires: int) -> bytes:
    """The package signed by `key` for `profile`, valid from `signed` until `expires` (Unix
    seconds). Any comment the zip had is replaced. ValueError if `data` is not a zip."""
    unsigned, _ = split_any(data)
    job = uuid.uuid4().hex
    text = signed_text(unsigned, profile, job, signed, expires)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        value = key.sign(text)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.sign(text, ec.ECDSA(hashes.SHA256()))
    else:
        value = key.sign(text, padding.PKCS1v15(), hashes.SHA256())
    body = {
        "profile": profile,
        "job": job,
        "signed": signed,
        "expires": expires,
        "signature": _b64(value),
    }
    comment = PREFIX + _b64(json.dumps(body, separators=(",", ":")).encode()).encode()
    if len(comment) > _COMMENT_MAX:
        raise ValueError("the signature does not fit in a zip comment")
    return unsigned[:-2] + len(comment).to_bytes(2, "little") + comment


def split_any(data: bytes) -> tuple[bytes, Signature | None]:
    """`split`, but a malformed signature is dropped rather than refused (for re-signing)."""
    try:
        return split(data)
    except MalformedSignatureError:
        at = _eocd(data)
        return data[: at + 20] + b"\x00\x00", None
