"""WebSocket APIs (API Gateway v2, `ProtocolType: WEBSOCKET`): their definitions and rules.

An API is one document (`store.websocket_apis`): its settings, and its routes, integrations
and stages by id. Every change reads the document, checks it, and writes it back whole, in a
thread (the store is blocking). Every read goes to the database: APIs change rarely, a
connection reads its API once when it opens, and so every node of a cluster sees an API as
soon as it is written, with no change feed to miss.

Only what WebSocket APIs use is kept: Lambda proxy integrations (`AWS_PROXY`) to a function
(by name, ARN, version or alias, or API Gateway's `arn:aws:apigateway:...:lambda:path/...`
form). HTTP APIs are refused with BadRequestException.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from lamina import limits
from lamina.arns import FunctionRef, parse_function_ref
from lamina.errors import BadRequestError, ConflictError, LaminaError, NotFoundError
from lamina.store.websocket_apis import WebSocketApiStore

_T = TypeVar("_T")

#: API Gateway's ids: 10 lower-case letters and digits
_ID_CHARS = string.ascii_lowercase + string.digits
#: the parts of a route selection expression (API Gateway's selection expression language:
#: `$request.body.<path>` or `${request.body.<path>}` variables, `\$` for a literal `$`,
#: other text as it is); Lamina evaluates the message body's variables, which routing uses
_SELECTION_PART = re.compile(
    r"(?P<escaped>\\\$)"
    r"|\$\{request\.body\.(?P<braced>[A-Za-z0-9_\-.]+)\}"
    r"|\$request\.body\.(?P<bare>[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)"
    r"|(?P<literal>[^$\\]+|\\)"
)

#: a parsed route selection expression: literal text, and paths into the JSON body
Selection = tuple[str | tuple[str, ...], ...]
#: API Gateway's Lambda integration URI form: `.../functions/<function ARN>/invocations`
_APIGW_LAMBDA_URI = re.compile(
    r"arn:aws:apigateway:([a-z0-9-]+):lambda:path/2015-03-31/functions/(.+)/invocations"
)
_STAGE_NAME = re.compile(r"[A-Za-z0-9_\-$]{1,128}")
_SPECIAL_ROUTES = ("$connect", "$disconnect", "$default")

#: fields of the API's wire shape (its document also keeps routes, integrations and stages)
API_FIELDS = (
    "ApiId",
    "Name",
    "ProtocolType",
    "RouteSelectionExpression",
    "ApiKeySelectionExpression",
    "Description",
    "DisableSchemaValidation",
    "DisableExecuteApiEndpoint",
    "Version",
    "Tags",
    "CreatedDate",
)


def _new_id() -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(10))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _string(body: dict[str, Any], key: str, *, required: bool = False, max_len: int = 1024) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequestError(f"Invalid input: {key[0].lower() + key[1:]} is required")
        return None
    if not isinstance(value, str) or len(value) > max_len or (required and not value):
        raise BadRequestError(f"Invalid input: {key[0].lower() + key[1:]} is not valid")
    return value


@dataclass(frozen=True)
class Route:
    """What the data plane needs of one route: the function its integration calls and
    whether the route answers the client (two-way: it has a RouteResponseSelectionExpression
    or a route response)."""

    key: str
    function: FunctionRef | None
    two_way: bool
    #: the integration's TimeoutInMillis, in seconds
    timeout_s: float = limits.WEBSOCKET_INTEGRATION_TIMEOUT_S


@dataclass(frozen=True)
class LiveApi:
    """An API as a connection sees it when it opens (its routes resolved once)."""

    api_id: str
    selection: Selection | None
    routes: dict[str, Route]
    stages: frozenset[str]


class WebSocketApis:
    """The apigatewayv2 control plane for WebSocket APIs."""

    def __init__(self, store: WebSocketApiStore, region: str, account: str, endpoint: str) -> None:
        self.store = store
        self.region = region
        self.account = account
        #: `ws://host:port`, the front of every ApiEndpoint
        self.ws_endpoint = "ws" + endpoint.removeprefix("http")
        #: serializes this node's read-modify-write of documents
        self._lock = asyncio.Lock()

    # -- APIs ------------------------------------------------------------------

    def api_endpoint(self, api_id: str) -> str:
        return f"{self.ws_endpoint}/ws/{api_id}"

    def api_view(self, doc: dict[str, Any]) -> dict[str, Any]:
        view = {k: doc[k] for k in API_FIELDS if doc.get(k) is not None}
        view["ApiEndpoint"] = self.api_endpoint(doc["ApiId"])
        view["ApiGatewayManaged"] = False
        return view

    async def create_api(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _string(body, "Name", required=True, max_len=128)
        protocol = _string(body, "ProtocolType", required=True)
        if protocol not in ("WEBSOCKET", "HTTP"):
            raise BadRequestError(
                f"Invalid input: protocolType must be one of [WEBSOCKET, HTTP], got {protocol}"
            )
        if protocol == "HTTP":
            raise BadRequestError(
                "Lamina serves WebSocket APIs only: ProtocolType HTTP is not supported (use "
                "function URLs or `lamina routes` for HTTP)"
            )
        expression = _string(body, "RouteSelectionExpression", required=True, max_len=256)
        self._selection_path(expression)
        for key in ("Target", "RouteKey", "CredentialsArn", "CorsConfiguration"):
            if body.get(key) is not None:
                raise BadRequestError(f"{key} is not supported for WebSocket APIs")
        tags = body.get("Tags")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise BadRequestError("Invalid input: tags is not valid")
        doc: dict[str, Any] = {
            "ApiId": _new_id(),
            "Name": name,
            "ProtocolType": "WEBSOCKET",
            "RouteSelectionExpression": expression,
            "ApiKeySelectionExpression": _string(body, "ApiKeySelectionExpression")
            or "$request.header.x-api-key",
            "Description": _string(body, "Description"),
            "DisableSchemaValidation": bool(body.get("DisableSchemaValidation", False)),
            "DisableExecuteApiEndpoint": bool(body.get("DisableExecuteApiEndpoint", False)),
            "Version": _string(body, "Version", max_len=64),
            "Tags": tags or {},
            "CreatedDate": _now(),
            "routes": {},
            "integrations": {},
            "stages": {},
        }
        await asyncio.to_thread(self.store.insert, doc["ApiId"], doc)
        return self.api_view(doc)

    async def get_api(self, api_id: str) -> dict[str, Any]:
        return self.api_view(await self._doc(api_id))

    async def get_apis(self) -> list[dict[str, Any]]:
        return [self.api_view(d) for d in await asyncio.to_thread(self.store.all)]

    async def delete_api(self, api_id: str) -> None:
        if not await asyncio.to_thread(self.store.delete, api_id):
            raise _not_found("API", api_id)

    async def update_api(self, api_id: str, body: dict[str, Any]) -> dict[str, Any]:
        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            for key in ("Name", "Description", "Version", "RouteSelectionExpression"):
                value = _string(body, key, max_len=1024)
                if value is not None:
                    if key == "RouteSelectionExpression":
                        self._selection_path(value)
                    doc[key] = value
            return self.api_view(doc)

        return await self._change(api_id, change)

    # -- routes ----------------------------------------------------------------

    async def create_route(self, api_id: str, body: dict[str, Any]) -> dict[str, Any]:
        key = _string(body, "RouteKey", required=True, max_len=128)
        target = _string(body, "Target", max_len=128)
        rrse = _string(body, "RouteResponseSelectionExpression", max_len=256)
        if rrse is not None and rrse != "$default":
            raise BadRequestError(
                "Invalid input: routeResponseSelectionExpression must be $default for "
                "WebSocket APIs"
            )

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            routes = doc["routes"]
            if any(r["RouteKey"] == key for r in routes.values()):
                raise ConflictError(
                    f"Unable to complete operation due to concurrent "
                    f"modification. Route with key {key} already exists"
                )
            if len(routes) >= limits.WEBSOCKET_ROUTES_PER_API_MAX:
                raise BadRequestError("Maximum number of Routes for this API has been reached")
            if target is not None:
                self._check_target(doc, target)
            route = {
                "RouteId": _new_id(),
                "RouteKey": key,
                "Target": target,
                "RouteResponseSelectionExpression": rrse,
                "AuthorizationType": _string(body, "AuthorizationType") or "NONE",
                "ApiKeyRequired": bool(body.get("ApiKeyRequired", False)),
                "OperationName": _string(body, "OperationName", max_len=64),
                "ApiGatewayManaged": False,
            }
            routes[route["RouteId"]] = route
            return _clean(route)

        return await self._change(api_id, change)

    async def update_route(
        self, api_id: str, route_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            route = doc["routes"].get(route_id)
            if route is None:
                raise _not_found("Route", route_id)
            target = _string(body, "Target", max_len=128)
            if target is not None:
                self._check_target(doc, target)
                route["Target"] = target
            key = _string(body, "RouteKey", max_len=128)
            if key is not None and key != route["RouteKey"]:
                if any(r["RouteKey"] == key for r in doc["routes"].values()):
                    raise ConflictError(f"Route with key {key} already exists")
                route["RouteKey"] = key
            rrse = _string(body, "RouteResponseSelectionExpression", max_len=256)
            if rrse is not None:
                route["RouteResponseSelectionExpression"] = rrse
            return _clean(route)

        return await self._change(api_id, change)

    async def get_route(self, api_id: str, route_id: str) -> dict[str, Any]:
        route = (await self._doc(api_id))["routes"].get(route_id)
        if route is None:
            raise _not_found("Route", route_id)
        return _clean(route)

    async def get_routes(self, api_id: str) -> list[dict[str, Any]]:
        return [_clean(r) for r in (await self._doc(api_id))["routes"].values()]

    async def delete_route(self, api_id: str, route_id: str) -> None:
        async def change(doc: dict[str, Any]) -> None:
            if doc["routes"].pop(route_id, None) is None:
                raise _not_found("Route", route_id)

        await self._change(api_id, change)

    async def create_route_response(
        self, api_id: str, route_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = _string(body, "RouteResponseKey", required=True, max_len=128)
        if key != "$default":
            raise BadRequestError("Invalid input: routeResponseKey must be $default")

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            route = doc["routes"].get(route_id)
            if route is None:
                raise _not_found("Route", route_id)
            response = {"RouteResponseId": _new_id(), "RouteResponseKey": key}
            route["RouteResponse"] = response
            return response

        return await self._change(api_id, change)

    # -- integrations ----------------------------------------------------------

    async def create_integration(self, api_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = _string(body, "IntegrationType", required=True)
        if kind != "AWS_PROXY":
            raise BadRequestError(
                f"Lamina supports IntegrationType AWS_PROXY (a Lambda function) only, got {kind}"
            )
        uri = _string(body, "IntegrationUri", required=True, max_len=2048)
        self.function_of(uri)  # refuses what names no function
        timeout = body.get("TimeoutInMillis", limits.WEBSOCKET_INTEGRATION_TIMEOUT_S * 1000)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 50 <= timeout <= 29_000:
            raise BadRequestError("Invalid input: timeoutInMillis must be between 50 and 29000")

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            integrations = doc["integrations"]
            if len(integrations) >= limits.WEBSOCKET_INTEGRATIONS_PER_API_MAX:
                raise BadRequestError(
                    "Maximum number of Integrations for this API has been reached"
                )
            integration = {
                "IntegrationId": _new_id(),
                "IntegrationType": kind,
                "IntegrationUri": uri,
                "IntegrationMethod": _string(body, "IntegrationMethod") or "POST",
                "ConnectionType": "INTERNET",
                "ContentHandlingStrategy": _string(body, "ContentHandlingStrategy"),
                "Description": _string(body, "Description"),
                "PassthroughBehavior": _string(body, "PassthroughBehavior") or "WHEN_NO_MATCH",
                "PayloadFormatVersion": "1.0",
                "TimeoutInMillis": timeout,
                "ApiGatewayManaged": False,
            }
            integrations[integration["IntegrationId"]] = integration
            return _clean(integration)

        return await self._change(api_id, change)

    async def update_integration(
        self, api_id: str, integration_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        kind = _string(body, "IntegrationType")
        if kind is not None and kind != "AWS_PROXY":
            raise BadRequestError(
                f"Lamina supports IntegrationType AWS_PROXY (a Lambda function) only, got {kind}"
            )
        uri = _string(body, "IntegrationUri", max_len=2048)
        if uri is not None:
            self.function_of(uri)
        timeout = body.get("TimeoutInMillis")
        if timeout is not None and (
            not isinstance(timeout, int) or isinstance(timeout, bool) or not 50 <= timeout <= 29_000
        ):
            raise BadRequestError("Invalid input: timeoutInMillis must be between 50 and 29000")
        description = _string(body, "Description")

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            integration = doc["integrations"].get(integration_id)
            if integration is None:
                raise _not_found("Integration", integration_id)
            for key, value in (
                ("IntegrationUri", uri),
                ("TimeoutInMillis", timeout),
                ("Description", description),
            ):
                if value is not None:
                    integration[key] = value
            return _clean(integration)

        return await self._change(api_id, change)

    async def get_integration(self, api_id: str, integration_id: str) -> dict[str, Any]:
        found = (await self._doc(api_id))["integrations"].get(integration_id)
        if found is None:
            raise _not_found("Integration", integration_id)
        return _clean(found)

    async def get_integrations(self, api_id: str) -> list[dict[str, Any]]:
        return [_clean(i) for i in (await self._doc(api_id))["integrations"].values()]

    async def delete_integration(self, api_id: str, integration_id: str) -> None:
        async def change(doc: dict[str, Any]) -> None:
            if integration_id not in doc["integrations"]:
                raise _not_found("Integration", integration_id)
            target = f"integrations/{integration_id}"
            if any(r.get("Target") == target for r in doc["routes"].values()):
                raise ConflictError(
                    f"Cannot delete Integration {integration_id}: it is the target of a route"
                )
            del doc["integrations"][integration_id]

        await self._change(api_id, change)

    # -- stages ----------------------------------------------------------------

    async def create_stage(self, api_id: str, body: dict[str, Any]) -> dict[str, Any]:
        name = _string(body, "StageName", required=True, max_len=128)
        if not _STAGE_NAME.fullmatch(name) or name == "@connections":
            raise BadRequestError(
                "Stage name only allows a-zA-Z0-9_ and must be between 1 and 128 characters"
            )
        variables = body.get("StageVariables") or {}
        if not isinstance(variables, dict):
            raise BadRequestError("Invalid input: stageVariables is not valid")

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            stages = doc["stages"]
            if name in stages:
                raise ConflictError(f"Stage already exists: {name}")
            if len(stages) >= limits.WEBSOCKET_STAGES_PER_API_MAX:
                raise BadRequestError("Maximum number of Stages for this API has been reached")
            now = _now()
            stage = {
                "StageName": name,
                "Description": _string(body, "Description"),
                "AutoDeploy": bool(body.get("AutoDeploy", False)),
                "DeploymentId": _string(body, "DeploymentId"),
                "StageVariables": variables,
                "Tags": body.get("Tags") or {},
                "CreatedDate": now,
                "LastUpdatedDate": now,
                "DefaultRouteSettings": {
                    "DataTraceEnabled": False,
                    "DetailedMetricsEnabled": False,
                },
                "RouteSettings": {},
                "ApiGatewayManaged": False,
            }
            stages[name] = stage
            return _clean(stage)

        return await self._change(api_id, change)

    async def update_stage(self, api_id: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        description = _string(body, "Description")
        variables = body.get("StageVariables")
        if variables is not None and not (
            isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())
        ):
            raise BadRequestError("Invalid input: stageVariables is not valid")

        async def change(doc: dict[str, Any]) -> dict[str, Any]:
            stage = doc["stages"].get(name)
            if stage is None:
                raise NotFoundError(
                    f"Invalid stage identifier specified: {name}", resourceType="Stage"
                )
            if description is not None:
                stage["Description"] = description
            if variables is not None:
                stage["StageVariables"] = variables
            if body.get("AutoDeploy") is not None:
                stage["AutoDeploy"] = bool(body["AutoDeploy"])
            stage["LastUpdatedDate"] = _now()
            return _clean(stage)

        return await self._change(api_id, change)

    async def get_stage(self, api_id: str, name: str) -> dict[str, Any]:
        found = (await self._doc(api_id))["stages"].get(name)
        if found is None:
            raise NotFoundError(f"Invalid stage identifier specified: {name}", resourceType="Stage")
        return _clean(found)

    async def get_stages(self, api_id: str) -> list[dict[str, Any]]:
        return [_clean(s) for s in (await self._doc(api_id))["stages"].values()]

    async def delete_stage(self, api_id: str, name: str) -> None:
        async def change(doc: dict[str, Any]) -> None:
            if doc["stages"].pop(name, None) is None:
                raise NotFoundError(
                    f"Invalid stage identifier specified: {name}", resourceType="Stage"
                )

        await self._change(api_id, change)

    # -- the data plane's view -------------------------------------------------

    async def live(self, api_id: str) -> LiveApi | None:
        """The API as a new connection uses it; None if there is no such API."""
        doc = await asyncio.to_thread(self.store.get, api_id)
        if doc is None:
            return None
        routes: dict[str, Route] = {}
        for route in doc["routes"].values():
            function = None
            timeout_s: float = limits.WEBSOCKET_INTEGRATION_TIMEOUT_S
            target = route.get("Target") or ""
            integration = doc["integrations"].get(target.removeprefix("integrations/"))
            if integration is not None:
                timeout_s = integration.get("TimeoutInMillis", 29_000) / 1000
                try:
                    function = self.function_of(integration["IntegrationUri"])
                except LaminaError:
                    function = None
            two_way = bool(
                route.get("RouteResponseSelectionExpression") or route.get("RouteResponse")
            )
            routes[route["RouteKey"]] = Route(route["RouteKey"], function, two_way, timeout_s)
        try:
            selection: Selection | None = self._selection_path(doc["RouteSelectionExpression"])
        except BadRequestError:
            selection = None
        return LiveApi(api_id, selection, routes, frozenset(doc["stages"]))

    def function_of(self, uri: str) -> FunctionRef:
        """The function an integration's URI names (BadRequestException if none)."""
        m = _APIGW_LAMBDA_URI.fullmatch(uri)
        if m is not None:
            uri = m[2]
        try:
            return parse_function_ref(
                uri, region=self.region, account=self.account, field_name="integrationUri"
            )
        except LaminaError as e:
            raise BadRequestError(f"Invalid integration URI specified: {e.message}") from None

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _selection_path(expression: str) -> Selection:
        """The parts of a route selection expression (BadRequestException for a variable
        Lamina cannot evaluate: only the message body's are)."""
        parts: list[str | tuple[str, ...]] = []
        at = 0
        while at < len(expression):
            m = _SELECTION_PART.match(expression, at)
            if m is None:
                raise BadRequestError(
                    f"Invalid selection expression specified: {expression} (Lamina routes "
                    "WebSocket messages by $request.body.<path> or ${request.body.<path>})"
                )
            if m["escaped"]:
                parts.append("$")
            elif m["braced"] or m["bare"]:
                parts.append(tuple((m["braced"] or m["bare"]).split(".")))
            else:
                parts.append(m["literal"])
            at = m.end()
        if not parts:
            raise BadRequestError("Invalid selection expression specified: it is empty")
        return tuple(parts)

    @staticmethod
    def _check_target(doc: dict[str, Any], target: str) -> None:
        integration_id = target.removeprefix("integrations/")
        if not target.startswith("integrations/") or integration_id not in doc["integrations"]:
            raise BadRequestError(f"Invalid target specified: {target}")

    async def _doc(self, api_id: str) -> dict[str, Any]:
        doc = await asyncio.to_thread(self.store.get, api_id)
        if doc is None:
            raise _not_found("API", api_id)
        return doc

    async def _change(self, api_id: str, change: Callable[[dict[str, Any]], Awaitable[_T]]) -> _T:
        """Read the API's document, let `change` edit it (it raises to refuse: nothing is
        written then), and write it back whole."""
        async with self._lock:
            doc = await self._doc(api_id)
            result = await change(doc)
            if not await asyncio.to_thread(self.store.replace, api_id, doc):
                raise _not_found("API", api_id)
        return result


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v is not None}


def _not_found(kind: str, ident: str) -> NotFoundError:
    return NotFoundError(f"Invalid {kind} identifier specified {ident}", resourceType=kind)


SPECIAL_ROUTES = _SPECIAL_ROUTES
