"""EventBridge's event-pattern language: validate a pattern, and match events against it.

A pattern is a JSON object whose keys name fields of the event. A key maps either to an
object (a pattern for the nested object) or to an array of alternatives (OR), each a plain
value (string, number, boolean, null) or a one-key matcher object: `prefix`, `suffix`,
`equals-ignore-case`, `anything-but`, `numeric`, `exists`, `wildcard` or `cidr`. Keys of one
object must all match (AND); `"$or": [pattern, ...]` matches when any of its patterns does.

Matching follows EventBridge (its open-source engine, Event Ruler):
- a field whose value is an array matches when any element does;
- numbers compare as numbers (300 matches 3.0e2), never as strings, and booleans are not
  numbers;
- a missing field matches only `{"exists": false}`; `null` matches a field present as null;
  `anything-but` needs the field present;
- `exists` applies to leaf values: a field holding an object does not "exist" as a leaf.

Invalid patterns raise `InvalidEventPatternError` with EventBridge's message form
`Event pattern is not valid. Reason: ...`. The module is pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina import untrusted_json
from lamina.errors import UserError

#: Lamina's limit on a pattern's nesting (EventBridge documents none): compiling and matching
#: recurse per level, and every event put is matched against every rule's pattern
MAX_DEPTH = 100
#: EventBridge accepts numbers in numeric matchers within ±5.0e9
_NUMERIC_LIMIT = 5.0e9
_MATCH_TYPES = frozenset(
    {
        "prefix",
        "suffix",
        "equals-ignore-case",
        "anything-but",
        "numeric",
        "exists",
        "wildcard",
        "cidr",
    }
)
_LOWER = frozenset({">", ">="})
_UPPER = frozenset({"<", "<="})


class InvalidEventPatternError(UserError):
    """A pattern EventBridge would refuse (PutRule, TestEventPattern)."""

    error_type = "InvalidEventPatternException"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Event pattern is not valid. Reason: {reason}")
        self.reason = reason


Matcher = Callable[[Any], bool]


@dataclass(frozen=True)
class _Leaf:
    """The alternatives for one field: any matching value matches. `exists` is kept apart
    because it is the one matcher that looks at whether the field is there at all."""

    matchers: tuple[Matcher, ...]
    exists: tuple[bool, ...]


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern: `fields` map a key to a nested pattern or a leaf; `alternatives`
    are `$or` branches (each a list of patterns, one of which must match)."""

    fields: tuple[tuple[str, Pattern | _Leaf], ...]
    alternatives: tuple[tuple[Pattern, ...], ...] = ()
    source: str = ""


