"""Lambda REST API: reserved concurrency and account settings. Parse, call control/, serialise."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina import limits
from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param, timestamp
from lamina.arns import FunctionRef
from lamina.control.provisioned import ProvisionedConfig
from lamina.errors import InvalidParameterValueError


def _ref(request: Request) -> FunctionRef:
    return app_state(request).functions.ref(request.path_params["name"])


async def put_function_concurrency(request: Request) -> Response:
    body = await json_body(request)
    unknown = sorted(k for k in body if k != "ReservedConcurrentExecutions")
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unknown)} yet.")
    concurrency = app_state(request).functions.concurrency
    limit = await concurrency.put(_ref(request), body.get("ReservedConcurrentExecutions"))
    return json_response({"ReservedConcurrentExecutions": limit})


async def get_function_concurrency(request: Request) -> Response:
    limit = app_state(request).functions.concurrency.get(_ref(request))
    return json_response({} if limit is None else {"ReservedConcurrentExecutions": limit})


async def delete_function_concurrency(request: Request) -> Response:
    await app_state(request).functions.concurrency.delete(_ref(request))
    return Response(status_code=204)


async def get_account_settings(request: Request) -> Response:
    account = app_state(request).functions.concurrency.account()
    return json_response(
        {
            "AccountLimit": {
                "TotalCodeSize": limits.TOTAL_CODE_SIZE_MAX_BYTES,
                "CodeSizeUnzipped": limits.UNZIPPED_MAX_BYTES,
                "CodeSizeZipped": limits.ZIP_UPLOAD_MAX_BYTES,
                "ConcurrentExecutions": account["concurrent_executions"],
                "UnreservedConcurrentExecutions": account["unreserved"],
            },
            "AccountUsage": {
                "TotalCodeSize": account["total_code_size"],
                "FunctionCount": account["function_count"],
            },
        }
    )


def _provisioned_body(request: Request, config: ProvisionedConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "RequestedProvisionedConcurrentExecutions": config.requested,
        "AvailableProvisionedConcurrentExecutions": config.allocated,
        "AllocatedProvisionedConcurrentExecutions": config.allocated,
        "Status": config.status,
        "LastModified": timestamp(config.last_modified),
    }
    if config.status_reason:
        out["StatusReason"] = config.status_reason
    return out


def _qualified(request: Request) -> FunctionRef:
    functions = app_state(request).functions
    return functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))


async def put_provisioned_concurrency(request: Request) -> Response:
    body = await json_body(request)
    unknown = sorted(k for k in body if k != "ProvisionedConcurrentExecutions")
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unknown)} yet.")
    provisioned = app_state(request).functions.provisioned
    config = await provisioned.put(_qualified(request), body.get("ProvisionedConcurrentExecutions"))
    return json_response(_provisioned_body(request, config), status=202)


async def get_provisioned_concurrency(request: Request) -> Response:
    functions = app_state(request).functions
    if request.query_params.get("List") is not None:
        # ListProvisionedConcurrencyConfigs shares the path, with ?List=ALL.
        name = functions.ref(request.path_params["name"]).name
        configs, marker = functions.provisioned.list_configs(
            name, request.query_params.get("Marker"), max_items_param(request)
        )
        out: dict[str, Any] = {
            "ProvisionedConcurrencyConfigs": [
                {
                    "FunctionArn": functions.arn(c.function_name, c.qualifier),
                    **_provisioned_body(request, c),
                }
                for c in configs
            ]
        }
        if marker:
            out["NextMarker"] = marker
        return json_response(out)
    config = functions.provisioned.get(_qualified(request))
    return json_response(_provisioned_body(request, config))


async def delete_provisioned_concurrency(request: Request) -> Response:
    await app_state(request).functions.provisioned.delete(_qualified(request))
    return Response(status_code=204)
