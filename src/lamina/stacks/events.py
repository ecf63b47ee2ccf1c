"""AWS::Events::Rule through Lamina's EventBridge API (PutRule, PutTargets, RemoveTargets,
DeleteRule): schedule rules and event-pattern rules alike."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from lamina.stacks import Physical
from lamina.stacks.client import FN
from lamina.stacks.kinds import Context, Record, Replace

_RULE_KEYS = ("ScheduleExpression", "State", "Description", "RoleArn", "EventBusName")
_TARGET_KEYS = (
    "Id",
    "Arn",
    "Input",
    "InputPath",
    "InputTransformer",
    "RetryPolicy",
    "DeadLetterConfig",
    "RoleArn",
)


class Rule:
    def _name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        return str(props.get("Name") or ctx.name_for(logical_id, 64))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name = self._name(ctx, logical_id, props)
        try:
            return self._put(ctx, name, props, [])
        except Exception:
            self._remove(ctx, name, props)
            raise

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        name = self._name(ctx, logical_id, props)
        if name != old["physical_ref"] or props.get("EventBusName") != old["properties"].get(
            "EventBusName"
        ):
            raise Replace()
        return self._put(ctx, name, props, old["properties"].get("Targets") or [])

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        self._remove(ctx, record["physical_ref"], record["properties"])

    def _put(
        self, ctx: Context, name: str, props: dict[str, Any], old_targets: list[Any]
    ) -> Physical:
        body: dict[str, Any] = {k: props[k] for k in _RULE_KEYS if k in props}
        body["Name"] = name
        pattern = props.get("EventPattern")
        if pattern is not None:
            body["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        out = ctx.client.events("PutRule", body)
        targets = [
            {k: t[k] for k in _TARGET_KEYS if k in t}
            for t in props.get("Targets") or []
            if isinstance(t, dict)
        ]
        for t in targets:
            if "Input" in t and not isinstance(t["Input"], str):
                t["Input"] = json.dumps(t["Input"])
        gone = {t.get("Id") for t in old_targets if isinstance(t, dict)} - {
            t.get("Id") for t in targets
        }
        if gone:
            ctx.client.events("RemoveTargets", {"Rule": name, "Ids": sorted(map(str, gone))})
        if targets:
            answer = ctx.client.events("PutTargets", {"Rule": name, "Targets": targets})
            failed = (answer or {}).get("FailedEntries") or []
            if failed:
                from lamina.stacks.kinds import ResourceFailed

                raise ResourceFailed(
                    "; ".join(
                        f"target {f.get('TargetId')}: {f.get('ErrorMessage')}" for f in failed
                    )
                )
        return Physical(ref=name, attributes={"Arn": out["RuleArn"]})

    def _remove(self, ctx: Context, name: str, props: dict[str, Any]) -> None:
        from lamina.stacks.client import ApiError

        try:
            listed = ctx.client.events("ListTargetsByRule", {"Rule": name})
        except ApiError as e:
            if "ResourceNotFound" in e.kind:
                return
            raise
        ids = [t["Id"] for t in (listed or {}).get("Targets", [])]
        if ids:
            ctx.client.events("RemoveTargets", {"Rule": name, "Ids": ids})
        ctx.client.events("DeleteRule", {"Name": name})


class Schedule:
    """AWS::Scheduler::Schedule (SAM's `ScheduleV2` events) as a scheduled EventBridge rule of
    the same name: Lamina has no EventBridge Scheduler API, and a recurring schedule with one
    target is what a rule is. One-time `at(...)` schedules and time zones other than UTC have no
    rule equivalent: they fail the resource, naming why, rather than fire at another time.

    A schedule invokes its function through its execution role (`Target.RoleArn`), with no
    statement in the function's policy; a rule needs one for `events.amazonaws.com`. So the
    rule standing in for the schedule gets that statement (id `lamina-schedule-<rule>`), made
    and removed with it."""

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        rule = Rule().create(ctx, logical_id, self._as_rule(ctx, logical_id, props))
        self._grant(ctx, rule, props)
        return self._physical(ctx, props, rule)

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        rule_old: Record = {**old, "properties": self._as_rule(ctx, logical_id, old["properties"])}
        rule = Rule().update(ctx, logical_id, self._as_rule(ctx, logical_id, props), rule_old)
        self._revoke(ctx, rule.ref, old["properties"])
        self._grant(ctx, rule, props)
        return self._physical(ctx, props, rule)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        self._revoke(ctx, record["physical_ref"], record["properties"])
        Rule().delete(ctx, logical_id, record)

    @staticmethod
    def _function(props: dict[str, Any]) -> tuple[str, str | None] | None:
        from lamina.stacks.kinds import function_and_qualifier

        target = props.get("Target")
        arn = str(target.get("Arn") or "") if isinstance(target, dict) else ""
        if ":lambda:" not in arn or ":function:" not in arn:
            return None
        return function_and_qualifier(arn)

    def _grant(self, ctx: Context, rule: Physical, props: dict[str, Any]) -> None:
        function = self._function(props)
        if function is None:
            return
        name, qualifier = function
        body = {
            "StatementId": f"lamina-schedule-{rule.ref}",
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "SourceArn": rule.attributes["Arn"],
        }
        params = {"Qualifier": qualifier} if qualifier else None
        ctx.client.call("POST", f"{FN}/{name}/policy", body, params=params)

    def _revoke(self, ctx: Context, rule_name: str, props: dict[str, Any]) -> None:
        function = self._function(props)
        if function is None:
            return
        name, qualifier = function
        params = {"Qualifier": qualifier} if qualifier else None
        sid = quote(f"lamina-schedule-{rule_name}", safe="")
        ctx.client.call("DELETE", f"{FN}/{name}/policy/{sid}", params=params, ok_missing=True)

    @staticmethod
    def _physical(ctx: Context, props: dict[str, Any], rule: Physical) -> Physical:
        group = str(props.get("GroupName") or "default")
        arn = f"arn:aws:scheduler:{ctx.region}:{ctx.account}:schedule/{group}/{rule.ref}"
        return Physical(ref=rule.ref, attributes={"Arn": arn})

    @staticmethod
    def _as_rule(ctx: Context, logical_id: str, props: dict[str, Any]) -> dict[str, Any]:
        from lamina.stacks.kinds import ResourceFailed

        expression = str(props.get("ScheduleExpression") or "")
        if expression.startswith("at("):
            raise ResourceFailed(
                f"one-time schedule {expression}: Lamina runs schedules as EventBridge rules, "
                "which take rate(...) and cron(...) only"
            )
        zone = props.get("ScheduleExpressionTimezone")
        if zone not in (None, "", "UTC", "Etc/UTC"):
            raise ResourceFailed(
                f"ScheduleExpressionTimezone {zone}: Lamina's schedules run in UTC only"
            )
        target = props.get("Target")
        target = target if isinstance(target, dict) else {}
        rule_target: dict[str, Any] = {"Id": "scheduler", "Arn": target.get("Arn")}
        # a templated Lambda target gets its Input as the event; without one, an empty object
        given = target.get("Input")
        rule_target["Input"] = given if given is not None else "{}"
        for key in ("RetryPolicy", "DeadLetterConfig"):
            if isinstance(target.get(key), dict):
                rule_target[key] = target[key]
        rule: dict[str, Any] = {
            "Name": props.get("Name") or ctx.name_for(logical_id, 64),
            "ScheduleExpression": expression,
            "State": props.get("State") or "ENABLED",
            "Targets": [rule_target],
        }
        if props.get("Description"):
            rule["Description"] = props["Description"]
        return rule
