"""The data plane: one pool of environments per function version, scaled on demand.

Everything here runs on the event loop and is mutated only there, so no locks: each pool's
state changes in plain synchronous steps between awaits.

A warm invoke takes the most recently used idle environment (its caches are hottest); with
none idle, a new one starts (a cold start). Environments idle longer than the keep-alive are
stopped, so a function scales back to zero. When a function's code or configuration changes
its pool is retired: idle environments stop at once, busy ones when their invocation ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from lamina.errors import (
    InvalidParameterValueError,
    InvalidRuntimeError,
    InvalidSubnetIDError,
    LaminaError,
    ResourceNotReadyError,
    TooManyRequestsError,
)
from lamina.models import FunctionConfig, FunctionImage, InvokeRequest, InvokeResult
from lamina.networks import VpcDirectory
from lamina.observability import LogStore, LogWriter, Metrics
from lamina.observability.cw_metrics import function_dimensions
from lamina.observability.invocation_log import InvocationLog
from lamina.runtimes.catalog import Family, RuntimeCatalog, RuntimeInfo
from lamina.runtimes.images import DebuggerInstaller, RuntimeImages
from lamina.sandbox import SandboxBackend
from lamina.scheduler import cw_gauges
from lamina.scheduler.capacity import MemoryCapacity
from lamina.scheduler.concurrency import Concurrency, ConcurrencyControl, Lease
from lamina.scheduler.cw_gauges import Gauge
from lamina.scheduler.debug_sessions import DebugSession, DebugSessions, with_debugger
from lamina.scheduler.debugging import DebugSpec, debug_setting
from lamina.scheduler.environment import (
    Environment,
    EnvironmentContext,
    EnvState,
    InitFailed,
    NotDelivered,
    Outcome,
)
from lamina.scheduler.image_roots import ImageRoots, ensure_here, root_of
from lamina.scheduler.lambda_env import (
    LAMBDA_LANG,
    LAMBDA_OPT,
    LAMBDA_RUNTIME_DIR,
    LAMBDA_TASK_ROOT,
    image_environment,
    lambda_environment,
)
from lamina.scheduler.limits import EnvironmentLimits
from lamina.scheduler.snapshots import Snapshots, require_restorable, snap_start_env
from lamina.scheduler.traces import InvocationTrace, Tracing
from lamina.settings import Settings

log = logging.getLogger(__name__)

#: seconds a cold start waits for its runtime's SDK while it is being installed (the first
#: functions after a fresh start); past it the environment starts without the SDK
SDK_WAIT_S = 120.0

CodeReleased = Callable[[str], Awaitable[None]]

# An invocation handed to an environment that died before taking it is run again elsewhere,
# this many times in all; past that the runtime keeps dying at start and the caller is told.
_DELIVERY_ATTEMPTS = 3
_NEVER_STARTED = (
    b'{"errorType":"Runtime.ExitError","errorMessage":"Error: the runtime exited before '
    b'taking the invocation, repeatedly"}'
)


_LATEST = "$LATEST"
# ARN parts of a qualified function ARN: arn:aws:lambda:REGION:ACCOUNT:function:NAME:QUALIFIER
_QUALIFIED_PARTS = 8


def qualifier_of(invoked_arn: str) -> str:
    """The qualifier (alias or version) an invoked function ARN names, `$LATEST` if none."""
    parts = invoked_arn.split(":")
    return parts[-1] if len(parts) == _QUALIFIED_PARTS else _LATEST


class _Labelled:
    """One pool's metric children for one invoked ARN, so counting an invocation is
    attribute reads and `inc()`, never `labels()` (which hashes and locks)."""

    __slots__ = ("cold_starts", "cw", "cw_dims", "duration", "outcomes")

    def __init__(self, metrics: Metrics, config: FunctionConfig, qualifier: str) -> None:
        name, version, runtime = config.name, config.version, config.runtime
        #: indexed by `Outcome`
        self.outcomes = tuple(
            metrics.invocations.labels(name, version, qualifier, runtime, outcome.label)
            for outcome in Outcome
        )
        self.duration = metrics.duration.labels(name, version, qualifier, runtime)
        self.cold_starts = metrics.cold_starts.labels(name, version, runtime)
        self.cw = metrics.cloudwatch
        #: the CloudWatch dimension sets an invocation through this ARN counts in
        self.cw_dims = function_dimensions(
            name, None if qualifier == _LATEST else qualifier, version
        )


class Pool:
    """The environments of one function version (one configuration revision)."""

    def __init__(self, ctx: EnvironmentContext, scheduler: Scheduler) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self._scheduler = scheduler
        self._idle: list[Environment] = []
        self._live: set[Environment] = set()
        self.retired = False
        #: metric children by the ARN the caller invoked (see `_labelled`)
        self._metrics: dict[str, _Labelled] = {}
        self._init_duration: Any = None
        # Provisioned concurrency: environments started ahead, kept however long they idle,
        # and used before on-demand ones.
        self.provisioned_target = 0
        self._provisioned: set[Environment] = set()
        #: idle environments stopped to make room (memory capacity), until they are gone
        self._evicted: set[Environment] = set()
        self.provision_error: str | None = None
        self._provisioner: asyncio.Task[None] | None = None
        self._provisioned_ctx = replace(
            ctx,
            base_env={**ctx.base_env, "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"},
        )

    def _labelled(self, invoked_arn: str) -> _Labelled:
        """The metric children for invocations through one ARN, made on first use and kept
        (a pool sees a handful of ARNs: unqualified, its version, the aliases that point
        at it): making them costs ~0.15 ms, which a cold start should not wait for, and a
        warm invoke pays one dict look-up."""
        labelled = self._metrics.get(invoked_arn)
        if labelled is None:
            labelled = self._metrics[invoked_arn] = _Labelled(
                self.ctx.metrics, self.config, qualifier_of(invoked_arn)
            )
        return labelled

    def _count(
        self,
        request: InvokeRequest,
        result: InvokeResult | None,
        outcome: int,
        cold: bool,
        init_s: float | None = None,
    ) -> None:
        labelled = self._labelled(request.invoked_arn)
        labelled.outcomes[outcome].inc()
        labelled.cw.invocation(
            labelled.cw_dims,
            outcome != Outcome.SUCCESS,
            result.duration_ms if result is not None and result.duration_ms else None,
        )
        if cold:
            labelled.cold_starts.inc()
        if init_s is not None:
            self._count_init(init_s)
        if result is not None and result.duration_ms:
            labelled.duration.observe(result.duration_ms / 1000)

    def _count_init(self, init_s: float) -> None:
        if self._init_duration is None:
            metrics = self.ctx.metrics
            self._init_duration = metrics.init_duration.labels(
                self.config.name, self.config.version, self.config.runtime
            )
        self._init_duration.observe(init_s)

    @property
    def size(self) -> int:
        return len(self._live)

    @property
    def live(self) -> list[Environment]:
        return list(self._live)

    @property
    def idle_count(self) -> int:
        """Idle environments ready for an invoke now (the idle list may still hold ones
        that died since they were put there: they are skipped when popped, and not counted)."""
        return sum(1 for env in self._idle if env.state is EnvState.IDLE)

    async def invoke(
        self,
        request: InvokeRequest,
        lease: Lease | None = None,
        trace: InvocationTrace | None = None,
    ) -> InvokeResult:
        for _ in range(_DELIVERY_ATTEMPTS):
            try:
                return await self._invoke_once(request, lease, trace)
            except NotDelivered:
                continue
        self._count(request, None, Outcome.PLATFORM_ERROR, cold=False)
        return InvokeResult(
            payload=_NEVER_STARTED,
            executed_version=self.config.version,
            function_error="Unhandled",
        )

    async def _invoke_once(
        self, request: InvokeRequest, lease: Lease | None, trace: InvocationTrace | None
    ) -> InvokeResult:
        env = None
        cold = False
        # Provisioned environments first (the most recently used of them), then on-demand.
        for at in range(len(self._idle) - 1, -1, -1):
            if self._idle[at] in self._provisioned and self._idle[at].state is EnvState.IDLE:
                env = self._idle.pop(at)
                break
        while env is None and self._idle:
            candidate = self._idle.pop()
            if candidate.state is EnvState.IDLE:
                env = candidate
                break
        provisioned = env is not None and env in self._provisioned
        if env is not None and env.charged_mb < self.config.memory_size:
            env = await self._regrow(env)
        if env is None:
            # The environment leaves _live through _gone, once it is torn down, whichever
            # path kills it (a failed init, a timeout, its runtime exiting, retirement).
            waiting = time.time_ns() if trace is not None else 0
            await self._scheduler.capacity.take(self.config.memory_size)
            if trace is not None:
                trace.capacity_wait = (waiting, time.time_ns())
            template = None
            if self.config.snap_start_on:  # SnapStart: restored from the version's template
                template = await self._scheduler.snapshots.template(self.config)
            env = Environment(self.ctx, on_gone=self._gone, template=template)
            self._live.add(env)
            cold = True
            if trace is not None:
                trace.env, trace.cold = env, True
            try:
                result = await env.start_and_invoke(request)
            except InitFailed as failure:
                self._count(request, None, Outcome.PLATFORM_ERROR, cold=True)
                if failure.error is not None:
                    raise failure.error from None  # a failed restore: SnapStartException
                return InvokeResult(
                    payload=failure.payload,
                    executed_version=self.config.version,
                    function_error="Unhandled",
                )
            finally:
                self._release(env)
        else:
            if trace is not None:
                trace.env = env
            try:
                result = await env.invoke(request)
            finally:
                self._release(env)
        if lease is not None and env.finishing is not None and not env.finishing.done():
            lease.extend_until(env.finishing)  # its extensions are still on this invocation
        # Counted after the caller's answer has gone out (it is written before this task
        # next yields).
        outcome = Outcome.SUCCESS if result.function_error is None else env.outcome_kind
        init_s = env.init_duration_s if cold else None
        asyncio.get_running_loop().call_soon(self._count, request, result, outcome, cold, init_s)
        if self.provisioned_target:  # CloudWatch: served by provisioned concurrency or not
            self.ctx.metrics.cloudwatch.add(
                "ProvisionedConcurrencyInvocations"
                if provisioned
                else "ProvisionedConcurrencySpilloverInvocations",
                self._labelled(request.invoked_arn).cw_dims,
                1.0,
            )
        return result

    async def _regrow(self, env: Environment) -> Environment | None:
        """An idle environment charged only what it held (see `shrink_idle`) is about to run
        and may grow to its MemorySize again: it takes the rest from the capacity first
        (waiting, or refused, as a cold start would be; refused, it stays idle). Returns it,
        or None if it died meanwhile (the caller starts another)."""
        more = self.config.memory_size - env.charged_mb
        try:
            await self._scheduler.capacity.take(more)
        except BaseException:  # refused, or the caller went away: back to the idle list
            self._release(env)
            raise
        if env not in self._live:
            self._scheduler.capacity.give_back(more)  # gone meanwhile, its charge returned
            return None
        env.charged_mb += more
        return env if env.state is EnvState.IDLE else None

    def shrink_idle(self) -> int:
        """Charge each idle environment what it really holds instead of its MemorySize: it
        is frozen and cannot grow until it runs again, which takes the rest back first
        (`_regrow`). Returns the MB freed. Each is read once per idle spell."""
        freed = 0
        memory_size = self.config.memory_size
        for env in self._idle:
            if env.charged_mb < memory_size or env.state is not EnvState.IDLE:
                continue
            usage = env.memory_usage_mb()
            if usage is None:
                continue
            held = min(max(usage, 1), memory_size)
            freed += env.charged_mb - held
            env.charged_mb = held
        return freed

    def _release(self, env: Environment) -> None:
        finishing = env.finishing
        if env.state is EnvState.BUSY and finishing is not None and not finishing.done():
            # Its extensions are still on the invocation the caller already has.
            finishing.add_done_callback(lambda _: self._release(env))
            return
        if env.state is EnvState.IDLE and not self.retired:
            self._idle.append(env)
        else:
            self._scheduler._background(env.destroy())

    def _gone(self, env: Environment) -> None:
        if env not in self._live:
            return
        self._live.remove(env)
        evicted = env in self._evicted
        self._evicted.discard(env)
        self._scheduler.capacity.give_back(env.charged_mb, evicted)
        if env in self._provisioned:
            self._provisioned.discard(env)
            self._keep_provisioned()  # a provisioned environment died: replace it
        if self.retired and not self._live:
            self._scheduler._pool_drained(self)

    def retire(self) -> None:
        """Stop idle environments now and busy ones when they finish."""
        self.retired = True
        if self._provisioner is not None:
            self._provisioner.cancel()
        idle, self._idle = self._idle, []
        for env in idle:
            self._scheduler._background(env.destroy())
        if not self._live:
            self._scheduler._pool_drained(self)

    # -- provisioned concurrency -------------------------------------------------------

    def provision(self, count: int) -> None:
        """Keep `count` environments initialised ahead (0: none); surplus ones stop."""
        self.provisioned_target = count
        self.provision_error = None
        surplus = len(self._provisioned) - count
        for env in [e for e in self._idle if e in self._provisioned][: max(surplus, 0)]:
            self._provisioned.discard(env)
            self._idle.remove(env)
            self._scheduler._background(env.destroy())
        for env in list(self._provisioned)[: max(len(self._provisioned) - count, 0)]:
            self._provisioned.discard(env)  # busy now: an on-demand one from here on
        self._keep_provisioned()

    @property
    def provisioned_ready(self) -> int:
        return sum(1 for e in self._provisioned if e.state in (EnvState.IDLE, EnvState.BUSY))

    @property
    def provisioned_busy(self) -> int:
        return sum(1 for e in self._provisioned if e.state is EnvState.BUSY)

    def _keep_provisioned(self) -> None:
        if self.retired or self.provision_error is not None:
            return
        if self._provisioner is None or self._provisioner.done():
            self._provisioner = asyncio.ensure_future(self._provision())

    async def _provision(self) -> None:
        while not self.retired and len(self._provisioned) < self.provisioned_target:
            try:
                await self._scheduler.capacity.take(self.config.memory_size)
            except TooManyRequestsError as e:
                self.provision_error = e.message
                return
            env = Environment(self._provisioned_ctx, on_gone=self._gone)
            self._live.add(env)
            self._provisioned.add(env)
            try:
                await env.start()
            except InitFailed as failure:
                self._provisioned.discard(env)
                self.provision_error = failure.payload.decode(errors="replace")[:500]
                return
            except asyncio.CancelledError:
                # The pool was retired while this one started (its version's configuration
                # changed): stop it rather than leave it counted among the live ones.
                self._provisioned.discard(env)
                await env.destroy()
                raise
            env.prewarmed()
            if env.init_duration_s is not None:
                self._count_init(env.init_duration_s)
            log.info(
                "provisioned environment %d of %d of %s:%s ready",
                len(self._provisioned),
                self.provisioned_target,
                self.config.name,
                self.config.version,
            )
            self._release(env)

    async def prewarm(self, count: int) -> int:
        """Start `count` on-demand environments at once ahead of invokes the caller knows
        are coming; how many are ready (idle in the pool) at the end."""

        async def one() -> bool:
            try:
                await self._scheduler.capacity.take(self.config.memory_size)
            except TooManyRequestsError:
                return False
            env = Environment(self.ctx, on_gone=self._gone)
            self._live.add(env)
            try:
                await env.start()
            except InitFailed:
                return False  # it tears itself down (and leaves _live through _gone)
            except asyncio.CancelledError:
                await env.destroy()
                raise
            env.prewarmed()
            if env.init_duration_s is not None:
                self._count_init(env.init_duration_s)
            self._release(env)
            return True

        return sum(await asyncio.gather(*(one() for _ in range(count))))

    def idle_unprovisioned(self) -> list[Environment]:
        return [e for e in self._idle if e.state is EnvState.IDLE and e not in self._provisioned]

    def evict(self, env: Environment) -> None:
        """Stop an idle environment to make room for another (memory capacity)."""
        if env in self._idle:
            self._idle.remove(env)
            self._evicted.add(env)
            self._scheduler._background(env.destroy())

    def reap(self, idle_before: float) -> None:
        """Stop environments idle since before `idle_before` (monotonic seconds); provisioned
        ones stay."""
        keep = []
        for env in self._idle:
            if env in self._provisioned or (
                env.state is EnvState.IDLE and env.last_used >= idle_before
            ):
                keep.append(env)
            else:
                self._scheduler._background(env.destroy())
        self._idle = keep


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        backend: SandboxBackend,
        runtimes: RuntimeCatalog,
        metrics: Metrics,
        task_root: Callable[[str], Path],
        on_code_released: CodeReleased | None = None,
        opt_dir: Callable[[FunctionConfig], Path] | None = None,
        log_store: LogStore | None = None,
        credentials: Callable[[FunctionConfig], tuple[str, str, str]] | None = None,
        images: RuntimeImages | None = None,
        concurrency: ConcurrencyControl | None = None,
    ) -> None:
        self._settings = settings
        # Runtime images (Lambda's /var/lang: interpreter links and the bundled SDK); None in
        # tests that run without them.
        self._images = images
        # Each new environment's AWS credentials (key id, secret, session token): a session of
        # the function's role, made by whoever holds the keys (the scheduler knows no auth).
        self._credentials = credentials
        #: account and reserved concurrency: this machine's count, or (cluster mode) the
        #: cluster's (`cluster.concurrency.ClusterConcurrency`)
        self.concurrency: ConcurrencyControl = concurrency or Concurrency(
            settings.concurrency_limit
        )
        self.capacity = MemoryCapacity(
            settings.memory_capacity_mb,
            settings.queue_timeout_s,
            self._evictable,
            self._shrink_idle,
        )
        self._backend = backend
        self._runtimes = runtimes
        self._vpcs = VpcDirectory(settings.vpcs)
        self._metrics = metrics
        rate = settings.log_rate_limit_mb * 1024 * 1024
        self._logs = LogWriter(
            log_store,
            rate_bytes_s=rate or None,
            burst_bytes=max(settings.log_burst_mb * 1024 * 1024, rate),
            on_loss=metrics.log_lost,
        )
        self._task_root = task_root
        # Where a function's layers are merged (its /opt); a pure lookup, built beforehand.
        self._opt_dir = opt_dir
        self._on_code_released = on_code_released
        self._pools: dict[tuple[str, str], Pool] = {}
        self._draining: set[Pool] = set()
        #: scaling configs' MaxExecutionEnvironments and capacity providers' MaxVCpuCount
        self.limits = EnvironmentLimits()
        #: raises (InvalidRuntimeError) for a version that may not start environments here:
        #: one pinned to a runtime version the host no longer runs (control sets it)
        self.check_startable: Callable[[FunctionConfig], None] = lambda config: None
        #: cluster mode: fetches a function's code and layers to this node before a start
        self.code_ready: Callable[[FunctionConfig], Awaitable[None]] | None = None
        #: container images' root filesystems on this node (the server sets it)
        self.image_roots: ImageRoots | None = None
        #: where each invocation's request and outcome are kept for `lamina replay` (the
        #: server sets it; None: not kept, `--replay-retention 0`)
        self.invocation_log: InvocationLog | None = None
        #: sampling and spans of traced invocations (the server sets it with
        #: `--otlp-endpoint`; None: nothing is traced)
        self.tracing: Tracing | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        #: throttle counters by (function, reason), made on first use
        self._throttles: dict[tuple[str, str, str, str], Any] = {}
        metrics.on_scrape(self._refresh_gauges)
        self._debuggers = DebuggerInstaller(images) if images is not None else None
        #: environments started for `lamina invoke --debug`, outside the pools
        self.debug_sessions = DebugSessions(self._debug_context, self.capacity)
        #: SnapStart templates of published versions, held on this node
        self.snapshots = Snapshots(self.capacity, self._context)
        metrics.on_scrape(lambda: metrics.snapstart_templates.set(self.snapshots.count))

    @property
    def logs(self) -> LogWriter:
        """Where every environment's log goes (observers subscribe to its reports)."""
        return self._logs

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def backend_description(self) -> str:
        return self._backend.description

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def invoke(self, config: FunctionConfig, request: InvokeRequest) -> InvokeResult:
        """Run one invocation; TooManyRequestsError at once if it is over a concurrency limit.
        Every caller (Invoke, async events, event sources, URLs and routes, durable steps)
        comes through here, so this is where the invocation log is written and traces are
        sampled."""
        tracing, trace = self.tracing, None
        if tracing is not None:
            request, trace = tracing.begin(config, request)
        invocation_log = self.invocation_log
        if trace is None and invocation_log is None:
            return await self._invoke(config, request)
        started = time.time()
        try:
            result = await self._invoke(config, request, trace)
        except LaminaError as e:
            if tracing is not None and trace is not None:
                tracing.end(config, request, trace, None, e.error_type)
            if invocation_log is not None:
                invocation_log.record(
                    config.name, config.version, request, started, None, e.error_type
                )
            raise
        if invocation_log is not None:
            invocation_log.record(config.name, config.version, request, started, result)
        if tracing is None or trace is None:
            return result
        # A sampled invocation: its spans, and the header its destinations continue from.
        tracing.end(config, request, trace, result, None)
        return replace(result, trace_header=request.trace_id)

    async def _invoke(
        self,
        config: FunctionConfig,
        request: InvokeRequest,
        trace: InvocationTrace | None = None,
    ) -> InvokeResult:
        if config.image is not None:
            await ensure_here(self.image_roots, config)
        if config.snap_start_on:
            require_restorable(config)  # every caller, not only Invoke (queues, sources)
        pool = self._pool(config)
        try:
            # Most versions have no such limits: skip their bookkeeping (the hot path).
            limited = (
                self.limits.hold(config.name, config.version)
                if self.limits.applies(config.name, config.version)
                else contextlib.nullcontext()
            )
            held = self.concurrency.try_hold(config.name)
            if held is None:  # only in a cluster: this node's share is used up
                held = await self.concurrency.hold_async(config.name)
            with held as lease, limited:
                if request.debug_session is not None:
                    return await self.debug_sessions.invoke(config, request)
                return await pool.invoke(request, lease, trace)
        except TooManyRequestsError as throttled:  # the lease's or the memory capacity's
            reason = str(throttled.fields["Reason"])
            key = (config.name, qualifier_of(request.invoked_arn), config.runtime, reason)
            counter = self._throttles.get(key)
            if counter is None:
                counter = self._throttles[key] = self._metrics.throttles.labels(*key)
            counter.inc()
            qualifier = key[1]
            self._metrics.cloudwatch.add(
                "Throttles",
                function_dimensions(config.name, None if qualifier == _LATEST else qualifier, None),
                1.0,
            )
            raise

    async def debug(self, config: FunctionConfig, spec: DebugSpec) -> DebugSession:
        """Start a new environment of `config` with its debugger listening (see
        `debug_sessions`)."""
        if config.image is not None:
            await ensure_here(self.image_roots, config)
        return await self.debug_sessions.open(config, spec)

    def _refresh_gauges(self) -> None:
        """Before a scrape: the gauges read from the pools and leases, which know them
        anyway (cheaper than keeping gauges current on every invoke). A function or version
        without a pool drops out."""
        m = self._metrics
        for gauge in (
            m.function_info,
            m.concurrent_executions,
            m.provisioned,
            m.provisioned_utilization,
        ):
            gauge.clear()
        for pool in [*self._pools.values(), *self._draining]:
            name, version = pool.config.name, pool.config.version
            m.concurrent_executions.labels(name).set(self.concurrency.running(name))
            if pool.retired:
                continue
            m.function_info.labels(name, version, pool.config.runtime).set(1)
            ready = pool.provisioned_ready
            if pool.provisioned_target or ready:
                m.provisioned.labels(name, version, "requested").set(pool.provisioned_target)
                m.provisioned.labels(name, version, "allocated").set(ready)
                utilization = pool.provisioned_busy / ready if ready else 0.0
                m.provisioned_utilization.labels(name, version).set(utilization)

    def cloudwatch_gauges(self) -> list[Gauge]:
        """CloudWatch's concurrency gauges now (see `scheduler.cw_gauges`)."""
        return cw_gauges.sample(list(self._pools.values()), self._draining, self.concurrency)

    def _evictable(self) -> list[tuple[float, int, Callable[[], None]]]:
        """Idle, not provisioned environments of every pool: (last used, MB, stop it)."""
        return [
            (env.last_used, env.charged_mb, partial(pool.evict, env))
            for pool in self._pools.values()
            for env in pool.idle_unprovisioned()
        ]

    def _shrink_idle(self) -> int:
        return sum(pool.shrink_idle() for pool in self._pools.values())

    def provision(self, config: FunctionConfig, count: int) -> None:
        """Provisioned concurrency for one function version (0 removes it)."""
        self._pool(config).provision(count)

    def provisioned(self, config: FunctionConfig) -> tuple[int, str | None]:
        """(environments ready, the failure that stopped provisioning, if any)."""
        pool = self._pools.get((config.name, config.version))
        if pool is None:
            return 0, None
        return pool.provisioned_ready, pool.provision_error

    def idle(self, function_name: str, version: str) -> int:
        """Idle warm environments of this function version now (invoke routing asks on each
        invoke: one dict look-up and a walk of that pool's idle list)."""
        pool = self._pools.get((function_name, version))
        return 0 if pool is None or pool.retired else pool.idle_count

    def ready(self, function_name: str, version: str) -> int:
        """Environments of this function version past their init (idle or busy): an invoke
        beyond these many at once starts one."""
        pool = self._pools.get((function_name, version))
        if pool is None or pool.retired:
            return 0
        return sum(1 for env in pool.live if env.state in (EnvState.IDLE, EnvState.BUSY))

    async def prewarm(self, config: FunctionConfig, count: int) -> int:
        """Start `count` environments of the version ahead of a burst of invokes the caller
        knows is coming (durable executions whose waits end together); how many started."""
        return await self._pool(config).prewarm(count)

    def idle_by_version(self) -> dict[str, int]:
        """Idle warm environments by "name:version", versions with none left out (what a
        cluster node reports with its heartbeat)."""
        idle = {}
        for (name, version), pool in self._pools.items():
            count = pool.idle_count
            if count and not pool.retired:
                idle[f"{name}:{version}"] = count
        return idle

    def provisioned_by_version(self) -> dict[str, int]:
        """Provisioned environments ready, by "name:version" (versions with none left out)."""
        ready = {}
        for (name, version), pool in self._pools.items():
            count = pool.provisioned_ready
            if count and not pool.retired:
                ready[f"{name}:{version}"] = count
        return ready

    def prepare(self, config: FunctionConfig) -> None:
        """Make the function's pool ahead of its first invoke (a cold start then skips it),
        and what its runtime needs built (Java's client), in the background."""
        # (reported when it is invoked)
        with contextlib.suppress(InvalidRuntimeError, InvalidSubnetIDError, ResourceNotReadyError):
            self._pool(config)
        runtime = self._runtimes.get(config.runtime)
        if runtime is not None and runtime.prepare is not None:
            self._background(asyncio.get_running_loop().run_in_executor(None, runtime.prepare))

    def _pool(self, config: FunctionConfig) -> Pool:
        key = (config.name, config.version)
        pool = self._pools.get(key)
        if pool is None or pool.config.revision_id != config.revision_id:
            if pool is not None:
                self._retire(key)
            ctx = self._context(config)
            spec = debug_setting(config)
            if spec is not None:
                try:
                    ctx = self._with_debugger(ctx, spec)
                except InvalidParameterValueError as e:
                    log.warning("%s: LAMINA_DEBUG ignored: %s", config.name, e.message)
            pool = Pool(ctx, self)
            self._pools[key] = pool
        return pool

    def retire(self, function_name: str, version: str | None = None) -> None:
        """Retire a function version's pool (its configuration changed, or it is gone), or
        every pool of the function (`version` None: the function is gone)."""
        for key in [k for k in self._pools if k[0] == function_name]:
            if version is None or key[1] == version:
                self._retire(key)

    def code_in_use(self, sha256: str) -> bool:
        """Whether a live environment still runs this code."""
        pools = [*self._pools.values(), *self._draining]
        return any(p.config.code_sha256 == sha256 and p.size for p in pools)

    def environments(self) -> list[Environment]:
        """Every live environment (idle, busy, starting or being torn down)."""
        pools = [*self._pools.values(), *self._draining]
        return [env for pool in pools for env in pool.live] + self.debug_sessions.environments()

    def environment_count(self) -> int:
        return sum(p.size for p in [*self._pools.values(), *self._draining])

    async def close(self) -> None:
        """Stop every environment and wait until they are gone."""
        if self._reaper is not None:
            self._reaper.cancel()
        for key in list(self._pools):
            self._retire(key)
        await self.debug_sessions.close_all()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.snapshots.close()
        await self._logs.close()

    # -- internals -----------------------------------------------------------------

    def _context(self, config: FunctionConfig) -> EnvironmentContext:
        container = config.serving_image
        if container is not None:
            return self._image_context(config, container)
        runtime = self._runtimes.get(config.runtime)
        if runtime is None:
            # control/ accepted it, so the host lost it since (an interpreter uninstalled).
            raise InvalidRuntimeError(
                f"The runtime {config.runtime} is not available on this host (available: "
                f"{', '.join(self._runtimes.names()) or 'none'})."
            )
        self.check_startable(config)
        task_root = self._task_root(config.code_sha256)
        layered = self._opt_dir is not None and bool(config.layers)
        if self._opt_dir is not None:
            opt_dir = self._opt_dir(config)
        else:
            opt_dir = self._settings.data_dir / "opt" / "empty"
        image = self._images.image_dir(runtime) if self._images is not None else None
        if self._backend.lambda_paths:
            seen = (LAMBDA_TASK_ROOT, LAMBDA_RUNTIME_DIR)
            opt_seen = LAMBDA_OPT
            lang_seen = LAMBDA_LANG if image is not None else None
        else:
            seen = (task_root, runtime.runtime_dir)
            opt_seen = opt_dir
            lang_seen = image
        argv = runtime.command(task_root, seen)
        in_zygote = runtime.family is Family.PYTHON
        wrapper = config.environment.get("AWS_LAMBDA_EXEC_WRAPPER")
        if wrapper and runtime.family in (Family.PYTHON, Family.NODE):
            # Lambda starts a managed runtime as `wrapper <runtime command...>`. The wrapper
            # must exec a fresh interpreter, so the zygote's in-process fast path is off.
            argv = [wrapper_path(wrapper, self._backend.lambda_paths, task_root, opt_dir), *argv]
            in_zygote = False
        return EnvironmentContext(
            config=config,
            argv=tuple(argv),
            task_root=task_root,
            runtime_dir=runtime.runtime_dir,
            base_env=snap_start_env(
                config,
                lambda_environment(
                    config, self._settings, runtime, seen[0], opt_seen, seen[1], lang_seen
                )
                | self._otel_env(config),
            ),
            lang_dir=image,
            image_ready=partial(self._image_ready, runtime) if image is not None else None,
            code_ready=partial(self.code_ready, config) if self.code_ready else None,
            credentials=partial(self._credentials, config) if self._credentials else None,
            backend=self._backend,
            metrics=self._metrics,
            logs=self._logs,
            bill_init=runtime.family is Family.PROVIDED,
            opt_dir=opt_dir if layered else None,
            interpreter=runtime.executable,
            python_in_zygote=in_zygote,
            network=config.network_enabled,
            vpc=self._vpc(config),
            prepare_runtime=runtime.prepare,
            account_id=self._settings.account_id,
        )

    def _otel_env(self, config: FunctionConfig) -> dict[str, str]:
        if self.tracing is None:
            return {}
        return self.tracing.function_env(config, self._settings.endpoint_url)

    def _debug_context(self, config: FunctionConfig, spec: DebugSpec) -> EnvironmentContext:
        return self._with_debugger(self._context(config), spec)

    def _with_debugger(self, ctx: EnvironmentContext, spec: DebugSpec) -> EnvironmentContext:
        return with_debugger(
            ctx,
            spec,
            self._runtimes.get(ctx.config.runtime),
            self._backend.lambda_paths,
            self._debuggers,
        )

    def _image_context(self, config: FunctionConfig, image: FunctionImage) -> EnvironmentContext:
        """An image function's environments: its image's root as `/`, its entry point run."""
        root = root_of(self.image_roots, image)
        return EnvironmentContext(
            config=config,
            argv=image.argv,
            task_root=root,
            runtime_dir=root,
            base_env=image_environment(config, self._settings, image) | self._otel_env(config),
            credentials=partial(self._credentials, config) if self._credentials else None,
            backend=self._backend,
            metrics=self._metrics,
            logs=self._logs,
            # Lambda bills a container image's init phase, as a custom runtime's.
            bill_init=True,
            network=config.network_enabled,
            vpc=self._vpc(config),
            account_id=self._settings.account_id,
            # As on Lambda, the image's own /opt/extensions start before its entry point.
            opt_dir=root / "opt",
            image_root=root,
            working_dir=image.working_dir,
        )

    def _vpc(self, config: FunctionConfig) -> str | None:
        """The VPC of the function's subnets, which must still be one of this server's (the
        operator may have restarted it without them): otherwise no environment starts, as
        Lambda starts none it cannot give its VPC access."""
        if config.vpc is None or not config.vpc.subnet_ids:
            return None
        for subnet in config.vpc.subnet_ids:
            vpc = self._vpcs.vpc_of(subnet)
            if vpc is None or vpc.id != config.vpc.vpc_id:
                raise InvalidSubnetIDError(
                    f"The subnet ID '{subnet}' of the function's VpcConfig is not a subnet of "
                    f"{config.vpc.vpc_id} on this server (lamina serve --vpc): Lamina cannot "
                    "set up the function's VPC access."
                )
        return config.vpc.vpc_id

    async def _image_ready(self, runtime: RuntimeInfo) -> None:
        """Before a cold start: give an install of the runtime's SDK under way some time."""
        if self._images is not None:
            await self._images.wait(runtime, SDK_WAIT_S)

    def _retire(self, key: tuple[str, str]) -> None:
        pool = self._pools.pop(key)
        self._draining.add(pool)
        pool.retire()

    def _pool_drained(self, pool: Pool) -> None:
        if pool in self._draining:
            self._draining.discard(pool)
            if self._on_code_released is not None:
                self._background(self._on_code_released(pool.config.code_sha256))

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _reap_forever(self) -> None:
        keep_alive = self._settings.idle_timeout_s
        interval = max(min(keep_alive / 4, 30.0), 0.05)
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - keep_alive
            for pool in list(self._pools.values()):
                pool.reap(cutoff)


def wrapper_path(wrapper: str, lambda_paths: bool, task_root: Path, opt_dir: Path) -> str:
    """AWS_LAMBDA_EXEC_WRAPPER's script as the runtime sees it: a backend without Lambda's
    paths shows /var/task and /opt at their places on the host."""
    if lambda_paths:
        return wrapper
    for seen, host in ((LAMBDA_OPT, opt_dir), (LAMBDA_TASK_ROOT, task_root)):
        if wrapper.startswith(f"{seen}/"):
            return str(host / wrapper.removeprefix(f"{seen}/"))
    return wrapper
