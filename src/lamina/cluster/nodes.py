"""The live nodes of a cluster on NATS JetStream KV (`NodeDirectory`).

Each node puts its `NodeInfo` (as JSON, with an instance id telling two processes of one
name apart) under its name in the bucket `<prefix>_nodes` every `heartbeat_s`; the bucket
keeps an entry `ttl_s` after its last put, so a node that stops (killed, partitioned) leaves
within `ttl_s`. A watcher on the bucket keeps the local view (`live()`) current without I/O;
entries not refreshed for `ttl_s` leave the view even before NATS expires them. An entry's
age is told by the `heartbeat_at` its node wrote: the nodes' clocks must agree to well within
`ttl_s` (NTP does).

Each heartbeat is also published on core NATS (`<prefix>.beats`), which every node hears:
that needs no JetStream consumer, so the view stays current while a consumer is re-created
after its server died (which waits for JetStream's meta leader: seconds after losing the
server that was it). The bucket is what a joining node reads and what a name is checked
against.

While this node's NATS link is down its view is kept as last seen (it cannot tell who left)
and `stale` says so. The watcher is restarted after a reconnect, and whenever it has not
delivered this node's own heartbeats for a few periods (its consumer died with a server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from lamina.cluster.api import ClusterConfigError, NodeInfo, NodeLoad
from lamina.cluster.nats import (
    LEADERLESS,
    NATS_ERRORS,
    REQUEST_TIMEOUT_S,
    NatsLink,
    kv_key,
    kv_name,
    while_leaderless,
)
from lamina.cluster.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    info: NodeInfo
    #: monotonic time after which the entry is dropped from the view
    expires_at: float


def _encode(info: NodeInfo, instance: str) -> bytes:
    body = asdict(info)
    body["load"]["idle"] = dict(info.load.idle)
    body["load"]["provisioned"] = dict(info.load.provisioned)
    body["problems"] = list(info.problems)
    body["instance"] = instance
    return json.dumps(body).encode()


def _decode(data: bytes) -> tuple[NodeInfo, str]:
    body: dict[str, Any] = json.loads(data)
    load = NodeLoad(**body.get("load", {}))
    info = NodeInfo(
        name=body["name"],
        endpoint=body["endpoint"],
        started_at=float(body["started_at"]),
        heartbeat_at=float(body["heartbeat_at"]),
        load=load,
        problems=tuple(body.get("problems", ())),
    )
    return info, str(body.get("instance", ""))


class NatsNodeDirectory:
    """`NodeDirectory` on the KV bucket `<prefix>_nodes`."""

    def __init__(
        self,
        link: NatsLink,
        name: str,
        endpoint: str,
        ttl_s: float,
        heartbeat_s: float,
        load: Callable[[], NodeLoad],
        problems: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self._link = link
        self._name = name
        self._key = kv_key(name)
        self._endpoint = endpoint
        self._ttl_s = ttl_s
        self._heartbeat_s = heartbeat_s
        self._load = load
        self._problems = problems
        self._instance = uuid.uuid4().hex
        self._started_at = time.time()
        self._kv: KeyValue | None = None
        self._view: dict[str, _Seen] = {}
        self._beats: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._beats_sub: Subscription | None = None
        #: monotonic time the watcher last delivered this node's own entry (or was set up)
        self._self_seen_at = 0.0
        #: False while the watcher's consumer is being created (that may take a JetStream
        #: request's timeout while the servers elect a leader: it is not silence)
        self._watcher_up = False

    @property
    def self_name(self) -> str:
        return self._name

    @property
    def stale(self) -> bool:
        """True while the NATS link is down: `live()` is the view as last seen."""
        return not self._link.healthy

    def live(self) -> list[NodeInfo]:
        if self._link.healthy:
            now = time.monotonic()
            for name in [n for n, seen in self._view.items() if seen.expires_at <= now]:
                del self._view[name]
        return sorted((seen.info for seen in self._view.values()), key=lambda i: i.name)

    # --- joining and leaving ---------------------------------------------------------------

    async def start(self) -> None:
        self._kv = await self._link.key_value("nodes", ttl_s=self._ttl_s)
        info = await self._enter()
        self._remember(info, time.monotonic())
        self._self_seen_at = time.monotonic()
        self._beats_sub = await self._link.nc.subscribe(self._link.subject("beats"), cb=self._heard)
        self._restart_watcher()
        self._beats = asyncio.create_task(self._beat_forever())
        self._link.on_reconnect(self._on_reconnect)

    async def _enter(self) -> NodeInfo:
        """Put this node's first entry. A bucket just made (the first node of a cluster) may
        not take writes for a moment, until its stream has a leader that NATS routes to: that
        is waited for, up to a JetStream request's timeout."""
        kv = self._kv
        assert kv is not None

        async def put() -> NodeInfo:
            info = self._info()
            try:
                await kv.create(self._key, _encode(info, self._instance))
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._replace_expired(info)
            return info

        try:
            return await while_leaderless(put, REQUEST_TIMEOUT_S, 0.2)
        except LEADERLESS as err:
            raise ClusterConfigError(
                f"NATS does not store this node's entry in its bucket: {err}"
            ) from None

    async def _replace_expired(self, info: NodeInfo) -> None:
        """An entry of this name exists: refuse if a live other instance wrote it, else take
        its place."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(self._key)
        except nats.js.errors.NotFoundError:
            await self._kv.create(self._key, _encode(info, self._instance))
            return
        assert entry.value is not None and entry.revision is not None
        other, instance = _decode(entry.value)
        age = max(0.0, time.time() - other.heartbeat_at)
        if instance != self._instance and age < self._ttl_s:
            raise ClusterConfigError(
                f"a live node is already named {self._name} "
                f"(at {other.endpoint}, heartbeat {age:.1f} s ago)"
            )
        try:
            await self._kv.update(self._key, _encode(info, self._instance), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise ClusterConfigError(
                f"a live node is already named {self._name} (it joined at the same time)"
            ) from None

    async def close(self) -> None:
        self._link.off(self._on_reconnect)
        for task in (self._beats, self._watch):
            if task is not None:
                await cancel_and_wait(task)
        self._beats = self._watch = None
        sub, self._beats_sub = self._beats_sub, None
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        if self._kv is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await asyncio.wait_for(self._kv.delete(self._key), self._heartbeat_s + 1)
        self._view.pop(self._name, None)

    # --- heartbeats ------------------------------------------------------------------------

    def _info(self) -> NodeInfo:
        problems = list(self._problems())
        if self._link.problem:
            problems.append(self._link.problem)
        return NodeInfo(
            name=self._name,
            endpoint=self._endpoint,
            started_at=self._started_at,
            heartbeat_at=time.time(),
            load=self._load(),
            problems=tuple(problems),
        )

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._beat()
            except Exception:
                log.exception("heartbeat failed")

    async def _beat(self) -> None:
        assert self._kv is not None
        info = self._info()
        data = _encode(info, self._instance)
        with contextlib.suppress(*NATS_ERRORS):
            await self._link.nc.publish(self._link.subject("beats"), data)
        try:
            await asyncio.wait_for(self._kv.put(self._key, data), self._heartbeat_s)
        except NATS_ERRORS as err:
            log.warning("heartbeat not stored: %s", str(err) or type(err).__name__)
            return
        self._remember(info, time.monotonic())
        # the watcher hands back our own heartbeats; if it has not for a while, its consumer
        # is gone (e.g. with the server it was on) and it is started again; one still being
        # set up is left to finish (or to time out and be retried by `_watch_forever`)
        if self._watcher_up and time.monotonic() - self._self_seen_at > 3 * self._heartbeat_s + 1:
            log.warning("node watcher silent: restarting it")
            self._self_seen_at = time.monotonic()
            self._restart_watcher()

    def _remember(self, info: NodeInfo, received_at: float) -> None:
        held = self._view.get(info.name)
        if held is not None and held.info.heartbeat_at > info.heartbeat_at:
            return  # an older heartbeat (from the bucket's watcher, say) than the one held
        age = min(self._ttl_s, max(0.0, time.time() - info.heartbeat_at))
        self._view[info.name] = _Seen(info, received_at + self._ttl_s - age)

    # --- watching --------------------------------------------------------------------------

    async def _heard(self, msg: Msg) -> None:
        """Another node's heartbeat on core NATS."""
        try:
            info, _ = _decode(msg.data)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("unreadable heartbeat: %s", err)
            return
        if info.name != self._name:
            self._remember(info, time.monotonic())

    async def _on_reconnect(self) -> None:
        self._restart_watcher()

    def _restart_watcher(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = asyncio.create_task(self._watch_forever())

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("node watcher stopped (%s): restarting it", err)
            await asyncio.sleep(self._heartbeat_s)

    async def _watch_once(self) -> None:
        assert self._kv is not None
        self._watcher_up = False
        watcher = await self._kv.watchall()
        self._watcher_up = True
        self._self_seen_at = time.monotonic()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                name = kv_name(entry.key)
                if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                    if name != self._name:
                        self._view.pop(name, None)
                    continue
                try:
                    info, _ = _decode(entry.value)
                except (ValueError, KeyError, TypeError) as err:
                    log.warning("unreadable node entry %s: %s", name, err)
                    continue
                self._remember(info, time.monotonic())
                if name == self._name:
                    self._self_seen_at = time.monotonic()
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await watcher.stop()  # type: ignore[no-untyped-call]
