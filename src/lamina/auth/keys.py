"""Access keys and role sessions: who may sign requests to Lamina.

Keys live in `<data-dir>/auth.db` (SQLite, mode 0600) on a single machine, and in the shared
database in a cluster (`store.access_keys`), so that every node knows every key. A secret
access key cannot be stored as a hash, as a password would be: SigV4 proves a key by an HMAC
computed *with* the secret, so the verifier needs the secret itself. It is sealed instead
(`store.sealed.Sealer`, AES-GCM under the data directory's key, bound to its key id), so a
copy of the database alone reveals nothing.

Every key is read into memory when the store opens, so verifying a request never touches the
database; writes (`create`, `delete`, `attach_policy`) go to the database first and then to
memory, and the async wrappers run them off the event loop. In a cluster, `reload` reads the
keys again when another node changed them.

Role sessions (what a function's environment signs with) are kept in memory only: they are
issued to environments, which do not outlive the server either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from lamina.auth.principal import PolicyDocument, Principal
from lamina.auth.sigv4 import ExpiredToken, UnrecognizedClient
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.errors import ValidationError
from lamina.store.access_keys import AccessKeyRow, AccessKeyRows, access_keys
from lamina.store.engine import make_engine
from lamina.store.sealed import Sealer

log = logging.getLogger(__name__)

AUTH_DB = "auth.db"
#: the admin key's name (its ARN is `arn:aws:iam::<account>:user/admin`)
ADMIN_NAME = "admin"
_ID_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def new_key_id(prefix: str = "AKIA") -> str:
    """An AWS-style access key id: the prefix and 16 more of [A-Z0-9] (20 in all)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    """A 40-character secret access key, as AWS issues them."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def check_policy(document: Any) -> PolicyDocument:
    """The shallow shape check every attached policy passes: a JSON object with `Version`
    and a `Statement` (deeper validation is `lamina.auth.policy`'s, through `validate_policy`)."""
    if not isinstance(document, dict) or "Version" not in document:
        raise ValidationError("A policy document is a JSON object with Version and Statement")
    if not isinstance(document.get("Statement"), (list, dict)):
        raise ValidationError("A policy document is a JSON object with Version and Statement")
    return document


@dataclass(frozen=True)
class AccessKey:
    """One long-term access key (the secret is kept apart: see `KeyStore.secret_for`)."""

    access_key_id: str
    name: str
    admin: bool
    policies: tuple[PolicyDocument, ...]
    created: float


@dataclass(frozen=True)
class _Session:
    secret: str
    token: str
    role_arn: str
    session_name: str
    expiration: float


@dataclass
class KeyStore:
    """The access keys (in `<data-dir>/auth.db`, or `engine`) and the sessions issued since
    start.

    Reads are from memory and thread-safe; `create`/`delete`/`attach_policy` write through.
    """

    data_dir: Path
    account: str
    #: a role's policies, for role sessions' principals (the roles service plugs in here)
    role_policies: Callable[[str], tuple[PolicyDocument, ...]] = field(default=lambda _arn: ())
    #: deep validation of an attached policy (`lamina.auth.policy`, when present)
    validate_policy: Callable[[PolicyDocument], None] | None = None
    clock: Callable[[], float] = time.time
    #: the database keys are kept in (a cluster's, schema made by the migrations); None: the
    #: data directory's `auth.db`
    engine: Engine | None = None
    #: the other nodes sharing the keys (`cluster.api.ChangeFeed`; the server sets it)
    feed: ChangeFeed = field(default_factory=NoFeed)

    def __post_init__(self) -> None:
        self._sealer = Sealer.open(self.data_dir)
        self._lock = threading.Lock()
        self._keys: dict[str, AccessKey] = {}
        self._secrets: dict[str, str] = {}
        self._sessions: dict[str, _Session] = {}
        # Long-term keys' principals, built once per key: a signed request would otherwise
        # build one each time. Emptied when a key is deleted or its policies change (under
        # the lock that fills it); a new key has no entry to empty.
        self._principals: dict[str, Principal] = {}
        self._owned: Engine | None = None
        engine = self.engine
        if engine is None:
            engine = self._owned = _open_auth_db(self.data_dir)
        self._rows = AccessKeyRows(engine)
        self.reload()

    def reload(self) -> None:
        """Read every key from the database again (another node changed one)."""
        # Under the lock: a key written here meanwhile is not undone by an older read.
        with self._lock:
            keys, secrets_ = {}, {}
            for row in self._rows.all():
                key_id = row.access_key_id
                secret = self._sealer.unseal(row.sealed_secret, key_id.encode()).decode()
                secrets_[key_id] = secret
                keys[key_id] = AccessKey(
                    key_id, row.name, row.admin, tuple(row.policies), row.created
                )
            self._keys, self._secrets = keys, secrets_
            self._principals.clear()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()

    # -- long-term keys --------------------------------------------------------------------

    def access_keys(self) -> list[AccessKey]:
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: k.created)

    def admin_key(self) -> AccessKey | None:
        with self._lock:
            return next((k for k in self._keys.values() if k.admin), None)

    def create(
        self,
        name: str,
        *,
        admin: bool = False,
        access_key_id: str | None = None,
        secret: str | None = None,
    ) -> tuple[str, str]:
        """A new key (or the one given): its id and secret, stored sealed."""
        key_id = access_key_id or new_key_id()
        secret = secret or new_secret()
        created = self.clock()
        with self._lock:
            sealed = self._sealer.seal(secret.encode(), key_id.encode())
            row = AccessKeyRow(key_id, sealed, name, admin, [], created)
            if key_id in self._keys or not self._rows.insert(row):
                raise ValidationError(f"Access key {key_id} already exists")
            self._keys[key_id] = AccessKey(key_id, name, admin, (), created)
            self._secrets[key_id] = secret
        return key_id, secret

    def set_admin(self, access_key_id: str, secret: str) -> None:
        """Make (id, secret) the one admin key, replacing any stored before."""
        with self._lock:
            old = [k for k in self._keys.values() if k.admin]
        for key in old:
            if key.access_key_id != access_key_id or self._secrets.get(key.access_key_id) != secret:
                self.delete(key.access_key_id)
        if access_key_id not in self._keys:
            self.create(ADMIN_NAME, admin=True, access_key_id=access_key_id, secret=secret)

    def delete(self, access_key_id: str) -> bool:
        with self._lock:
            if access_key_id not in self._keys:
                return False
            self._rows.delete(access_key_id)
            del self._keys[access_key_id]
            del self._secrets[access_key_id]
            self._principals.clear()
            return True

    def attach_policy(self, access_key_id: str, document: Any) -> AccessKey:
        policy = check_policy(document)
        if self.validate_policy is not None:
            self.validate_policy(policy)
        with self._lock:
            key = self._keys.get(access_key_id)
            if key is None:
                raise UnrecognizedClient()
            policies = (*key.policies, policy)
            self._rows.set_policies(access_key_id, list(policies))
            key = AccessKey(key.access_key_id, key.name, key.admin, policies, key.created)
            self._keys[access_key_id] = key
            self._principals.clear()
            return key

    # async forms for the server: database writes (and their fsync) stay off the event loop;
    # once written, the other nodes are told
    async def create_async(self, name: str) -> tuple[str, str]:
        key_id, secret = await asyncio.to_thread(self.create, name)
        await self._tell(key_id)
        return key_id, secret

    async def delete_async(self, access_key_id: str) -> bool:
        deleted = await asyncio.to_thread(self.delete, access_key_id)
        await self._tell(access_key_id)
        return deleted

    async def attach_policy_async(self, access_key_id: str, document: Any) -> AccessKey:
        key = await asyncio.to_thread(self.attach_policy, access_key_id, document)
        await self._tell(access_key_id)
        return key

    async def _tell(self, access_key_id: str) -> None:
        try:
            await self.feed.publish("key", access_key_id)
        except Exception as e:
            log.warning("could not tell the other nodes that key %s changed: %s", access_key_id, e)

    async def refresh(self, access_key_id: str) -> None:
        """Another node changed the key `access_key_id` ("*": any key): read them again (a
        handful of rows)."""
        await asyncio.to_thread(self.reload)

    # -- role sessions -----------------------------------------------------------------------

    def issue_session(
        self, role_arn: str, session_name: str, ttl_s: int
    ) -> tuple[str, str, str, float]:
        """Temporary credentials for `role_arn`: (access key id, secret, session token,
        expiration as a Unix time). Requests signed with them need the token too."""
        key_id = new_key_id("ASIA")
        secret = new_secret()
        token = secrets.token_urlsafe(96)
        expiration = self.clock() + ttl_s
        with self._lock:
            self._sessions[key_id] = _Session(secret, token, role_arn, session_name, expiration)
            self._forget_expired()
        return key_id, secret, token, expiration

    def _forget_expired(self) -> None:
        # Long-expired sessions go (an hour's grace keeps ExpiredToken answers meaningful).
        cutoff = self.clock() - 3600
        for key_id in [k for k, s in self._sessions.items() if s.expiration < cutoff]:
            del self._sessions[key_id]

    # -- what the verifier asks ------------------------------------------------------------

    def secret_for(self, access_key_id: str, session_token: str | None) -> str:
        session = self._sessions.get(access_key_id)
        if session is not None:
            if session_token is None or not secrets.compare_digest(session_token, session.token):
                raise UnrecognizedClient()
            if self.clock() >= session.expiration:
                raise ExpiredToken()
            return session.secret
        secret = self._secrets.get(access_key_id)
        if secret is None:
            raise UnrecognizedClient()
        return secret

    def principal(self, access_key_id: str) -> Principal:
        session = self._sessions.get(access_key_id)
        if session is not None:
            role_name = session.role_arn.rsplit("/", 1)[-1]
            return Principal(
                access_key_id=access_key_id,
                arn=f"arn:aws:sts::{self.account}:assumed-role/{role_name}/{session.session_name}",
                account=self.account,
                policies=tuple(self.role_policies(session.role_arn)),
                role_arn=session.role_arn,
            )
        cached = self._principals.get(access_key_id)
        if cached is not None:
            return cached
        with self._lock:
            # Built from the key as it is now, under the lock writes hold: a write that
            # lands after this empties the cache again, so nothing stale can stay.
            key = self._keys.get(access_key_id)
            if key is None:
                raise UnrecognizedClient()
            principal = Principal(
                access_key_id=access_key_id,
                arn=f"arn:aws:iam::{self.account}:user/{key.name}",
                account=self.account,
                admin=key.admin,
                policies=key.policies,
            )
            self._principals[access_key_id] = principal
            return principal


def read_admin_key(data_dir: Path) -> tuple[str, str] | None:
    """The admin key stored in `data_dir`, if this process may read it (the `lamina` CLI's
    last resort for credentials); None when there is none or it cannot be read."""
    db, key_file = data_dir / AUTH_DB, data_dir / "secret.key"
    try:
        if not (db.exists() and key_file.exists()):
            return None
        sealer = Sealer(key_file.read_bytes())
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT access_key_id, sealed_secret FROM access_keys WHERE admin = 1 LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return row[0], sealer.unseal(row[1], row[0].encode()).decode()
    except (OSError, sqlite3.Error, ValueError):
        return None


def _open_auth_db(data_dir: Path) -> Engine:
    """The data directory's `auth.db` (made 0600 before SQLite first writes it), with its one
    table. It keeps its rollback journal: the CLI reads it read-only (`read_admin_key`)."""
    path = data_dir / AUTH_DB
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    engine = make_engine(f"sqlite:///{path}", wal=False)
    access_keys.create(engine, checkfirst=True)
    return engine
