"""Authorization of API requests: an ASGI wrapper inside the authentication wrapper.

Authentication puts the verified caller in `scope["lamina.principal"]`; when it is absent
(authentication off) every request goes through, as before issue 9. Otherwise the wrapper
names the request's action and resource (`api.access`), adds the request's context keys, takes
the function's resource policy when the resource is a function, or the layer version's when
it is a layer version (from memory: no database read on the Invoke path), checks
`lambda:GetLayerVersion` on each layer a CreateFunction or UpdateFunctionConfiguration
attaches, and answers a denial as AWS does: `AccessDeniedException`, HTTP 403,
"User: <arn> is not authorized to perform: <action> on resource: <arn> because ...".

Function URLs and HTTP routes never reach it: `HttpFront` serves them ahead of this wrapper
(a URL's AuthType decides, see `auth.triggers`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina import ids
from lamina.api.access import AccessMap
from lamina.api.authn import read_body, replay
from lamina.api.cloudwatch_wire import error as cloudwatch_error
from lamina.api.cloudwatch_wire import protocol_of as cloudwatch_protocol
from lamina.api.context import AppState
from lamina.auth.policy import Policy, PolicyError, authorize, identity_decision
from lamina.auth.principal import SCOPE_KEY, AccessRequest, Decision, Principal

log = logging.getLogger(__name__)

#: what a function's own role session may do to its own durable executions unasked
_DURABLE_DATA_PLANE = frozenset(
    {"lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"}
)


def _own_durable_execution(principal: Principal, request: AccessRequest) -> bool:
    """Whether `request` is the durable SDK inside a function checkpointing (or reading) an
    execution of that same function, with the session Lamina gave its environment (whose
    session name is the function's name). AWS asks the role for these two actions (its
    managed AWSLambdaBasicDurableExecutionRolePolicy grants them); Lamina grants them to the
    function's own session for its own executions, so a role Lamina does not know still
    runs durable functions, and no session reaches another function's executions."""
    if request.action not in _DURABLE_DATA_PLANE or principal.role_arn is None:
        return False
    session = principal.arn.rsplit("/", 1)[-1]
    _, _, rest = request.resource.partition(":function:")
    return bool(session) and rest.split(":", 1)[0] == session


