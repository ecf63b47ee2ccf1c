"""Lambda REST API (2026-07-09): a resource's whole policy document by ARN
(GetResourcePolicy, PutResourcePolicy, DeleteResourcePolicy). Parse, call control/,
serialise."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response


async def get_resource_policy(request: Request) -> Response:
    text, revision = app_state(request).functions.resource_policies.get(request.path_params["arn"])
    return json_response({"Policy": text, "RevisionId": revision})


async def put_resource_policy(request: Request) -> Response:
    body = await json_body(request)
    text, revision = await app_state(request).functions.resource_policies.put(
        request.path_params["arn"], body.get("Policy"), body.get("RevisionId")
    )
    return json_response({"Policy": text, "RevisionId": revision})


async def delete_resource_policy(request: Request) -> Response:
    await app_state(request).functions.resource_policies.delete(
        request.path_params["arn"], request.query_params.get("RevisionId")
    )
    return Response(status_code=204)
