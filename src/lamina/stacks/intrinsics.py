"""CloudFormation's intrinsic functions: finding what a value refers to, and resolving it.

Two jobs, both over the JSON shape of a template (`{"Ref": ...}`, `{"Fn::Sub": ...}`, ...):

- `references(value)`: the names a value refers to through `Ref`, `Fn::GetAtt` and `Fn::Sub`,
  so the template layer can check them and order resources;
- `Resolver`: turns a value into plain data against the template's parameters, mappings and
  conditions and what is already provisioned (`Physical`). The provisioning layer calls
  `Resolver(template).resolve(resource.properties, physical)` just before it creates a resource.

Values follow CloudFormation: a `Ref` to a parameter gives its value as a string (a list for
list types); `AWS::NoValue` removes the key or list item it stands in.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lamina.stacks import Physical, Resource, Template, TemplateError

PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)

CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition"})

#: `${Name}` or `${Name.Attr}` in a Fn::Sub string; `${!Literal}` is written out as `${Literal}`
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _NoValue:
    """`Ref: AWS::NoValue`: removes the key or list item it is the value of."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


def intrinsic(value: Any) -> tuple[str, Any] | None:
    """(`function name`, argument) if `value` is a one-key intrinsic-function object."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        # `Condition` only with a name: a policy statement's `Condition` block is a mapping
        if (
            key == "Ref"
            or key.startswith("Fn::")
            or (key == "Condition" and isinstance(argument, str))
        ):
            return key, argument
    return None


def sub_variables(text: str) -> Iterator[str]:
    """The variables of a Fn::Sub string (`${X}`, `${X.Attr}`), literals (`${!X}`) left out."""
    for match in _SUB_VARIABLE.finditer(text):
        name = match.group(1).strip()
        if name and not name.startswith("!"):
            yield name


def references(value: Any, *, taken: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Every name `value` refers to through Ref, Fn::GetAtt (the resource) and Fn::Sub.

    With `taken` (condition name -> its value), only the branch of each Fn::If that is taken
    is walked: the other one may name resources its condition leaves out.
    """
    call = intrinsic(value)
    if call is not None:
        name, argument = call
        if name == "Ref" and isinstance(argument, str):
            yield argument
            return
        if name == "Fn::GetAtt":
            if isinstance(argument, str) and "." in argument:
                yield argument.split(".", 1)[0]
                return
            if isinstance(argument, list) and argument and isinstance(argument[0], str):
                yield argument[0]
                yield from references(argument[1:], taken=taken)
                return
        if name == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else _sub_parts(argument)
            if isinstance(text, str):
                for variable in sub_variables(text):
                    head = variable.split(".", 1)[0]
                    if variable not in local and head not in local:
                        yield head
            if isinstance(local, dict):
                yield from references(list(local.values()), taken=taken)
            return
        if (
            name == "Fn::If"
            and taken is not None
            and isinstance(argument, list)
            and len(argument) == 3
            and isinstance(argument[0], str)
        ):
            yield from references(argument[1] if taken(argument[0]) else argument[2], taken=taken)
            return
    if isinstance(value, dict):
        for item in value.values():
            yield from references(item, taken=taken)
    elif isinstance(value, list):
        for item in value:
            yield from references(item, taken=taken)


def condition_names(value: Any) -> Iterator[str]:
    """Every condition `value` names: Fn::If's first argument and `{"Condition": name}`."""
    call = intrinsic(value)
    if call is not None:
        name, argument = call
        if name == "Condition" and isinstance(argument, str):
            yield argument
            return
        if name == "Fn::If" and isinstance(argument, list) and argument:
            if isinstance(argument[0], str):
                yield argument[0]
            for item in argument[1:]:
                yield from condition_names(item)
            return
    if isinstance(value, dict):
        for item in value.values():
            yield from condition_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from condition_names(item)


