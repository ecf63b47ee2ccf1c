"""The runner of event-source mappings: one task per mapping in a polling state, kept in step
with the mappings' owner (`MappingControl`).

A mapping's task checks that the function's role may read the source, resolves the
connection, builds the source with the factory of its kind, opens it, and runs the delivery
rules of its family (`queues.deliver_queue`, or `streams.deliver_stream` for NATS and Redis)
until told to stop. Whatever keeps it from reading (a role without the permission, a broker
that is not registered or cannot be reached, a queue that does not exist) becomes the
mapping's `LastProcessingResult` (`PROBLEM: ...`) and one warning in the server log; the task
tries again by itself (the role every few seconds, the source after a back-off from 1 s
doubling to 30 s), so a broker outage is survived and the mapping resumes on its own.

State moves the runner makes (`MappingControl.settle`): a CREATING, ENABLING or UPDATING
mapping becomes ENABLED once its task has opened the source or reported what keeps it from
doing so (as on Lambda, where a mapping whose broker cannot be reached is Enabled with a
PROBLEM result, and can be updated to fix it); DISABLING becomes DISABLED once the task has
stopped; DELETING is removed once it has stopped. An update that changes the mapping's
settings restarts its task with them.

Stopping a task for an update, a disable or a delete lets the batches in flight finish (up to
the shutdown grace) and receives nothing more; stopping the server (`close`) cancels at
once. Either way nothing unfinished is acknowledged: the source's `close()` hands it back to
the broker, which redelivers it (at least once).

In a cluster, a mapping runs on one node: the one holding its lease (`mapping/<uuid>`, see
`cluster.ownership`). Only that node runs the task and makes the state moves above; the
others follow the mapping and do nothing. A mapping handed over to another node, or whose
lease is lost, stops here as a disable stops it. A DISABLED mapping needs nobody: its lease is
given up. On one node (`LocalLeases`) every mapping is this node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lamina.cluster.api import Leases, NodeDirectory
from lamina.cluster.local import LocalLeases
from lamina.cluster.ownership import Ownership
from lamina.events.sources.api import (
    Invoker,
    MappingControl,
    MappingStats,
    SourceFactory,
    SourceUnavailable,
)
from lamina.events.sources.queues import deliver_queue
from lamina.events.sources.streams import deliver_stream
from lamina.mappings import EventSourceMapping, MappingState, SourceKind, problem
from lamina.observability import Metrics
from lamina.observability.cw_metrics import function_dimensions
from lamina.settings import Settings

log = logging.getLogger(__name__)

#: a role without the permission is checked again this often (seconds)
ROLE_RETRY_S = 5.0
#: back-off before reopening a source that failed: from the first, doubling, to the last
REOPEN_FIRST_S = 1.0
REOPEN_MAX_S = 30.0
#: a source that stayed open this long starts the back-off afresh when it next fails
REOPEN_RESET_S = 30.0

_SETTLING = (MappingState.CREATING, MappingState.ENABLING, MappingState.UPDATING)
#: what may change without restarting a mapping's task (the runner's own bookkeeping)
_UNSETTING = {
    "state": MappingState.ENABLED,
    "state_reason": "",
    "last_modified": 0.0,
    "last_result": "",
    "tags": {},
}


@dataclass
class _Run:
    """One mapping's task and what it was started with."""

    mapping: EventSourceMapping
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: the task has opened its source or reported why it cannot
    started: bool = False
    #: the problem last logged (one warning per distinct problem, not per retry)
    logged: str | None = None


