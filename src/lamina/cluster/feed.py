"""The change feed on core NATS (`ChangeFeed`): "area/key changed in the database".

A change is published on `<prefix>.changes.<area>` with the publishing node in a header;
each node hears every area and calls its handlers for the changes of other nodes only. Core
NATS delivers at most once and nothing while a node is disconnected, so after every
reconnect the handlers are called with `(area, "*")` for each area: the node re-reads all of
its cached state rather than trusting that it missed nothing. A handler that raises is
logged and the feed goes on.
"""

from __future__ import annotations

import contextlib
import logging

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lamina.cluster.api import AREAS, ChangeHandler
from lamina.cluster.nats import NATS_ERRORS, NatsLink

log = logging.getLogger(__name__)

ORIGIN_HEADER = "Lamina-Origin"


class NatsFeed:
    """`ChangeFeed` on the subjects `<prefix>.changes.<area>`; `start` to hear others."""

    def __init__(self, link: NatsLink, origin: str) -> None:
        self._link = link
        self._origin = origin
        self._handlers: list[ChangeHandler] = []
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._link.nc.subscribe(
            self._link.subject("changes", "*"), cb=self._received
        )
        self._link.on_reconnect(self.resync)

    async def close(self) -> None:
        self._link.off(self.resync)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()

    async def publish(self, area: str, key: str) -> None:
        """Sent, or kept to send on reconnection; a change that cannot be even kept (the
        link's buffer is full) is logged, not raised: the change is committed already, and
        the caller's request must not fail for the news of it."""
        try:
            await self._link.nc.publish(
                self._link.subject("changes", area),
                key.encode(),
                headers={ORIGIN_HEADER: self._origin},
            )
        except NATS_ERRORS as err:
            log.warning("change %s/%s not announced: %s", area, key, str(err) or type(err).__name__)

    def subscribe(self, handler: ChangeHandler) -> None:
        self._handlers.append(handler)

    async def _received(self, msg: Msg) -> None:
        if (msg.headers or {}).get(ORIGIN_HEADER) == self._origin:
            return
        area = msg.subject.rsplit(".", 1)[-1]
        await self._dispatch(area, msg.data.decode(errors="replace"))

    async def resync(self) -> None:
        """Tell the handlers to re-read every area (after a reconnect, and now and then: the
        feed is NATS core pub/sub, at most once, and a message published while the servers'
        routes were down is lost)."""
        for area in AREAS:
            await self._dispatch(area, "*")

    async def _dispatch(self, area: str, key: str) -> None:
        for handler in list(self._handlers):
            try:
                await handler(area, key)
            except Exception:
                log.exception("change handler failed for %s/%s", area, key)
