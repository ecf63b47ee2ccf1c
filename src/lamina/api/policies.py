"""Lambda REST API (2015-03-31): a function's resource-based policy (AddPermission,
RemovePermission, GetPolicy). Parse, call control/, serialise."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response
from lamina.arns import FunctionRef
from lamina.control.function_policies import PermissionInput
from lamina.errors import InvalidParameterValueError

# AddPermission's body members -> PermissionInput's fields
_MEMBERS = {
    "StatementId": "statement_id",
    "Action": "action",
    "Principal": "principal",
    "SourceArn": "source_arn",
    "SourceAccount": "source_account",
    "EventSourceToken": "event_source_token",
    "PrincipalOrgID": "principal_org_id",
    "FunctionUrlAuthType": "function_url_auth_type",
    "InvokedViaFunctionUrl": "invoked_via_function_url",
    "RevisionId": "revision_id",
}


def _ref(request: Request) -> FunctionRef:
    return app_state(request).functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier")
    )


async def add_permission(request: Request) -> Response:
    ref = _ref(request)
    body = await json_body(request)
    req = PermissionInput()
    unknown = []
    for key, value in body.items():
        if key in _MEMBERS:
            setattr(req, _MEMBERS[key], value)
        elif value not in (None, False):
            # Anything newer than this server: refused rather than ignored.
            unknown.append(key)
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(sorted(unknown))}.")
    statement = await app_state(request).functions.policies.add(ref, req)
    return json_response({"Statement": json.dumps(statement, separators=(",", ":"))}, status=201)


async def remove_permission(request: Request) -> Response:
    await app_state(request).functions.policies.remove(
        _ref(request),
        request.path_params["sid"],
        request.query_params.get("RevisionId"),
    )
    return Response(status_code=204)


async def get_policy(request: Request) -> Response:
    text, revision = app_state(request).functions.policies.get(_ref(request))
    return json_response({"Policy": text, "RevisionId": revision})
