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
from collections.abc import Mapping
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
from lamina.stacks.sam import (
    LOCAL_PATH_KEY,
    SAM_TRANSFORM,
    LocalCode,
    managed_policy_map,
    replace_local_code,
    restore_local_code,
    sources,
    transforms,
    translate,
)

__all__ = [
    "LOCAL_PATH_KEY",
    "Physical",
    "Resolver",
    "deployment_order",
    "load_template",
    "managed_policy_map",
]

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
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise TemplateError("a mapping key must be a string", line=line)
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


# Booleans are `true` / `false` only, as in YAML 1.2 and JSON: YAML 1.1's yes/no/on/off would
# turn a condition named `Yes` or a value `on` into a boolean behind the author's back.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
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
    if text.lstrip().startswith("{"):
        # JSON: a tab is only ever whitespace there (a tab in a string is written \t), but
        # YAML refuses it as indentation
        text = text.replace("\t", " ")
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
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
        if loader is not None:
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
    try:
        return _check_value(name, spec, raw, line)
    except (ValueError, TypeError, re.error) as exc:  # the declaration's own constraints
        raise TemplateError(f"parameter {name}: invalid declaration: {exc}", line=line) from None


def _check_value(name: str, spec: Mapping[str, Any], raw: Any, line: int | None) -> Any:
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
    if allowed is not None and not isinstance(allowed, list):
        raise fail("AllowedValues must be a list")
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
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        if not isinstance(depends_on, list) or not all(isinstance(n, str) for n in depends_on):
            raise TemplateError("DependsOn takes a name or a list of names", **where(logical_id))
        for name in depends_on:
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
        update_policy = body.get("UpdatePolicy")
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
            if not isinstance(condition, str) or condition not in conditions:
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

    declared_transforms = transforms(document)
    unsupported = [t for t in declared_transforms if t != SAM_TRANSFORM]
    if unsupported:
        raise TemplateError(f"Transform {unsupported[0]!r} is not supported (only {SAM_TRANSFORM})")

    local = LocalCode(base_dir, resource_lines)
    original = copy.deepcopy(document["Resources"])
    code_dirs: dict[str, Path] = {}
    if declared_transforms:
        sam = copy.deepcopy(document)
        code_dirs = replace_local_code(sam, local)
        translator_values = {**parameters, **pseudo}
        transformed = translate(sam, translator_values, region, resource_lines)
    else:
        transformed = copy.deepcopy(document)
    resources_body = transformed.get("Resources")
    if isinstance(resources_body, dict):
        restore_local_code(resources_body, local)
    generated_from = sources(original, resources_body or {})

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
        sources=generated_from,
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
