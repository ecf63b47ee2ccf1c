"""EventBridge rules and targets: validation, state, and which rules an event or a clock tick
concerns.

Rules live on the `default` event bus (Lamina has no other buses yet: another name is
ResourceNotFoundException, as an unknown bus is on EventBridge). Every rule is kept in memory,
with its pattern and schedule compiled, so matching an event (PutEvents) and planning ticks
never touch the database; writes go to the store first, then to memory, one at a time.

Targets are Lambda functions of this server's region and account only, for now: other ARNs
are refused per entry in PutTargets' FailedEntries, so a caller sees which and why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from lamina import event_patterns as patterns
from lamina import untrusted_json
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes, listing
from lamina.control.changes import CONCURRENT_CHANGE
from lamina.errors import ResourceConflictError, ResourceNotFoundError, UserError, ValidationError
from lamina.models import Rule, RuleState, RuleTarget
from lamina.schedule_expr import Schedule
from lamina.schedule_expr import parse as parse_schedule
from lamina.settings import Settings
from lamina.store.rules import RuleStore

T = TypeVar("T")

DEFAULT_BUS = "default"
#: EventBridge's quota of targets per rule
MAX_TARGETS = 5
#: Limit's maximum in ListRules and ListTargetsByRule (botocore's LimitMax100)
LIST_LIMIT = 100

log = logging.getLogger(__name__)

_NAME = re.compile(r"[\.\-_A-Za-z0-9]+")
_NAME_PATTERN = r"[\.\-_A-Za-z0-9]+"
_BUS_ARN = re.compile(r"arn:aws[\w-]*:events:(?P<region>[^:]*):(?P<account>\d*):event-bus/(.+)")
_LAMBDA_ARN = re.compile(
    r"arn:aws[\w-]*:lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
# `$`, then `.name`, `['name']` or `[index]` steps: the JSONPath InputPath takes in practice.
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_\-$@]+)|\['([^']+)'\]|\[(\d+)\]")
_DESCRIPTION_MAX = 512
_INPUT_MAX = 8192


class LimitExceededError(UserError):
    error_type = "LimitExceededException"


@dataclass
class TargetInput:
    """One PutTargets entry as the caller sent it (values not yet checked); `unsupported`
    names members Lamina does not act on yet (InputTransformer, RetryPolicy, ...)."""

    id: Any = None
    arn: Any = None
    input: Any = None
    input_path: Any = None
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FailedEntry:
    """A PutTargets/RemoveTargets entry that was not applied, and why."""

    target_id: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class Delivery:
    """What one target of one rule receives for an event."""

    rule: Rule
    target: RuleTarget
    function_name: str
    qualifier: str | None
    payload: bytes


def _now() -> datetime:
    return datetime.now(UTC)


class RuleService:
    """Rules of the default bus, their targets, and their last fired ticks."""

    def __init__(
        self, settings: Settings, store: RuleStore, clock: Callable[[], datetime] = _now
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-rules")
        self._rules: dict[str, Rule] = {}
        self._patterns: dict[str, patterns.Pattern] = {}
        self._schedules: dict[str, Schedule] = {}
        # Writers read, change and store a rule: one at a time keeps one from undoing another.
        self._writing = asyncio.Lock()
        #: called after every change (the schedule runner replans)
        self.on_change: Callable[[], None] = lambda: None
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, partial(fn, *args)
            )
        except IntegrityError as e:
            # Another node wrote the same rule first; rolled back whole.
            raise ResourceConflictError(CONCURRENT_CHANGE) from e

    async def load(self) -> None:
        for rule in await self._run(self._store.all):
            self._remember(rule)

    async def refresh(self, key: str) -> None:
        """Another node changed the rule `key` ("bus/rule"; "*": any rule): re-read it, and
        replan if it is not what was held."""
        async with self._writing:
            fresh = {r.name: r for r in await self._run(self._store.all)}
            names = fresh.keys() | self._rules.keys() if key == "*" else {key.split("/")[-1]}
            changed = False
            for name in names:
                held, rule = self._rules.get(name), fresh.get(name)
                if held == rule:
                    continue
                changed = True
                if rule is None:
                    self._forget(name)
                else:
                    self._remember(rule)
        if changed:
            self.on_change()

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self._store.close()

    # -- names ---------------------------------------------------------------------

    def arn(self, name: str) -> str:
        s = self._settings
        return f"arn:aws:events:{s.region}:{s.account_id}:rule/{name}"

    def bus(self, value: Any) -> str:
        """The bus an EventBusName names (a name or an ARN; absent is `default`)."""
        if value is None or value == DEFAULT_BUS:
            return DEFAULT_BUS
        if isinstance(value, str) and (m := _BUS_ARN.fullmatch(value)):
            s = self._settings
            if m[3] == DEFAULT_BUS and m["region"] == s.region and m["account"] == s.account_id:
                return DEFAULT_BUS
        raise ResourceNotFoundError(f"Event bus {value} does not exist.")

    # -- reads ---------------------------------------------------------------------

    def get(self, name: Any, bus: Any = None) -> Rule:
        bus_name = self.bus(bus)
        rule = self._rules.get(name) if isinstance(name, str) else None
        if rule is None:
            raise ResourceNotFoundError(f"Rule {name} does not exist on EventBus {bus_name}.")
        return rule

    def list_rules(
        self, prefix: Any, bus: Any, token: Any, limit: Any
    ) -> tuple[list[Rule], str | None]:
        """A page of rules by name, and the token of the next page if there is one."""
        self.bus(bus)
        names = sorted(n for n in self._rules if not prefix or n.startswith(prefix))
        if token is not None:
            after = listing.decode_marker("ListRules", token, _invalid_token)
            names = [n for n in names if n > after]
        page, more = _page(names, limit)
        next_token = listing.encode_marker("ListRules", page[-1]) if more else None
        return [self._rules[n] for n in page], next_token

    def rules_targeting(
        self, arn: Any, bus: Any, token: Any, limit: Any
    ) -> tuple[list[str], str | None]:
        """A page of the names of the rules with a target of exactly this ARN
        (ListRuleNamesByTarget: a qualified function ARN is another target), and the token
        of the next page if there is one."""
        _check_name_length(arn, "targetArn", 1600)
        self.bus(bus)
        names = sorted(n for n, r in self._rules.items() if any(t.arn == arn for t in r.targets))
        if token is not None:
            after = listing.decode_marker("ListRuleNamesByTarget", token, _invalid_token)
            names = [n for n in names if n > after]
        page, more = _page(names, limit)
        return page, listing.encode_marker("ListRuleNamesByTarget", page[-1]) if more else None

    def list_targets(
        self, name: Any, bus: Any, token: Any, limit: Any
    ) -> tuple[list[RuleTarget], str | None]:
        rule = self.get(name, bus)
        start = 0
        if token is not None:
            after = listing.decode_marker("ListTargetsByRule", token, _invalid_token)
            ids = [t.id for t in rule.targets]
            start = ids.index(after) + 1 if after in ids else len(ids)
        page, more = _page(list(rule.targets[start:]), limit)
        return page, listing.encode_marker("ListTargetsByRule", page[-1].id) if more else None

    def matching(self, event: dict[str, Any]) -> list[Rule]:
        """The enabled rules of the default bus whose pattern `event` matches."""
        return [
            self._rules[name]
            for name, pattern in self._patterns.items()
            if self._rules[name].state is RuleState.ENABLED and patterns.matches(pattern, event)
        ]

    def scheduled(self) -> list[tuple[Rule, Schedule]]:
        """Every rule with a schedule (enabled or not), with its parsed expression."""
        return [(self._rules[name], s) for name, s in sorted(self._schedules.items())]

    @staticmethod
    def test_pattern(pattern: Any, event_json: Any) -> bool:
        """TestEventPattern: whether the event (JSON text) matches the pattern."""
        if not isinstance(pattern, str):
            raise ValidationError("Parameter EventPattern is not valid.")
        compiled = patterns.compile(pattern)
        try:
            event = untrusted_json.loads(event_json) if isinstance(event_json, str) else None
        except ValueError:
            event = None
        required = ("id", "account", "source", "time", "region", "detail-type")
        if not isinstance(event, dict) or any(k not in event for k in required):
            raise ValidationError("Parameter Event is not valid.")
        return patterns.matches(compiled, event)

    # -- writes --------------------------------------------------------------------

    async def put_rule(
        self,
        name: Any,
        *,
        bus: Any = None,
        event_pattern: Any = None,
        schedule_expression: Any = None,
        state: Any = None,
        description: Any = None,
        role_arn: Any = None,
    ) -> Rule:
        """Create or replace a rule (members left out are not kept, as PutRule does)."""
        name = _check_name(name, "name")
        bus_name = self.bus(bus)
        if not event_pattern and not schedule_expression:
            raise ValidationError(
                "Parameter(s) EventPattern or ScheduleExpression must be specified."
            )
        if event_pattern is not None:
            if not isinstance(event_pattern, str):
                raise ValidationError("Parameter EventPattern is not valid.")
            patterns.compile(event_pattern)
        if schedule_expression is not None:
            parse_schedule(schedule_expression)
        rule_state = _state(state)
        if description is not None and (
            not isinstance(description, str) or len(description) > _DESCRIPTION_MAX
        ):
            raise ValidationError(
                f"1 validation error detected: Value at 'description' failed to satisfy "
                f"constraint: Member must have length less than or equal to {_DESCRIPTION_MAX}"
            )
        async with self._writing:
            now = self._clock()
            old = self._rules.get(name)
            # rate() ticks restart from now when the schedule is new or the rule wakes up
            keep_anchor = (
                old is not None
                and old.schedule_expression == schedule_expression
                and (old.state is RuleState.ENABLED or rule_state is RuleState.DISABLED)
            )
            rule = Rule(
                name=name,
                bus=bus_name,
                state=rule_state,
                created_at=old.created_at if old else now,
                anchor=old.anchor if old and keep_anchor else now,
                description=description or "",
                event_pattern=event_pattern,
                schedule_expression=schedule_expression,
                role_arn=role_arn if isinstance(role_arn, str) else None,
                last_tick=old.last_tick if old else None,
                targets=old.targets if old else (),
            )
            await self._run(self._store.put, rule)
            self._remember(rule)
        await self._changed(rule.name)
        return rule

    async def set_state(self, name: Any, bus: Any, state: RuleState) -> None:
        """EnableRule / DisableRule."""
        async with self._writing:
            rule = self.get(name, bus)
            if rule.state is state:
                return
            anchor = self._clock() if state is RuleState.ENABLED else rule.anchor
            rule = replace(rule, state=state, anchor=anchor)
            await self._run(self._store.put, rule)
            self._remember(rule)
        await self._changed(rule.name)

    async def delete_rule(self, name: Any, bus: Any) -> None:
        """DeleteRule: refused while the rule has targets, as EventBridge does (its `Force`
        is for rules managed by AWS services, which Lamina has none of); a rule that does not
        exist is nothing to do."""
        _check_name(name, "name")
        self.bus(bus)
        async with self._writing:
            rule = self._rules.get(name)
            if rule is None:
                return
            if rule.targets:
                raise ValidationError("Rule can't be deleted since it has targets.")
            await self._run(self._store.delete, name)
            self._forget(name)
        await self._changed(name)

    async def put_targets(
        self, name: Any, bus: Any, entries: Sequence[TargetInput]
    ) -> list[FailedEntry]:
        """Add or replace targets by Id; entries that cannot be applied come back failed."""
        async with self._writing:
            rule = self.get(name, bus)
            current = {t.id: t for t in rule.targets}
            failed: list[FailedEntry] = []
            for entry in entries:
                target_id = _check_name(entry.id, "id", max_len=64)
                problem = self._target_problem(entry)
                if problem is not None:
                    failed.append(FailedEntry(target_id, "ValidationException", problem))
                    continue
                if target_id not in current and len(current) >= MAX_TARGETS:
                    raise LimitExceededError(
                        f"The requested resource exceeds the maximum number allowed: a rule "
                        f"has at most {MAX_TARGETS} targets."
                    )
                current[target_id] = RuleTarget(target_id, entry.arn, entry.input, entry.input_path)
            new = tuple(current.values())
            if new != rule.targets:
                await self._run(self._store.set_targets, rule.name, new)
                self._remember(replace(rule, targets=new))
        await self._changed(rule.name)
        return failed

    async def remove_targets(self, name: Any, bus: Any, ids: Sequence[Any]) -> None:
        """RemoveTargets: Ids the rule does not have are nothing to remove."""
        for target_id in ids:
            _check_name(target_id, "ids", max_len=64)
        async with self._writing:
            rule = self.get(name, bus)
            removed = set(ids)
            new = tuple(t for t in rule.targets if t.id not in removed)
            if new != rule.targets:
                await self._run(self._store.set_targets, rule.name, new)
                self._remember(replace(rule, targets=new))
        await self._changed(rule.name)

    async def claim_tick(self, name: str, tick: datetime) -> bool:
        """Record `tick` as fired for the rule, durably, unless it already was: True means
        the caller fires it (see `events/schedules.py` for why this comes first)."""
        claimed = await self._run(self._store.claim_tick, name, tick)
        rule = self._rules.get(name)
        # Claimed or not, the stored last tick is now at least `tick`: planning moves past it.
        if rule is not None and (rule.last_tick is None or rule.last_tick < tick):
            self._rules[name] = replace(rule, last_tick=tick)
        return claimed

    # -- delivery ------------------------------------------------------------------

    def deliveries(self, rule: Rule, event: dict[str, Any]) -> list[Delivery]:
        """What each of the rule's targets receives for `event`."""
        out = []
        for target in rule.targets:
            m = _LAMBDA_ARN.fullmatch(target.arn)
            if m is None:  # refused in PutTargets; a store edited by hand is not trusted
                continue
            if target.input is not None:
                payload = target.input.encode()
            elif target.input_path is not None:
                payload = json.dumps(select_path(target.input_path, event)).encode()
            else:
                payload = json.dumps(event).encode()
            out.append(Delivery(rule, target, m["name"], m["qualifier"], payload))
        return out

    # -- helpers -------------------------------------------------------------------

    def _remember(self, rule: Rule) -> None:
        self._rules[rule.name] = rule
        self._patterns.pop(rule.name, None)
        self._schedules.pop(rule.name, None)
        if rule.event_pattern:
            try:
                self._patterns[rule.name] = patterns.compile(rule.event_pattern)
            except patterns.InvalidEventPatternError as e:
                # Stored by a version with looser limits: the rule matches nothing until it
                # is put again, rather than stopping the server from starting.
                log.warning("rule %s: its pattern is no longer valid: %s", rule.name, e.reason)
        if rule.schedule_expression:
            self._schedules[rule.name] = parse_schedule(rule.schedule_expression)

    async def _changed(self, name: str) -> None:
        """After a committed change of the rule: replan here, and tell the other nodes."""
        self.on_change()
        await changes.tell(self.feed, "rule", f"{DEFAULT_BUS}/{name}")

    def _forget(self, name: str) -> None:
        self._rules.pop(name, None)
        self._patterns.pop(name, None)
        self._schedules.pop(name, None)

    def _target_problem(self, entry: TargetInput) -> str | None:
        """Why Lamina cannot take this target, or None."""
        if not isinstance(entry.arn, str) or not entry.arn:
            return "Parameter Arn is not valid."
        m = _LAMBDA_ARN.fullmatch(entry.arn)
        if m is None:
            return (
                f"Lamina delivers rule targets to Lambda functions only, so far: {entry.arn} "
                "is not a Lambda function ARN."
            )
        s = self._settings
        if m["region"] != s.region or m["account"] != s.account_id:
            return f"{entry.arn} is not a function of this server's region and account."
        if entry.unsupported:
            return f"Lamina does not support {', '.join(entry.unsupported)} in targets yet."
        if entry.input is not None and entry.input_path is not None:
            return "Only one of Input, InputPath, or InputTransformer may be specified."
        if entry.input is not None:
            if not isinstance(entry.input, str) or len(entry.input) > _INPUT_MAX:
                return "Parameter Input is not valid."
            try:
                untrusted_json.loads(entry.input)
            except ValueError:
                return "Parameter Input is not valid JSON."
        if entry.input_path is not None and not valid_path(entry.input_path):
            return f"Parameter InputPath is not valid: {entry.input_path}"
        return None


