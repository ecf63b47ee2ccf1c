"""The key store and the SigV4 verifier without a server: sessions, sealing, principals."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lamina.auth.keys import AUTH_DB, KeyStore, read_admin_key
from lamina.auth.principal import Principal
from lamina.auth.profile import _replace_section
from lamina.auth.sigv4 import (
    ExpiredToken,
    InvalidSignature,
    SignedRequest,
    UnrecognizedClient,
    Verifier,
)

ACCOUNT = "000000000000"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_sealed_and_survive_a_reopen(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, ACCOUNT)
    key_id, secret = store.create("alice")
    assert key_id.startswith("AKIA") and len(key_id) == 20 and len(secret) == 40
    store.close()
    assert (tmp_path / AUTH_DB).stat().st_mode & 0o777 == 0o600
    raw = sqlite3.connect(tmp_path / AUTH_DB).execute("SELECT sealed_secret FROM access_keys")
    assert secret.encode() not in raw.fetchone()[0]
    again = KeyStore(tmp_path, ACCOUNT)
    assert again.secret_for(key_id, None) == secret
    assert again.principal(key_id) == Principal(
        key_id, f"arn:aws:iam::{ACCOUNT}:user/alice", ACCOUNT
    )
    assert read_admin_key(tmp_path) is None
    again.set_admin("ADMINKEY", "admin-secret")
    assert read_admin_key(tmp_path) == ("ADMINKEY", "admin-secret")
    assert again.principal("ADMINKEY").admin
    again.set_admin("OTHERADMIN", "s")
    with pytest.raises(UnrecognizedClient):
        again.secret_for("ADMINKEY", None)
    assert again.delete(key_id) and not again.delete(key_id)


def test_principals_are_cached_until_the_key_changes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, ACCOUNT)
    key_id, _ = store.create("carol")
    first = store.principal(key_id)
    assert store.principal(key_id) is first  # built once, not per request
    policy = {"Version": "2012-10-17", "Statement": []}
    store.attach_policy(key_id, policy)
    assert store.principal(key_id).policies == (policy,)
    other_id, _ = store.create("dave")
    assert store.principal(other_id).arn.endswith(":user/dave")
    assert store.principal(key_id).policies == (policy,)
    store.delete(key_id)
    with pytest.raises(UnrecognizedClient):
        store.principal(key_id)
    store.create("carol-again", access_key_id=key_id, secret="new")
    again = store.principal(key_id)
    assert again.arn.endswith(":user/carol-again") and again.policies == ()
    store.close()


def test_sessions_need_their_token_and_expire(tmp_path: Path) -> None:
    clock = Clock()
    role = f"arn:aws:iam::{ACCOUNT}:role/service/worker"
    policy = {"Version": "2012-10-17", "Statement": []}
    store = KeyStore(tmp_path, ACCOUNT, role_policies=lambda arn: (policy,), clock=clock)
    key_id, secret, token, expiration = store.issue_session(role, "fn", 60)
    assert key_id.startswith("ASIA") and expiration == clock.now + 60
    assert store.secret_for(key_id, token) == secret
    with pytest.raises(UnrecognizedClient):
        store.secret_for(key_id, None)
    with pytest.raises(UnrecognizedClient):
        store.secret_for(key_id, token + "x")
    principal = store.principal(key_id)
    assert principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/worker/fn"
    assert principal.role_arn == role and principal.policies == (policy,)
    assert not principal.admin
    clock.now += 61
    with pytest.raises(ExpiredToken):
        store.secret_for(key_id, token)


def _verify(store: KeyStore, request: AWSRequest, now: dt.datetime) -> Principal:
    url = request.url.split("://", 1)[1]
    host, _, rest = url.partition("/")
    path, _, query = ("/" + rest).partition("?")
    signed = SignedRequest(
        method=request.method,
        raw_path=path,
        query=query,
        headers={k.lower(): v for k, v in request.headers.items()} | {"host": host},
        body=request.body or b"",
    )
    return Verifier(store, "us-east-1", now=lambda: now).verify(signed, "lambda")


def test_verifier_checks_region_and_signature(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, ACCOUNT)
    key_id, secret = store.create("bob")
    now = dt.datetime.now(dt.UTC)
    request = AWSRequest(method="GET", url="http://127.0.0.1:1/2015-03-31/functions?a=b%20c")
    botocore.auth.SigV4Auth(Credentials(key_id, secret), "lambda", "us-east-1").add_auth(request)
    assert _verify(store, request, now).access_key_id == key_id
    other = AWSRequest(method="GET", url="http://127.0.0.1:1/2015-03-31/functions")
    botocore.auth.SigV4Auth(Credentials(key_id, secret), "lambda", "eu-west-1").add_auth(other)
    with pytest.raises(InvalidSignature):
        _verify(store, other, now)
    wrong_service = AWSRequest(method="GET", url="http://127.0.0.1:1/2015-03-31/functions")
    botocore.auth.SigV4Auth(Credentials(key_id, secret), "s3", "us-east-1").add_auth(wrong_service)
    with pytest.raises(InvalidSignature):
        _verify(store, wrong_service, now)
    # A service Lamina serves, but not the one this request addresses.
    other_api = AWSRequest(method="GET", url="http://127.0.0.1:1/2015-03-31/functions")
    botocore.auth.SigV4Auth(Credentials(key_id, secret), "events", "us-east-1").add_auth(other_api)
    with pytest.raises(InvalidSignature) as e:
        _verify(store, other_api, now)
    assert e.value.message == "Credential should be scoped to correct service: 'lambda'. "


def test_profile_sections_are_replaced_not_clobbered() -> None:
    text = "# mine\n[default]\nregion = eu-west-1\n\n[lamina]\nold = 1\n[zz]\nx = 2\n"
    out = _replace_section(text, "lamina", ["new = 2"])
    assert "# mine" in out and "[default]" in out and "[zz]\nx = 2" in out
    assert "old = 1" not in out and out.endswith("[lamina]\nnew = 2\n")