class SourceRunner:
    """Runs every mapping `control` holds in a polling state; see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        control: MappingControl,
        invoker: Invoker,
        factories: dict[SourceKind, SourceFactory],
        metrics: Metrics,
        leases: Leases | None = None,
        directory: NodeDirectory | None = None,
    ) -> None:
        self._settings = settings
        self._control = control
        self._invoker = invoker
        self._factories = factories
        self._runs: dict[str, _Run] = {}
        self._stats: dict[str, MappingStats] = {}
        #: mappings changed since their reconciler last looked, and the reconcilers running
        self._dirty: set[str] = set()
        self._reconcilers: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._export = _Export(metrics)
        metrics.on_scrape(self._refresh_metrics)
        self._recorder = metrics.cloudwatch
        self._jobs = Ownership(
            leases or LocalLeases(),
            directory,
            started=self._owner_started,
            stopped=self._owner_stopped,
            what="event source mappings",
        )

    async def start(self) -> None:
        """Subscribe to the control's changes and start the mappings it holds (call after
        the control has loaded them)."""
        self._control.subscribe(self._changed)
        self._jobs.start()
        for mapping in self._control.mappings():
            self._changed(mapping.uuid)

    def stats(self, uuid: str) -> MappingStats | None:
        """The counters of a mapping (since the server started), if it has run."""
        return self._stats.get(uuid)

    async def close(self) -> None:
        """Stop every mapping's task at once (server shutdown): unfinished batches are not
        acknowledged; the broker redelivers them."""
        self._closing = True
        reconcilers = list(self._reconcilers.values())
        for task in reconcilers:
            task.cancel()
        await asyncio.gather(*reconcilers, return_exceptions=True)
        runs = list(self._runs.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)
        self._runs.clear()
        await self._jobs.close()  # after the tasks: the next owner starts when they are done

    async def wait_idle(self) -> None:
        """Until every change seen so far has been acted on (tests)."""
        while self._reconcilers:
            await asyncio.gather(*self._reconcilers.values(), return_exceptions=True)

    # -- following the control -------------------------------------------------------------

    def _changed(self, uuid: str) -> None:
        """The control's callback: look at the mapping again (soon, in its own reconciler,
        so that changes of one mapping are acted on in order)."""
        if self._closing:
            return
        self._dirty.add(uuid)
        if uuid not in self._reconcilers:
            task = asyncio.get_running_loop().create_task(self._reconcile_loop(uuid))
            self._reconcilers[uuid] = task

    async def _reconcile_loop(self, uuid: str) -> None:
        try:
            while uuid in self._dirty:
                self._dirty.discard(uuid)
                try:
                    await self._reconcile(uuid)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug of ours must not stop the runner
                    log.exception("event source mapping %s: could not apply a change", uuid)
        finally:
            self._reconcilers.pop(uuid, None)

    async def _reconcile(self, uuid: str) -> None:
        mapping = self._control.get(uuid)
        run = self._runs.get(uuid)
        key = mapping_key(uuid)
        if mapping is None:
            await self._stop(uuid)
            await self._jobs.drop(key)
            self._forget(uuid)
            return
        state = mapping.state
        if state is MappingState.DISABLED:
            await self._stop(uuid)
            await self._jobs.drop(key)
            return
        if not await self._jobs.want(key):
            await self._stop(uuid)  # another node's
            return
        if state.polling:
            if run is not None and _settings_of(run.mapping) != _settings_of(mapping):
                log.info("event source mapping %s: updated, restarting its poller", uuid)
                await self._stop(uuid)
                run = None
            if run is None:
                self._launch(mapping)
            else:
                run.mapping = mapping
                if state in _SETTLING and run.started:
                    await self._control.settle(uuid, MappingState.ENABLED)
        elif state is MappingState.DISABLING:
            await self._stop(uuid)
            await self._control.settle(uuid, MappingState.DISABLED)
        elif state is MappingState.DELETING:
            await self._stop(uuid)
            if mapping.kind.is_stream:
                await self._forget_checkpoint(mapping)
            await self._control.remove(uuid)
            await self._jobs.drop(key)
            self._forget(uuid)

    def _launch(self, mapping: EventSourceMapping) -> None:
        if not self._jobs.owns(mapping_key(mapping.uuid)):
            return  # handed over or lost since the reconciler asked: the new owner runs it
        run = _Run(mapping)
        self._stats.setdefault(mapping.uuid, self._new_stats(mapping))
        self._export.track(mapping)
        run.task = asyncio.get_running_loop().create_task(self._run(run))
        self._runs[mapping.uuid] = run

    async def _stop(self, uuid: str) -> None:
        """Stop a mapping's task: the batches in flight of a queue get the shutdown grace to
        finish; then (and for streams at once) it is cancelled."""
        run = self._runs.get(uuid)
        if run is None or run.task is None:
            return
        try:
            run.stop.set()
            if not run.mapping.kind.is_stream:
                with contextlib.suppress(TimeoutError):
                    grace = self._settings.shutdown_grace_s
                    await asyncio.wait_for(asyncio.shield(run.task), grace)
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        finally:
            # Only once stopped: a task still in `_runs` is cancelled by `close()`.
            if self._runs.get(uuid) is run:
                del self._runs[uuid]
        stats = self._stats.get(uuid)
        if stats is not None:
            stats.pollers = 0

    async def _owner_started(self, key: str) -> None:
        self._changed(key.removeprefix(_MAPPING))

    async def _owner_stopped(self, key: str) -> None:
        """Handed over or lost: stopped as a disable stops it (the batches in flight get the
        grace, nothing unfinished is acknowledged), before the lease is released."""
        await self._stop(key.removeprefix(_MAPPING))

    async def _forget_checkpoint(self, mapping: EventSourceMapping) -> None:
        """A deleted stream mapping's checkpoint (its durable consumer, its consumer group)
        is removed from the broker, best effort: a broker out of reach keeps it."""
        source: Any = None
        try:
            factory = self._factories.get(mapping.kind)
            if factory is None:
                return
            source = factory(mapping, self._control.connection(mapping))
            await source.forget()
        except (LookupError, SourceUnavailable) as e:
            log.warning("event source mapping %s: its checkpoint stays: %s", mapping.uuid, e)
        finally:
            if source is not None:
                await _close(mapping.uuid, source)

    def _forget(self, uuid: str) -> None:
        self._stats.pop(uuid, None)
        self._export.forget(uuid)

    # -- one mapping's task ----------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        mapping = run.mapping  # the settings this task runs with (an update restarts it)
        uuid = mapping.uuid
        stats = self._stats[uuid]
        backoff = REOPEN_FIRST_S
        while not run.stop.is_set():
            why = self._control.role_problem(mapping)
            if why is not None:
                await self._problem(run, why)
                await _pause(run.stop, ROLE_RETRY_S)
                continue
            source: Any = None
            opened_at = None
            try:
                connection = self._control.connection(mapping)
                factory = self._factories.get(mapping.kind)
                if factory is None:
                    raise SourceUnavailable(f"{mapping.kind} sources are not served here")
                source = factory(mapping, connection)
                if mapping.kind.is_stream:
                    position = mapping.starting_position or "LATEST"
                    await source.open(position, mapping.starting_timestamp)
                else:
                    await source.open()
                opened_at = time.monotonic()
                await self._opened(run)
                report = self._reporter(uuid)
                if mapping.kind.is_stream:
                    delivery = deliver_stream(mapping, source, self._invoker, report, stats)
                else:
                    delivery = deliver_queue(
                        mapping,
                        source,
                        self._invoker,
                        report,
                        stats,
                        limit=self._settings.concurrency_limit,
                        stop=run.stop,
                    )
                await self._deliver_while_allowed(mapping, delivery)
                continue  # stopped (or the delivery ended: open the source again)
            except _RoleRevoked:
                continue  # reported at the top of the loop
            except (LookupError, SourceUnavailable) as e:
                await self._problem(run, str(e).strip("'\""))
            except Exception as e:  # a bug of ours, or a library error a module let escape
                if run.logged != repr(e):
                    log.exception("event source mapping %s failed", uuid)
                await self._problem(run, f"internal error: {type(e).__name__}", logged=repr(e))
            finally:
                stats.pollers = 0
                if source is not None:
                    await _close(uuid, source)
            if opened_at is not None and time.monotonic() - opened_at >= REOPEN_RESET_S:
                backoff = REOPEN_FIRST_S
            await _pause(run.stop, backoff)
            backoff = min(backoff * 2, REOPEN_MAX_S)

    async def _deliver_while_allowed(
        self, mapping: EventSourceMapping, delivery: Awaitable[None]
    ) -> None:
        """Run `delivery`, checking every few seconds that the function's role still may
        read the source: a permission taken away stops it (`_RoleRevoked`), as on Lambda."""
        task = asyncio.ensure_future(delivery)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=ROLE_RETRY_S)
                if done:
                    task.result()
                    return
                if self._control.role_problem(mapping) is not None:
                    raise _RoleRevoked
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _reporter(self, uuid: str) -> Callable[[str], None]:
        def report(result: str) -> None:
            self._control.report(uuid, result)

        return report

    async def _opened(self, run: _Run) -> None:
        if run.logged is not None:
            log.warning(
                "event source mapping %s (%s): source reachable again, resuming",
                run.mapping.uuid,
                run.mapping.source_arn,
            )
            run.logged = None
        await self._started(run)

    async def _problem(self, run: _Run, what: str, *, logged: str | None = None) -> None:
        """Report what keeps the mapping from reading; log it once (not per retry)."""
        # Settled first: whoever sees the PROBLEM sees the mapping Enabled with it.
        await self._started(run)
        self._control.report(run.mapping.uuid, problem(what))
        key = logged or what
        if run.logged != key:
            if logged is None:
                log.warning(
                    "event source mapping %s (%s): %s; retrying",
                    run.mapping.uuid,
                    run.mapping.source_arn,
                    what,
                )
            run.logged = key

    async def _started(self, run: _Run) -> None:
        """The first open, or the first problem: a settling mapping becomes ENABLED."""
        if run.started:
            return
        run.started = True
        current = self._control.get(run.mapping.uuid)
        if current is not None and current.state in _SETTLING:
            await self._control.settle(run.mapping.uuid, MappingState.ENABLED)

    # -- metrics -----------------------------------------------------------------------------

    def _new_stats(self, mapping: EventSourceMapping) -> MappingStats:
        """A mapping's counters; a stream's batches record CloudWatch's IteratorAge, and its
        failed deliveries to the OnFailure destination DestinationDeliveryFailures, under the
        function (and the alias or version it invokes, as `Resource`)."""
        dims = function_dimensions(mapping.function_name, mapping.qualifier, None)
        recorder = self._recorder
        return MappingStats(
            on_iterator_age=lambda ms: recorder.add("IteratorAge", dims, ms),
            on_delivery_failure=lambda: recorder.add("DestinationDeliveryFailures", dims, 1.0),
        )

    def _refresh_metrics(self) -> None:
        for uuid, stats in self._stats.items():
            self._export.refresh(uuid, stats)


_MAPPING = "mapping/"


def mapping_key(uuid: str) -> str:
    """The lease of a mapping's pollers."""
    return _MAPPING + uuid


