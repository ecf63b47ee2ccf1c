"""WebSocket connections to WebSocket APIs: the data plane, an ASGI wrapper for `websocket`
scopes (every HTTP request passes through untouched).

Addresses: `ws://<host>:<port>/ws/<apiId>/<stage>` (the API's ApiEndpoint, then the stage),
or any path `/<stage>` on a request whose Host is `<apiId>.execute-api.<region>.<anything>`
(API Gateway's own form, for a DNS name or a proxy that points such names here).

What happens, as on API Gateway:
- On the upgrade request the `$connect` route's function (if the API has one) runs with the
  CONNECT event; an error, a timeout or a non-2xx `statusCode` refuses the connection (HTTP
  403). An unknown API or stage is refused the same way.
- Each message is routed by the API's RouteSelectionExpression (`$request.body.<path>` of a
  JSON body) to that route, else `$default`; with neither, the client is told
  `{"message": "Forbidden", ...}`. The function's result is sent back only on a two-way route
  (a RouteResponseSelectionExpression or a route response): the result's `body` if it is a
  proxy response, else the result itself. A failing function gets the client
  `{"message": "Internal server error", ...}`.
- `$disconnect` runs once the connection closes, from either side; its result is ignored.
- A route invokes its function only if the function's resource-based policy lets
  `apigateway.amazonaws.com` do `lambda:InvokeFunction` for the route's execute-api ARN
  (`aws lambda add-permission`; `auth.triggers.apigateway_may_invoke`), checked in memory at
  every invocation. Without it `$connect` refuses the handshake with HTTP 500, a message gets
  `{"message": "Internal server error", ...}`, `$disconnect` is skipped, and the server logs
  a warning once per API and function.
- Limits (`limits.WEBSOCKET_*`): a message over 128 KB closes the connection with 1009
  (uvicorn's `ws_max_size`), no traffic for 10 minutes closes it (1001), and so does reaching
  2 hours.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina import ids, limits
from lamina.api.context import AppState
from lamina.api.http_front import TooLarge, run_function
from lamina.api.websocket_connections import Connection, Connections
from lamina.arns import FunctionRef
from lamina.auth.triggers import apigateway_may_invoke
from lamina.control.websocket_apis import LiveApi, Route, Selection, WebSocketApis
from lamina.errors import LaminaError

log = logging.getLogger(__name__)

_PATH = re.compile(r"/ws/([a-z0-9]{10})/([^/]+)/?")
_HOST = re.compile(r"([a-z0-9]{10})\.execute-api\.([a-z0-9-]+)(\..*)?")


class _Closed(Exception):
    """The connection ended (the client left, or a limit closed it)."""


class WebSocketFront:
    """Serves `websocket` scopes for WebSocket APIs; passes everything else to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        state: AppState,
        apis: WebSocketApis,
        connections: Connections,
        metrics_port: int | None = None,
    ) -> None:
        self.app = app
        #: the metrics listener serves `/metrics` and `/health` only: no WebSocket there
        self.metrics_port = metrics_port
        self.state = state
        self.apis = apis
        self.connections = connections
        # API Gateway's; a test server's clock rate (`--test-clock-rate`) shortens them alike
        rate = state.settings.test_clock_rate
        self.idle_timeout_s: float = limits.WEBSOCKET_IDLE_TIMEOUT_S / rate
        self.max_duration_s: float = limits.WEBSOCKET_MAX_DURATION_S / rate
        #: (api id, function ARN) pairs already warned about a missing permission
        self._warned: set[tuple[str, str]] = set()

    def may_invoke(self, api_id: str, stage: str, route_key: str, ref: FunctionRef) -> bool:
        """Whether the function's resource policy lets API Gateway invoke it for this route
        (no I/O: policies are in memory). A denial is logged once per API and function."""
        settings = self.state.settings
        functions = self.state.functions
        arn = functions.arn(ref.name, ref.qualifier)
        source = (
            f"arn:aws:execute-api:{settings.region}:{settings.account_id}:"
            f"{api_id}/{stage}/{route_key}"
        )
        policy = functions.policies.policy_for(ref.name, ref.qualifier)
        if apigateway_may_invoke(arn, source, settings.account_id, policy):
            return True
        if (api_id, arn) not in self._warned:
            self._warned.add((api_id, arn))
            log.warning(
                "websocket: API %s may not invoke %s: the function's resource policy does not "
                "allow lambda:InvokeFunction to apigateway.amazonaws.com for %s (aws lambda "
                "add-permission --principal apigateway.amazonaws.com --source-arn "
                "'arn:aws:execute-api:%s:%s:%s/*')",
                api_id,
                arn,
                source,
                settings.region,
                settings.account_id,
                api_id,
            )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        on_metrics = self.metrics_port is not None and server and server[1] == self.metrics_port
        address = None if on_metrics else self._address(scope)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        live = await self.apis.live(address[0]) if address is not None else None
        if address is None or live is None or address[1] not in live.stages:
            await send({"type": "websocket.close", "code": 1008})
            return
        await _Session(self, scope, receive, send, live, address[1]).run()

    def _address(self, scope: Scope) -> tuple[str, str] | None:
        """(api id, stage) the request addresses, or None."""
        path: str = scope["path"]
        m = _PATH.fullmatch(path)
        if m is not None:
            return m[1], m[2]
        for name, value in scope["headers"]:
            if name == b"host" and b".execute-api." in value:
                host = _HOST.fullmatch(value.decode("latin-1").split(":", 1)[0])
                stage = path.strip("/")
                region = self.state.settings.region
                if host is not None and host[2] == region and stage and "/" not in stage:
                    return host[1], stage
        return None


