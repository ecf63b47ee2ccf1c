"""Scheduled rules: one task fires each enabled rule's ScheduleExpression ticks, sending
EventBridge's "Scheduled Event" to the rule's targets through the asynchronous queue.

Once per tick, across restarts. Before a tick's event is queued, the tick is claimed in the
rules database (`RuleService.claim_tick`: one conditional UPDATE of the rule's last tick). A
tick already claimed is never fired again, so a restart — or a crash — cannot fire a tick
twice. The price is the other side of the window: a crash after the claim and before the
queue has stored the event loses that one tick (at most once per tick; everything after the
claim is a local SQLite write, so the window is a few milliseconds). EventBridge itself is at
least once, but a scheduled job run twice is the worse surprise for a restart to cause;
a graceful stop never lands in the window, as the task finishes a fire it has begun.

In a cluster, a rule's ticks fire on one node: the one holding its lease (`rule/<bus>/<name>`,
see `cluster.ownership`). The lease is not what keeps a tick from firing twice — during a
hand-over, or on an ex-owner cut off from NATS that has not yet noticed its lease is gone, two
nodes may both believe they own a rule — the claim is: it is one UPDATE in the shared
database, conditional on the stored last tick being earlier, and the database applies the
two nodes' UPDATEs one after the other (PostgreSQL re-checks the condition on the row the
first one wrote), so one of them wins each tick. A node whose claim lost plans on from the
tick it lost at once (the stored last tick is at least that one), as after a claim it won.

Ticks missed while the server was down are not replayed: a tick at most `GRACE` old still
fires (once), older ones are skipped, as a scheduler that was briefly away would catch up.

Time here is a `ScheduleClock`. With `--test-clock-rate N` (test-only) it runs N times as
fast as real time, from an origin kept in the data directory so that it stays continuous
across restarts: a test sees `rate(1 minute)` fire every second with N = 60.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.cluster.api import Leases, NodeDirectory
from lamina.cluster.local import LocalLeases
from lamina.cluster.ownership import Ownership
from lamina.control.rules import RuleService
from lamina.errors import LaminaError
from lamina.events.bus import EventBus
from lamina.models import Rule, RuleState
from lamina.schedule_expr import Schedule

log = logging.getLogger(__name__)

#: a tick missed by at most this much (schedule time) still fires once; older ones are skipped
GRACE = timedelta(seconds=60)
#: the runner looks again at least this often (real seconds), whatever it expects next
_MAX_SLEEP_S = 30.0


class ScheduleClock:
    """The time schedules run on: real time, or (test-only) `rate` times as fast.

    Sped-up time is `origin + (real - origin) * rate`, with the origin read from (or first
    written to) `origin_file`, so the same data directory sees one continuous sped-up time
    across restarts.
    """

    def __init__(
        self,
        rate: float = 1.0,
        origin_file: Path | None = None,
        real: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0:
            raise ValueError("the clock rate must be positive")
        self.rate = rate
        self._real = real
        self._origin = real()
        if rate != 1.0 and origin_file is not None:
            try:
                self._origin = float(origin_file.read_text())
            except (OSError, ValueError):
                origin_file.write_text(repr(self._origin))

    def time(self) -> float:
        """Schedule time as epoch seconds."""
        return self._origin + (self._real() - self._origin) * self.rate

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def real_seconds(self, schedule_seconds: float) -> float:
        """How long `schedule_seconds` of schedule time take in real time."""
        return schedule_seconds / self.rate


@dataclass(frozen=True)
class Planned:
    """A scheduled rule and when it fires next (None: disabled, or no tick left)."""

    rule: Rule
    next_fire: datetime | None


def next_tick(rule: Rule, schedule: Schedule, now: datetime) -> datetime | None:
    """The rule's next tick to fire, as of `now`: after the last one fired, after its anchor
    (creation or enabling), and no older than `GRACE`. It may be at or before `now` (due)."""
    base = max(t for t in (rule.anchor, rule.last_tick, now - GRACE) if t is not None)
    return schedule.next_after(base, rule.anchor)


def rule_key(rule: Rule) -> str:
    """The lease of a rule's ticks."""
    return f"rule/{rule.bus}/{rule.name}"


