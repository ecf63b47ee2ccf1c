"""The SAM side of template loading: AWS's translator, and local code paths through it.

The translator (`aws-sam-translator`) turns `AWS::Serverless::*` resources into CloudFormation.
It knows only S3 code locations, so each local `CodeUri` / `ContentUri` goes in as a
placeholder `s3://lamina-local/<n>` (`replace_local_code`) and comes back out, in the
generated resource, as a local path (`restore_local_code`)::

    AWS::Lambda::Function       Properties.Code    == {"LaminaLocalPath": "/abs/path"}
    AWS::Lambda::LayerVersion   Properties.Content == {"LaminaLocalPath": "/abs/path"}

The path is a directory (zipped by the provisioning layer) or a .zip file. CloudFormation's own
`Code` / `Content` written as a path (as `aws cloudformation package` takes it) becomes the same.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lamina.stacks import TemplateError

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
#: the bucket of the placeholders local code paths go through the translator as
LOCAL_BUCKET = "lamina-local"
LOCAL_PATH_KEY = "LaminaLocalPath"


#: managed policies a SAM template names in `Policies`, by the path IAM keeps them under
_MANAGED_POLICIES = {
    "service-role/": (
        "AWSLambdaBasicExecutionRole AWSLambdaVPCAccessExecutionRole AWSLambdaKinesisExecutionRole "
        "AWSLambdaDynamoDBExecutionRole AWSLambdaSQSQueueExecutionRole AWSLambdaMSKExecutionRole "
        "AWSLambdaRole AWSLambdaENIManagementAccess AWSConfigRulesExecutionRole"
    ),
    "": (
        "AWSLambdaExecute AWSLambda_FullAccess AWSLambda_ReadOnlyAccess AWSXRayDaemonWriteAccess "
        "AWSXrayWriteOnlyAccess CloudWatchLambdaInsightsExecutionRolePolicy "
        "CloudWatchLogsFullAccess CloudWatchLogsReadOnlyAccess AmazonS3FullAccess "
        "AmazonS3ReadOnlyAccess AmazonDynamoDBFullAccess AmazonDynamoDBReadOnlyAccess "
        "AmazonSQSFullAccess AmazonSQSReadOnlyAccess AmazonSNSFullAccess AmazonSNSReadOnlyAccess "
        "AmazonKinesisFullAccess AmazonKinesisReadOnlyAccess AmazonEventBridgeFullAccess "
        "AWSStepFunctionsFullAccess SecretsManagerReadWrite AmazonSSMReadOnlyAccess "
        "AWSLambdaInvocation-DynamoDB"
    ),
}


def managed_policy_map() -> dict[str, str]:
    """Managed policy name -> ARN, for the translator (which would otherwise ask IAM)."""
    return {
        name: f"arn:aws:iam::aws:policy/{path}{name}"
        for path, names in _MANAGED_POLICIES.items()
        for name in names.split()
    }


def transforms(document: Mapping[str, Any]) -> list[Any]:
    declared = document.get("Transform")
    if declared is None:
        return []
    return declared if isinstance(declared, list) else [declared]


_LOGICAL_ID_IN_MESSAGE = re.compile(r"\[([A-Za-z0-9]+)\]")


def translate(
    document: dict[str, Any], parameters: Mapping[str, Any], region: str, lines: Mapping[str, int]
) -> dict[str, Any]:
    # imported here: the translator (and boto3, pydantic under it) is heavy, and only a
    # SAM template needs it
    import boto3
    from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.plugins.application.serverless_app_plugin import ServerlessAppPlugin
    from samtranslator.translator.translator import Translator

    for logical_id, resource in document["Resources"].items():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Application":
            raise TemplateError(
                "AWS::Serverless::Application (a nested application) is not supported",
                logical_id=logical_id,
                line=lines.get(logical_id),
            )

    def no_repository() -> Any:
        # the plugin would otherwise call the Serverless Application Repository on AWS
        raise TemplateError("the Serverless Application Repository is not available")

    # region only: the translator reads it from a session, which makes no call here
    session = boto3.Session(region_name=region)
    # our own metrics, published (to nowhere) after: else the translator's warns at exit
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    plugins = [ServerlessAppPlugin(parameters=dict(parameters), sar_client_creator=no_repository)]
    translator = Translator(None, Parser(), plugins=plugins, boto_session=session, metrics=metrics)
    try:
        translated: dict[str, Any] = translator.translate(
            document, dict(parameters), get_managed_policy_map=managed_policy_map
        )
    except InvalidDocumentException as exc:
        first: tuple[str | None, int | None] = (None, None)
        problems = []
        for cause in exc.causes:
            found = _LOGICAL_ID_IN_MESSAGE.search(cause.message)
            logical_id = found.group(1) if found else None
            line = lines.get(logical_id) if logical_id else None
            if first == (None, None):
                first = (logical_id, line)
            problems.append(f"{cause.message}" + (f" (line {line})" if line else ""))
        raise TemplateError(
            "SAM transform failed: " + "; ".join(problems), logical_id=first[0], line=first[1]
        ) from None
    except TemplateError:
        raise
    except Exception as exc:  # the translator's own bugs on odd input: still the user's template
        raise TemplateError(f"SAM transform failed: {type(exc).__name__}: {exc}") from None
    finally:
        metrics.publish()
    return translated


class LocalCode:
    """Local code paths through the translator: path -> placeholder, and back."""

    def __init__(self, base_dir: Path, lines: Mapping[str, int]) -> None:
        self.base_dir = base_dir
        self.lines = lines
        self.paths: dict[str, Path] = {}

    def is_local(self, value: Any) -> bool:
        return isinstance(value, str) and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value)

    def path(self, value: str, what: str, logical_id: str | None) -> Path:
        path = (self.base_dir / value).resolve()
        if not path.exists():
            raise TemplateError(
                f"{what} {value} does not exist (looked for {path})",
                logical_id=logical_id,
                line=self.lines.get(logical_id) if logical_id else None,
            )
        return path

    def placeholder(self, path: Path) -> str:
        # The key carries a digest of the code: the translator names AutoPublishAlias's
        # AWS::Lambda::Version after a hash of the code location, so changed code gets a new
        # version (as `sam package` does with S3 keys named by content) and the same code keeps it.
        key = f"{len(self.paths) + 1}-{code_digest(path)}"
        self.paths[key] = path
        return f"s3://{LOCAL_BUCKET}/{key}"

    def restore(self, location: Any) -> Any:
        if (
            isinstance(location, dict)
            and location.get("S3Bucket") == LOCAL_BUCKET
            and location.get("S3Key") in self.paths
        ):
            return {LOCAL_PATH_KEY: str(self.paths[location["S3Key"]])}
        return location


def code_digest(path: Path) -> str:
    """A digest of a code directory's files (names, modes and contents), or of a file."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    try:
        for file in files:
            digest.update(f"{file.relative_to(path) if path.is_dir() else ''}\0".encode())
            digest.update(f"{file.stat().st_mode & 0o111}\0".encode())
            with file.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
    except OSError as exc:
        raise TemplateError(f"cannot read code at {path}: {exc}") from None
    return digest.hexdigest()[:16]