class _RoleRevoked(Exception):
    """The function's role no longer allows reading the source."""


def _settings_of(mapping: EventSourceMapping) -> EventSourceMapping:
    """The mapping without what the runner and the API's bookkeeping change: two mappings
    with equal settings need no restart."""
    return dataclasses.replace(mapping, **_UNSETTING)  # type: ignore[arg-type]


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _close(uuid: str, source: Any) -> None:
    try:
        await source.close()
    except Exception:  # closing must not hide why the source stopped, nor stop the runner
        log.exception("event source mapping %s: closing its source failed", uuid)


class _Export:
    """Each mapping's counters as Prometheus series, brought up to date at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._labels: dict[str, tuple[str, str, str]] = {}
        self._seen: dict[str, MappingStats] = {}

    def track(self, mapping: EventSourceMapping) -> None:
        self._labels[mapping.uuid] = (mapping.uuid, mapping.function_name, str(mapping.kind))
        self._seen.setdefault(mapping.uuid, MappingStats())

    def refresh(self, uuid: str, stats: MappingStats) -> None:
        labels = self._labels.get(uuid)
        if labels is None:
            return
        m, seen = self._metrics, self._seen[uuid]
        for outcome, now, before in (
            ("received", stats.records_received, seen.records_received),
            ("filtered", stats.records_filtered, seen.records_filtered),
            (
                "failure_destination",
                stats.records_to_failure_destination,
                seen.records_to_failure_destination,
            ),
        ):
            m.source_records.labels(*labels, outcome).inc(max(0, now - before))
        m.source_batches.labels(*labels).inc(max(0, stats.batches - seen.batches))
        m.source_function_errors.labels(*labels).inc(
            max(0, stats.function_errors - seen.function_errors)
        )
        m.source_throttles.labels(*labels).inc(max(0, stats.throttles - seen.throttles))
        m.source_backlog_age.labels(*labels).set(stats.backlog_age_s)
        m.source_lag.labels(*labels).set(stats.lag if stats.lag is not None else 0)
        m.source_pollers.labels(*labels).set(stats.pollers)
        self._seen[uuid] = dataclasses.replace(stats)

    def forget(self, uuid: str) -> None:
        """A deleted mapping's series go (they would read their last values forever)."""
        labels = self._labels.pop(uuid, None)
        self._seen.pop(uuid, None)
        if labels is None:
            return
        m = self._metrics
        for metric in (
            m.source_batches,
            m.source_function_errors,
            m.source_throttles,
            m.source_backlog_age,
            m.source_lag,
            m.source_pollers,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        for outcome in ("received", "filtered", "failure_destination"):
            with contextlib.suppress(KeyError):
                m.source_records.remove(*labels, outcome)