class ScheduleRunner:
    def __init__(
        self,
        rules: RuleService,
        bus: EventBus,
        clock: ScheduleClock,
        leases: Leases | None = None,
        directory: NodeDirectory | None = None,
    ) -> None:
        self._rules = rules
        self._bus = bus
        self._clock = clock
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._jobs = Ownership(
            leases or LocalLeases(),
            directory,
            started=self._owner_started,
            stopped=self._owner_stopped,
            what="schedules",
        )
        #: ticks fired since start-up (tests and /lamina/schedules)
        self.fired = 0

    def start(self) -> None:
        self._jobs.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def wake(self) -> None:
        """Rules changed: plan again now."""
        self._wake.set()

    async def close(self) -> None:
        """Stop after the fire under way, if any (a claimed tick is always queued)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._jobs.close()

    def owns(self, rule: Rule) -> bool:
        """Whether this node fires the rule's ticks (so far as it knows: see the module's
        docstring for why a tick fires once all the same)."""
        return self._jobs.owns(rule_key(rule))

    async def _owner_started(self, key: str) -> None:
        self.wake()

    async def _owner_stopped(self, key: str) -> None:
        """Nothing to stop: each tick asks `owns` before its claim."""

    def plan(self) -> list[Planned]:
        now = self._clock.now()
        out = []
        for rule, schedule in self._rules.scheduled():
            due = None
            if rule.state is RuleState.ENABLED:
                due = next_tick(rule, schedule, now)
                if due is not None and due < now:  # due: it fires as soon as the task runs
                    due = now
            out.append(Planned(rule, due))
        return out

    async def _loop(self) -> None:
        while not self._closing:
            # Cleared before planning: a change made while ticks fire wakes the next wait.
            self._wake.clear()
            try:
                wait = await self.fire_due()
            except Exception as e:  # a bad moment (disk trouble) must not end all schedules
                log.error("schedules: %s", e, exc_info=e)
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def fire_due(self) -> float:
        """One pass: fire every due tick; the real seconds until the next one is due (capped).
        The runner's task calls it in a loop; tests call it with a clock of their own."""
        while True:
            await self._follow_rules()
            now = self._clock.now()
            soonest: datetime | None = None
            moved = False
            for rule, schedule in self._rules.scheduled():
                if rule.state is not RuleState.ENABLED or not self.owns(rule):
                    continue
                tick = next_tick(rule, schedule, now)
                if tick is None:
                    continue
                if tick <= now:
                    # Claimed or not, the rule's last tick is now at least `tick` (ticks are
                    # strictly later than it): planning again cannot spin on this one.
                    await self._fire(rule.name, tick)
                    moved = True
                elif soonest is None or tick < soonest:
                    soonest = tick
            if not moved or self._closing:
                break
        if soonest is None:
            return _MAX_SLEEP_S
        ahead = (soonest - self._clock.now()).total_seconds()
        return min(_MAX_SLEEP_S, max(0.001, self._clock.real_seconds(ahead)))

    async def _follow_rules(self) -> None:
        """The enabled scheduled rules are the jobs this node may own; others are dropped."""
        keys = {
            rule_key(rule) for rule, _ in self._rules.scheduled() if rule.state is RuleState.ENABLED
        }
        wanted = self._jobs.wanted()
        for key in sorted(keys - wanted):
            await self._jobs.want(key)
        for key in sorted(wanted - keys):
            await self._jobs.drop(key)

    async def _fire(self, name: str, tick: datetime) -> bool:
        """Claim the tick and queue its event for the rule's targets; False if it was
        claimed already (or the rule is gone)."""
        # Claim first: a tick claimed is never fired again (see the module's docstring).
        if not await self._rules.claim_tick(name, tick):
            return False
        try:
            rule = self._rules.get(name)
        except LaminaError:
            return False  # deleted meanwhile
        event = self._bus.event(
            "aws.events", "Scheduled Event", {}, [self._rules.arn(name)], tick.timestamp()
        )
        try:
            await self._bus.deliver(event, [rule])
        except OSError as e:
            log.error("schedules: rule %s lost its tick %s: %s", name, tick.isoformat(), e)
            return True
        self.fired += 1
        return True
