"""Lamina's own endpoints for stack records (`/lamina/stacks`, for `lamina deploy --template`
and `lamina stacks`).

`PUT /lamina/stacks/{name}` takes `{"TemplatePath", "Parameters", "Resources", "Outputs",
"Status"}` and creates or replaces the record; a stack is answered as those members plus
`StackName`, `CreationTime` and `LastUpdatedTime`. Authorized as `lamina:PutStack`,
`lamina:GetStack`, `lamina:ListStacks` and `lamina:DeleteStack`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, timestamp
from lamina.control.stacks import StackService
from lamina.errors import ServiceError, ValidationError
from lamina.models import Stack

_PUT_MEMBERS = frozenset({"TemplatePath", "Parameters", "Resources", "Outputs", "Status"})


def _stacks(request: Request) -> StackService:
    stacks = app_state(request).stacks
    if stacks is None:  # only a server built without them (some unit tests)
        raise ServiceError("This server keeps no stacks.")
    return stacks


def stack_json(stack: Stack, *, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "StackName": stack.name,
        "StackStatus": stack.status,
        "TemplatePath": stack.template_path,
        "ResourceCount": len(stack.resources),
        "CreationTime": timestamp(stack.created),
        "LastUpdatedTime": timestamp(stack.updated),
    }
    if full:
        out["Parameters"] = stack.parameters
        out["Resources"] = stack.resources
        out["Outputs"] = stack.outputs
    return out


async def put_stack(request: Request) -> Response:
    body = await json_body(request)
    unknown = sorted(set(body) - _PUT_MEMBERS)
    if unknown:
        raise ValidationError(f"A stack has no member {', '.join(unknown)}.")
    stack = await _stacks(request).put(request.path_params["name"], body)
    return json_response({"Stack": stack_json(stack)})


async def get_stack(request: Request) -> Response:
    stack = await _stacks(request).get(request.path_params["name"])
    return json_response({"Stack": stack_json(stack)})


async def list_stacks(request: Request) -> Response:
    stacks = await _stacks(request).stacks()
    return json_response({"Stacks": [stack_json(s, full=False) for s in stacks]})


async def delete_stack(request: Request) -> Response:
    await _stacks(request).delete(request.path_params["name"])
    return Response(status_code=204)
