"""Lamina's code signature format: signing and verifying each key kind, what a signature
covers, and zips with comments of their own."""

from __future__ import annotations

import io
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lamina import code_signature as cs

PROFILE = "arn:aws:signer:us-east-1:000000000000:/signing-profiles/p/v1"


def _zip(content: str, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # A fixed time: two zips of the same content are the same bytes.
        zf.writestr(zipfile.ZipInfo("app.py", date_time=(2024, 1, 1, 0, 0, 0)), content)
        zf.comment = comment
    return buf.getvalue()


KEYS = [
    ed25519.Ed25519PrivateKey.generate(),
    ec.generate_private_key(ec.SECP256R1()),
    ec.generate_private_key(ec.SECP384R1()),
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
]


@pytest.mark.parametrize("key", KEYS, ids=["ed25519", "p256", "p384", "rsa"])
def test_a_signed_zip_verifies_and_unzips_unchanged(key: cs.PrivateKey) -> None:
    original = _zip("print(1)\n")
    signed = cs.sign(original, key, PROFILE, 100, 200)
    with zipfile.ZipFile(io.BytesIO(signed)) as zf:
        assert zf.read("app.py") == b"print(1)\n"
    unsigned, sig = cs.split(signed)
    assert sig is not None
    assert (sig.profile, sig.signed, sig.expires) == (PROFILE, 100, 200)
    assert unsigned == original
    assert cs.verify(key.public_key(), unsigned, sig)
    # Another key, other content, or altered fields do not verify.
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert not cs.verify(other, unsigned, sig)
    assert not cs.verify(key.public_key(), cs.split(_zip("print(2)\n"))[0], sig)
    for changed in ({"expires": 10**10}, {"profile": PROFILE + "x"}, {"job": "j"}):
        forged = cs.Signature(**{**sig.__dict__, **changed})
        assert not cs.verify(key.public_key(), unsigned, forged)


def test_comments_are_replaced_and_unsigned_zips_have_no_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    # A comment that itself holds an end-of-directory signature's bytes.
    commented = _zip("x", comment=b"note PK\x05\x06 inside")
    assert cs.split(commented) == (_zip("x"), None)
    signed = cs.sign(commented, key, PROFILE, 1, 2)
    again = cs.sign(signed, key, PROFILE, 1, 3)  # re-signing replaces the signature
    unsigned, sig = cs.split(again)
    assert unsigned == _zip("x") and sig is not None and sig.expires == 3
    assert cs.verify(key.public_key(), unsigned, sig)


def test_malformed_signatures_and_non_zips() -> None:
    with pytest.raises(cs.MalformedSignatureError):
        cs.split(_zip("x", comment=cs.PREFIX + b"not base64 json"))
    with pytest.raises(ValueError):
        cs.split(b"not a zip at all")
    with pytest.raises(ValueError):
        cs.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