class _Session:
    """One connection's life: $connect, messages, $disconnect."""

    def __init__(
        self,
        front: WebSocketFront,
        scope: Scope,
        receive: Receive,
        send: Send,
        live: LiveApi,
        stage: str,
    ) -> None:
        self.front = front
        self.state = front.state
        self.scope = scope
        self.receive = receive
        self.live = live
        self.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
        client = scope.get("client")
        self.connection = Connection(
            id=front.connections.new_id(),
            api_id=live.api_id,
            stage=stage,
            send_message=send,
            source_ip=client[0] if client else "127.0.0.1",
            user_agent=self._header("user-agent") or "",
        )
        host = self._header("host") or self.state.settings.endpoint_url.split("//", 1)[1]
        self.domain_name = host
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = asyncio.Semaphore(limits.WEBSOCKET_IN_FLIGHT_PER_CONNECTION_MAX)

    def _header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name:
                return str(v)
        return None

    async def run(self) -> None:
        conn = self.connection
        connect = self.live.routes.get("$connect")
        if connect is not None:
            if connect.function is not None and not self._may_invoke(connect):
                await self._refuse_internal_error()
                return
            if not await self._connect_allowed(connect):
                await conn.send_message({"type": "websocket.close", "code": 1008})
                return
        try:
            await conn.send_message({"type": "websocket.accept"})
        except Exception:  # the client left while $connect ran: it never connected
            return
        self.front.connections.add(conn)
        code, reason = 1005, ""
        try:
            code, reason = await self._messages()
        finally:
            conn.closed = True
            self.front.connections.remove(conn.id)
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            disconnect = self.live.routes.get("$disconnect")
            if (
                disconnect is not None
                and disconnect.function is not None
                and self._may_invoke(disconnect)
            ):
                event = self._event("$disconnect", "DISCONNECT")
                event["requestContext"]["disconnectStatusCode"] = conn.close_code or code
                event["requestContext"]["disconnectReason"] = reason
                await self._invoke(disconnect, event)

    def _may_invoke(self, route: Route) -> bool:
        assert route.function is not None
        conn = self.connection
        return self.front.may_invoke(conn.api_id, conn.stage, route.key, route.function)

    async def _refuse_internal_error(self) -> None:
        """Refuse the handshake as API Gateway does when it cannot invoke the integration:
        HTTP 500 `{"message": "Internal server error"}` (a plain refusal if the server cannot
        send a response to a WebSocket handshake)."""
        send = self.connection.send_message
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1011})
            return
        body = json.dumps({"message": "Internal server error"}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})

    async def _connect_allowed(self, route: Route) -> bool:
        if route.function is None:
            return False
        event = self._event("$connect", "CONNECT")
        result = await self._invoke(route, event)
        if result is _FAILED:
            return False
        status = result.get("statusCode") if isinstance(result, dict) else None
        if status is None:
            return True  # no proxy response: API Gateway lets the connection through
        return isinstance(status, int) and 200 <= status < 300

    async def _messages(self) -> tuple[int, str]:
        """Serve messages until the connection closes: its close code and reason."""
        conn = self.connection
        deadline = conn.connected_at + self.front.max_duration_s
        while True:
            now = time.time()
            idle_left = conn.last_active + self.front.idle_timeout_s - now
            wait = min(idle_left, deadline - now)
            if wait <= 0:
                reason = "Connection duration exceeded" if deadline <= now else "Idle timeout"
                await conn.close(1001)
                await self._drain()
                return 1001, reason
            try:
                async with asyncio.timeout(wait):
                    message = await self.receive()
            except TimeoutError:
                continue  # re-checked above (a send may have kept it active)
            kind = message["type"]
            if kind == "websocket.disconnect":
                code = int(message.get("code", 1005))
                return code, str(message.get("reason") or "")
            if kind != "websocket.receive":
                continue
            await self.in_flight.acquire()  # released when the message's task ends
            conn.last_active = time.time()
            if message.get("bytes") is not None:
                body, binary = base64.b64encode(message["bytes"]).decode(), True
                raw: str | None = None
            else:
                raw = str(message.get("text") or "")
                body, binary = raw, False
            task = asyncio.get_running_loop().create_task(self._message(raw, body, binary))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.in_flight.release()

    async def _drain(self) -> None:
        """After a server-side close: wait for the client's answer (or give up)."""
        try:
            async with asyncio.timeout(5):
                while (await self.receive())["type"] != "websocket.disconnect":
                    pass
        except TimeoutError:
            pass

    async def _message(self, raw: str | None, body: str, binary: bool) -> None:
        route = self._select(raw)
        if route is None:
            await self._tell("Forbidden")
            return
        event = self._event(route.key, "MESSAGE")
        event["requestContext"]["messageId"] = ids.request_id()[:16]
        event["body"] = body
        event["isBase64Encoded"] = binary
        failed = route.function is None or not self._may_invoke(route)
        result: Any = None
        if not failed:
            result = await self._invoke(route, event)
            failed = result is _FAILED
        if failed:
            await self._tell("Internal server error")
            return
        if route.two_way:
            reply = _reply(result)
            if reply is not None:
                with contextlib.suppress(LaminaError):  # the client left meanwhile
                    await self.connection.send(reply)

    def _select(self, raw: str | None) -> Route | None:
        routes = self.live.routes
        selection = self.live.selection
        key = None if raw is None or selection is None else _route_key(selection, raw)
        # the key selects its route; `$connect`/`$disconnect` are never a message's
        if key is not None and key in routes and key not in ("$connect", "$disconnect"):
            return routes[key]
        return routes.get("$default")

    async def _tell(self, text: str) -> None:
        """API Gateway's own message to the client (Forbidden, Internal server error)."""
        message = {
            "message": text,
            "connectionId": self.connection.id,
            "requestId": ids.request_id(),
        }
        with contextlib.suppress(LaminaError):
            await self.connection.send(json.dumps(message).encode())

    def _event(self, route_key: str, event_type: str) -> dict[str, Any]:
        conn = self.connection
        now = time.time()
        request_id = ids.request_id()
        identity = {"sourceIp": conn.source_ip}
        if conn.user_agent:
            identity["userAgent"] = conn.user_agent
        context: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(int(now)),
            "messageDirection": "IN",
            "stage": conn.stage,
            "connectedAt": int(conn.connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": identity,
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": conn.id,
            "apiId": conn.api_id,
        }
        event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
        if event_type != "MESSAGE":
            headers: dict[str, str] = {}
            multi: dict[str, list[str]] = {}
            for name, value in self.headers:
                if name.lower() in ("sec-websocket-key",):
                    continue
                headers[name] = value if name not in headers else headers[name] + "," + value
                multi.setdefault(name, []).append(value)
            event["headers"] = headers
            event["multiValueHeaders"] = multi
        if event_type == "CONNECT":
            query = self.scope.get("query_string", b"").decode("latin-1")
            if query:
                pairs = parse_qsl(query, keep_blank_values=True)
                event["queryStringParameters"] = {k: v for k, v in pairs}
                mv: dict[str, list[str]] = {}
                for k, v in pairs:
                    mv.setdefault(k, []).append(v)
                event["multiValueQueryStringParameters"] = mv
        return event

    async def _invoke(self, route: Route, event: dict[str, Any]) -> Any:
        """The function's result (parsed JSON, or its text), or `_FAILED`."""
        assert route.function is not None
        request_id = event["requestContext"]["requestId"]
        # Past the integration timeout the client is told the message failed, but the
        # invocation is not cancelled: as on AWS, the function runs on to its own Timeout.
        # (One waiter and one timer rather than `wait_for(shield(...))`, which costs about
        # twice as much on every message.)
        loop = asyncio.get_running_loop()
        invocation = loop.create_task(run_function(self.state, route.function, event, request_id))
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(route.timeout_s, wake)
        invocation.add_done_callback(wake)
        try:
            await waiter
        except BaseException:  # cancelled (the server is stopping): nobody takes the outcome
            invocation.add_done_callback(_outcome_dropped)
            raise
        finally:
            timer.cancel()
            invocation.remove_done_callback(wake)
        if not invocation.done():  # the integration timeout
            invocation.add_done_callback(_outcome_dropped)
            return _FAILED
        try:
            result = invocation.result()
        except (TooLarge, LaminaError):
            return _FAILED
        if result.function_error:
            return _FAILED
        try:
            return json.loads(result.payload) if result.payload else None
        except ValueError:
            return result.payload.decode("utf-8", "replace")