def code_properties(resource: Mapping[str, Any]) -> dict[str, Any]:
    properties = resource.get("Properties")
    return properties if isinstance(properties, dict) else {}


_SAM_CODE_KEYS = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


_SAM_CODE_KEYS = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


def replace_local_code(document: dict[str, Any], local: LocalCode) -> dict[str, Path]:
    """Swaps SAM's local CodeUri/ContentUri for placeholders; SAM function id -> code dir."""
    code_dirs: dict[str, Path] = {}
    globals_ = document.get("Globals")
    global_code: Path | None = None
    if isinstance(globals_, dict):
        for section, key in (("Function", "CodeUri"), ("LayerVersion", "ContentUri")):
            entry = globals_.get(section)
            if isinstance(entry, dict) and local.is_local(entry.get(key)):
                path = local.path(entry[key], f"Globals {section} {key}", None)
                entry[key] = local.placeholder(path)
                if section == "Function":
                    global_code = path
    for logical_id, resource in document["Resources"].items():
        if not isinstance(resource, dict):
            continue
        properties = code_properties(resource)
        kind = resource.get("Type")
        code_key = _SAM_CODE_KEYS.get(str(kind))
        if code_key is None:
            continue
        value = properties.get(code_key)
        if local.is_local(value):
            path = local.path(str(value), code_key, logical_id)
            properties[code_key] = local.placeholder(path)
        elif (
            kind == "AWS::Serverless::Function"
            and value is None
            and global_code is not None
            and "InlineCode" not in properties
            and "ImageUri" not in properties
        ):
            path = global_code
        else:
            continue
        if kind == "AWS::Serverless::Function" and path.is_dir():
            code_dirs[logical_id] = path
    return code_dirs


def restore_local_code(resources: dict[str, Any], local: LocalCode) -> None:
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        properties = code_properties(resource)
        key = {"AWS::Lambda::Function": "Code", "AWS::Lambda::LayerVersion": "Content"}.get(
            resource.get("Type", "")
        )
        if key is None or key not in properties:
            continue
        value = properties[key]
        if local.is_local(value):  # CloudFormation with a path, as `aws cloudformation package`
            properties[key] = {LOCAL_PATH_KEY: str(local.path(value, key, logical_id))}
        else:
            properties[key] = local.restore(value)


def sources(original: Mapping[str, Any], generated: Iterable[str]) -> dict[str, str]:
    """Generated logical id -> the SAM resource it came from.

    The translator keeps the SAM resource's id for the main resource and prefixes the others
    with it (`HelloWorldFunctionRole`, `ApiFunctionAliaslive`, `CommonLayer58aac76de5`); the
    implicit APIs (`ServerlessRestApi`, `ServerlessHttpApi` and theirs) come from the first
    function with an `Api` / `HttpApi` event that names no API of its own.
    """
    sam = [
        logical_id
        for logical_id, resource in original.items()
        if isinstance(resource, dict)
        and str(resource.get("Type", "")).startswith("AWS::Serverless::")
    ]
    implicit: dict[str, str] = {}
    for logical_id in sam:
        resource = original[logical_id]
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        events = code_properties(resource).get("Events")
        for event in events.values() if isinstance(events, dict) else []:
            if not isinstance(event, dict):
                continue
            kind, props = event.get("Type"), event.get("Properties") or {}
            if kind == "Api" and "RestApiId" not in props:
                implicit.setdefault("ServerlessRestApi", logical_id)
            if kind == "HttpApi" and "ApiId" not in props:
                implicit.setdefault("ServerlessHttpApi", logical_id)
    by_length = sorted(sam, key=len, reverse=True)
    sources: dict[str, str] = {}
    for logical_id in generated:
        if logical_id in original:
            if logical_id in sam:
                sources[logical_id] = logical_id
            continue
        for api, function in implicit.items():
            if logical_id.startswith(api) and not any(logical_id.startswith(s) for s in sam):
                sources[logical_id] = function
                break
        else:
            for candidate in by_length:
                if logical_id.startswith(candidate):
                    sources[logical_id] = candidate
                    break
    return sources
