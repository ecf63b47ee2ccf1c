"""Lambda REST API (2025-11-30): capacity providers and function scaling configs. Parse,
call control/, serialise."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param
from lamina.control.scaling import ScalingConfig


async def create_capacity_provider(request: Request) -> Response:
    body = await json_body(request)
    provider = await app_state(request).functions.capacity.create(body)
    return json_response({"CapacityProvider": provider}, status=202)


async def get_capacity_provider(request: Request) -> Response:
    provider = app_state(request).functions.capacity.get(request.path_params["name"])
    return json_response({"CapacityProvider": provider})


async def update_capacity_provider(request: Request) -> Response:
    body = await json_body(request)
    capacity = app_state(request).functions.capacity
    provider = await capacity.update(request.path_params["name"], body)
    return json_response({"CapacityProvider": provider}, status=202)


async def delete_capacity_provider(request: Request) -> Response:
    provider = await app_state(request).functions.capacity.delete(request.path_params["name"])
    return json_response({"CapacityProvider": provider}, status=202)


async def list_capacity_providers(request: Request) -> Response:
    providers, marker = app_state(request).functions.capacity.list_providers(
        request.query_params.get("State"),
        request.query_params.get("Marker"),
        max_items_param(request),
    )
    out: dict[str, Any] = {"CapacityProviders": providers}
    if marker:
        out["NextMarker"] = marker
    return json_response(out)


async def list_function_versions_by_capacity_provider(request: Request) -> Response:
    arn, versions, marker = app_state(request).functions.capacity.versions(
        request.path_params["name"],
        request.query_params.get("Marker"),
        max_items_param(request),
    )
    out: dict[str, Any] = {"CapacityProviderArn": arn, "FunctionVersions": versions}
    if marker:
        out["NextMarker"] = marker
    return json_response(out)


def _scaling(config: ScalingConfig) -> dict[str, int]:
    out = {}
    if config.min_environments is not None:
        out["MinExecutionEnvironments"] = config.min_environments
    if config.max_environments is not None:
        out["MaxExecutionEnvironments"] = config.max_environments
    return out


async def get_function_scaling_config(request: Request) -> Response:
    functions = app_state(request).functions
    arn, applied, requested = functions.scaling.get(
        functions.ref(request.path_params["name"]), request.query_params.get("Qualifier")
    )
    return json_response(
        {
            "FunctionArn": arn,
            "AppliedFunctionScalingConfig": _scaling(applied),
            "RequestedFunctionScalingConfig": _scaling(requested),
        }
    )


async def put_function_scaling_config(request: Request) -> Response:
    functions = app_state(request).functions
    body = await json_body(request)
    config = await functions.scaling.put(
        functions.ref(request.path_params["name"]),
        request.query_params.get("Qualifier"),
        body.get("FunctionScalingConfig"),
    )
    return json_response({"FunctionState": config.state.value}, status=202)