def compile(pattern_json: str) -> Pattern:
    """Parse and validate a pattern; raises InvalidEventPatternError naming the problem."""
    try:
        parsed = untrusted_json.loads(pattern_json)
    except (ValueError, TypeError) as e:
        raise InvalidEventPatternError(f"Filter is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise InvalidEventPatternError("Filter is not an object")
    if untrusted_json.depth_exceeds(parsed, MAX_DEPTH):
        raise InvalidEventPatternError(f"Filter is nested deeper than {MAX_DEPTH} levels")
    pattern = _object(parsed, "")
    return Pattern(pattern.fields, pattern.alternatives, pattern_json)


def validate(pattern_json: str) -> None:
    """Raise InvalidEventPatternError if the pattern is not valid."""
    compile(pattern_json)


def matches(pattern: Pattern | str, event: dict[str, Any]) -> bool:
    """Whether `event` (a decoded JSON object) matches the pattern: compiled, or JSON text
    (compiled here, raising InvalidEventPatternError if it is not valid)."""
    return _match_object(compile(pattern) if isinstance(pattern, str) else pattern, event)


# -- compiling -------------------------------------------------------------------------------


def _object(obj: dict[str, Any], path: str) -> Pattern:
    if not obj:
        raise InvalidEventPatternError("Empty objects are not allowed")
    fields: list[tuple[str, Pattern | _Leaf]] = []
    alternatives: list[tuple[Pattern, ...]] = []
    for key, value in obj.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            alternatives.append(_or(value, path))
        elif isinstance(value, dict):
            fields.append((key, _object(value, where)))
        elif isinstance(value, list):
            fields.append((key, _leaf(value, where)))
        else:
            raise InvalidEventPatternError(f'"{key}" must be an object or an array')
    return Pattern(tuple(fields), tuple(alternatives))


def _or(value: Any, path: str) -> tuple[Pattern, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidEventPatternError("Or relationship must be an array of at least two objects")
    branches = []
    for branch in value:
        if not isinstance(branch, dict):
            raise InvalidEventPatternError("Or relationship must be an array of objects")
        branches.append(_object(branch, path))
    return tuple(branches)


def _leaf(values: list[Any], where: str) -> _Leaf:
    if not values:
        raise InvalidEventPatternError("Empty arrays are not allowed")
    matchers: list[Matcher] = []
    exists: list[bool] = []
    for value in values:
        if isinstance(value, dict):
            if len(value) != 1:
                raise InvalidEventPatternError(
                    f"Only one key allowed in match expression at {where}"
                )
            ((kind, arg),) = value.items()
            if kind == "exists":
                if not isinstance(arg, bool):
                    raise InvalidEventPatternError(
                        "exists match pattern must be either true or false."
                    )
                exists.append(arg)
            else:
                matchers.append(_matcher(kind, arg))
        elif isinstance(value, list):
            raise InvalidEventPatternError(
                "Match value must be String, number, true, false, or null"
            )
        else:
            matchers.append(_exactly(value))
    return _Leaf(tuple(matchers), tuple(exists))


def _matcher(kind: str, arg: Any) -> Matcher:
    if kind not in _MATCH_TYPES:
        raise InvalidEventPatternError(f"Unrecognized match type {kind}")
    if kind in ("prefix", "suffix"):
        return _affix(kind, arg)
    if kind == "equals-ignore-case":
        text = _string(kind, arg).casefold()
        return lambda v: isinstance(v, str) and v.casefold() == text
    if kind == "anything-but":
        return _anything_but(arg)
    if kind == "numeric":
        return _numeric(arg)
    if kind == "wildcard":
        return _wildcard(_string(kind, arg))
    return _cidr(arg)


def _string(kind: str, arg: Any) -> str:
    if not isinstance(arg, str):
        raise InvalidEventPatternError(f"{kind} match pattern must be a string")
    return arg


def _affix(kind: str, arg: Any) -> Matcher:
    """`prefix`/`suffix`, optionally `{"equals-ignore-case": text}` inside."""
    fold = False
    if isinstance(arg, dict):
        if set(arg) != {"equals-ignore-case"}:
            raise InvalidEventPatternError(
                f"Unsupported {kind} pattern: only equals-ignore-case is allowed inside it"
            )
        arg, fold = arg["equals-ignore-case"], True
    text = _string(kind, arg)
    if fold:
        text = text.casefold()
    test = str.startswith if kind == "prefix" else str.endswith

    def affix(v: Any) -> bool:
        return isinstance(v, str) and test(v.casefold() if fold else v, text)

    return affix


def _exactly(expected: Any) -> Matcher:
    if _is_number(expected):
        number = float(expected)
        return lambda v: _is_number(v) and float(v) == number
    if isinstance(expected, str):
        return lambda v: isinstance(v, str) and v == expected
    # booleans and null: identity of JSON literal, so `true` never matches 1
    return lambda v: v is expected


def _anything_but(arg: Any) -> Matcher:
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise InvalidEventPatternError("Only one key allowed in match expression")
        ((kind, inner),) = arg.items()
        if kind in ("prefix", "suffix", "wildcard"):
            positive = _matcher(kind, inner)
        elif kind == "equals-ignore-case":
            texts = inner if isinstance(inner, list) else [inner]
            if not texts:
                raise InvalidEventPatternError("Empty arrays are not allowed")
            folded = {_string(kind, t).casefold() for t in texts}

            def positive(v: Any) -> bool:
                return isinstance(v, str) and v.casefold() in folded
        else:
            raise InvalidEventPatternError(f"Unsupported anything-but pattern: {kind}")
        return lambda v: not positive(v)
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise InvalidEventPatternError("Empty arrays are not allowed")
    excluded = []
    for value in values:
        if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
            raise InvalidEventPatternError(
                "Inside anything but list, start|null|boolean is not supported."
            )
        excluded.append(_exactly(value))
    return lambda v: not any(m(v) for m in excluded)


def _numeric(arg: Any) -> Matcher:
    if not isinstance(arg, list) or not arg or len(arg) % 2:
        raise InvalidEventPatternError("Value of numeric must be an array.")
    checks: list[Callable[[float], bool]] = []
    ops = [arg[i] for i in range(0, len(arg), 2)]
    for i in range(0, len(arg), 2):
        op, bound = arg[i], arg[i + 1]
        if op not in ("=", "<", "<=", ">", ">="):
            raise InvalidEventPatternError(f"Unrecognized numeric range operator: {op}")
        if not _is_number(bound):
            raise InvalidEventPatternError(f"Value of {op} must be numeric")
        if abs(float(bound)) > _NUMERIC_LIMIT:
            raise InvalidEventPatternError(
                f"Value of {op} must be between -5.0E9 and 5.0E9 inclusive"
            )
        checks.append(_compare(op, float(bound)))
    # EventBridge's forms: ["=", x], [lower, x], [upper, x], or [lower, x, upper, y]
    if len(ops) == 2 and not (ops[0] in _LOWER and ops[1] in _UPPER):
        raise InvalidEventPatternError(
            "Bad numeric range: a range is a lower bound (> or >=) then an upper (< or <=)"
        )
    if len(ops) > 2 or (len(ops) == 2 and float(arg[1]) >= float(arg[3])):
        raise InvalidEventPatternError("Bad numeric range operator")
    return lambda v: _is_number(v) and all(check(float(v)) for check in checks)


def _compare(op: str, bound: float) -> Callable[[float], bool]:
    if op == "=":
        return lambda x: x == bound
    if op == "<":
        return lambda x: x < bound
    if op == "<=":
        return lambda x: x <= bound
    if op == ">":
        return lambda x: x > bound
    return lambda x: x >= bound


def _wildcard(text: str) -> Matcher:
    if "**" in text:
        raise InvalidEventPatternError(
            f"Consecutive wildcard characters at pos {text.index('**') + 1}"
        )
    # `\*` is a literal star, `\\` a literal backslash; any other escape is refused.
    parts: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "*\\":
                raise InvalidEventPatternError(f"Invalid escape character at pos {i}")
            parts.append(re.escape(text[i + 1]))
            i += 2
            continue
        parts.append(".*" if c == "*" else re.escape(c))
        i += 1
    regex = re.compile("".join(parts), re.DOTALL)
    return lambda v: isinstance(v, str) and regex.fullmatch(v) is not None


def _cidr(arg: Any) -> Matcher:
    text = _string("cidr", arg)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise InvalidEventPatternError(f"Malformed CIDR: {text}") from e
    if "/" not in text:
        raise InvalidEventPatternError(f"Malformed CIDR, one '/' required: {text}")

    def in_network(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v) in network
        except ValueError:
            return False

    return in_network


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- matching --------------------------------------------------------------------------------


class _Missing:
    """The value of a field the event does not have (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _match_object(pattern: Pattern, obj: Any) -> bool:
    for key, sub in pattern.fields:
        value = obj.get(key, _MISSING) if isinstance(obj, dict) else _MISSING
        if isinstance(sub, Pattern):
            if not _match_nested(sub, value):
                return False
        elif not _match_leaf(sub, value):
            return False
    return all(any(_match_object(b, obj) for b in branches) for branches in pattern.alternatives)


def _match_nested(pattern: Pattern, value: Any) -> bool:
    # An array of objects: some element must match the whole nested pattern, and arrays
    # within arrays count as one flat array (walked with a stack: an event's arrays may nest
    # as deep as its JSON may). An empty array is treated like a missing object, which
    # `exists: false` still matches; a missing (or non-object) parent leaves every field
    # below it missing.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and item:
            stack.extend(reversed(item))
        elif _match_object(pattern, item if isinstance(item, dict) else {}):
            return True
    return False


def _match_leaf(leaf: _Leaf, value: Any) -> bool:
    is_leaf = value is not _MISSING and not isinstance(value, dict)
    if isinstance(value, list):
        is_leaf = bool(value) and not all(isinstance(v, dict) for v in value)
    for want in leaf.exists:
        if want == is_leaf:
            return True
    if value is _MISSING or isinstance(value, dict):
        return False
    values = value if isinstance(value, list) else [value]
    return any(m(v) for v in values if not isinstance(v, (dict, list)) for m in leaf.matchers)