# -- InputPath ---------------------------------------------------------------------------


def valid_path(path: Any) -> bool:
    """Whether `path` is a JSONPath of the simple form InputPath takes (`$.detail.x`)."""
    if not isinstance(path, str) or not path.startswith("$"):
        return False
    pos = 1
    while pos < len(path):
        m = _PATH_STEP.match(path, pos)
        if m is None:
            return False
        pos = m.end()
    return True


def select_path(path: str, event: Any) -> Any:
    """The part of `event` that `path` picks (None where it leads nowhere)."""
    value = event
    for m in _PATH_STEP.finditer(path, 1):
        key, quoted, index = m.groups()
        if index is not None:
            value = (
                value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
            )
        else:
            value = value.get(key or quoted) if isinstance(value, dict) else None
    return value


# -- small checks ------------------------------------------------------------------------


def _check_name_length(value: Any, where: str, max_len: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy "
            f"constraint: Member must have length between 1 and {max_len}"
        )
    return value


def _check_name(value: Any, where: str, max_len: int = 64) -> str:
    name = _check_name_length(value, where, max_len)
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"1 validation error detected: Value '{name}' at '{where}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {_NAME_PATTERN}"
        )
    return name


def _state(value: Any) -> RuleState:
    if value is None:
        return RuleState.ENABLED
    try:
        return RuleState(value)
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'state' failed to satisfy "
            "constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
        ) from None


def _page(items: list[T], limit: Any) -> tuple[list[T], bool]:
    if limit is None:
        limit = LIST_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT:
        raise ValidationError(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
            f"constraint: Member must have value between 1 and {LIST_LIMIT}"
        )
    return items[:limit], len(items) > limit


def _invalid_token() -> ValidationError:
    return ValidationError("The NextToken is not valid.")
