"""The default event bus: PutEvents entries become EventBridge events, and every enabled rule
whose pattern matches sends them on to its targets through the asynchronous queue (so a
target gets Lambda's retries, maximum age and destinations, as EventBridge's asynchronous
invokes of Lambda do).

Each entry is checked on its own, as PutEvents does: a bad entry fails with EventBridge's
ErrorCode and message while the others go through.

A target is invoked only if its function's resource policy (the version's or alias's, for a
qualified target) allows `lambda:InvokeFunction` to `events.amazonaws.com` for this rule, as on
AWS (see `lamina.auth.triggers`). Otherwise EventBridge's invocation fails: the event is not
delivered, the failure is logged and counted per rule (`failed_invocations`, EventBridge's
FailedInvocations metric), and PutEvents still reports the entry as accepted, as EventBridge
does (the failure is the target's, not the entry's).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lamina import ids, untrusted_json
from lamina.arns import function_arn
from lamina.auth.policy import Policy
from lamina.auth.triggers import events_may_invoke
from lamina.control.rules import DEFAULT_BUS, RuleService
from lamina.errors import LaminaError
from lamina.events.async_queue import AsyncQueue
from lamina.models import Rule
from lamina.observability import Metrics
from lamina.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EntryInput:
    """One PutEvents entry as the caller sent it (values not yet checked)."""

    source: Any = None
    detail_type: Any = None
    detail: Any = None
    resources: Any = None
    time: Any = None
    bus: Any = None


@dataclass(frozen=True)
class EntryResult:
    """An accepted entry's event id, or why the entry failed."""

    event_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


def event_time(t: float) -> str:
    """EventBridge's `time`: UTC to the second."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolicySource(Protocol):
    """Where functions' resource policies are (`control.function_policies.FunctionPolicies`)."""

    def policy_for(self, name: str, qualifier: str | None) -> Policy | None: ...


class EventBus:
    def __init__(
        self,
        settings: Settings,
        rules: RuleService,
        queue: AsyncQueue,
        policies: PolicySource,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._rules = rules
        self._queue = queue
        self._policies = policies
        self._clock = clock
        self._metrics = metrics
        #: targets not invoked because their resource policy did not allow it, by rule name
        self.failed_invocations: Counter[str] = Counter()

    def event(
        self,
        source: str,
        detail_type: str,
        detail: Any,
        resources: Sequence[str] = (),
        at: float | None = None,
    ) -> dict[str, Any]:
        """An event in EventBridge's shape."""
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self._settings.account_id,
            "time": event_time(self._clock() if at is None else at),
            "region": self._settings.region,
            "resources": list(resources),
            "detail": detail,
        }

    async def put_events(self, entries: Sequence[EntryInput], trace: str = "") -> list[EntryResult]:
        """PutEvents. `trace` is the caller's X-Amzn-Trace-Id: the targets' invocations
        continue its chain (recursive loop detection counts a rule's loop back to a
        function that put the event)."""
        results = []
        for entry in entries:
            try:
                event = self._entry_event(entry)
            except _EntryError as e:
                results.append(EntryResult(error_code=e.code, error_message=e.message))
                continue
            try:
                await self.deliver(event, self._rules.matching(event), trace)
            except OSError as e:
                log.error("events: could not queue event %s: %s", event["id"], e)
                results.append(
                    EntryResult(
                        error_code="InternalFailure",
                        error_message="Lamina could not store the event for its targets.",
                    )
                )
                continue
            results.append(EntryResult(event_id=event["id"]))
        return results

    async def deliver(self, event: dict[str, Any], rules: Sequence[Rule], trace: str = "") -> int:
        """Queue `event` for every target of `rules`; the number of targets it went to.
        Raises OSError if the queue could not store one (those before it are queued)."""
        sent = 0
        for rule in rules:
            for d in self._rules.deliveries(rule, event):
                if not self._permitted(rule, d.function_name, d.qualifier):
                    self._failed(rule, "permission")
                    log.warning(
                        "events: rule %s may not invoke %s: the function's resource policy "
                        "does not allow lambda:InvokeFunction to events.amazonaws.com for it "
                        "(aws lambda add-permission --principal events.amazonaws.com "
                        "--source-arn %s)",
                        rule.name,
                        d.target.arn,
                        self._rules.arn(rule.name),
                    )
                    continue
                try:
                    await self._queue.accept(
                        d.function_name, d.qualifier, d.payload, ids.request_id(), trace
                    )
                except LaminaError as e:  # e.g. a payload over the async limit
                    self._failed(rule, "rejected")
                    log.warning(
                        "events: rule %s could not send to %s: %s", rule.name, d.target.arn, e
                    )
                    continue
                sent += 1
        return sent

    def _failed(self, rule: Rule, reason: str) -> None:
        if reason == "permission":
            self.failed_invocations[rule.name] += 1
        if self._metrics is not None:
            self._metrics.events_failed_invocations.labels(rule.name, reason).inc()

    def _permitted(self, rule: Rule, name: str, qualifier: str | None) -> bool:
        """Whether the target's resource policy lets this rule invoke it (no I/O)."""
        settings = self._settings
        return events_may_invoke(
            function_arn(settings.region, settings.account_id, name, qualifier),
            self._rules.arn(rule.name),
            settings.account_id,
            self._policies.policy_for(name, qualifier),
        )

    def _entry_event(self, entry: EntryInput) -> dict[str, Any]:
        try:
            bus = self._rules.bus(entry.bus)
        except LaminaError as e:
            raise _EntryError("InvalidArgument", e.message) from None
        assert bus == DEFAULT_BUS
        for value, member in (
            (entry.source, "Source"),
            (entry.detail_type, "DetailType"),
            (entry.detail, "Detail"),
        ):
            if not isinstance(value, str) or not value:
                raise _EntryError(
                    "InvalidArgument",
                    f"Parameter {member} is not valid. Reason: {member} is a required argument.",
                )
        try:
            detail = untrusted_json.loads(entry.detail)
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            raise _EntryError("MalformedDetail", "Detail is malformed.")
        resources = entry.resources or []
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise _EntryError(
                "InvalidArgument", "Parameter Resources is not valid. Reason: not a list of ARNs."
            )
        return self.event(entry.source, entry.detail_type, detail, resources, _when(entry.time))


class _EntryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _when(value: Any) -> float | None:
    """PutEvents' Time: epoch seconds on the wire (boto3), or ISO 8601 from other clients."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _EntryError(
                "InvalidArgument", "Parameter Time is not valid. Reason: not a timestamp."
            ) from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    raise _EntryError("InvalidArgument", "Parameter Time is not valid. Reason: not a timestamp.")
