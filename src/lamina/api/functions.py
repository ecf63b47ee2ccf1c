"""Lambda REST API (2015-03-31): the function operations. Parse, call control/, serialise."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from lamina.api.authz import refusal
from lamina.api.context import app_state
from lamina.api.wire import (
    code_url,
    function_configuration,
    function_input,
    json_body,
    json_response,
    max_items_param,
)
from lamina.arns import FunctionRef
from lamina.control import packages
from lamina.control.aliases import is_alias_name
from lamina.control.s3_code import S3_MEMBERS
from lamina.errors import InvalidParameterValueError, ResourceNotFoundError, ValidationError
from lamina.models import LATEST, FunctionConfig

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
    "DeadLetterConfig",
    "LoggingConfig",
    "KMSKeyArn",
    "VpcConfig",
    "TracingConfig",
    "DurableConfig",
    "ImageConfig",
    "SnapStart",
    "Publish",
    "CapacityProviderConfig",
    "CodeSigningConfigArn",
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
    "DeadLetterConfig",
    "LoggingConfig",
    "KMSKeyArn",
    "VpcConfig",
    "TracingConfig",
    "DurableConfig",
    "ImageConfig",
    "SnapStart",
    "RevisionId",
    "CapacityProviderConfig",
}
_UPDATE_CODE_MEMBERS = {
    "ZipFile",
    *S3_MEMBERS,
    "ImageUri",
    "Architectures",
    "RevisionId",
    "Publish",
}
_CODE_MEMBERS = {"ZipFile", "ImageUri", *S3_MEMBERS}


def _arn(request: Request, config: FunctionConfig, ref: FunctionRef | None = None) -> str:
    """A version's ARN is qualified with its number, `$LATEST`'s is the function's, and a
    configuration read through an alias shows the alias's; read by naming `$LATEST`, the
    ARN says `:$LATEST` (as Lambda qualifies the ARN whenever a qualifier was given)."""
    qualifier = None if config.version == LATEST else config.version
    named = ref.qualifier if ref is not None else None
    if named is not None and (named == LATEST or is_alias_name(named)):
        qualifier = named
    return app_state(request).functions.arn(config.name, qualifier)


def _configuration(request: Request, config: FunctionConfig, arn: str) -> dict[str, Any]:
    functions = app_state(request).functions
    return function_configuration(
        config,
        arn,
        functions.runtime_management.configured_arn(config),
        functions.capacity.wire_config(config),
    )


#: what Lambda's list operations leave out of each configuration (GetFunction has them)
_NOT_LISTED = (
    "State",
    "StateReason",
    "StateReasonCode",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
    "LastUpdateStatusReasonCode",
)


def _listed(request: Request, config: FunctionConfig, *, qualify_latest: bool) -> dict[str, Any]:
    """A configuration as ListFunctions and ListVersionsByFunction show it: the subset of
    members Lambda lists."""
    out = _configuration(
        request, config, _listed_arn(request, config, qualify_latest=qualify_latest)
    )
    for key in _NOT_LISTED:
        out.pop(key, None)
    return out


def listed_configuration(request: Request, config: FunctionConfig) -> dict[str, Any]:
    """A function's `$LATEST` as ListFunctions shows it (the console's list, `api.console`)."""
    return _listed(request, config, qualify_latest=False)


def _listed_arn(request: Request, config: FunctionConfig, *, qualify_latest: bool) -> str:
    """A listed version's ARN: where every version is listed, `$LATEST`'s is qualified with
    `:$LATEST`, as Lambda's ListVersionsByFunction and ListFunctions(ALL) print it."""
    if qualify_latest and config.version == LATEST:
        return app_state(request).functions.arn(config.name, LATEST)
    return _arn(request, config)


def _function_version_param(request: Request) -> bool:
    """ListFunctions' FunctionVersion: `ALL` lists every version; the model allows no other
    value."""
    value = request.query_params.get("FunctionVersion")
    if value is None:
        return False
    if value != "ALL":
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'functionVersion' failed to "
            "satisfy constraint: Member must satisfy enum value set: [ALL]"
        )
    return True


def _publish_flag(body: dict[str, Any]) -> bool:
    value = body.get("Publish")
    if value is not None and not isinstance(value, bool):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'publish' failed to satisfy "
            "constraint: Member must be a boolean"
        )
    return bool(value)


async def create_function(request: Request) -> Response:
    state = app_state(request)
    body = await json_body(request)
    req = function_input(body, allowed=_CREATE_MEMBERS)
    publish = _publish_flag(body)
    code = body.get("Code")
    if code is None:
        raise ValidationError(
            "1 validation error detected: Value null at 'code' failed to satisfy constraint: "
            "Member must not be null"
        )
    if isinstance(code, dict):
        unsupported = [k for k in code if k not in _CODE_MEMBERS and code[k] is not None]
        if unsupported:
            req.unsupported += [f"Code.{k}" for k in unsupported]
        else:
            req.s3_code = {k: code[k] for k in S3_MEMBERS if k in code}
            req.image_uri = code.get("ImageUri")
            if code.get("ZipFile") is not None:
                req.zip_file = packages.decode_zip_file(code["ZipFile"], "CreateFunction")
    capacity = state.functions.capacity
    attachment = None
    if body.get("CapacityProviderConfig") is not None:
        # Checked before the function exists, so that a refusal leaves nothing behind.
        archs = body.get("Architectures")
        arch = archs[0] if isinstance(archs, list) and archs else "x86_64"
        attachment = capacity.check_function_config(body["CapacityProviderConfig"], str(arch))
    config = await state.functions.create(req, body.get("CodeSigningConfigArn"))
    if attachment is not None:
        await capacity.attach(config, attachment)
    if publish:
        published = await state.functions.publish(state.functions.ref(config.name), creating=True)
        # As created: the version is as pending as the function.
        config = replace(
            published,
            state=config.state,
            state_reason=config.state_reason,
            state_reason_code=config.state_reason_code,
        )
    # Lambda's answer names the function itself (Version says which version was published),
    # and, the function being still in creation, carries no LastUpdateStatus yet.
    out = _configuration(request, config, state.functions.arn(config.name))
    del out["LastUpdateStatus"]
    return json_response(out, status=201)


