"""`GET /lamina/invocations/{request_id}`: one invocation's record, for `lamina replay`.

The record is read from this node's invocation log (`observability.invocation_log`). The
action is `lamina:GetInvocation` on the (unqualified) ARN of the function the record names:
the request path has only the request id, so `Authorize` lets the request through
(`AccessMap.request` returns None for it) and this handler asks the policy engine once the
record is found. An unknown, expired or not-kept record, and one the caller may not read,
look different (404 and 403): the 403 names the function, which only a caller who already
holds that invocation's request id learns.
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.authz import refusal
from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.arns import function_arn
from lamina.errors import AccessDeniedError, ResourceNotFoundError, ValidationError

ACTION = "lamina:GetInvocation"
#: request ids are UUIDs here; anything of these characters is looked up (others are not ids)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: seconds a lookup waits for the writer to catch up (a record written a moment ago)
_FLUSH_WAIT_S = 2.0


async def get_invocation(request: Request) -> Response:
    state = app_state(request)
    request_id = request.path_params["request_id"]
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValidationError(
            f"1 validation error detected: Value '{request_id[:200]}' at 'requestId' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            "[A-Za-z0-9._:-]{1,128}"
        )
    invocation_log = state.scheduler.invocation_log
    if invocation_log is None:
        raise ResourceNotFoundError(
            f"Invocation not found: {request_id}. This node keeps no invocation records "
            "(lamina serve --replay-retention 0)."
        )
    await asyncio.to_thread(invocation_log.flush, _FLUSH_WAIT_S)
    record = await asyncio.to_thread(invocation_log.find, request_id)
    if record is None:
        raise ResourceNotFoundError(
            f"Invocation not found: {request_id} (not run on node {state.node_name}, or older "
            "than its --replay-retention)."
        )
    settings = state.settings
    arn = function_arn(settings.region, settings.account_id, str(record["functionName"]))
    refused = refusal(request.scope, ACTION, arn)
    if refused is not None:
        raise AccessDeniedError(refused)
    record["node"] = state.node_name
    return json_response(record)
