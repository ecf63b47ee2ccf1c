"""A node's one connection to the cluster's NATS (`NatsLink`), shared by its directory entry,
leases, code blobs and change feed.

Joining is all or nothing: `connect` raises `ClusterConfigError` when no server answers
within the timeout or the server has no JetStream, so a node never half-joins. Once
connected the link reconnects forever (to any server of the NATS cluster) and says whether
it is up (`healthy`, `problem`); the parts built on it register `on_disconnect` and
`on_reconnect` callbacks (a lease holder stops renewing, the change feed resyncs).

Every bucket and stream name starts with the cluster prefix (default "lamina"), so several
Lamina clusters (the tests' own, one per test) can share one NATS. Buckets are replicated on
min(3, servers in the NATS cluster): a bucket outlives the loss of one server of three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from lamina.cluster.api import ClusterConfigError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "lamina"
#: seconds a JetStream request (a put, a get) may take before it fails
REQUEST_TIMEOUT_S = 10.0
#: seconds closing the connection may take: nats-py's close waits for its socket to close
#: with no limit of its own, and has been seen to wait for good on a transport whose server
#: was killed; past this the connection is abandoned, so a node's shutdown never hangs on it
CLOSE_TIMEOUT_S = 5.0
#: what nats-py raises when the server cannot be reached or does not answer in time
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
# the server's answer when a stream exists with another configuration (another node made it
# with other settings): the existing one is used
_STREAM_NAME_IN_USE = 10058
# key characters passed through by `kv_key`; every other byte becomes "=XX"
_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/")

LinkCallback = Callable[[], Awaitable[None]]
T = TypeVar("T")

#: NATS's answers to a write while the stream has no leader it routes to (its servers are
#: electing one, or a stream just made is not placed yet): the same write succeeds moments later
LEADERLESS = (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError)


async def while_leaderless(write: Callable[[], Awaitable[T]], wait_s: float, pause_s: float) -> T:
    """`write()`, tried again every `pause_s` while NATS answers that the stream has no
    leader, for up to `wait_s` (an election takes seconds); after that the last such error
    is raised. Any other error is raised at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await write()
        except LEADERLESS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(pause_s)


def kv_key(name: str) -> str:
    """A KV-legal key for any string, readable and reversible: letters, digits, "-", "_" and
    "/" stay; every other UTF-8 byte (dots and "=" included) becomes "=XX"."""
    if not name:
        return "="
    return "".join(c if c in _KEY_SAFE else "".join(f"={b:02X}" for b in c.encode()) for c in name)


def kv_name(key: str) -> str:
    """The string `kv_key` encoded."""
    if key == "=":
        return ""
    out = bytearray()
    i = 0
    while i < len(key):
        if key[i] == "=":
            out.append(int(key[i + 1 : i + 3], 16))
            i += 3
        else:
            out += key[i].encode()
            i += 1
    return out.decode()


def _reason(err: BaseException | None) -> str:
    if err is None:
        return "no answer"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    text = str(err).strip()
    return text or type(err).__name__


async def _close_client(nc: Client) -> None:
    """Close `nc`, giving up after `CLOSE_TIMEOUT_S` (see there)."""
    try:
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("NATS: the connection did not close within %g s; left behind", CLOSE_TIMEOUT_S)
    except (*NATS_ERRORS,):
        pass


def _seconds(ttl: float | None) -> str:
    return f"{ttl:g} s" if ttl else "forever"


