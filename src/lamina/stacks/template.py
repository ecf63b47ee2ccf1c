"""Reading a SAM / CloudFormation template into a `Template` ready to provision.

`load_template` reads YAML (with CloudFormation's short tags: `!Ref`, `!GetAtt`, `!Sub`, ...)
or JSON, binds `Parameters`, runs AWS's own SAM translator (`aws-sam-translator`) when the
template declares `Transform: AWS::Serverless-2016-10-31`, evaluates `Conditions` and leaves
out the resources and outputs whose condition is false, and works out what each resource
depends on. `deployment_order` orders the resources for provisioning. Nothing here talks to
AWS or to the server: the translator gets its managed-policy names from a local table.

Local code. SAM's `CodeUri` / `ContentUri` (and CloudFormation's `Code` / `Content` written as
a path, as `aws cloudformation package` takes them) may name a directory or a zip file next to
the template. The translator only knows S3 locations, so each local path goes in as a
placeholder `s3://lamina-local/<n>` and comes back out, in the generated resource, as::

    AWS::Lambda::Function       Properties.Code    == {"LaminaLocalPath": "/abs/path"}
    AWS::Lambda::LayerVersion   Properties.Content == {"LaminaLocalPath": "/abs/path"}

The provisioning layer reads `LaminaLocalPath` (a directory to zip, or a .zip file) where it
would otherwise fetch `S3Bucket`/`S3Key`. `InlineCode` becomes `Code.ZipFile` as on AWS.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from lamina.stacks import Physical, Resource, Template, TemplateError
from lamina.stacks.intrinsics import (
    PSEUDO_PARAMETERS,
    Resolver,
    condition_names,
    references,
)

__all__ = ["Physical", "Resolver", "deployment_order", "load_template"]

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
#: the bucket of the placeholders local code paths go through the translator as
LOCAL_BUCKET = "lamina-local"
LOCAL_PATH_KEY = "LaminaLocalPath"

#: the sections whose entries' lines are kept for error messages
_LINED_SECTIONS = ("Parameters", "Resources", "Outputs", "Conditions", "Mappings")

# -- YAML with CloudFormation's short tags ------------------------------------------------

_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in [
            *("GetAtt", "Sub", "Join", "If", "Equals", "And", "Or", "Not", "Select", "Split"),
            *("FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr", "Length", "ToJsonString"),
            "Transform",
        ]
    },
}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with CloudFormation's tags, no dates, and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise TemplateError(
                    f"duplicate key {key!r} (first written on line {seen[key]})", line=line
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _short_tag(loader: _Loader, node: yaml.Node) -> dict[str, Any]:
    tag = node.tag[1:]
    function = _TAGS[tag]
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {function: value}


def _unknown_tag(loader: _Loader, suffix: str, node: yaml.Node) -> Any:
    raise TemplateError(f"unknown tag {node.tag}", line=node.start_mark.line + 1)


def _timestamp_as_text(loader: _Loader, node: yaml.Node) -> str:
    # `Version: 2012-10-17` is a string to CloudFormation, not a date
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


for _tag in _TAGS:
    _Loader.add_constructor(f"!{_tag}", _short_tag)
_Loader.add_multi_constructor("!", _unknown_tag)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """The template's document, and section -> entry -> 1-based line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise TemplateError(
            f"invalid YAML/JSON: {problem}", line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML/JSON: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        raise TemplateError("a template is a mapping with a Resources section")
    lines: dict[str, dict[str, int]] = {section: {} for section in _LINED_SECTIONS}
    assert isinstance(node, yaml.MappingNode)
    for key_node, value_node in node.value:
        if key_node.value in lines and isinstance(value_node, yaml.MappingNode):
            for entry_key, _ in value_node.value:
                lines[key_node.value][str(entry_key.value)] = entry_key.start_mark.line + 1
    return document, lines


# -- parameters ----------------------------------------------------------------------------


def pseudo_parameters(*, stack_name: str, region: str, account_id: str) -> dict[str, Any]:
    stack_id = uuid.uuid5(uuid.NAMESPACE_URL, stack_name)
    stack_arn = f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{stack_id}"
    return {
        "AWS::AccountId": account_id,
        "AWS::NotificationARNs": [],
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::StackId": stack_arn,
        "AWS::StackName": stack_name,
        "AWS::URLSuffix": "amazonaws.com",
    }


