"""HTTP routes on the wire: serving them under `/_http/` (API Gateway HTTP API behaviour), and
Lamina's own endpoints that manage them (`/lamina/routes`, for `lamina routes`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lamina import ids
from lamina.api.context import AppState, app_state
from lamina.api.http_front import (
    TooLarge,
    http_request,
    raw_path_of,
    read_body,
    run_function,
    send_response,
)
from lamina.api.wire import json_body, json_response
from lamina.arns import FunctionRef
from lamina.errors import InvalidParameterValueError, LaminaError, TooManyRequestsError
from lamina.events import http_payload as hp
from lamina.events.http_routes import DEFAULT_STAGE, HttpRoutes

#: where routes are served on Lamina's port
PREFIX = "/_http"


def _routes(state: AppState) -> HttpRoutes:
    routes = state.http_routes
    if routes is None:  # only a server built without routes (some unit tests)
        raise InvalidParameterValueError("This server has no HTTP routes.")
    return routes


def _message(status: int, message: str, request_id: str) -> hp.HttpResponse:
    """API Gateway's error answer: {"message": ...}."""
    return hp.HttpResponse(
        status,
        [("content-type", "application/json"), ("apigw-requestid", request_id)],
        f'{{"message":"{message}"}}'.encode(),
    )


class RouteFront:
    """Serves the HTTP routes: `/_http/<path>` for the `$default` stage,
    `/_http/<stage>/<path>` for a named one."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = ids.request_id()
        response = await self._serve(scope, receive, request_id)
        if not any(n == "apigw-requestid" for n, _ in response.headers):
            response.headers.append(("apigw-requestid", request_id))
        await send_response(response, send)

    async def _serve(self, scope: Scope, receive: Receive, request_id: str) -> hp.HttpResponse:
        routes = _routes(self.state)
        raw_path = raw_path_of(scope)[len(PREFIX) :] or "/"
        route_path = raw_path
        if routes.stage != DEFAULT_STAGE:
            stage = "/" + routes.stage
            if raw_path != stage and not raw_path.startswith(stage + "/"):
                return _message(404, "Not Found", request_id)
            route_path = raw_path[len(stage) :] or "/"
        found = routes.table.match(scope["method"], route_path)
        if found is None:
            return _message(404, "Not Found", request_id)
        route, params = found
        try:
            body = await read_body(receive)
        except TooLarge:
            return _message(413, "Request Entity Too Large", request_id)
        req = http_request(scope, raw_path, body)
        host = req.header("host") or ""
        target = hp.Target(
            request_id=request_id,
            account_id=self.state.settings.account_id,
            api_id=routes.api_id,
            domain_name=host,
            domain_prefix=host.split(".", 1)[0].split(":", 1)[0],
            stage=routes.stage,
            route_key=route.route_key,
            path_parameters=params or None,
        )
        if route.payload_format == "1.0":
            event = hp.event_v1(req, target, route.path or route.route_key)
        else:
            event = hp.event_v2(req, target)
        ref = FunctionRef(route.function_name, route.qualifier)
        try:
            result = await run_function(self.state, ref, event, request_id)
        except TooLarge:
            return _message(413, "Request Entity Too Large", request_id)
        except TooManyRequestsError:
            return _message(429, "Too Many Requests", request_id)
        except LaminaError:  # the function is gone, or cannot run
            return _message(500, "Internal Server Error", request_id)
        if result.function_error:
            return _message(500, "Internal Server Error", request_id)
        try:
            if route.payload_format == "1.0":
                return hp.response_v1(result.payload)
            return hp.response_v2(result.payload)
        except hp.BadResponse:
            return _message(500, "Internal Server Error", request_id)


# -- /lamina/routes ------------------------------------------------------------------------


def _listing(request: Request, routes: HttpRoutes) -> dict[str, Any]:
    settings = app_state(request).settings
    return {
        "stage": routes.stage,
        "apiId": routes.api_id,
        "baseUrl": settings.endpoint_url + routes.base_path(),
        "file": str(routes.path),
        "routes": [r.spec() for r in routes.table.routes],
    }


async def list_routes(request: Request) -> Response:
    return json_response(_listing(request, _routes(app_state(request))))


async def add_route(request: Request) -> Response:
    route = await _routes(app_state(request)).add(await json_body(request))
    return json_response(route.spec(), status=201)


async def remove_route(request: Request) -> Response:
    key = request.query_params.get("routeKey")
    if not key:
        raise InvalidParameterValueError("Name the route to remove: ?routeKey=GET%20/items/{id}")
    await _routes(app_state(request)).remove(key)
    return Response(status_code=204)
