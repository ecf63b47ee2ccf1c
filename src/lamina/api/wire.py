"""Domain models to the Lambda API's JSON shapes (botocore's `lambda` model) and back."""

from __future__ import annotations

import json
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina import untrusted_json
from lamina.control import FunctionInput
from lamina.errors import InvalidRequestContentError, ValidationError
from lamina.models import FunctionConfig, LayerVersion

# Request members of CreateFunction/UpdateFunctionConfiguration and their domain names.
_CONFIG_MEMBERS = {
    "FunctionName": "name",
    "Runtime": "runtime",
    "Role": "role",
    "Handler": "handler",
    "Description": "description",
    "Timeout": "timeout",
    "MemorySize": "memory_size",
    "Environment": "environment",
    "EphemeralStorage": "ephemeral_storage",
    "Architectures": "architectures",
    "PackageType": "package_type",
    "Tags": "tags",
    "Layers": "layers",
    "DeadLetterConfig": "dead_letter_config",
    "LoggingConfig": "logging_config",
    "KMSKeyArn": "kms_key_arn",
    "VpcConfig": "vpc_config",
    "RevisionId": "revision_id",
    "TracingConfig": "tracing_config",
    "DurableConfig": "durable_config",
    "ImageConfig": "image_config",
    "SnapStart": "snap_start",
}


def timestamp(t: datetime) -> str:
    """Lambda's LastModified and CreatedDate (UTC): 2024-01-31T12:34:56.789+0000."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


def epoch_seconds(t: datetime) -> float:
    """A `timestamp` member of the model (rest-json: seconds since the epoch, to the ms), as
    FunctionEventInvokeConfig's LastModified is."""
    return round(t.timestamp(), 3)


def last_modified(config: FunctionConfig) -> str:
    return timestamp(config.last_modified)


def code_url(request: Request, sha256: str) -> str:
    """Where Lamina serves a stored package (GetFunction's Code.Location, a layer's
    Content.Location)."""
    path = f"/lamina/code/{sha256}.zip"
    url = str(request.base_url).rstrip("/") + path
    # With authentication on, the URL carries an expiring signature of the server's own, as
    # Lambda's presigned S3 URL does, so that it downloads without AWS credentials.
    signer = request.scope.get("lamina.code_url_signer")
    return f"{url}?{signer.query(path)}" if signer is not None else url


def function_configuration(
    config: FunctionConfig,
    arn: str,
    runtime_version_arn: str | None = None,
    capacity_provider_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "FunctionName": config.name,
        "FunctionArn": arn,
        "Runtime": config.runtime,
        "Role": config.role,
        "Handler": config.handler,
        "CodeSize": config.code_size,
        "Description": config.description,
        "Timeout": config.timeout,
        "MemorySize": config.memory_size,
        "LastModified": last_modified(config),
        "CodeSha256": config.code_sha256_b64,
        "Version": config.version,
        "TracingConfig": {"Mode": config.tracing_mode},
        "RevisionId": config.revision_id,
        "State": config.state.value,
        "LastUpdateStatus": config.last_update_status.value,
        "PackageType": config.package_type,
        "Architectures": list(config.architectures),
        "EphemeralStorage": {"Size": config.ephemeral_storage},
        "SnapStart": {
            "ApplyOn": config.snap_start,
            "OptimizationStatus": "On" if config.snap_start_on else "Off",
        },
        "LoggingConfig": _logging_config(config),
    }
    if config.image is not None:
        # An image function has no runtime or handler: Lambda leaves both out.
        del out["Runtime"], out["Handler"]
        overrides = config.image.overrides
        if overrides is not None:
            given: dict[str, Any] = {}
            if overrides.entry_point is not None:
                given["EntryPoint"] = list(overrides.entry_point)
            if overrides.command is not None:
                given["Command"] = list(overrides.command)
            if overrides.working_directory is not None:
                given["WorkingDirectory"] = overrides.working_directory
            out["ImageConfigResponse"] = {"ImageConfig": given}
    if config.durable is not None:
        durable: dict[str, Any] = {
            "ExecutionTimeout": config.durable.execution_timeout,
            "RetentionPeriodInDays": config.durable.retention_days,
        }
        if config.durable.kms_key_arn:
            durable["KMSKeyArn"] = config.durable.kms_key_arn
        out["DurableConfig"] = durable
    if config.environment or config.environment_given:
        out["Environment"] = {"Variables": dict(config.environment)}
    if config.layers:
        out["Layers"] = [{"Arn": lay.arn, "CodeSize": lay.code_size} for lay in config.layers]
    if config.dead_letter_target:
        out["DeadLetterConfig"] = {"TargetArn": config.dead_letter_target}
    if config.kms_key_arn:
        out["KMSKeyArn"] = config.kms_key_arn
    if config.signed_by is not None:
        out["SigningProfileVersionArn"], out["SigningJobArn"] = config.signed_by
    if config.vpc is not None:
        out["VpcConfig"] = {
            "SubnetIds": list(config.vpc.subnet_ids),
            "SecurityGroupIds": list(config.vpc.security_group_ids),
            "VpcId": config.vpc.vpc_id,
            "Ipv6AllowedForDualStack": config.vpc.ipv6_allowed_for_dual_stack,
        }
    for key, value in (
        ("StateReason", config.state_reason),
        ("StateReasonCode", config.state_reason_code),
        ("LastUpdateStatusReason", config.last_update_status_reason),
        ("LastUpdateStatusReasonCode", config.last_update_status_reason_code),
    ):
        if value is not None:
            out[key] = value
    if runtime_version_arn is not None:
        out["RuntimeVersionConfig"] = {"RuntimeVersionArn": runtime_version_arn}
    if capacity_provider_config is not None:
        out["CapacityProviderConfig"] = capacity_provider_config
    return out