async def get_function(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier"), namespaced=True
    )
    fn = await state.functions.get(ref)
    image = fn.latest.image
    code: dict[str, str] = (
        {"RepositoryType": "S3", "Location": code_url(request, fn.latest.code_sha256)}
        if image is None
        else {
            "RepositoryType": "ECR",
            "ImageUri": image.uri,
            "ResolvedImageUri": image.resolved_uri,
        }
    )
    out = {
        "Configuration": _configuration(request, fn.latest, _arn(request, fn.latest, ref)),
        "Code": code,
    }
    # Lambda returns the tags only to a caller whose policies allow lambda:ListTags on it.
    refused = refusal(request.scope, "lambda:ListTags", state.functions.arn(ref.name))
    if refused is not None:
        out["TagsError"] = {"ErrorCode": "AccessDeniedException", "Message": refused}
    elif fn.tags:
        out["Tags"] = fn.tags
    reserved = state.functions.concurrency.get(state.functions.ref(ref.name))
    if reserved is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return json_response(out)


async def get_function_configuration(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier"), namespaced=True
    )
    config = await state.functions.get_config(ref)
    return json_response(_configuration(request, config, _arn(request, config, ref)))


async def list_functions(request: Request) -> Response:
    state = app_state(request)
    every_version = _function_version_param(request)
    master_region = request.query_params.get("MasterRegion")
    configs, marker = await state.functions.list(
        request.query_params.get("Marker"), max_items_param(request), every_version, master_region
    )
    out: dict[str, object] = {
        "Functions": [_listed(request, c, qualify_latest=every_version) for c in configs]
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
    publish = _publish_flag(body)
    config = await state.functions.update_code(
        ref,
        zip_file,
        body.get("RevisionId"),
        body.get("Architectures"),
        {k: body[k] for k in S3_MEMBERS if k in body},
        body.get("ImageUri"),
    )
    if publish:
        published = await state.functions.publish(ref)
        config = replace(
            published,
            last_update_status=config.last_update_status,
            last_update_status_reason=config.last_update_status_reason,
            last_update_status_reason_code=config.last_update_status_reason_code,
        )
    return json_response(_configuration(request, config, _arn(request, config)))


async def update_function_configuration(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"])
    body = await json_body(request)
    req = function_input(body, allowed=_UPDATE_CONFIG_MEMBERS)
    attachment = None
    if body.get("CapacityProviderConfig") is not None:
        current = state.functions.require(ref.name)
        attachment = state.functions.capacity.check_function_config(
            body["CapacityProviderConfig"], current.architectures[0]
        )
    config = await state.functions.update_config(ref, req)
    if attachment is not None:
        await state.functions.capacity.attach(config, attachment)
    return json_response(_configuration(request, config, state.functions.arn(config.name)))


async def delete_function(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(
        request.path_params["name"], request.query_params.get("Qualifier"), namespaced=True
    )
    await state.functions.delete(ref)
    return Response(status_code=204)


async def publish_version(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"])
    body = await json_body(request)
    unsupported = sorted(
        k
        for k, val in body.items()
        if k not in ("CodeSha256", "Description", "RevisionId") and val is not None
    )
    if unsupported:
        raise InvalidParameterValueError(f"Lamina does not support {', '.join(unsupported)} yet.")
    config = await state.functions.publish(
        ref, body.get("CodeSha256"), body.get("Description"), body.get("RevisionId")
    )
    return json_response(_configuration(request, config, _arn(request, config)), status=201)


async def list_versions(request: Request) -> Response:
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"], namespaced=True)
    configs, marker = state.functions.versions(
        ref, request.query_params.get("Marker"), max_items_param(request)
    )
    out: dict[str, object] = {
        "Versions": [_listed(request, c, qualify_latest=True) for c in configs]
    }
    if marker:
        out["NextMarker"] = marker
    return json_response(out)


async def download_code(request: Request) -> Response:
    """Where GetFunction's Code.Location and a layer's Content.Location point: the package
    as uploaded."""
    state = app_state(request)
    sha = request.path_params["sha256"]
    path = None
    if len(sha) == 64 and sha.isalnum():
        path = state.functions.code.zip_path(sha) or await state.functions.layers.zip_path(sha)
    if path is None:
        raise ResourceNotFoundError("No such code package.")
    return FileResponse(path, media_type="application/zip")
