"""WebSocket connections across a cluster: the `@connections` API for a connection that
another node holds.

A connection lives on the node that holds its socket. Its id carries a 3-byte tag of that
node's name (`api.websocket_connections.new_connection_id`), so any node can tell whose it
is from the id alone: a PostToConnection, GetConnection or DeleteConnection for a connection
that is not here goes as one NATS request to `<prefix>.wsconn.<node>` and comes back as one
reply. No answer (the node left, NATS down, the connection closed) is GoneException, as for
any connection that is no more.

Wire: a request is a JSON header line (`op`, `id`) then the raw data (PostToConnection's
body); a reply is a JSON object (`status`, and GetConnection's `body`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from lamina.api.websocket_connections import Connections, connection_info, node_tag, tag_of
from lamina.cluster.api import NodeDirectory
from lamina.errors import LaminaError

log = logging.getLogger(__name__)

#: how long a node waits for the holding node's answer before calling the connection gone
RELAY_TIMEOUT_S = 5.0


class ConnectionRelay:
    """Answers other nodes' requests for this node's connections, and asks other nodes for
    theirs."""

    def __init__(
        self,
        nc: Client,
        directory: NodeDirectory,
        prefix: str,
        node: str,
        connections: Connections,
    ) -> None:
        self.nc = nc
        self.directory = directory
        self.prefix = prefix
        self.node = node
        self.connections = connections
        self._sub: Subscription | None = None

    def _subject(self, node: str) -> str:
        return f"{self.prefix}.wsconn.{node}"

    async def serve(self) -> None:
        self._sub = await self.nc.subscribe(self._subject(self.node), cb=self._on_request)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(NatsError):
                await self._sub.unsubscribe()
            self._sub = None

    def owner(self, connection_id: str) -> str | None:
        """The live node (other than this one) whose tag `connection_id` carries."""
        tag = tag_of(connection_id)
        if tag is None:
            return None
        for info in self.directory.live():
            if info.name != self.node and node_tag(info.name) == tag:
                return info.name
        return None

    async def call(self, op: str, connection_id: str, data: bytes = b"") -> dict[str, Any]:
        """Ask the node holding `connection_id` to do `op` (POST, GET, DELETE): its reply,
        or `{"status": 410}` when no node answers for it."""
        node = self.owner(connection_id)
        if node is None:
            return {"status": 410}
        head = json.dumps({"op": op, "id": connection_id}).encode()
        try:
            reply = await self.nc.request(
                self._subject(node), head + b"\n" + data, timeout=RELAY_TIMEOUT_S
            )
            answer = json.loads(reply.data)
        except (NatsError, NatsTimeoutError, TimeoutError, ValueError) as e:
            log.info("websockets: node %s did not answer for %s: %s", node, connection_id, e)
            return {"status": 410}
        return answer if isinstance(answer, dict) else {"status": 410}

    async def _on_request(self, msg: Msg) -> None:
        try:
            head, _, data = msg.data.partition(b"\n")
            request = json.loads(head)
            answer = await self._serve(str(request["op"]), str(request["id"]), data)
        except (ValueError, KeyError, TypeError):
            answer = {"status": 400}
        with contextlib.suppress(NatsError):
            await msg.respond(json.dumps(answer).encode())

    async def _serve(self, op: str, connection_id: str, data: bytes) -> dict[str, Any]:
        connection = self.connections.get(connection_id)
        if connection is None:
            return {"status": 410}
        if op == "GET":
            return {"status": 200, "body": connection_info(connection)}
        if op == "DELETE":
            await connection.close(1000)
            return {"status": 204}
        if op == "POST":
            try:
                await connection.send(data)
            except LaminaError:
                return {"status": 410}
            return {"status": 200}
        return {"status": 400}