def _logging_config(config: FunctionConfig) -> dict[str, str]:
    out = {"LogFormat": config.logging.log_format.value, "LogGroup": config.log_group}
    if config.logging.application_log_level:
        out["ApplicationLogLevel"] = config.logging.application_log_level
    if config.logging.system_log_level:
        out["SystemLogLevel"] = config.logging.system_log_level
    return out


def layer_version_item(lv: LayerVersion, version_arn: str) -> dict[str, Any]:
    """A LayerVersionsListItem."""
    out: dict[str, Any] = {
        "LayerVersionArn": version_arn,
        "Version": lv.version,
        "Description": lv.description,
        "CreatedDate": timestamp(lv.created),
    }
    if lv.compatible_runtimes:
        out["CompatibleRuntimes"] = list(lv.compatible_runtimes)
    if lv.compatible_architectures:
        out["CompatibleArchitectures"] = list(lv.compatible_architectures)
    if lv.license_info is not None:
        out["LicenseInfo"] = lv.license_info
    return out


def layer_version(
    lv: LayerVersion, layer_arn: str, version_arn: str, location: str
) -> dict[str, Any]:
    """GetLayerVersionResponse (PublishLayerVersionResponse has the same members)."""
    return {
        "Content": {
            "Location": location,
            "CodeSha256": lv.code_sha256_b64,
            "CodeSize": lv.code_size,
        },
        "LayerArn": layer_arn,
        **layer_version_item(lv, version_arn),
    }


async def json_body(request: Request) -> dict[str, Any]:
    """A REST request's JSON object body ({} when empty). A member sent as `null` is
    refused (ValidationException naming it), not taken as absent: `{"Runtime": null}` asks
    for something, and Lamina will not guess whether it means "unset" or "leave alone"."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = untrusted_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequestContentError(f"Could not parse request body into json: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequestContentError("Could not parse request body into json: not an object")
    problem = null_members(body)
    if problem:
        raise ValidationError(problem)
    return body


def null_members(body: dict[str, Any]) -> str | None:
    """What is wrong with a request body's members sent as JSON `null`, at any depth, in AWS's
    validation wording (members named as AWS names them: first letter lower-cased, nested ones
    joined with dots, `environment.variables`; a list holding a null is named itself); None
    when there are none. Every API refuses them rather than guess what null means."""
    found: list[str] = []
    pending: deque[tuple[str, Any]] = deque([("", body)])
    while pending:
        path, value = pending.popleft()
        if isinstance(value, dict):
            children = [(_member_path(path, key), child) for key, child in value.items()]
        else:
            children = [(path, child) for child in value]
        for where, child in children:
            if child is None and where not in found:
                found.append(where)
            elif isinstance(child, (dict, list)):
                pending.append((where, child))
    if not found:
        return None
    noun = "error" if len(found) == 1 else "errors"
    return f"{len(found)} validation {noun} detected: " + "; ".join(
        f"Value null at '{member}' failed to satisfy constraint: Member must not be null"
        for member in found
    )


def _member_path(path: str, key: str) -> str:
    name = key[:1].lower() + key[1:]
    return f"{path}.{name}" if path else name


def function_input(body: dict[str, Any], *, allowed: set[str]) -> FunctionInput:
    """The members of a create/update request, by their domain names."""
    req = FunctionInput()
    for key, value in body.items():
        if key in allowed and key in _CONFIG_MEMBERS:
            setattr(req, _CONFIG_MEMBERS[key], value)
        elif key in allowed:
            continue
        elif value not in (None, [], {}, False):
            req.unsupported.append(key)
    return req


#: the content type of AWS's JSON 1.1 protocol (the Logs and Events APIs on `POST /`)
AWS_JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


def aws_json_response(body: object, status: int = 200) -> Response:
    """An answer of a JSON 1.1 protocol API, with its request id."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=AWS_JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def aws_json_error(error_type: str, message: str, status: int) -> Response:
    """A JSON 1.1 protocol error: the type in `__type` and in `x-amzn-ErrorType`, as AWS
    sends it (botocore reads either)."""
    response = aws_json_response({"__type": error_type, "message": message}, status)
    response.headers["x-amzn-ErrorType"] = error_type
    return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def max_items_param(request: Request) -> int | None:
    """The `MaxItems` query parameter of a list operation (None when absent)."""
    raw = request.query_params.get("MaxItems")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{raw}' at 'maxItems' failed to satisfy "
            "constraint: Member must be an integer"
        ) from None
