"""The apigatewayv2 API (restJson, `/v2/apis...`) for WebSocket APIs: wire ⇄ domain only.

Wire names are botocore's `locationName`s (lowerCamel); the control plane speaks the
members' names (PascalCase). User maps (tags, stage variables) keep their keys as given.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina import untrusted_json
from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.control.websocket_apis import WebSocketApis
from lamina.errors import BadRequestError, LaminaError, ServiceError

#: maps whose keys are the user's, not member names
_USER_MAPS = frozenset({"Tags", "StageVariables", "RouteSettings", "tags", "stageVariables"})


def _to_members(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k[:1].upper() + k[1:]: (v if k in _USER_MAPS else _to_members(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_to_members(v) for v in value]
    return value


def _to_wire(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k[:1].lower() + k[1:]: (v if k in _USER_MAPS else _to_wire(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    return value


def _apis(request: Request) -> WebSocketApis:
    apis = app_state(request).websockets
    if apis is None:
        raise ServiceError("WebSocket APIs are not available on this server")
    return apis


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        parsed = untrusted_json.loads(raw)
    except (LaminaError, ValueError):
        raise BadRequestError("Invalid input: the request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequestError("Invalid input: the request body must be a JSON object")
    return dict(_to_members(parsed))


def _out(data: Any, status: int = 200) -> Response:
    return json_response(_to_wire(data), status=status)


def _items(items: list[dict[str, Any]]) -> Response:
    return json_response({"items": _to_wire(items)})


def _p(request: Request, name: str) -> str:
    return str(request.path_params[name])


async def create_api(request: Request) -> Response:
    return _out(await _apis(request).create_api(await _body(request)), 201)


async def get_apis(request: Request) -> Response:
    return _items(await _apis(request).get_apis())


async def get_api(request: Request) -> Response:
    return _out(await _apis(request).get_api(_p(request, "api_id")))


async def update_api(request: Request) -> Response:
    return _out(await _apis(request).update_api(_p(request, "api_id"), await _body(request)))


async def delete_api(request: Request) -> Response:
    await _apis(request).delete_api(_p(request, "api_id"))
    return Response(status_code=204)


async def create_route(request: Request) -> Response:
    apis = _apis(request)
    return _out(await apis.create_route(_p(request, "api_id"), await _body(request)), 201)


async def get_routes(request: Request) -> Response:
    return _items(await _apis(request).get_routes(_p(request, "api_id")))


async def get_route(request: Request) -> Response:
    return _out(await _apis(request).get_route(_p(request, "api_id"), _p(request, "route_id")))


async def update_route(request: Request) -> Response:
    body = await _body(request)
    return _out(
        await _apis(request).update_route(_p(request, "api_id"), _p(request, "route_id"), body)
    )


async def delete_route(request: Request) -> Response:
    await _apis(request).delete_route(_p(request, "api_id"), _p(request, "route_id"))
    return Response(status_code=204)


async def create_route_response(request: Request) -> Response:
    body = await _body(request)
    apis = _apis(request)
    made = await apis.create_route_response(_p(request, "api_id"), _p(request, "route_id"), body)
    return _out(made, 201)


async def create_integration(request: Request) -> Response:
    apis = _apis(request)
    return _out(await apis.create_integration(_p(request, "api_id"), await _body(request)), 201)


async def get_integrations(request: Request) -> Response:
    return _items(await _apis(request).get_integrations(_p(request, "api_id")))


async def get_integration(request: Request) -> Response:
    apis = _apis(request)
    return _out(await apis.get_integration(_p(request, "api_id"), _p(request, "integration_id")))


async def update_integration(request: Request) -> Response:
    body = await _body(request)
    apis = _apis(request)
    changed = await apis.update_integration(
        _p(request, "api_id"), _p(request, "integration_id"), body
    )
    return _out(changed)


async def update_stage(request: Request) -> Response:
    body = await _body(request)
    return _out(
        await _apis(request).update_stage(_p(request, "api_id"), _p(request, "stage"), body)
    )


async def delete_integration(request: Request) -> Response:
    await _apis(request).delete_integration(_p(request, "api_id"), _p(request, "integration_id"))
    return Response(status_code=204)


async def create_stage(request: Request) -> Response:
    apis = _apis(request)
    return _out(await apis.create_stage(_p(request, "api_id"), await _body(request)), 201)


async def get_stages(request: Request) -> Response:
    return _items(await _apis(request).get_stages(_p(request, "api_id")))


async def get_stage(request: Request) -> Response:
    return _out(await _apis(request).get_stage(_p(request, "api_id"), _p(request, "stage")))


async def delete_stage(request: Request) -> Response:
    await _apis(request).delete_stage(_p(request, "api_id"), _p(request, "stage"))
    return Response(status_code=204)