class Authorize:
    """Lets a request through to `app` only if its principal may make it."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.access = AccessMap(state.settings.region, state.settings.account_id)
        self._function_prefix = (
            f"arn:aws:lambda:{state.settings.region}:{state.settings.account_id}:function:"
        )
        self._layer_prefix = (
            f"arn:aws:lambda:{state.settings.region}:{state.settings.account_id}:layer:"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal: Principal | None = scope.get(SCOPE_KEY)
        if scope["type"] != "http" or principal is None or principal.admin:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        body = None
        if self.access.needs_body(method, path):
            # Read once more from what authentication replays (memory, not the socket).
            body, disconnected = await read_body(receive)
            receive = replay(body, disconnected, receive)
        message = self.denial(scope, principal, body)
        if message is None:
            await self.app(scope, receive, send)
            return
        cloudwatch = cloudwatch_protocol(method, path, _wire_headers(scope))
        if cloudwatch is not None:
            response = cloudwatch_error(cloudwatch, "AccessDenied", message, 403)
            await response(scope, receive, send)
            return
        json_api = path == "/" and method == "POST"
        # The `@connections` API answers a denial with its own ForbiddenException.
        error_type = "ForbiddenException" if "/@connections/" in path else None
        await send_denial(send, message, json_api=json_api, error_type=error_type)

    def denial(self, scope: Scope, principal: Principal, body: bytes | None) -> str | None:
        """Why `principal` may not make the request `scope` describes (AWS's
        AccessDeniedException message), or None if it may. `body` is needed only where
        `AccessMap.needs_body` says so."""
        if principal.admin:
            return None
        method: str = scope["method"]
        path: str = scope["path"]
        # Only X-Amz-Target names an action (the JSON APIs'): no need to decode every header.
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            lower = name.lower()
            if lower == b"x-amz-target" or lower == b"content-type":
                headers[lower.decode("latin-1")] = value.decode("latin-1")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        request = self.access.request(method, path, query, headers, body)
        if request is None:
            return None
        if _own_durable_execution(principal, request):
            return None
        request = AccessRequest(
            request.action,
            request.resource,
            {**request_context(scope, principal), **request.context},
        )
        decision = self._decide(principal, request)
        if decision is Decision.ALLOW and body is not None:
            # Attaching a layer takes lambda:GetLayerVersion on it, as on Lambda; the
            # layer version's own policy may grant it.
            for layer in self.access.attached_layers(request.action, body):
                uses = AccessRequest("lambda:GetLayerVersion", layer, request.context)
                decision = self._decide(principal, uses)
                if decision is not Decision.ALLOW:
                    request = uses
                    break
        if decision is Decision.ALLOW:
            return None
        return denial_message(principal, request, decision)

    def permits(self, scope: Scope, action: str, resource: str) -> bool:
        """Whether the caller of `scope` may do `action` on `resource`, decided as for a
        request that asks it (the resource's own policy included): for a handler that shows
        only what the caller may see. True when authentication is off."""
        principal: Principal | None = scope.get(SCOPE_KEY)
        if principal is None or principal.admin:
            return True
        asked = AccessRequest(action, resource, request_context(scope, principal))
        return self._decide(principal, asked) is Decision.ALLOW

    def _decide(self, principal: Principal, request: AccessRequest) -> Decision:
        try:
            return authorize(principal, request, self._resource_policy(request.resource))
        except PolicyError as e:
            # An identity policy that slipped past validation: fail closed, and say why here.
            log.error("authz: a policy of %s is malformed: %s", principal.arn, e)
            return Decision.IMPLICIT_DENY

    def _resource_policy(self, resource: str) -> Policy | None:
        """The resource policy of the function (version, alias) or layer version `resource`
        names, if any."""
        if resource.startswith(self._layer_prefix):
            name, _, version = resource.removeprefix(self._layer_prefix).partition(":")
            if not version.isdigit():
                return None
            return self.state.functions.layers.policies.policy_for(name, int(version))
        if not resource.startswith(self._function_prefix):
            return None
        name, _, qualifier = resource.removeprefix(self._function_prefix).partition(":")
        return self.state.functions.policies.policy_for(name, qualifier or None)


def _wire_headers(scope: Scope) -> dict[str, str]:
    return {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in scope["headers"]
        if k.lower() in (b"x-amz-target", b"content-type")
    }


def request_context(scope: Scope, principal: Principal) -> dict[str, str | list[str]]:
    """The global condition keys of a request (`aws:SourceIp`, `aws:CurrentTime`, ...)."""
    current_time, epoch_time = _clock_keys(int(time.time()))
    client = scope.get("client")
    return {
        "aws:SourceIp": client[0] if client else "127.0.0.1",
        "aws:CurrentTime": current_time,
        "aws:EpochTime": epoch_time,
        "aws:SecureTransport": "true" if scope.get("scheme") == "https" else "false",
        # A role session's aws:PrincipalArn is its role's ARN, as IAM sets it.
        "aws:PrincipalArn": principal.role_arn or principal.arn,
        "aws:PrincipalAccount": principal.account,
    }


@lru_cache(maxsize=4)
def _clock_keys(epoch: int) -> tuple[str, str]:
    # aws:CurrentTime and aws:EpochTime have a second's resolution: formatted once a second.
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), str(epoch)


def denial_message(principal: Principal, request: AccessRequest, decision: Decision) -> str:
    """AWS's AccessDeniedException message, with where the deny came from."""
    head = (
        f"User: {principal.arn} is not authorized to perform: {request.action} on resource: "
        f"{request.resource} "
    )
    if decision is Decision.EXPLICIT_DENY:
        where = (
            "an identity-based policy"
            if identity_decision(principal, request) is Decision.EXPLICIT_DENY
            else "a resource-based policy"
        )
        return head + f"with an explicit deny in {where}"
    return head + f"because no identity-based policy allows the {request.action} action"


def refusal(scope: Scope, action: str, resource: str) -> str | None:
    """For a handler that checks an action itself (its resource known only once it has read
    something): why the caller may not do `action` on `resource`, as AccessDeniedException's
    message; None when it may (authentication off, an admin key, or a policy allowing it).
    A policy that cannot be evaluated refuses, as the wrapper does."""
    principal: Principal | None = scope.get(SCOPE_KEY)
    if principal is None or principal.admin:
        return None
    asked = AccessRequest(action, resource, request_context(scope, principal))
    try:
        decision = authorize(principal, asked)
    except PolicyError:
        decision = Decision.IMPLICIT_DENY
    if decision is Decision.ALLOW:
        return None
    return denial_message(principal, asked, decision)


async def send_denial(
    send: Send, message: str, *, json_api: bool, error_type: str | None = None
) -> None:
    """AccessDeniedException in the caller's protocol: the Lambda REST API names the error in
    `x-amzn-ErrorType`; the JSON 1.1 APIs (Logs, EventBridge) in the body's `__type`."""
    request_id = ids.request_id()
    body: Mapping[str, str]
    if json_api:
        body = {"__type": "AccessDeniedException", "Message": message}
        content_type = b"application/x-amz-json-1.1"
    else:
        body = {"Message": message}  # what Lambda sends: only the message
        content_type = b"application/json"
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
                (b"x-amzn-errortype", (error_type or "AccessDeniedException").encode()),
                (b"x-amzn-requestid", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
