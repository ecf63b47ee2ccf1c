"""Lamina's debug sessions (`lamina invoke NAME --debug`).

`POST /lamina/functions/{name}/debug[?Qualifier=Q]` with `{"Port": N, "Wait": true}` (both
optional: a free port; wait for the debugger client before the handler's module is imported)
starts a new environment of the version `name` resolves to, with the runtime's debugger
listening, and answers once Lamina listens on the port:
`{"Session", "FunctionName", "Version", "Debugger", "Host", "Port"}`. Invoke with the header
`X-Lamina-Debug-Session: <Session>` runs in that environment. `DELETE
/lamina/functions/{name}/debug/{session}` ends the session. Both are `lamina:DebugFunction`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.invoke import require_active
from lamina.api.wire import json_body, json_response
from lamina.errors import InvalidParameterValueError
from lamina.scheduler.debugging import DebugSpec

_MEMBERS = frozenset({"Port", "Wait"})


async def start_debug(request: Request) -> Response:
    state = app_state(request)
    body = await json_body(request)
    unknown = sorted(set(body) - _MEMBERS)
    if unknown:
        raise InvalidParameterValueError(f"A debug session has no member {', '.join(unknown)}.")
    port = body.get("Port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidParameterValueError("Port must be an integer from 0 to 65535.")
    if 0 < port < 1024:
        raise InvalidParameterValueError("Port must be 0 (any free port) or from 1024 up.")
    wait = body.get("Wait", False)
    if not isinstance(wait, bool):
        raise InvalidParameterValueError("Wait must be a boolean.")
    functions = state.functions
    ref = functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier"), namespaced=True
    )
    config = await functions.resolve_current(ref)
    require_active(config)
    session = await state.scheduler.debug(config, DebugSpec(wait=wait, port=port))
    return json_response(session.describe(), status=201)


async def end_debug(request: Request) -> Response:
    await app_state(request).scheduler.debug_sessions.close(request.path_params["session"])
    return Response(status_code=204)
