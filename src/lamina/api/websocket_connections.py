"""Live WebSocket connections on this node, and the `@connections` management API
(botocore's `apigatewaymanagementapi`: PostToConnection, GetConnection, DeleteConnection).

A connection lives on the node that holds its socket: the registry is this process's, and a
connection id another node holds is Gone here (a documented limitation of cluster mode).

The management API is served at `<http form of ApiEndpoint>/<stage>/@connections/<id>` (so
boto3's client with `endpoint_url=http://host:port/ws/<apiId>/<stage>` works) and, because
connection ids are unique, at `/@connections/<id>` too: that is where the client goes with
no `endpoint_url` inside a function, whose `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI` names
Lamina. Requests are SigV4-signed for `execute-api` and authorized (`api.access`) as
`execute-api:ManageConnections` on the connection's ARN.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina import limits
from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.errors import GoneError, PayloadTooLargeError, ServiceError

Sender = Callable[[dict[str, Any]], Awaitable[None]]


def node_tag(node: str) -> bytes:
    """The 3 bytes of a node's name that its connections' ids end with."""
    return hashlib.sha256(node.encode()).digest()[:3]


def new_connection_id(tag: bytes) -> str:
    """An id in API Gateway's form (16 characters of base64, ending `=`), URL-safe: 8
    random bytes, then the holding node's `tag` (a cluster finds the node from the id)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(8) + tag).decode()


def tag_of(connection_id: str) -> bytes | None:
    """The node tag a connection id carries (None: not an id of ours)."""
    try:
        raw = base64.urlsafe_b64decode(connection_id.encode())
    except (ValueError, binascii.Error):
        return None
    return raw[8:] if len(raw) == 11 else None


@dataclass
class Connection:
    """One open WebSocket connection and what the management API reports of it."""

    id: str
    api_id: str
    stage: str
    send_message: Sender
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    closed: bool = False
    #: set when the server closes it (DeleteConnection, limits): the close code
    close_code: int | None = None

    async def send(self, data: bytes) -> None:
        """Send `data` as one message: a text frame if it is UTF-8, else a binary frame.
        GoneException if the connection is closed."""
        if self.closed:
            raise _gone()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            message: dict[str, Any] = {"type": "websocket.send", "bytes": data}
        else:
            message = {"type": "websocket.send", "text": text}
        try:
            await self.send_message(message)
        except Exception:  # the socket went away under us (uvicorn raises its own kinds)
            self.closed = True
            raise _gone() from None
        self.last_active = time.time()

    async def close(self, code: int = 1000) -> None:
        """Close the connection from the server side (the client sees `code`)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        with contextlib.suppress(Exception):  # already gone: nothing to close
            await self.send_message({"type": "websocket.close", "code": code})


class Connections:
    """The connections this node (named `node`) holds, by id."""

    def __init__(self, node: str) -> None:
        self._by_id: dict[str, Connection] = {}
        self.tag = node_tag(node)

    def new_id(self) -> str:
        return new_connection_id(self.tag)

    def add(self, connection: Connection) -> None:
        self._by_id[connection.id] = connection

    def remove(self, connection_id: str) -> None:
        self._by_id.pop(connection_id, None)

    def get(self, connection_id: str) -> Connection | None:
        found = self._by_id.get(connection_id)
        return None if found is None or found.closed else found

    def all(self) -> list[Connection]:
        return [c for c in self._by_id.values() if not c.closed]

    def locate(self, connection_id: str) -> tuple[str, str] | None:
        """The (api id, stage) of a live connection, for authorization."""
        found = self.get(connection_id)
        return None if found is None else (found.api_id, found.stage)


def _gone() -> GoneError:
    return GoneError("")


def _connections(request: Request) -> Connections:
    found = app_state(request).websocket_connections
    if found is None:
        raise ServiceError("WebSocket APIs are not available on this server")
    return found


def _local(request: Request) -> Connection | None:
    """The connection the request names if this node holds it (GoneException if it is
    another API's or stage's); None if it is not here."""
    connection = _connections(request).get(str(request.path_params["connection_id"]))
    api_id = request.path_params.get("api_id")
    if (
        connection is not None
        and api_id is not None
        and (connection.api_id != api_id or connection.stage != request.path_params["stage"])
    ):
        raise _gone()
    return connection


async def _remote(request: Request, op: str, data: bytes = b"") -> dict[str, Any]:
    """Ask the node holding the connection (cluster mode): its answer, GoneException if
    none holds it."""
    relay = app_state(request).connection_relay
    if relay is None:
        raise _gone()
    answer = await relay.call(op, str(request.path_params["connection_id"]), data)
    if answer.get("status") not in (200, 204):
        raise _gone()
    return answer


def connection_info(connection: Connection) -> dict[str, Any]:
    """GetConnection's answer (wire names)."""
    return {
        "connectedAt": _iso(connection.connected_at),
        "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
        "lastActiveAt": _iso(connection.last_active),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def post_to_connection(request: Request) -> Response:
    data = await request.body()
    if len(data) > limits.WEBSOCKET_MESSAGE_MAX_BYTES:
        raise PayloadTooLargeError(
            f"Message is too large: {len(data)} bytes; the limit is "
            f"{limits.WEBSOCKET_MESSAGE_MAX_BYTES} bytes"
        )
    connection = _local(request)
    if connection is None:
        await _remote(request, "POST", data)
    else:
        await connection.send(data)
    return Response(status_code=200)


async def get_connection(request: Request) -> Response:
    connection = _local(request)
    if connection is None:
        return json_response((await _remote(request, "GET")).get("body") or {})
    return json_response(connection_info(connection))


async def delete_connection(request: Request) -> Response:
    connection = _local(request)
    if connection is None:
        await _remote(request, "DELETE")
    else:
        await connection.close(1000)
    return Response(status_code=204)


async def list_connections(request: Request) -> Response:
    """Lamina's own listing (`lamina websockets`): this node's live connections."""
    return json_response(
        {
            "Connections": [
                {
                    "ConnectionId": c.id,
                    "ApiId": c.api_id,
                    "Stage": c.stage,
                    "SourceIp": c.source_ip,
                    "ConnectedAt": _iso(c.connected_at),
                    "LastActiveAt": _iso(c.last_active),
                }
                for c in _connections(request).all()
            ]
        }
    )
