"""Lambda REST API: runtime management (2021-07-20) and recursion (2024-08-31) configs.
Parse, call control/, serialise."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response
from lamina.arns import FunctionRef
from lamina.store.function_settings import RuntimeManagementRow


def _ref(request: Request) -> FunctionRef:
    functions = app_state(request).functions
    return functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))


def _runtime_body(arn: str, row: RuntimeManagementRow) -> dict[str, Any]:
    out: dict[str, Any] = {"UpdateRuntimeOn": row.update_runtime_on, "FunctionArn": arn}
    if row.runtime_version_arn is not None:
        out["RuntimeVersionArn"] = row.runtime_version_arn
    return out


async def get_runtime_management_config(request: Request) -> Response:
    arn, row = app_state(request).functions.runtime_management.get(_ref(request))
    return json_response(_runtime_body(arn, row))


async def put_runtime_management_config(request: Request) -> Response:
    body = await json_body(request)
    management = app_state(request).functions.runtime_management
    arn, row = await management.put(
        _ref(request), body.get("UpdateRuntimeOn"), body.get("RuntimeVersionArn")
    )
    return json_response(_runtime_body(arn, row))


async def get_function_recursion_config(request: Request) -> Response:
    functions = app_state(request).functions
    loop = functions.recursion.get(functions.ref(request.path_params["name"]))
    return json_response({"RecursiveLoop": loop})


async def put_function_recursion_config(request: Request) -> Response:
    body = await json_body(request)
    functions = app_state(request).functions
    ref = functions.ref(request.path_params["name"])
    loop = await functions.recursion.put(ref, body.get("RecursiveLoop"))
    return json_response({"RecursiveLoop": loop})
