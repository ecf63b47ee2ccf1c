"""The rules service without a server: validation, bus names, targets, InputPath, what each
target receives, and that rules come back from the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lamina.control.rules import (
    LimitExceededError,
    RuleService,
    TargetInput,
    select_path,
    valid_path,
)
from lamina.errors import ResourceNotFoundError, ValidationError
from lamina.event_patterns import MAX_DEPTH, InvalidEventPatternError
from lamina.models import Rule, RuleState
from lamina.schedule_expr import ScheduleExpressionError
from lamina.settings import Settings
from lamina.store.rules import RuleStore

FN = "arn:aws:lambda:us-east-1:000000000000:function:"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def run(tmp_path: Path, test: Callable[[RuleService, Clock], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = Clock()
        settings = Settings(data_dir=tmp_path)
        service = RuleService(settings, RuleStore.sqlite(tmp_path / "lamina.db"), clock=clock)
        await service.load()
        try:
            await test(service, clock)
        finally:
            service.close()

    asyncio.run(main())


def test_put_rule_validation(tmp_path: Path) -> None:
    async def test(rules: RuleService, _: Clock) -> None:
        with pytest.raises(ValidationError, match="EventPattern or ScheduleExpression"):
            await rules.put_rule("r")
        with pytest.raises(ValidationError, match="regular expression"):
            await rules.put_rule("bad name", event_pattern='{"a": ["b"]}')
        with pytest.raises(ValidationError, match="between 1 and 64"):
            await rules.put_rule("x" * 65, event_pattern='{"a": ["b"]}')
        with pytest.raises(InvalidEventPatternError):
            await rules.put_rule("r", event_pattern='{"a": "b"}')
        with pytest.raises(ScheduleExpressionError):
            await rules.put_rule("r", schedule_expression="rate(2 minute)")
        with pytest.raises(ValidationError, match="ENABLED, DISABLED"):
            await rules.put_rule("r", event_pattern='{"a": ["b"]}', state="ON")
        with pytest.raises(ResourceNotFoundError, match="Event bus other does not exist"):
            await rules.put_rule("r", event_pattern='{"a": ["b"]}', bus="other")
        assert rules.list_rules(None, None, None, None) == ([], None)

    run(tmp_path, test)


def test_bus_names_and_arns(tmp_path: Path) -> None:
    async def test(rules: RuleService, _: Clock) -> None:
        assert rules.bus(None) == "default"
        assert rules.bus("arn:aws:events:us-east-1:000000000000:event-bus/default") == "default"
        with pytest.raises(ResourceNotFoundError):
            rules.bus("arn:aws:events:eu-west-1:000000000000:event-bus/default")
        assert rules.arn("r") == "arn:aws:events:us-east-1:000000000000:rule/r"

    run(tmp_path, test)


def test_rules_and_targets_survive_a_reload(tmp_path: Path) -> None:
    async def test(rules: RuleService, clock: Clock) -> None:
        await rules.put_rule("r", event_pattern='{"source": ["a"]}', description="d")
        await rules.put_targets(
            "r", None, [TargetInput(id="b", arn=FN + "b"), TargetInput(id="a", arn=FN + "a:live")]
        )
        await rules.set_state("r", None, RuleState.DISABLED)

    run(tmp_path, test)

    async def reloaded(rules: RuleService, _: Clock) -> None:
        rule = rules.get("r")
        assert rule.state is RuleState.DISABLED
        assert rule.description == "d"
        assert [t.id for t in rule.targets] == ["b", "a"]
        assert rules.matching({"source": "a"}) == []  # disabled
        await rules.set_state("r", None, RuleState.ENABLED)
        assert [r.name for r in rules.matching({"source": "a"})] == ["r"]
        assert rules.matching({"source": "b"}) == []

    run(tmp_path, reloaded)


def test_anchor_moves_with_a_new_schedule_or_enabling_only(tmp_path: Path) -> None:
    async def test(rules: RuleService, clock: Clock) -> None:
        created = clock.now
        await rules.put_rule("s", schedule_expression="rate(5 minutes)")
        clock.now += timedelta(minutes=1)
        await rules.put_rule("s", schedule_expression="rate(5 minutes)", description="same")
        assert rules.get("s").anchor == created
        await rules.put_rule("s", schedule_expression="rate(10 minutes)")
        assert rules.get("s").anchor == clock.now
        clock.now += timedelta(minutes=1)
        await rules.set_state("s", None, RuleState.DISABLED)
        assert rules.get("s").anchor == clock.now - timedelta(minutes=1)
        clock.now += timedelta(minutes=1)
        await rules.set_state("s", None, RuleState.ENABLED)
        assert rules.get("s").anchor == clock.now
        assert rules.get("s").created_at == created

    run(tmp_path, test)


def test_targets_limits_and_failures(tmp_path: Path) -> None:
    async def test(rules: RuleService, _: Clock) -> None:
        with pytest.raises(ResourceNotFoundError, match="Rule r does not exist on EventBus"):
            await rules.put_targets("r", None, [TargetInput(id="a", arn=FN + "a")])
        await rules.put_rule("r", event_pattern='{"a": ["b"]}')
        failed = await rules.put_targets(
            "r",
            None,
            [
                TargetInput(id="sqs", arn="arn:aws:sqs:us-east-1:000000000000:q"),
                TargetInput(id="tx", arn=FN + "f", unsupported=["InputTransformer"]),
            ],
        )
        assert [(f.target_id, f.error_code) for f in failed] == [
            ("sqs", "ValidationException"),
            ("tx", "ValidationException"),
        ]
        assert "InputTransformer" in failed[1].error_message
        targets = [TargetInput(id=f"t{i}", arn=FN + f"f{i}") for i in range(5)]
        assert await rules.put_targets("r", None, targets) == []
        with pytest.raises(LimitExceededError):
            await rules.put_targets("r", None, [TargetInput(id="t5", arn=FN + "f5")])
        with pytest.raises(ValidationError, match="has targets"):
            await rules.delete_rule("r", None)
        await rules.remove_targets("r", None, [f"t{i}" for i in range(5)])
        await rules.delete_rule("r", None)
        await rules.delete_rule("r", None)  # gone: nothing to do
        with pytest.raises(ResourceNotFoundError):
            rules.get("r")

    run(tmp_path, test)


def test_what_targets_receive(tmp_path: Path) -> None:
    async def test(rules: RuleService, _: Clock) -> None:
        await rules.put_rule("r", event_pattern='{"source": ["a"]}')
        await rules.put_targets(
            "r",
            None,
            [
                TargetInput(id="whole", arn=FN + "w"),
                TargetInput(id="const", arn=FN + "c:3", input='"hello"'),
                TargetInput(id="path", arn=FN + "p:live", input_path="$.detail.items[1]"),
            ],
        )
        event: dict[str, Any] = {"source": "a", "detail": {"items": [{"n": 0}, {"n": 1}]}}
        (rule,) = rules.matching(event)
        got = {d.target.id: d for d in rules.deliveries(rule, event)}
        assert json.loads(got["whole"].payload) == event
        assert (got["whole"].function_name, got["whole"].qualifier) == ("w", None)
        assert got["const"].payload == b'"hello"'
        assert got["const"].qualifier == "3"
        assert json.loads(got["path"].payload) == {"n": 1}
        assert (got["path"].function_name, got["path"].qualifier) == ("p", "live")

    run(tmp_path, test)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", {"a": {"b": [1, {"c": "x"}]}, "k-1": 2}),
        ("$.a.b[0]", 1),
        ("$.a.b[1].c", "x"),
        ("$['a']['b'][1]['c']", "x"),
        ("$.k-1", 2),
        ("$.missing.deeper", None),
        ("$.a.b[9]", None),
    ],
)
def test_input_path_selects(path: str, expected: Any) -> None:
    event = {"a": {"b": [1, {"c": "x"}]}, "k-1": 2}
    assert valid_path(path)
    assert select_path(path, event) == expected


@pytest.mark.parametrize("path", ["", "detail", "$.", "$..a", "$.a[", "$.a[x]", "$ .a", 5])
def test_invalid_input_paths(path: Any) -> None:
    assert not valid_path(path)


def test_a_stored_pattern_no_longer_valid_does_not_stop_loading(tmp_path: Path) -> None:
    """A pattern an older version stored, deeper than patterns.MAX_DEPTH now allows, leaves
    its rule matching nothing; the other rules load and match."""
    deep = '{"a":' * MAX_DEPTH + '["x"]' + "}" * MAX_DEPTH
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = RuleStore.sqlite(tmp_path / "lamina.db")
    for name, pattern in (("old", deep), ("fine", '{"source": ["s"]}')):
        store.put(Rule(name, "default", RuleState.ENABLED, now, now, event_pattern=pattern))
    store.close()

    async def test(rules: RuleService, _: Clock) -> None:
        assert sorted(r.name for r in rules.list_rules(None, None, None, None)[0]) == [
            "fine",
            "old",
        ]
        event = {"source": "s", "detail-type": "d", "detail": {}}
        assert [r.name for r in rules.matching(event)] == ["fine"]

    run(tmp_path, test)
