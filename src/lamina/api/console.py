"""The web console's server side (docs/console.md): its page and assets, its sessions, and
its one endpoint of its own.

- `GET /console` and `/console/static/<file>`: the single page and its assets, from the
  package's `console/static` directory. Open: they hold no data.
- `POST /console/session`: sign-in. The browser signs it with SigV4 itself, so the key is
  proved by `api.authn` as for any API call; the answer sets the `lamina-console` cookie,
  a sealed, expiring token (`auth.console_session`). The secret never reaches the server
  and the browser keeps no copy.
- `GET /console/session` (who is signed in) and `DELETE /console/session` (sign out: the
  cookie is cleared).
- `GET /console/api/functions`: the functions the caller may read, with their last hour's
  invocations and errors, in one request.

Every other call of the console is an API call like boto3's, authenticated by the cookie
and the `X-Lamina-Console: 1` header (`api.authn`) and authorized as the key's. With
`lamina serve --no-console` every path here answers 404.

With authentication off (`--auth off`) there is nothing to sign in with: the session
endpoints answer with null members and set no cookie, and every call goes through as any
unsigned call does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from lamina.api.authn import (
    CONSOLE_API_PREFIX,
    CONSOLE_PREFIX,
    CONSOLE_SESSION_PATH,
)
from lamina.api.context import app_state
from lamina.api.functions import listed_configuration
from lamina.api.wire import aws_json_error, json_response
from lamina.auth.console_session import COOKIE, Session, SessionTokens, token_in
from lamina.auth.principal import SCOPE_KEY, Principal
from lamina.auth.sigv4 import AuthError, MissingAuthenticationToken
from lamina.errors import LaminaError, UnknownOperationError
from lamina.models import LATEST

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
#: the window of the function list's counts
ACTIVITY_WINDOW_S = 3600
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
#: the page runs only its own scripts, talks only to its own origin, and is never framed
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'; object-src 'none'"
    ),
}


class RoleSessionRefused(AuthError):
    error_type = "AccessDeniedException"

    def __init__(self) -> None:
        super().__init__(
            "The console signs in with an access key, not with a role session's temporary "
            "credentials."
        )


def _tokens(request: Request) -> SessionTokens:
    """The console's session tokens; with the console off, 404 as for a path nobody serves."""
    tokens = app_state(request).console
    if tokens is None:
        raise UnknownOperationError(f"No operation at {request.method} {request.url.path}")
    return tokens


def _find(name: str) -> Path | None:
    """The file `name` of the console's static directory; None for anything else (`..`,
    absolute or hidden paths, directories, files that are not there)."""
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    root = STATIC_DIR.resolve()
    path = root.joinpath(*parts).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


async def _static(name: str) -> Response:
    path = await asyncio.to_thread(_find, name)  # (file system calls: off the loop)
    if path is None:
        raise UnknownOperationError(f"No console file {name[:200]!r}")
    media_type = _TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=_PAGE_HEADERS)


async def page(request: Request) -> Response:
    _tokens(request)
    return await _static("index.html")


async def asset(request: Request) -> Response:
    _tokens(request)
    return await _static(request.path_params["file"])


def _signed_in(principal: Principal, session: Session) -> dict[str, Any]:
    return {
        "AccessKeyId": principal.access_key_id,
        "Arn": principal.arn,
        "Expires": session.expires,
    }


def _no_auth() -> Response:
    return json_response({"AccessKeyId": None, "Arn": None, "Expires": None})


def _cookie(token: str, max_age: int, secure: bool) -> str:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return cookie + "; Secure" if secure else cookie


def _refused(error: LaminaError) -> Response:
    return aws_json_error(error.error_type, error.message, error.status)


async def sign_in(request: Request) -> Response:
    """POST /console/session: `api.authn` verified the signature; mint the session."""
    tokens = _tokens(request)
    principal: Principal | None = request.scope.get(SCOPE_KEY)
    if principal is None:
        return _no_auth()
    if principal.role_arn is not None:
        # A role session's credentials end sooner than a console session would.
        return _refused(RoleSessionRefused())
    token, session = tokens.mint(principal.access_key_id)
    response = json_response(_signed_in(principal, session))
    response.headers["Cache-Control"] = "no-store"
    secure = request.url.scheme == "https"
    response.headers["Set-Cookie"] = _cookie(token, tokens.ttl_s, secure)
    return response


async def who(request: Request) -> Response:
    """GET /console/session: the signed-in key, or 403 as for a request without one."""
    tokens = _tokens(request)
    state = app_state(request)
    if state.keys is None:
        return _no_auth()
    try:
        token = token_in(request.headers.get("cookie", ""))
        if token is None:
            raise MissingAuthenticationToken()
        session = tokens.check(token)
        principal = state.keys.principal(session.access_key_id)
    except AuthError as e:
        return _refused(e)
    response = json_response(_signed_in(principal, session))
    response.headers["Cache-Control"] = "no-store"
    return response


async def sign_out(request: Request) -> Response:
    """DELETE /console/session: the browser forgets the cookie (the token itself stays
    valid until it expires: nothing is stored to revoke, see `auth.console_session`)."""
    _tokens(request)
    response = Response(status_code=204)
    response.headers["Set-Cookie"] = _cookie("", 0, request.url.scheme == "https")
    response.headers["Cache-Control"] = "no-store"
    return response


async def list_functions(request: Request) -> Response:
    """GET /console/api/functions: every function the caller may GetFunctionConfiguration
    on (whether or not it may ListFunctions: the filter is the authorization), as
    ListFunctions shows it, with its last hour's activity."""
    _tokens(request)
    state = app_state(request)
    functions = state.functions
    configs = sorted(
        (c for c in functions.all_configs() if c.version == LATEST), key=lambda c: c.name
    )
    # (`build_app` always sets the authorization wrapper: authentication off, it permits all)
    visible = [
        c
        for c in configs
        if state.authorize.permits(
            request.scope, "lambda:GetFunctionConfiguration", functions.arn(c.name)
        )
    ]
    activity = {}
    if state.metric_queries is not None and visible:
        live = state.metrics.cloudwatch.snapshot()  # on the loop: its only writer
        activity = await asyncio.to_thread(
            state.metric_queries.recent_activity,
            [c.name for c in visible],
            ACTIVITY_WINDOW_S,
            live,
        )
    listed = []
    for config in visible:
        entry = listed_configuration(request, config)
        recent = activity.get(config.name)
        entry["Lamina"] = {
            "Invocations1h": recent.invocations if recent else 0,
            "Errors1h": recent.errors if recent else 0,
            "LastInvoked": (
                recent.last_minute * 1000 if recent and recent.last_minute is not None else None
            ),
        }
        listed.append(entry)
    return json_response({"Functions": listed})


def routes() -> list[Route]:
    return [
        Route(CONSOLE_PREFIX, page, methods=["GET"]),
        Route(CONSOLE_PREFIX + "/", page, methods=["GET"]),
        Route(CONSOLE_PREFIX + "/static/{file:path}", asset, methods=["GET"]),
        Route(CONSOLE_SESSION_PATH, sign_in, methods=["POST"]),
        Route(CONSOLE_SESSION_PATH, who, methods=["GET"]),
        Route(CONSOLE_SESSION_PATH, sign_out, methods=["DELETE"]),
        Route(CONSOLE_API_PREFIX + "functions", list_functions, methods=["GET"]),
    ]
