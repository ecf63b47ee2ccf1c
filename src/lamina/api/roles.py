"""Lamina's own endpoints for execution roles (`/lamina/roles`, for `lamina roles`).

`PUT /lamina/roles/{name}` takes `{"Policies": [document, ...], "Description": ...,
"Path": "/a/b/"}` (`Policies` may be one document) and creates or replaces the role. A role
is answered as `{"RoleName", "Path", "Arn", "Description", "Policies", "CreateDate"}`, as
IAM's Role shape names those members.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, timestamp
from lamina.control.roles import RoleService
from lamina.errors import InvalidParameterValueError, ServiceError
from lamina.models import Role

_PUT_MEMBERS = frozenset({"Policies", "Description", "Path"})


def _roles(request: Request) -> RoleService:
    roles = app_state(request).roles
    if roles is None:  # only a server built without roles (some unit tests)
        raise ServiceError("This server has no execution roles.")
    return roles


def role_json(role: Role) -> dict[str, Any]:
    return {
        "RoleName": role.name,
        "Path": role.path,
        "Arn": role.arn,
        "Description": role.description,
        "Policies": list(role.policies),
        "CreateDate": timestamp(role.created),
    }


async def put_role(request: Request) -> Response:
    body = await json_body(request)
    unknown = sorted(set(body) - _PUT_MEMBERS)
    if unknown:
        raise InvalidParameterValueError(f"A role has no member {', '.join(unknown)}.")
    role = await _roles(request).put(
        request.path_params["name"], body.get("Policies"), body.get("Description"), body.get("Path")
    )
    return json_response({"Role": role_json(role)})


async def get_role(request: Request) -> Response:
    return json_response({"Role": role_json(_roles(request).get(request.path_params["name"]))})


async def list_roles(request: Request) -> Response:
    return json_response({"Roles": [role_json(r) for r in _roles(request).roles()]})


async def delete_role(request: Request) -> Response:
    await _roles(request).delete(request.path_params["name"])
    return Response(status_code=204)
