"""API Gateway APIs (`AWS::ApiGateway::RestApi` from SAM's Api events,
`AWS::ApiGatewayV2::Api` from HttpApi events) as Lamina HTTP routes (`/lamina/routes`).

The routes come from the OpenAPI `Body` the SAM translator writes: each path and method
whose `x-amazon-apigateway-integration` is a Lambda proxy (`uri` ending in
`functions/<function ARN>/invocations`) becomes the route `METHOD /path` to that function (or
alias); `x-amazon-apigateway-any-method` is `ANY`, the path `/$default` is `$default`. A REST
API's functions get the 1.0 payload; an HTTP API's the integration's `payloadFormatVersion`
(2.0 by default). Lamina serves every route under one prefix, so a route another API (or
`lamina routes add`) already holds fails the resource. Stages and deployments are accepted
and do nothing. Authorizers, models, CORS configuration: not served (a warning says so).
"""

from __future__ import annotations

import re
from typing import Any

from lamina.stacks import Physical, TemplateError
from lamina.stacks.client import ApiError
from lamina.stacks.kinds import Context, Record, ResourceFailed, stable_id

_URI = re.compile(r"functions/(arn:[^/]+)/invocations")
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
_ANY = "x-amazon-apigateway-any-method"


def routes_of(body: Any, rest: bool, logical_id: str) -> list[dict[str, str]]:
    """The routes (`routeKey`, `function`, `payloadFormatVersion`) an OpenAPI body asks for."""
    if not isinstance(body, dict):
        raise TemplateError("the API has no OpenAPI Body Lamina can read", logical_id=logical_id)
    out = []
    for path, methods in (body.get("paths") or {}).items():
        if not isinstance(methods, dict):
            continue
        for method, operation in methods.items():
            if method != _ANY and method.lower() not in _METHODS:
                continue
            integration = (operation or {}).get("x-amazon-apigateway-integration") or {}
            uri = integration.get("uri")
            m = _URI.search(uri) if isinstance(uri, str) else None
            if m is None:
                continue
            verb = "ANY" if method == _ANY else method.upper()
            key = "$default" if path == "/$default" else f"{verb} {path}"
            payload = "1.0" if rest else str(integration.get("payloadFormatVersion") or "2.0")
            out.append({"routeKey": key, "function": m[1], "payloadFormatVersion": payload})
    return out


class Api:
    def __init__(self, rest: bool) -> None:
        self.rest = rest

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        routes = routes_of(props.get("Body"), self.rest, logical_id)
        if not routes and props.get("BodyS3Location"):
            raise TemplateError(
                "BodyS3Location is not read: inline the Body", logical_id=logical_id
            )
        for unsupported in ("Auth", "CorsConfiguration", "Authorizers"):
            if props.get(unsupported):
                ctx.warn(f"{logical_id}: {unsupported} is not applied by Lamina's routes")
        listing = ctx.client.call("GET", "/lamina/routes")
        held = {r["routeKey"]: r["function"] for r in listing.get("routes", [])}
        for route in routes:
            if route["routeKey"] in held:
                raise ResourceFailed(
                    f"route {route['routeKey']} is already served (to {held[route['routeKey']]})"
                )
        added: list[str] = []
        try:
            for route in routes:
                ctx.client.call("POST", "/lamina/routes", route)
                added.append(route["routeKey"])
        except ApiError:
            self._remove(ctx, added)
            raise
        base = str(listing.get("baseUrl", f"{ctx.client.endpoint}/_http/")).rstrip("/")
        for key in added:
            path = key.split(" ", 1)[1] if " " in key else "/"
            ctx.notes.append(f"{logical_id}: {key} -> {base}{path}")
        api_id = stable_id(ctx.stack, logical_id)
        return Physical(
            ref=api_id,
            attributes={
                "RootResourceId": api_id,
                "ApiId": api_id,
                "ApiEndpoint": base,
                "Routes": added,
            },
        )

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        # Routes are cheap: take the old ones away and add the new ones (a failure puts the
        # old ones back through the engine's rollback, which calls `update` with them).
        self.delete(ctx, logical_id, old)
        return self.create(ctx, logical_id, props)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        self._remove(ctx, list(record.get("attributes", {}).get("Routes") or []))

    @staticmethod
    def _remove(ctx: Context, keys: list[str]) -> None:
        for key in keys:
            ctx.client.call("DELETE", "/lamina/routes", params={"routeKey": key}, ok_missing=True)


class Accepted:
    """A resource whose work is done elsewhere (an API's stage or deployment, CodeDeploy's
    application and deployment group for a DeploymentPreference): nothing to call."""

    def __init__(self, ref_from: str | None = None) -> None:
        self.ref_from = ref_from

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        ref = props.get(self.ref_from) if self.ref_from else None
        return Physical(ref=str(ref or stable_id(ctx.stack, logical_id)))

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        return self.create(ctx, logical_id, props)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        return None
