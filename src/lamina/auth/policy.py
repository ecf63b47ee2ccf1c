"""IAM-style policies: parse and check a document, then evaluate requests against it.

Pure (no I/O): `parse` turns a JSON document into a `Policy` or raises `PolicyError` naming
what is wrong; `authorize` decides a request as IAM does for a principal and a resource in the
same account:

1. an explicit `Deny` in any applicable policy wins;
2. otherwise an `Allow` in the identity policies, or in the resource policy for a `Principal`
   that names the caller, allows;
3. otherwise the request is implicitly denied.

Supported: `Version` 2012-10-17 and 2008-10-17; `Statement` as an object or a list; `Sid`,
`Effect`, `Action`/`NotAction` (case-insensitive, `*` and `?`), `Resource`/`NotResource`
(case-sensitive, `*` and `?`, which may span `:` as IAM's do), `Principal`/`NotPrincipal`
(`*`, `AWS`, `Service`) and `Condition` with the String, Numeric, Date, Bool, IpAddress, Arn
and Null operators, `...IfExists` and the `ForAnyValue:`/`ForAllValues:` set prefixes. Not
supported (refused as malformed, so that a policy never means less than it says): policy
variables (`${aws:username}`), `Federated`/`CanonicalUser` principals, Binary operators.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lamina import untrusted_json
from lamina.auth.principal import AccessRequest, Decision, PolicyDocument, Principal

VERSIONS = ("2012-10-17", "2008-10-17")
#: the service principal EventBridge invokes targets as
EVENTS_SERVICE = "events.amazonaws.com"
#: the service principal API Gateway invokes integrations as
APIGATEWAY_SERVICE = "apigateway.amazonaws.com"

_STATEMENT_KEYS = {
    "sid",
    "effect",
    "action",
    "notaction",
    "resource",
    "notresource",
    "principal",
    "notprincipal",
    "condition",
}
_ACTION = re.compile(r"\*|[a-zA-Z0-9-]+:[a-zA-Z0-9*?]*")
_ACCOUNT = re.compile(r"\d{12}")


class PolicyError(ValueError):
    """A policy document IAM would refuse; the message names the problem."""


# -- the parsed form ----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One `operator: {key: values}` pair of a statement's Condition block."""

    #: the operator without prefix or IfExists, e.g. `StringLike`
    operator: str
    #: `any` (ForAnyValue:), `all` (ForAllValues:) or None
    set_op: str | None
    if_exists: bool
    #: lower case: condition keys are case-insensitive
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    sid: str | None
    allow: bool
    actions: tuple[str, ...] | None
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    #: `{"AWS": (...), "Service": (...)}`, or `{"*": ("*",)}` for `"*"`; None when absent
    principals: Mapping[str, tuple[str, ...]] | None
    not_principals: Mapping[str, tuple[str, ...]] | None
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Policy:
    version: str
    id: str | None
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Caller:
    """Who a resource policy's `Principal` is matched against: an AWS identity (its ARN, its
    role's ARN for a role session, its account) or a service (`events.amazonaws.com`)."""

    arn: str | None = None
    account: str | None = None
    role_arn: str | None = None
    service: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(arn=principal.arn, account=principal.account, role_arn=principal.role_arn)


# -- parsing --------------------------------------------------------------------------------


def parse(document: PolicyDocument | str, *, resource_policy: bool = False) -> Policy:
    """Parse and check a policy document (a mapping, or its JSON text). A resource policy's
    statements must name a Principal; an identity policy's must not."""
    if isinstance(document, str):
        try:
            document = untrusted_json.loads(document)
        except ValueError as e:
            raise PolicyError(f"Syntax errors in policy: {e}.") from None
    if not isinstance(document, Mapping):
        raise PolicyError("Syntax errors in policy: the document must be a JSON object.")
    keys = {k.lower(): k for k in document}
    unknown = sorted(k for k in document if k.lower() not in ("version", "id", "statement"))
    if unknown:
        raise PolicyError(f"Policy document has unknown element(s): {', '.join(unknown)}.")
    version = document.get(keys.get("version", "Version"), "2008-10-17")
    if version not in VERSIONS:
        raise PolicyError(
            f"The policy Version {version!r} is not valid: use 2012-10-17 (or 2008-10-17)."
        )
    policy_id = document.get(keys.get("id", "Id"))
    if policy_id is not None and not isinstance(policy_id, str):
        raise PolicyError("The policy Id must be a string.")
    raw = document.get(keys.get("statement", "Statement"))
    if raw is None:
        raise PolicyError("Policy document is missing required field Statement.")
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, list) or not items:
        raise PolicyError("Statement must be an object or a non-empty list of objects.")
    statements = tuple(
        _statement(item, i, resource_policy, version) for i, item in enumerate(items)
    )
    sids = [s.sid for s in statements if s.sid is not None]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (SID) in a single policy must be unique.")
    return Policy(version=str(version), id=policy_id, statements=statements)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(f"{where} must be a string or a non-empty list of strings.")


