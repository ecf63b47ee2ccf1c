"""`/lamina/keys`: access keys, for admin principals only (Lamina's own endpoints, read by
`lamina keys`). A key's secret is returned once, when it is made."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response
from lamina.auth.keys import AccessKey, KeyStore
from lamina.auth.principal import SCOPE_KEY, Principal
from lamina.errors import ResourceNotFoundError, ServiceError, UserError


class AccessDenied(UserError):
    error_type = "AccessDeniedException"
    status = 403


def _keys(request: Request) -> KeyStore:
    """The key store, if the caller is an admin principal."""
    keys = app_state(request).keys
    if keys is None:
        raise ServiceError("Authentication is off on this server (--auth off): it has no keys.")
    principal: Principal | None = request.scope.get(SCOPE_KEY)
    if principal is None or not principal.admin:
        arn = principal.arn if principal else "anonymous"
        raise AccessDenied(f"User: {arn} is not authorized to manage access keys")
    return keys


def _key(key: AccessKey) -> dict[str, object]:
    return {
        "AccessKeyId": key.access_key_id,
        "UserName": key.name,
        "Admin": key.admin,
        "Policies": list(key.policies),
        "CreateDate": datetime.fromtimestamp(key.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def list_keys(request: Request) -> Response:
    return json_response({"AccessKeys": [_key(k) for k in _keys(request).access_keys()]})


async def create_key(request: Request) -> Response:
    keys = _keys(request)
    name = str((await json_body(request)).get("UserName") or "lamina-user")
    key_id, secret = await keys.create_async(name)
    return json_response(
        {"AccessKeyId": key_id, "SecretAccessKey": secret, "UserName": name}, status=201
    )


async def delete_key(request: Request) -> Response:
    keys = _keys(request)
    key_id = request.path_params["key_id"]
    if not await keys.delete_async(key_id):
        raise ResourceNotFoundError(f"No access key {key_id}")
    return Response(status_code=204)


async def attach_policy(request: Request) -> Response:
    keys = _keys(request)
    key_id = request.path_params["key_id"]
    if key_id not in {k.access_key_id for k in keys.access_keys()}:
        raise ResourceNotFoundError(f"No access key {key_id}")
    key = await keys.attach_policy_async(key_id, await json_body(request))
    return json_response(_key(key))
