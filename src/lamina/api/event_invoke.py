"""Lambda REST API (2019-09-25): asynchronous invocation settings, the FunctionEventInvokeConfig
operations. Parse, call control/, serialise."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import epoch_seconds, json_body, json_response, max_items_param
from lamina.arns import FunctionRef
from lamina.errors import InvalidParameterValueError
from lamina.models import EventInvokeConfig

_MEMBERS = {"MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"}


def event_invoke_config(request: Request, config: EventInvokeConfig) -> dict[str, Any]:
    """FunctionEventInvokeConfig, as Lambda spells it: the ARN qualified (`:$LATEST` too),
    unset settings left out, DestinationConfig always there with both members."""
    functions = app_state(request).functions
    out: dict[str, Any] = {
        "LastModified": epoch_seconds(config.last_modified),
        "FunctionArn": functions.arn(config.function_name, config.qualifier),
        "DestinationConfig": {
            "OnSuccess": {} if config.on_success is None else {"Destination": config.on_success},
            "OnFailure": {} if config.on_failure is None else {"Destination": config.on_failure},
        },
    }
    if config.maximum_retry_attempts is not None:
        out["MaximumRetryAttempts"] = config.maximum_retry_attempts
    if config.maximum_event_age_s is not None:
        out["MaximumEventAgeInSeconds"] = config.maximum_event_age_s
    return out


def _ref(request: Request) -> FunctionRef:
    return app_state(request).functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier"), namespaced=True
    )


async def _settings(request: Request) -> tuple[Any, Any, Any]:
    body = await json_body(request)
    unknown = sorted(k for k, val in body.items() if k not in _MEMBERS and val is not None)
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unknown)} yet.")
    return (
        body.get("MaximumRetryAttempts"),
        body.get("MaximumEventAgeInSeconds"),
        body.get("DestinationConfig"),
    )


async def put_event_invoke_config(request: Request) -> Response:
    ref = _ref(request)
    retries, event_age, destinations = await _settings(request)
    config = await app_state(request).functions.event_invoke.put(
        ref, retries, event_age, destinations
    )
    return json_response(event_invoke_config(request, config))


async def update_event_invoke_config(request: Request) -> Response:
    ref = _ref(request)
    retries, event_age, destinations = await _settings(request)
    config = await app_state(request).functions.event_invoke.update(
        ref, retries, event_age, destinations
    )
    return json_response(event_invoke_config(request, config))


async def get_event_invoke_config(request: Request) -> Response:
    config = app_state(request).functions.event_invoke.get(_ref(request))
    return json_response(event_invoke_config(request, config))


async def delete_event_invoke_config(request: Request) -> Response:
    await app_state(request).functions.event_invoke.delete(_ref(request))
    return Response(status_code=204)


async def list_event_invoke_configs(request: Request) -> Response:
    functions = app_state(request).functions
    configs, marker = functions.event_invoke.list_configs(
        functions.ref(request.path_params["name"], namespaced=True),
        request.query_params.get("Marker"),
        max_items_param(request),
    )
    out: dict[str, Any] = {
        "FunctionEventInvokeConfigs": [event_invoke_config(request, c) for c in configs]
    }
    if marker:
        out["NextMarker"] = marker
    return json_response(out)