_FAILED: Any = object()

#: the last second `_request_time` formatted, and its text (every message in a second shares it)
_stamp: tuple[int, str] = (-1, "")


def _request_time(second: int) -> str:
    """API Gateway's `requestTime` for an epoch second (`05/Dec/2026:21:14:55 +0000`)."""
    global _stamp
    if _stamp[0] != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
        _stamp = (second, text)
    return _stamp[1]


def _route_key(selection: Selection, raw: str) -> str | None:
    """The route key `selection` evaluates to for a message (None: a variable has no
    string or number value there, or the message is not JSON)."""
    body: Any = None
    parsed = False
    key = []
    for part in selection:
        if isinstance(part, str):
            key.append(part)
            continue
        if not parsed:
            try:
                body = json.loads(raw)
            except ValueError:
                return None
            parsed = True
        value = body
        for name in part:
            value = value.get(name) if isinstance(value, dict) else None
        # a string or number is the key's text (`true`, null or an object: no key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return None
        key.append(str(value))
    return "".join(key)


def _outcome_dropped(task: asyncio.Future[Any]) -> None:
    """An invocation that outlived its integration timeout: its outcome is nobody's."""
    if not task.cancelled():
        task.exception()


def _reply(result: Any) -> bytes | None:
    """What a two-way route sends back for a function's result (None: nothing)."""
    if result is None:
        return None
    if isinstance(result, dict) and ("body" in result or "statusCode" in result):
        body = result.get("body")
        if body is None:
            return None
        if result.get("isBase64Encoded") and isinstance(body, str):
            try:
                return base64.b64decode(body)
            except ValueError:
                return None
        return (body if isinstance(body, str) else json.dumps(body)).encode()
    if isinstance(result, str):
        return result.encode()
    return json.dumps(result).encode()
