"""The EventBridge API (AWSEvents) for rules, targets and events, on the server's own port.

AWS's JSON 1.1 protocol, as the Logs API's: `POST /`, the operation in `X-Amz-Target:
AWSEvents.<Operation>`, JSON in and out, and errors as HTTP 400 with `{"__type", "message"}`.
Handlers only translate: wire names (Name, EventPattern, Targets...) stop here, and every
check lives in `control/rules.py` and `events/bus.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina import untrusted_json
from lamina.api.context import AppState, app_state
from lamina.api.errors import internal_error
from lamina.api.wire import aws_json_error, aws_json_response, null_members
from lamina.control.rules import RuleService, TargetInput
from lamina.errors import LaminaError, UserError, ValidationError
from lamina.events.bus import EntryInput, EventBus
from lamina.models import Rule, RuleState

TARGET_PREFIX = "AWSEvents."
#: PutEvents and PutTargets take 1 to 10 entries (botocore's model)
MAX_ENTRIES = 10
#: PutEvents' total size limit (EventBridge: 256 KB per request)
MAX_REQUEST_BYTES = 256 * 1024
#: Target members Lamina acts on; any other is refused per entry (not silently dropped).
#: RoleArn is not needed to invoke a function, so it is accepted and not kept.
_TARGET_MEMBERS = frozenset({"Id", "Arn", "Input", "InputPath", "RoleArn"})


async def dispatch(request: Request) -> Response:
    """`POST /` with an `AWSEvents.` target: find the operation and answer it."""
    target = request.headers.get("x-amz-target", "")
    handler = _OPERATIONS.get(target.removeprefix(TARGET_PREFIX))
    if not target.startswith(TARGET_PREFIX) or handler is None:
        return aws_json_error("UnknownOperationException", f"No operation {target}", 400)
    state = app_state(request)
    if state.rules is None or state.event_bus is None:
        return aws_json_error("ServiceUnavailableException", "This server has no event bus.", 503)
    try:
        raw = await request.body()
        try:
            body = untrusted_json.loads(raw or b"{}")
        except ValueError as e:
            raise _Serialization(f"The body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise _Serialization("The body must be a JSON object.")
        nulls = null_members(body)
        if nulls:
            raise ValidationError(nulls)
        if len(raw) > MAX_REQUEST_BYTES and target.endswith("PutEvents"):
            raise ValidationError("Total size of the entries in the request is over the limit.")
        if handler is put_events:
            # The caller's trace header: a function's PutEvents continues its chain.
            trace = request.headers.get("x-amzn-trace-id", "")
            return aws_json_response(await put_events(body, state, trace))
        return aws_json_response(await handler(body, state))
    except _Serialization as e:
        return aws_json_error("SerializationException", e.message, 400)
    except LaminaError as e:
        # The JSON protocol answers every caller error with 400; botocore reads `__type`.
        return aws_json_error(e.error_type, e.message, 400 if isinstance(e, UserError) else 500)
    except Exception as e:  # the JSON protocol's shape even for our own failures
        return aws_json_error("InternalException", internal_error(e, target).message, 500)


class _Serialization(LaminaError):
    pass


def _rules(state: AppState) -> RuleService:
    assert state.rules is not None
    return state.rules


def _bus(state: AppState) -> EventBus:
    assert state.event_bus is not None
    return state.event_bus


def _entries(body: dict[str, Any], member: str) -> list[dict[str, Any]]:
    value = body.get(member)
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_ENTRIES
        or not all(isinstance(v, dict) for v in value)
    ):
        raise ValidationError(
            f"1 validation error detected: Value at '{member[0].lower() + member[1:]}' failed "
            f"to satisfy constraint: Member must have length between 1 and {MAX_ENTRIES}"
        )
    return value


def _rule(rules: RuleService, rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": rule.name,
        "Arn": rules.arn(rule.name),
        "State": rule.state.value,
        "EventBusName": rule.bus,
    }
    if rule.event_pattern is not None:
        out["EventPattern"] = rule.event_pattern
    if rule.schedule_expression is not None:
        out["ScheduleExpression"] = rule.schedule_expression
    if rule.description:
        out["Description"] = rule.description
    if rule.role_arn:
        out["RoleArn"] = rule.role_arn
    return out


# -- operations --------------------------------------------------------------------------


async def put_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    rules = _rules(state)
    rule = await rules.put_rule(
        body.get("Name"),
        bus=body.get("EventBusName"),
        event_pattern=body.get("EventPattern"),
        schedule_expression=body.get("ScheduleExpression"),
        state=body.get("State"),
        description=body.get("Description"),
        role_arn=body.get("RoleArn"),
    )
    return {"RuleArn": rules.arn(rule.name)}


async def describe_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    rules = _rules(state)
    rule = rules.get(body.get("Name"), body.get("EventBusName"))
    return {**_rule(rules, rule), "CreatedBy": state.settings.account_id}


async def list_rules(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    rules = _rules(state)
    page, token = rules.list_rules(
        body.get("NamePrefix"), body.get("EventBusName"), body.get("NextToken"), body.get("Limit")
    )
    out: dict[str, Any] = {"Rules": [_rule(rules, r) for r in page]}
    if token:
        out["NextToken"] = token
    return out


async def delete_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    await _rules(state).delete_rule(body.get("Name"), body.get("EventBusName"))
    return {}


async def enable_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    await _rules(state).set_state(body.get("Name"), body.get("EventBusName"), RuleState.ENABLED)
    return {}


async def disable_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    await _rules(state).set_state(body.get("Name"), body.get("EventBusName"), RuleState.DISABLED)
    return {}


async def put_targets(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    entries = [
        TargetInput(
            id=t.get("Id"),
            arn=t.get("Arn"),
            input=t.get("Input"),
            input_path=t.get("InputPath"),
            unsupported=sorted(set(t) - _TARGET_MEMBERS),
        )
        for t in _entries(body, "Targets")
    ]
    failed = await _rules(state).put_targets(body.get("Rule"), body.get("EventBusName"), entries)
    return {
        "FailedEntryCount": len(failed),
        "FailedEntries": [
            {"TargetId": f.target_id, "ErrorCode": f.error_code, "ErrorMessage": f.error_message}
            for f in failed
        ],
    }


async def remove_targets(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    ids = body.get("Ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise ValidationError(
            "1 validation error detected: Value at 'ids' failed to satisfy constraint: "
            "Member must have length between 1 and 100"
        )
    await _rules(state).remove_targets(body.get("Rule"), body.get("EventBusName"), ids)
    return {"FailedEntryCount": 0, "FailedEntries": []}


async def list_rule_names_by_target(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    names, token = _rules(state).rules_targeting(
        body.get("TargetArn"), body.get("EventBusName"), body.get("NextToken"), body.get("Limit")
    )
    out: dict[str, Any] = {"RuleNames": names}
    if token:
        out["NextToken"] = token
    return out


async def list_targets_by_rule(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    page, token = _rules(state).list_targets(
        body.get("Rule"), body.get("EventBusName"), body.get("NextToken"), body.get("Limit")
    )
    targets = []
    for t in page:
        target: dict[str, Any] = {"Id": t.id, "Arn": t.arn}
        if t.input is not None:
            target["Input"] = t.input
        if t.input_path is not None:
            target["InputPath"] = t.input_path
        targets.append(target)
    out: dict[str, Any] = {"Targets": targets}
    if token:
        out["NextToken"] = token
    return out


async def put_events(body: dict[str, Any], state: AppState, trace: str = "") -> dict[str, Any]:
    entries = [
        EntryInput(
            source=e.get("Source"),
            detail_type=e.get("DetailType"),
            detail=e.get("Detail"),
            resources=e.get("Resources"),
            time=e.get("Time"),
            bus=e.get("EventBusName"),
        )
        for e in _entries(body, "Entries")
    ]
    results = await _bus(state).put_events(entries, trace)
    return {
        "FailedEntryCount": sum(1 for r in results if r.error_code),
        "Entries": [
            {"ErrorCode": r.error_code, "ErrorMessage": r.error_message}
            if r.error_code
            else {"EventId": r.event_id}
            for r in results
        ],
    }


async def test_event_pattern(body: dict[str, Any], state: AppState) -> dict[str, Any]:
    return {"Result": _rules(state).test_pattern(body.get("EventPattern"), body.get("Event"))}


_OPERATIONS: dict[str, Callable[[dict[str, Any], AppState], Awaitable[dict[str, Any]]]] = {
    "PutRule": put_rule,
    "DescribeRule": describe_rule,
    "ListRules": list_rules,
    "DeleteRule": delete_rule,
    "EnableRule": enable_rule,
    "DisableRule": disable_rule,
    "PutTargets": put_targets,
    "RemoveTargets": remove_targets,
    "ListTargetsByRule": list_targets_by_rule,
    "ListRuleNamesByTarget": list_rule_names_by_target,
    "PutEvents": put_events,
    "TestEventPattern": test_event_pattern,
}
