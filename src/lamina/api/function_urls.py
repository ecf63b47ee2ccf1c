"""Lambda REST API (2021-10-31): the FunctionUrlConfig operations. Parse, call control/,
serialise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param
from lamina.arns import FunctionRef
from lamina.errors import InvalidParameterValueError
from lamina.models import LATEST, FunctionUrl, UrlCors
from lamina.settings import Settings

#: where function URLs are served on Lamina's own port: `<endpoint>/lambda-url/<url-id>/`
URL_PATH_PREFIX = "/lambda-url/"
_MEMBERS = {"AuthType", "Cors", "InvokeMode"}


def function_url(settings: Settings, url_id: str) -> str:
    """The FunctionUrl of a url-id: path-based on this server's endpoint, so that it works as
    it is (curl, a browser) without DNS for `<url-id>.lambda-url.<region>.on.aws`."""
    return f"{settings.endpoint_url}{URL_PATH_PREFIX}{url_id}/"


def iso_time(t: datetime) -> str:
    """CreationTime and LastModifiedTime as Lambda writes them: 2024-01-31T12:34:56.789012Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cors(cors: UrlCors) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for member, value in (
        ("AllowCredentials", cors.allow_credentials),
        ("AllowHeaders", cors.allow_headers),
        ("AllowMethods", cors.allow_methods),
        ("AllowOrigins", cors.allow_origins),
        ("ExposeHeaders", cors.expose_headers),
        ("MaxAge", cors.max_age),
    ):
        if value is not None:
            out[member] = list(value) if isinstance(value, tuple) else value
    return out


def url_config(request: Request, url: FunctionUrl, *, modified: bool = True) -> dict[str, Any]:
    """FunctionUrlConfig (CreateFunctionUrlConfig's answer has no LastModifiedTime)."""
    state = app_state(request)
    qualifier = None if url.qualifier == LATEST else url.qualifier
    out: dict[str, Any] = {
        "FunctionUrl": function_url(state.settings, url.url_id),
        "FunctionArn": state.functions.arn(url.function_name, qualifier),
        "AuthType": url.auth_type,
        "CreationTime": iso_time(url.created),
        "InvokeMode": url.invoke_mode,
    }
    if modified:
        out["LastModifiedTime"] = iso_time(url.last_modified)
    if url.cors is not None:
        out["Cors"] = _cors(url.cors)
    return out


def _ref(request: Request) -> FunctionRef:
    return app_state(request).functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier")
    )


def _refuse_unknown(body: dict[str, Any]) -> None:
    unknown = sorted(k for k, val in body.items() if k not in _MEMBERS and val is not None)
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unknown)} yet.")


async def create_function_url_config(request: Request) -> Response:
    ref = _ref(request)
    body = await json_body(request)
    _refuse_unknown(body)
    url = await app_state(request).functions.urls.create(
        ref, body.get("AuthType"), body.get("Cors"), body.get("InvokeMode")
    )
    return json_response(url_config(request, url, modified=False), status=201)


async def get_function_url_config(request: Request) -> Response:
    url = app_state(request).functions.urls.get(_ref(request))
    return json_response(url_config(request, url))


async def update_function_url_config(request: Request) -> Response:
    ref = _ref(request)
    body = await json_body(request)
    _refuse_unknown(body)
    url = await app_state(request).functions.urls.update(
        ref, body.get("AuthType"), body.get("Cors"), body.get("InvokeMode")
    )
    return json_response(url_config(request, url))


async def delete_function_url_config(request: Request) -> Response:
    await app_state(request).functions.urls.delete(_ref(request))
    return Response(status_code=204)


async def list_function_url_configs(request: Request) -> Response:
    found, marker = app_state(request).functions.urls.list_urls(
        _ref(request), request.query_params.get("Marker"), max_items_param(request)
    )
    out: dict[str, Any] = {"FunctionUrlConfigs": [url_config(request, url) for url in found]}
    if marker:
        out["NextMarker"] = marker
    return json_response(out)