class NatsLink:
    """One node's connection to NATS: `connect` once, then `js`, `key_value`, `object_store`;
    `close` at shutdown."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._down_since: float | None = None
        self._on_disconnect: list[LinkCallback] = []
        self._on_reconnect: list[LinkCallback] = []
        self._replicas = 1
        self._closing = False

    # --- joining ---------------------------------------------------------------------------

    async def connect(self, urls: Sequence[str], name: str, timeout_s: float = 10.0) -> None:
        """Connect to the first of `urls` that answers; raise `ClusterConfigError` if none
        does within `timeout_s` or the server has no JetStream."""
        shown = ", ".join(urls)
        last_error: BaseException | None = None

        async def error_cb(err: Exception) -> None:
            # failed attempts to reconnect are not logged one by one: `problem` and the
            # disconnect/reconnect lines say it
            nonlocal last_error
            if self._nc is None:
                last_error = err
            elif self._nc.is_connected and not self._closing:
                log.warning("NATS: %s", _reason(err))

        # nats-py tries the servers in turn until one answers (reconnecting forever): the
        # timeout bounds the whole join, and the last refusal says why it failed
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    list(urls),
                    name=name,
                    connect_timeout=max(1, min(2, int(timeout_s))),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=error_cb,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                ),
                timeout=timeout_s,
            )
        except (*NATS_ERRORS,) as err:
            await _close_client(nc)
            if not isinstance(err, asyncio.TimeoutError) or last_error is None:
                last_error = err
            raise ClusterConfigError(
                f"cannot reach NATS at {shown}: {_reason(last_error)}"
            ) from None
        self._nc = nc
        self._js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        try:
            await self._js.account_info()
        except (*NATS_ERRORS,) as err:
            await self._drop()
            where = self.connected_url or shown
            if isinstance(
                err, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError
            ):
                raise ClusterConfigError(
                    f"NATS at {where} has no JetStream: start nats-server with -js"
                ) from None
            raise ClusterConfigError(
                f"NATS at {where} has no working JetStream: {_reason(err)}"
            ) from None
        self._replicas = min(3, self._cluster_size())

    def _cluster_size(self) -> int:
        """Servers in the NATS cluster, as the server announces them to clients."""
        assert self._nc is not None
        info: dict[str, Any] = self._nc._server_info or {}
        if not info.get("cluster"):
            return 1
        return max(1, len(info.get("connect_urls") or ()))

    async def close(self) -> None:
        self._closing = True
        await self._drop()

    async def _drop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await _close_client(nc)

    # --- state -----------------------------------------------------------------------------

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("NatsLink is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsLink is not connected")
        return self._js

    @property
    def replicas(self) -> int:
        return self._replicas

    @property
    def connected_url(self) -> str | None:
        url = self._nc.connected_url if self._nc is not None else None
        return url.geturl() if url is not None else None

    @property
    def healthy(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def problem(self) -> str | None:
        """Why the link is not healthy ("NATS unreachable since 12:00:01"), or None."""
        if self._nc is None:
            return "NATS not connected"
        if self._nc.is_connected:
            return None
        since = self._down_since or time.time()
        return f"NATS unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}"

    def on_disconnect(self, callback: LinkCallback) -> None:
        self._on_disconnect.append(callback)

    def on_reconnect(self, callback: LinkCallback) -> None:
        self._on_reconnect.append(callback)

    def off(self, callback: LinkCallback) -> None:
        """Stop calling `callback` (registered with `on_disconnect` or `on_reconnect`)."""
        for callbacks in (self._on_disconnect, self._on_reconnect):
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

    async def _disconnected(self) -> None:
        if self._closing:
            return
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("NATS: disconnected")
        await self._notify(self._on_disconnect)

    async def _reconnected(self) -> None:
        self._down_since = None
        log.warning("NATS: reconnected to %s", self.connected_url)
        await self._notify(self._on_reconnect)

    @staticmethod
    async def _notify(callbacks: list[LinkCallback]) -> None:
        for callback in list(callbacks):
            try:
                await callback()
            except Exception:
                log.exception("NATS link callback failed")

    # --- buckets ---------------------------------------------------------------------------

    def bucket_name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    async def key_value(self, name: str, ttl_s: float | None = None) -> KeyValue:
        """The KV bucket `<prefix>_<name>` (entries expire `ttl_s` after their last put),
        created if missing; made at the same time by another node is fine. Raises
        `ClusterConfigError` if NATS cannot make it, or it exists with another TTL (the
        nodes of a cluster must agree on theirs)."""
        bucket = self.bucket_name(name)
        config = KeyValueConfig(bucket=bucket, ttl=ttl_s, replicas=self._replicas, history=1)
        try:
            try:
                return await self.js.create_key_value(config)
            except nats.js.errors.APIError as err:
                if err.err_code != _STREAM_NAME_IN_USE:
                    raise
            # made by another node with other settings (e.g. fewer replicas, made while a
            # server was down): fine unless its TTL differs
            kv = await self.js.key_value(bucket)
            theirs = (await kv.status()).stream_info.config.max_age
        except NATS_ERRORS as err:
            raise ClusterConfigError(
                f"cannot open the NATS bucket {bucket}: {_reason(err)}"
            ) from None
        if abs((theirs or 0.0) - (ttl_s or 0.0)) > 0.001:
            raise ClusterConfigError(
                f"the NATS bucket {bucket} keeps entries {_seconds(theirs)}, this node "
                f"{_seconds(ttl_s)}: every node of a cluster needs the same heartbeat TTL "
                "(run the same Lamina version on every node)"
            )
        return kv

    async def object_store(self, name: str) -> ObjectStore:
        """The object store `<prefix>_<name>`, created if missing; raises
        `ClusterConfigError` if NATS cannot make it."""
        bucket = self.bucket_name(name)
        config = ObjectStoreConfig(bucket=bucket, replicas=self._replicas)
        try:
            try:
                return await self.js.create_object_store(bucket, config)
            except nats.js.errors.APIError as err:
                if err.err_code != _STREAM_NAME_IN_USE:
                    raise
            return await self.js.object_store(bucket)
        except NATS_ERRORS as err:
            raise ClusterConfigError(
                f"cannot open the NATS object store {bucket}: {_reason(err)}"
            ) from None

    def subject(self, *tokens: str) -> str:
        return ".".join((self.prefix, *tokens))
