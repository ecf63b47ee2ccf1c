"""AWS::Events::Rule through Lamina's EventBridge API (PutRule, PutTargets, RemoveTargets,
DeleteRule): schedule rules and event-pattern rules alike."""

from __future__ import annotations

import json
from typing import Any

from lamina.stacks import Physical
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
