"""Lambda REST API (2015-03-31): the function operations. Parse, call control/, serialise."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from lamina.api.context import app_state
from lamina.api.wire import (
    code_url,
    function_configuration,
    function_input,
    json_body,
    json_response,
)
from lamina.control import packages
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError, ValidationError

_CREATE_MEMBERS = {
    "FunctionName",
    "Runtime",
    "Role",
    "Handler",
    "Code",
    "Description",
    "Timeout",
    "MemorySize",
    "Environment",
    "EphemeralStorage",
    "Architectures",
    "PackageType",
    "Tags",
    "Layers",
}
_UPDATE_CONFIG_MEMBERS = {
    "Runtime",
    "Role",
    "Handler",
    "Description",
    "Timeout",
    "MemorySize",
    "Environment",
    "EphemeralStorage",
    "Layers",
    "RevisionId",
}
_UPDATE_CODE_MEMBERS = {"ZipFile", "Architectures", "RevisionId"}


async def create_function(request: Request) -> Response:
    state = app_state(request)
    body = await json_body(request)
    req = function_input(body, allowed=_CREATE_MEMBERS)
    code = body.get("Code")
    if code is None:
        raise ValidationError(
            "1 validation error detected: Value null at 'code' failed to satisfy constraint: "
            "Member must not be null"
        )
    if isinstance(code, dict):
        unsupported = [k for k in code if k != "ZipFile" and code[k] is not None]
        if unsupported:
            req.unsupported += [f"Code.{k}" for k in unsupported]
        elif "ZipFile" in code:
            req.zip_file = packages.decode_zip_file(code["ZipFile"], "CreateFunction")
    config = await state.functions.create(req)
    return json_response(
        function_configuration(config, state.functions.arn(config.name)), status=201
    )


async def get_function(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))
    fn = await state.functions.get(ref)
    out = {
        "Configuration": function_configuration(fn.latest, state.functions.arn(fn.latest.name)),
        "Code": {"RepositoryType": "S3", "Location": code_url(request, fn.latest.code_sha256)},
    }
    if fn.tags:
        out["Tags"] = fn.tags
    return json_response(out)


async def get_function_configuration(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))
    config = await state.functions.get_config(ref)
    return json_response(function_configuration(config, state.functions.arn(config.name)))


async def list_functions(request: Request) -> Response:
    state = app_state(request)
    raw_max = request.query_params.get("MaxItems")
    try:
        max_items = int(raw_max) if raw_max is not None else None
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{raw_max}' at 'maxItems' failed to satisfy "
            "constraint: Member must be an integer"
        ) from None
    configs, marker = await state.functions.list(request.query_params.get("Marker"), max_items)
    out: dict[str, object] = {
        "Functions": [function_configuration(c, state.functions.arn(c.name)) for c in configs]
    }
    if marker:
        out["NextMarker"] = marker
    return json_response(out)


async def update_function_code(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"])
    body = await json_body(request)
    unsupported = sorted(
        k for k, val in body.items() if k not in _UPDATE_CODE_MEMBERS and val not in (None, False)
    )
    if unsupported:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unsupported)} yet.")
    zip_file = (
        packages.decode_zip_file(body["ZipFile"], "UpdateFunctionCode")
        if body.get("ZipFile") is not None
        else None
    )
    config = await state.functions.update_code(
        ref, zip_file, body.get("RevisionId"), body.get("Architectures")
    )
    return json_response(function_configuration(config, state.functions.arn(config.name)))


async def update_function_configuration(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"])
    body = await json_body(request)
    req = function_input(body, allowed=_UPDATE_CONFIG_MEMBERS)
    config = await state.functions.update_config(ref, req)
    return json_response(function_configuration(config, state.functions.arn(config.name)))


async def delete_function(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))
    await state.functions.delete(ref)
    return Response(status_code=204)


async def download_code(request: Request) -> Response:
    """Where GetFunction's Code.Location and a layer's Content.Location point: the package
    as uploaded."""
    state = app_state(request)
    sha = request.path_params["sha256"]
    path = None
    if len(sha) == 64 and sha.isalnum():
        path = state.functions.zip_path(sha) or await state.functions.layers.zip_path(sha)
    if path is None:
        raise ResourceNotFoundError("No such code package.")
    return FileResponse(path, media_type="application/zip")