def _statement(raw: Any, index: int, resource_policy: bool, version: str) -> Statement:
    where = f"Statement {index + 1}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} must be a JSON object.")
    s = {k.lower(): v for k, v in raw.items()}
    unknown = sorted(k for k in raw if k.lower() not in _STATEMENT_KEYS)
    if unknown:
        raise PolicyError(f"{where} has unknown element(s): {', '.join(unknown)}.")
    for a, b in (("action", "notaction"), ("resource", "notresource")):
        if a in s and b in s:
            raise PolicyError(f"{where} has both {a.title()} and Not{b[3:].title()}.")
    if "principal" in s and "notprincipal" in s:
        raise PolicyError(f"{where} has both Principal and NotPrincipal.")
    effect = s.get("effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be Allow or Deny (got {effect!r}).")
    sid = s.get("sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(f"{where}: Sid must be a string.")
    if "action" not in s and "notaction" not in s:
        raise PolicyError(f"{where} is missing Action or NotAction.")
    if "resource" not in s and "notresource" not in s:
        raise PolicyError(f"{where} is missing Resource or NotResource.")
    actions = _actions(s["action"], where) if "action" in s else None
    not_actions = _actions(s["notaction"], where) if "notaction" in s else None
    resources = _resources(s["resource"], where, version) if "resource" in s else None
    not_resources = _resources(s["notresource"], where, version) if "notresource" in s else None
    has_principal = "principal" in s or "notprincipal" in s
    if resource_policy and not has_principal:
        raise PolicyError(f"{where}: a resource policy's statements must name a Principal.")
    if not resource_policy and has_principal:
        raise PolicyError(f"{where}: an identity policy cannot name a Principal.")
    principals = _principals(s["principal"], where) if "principal" in s else None
    not_principals = _principals(s["notprincipal"], where) if "notprincipal" in s else None
    if not_principals is not None and effect == "Allow":
        raise PolicyError(f"{where}: NotPrincipal can only be used with Effect Deny.")
    conditions = _conditions(s["condition"], where) if "condition" in s else ()
    return Statement(
        sid=sid,
        allow=effect == "Allow",
        actions=actions,
        not_actions=not_actions,
        resources=resources,
        not_resources=not_resources,
        principals=principals,
        not_principals=not_principals,
        conditions=conditions,
    )


def _actions(value: Any, where: str) -> tuple[str, ...]:
    actions = _strings(value, f"{where}: Action")
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise PolicyError(
                f"{where}: Action {action!r} is not valid: it must be `service:Operation` "
                "(wildcards * and ? allowed) or `*`."
            )
    return actions


def _resources(value: Any, where: str, version: str) -> tuple[str, ...]:
    resources = _strings(value, f"{where}: Resource")
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:"):
            raise PolicyError(f"{where}: Resource {resource!r} must be an ARN or `*`.")
        if version == "2012-10-17" and "${" in resource:
            raise PolicyError(f"{where}: policy variables are not supported ({resource}).")
    return resources


def _principals(value: Any, where: str) -> Mapping[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, Mapping) or not value:
        raise PolicyError(f"{where}: Principal must be `*` or an object of AWS or Service.")
    out: dict[str, tuple[str, ...]] = {}
    for kind, items in value.items():
        if kind not in ("AWS", "Service"):
            raise PolicyError(
                f"{where}: Principal type {kind!r} is not supported (use AWS or Service)."
            )
        names = _strings(items, f"{where}: Principal {kind}")
        for name in names:
            if kind == "AWS" and not (
                name == "*" or _ACCOUNT.fullmatch(name) or name.startswith("arn:")
            ):
                raise PolicyError(f"{where}: Invalid principal in policy: {name!r}.")
        out[kind] = names
    return out


def _conditions(value: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}: Condition must be an object.")
    out = []
    for raw_op, block in value.items():
        op = str(raw_op)
        set_op = None
        prefix, sep, rest = op.partition(":")
        if sep:
            set_op = {"foranyvalue": "any", "forallvalues": "all"}.get(prefix.lower())
            if set_op is None:
                raise PolicyError(f"{where}: Condition operator {op!r} has an unknown prefix.")
            op = rest
        if_exists = op.lower().endswith("ifexists") and op.lower() != "ifexists"
        base = op[: -len("IfExists")] if if_exists else op
        name = _OPERATORS.get(base.lower())
        if name is None:
            raise PolicyError(f"{where}: Condition operator {raw_op!r} is not supported.")
        if name == "Null" and if_exists:
            raise PolicyError(f"{where}: Null has no IfExists form.")
        if not isinstance(block, Mapping) or not block:
            raise PolicyError(f"{where}: Condition {raw_op} must map condition keys to values.")
        for key, raw_values in block.items():
            values = _condition_values(raw_values, f"{where}: Condition {raw_op} {key}")
            for v in values:
                _check_value(name, v, f"{where}: Condition {raw_op} {key}")
            out.append(Condition(name, set_op, if_exists, str(key).lower(), values))
    return tuple(out)


def _condition_values(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError(f"{where} has no values.")
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, (str, int, float)):
            out.append(str(item))
        else:
            raise PolicyError(f"{where}: values must be strings, numbers or booleans.")
    return tuple(out)


def _check_value(operator: str, value: str, where: str) -> None:
    try:
        if operator.startswith("Numeric"):
            float(value)
        elif operator.startswith("Date"):
            _date(value)
        elif operator.endswith("IpAddress"):
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not valid for {operator}.") from None
    if operator in ("Bool", "Null") and value.lower() not in ("true", "false"):
        raise PolicyError(f"{where}: {operator} takes true or false, not {value!r}.")


# -- matching -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's `*` (any run, `:` included) and `?` (one character) matching."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike/ArnEquals: the six colon-separated parts compared one by one (the last one
    takes the rest), each with wildcards."""
    p = pattern.split(":", 5)
    v = value.split(":", 5)
    if len(p) != 6 or len(v) != 6:
        return pattern == value
    return all(wildcard_match(a, b) for a, b in zip(p, v, strict=True))


def _date(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number_cmp(test: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def compare(actual: str, wanted: str) -> bool:
        try:
            return test(float(actual), float(wanted))
        except ValueError:
            return False

    return compare


def _date_cmp(test: Callable[[datetime, datetime], bool]) -> Callable[[str, str], bool]:
    def compare(actual: str, wanted: str) -> bool:
        try:
            return test(_date(actual), _date(wanted))
        except ValueError:
            return False

    return compare


def _in_network(actual: str, wanted: str) -> bool:
    try:
        return ipaddress.ip_address(actual) in ipaddress.ip_network(wanted, strict=False)
    except ValueError:
        return False


# operator -> (does one context value match one policy value, is the operator negated)
_MATCHERS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda a, w: a == w, False),
    "StringNotEquals": (lambda a, w: a == w, True),
    "StringEqualsIgnoreCase": (lambda a, w: a.lower() == w.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda a, w: a.lower() == w.lower(), True),
    "StringLike": (lambda a, w: wildcard_match(w, a), False),
    "StringNotLike": (lambda a, w: wildcard_match(w, a), True),
    "NumericEquals": (_number_cmp(lambda a, w: a == w), False),
    "NumericNotEquals": (_number_cmp(lambda a, w: a == w), True),
    "NumericLessThan": (_number_cmp(lambda a, w: a < w), False),
    "NumericLessThanEquals": (_number_cmp(lambda a, w: a <= w), False),
    "NumericGreaterThan": (_number_cmp(lambda a, w: a > w), False),
    "NumericGreaterThanEquals": (_number_cmp(lambda a, w: a >= w), False),
    "DateEquals": (_date_cmp(lambda a, w: a == w), False),
    "DateNotEquals": (_date_cmp(lambda a, w: a == w), True),
    "DateLessThan": (_date_cmp(lambda a, w: a < w), False),
    "DateLessThanEquals": (_date_cmp(lambda a, w: a <= w), False),
    "DateGreaterThan": (_date_cmp(lambda a, w: a > w), False),
    "DateGreaterThanEquals": (_date_cmp(lambda a, w: a >= w), False),
    "Bool": (lambda a, w: a.lower() == w.lower(), False),
    "IpAddress": (_in_network, False),
    "NotIpAddress": (_in_network, True),
    "ArnEquals": (lambda a, w: _arn_like(w, a), False),
    "ArnNotEquals": (lambda a, w: _arn_like(w, a), True),
    "ArnLike": (lambda a, w: _arn_like(w, a), False),
    "ArnNotLike": (lambda a, w: _arn_like(w, a), True),
}


#: operator names by lower case (operators are matched case-insensitively)
_OPERATORS = {name.lower(): name for name in [*_MATCHERS, "Null"]}


def _lower_keys(context: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    return {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in context.items()}


def _condition_holds(c: Condition, context: Mapping[str, list[str]]) -> bool:
    actual = context.get(c.key)
    if c.operator == "Null":
        # Null: true asks for the key to be absent, false for it to be present.
        return (not actual) == (c.values[0].lower() == "true")
    if not actual:
        if c.if_exists:
            return True
        if c.set_op == "all":
            return True  # ForAllValues over no values is vacuously true
        if c.set_op == "any":
            return False
        # Without the key a negated operator holds (nothing it excludes is there).
        return _MATCHERS[c.operator][1]
    match, negated = _MATCHERS[c.operator]

    def one(value: str) -> bool:
        hit = any(match(value, wanted) for wanted in c.values)
        return not hit if negated else hit

    if c.set_op == "all":
        return all(one(v) for v in actual)
    if c.set_op == "any" or not negated:
        return any(one(v) for v in actual)
    return all(one(v) for v in actual)


def _principal_matches(names: Mapping[str, tuple[str, ...]], caller: Caller) -> bool:
    if "*" in names:
        return True
    if caller.service is not None:
        return any(s == caller.service for s in names.get("Service", ()))
    for name in names.get("AWS", ()):
        if name == "*":
            return True
        if caller.account is not None and name in (
            caller.account,
            f"arn:aws:iam::{caller.account}:root",
        ):
            return True
        if name in (caller.arn, caller.role_arn):
            return True
    return False


def _applies(
    s: Statement, action: str, resource: str, context: Mapping[str, list[str]], caller: Caller
) -> bool:
    if s.actions is not None:
        if not any(wildcard_match(a, action, ignore_case=True) for a in s.actions):
            return False
    elif s.not_actions is not None and any(
        wildcard_match(a, action, ignore_case=True) for a in s.not_actions
    ):
        return False
    if s.resources is not None:
        if not any(wildcard_match(r, resource) for r in s.resources):
            return False
    elif s.not_resources is not None and any(wildcard_match(r, resource) for r in s.not_resources):
        return False
    if s.principals is not None and not _principal_matches(s.principals, caller):
        return False
    if s.not_principals is not None and _principal_matches(s.not_principals, caller):
        return False
    return all(_condition_holds(c, context) for c in s.conditions)


def evaluate(policies: Iterable[Policy], request: AccessRequest, caller: Caller) -> Decision:
    """The decision of these policies alone: an applicable Deny wins, then an Allow."""
    context = _lower_keys(request.context)
    allowed = False
    for policy in policies:
        for s in policy.statements:
            if _applies(s, request.action, request.resource, context, caller):
                if not s.allow:
                    return Decision.EXPLICIT_DENY
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, resource_policy: bool) -> Policy:
    return parse(text, resource_policy=resource_policy)


# Identity policies arrive as mappings with every request's principal, usually the same
# objects (the key store keeps them): parsed once per object, found by id. The entry holds the
# document, so its id cannot be reused while cached; the cache is emptied when full.
_BY_ID: dict[tuple[int, bool], tuple[PolicyDocument, Policy]] = {}
_BY_ID_MAX = 4096


def _as_policy(document: Policy | PolicyDocument, resource_policy: bool) -> Policy:
    if isinstance(document, Policy):
        return document
    key = (id(document), resource_policy)
    found = _BY_ID.get(key)
    if found is not None and found[0] is document:
        return found[1]
    policy = _parse_cached(json.dumps(document, sort_keys=True), resource_policy)
    if len(_BY_ID) >= _BY_ID_MAX:
        _BY_ID.clear()
    _BY_ID[key] = (document, policy)
    return policy


def authorize(
    principal: Principal | None,
    request: AccessRequest,
    resource_policy: Policy | PolicyDocument | None = None,
    *,
    caller: Caller | None = None,
) -> Decision:
    """IAM's decision for `principal` doing `request` (same-account rules).

    No principal (authentication off) and the admin principal are allowed. Otherwise an
    explicit Deny in the identity policies or the resource policy wins; then an Allow in
    either (the resource policy's only for statements whose Principal names the caller);
    else implicit deny. `caller` replaces the principal for Principal matching (a service)."""
    if principal is None and caller is None:
        return Decision.ALLOW
    if principal is not None and principal.admin:
        return Decision.ALLOW
    who = caller or (Caller.of(principal) if principal is not None else Caller())
    policies: list[Policy] = []
    if principal is not None:
        policies += [_as_policy(p, False) for p in principal.policies]
    if resource_policy is not None:
        policies.append(_as_policy(resource_policy, True))
    return evaluate(policies, request, who)


def identity_decision(principal: Principal, request: AccessRequest) -> Decision:
    """The identity policies' decision alone (for the denial message's wording)."""
    return evaluate(
        [_as_policy(p, False) for p in principal.policies], request, Caller.of(principal)
    )


def policy_json(statements: Sequence[Mapping[str, Any]], policy_id: str = "default") -> str:
    """A resource policy's text as Lambda writes it."""
    return json.dumps(
        {"Version": "2012-10-17", "Id": policy_id, "Statement": list(statements)},
        separators=(",", ":"),
    )
