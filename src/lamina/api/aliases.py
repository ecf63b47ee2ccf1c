"""Lambda REST API (2015-03-31): the alias operations. Parse, call control/, serialise."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_body, json_response, max_items_param
from lamina.errors import InvalidParameterValueError
from lamina.models import Alias

_CREATE = {"Name", "FunctionVersion", "Description", "RoutingConfig"}
_UPDATE = {"FunctionVersion", "Description", "RoutingConfig", "RevisionId"}


def alias_configuration(request: Request, alias: Alias) -> dict[str, Any]:
    """AliasConfiguration, as Lambda spells it."""
    out: dict[str, Any] = {
        "AliasArn": app_state(request).functions.arn(alias.function_name, alias.name),
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }
    if alias.routing:
        out["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.routing)}
    return out


def _function(request: Request) -> str:
    """The function named in the path (a name or an ARN, never qualified here)."""
    functions = app_state(request).functions
    ref = functions.ref(request.path_params["name"])
    if ref.qualifier is not None:
        raise InvalidParameterValueError("An alias cannot be managed through a qualified ARN.")
    return ref.name


def _refuse_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(k for k, val in body.items() if k not in allowed and val is not None)
    if unknown:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unknown)} yet.")


async def create_alias(request: Request) -> Response:
    name = _function(request)
    body = await json_body(request)
    _refuse_unknown(body, _CREATE)
    alias = await app_state(request).functions.aliases.create(
        name,
        body.get("Name"),
        body.get("FunctionVersion"),
        body.get("Description"),
        body.get("RoutingConfig"),
    )
    return json_response(alias_configuration(request, alias), status=201)


async def get_alias(request: Request) -> Response:
    aliases = app_state(request).functions.aliases
    alias = aliases.get(_function(request), request.path_params["alias"])
    return json_response(alias_configuration(request, alias))


async def update_alias(request: Request) -> Response:
    name = _function(request)
    body = await json_body(request)
    _refuse_unknown(body, _UPDATE)
    alias = await app_state(request).functions.aliases.update(
        name,
        request.path_params["alias"],
        body.get("FunctionVersion"),
        body.get("Description"),
        body.get("RoutingConfig"),
        body.get("RevisionId"),
    )
    return json_response(alias_configuration(request, alias))


async def delete_alias(request: Request) -> Response:
    await app_state(request).functions.aliases.delete(
        _function(request), request.path_params["alias"]
    )
    return Response(status_code=204)


async def list_aliases(request: Request) -> Response:
    found, marker = app_state(request).functions.aliases.list_aliases(
        _function(request),
        request.query_params.get("FunctionVersion"),
        request.query_params.get("Marker"),
        max_items_param(request),
    )
    out: dict[str, Any] = {"Aliases": [alias_configuration(request, a) for a in found]}
    if marker:
        out["NextMarker"] = marker
    return json_response(out)