def _sub_parts(argument: Any) -> tuple[Any, dict[str, Any]]:
    if (
        isinstance(argument, list)
        and len(argument) == 2
        and isinstance(argument[0], str)
        and isinstance(argument[1], dict)
    ):
        return argument[0], argument[1]
    raise TemplateError("Fn::Sub takes a string or [string, {name: value}]")


def _as_text(value: Any, function: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"{function}: expected a string, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Resolver:
    """Resolves intrinsic functions in a template's values.

    `resolve(value, physical)`: `physical` maps each provisioned resource's logical id to what
    it answers to `Ref` and `Fn::GetAtt` with; naming a resource not (yet) in it, an attribute
    it does not have, a parameter or mapping entry that does not exist, or Fn::ImportValue
    raises `TemplateError`.
    """

    def __init__(self, template: Template) -> None:
        self._parameters: Mapping[str, Any] = template.parameters
        self._pseudo: Mapping[str, Any] = template.pseudo
        self._mappings: Mapping[str, Any] = template.mappings
        self._outputs: Mapping[str, Any] = template.outputs
        self._conditions: Callable[[str], bool] = self._known_condition(template.conditions)

    @classmethod
    def for_conditions(
        cls,
        *,
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, Any],
        mappings: Mapping[str, Any],
        condition: Callable[[str], bool],
    ) -> Resolver:
        """A resolver for evaluating `Conditions` while the template is being loaded."""
        resolver = cls.__new__(cls)
        resolver._parameters = parameters
        resolver._pseudo = pseudo
        resolver._mappings = mappings
        resolver._outputs = {}
        resolver._conditions = condition
        return resolver

    @staticmethod
    def _known_condition(conditions: Mapping[str, bool]) -> Callable[[str], bool]:
        def lookup(name: str) -> bool:
            try:
                return conditions[name]
            except KeyError:
                raise TemplateError(f"condition {name} is not declared in Conditions") from None

        return lookup

    def condition(self, name: str) -> bool:
        return self._conditions(name)

    def resolve(self, value: Any, physical: Mapping[str, Physical]) -> Any:
        """`value` with every intrinsic function resolved and AWS::NoValue removed."""
        result = self._resolve(value, physical)
        return None if result is NO_VALUE else result

    def resolve_resource(self, resource: Resource, physical: Mapping[str, Physical]) -> Any:
        """The resource's properties resolved; an error names the resource and its line."""
        try:
            return self.resolve(resource.properties, physical)
        except TemplateError as exc:
            raise TemplateError(
                f"{resource.logical_id}: {exc.message}",
                logical_id=resource.source or resource.logical_id,
                line=resource.line,
            ) from None

    def resolve_outputs(self, physical: Mapping[str, Physical]) -> dict[str, Any]:
        """Output name -> its resolved `Value` (outputs with a false condition are gone)."""
        resolved: dict[str, Any] = {}
        for name, output in self._outputs.items():
            try:
                resolved[name] = self.resolve(output.get("Value"), physical)
            except TemplateError as exc:
                raise TemplateError(f"output {name}: {exc.message}") from None
        return resolved

    def _resolve(self, value: Any, physical: Mapping[str, Physical]) -> Any:
        call = intrinsic(value)
        if call is not None:
            name, argument = call
            handler = _FUNCTIONS.get(name)
            if handler is None:
                raise TemplateError(f"{name} is not supported")
            return handler(self, argument, physical)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                resolved = self._resolve(item, physical)
                if resolved is not NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(value, list):
            return [
                item
                for item in (self._resolve(item, physical) for item in value)
                if item is not NO_VALUE
            ]
        return value

    def _text(self, value: Any, physical: Mapping[str, Physical], function: str) -> str:
        return _as_text(self._resolve(value, physical), function)

    # -- the functions --------------------------------------------------------------------

    def _ref(self, name: Any, physical: Mapping[str, Physical]) -> Any:
        if not isinstance(name, str):
            raise TemplateError(f"Ref takes a name, got {_show(name)}")
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        if name in physical:
            return physical[name].ref
        raise TemplateError(f"Ref to {name}: no such parameter, or resource not provisioned")

    def _get_att(self, argument: Any, physical: Mapping[str, Physical]) -> Any:
        if isinstance(argument, str) and "." in argument:
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str)):
            raise TemplateError(f"Fn::GetAtt takes [resource, attribute], got {_show(argument)}")
        resource = argument[0]
        attribute = self._text(argument[1], physical, "Fn::GetAtt")
        if resource not in physical:
            raise TemplateError(f"Fn::GetAtt {resource}.{attribute}: resource not provisioned")
        attributes = physical[resource].attributes
        if attribute not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise TemplateError(
                f"Fn::GetAtt {resource}.{attribute}: no such attribute (it has: {known})"
            )
        return attributes[attribute]

    def _sub(self, argument: Any, physical: Mapping[str, Physical]) -> str:
        text, local = (argument, {}) if isinstance(argument, str) else _sub_parts(argument)
        if not isinstance(text, str):
            raise TemplateError("Fn::Sub takes a string or [string, {name: value}]")
        values = {key: self._resolve(item, physical) for key, item in local.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return _as_text(values[name], "Fn::Sub")
            if "." in name and name not in self._parameters and name not in self._pseudo:
                resource, attribute = name.split(".", 1)
                return _as_text(self._get_att([resource, attribute], physical), "Fn::Sub")
            value = self._ref(name, physical)
            if isinstance(value, list):
                raise TemplateError(f"Fn::Sub: ${{{name}}} is a list")
            return _as_text(value, "Fn::Sub")

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, argument: Any, physical: Mapping[str, Physical]) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError("Fn::Join takes [delimiter, [values]]")
        delimiter = self._text(argument[0], physical, "Fn::Join")
        items = self._resolve(argument[1], physical)
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Join: expected a list of values, got {_show(items)}")
        return delimiter.join(_as_text(item, "Fn::Join") for item in items)

    def _if(self, argument: Any, physical: Mapping[str, Physical]) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3 and isinstance(argument[0], str)):
            raise TemplateError("Fn::If takes [condition, value if true, value if false]")
        branch = argument[1] if self._conditions(argument[0]) else argument[2]
        return self._resolve(branch, physical)

    def _select(self, argument: Any, physical: Mapping[str, Physical]) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError("Fn::Select takes [index, [values]]")
        index_text = self._text(argument[0], physical, "Fn::Select")
        items = self._resolve(argument[1], physical)
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Select: expected a list, got {_show(items)}")
        try:
            index = int(index_text)
        except ValueError:
            raise TemplateError(f"Fn::Select: index {index_text!r} is not a number") from None
        if not 0 <= index < len(items):
            raise TemplateError(f"Fn::Select: index {index} out of range for {len(items)} values")
        return items[index]

    def _split(self, argument: Any, physical: Mapping[str, Physical]) -> list[str]:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError("Fn::Split takes [delimiter, string]")
        delimiter = self._text(argument[0], physical, "Fn::Split")
        if not delimiter:
            raise TemplateError("Fn::Split: the delimiter is empty")
        return self._text(argument[1], physical, "Fn::Split").split(delimiter)

    def _find_in_map(self, argument: Any, physical: Mapping[str, Physical]) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise TemplateError("Fn::FindInMap takes [map, top-level key, second-level key]")
        keys = [self._text(item, physical, "Fn::FindInMap") for item in argument]
        value: Any = self._mappings
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                where = "Mappings" if depth == 0 else ".".join(keys[:depth])
                raise TemplateError(f"Fn::FindInMap: no key {key!r} in {where}")
            value = value[key]
        return value

    def _base64(self, argument: Any, physical: Mapping[str, Physical]) -> str:
        text = self._text(argument, physical, "Fn::Base64")
        return base64.b64encode(text.encode()).decode("ascii")

    def _get_azs(self, argument: Any, physical: Mapping[str, Physical]) -> list[str]:
        region = self._text(argument, physical, "Fn::GetAZs") if argument else ""
        region = region or str(self._pseudo["AWS::Region"])
        return [f"{region}a", f"{region}b", f"{region}c"]

    def _cidr(self, argument: Any, physical: Mapping[str, Physical]) -> list[str]:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise TemplateError("Fn::Cidr takes [ip block, count, cidr bits]")
        block, count_text, bits_text = (self._text(a, physical, "Fn::Cidr") for a in argument)
        try:
            network = ipaddress.ip_network(block, strict=False)
            count, bits = int(count_text), int(bits_text)
            subnets = network.subnets(new_prefix=network.max_prefixlen - bits)
            chosen = [str(subnet) for _, subnet in zip(range(count), subnets, strict=False)]
        except ValueError as exc:
            raise TemplateError(f"Fn::Cidr: {exc}") from None
        if len(chosen) < count:
            raise TemplateError(f"Fn::Cidr: {block} holds fewer than {count} /{bits} blocks")
        return chosen

    def _import_value(self, argument: Any, physical: Mapping[str, Physical]) -> Any:
        raise TemplateError("Fn::ImportValue is not supported (stacks do not share exports)")

    def _equals(self, argument: Any, physical: Mapping[str, Physical]) -> bool:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError("Fn::Equals takes [value, value]")
        left, right = (self._resolve(item, physical) for item in argument)
        # CloudFormation compares the values as strings: `!Equals [!Ref Count, 1]` holds for "1"
        if not isinstance(left, list | dict) and not isinstance(right, list | dict):
            return _as_text(left, "Fn::Equals") == _as_text(right, "Fn::Equals")
        return bool(left == right)

    def _boolean(self, value: Any, physical: Mapping[str, Physical], function: str) -> bool:
        result = self._resolve(value, physical)
        if isinstance(result, bool):
            return result
        if result in ("true", "false"):
            return bool(result == "true")
        raise TemplateError(f"{function}: expected a condition, got {_show(result)}")

    def _conditions_of(self, argument: Any, function: str, low: int, high: int) -> list[Any]:
        if not (isinstance(argument, list) and low <= len(argument) <= high):
            raise TemplateError(f"{function} takes {low} to {high} conditions")
        return argument

    def _and(self, argument: Any, physical: Mapping[str, Physical]) -> bool:
        items = self._conditions_of(argument, "Fn::And", 2, 10)
        return all([self._boolean(item, physical, "Fn::And") for item in items])

    def _or(self, argument: Any, physical: Mapping[str, Physical]) -> bool:
        items = self._conditions_of(argument, "Fn::Or", 2, 10)
        return any([self._boolean(item, physical, "Fn::Or") for item in items])

    def _not(self, argument: Any, physical: Mapping[str, Physical]) -> bool:
        (item,) = self._conditions_of(argument, "Fn::Not", 1, 1)
        return not self._boolean(item, physical, "Fn::Not")

    def _condition(self, argument: Any, physical: Mapping[str, Physical]) -> bool:
        if not isinstance(argument, str):
            raise TemplateError(f"Condition takes a condition name, got {_show(argument)}")
        return self._conditions(argument)


_FUNCTIONS: dict[str, Callable[[Resolver, Any, Mapping[str, Physical]], Any]] = {
    "Ref": Resolver._ref,
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._sub,
    "Fn::Join": Resolver._join,
    "Fn::If": Resolver._if,
    "Fn::Select": Resolver._select,
    "Fn::Split": Resolver._split,
    "Fn::FindInMap": Resolver._find_in_map,
    "Fn::Base64": Resolver._base64,
    "Fn::GetAZs": Resolver._get_azs,
    "Fn::Cidr": Resolver._cidr,
    "Fn::ImportValue": Resolver._import_value,
    "Fn::Equals": Resolver._equals,
    "Fn::And": Resolver._and,
    "Fn::Or": Resolver._or,
    "Fn::Not": Resolver._not,
    "Condition": Resolver._condition,
}
