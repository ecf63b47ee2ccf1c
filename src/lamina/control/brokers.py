"""Brokers and the secrets mappings log in to them with (`lamina brokers`, `lamina secrets`).

A broker is a RabbitMQ, NATS or Redis server registered by name with the URL Lamina connects
to (credentials included); its kind comes from the URL's scheme (`amqp`/`amqps`: RabbitMQ,
`nats`/`tls`: NATS JetStream, `redis`/`rediss`: Redis Streams). Its ARN is what a mapping's
`EventSourceArn` names: Amazon MQ's form for RabbitMQ, `arn:aws:mq:<region>:<account>:broker:
<NAME>:b-<uuid>`, and `arn:aws:nats|redis:<region>:<account>:broker:<NAME>` for the stream
servers, to which a mapping appends `:stream/<STREAM>`. Adding a broker under a name already
registered (same kind) replaces its URL and keeps its ARN, so that a password can be rotated
under running mappings; a broker that mappings read from cannot be removed.

A secret stands in for the Secrets Manager secret Lambda's `BASIC_AUTH` names: a username and
a password, named by an ARN of Secrets Manager's form `arn:aws:secretsmanager:<region>:
<account>:secret:<NAME>-<6 random characters>`. Putting a secret again replaces its values and
keeps its ARN. A mapping without `BASIC_AUTH` uses the broker's own credentials.

Both are kept in memory (pollers resolve them at every (re)connection) and sealed at rest.
"""

from __future__ import annotations

import asyncio
import re
import secrets as random
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes
from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceInUseError,
    ResourceNotFoundError,
)
from lamina.mappings import Broker, SourceKind
from lamina.settings import Settings
from lamina.store.event_sources import EventSourceStore, StoredBroker, StoredSecret

T = TypeVar("T")

#: URL schemes and the kind of broker each means
SCHEMES: dict[str, SourceKind] = {
    "amqp": SourceKind.RABBITMQ,
    "amqps": SourceKind.RABBITMQ,
    "nats": SourceKind.NATS,
    "tls": SourceKind.NATS,
    "redis": SourceKind.REDIS,
    "rediss": SourceKind.REDIS,
}
# Amazon MQ's broker names: 1-50 letters, digits, `-` and `_`.
_BROKER_NAME = re.compile(r"[A-Za-z0-9_-]{1,50}")
# Secrets Manager's name characters; short enough that the ARN fits BASIC_AUTH's URI (200).
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,128}")
_SECRET_SUFFIX = string.ascii_letters + string.digits
_USERNAME_MAX = 256
_PASSWORD_MAX = 4096


