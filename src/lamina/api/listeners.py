"""Which listener a request came in on, and what each listener serves.

Lamina listens on up to three sockets, all served by the one app:
- the main address (`--host`/`--port`): every API, and `/metrics` unless it has a listener
  of its own;
- the sandbox listener, a loopback port of the server's choosing that only the namespace
  backend's relay connects to (a function's `AWS_ENDPOINT_URL` inside its sandbox): the APIs
  a function's role may call, but not `/health` and `/metrics`, which answer without a
  signature and would tell every function the names and states of all the others;
- the metrics listener (`--metrics-listen HOST:PORT`), if set: `/metrics` and `/health` only.

The listener is told by the port the connection was accepted on (the ASGI scope's `server`,
which the kernel reports for the socket), never by anything in the request: a function cannot
forge it, whatever headers it sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.errors import error_response
from lamina.errors import AccessDeniedError, LaminaError, UnknownOperationError

#: unsigned endpoints, for operators and their monitoring, never for functions
OPERATOR_PATHS = frozenset({"/health", "/metrics"})


@dataclass(frozen=True)
class Listeners:
    """The ports of the listeners besides the main one (None: not listening)."""

    #: where the namespace backend relays its sandboxes' connections to Lamina's API
    sandbox_port: int | None = None
    #: where `/metrics` is served instead of the main address (`--metrics-listen`)
    metrics_port: int | None = None


class ListenerGate:
    """The outermost ASGI wrapper: refuses what a request's listener does not serve.

    `front(scope)` says whether a request is for a function URL or an HTTP route (`HttpFront`
    serves those, whatever their path): `/metrics` there is the function's own path, not
    Lamina's metrics, and goes through."""

    def __init__(
        self, app: ASGIApp, listeners: Listeners, front: Callable[[Scope], Any] | None = None
    ) -> None:
        self.app = app
        self.listeners = listeners
        self.front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            port = server[1] if server else None
            path: str = scope["path"]
            refusal: LaminaError | None = None
            if port is not None and port == self.listeners.sandbox_port:
                if path in OPERATOR_PATHS and not self._fronted(scope):
                    refusal = AccessDeniedError(
                        f"{path} is not available from inside an execution environment"
                    )
            elif port is not None and port == self.listeners.metrics_port:
                if path not in OPERATOR_PATHS or self._fronted(scope):
                    refusal = UnknownOperationError(
                        f"No operation at {scope['method']} {path} (this is the metrics listener)"
                    )
            elif (
                path == "/metrics"
                and self.listeners.metrics_port is not None
                and not self._fronted(scope)
            ):
                refusal = UnknownOperationError(
                    "No operation at /metrics here: metrics are served on the metrics listener"
                )
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _fronted(self, scope: Scope) -> bool:
        return self.front is not None and self.front(scope) is not None