def _is_list_type(kind: str) -> bool:
    return kind == "CommaDelimitedList" or kind.startswith("List<")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_parameter(name: str, spec: Mapping[str, Any], raw: Any, line: int | None) -> Any:
    def fail(why: str) -> TemplateError:
        return TemplateError(f"parameter {name}: {why}", line=line)

    kind = str(spec.get("Type", ""))
    if not kind:
        raise fail("no Type")
    if isinstance(raw, list):
        raw = ",".join(str(item) for item in raw)
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    text = str(raw)
    items = [item.strip() for item in text.split(",")] if _is_list_type(kind) else [text]
    numeric = kind == "Number" or kind == "List<Number>"
    allowed = spec.get("AllowedValues")
    allowed_text = [str(v).lower() if isinstance(v, bool) else str(v) for v in allowed or []]
    pattern = spec.get("AllowedPattern")
    for item in items:
        if numeric and _number(item) is None:
            raise fail(f"{item!r} is not a number")
        if allowed is not None and item not in allowed_text:
            raise fail(f"{item!r} is not one of the AllowedValues {allowed_text}")
        if pattern is not None and re.fullmatch(str(pattern), item) is None:
            raise fail(spec.get("ConstraintDescription") or f"{item!r} does not match {pattern!r}")
        if kind == "String":
            if "MinLength" in spec and len(item) < int(spec["MinLength"]):
                raise fail(f"{item!r} is shorter than MinLength {spec['MinLength']}")
            if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
                raise fail(f"{item!r} is longer than MaxLength {spec['MaxLength']}")
        if numeric:
            number = _number(item)
            assert number is not None
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise fail(f"{item} is less than MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise fail(f"{item} is greater than MaxValue {spec['MaxValue']}")
    return items if _is_list_type(kind) else text


def _bind_parameters(
    declared: Any, overrides: Mapping[str, str], lines: Mapping[str, int]
) -> dict[str, Any]:
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise TemplateError("Parameters must be a mapping")
    for name in overrides:
        if name not in declared:
            raise TemplateError(f"parameter {name} is not declared in the template's Parameters")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        line = lines.get(name)
        if not isinstance(spec, dict):
            raise TemplateError(f"parameter {name}: expected a mapping", line=line)
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(
                f"parameter {name} has no Default: give it a value"
                " (--parameter-overrides {name}=...)".replace("{name}", name),
                line=line,
            )
        values[name] = _check_parameter(name, spec, raw, line)
    return values


# -- the SAM transform -----------------------------------------------------------------------

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


def _transforms(document: Mapping[str, Any]) -> list[Any]:
    declared = document.get("Transform")
    if declared is None:
        return []
    return declared if isinstance(declared, list) else [declared]


_LOGICAL_ID_IN_MESSAGE = re.compile(r"\[([A-Za-z0-9]+)\]")


def _translate(
    document: dict[str, Any], parameters: Mapping[str, Any], region: str, lines: Mapping[str, int]
) -> dict[str, Any]:
    # imported here: the translator (and boto3, pydantic under it) is heavy, and only a
    # SAM template needs it
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # region only: the translator reads it from a session, which makes no call here
    session = boto3.Session(region_name=region)
    translator = Translator(None, Parser(), boto_session=session)
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
    except Exception as exc:  # the translator's own bugs on odd input: still the user's template
        raise TemplateError(f"SAM transform failed: {type(exc).__name__}: {exc}") from None
    return translated


class _LocalCode:
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
        key = str(len(self.paths) + 1)
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


def _code_properties(resource: Mapping[str, Any]) -> dict[str, Any]:
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


def _replace_local_code(document: dict[str, Any], local: _LocalCode) -> dict[str, Path]:
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
        properties = _code_properties(resource)
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


def _restore_local_code(resources: dict[str, Any], local: _LocalCode) -> None:
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        properties = _code_properties(resource)
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


def _sources(original: Mapping[str, Any], generated: Iterable[str]) -> dict[str, str]:
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
        events = _code_properties(resource).get("Events")
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


# -- conditions, resources, outputs --------------------------------------------------------


def _evaluate_conditions(
    declared: Any,
    parameters: Mapping[str, Any],
    pseudo: Mapping[str, Any],
    mappings: Mapping[str, Any],
    lines: Mapping[str, int],
) -> dict[str, bool]:
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise TemplateError("Conditions must be a mapping")
    values: dict[str, bool] = {}
    evaluating: list[str] = []

    def condition(name: str) -> bool:
        if name in values:
            return values[name]
        if name not in declared:
            raise TemplateError(f"condition {name} is not declared in Conditions")
        if name in evaluating:
            cycle = " -> ".join([*evaluating[evaluating.index(name) :], name])
            raise TemplateError(f"conditions refer to each other in a cycle: {cycle}")
        evaluating.append(name)
        try:
            result = resolver.resolve(declared[name], {})
        except TemplateError as exc:
            if exc.line is not None:
                raise
            raise TemplateError(f"condition {name}: {exc.message}", line=lines.get(name)) from None
        finally:
            evaluating.pop()
        if not isinstance(result, bool):
            raise TemplateError(
                f"condition {name}: expected Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition",
                line=lines.get(name),
            )
        values[name] = result
        return result

    resolver = Resolver.for_conditions(
        parameters=parameters, pseudo=pseudo, mappings=mappings, condition=condition
    )
    for name in declared:
        condition(name)
    return values


def _check_references(
    value: Any,
    *,
    what: str,
    logical_id: str | None,
    line: int | None,
    names: set[str],
    conditions: Mapping[str, bool],
) -> None:
    for name in references(value):
        if name not in names:
            raise TemplateError(
                f"{what} refers to {name}, which is not a parameter or resource of the template",
                logical_id=logical_id,
                line=line,
            )
    for name in condition_names(value):
        if name not in conditions:
            raise TemplateError(
                f"{what} names condition {name}, which is not declared in Conditions",
                logical_id=logical_id,
                line=line,
            )


def _build_resources(
    transformed: Mapping[str, Any],
    *,
    conditions: Mapping[str, bool],
    parameter_names: set[str],
    lines: Mapping[str, int],
    sources: Mapping[str, str],
) -> dict[str, Resource]:
    declared = transformed.get("Resources")
    if not isinstance(declared, dict) or not declared:
        raise TemplateError("the template has no Resources")

    def line_of(logical_id: str) -> int | None:
        return lines.get(sources.get(logical_id, logical_id))

    def where(logical_id: str) -> dict[str, Any]:
        return {"logical_id": sources.get(logical_id, logical_id), "line": line_of(logical_id)}

    kept: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    for logical_id, body in declared.items():
        if not isinstance(body, dict) or not isinstance(body.get("Type"), str):
            raise TemplateError("a resource needs a Type", **where(logical_id))
        condition = body.get("Condition")
        if condition is not None:
            if not isinstance(condition, str) or condition not in conditions:
                raise TemplateError(
                    f"Condition {condition!r} is not declared in Conditions", **where(logical_id)
                )
            if not conditions[condition]:
                left_out[logical_id] = condition
                continue
        kept[logical_id] = body

    names = set(declared) | parameter_names | PSEUDO_PARAMETERS
    resources: dict[str, Resource] = {}
    for logical_id, body in kept.items():
        properties = body.get("Properties") or {}
        if not isinstance(properties, dict):
            raise TemplateError("Properties must be a mapping", **where(logical_id))
        _check_references(
            properties, what=logical_id, names=names, conditions=conditions, **where(logical_id)
        )
        needs = {
            name
            for name in references(properties, taken=conditions.__getitem__)
            if name in declared
        }
        depends_on = body.get("DependsOn", [])
        for name in [depends_on] if isinstance(depends_on, str) else depends_on:
            if name not in declared:
                raise TemplateError(
                    f"DependsOn names {name}, no such resource", **where(logical_id)
                )
            needs.add(name)
        for name in sorted(needs):
            if name in left_out:
                raise TemplateError(
                    f"{logical_id} refers to {name},"
                    f" which its condition {left_out[name]} leaves out",
                    **where(logical_id),
                )
        metadata = body.get("Metadata")
        update_policy = body.get("UpdatePolicy") or body.get("UpdateReplacePolicy")
        resources[logical_id] = Resource(
            logical_id=logical_id,
            type=body["Type"],
            properties=copy.deepcopy(properties),
            depends_on=needs,
            line=line_of(logical_id),
            source=sources.get(logical_id),
            deletion_policy=body.get("DeletionPolicy"),
            update_policy=update_policy if isinstance(update_policy, dict) else None,
            metadata=metadata if isinstance(metadata, dict) else {},
        )
    return resources


def _build_outputs(
    declared: Any,
    *,
    conditions: Mapping[str, bool],
    names: set[str],
    declared_resources: set[str],
    resources: Mapping[str, Resource],
    lines: Mapping[str, int],
) -> dict[str, Any]:
    if declared is None:
        return {}
    if not isinstance(declared, dict):
        raise TemplateError("Outputs must be a mapping")
    outputs: dict[str, Any] = {}
    for name, output in declared.items():
        line = lines.get(name)
        if not isinstance(output, dict) or "Value" not in output:
            raise TemplateError(f"output {name} needs a Value", line=line)
        condition = output.get("Condition")
        if condition is not None:
            if condition not in conditions:
                raise TemplateError(
                    f"output {name}: condition {condition} is not declared", line=line
                )
            if not conditions[condition]:
                continue
        _check_references(
            output,
            what=f"output {name}",
            logical_id=None,
            line=line,
            names=names,
            conditions=conditions,
        )
        for target in references(output, taken=conditions.__getitem__):
            if target in declared_resources and target not in resources:
                raise TemplateError(
                    f"output {name} refers to {target}, which a false condition leaves out",
                    line=line,
                )
        outputs[name] = {key: value for key, value in output.items() if key != "Condition"}
    return outputs


# -- the public surface --------------------------------------------------------------------


def load_template(
    path: Path,
    overrides: Mapping[str, str],
    *,
    stack_name: str,
    region: str,
    account_id: str,
) -> Template:
    """Reads, checks and (for SAM) transforms the template at `path`.

    Raises `TemplateError` naming the resource (or parameter, output) and its line for
    anything CloudFormation would reject before provisioning: bad YAML, an unknown tag, a
    parameter value its declaration does not allow, a reference to nothing, a SAM property
    the translator refuses, a local code path that does not exist.
    """
    path = Path(path).resolve()
    base_dir = path.parent
    document, lines = _read(path)
    resource_lines = lines["Resources"]
    if not isinstance(document.get("Resources"), dict) or not document["Resources"]:
        raise TemplateError("the template has no Resources")

    pseudo = pseudo_parameters(stack_name=stack_name, region=region, account_id=account_id)
    parameters = _bind_parameters(document.get("Parameters"), overrides, lines["Parameters"])

    transforms = _transforms(document)
    unsupported = [t for t in transforms if t != SAM_TRANSFORM]
    if unsupported:
        raise TemplateError(f"Transform {unsupported[0]!r} is not supported (only {SAM_TRANSFORM})")

    local = _LocalCode(base_dir, resource_lines)
    original = copy.deepcopy(document["Resources"])
    code_dirs: dict[str, Path] = {}
    if transforms:
        sam = copy.deepcopy(document)
        code_dirs = _replace_local_code(sam, local)
        translator_values = {**parameters, **pseudo}
        transformed = _translate(sam, translator_values, region, resource_lines)
    else:
        transformed = copy.deepcopy(document)
    resources_body = transformed.get("Resources")
    if isinstance(resources_body, dict):
        _restore_local_code(resources_body, local)
    sources = _sources(original, resources_body or {})

    mappings = transformed.get("Mappings") or {}
    if not isinstance(mappings, dict):
        raise TemplateError("Mappings must be a mapping")
    conditions = _evaluate_conditions(
        transformed.get("Conditions"), parameters, pseudo, mappings, lines["Conditions"]
    )
    resources = _build_resources(
        transformed,
        conditions=conditions,
        parameter_names=set(parameters),
        lines=resource_lines,
        sources=sources,
    )
    names = set(transformed["Resources"]) | set(parameters) | PSEUDO_PARAMETERS
    outputs = _build_outputs(
        transformed.get("Outputs"),
        conditions=conditions,
        names=names,
        declared_resources=set(transformed["Resources"]),
        resources=resources,
        lines=lines["Outputs"],
    )
    return Template(
        path=path,
        base_dir=base_dir,
        resources=resources,
        parameters=parameters,
        conditions=conditions,
        mappings=mappings,
        outputs=outputs,
        transformed=transformed,
        code_dirs={k: v for k, v in code_dirs.items() if k in resources},
        pseudo=pseudo,
    )


def deployment_order(template: Template) -> list[str]:
    """Logical ids in an order that provisions each resource after everything it depends on;
    among resources free to go, template order. A cycle raises `TemplateError` naming it."""
    remaining = list(template.resources)
    placed: set[str] = set()
    order: list[str] = []
    while remaining:
        for logical_id in remaining:
            if template.resources[logical_id].depends_on <= placed:
                order.append(logical_id)
                placed.add(logical_id)
                remaining.remove(logical_id)
                break
        else:
            cycle = _find_cycle(template, remaining)
            first = template.resources[cycle[0]]
            raise TemplateError(
                "resources depend on each other in a cycle: " + " -> ".join(cycle),
                logical_id=first.logical_id,
                line=first.line,
            )
    return order


def _find_cycle(template: Template, remaining: list[str]) -> list[str]:
    # every remaining resource waits on another remaining one: walk until one repeats
    pending = set(remaining)
    path: list[str] = []
    current = remaining[0]
    while current not in path:
        path.append(current)
        current = min(template.resources[current].depends_on & pending, key=remaining.index)
    return [*path[path.index(current) :], current]