class Runner(Protocol):
    """Runs blocking store work off the event loop (the control worker thread)."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


def display_url(url: str) -> str:
    """`url` without its password (what listings show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class BrokerService:
    """The registered brokers and secrets."""

    def __init__(self, settings: Settings, store: EventSourceStore, run: Runner) -> None:
        self._settings = settings
        self._store = store
        self._run = run
        self._brokers: dict[str, StoredBroker] = {}
        self._secrets: dict[str, StoredSecret] = {}
        self._writing = asyncio.Lock()
        #: the UUIDs of the mappings that use a broker ARN or secret ARN (the mapping service
        #: plugs this in), consulted before either is removed
        self.users: Callable[[str], list[str]] = lambda arn: []
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    async def load(self) -> None:
        self._brokers = {b.broker.name: b for b in await self._run(self._store.all_brokers)}
        self._secrets = {s.name: s for s in await self._run(self._store.all_secrets)}

    async def refresh(self, name: str) -> None:
        """Another node changed a broker or secret (`name`, or "*"): both are few, so both
        are read again whole."""
        async with self._writing:
            await self.load()

    # -- brokers -------------------------------------------------------------------

    def brokers(self) -> list[Broker]:
        """Every broker, by name."""
        return [self._brokers[n].broker for n in sorted(self._brokers)]

    def by_arn(self, arn: str) -> StoredBroker | None:
        """The broker a mapping's source ARN names (a NATS or Redis stream's ARN names its
        broker's ARN and a stream after it)."""
        base = arn.split(":stream/", 1)[0]
        for stored in self._brokers.values():
            if stored.broker.arn == base:
                return stored
        return None

    def broker_arn(self, name: str, kind: SourceKind, broker_id: str) -> str:
        region, account = self._settings.region, self._settings.account_id
        if kind is SourceKind.RABBITMQ:
            return f"arn:aws:mq:{region}:{account}:broker:{name}:{broker_id}"
        return f"arn:aws:{kind.value}:{region}:{account}:broker:{name}"

    async def add(self, name: Any, url: Any) -> Broker:
        """Register the broker `name` at `url`, or replace the URL of the broker of that name
        (same kind: its ARN is kept)."""
        c = v.Constraints()
        checked = c.string(name, "name", max_len=50, pattern=_BROKER_NAME, required=True)
        given = c.string(url, "url", max_len=2048, required=True)
        c.check()
        assert checked is not None and given is not None
        kind = _kind(given)
        async with self._writing:
            current = self._brokers.get(checked)
            if current is not None and current.broker.kind is not kind:
                raise ResourceConflictError(
                    f"Broker {checked} is a {current.broker.kind.value} broker; remove it before "
                    f"registering a {kind.value} one under its name."
                )
            broker_id = current.broker.id if current is not None else f"b-{uuid.uuid4()}"
            broker = Broker(
                name=checked,
                kind=kind,
                id=broker_id,
                arn=self.broker_arn(checked, kind, broker_id),
                display_url=display_url(given),
                created=current.broker.created if current is not None else time.time(),
            )
            stored = StoredBroker(broker, given)
            await self._run(self._store.put_broker, stored)
            self._brokers[checked] = stored
        await changes.tell(self.feed, "broker", checked)
        return broker

    async def remove(self, name: str) -> None:
        """Forget a broker; refused while a mapping reads from it."""
        async with self._writing:
            stored = self._brokers.get(name)
            if stored is None:
                raise ResourceNotFoundError(f"Broker not found: {name}")
            users = self.users(stored.broker.arn)
            if users:
                raise ResourceInUseError(
                    f"Broker {name} is in use by event-source mappings {', '.join(users)}: "
                    "delete them first."
                )
            await self._run(self._store.delete_broker, name)
            del self._brokers[name]
        await changes.tell(self.feed, "broker", name)

    # -- secrets -------------------------------------------------------------------

    def secrets(self) -> list[StoredSecret]:
        return [self._secrets[n] for n in sorted(self._secrets)]

    def secret_by_arn(self, arn: str) -> StoredSecret | None:
        for secret in self._secrets.values():
            if secret.arn == arn:
                return secret
        return None

    async def put_secret(self, name: Any, username: Any, password: Any) -> StoredSecret:
        """Create the secret `name`, or replace its username and password (ARN kept)."""
        c = v.Constraints()
        checked = c.string(name, "name", max_len=128, pattern=_SECRET_NAME, required=True)
        user = c.string(username, "username", max_len=_USERNAME_MAX, required=True)
        word = c.string(password, "password", max_len=_PASSWORD_MAX, required=True)
        c.check()
        assert checked is not None and user is not None and word is not None
        if not user:
            raise InvalidParameterValueError("A secret's username must not be empty.")
        async with self._writing:
            current = self._secrets.get(checked)
            if current is not None:
                arn, created = current.arn, current.created
            else:
                suffix = "".join(random.choice(_SECRET_SUFFIX) for _ in range(6))
                arn = (
                    f"arn:aws:secretsmanager:{self._settings.region}:"
                    f"{self._settings.account_id}:secret:{checked}-{suffix}"
                )
                created = time.time()
            secret = StoredSecret(checked, arn, user, word, created)
            await self._run(self._store.put_secret, secret)
            self._secrets[checked] = secret
        await changes.tell(self.feed, "broker", checked)
        return secret

    async def delete_secret(self, name: str) -> None:
        """Forget a secret; refused while a mapping's BASIC_AUTH names it."""
        async with self._writing:
            secret = self._secrets.get(name)
            if secret is None:
                raise ResourceNotFoundError(f"Secret not found: {name}")
            users = self.users(secret.arn)
            if users:
                raise ResourceInUseError(
                    f"Secret {name} is in use by event-source mappings {', '.join(users)}: "
                    "update or delete them first."
                )
            await self._run(self._store.delete_secret, name)
            del self._secrets[name]
        await changes.tell(self.feed, "broker", name)


def _kind(url: str) -> SourceKind:
    parts = urlsplit(url)
    kind = SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise InvalidParameterValueError(
            f"Unsupported broker URL scheme {parts.scheme or '(none)'!r}: use amqp:// or "
            "amqps:// (RabbitMQ), nats:// or tls:// (NATS JetStream), redis:// or rediss:// "
            "(Redis Streams)."
        )
    try:
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise InvalidParameterValueError("The broker URL's port is not a number.") from None
    if not parts.hostname:
        raise InvalidParameterValueError("The broker URL must name a host.")
    return kind
