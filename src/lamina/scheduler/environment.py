"""One execution environment: a sandbox, its Runtime API, and its lifecycle.

States go STARTING → IDLE ⇄ BUSY → DEAD, and only through `_move()`, which rejects anything
else. An environment runs one invocation at a time. It dies when its runtime exits, when an
invocation times out (the sandbox is killed, as Lambda does), or when its owner destroys it.

Extensions (see `runtime_api/extensions.py`) stretch the lifecycle as on Lambda: the
executables of the layers' `/opt/extensions/` start before the runtime, which waits until
they have registered; the caller gets the runtime's answer at once, but the environment stays
BUSY (and its REPORT unwritten) until every extension that took the INVOKE is back in
`/event/next`, and that time is billed. When the environment ends, extensions subscribed to
SHUTDOWN get it, then the runtime SIGTERM, all within Lambda's Shutdown budget
(`SHUTDOWN_EXTERNAL_S`, or `SHUTDOWN_INTERNAL_S` with internal extensions only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lamina import limits
from lamina.errors import LaminaError, SnapStartError, SnapStartTimeoutError
from lamina.models import InvokeRequest, InvokeResult
from lamina.observability import Report
from lamina.runtime_api import Invocation, RuntimeApiServer, RuntimeOutcome
from lamina.runtime_api.extensions import SHUTDOWN_EXTERNAL_S, SHUTDOWN_INTERNAL_S, Extension
from lamina.sandbox import SafeSandbox, SandboxError, SandboxSpec, Template
from lamina.scheduler.debugging import DebugRelay, open_relay
from lamina.scheduler.lifecycle import (
    ALLOWED,
    EnvironmentContext,
    EnvState,
    IllegalTransition,
    InitFailed,
    NotDelivered,
    Outcome,
    describe_exit,
    error_payload,
    list_extensions,
)

__all__ = [
    "EnvState",
    "Environment",
    "EnvironmentContext",
    "IllegalTransition",
    "InitFailed",
    "NotDelivered",
    "Outcome",
    "list_extensions",
]

log = logging.getLogger(__name__)


# Errors of the platform rather than of the function's code: REPORT says "Status: error".
_PLATFORM_ERRORS = frozenset(
    {"Runtime.ExitError", "Runtime.OutOfMemory", "Function.ResponseSizeTooLarge"}
)


#: Lambda's messages (botocore's model) for a restore that failed
HOOK_FAILED = (
    "The afterRestore() runtime hook encountered an error. For more information, check the "
    "Amazon CloudWatch logs."
)
RESTORE_TIMED_OUT = "Lambda couldn't restore the snapshot within the timeout limit."

_NOT_DELIVERED = "Lamina.NotDelivered"
_TIMED_OUT = "Sandbox.Timedout"
#: how often a shutting-down environment looks whether its extensions are done
_SHUTDOWN_POLL_S = 0.01
#: how long an environment whose runtime waits for work stays unfrozen: one invoked again
#: within it (a busy function) never pays for a freeze and a thaw on its warm path, and a
#: handler's leftovers get at most this much more time than on Lambda
FREEZE_AFTER_S = 0.01


def _status(outcome: RuntimeOutcome) -> str:
    """The Telemetry API's status of an invocation."""
    if outcome.ok:
        return "success"
    if outcome.error_type == _TIMED_OUT:
        return "timeout"
    if outcome.error_type in _PLATFORM_ERRORS:
        return "failure"
    return "error"


class Environment:
    """One execution environment. `on_gone(env)` runs once, after it is fully torn down.

    SnapStart (see `scheduler.snapshots`): `snapshot` makes the environment a version's
    template: its init runs (logs, telemetry, errors as any init) and `start()` returns once
    the runtime is at its snapshot point, with `template` set; it never takes invocations.
    `template` given restores the environment from it instead of making a sandbox: its
    runtime skips init, and the time until it asks for work is its Restore Duration."""

    def __init__(
        self,
        ctx: EnvironmentContext,
        on_gone: Callable[[Environment], None] | None = None,
        *,
        template: Template | None = None,
        snapshot: bool = False,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ctx = ctx
        #: the template this environment is restored from (None: an ordinary start)
        self.restored_from = template
        self._snapshot = snapshot
        #: a template environment's template, once its runtime is at its snapshot point
        self.template: Template | None = None
        self._restore_failure: LaminaError | None = None
        #: a restored environment's start (perf_counter), until its RESTORE_REPORT
        self._restore_t0: float | None = None
        self._on_gone = on_gone
        self.state = EnvState.STARTING
        self.last_used = time.monotonic()
        #: MB of the node's memory capacity this environment holds: its MemorySize, or
        #: while idle what it really holds (see `scheduler.capacity`); its pool keeps it
        self.charged_mb = ctx.config.memory_size
        created = datetime.now(UTC)
        self.log_stream = f"{created:%Y/%m/%d}/[{ctx.config.version}]{self.id}"
        self._loop = asyncio.get_running_loop()
        config = ctx.config
        self._api = RuntimeApiServer(
            on_ready=self._on_ready,
            on_init_error=self._on_init_error,
            function_info={
                "functionName": config.name,
                "functionVersion": config.version,
                "handler": config.handler,
                "accountId": ctx.account_id,
            },
            on_settled=self._on_settled,
            on_extension=self._on_extension,
            on_parked=self._on_parked,
        )
        self._telemetry = self._api.telemetry
        if template is not None:
            self._api.restoring = True
            self._api.on_restore_error = self._on_restore_error
        #: released when the runtime may start: every external extension registered
        self._gate: asyncio.Future[None] | None = None
        #: set while the extensions finish an invocation the runtime has answered
        self._settling: asyncio.Future[None] | None = None
        #: done once an invocation the extensions held is over (the environment is IDLE
        #: again, or DEAD): when its owner may take it back
        self.finishing: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[bytes | None]] = set()
        self._runtime_exited = False
        self._extensions_gone = False
        self._ext_output: int | None = None
        self._shutdown_reason = "spindown"
        self._sandbox: SafeSandbox | None = None
        # None once the runtime is ready; an error payload if it failed first.
        self._ready: asyncio.Future[bytes | None] = self._loop.create_future()
        self._destroying: asyncio.Task[None] | None = None
        self._log = ctx.logs.log(
            ctx.config.log_group,
            self.log_stream,
            ctx.config.logging,
            ctx.config.name,
        )
        # Reported once, on the REPORT line of the invocation that waited for the init.
        self._unreported_init_ms: float | None = None
        self._freeze_timer: asyncio.TimerHandle | None = None
        self._first: InvokeRequest | None = None
        self._ready_at = 0.0
        #: how long the start took (the init phase included), once it has succeeded
        self.init_duration_s: float | None = None
        #: perf_counter() readings of a successful start: begun, sandbox made, runtime
        #: started, init done (a trace's cold-start spans)
        self.start_phases: tuple[float, float, float, float] | None = None
        #: how the last invocation ended (read by the pool, which counts it)
        self.outcome_kind = Outcome.SUCCESS
        #: the relay from the host's loopback to the debugger (debug mode only)
        self.debug_relay: DebugRelay | None = None
        #: the relay's port once it listens (debug mode only)
        self.debug_port: asyncio.Future[int] = self._loop.create_future()
        ctx.metrics.environments_in(EnvState.STARTING.value).inc()

    def prewarmed(self) -> None:
        """Started ahead of need (provisioned concurrency): its init phase belongs to no
        invocation, so no REPORT line carries its Init Duration (as on Lambda)."""
        self._unreported_init_ms = None

    @property
    def pid(self) -> int | None:
        """The runtime's process id on the host, once it has one."""
        return self._sandbox.pid if self._sandbox is not None else None

    def memory_usage_mb(self) -> int | None:
        """What the environment holds in memory now (MB), if its sandbox can tell."""
        return self._sandbox.memory_usage_mb() if self._sandbox is not None else None

    def _move(self, new: EnvState) -> None:
        if new not in ALLOWED[self.state]:
            raise IllegalTransition(f"environment {self.id}: {self.state.name} -> {new.name}")
        metrics = self.ctx.metrics
        metrics.environments_in(self.state.value).dec()
        metrics.environments_in(new.value).inc()
        self.state = new

    # -- start ---------------------------------------------------------------------

    async def start(
        self, first: tuple[InvokeRequest, asyncio.Future[RuntimeOutcome]] | None = None
    ) -> None:
        """Start the runtime and wait for its init phase. Raises `InitFailed`.

        `first`: an invocation to hand the runtime as the answer to its first /next (see
        `start_and_invoke`).
        """
        ctx = self.ctx
        runtime = ctx.config.runtime
        phase = ctx.metrics.cold_start_phase
        if ctx.prepare_runtime is not None:
            # Before the clock starts: building the runtime is not the function's init.
            try:
                await self._loop.run_in_executor(None, ctx.prepare_runtime)
            except Exception as e:
                await self.destroy()
                log.error("runtime %s could not be prepared: %s", runtime, e)
                raise InitFailed(
                    error_payload(
                        "Runtime.Unknown", f"Lamina could not prepare the {runtime} runtime: {e}"
                    )
                ) from e
        if ctx.image_ready is not None:
            # Before the clock starts: an SDK being installed is no part of the init phase.
            await ctx.image_ready()
        if ctx.debugger_ready is not None:
            try:
                await ctx.debugger_ready()
            except Exception as e:
                await self.destroy()
                raise InitFailed(
                    error_payload("Runtime.Unknown", f"Lamina could not install the debugger: {e}")
                ) from e
        if ctx.code_ready is not None:
            # Before the clock starts too: fetching code from the cluster is not init.
            try:
                await ctx.code_ready()
            except Exception as e:
                await self.destroy()
                log.error("the code of %s could not be fetched: %s", ctx.config.name, e)
                raise InitFailed(
                    error_payload(
                        "Runtime.Unknown", f"Lamina could not fetch the function's code: {e}"
                    )
                ) from e
        t0 = time.perf_counter()
        extensions: tuple[str, ...] = ()
        ext_output: int | None = None
        if self.restored_from is not None:
            self._telemetry.restore_start(
                ctx.config.name, ctx.config.version, self.id, ctx.config.memory_size
            )
        else:
            self._telemetry.init_start(
                ctx.config.name, ctx.config.version, self.id, ctx.config.memory_size, self._kind
            )
        self._log.listener = self._line
        if self.restored_from is not None:
            self._log.restore_start(ctx.config.runtime)
            self._restore_t0 = t0
        try:
            if ctx.opt_dir is not None:
                names = await self._loop.run_in_executor(None, list_extensions, ctx.opt_dir)
                if names:
                    seen = Path("/opt") if ctx.backend.lambda_paths else ctx.opt_dir
                    extensions = tuple(str(seen / "extensions" / n) for n in names)
                    self._api.extensions.expected = frozenset(names)
                    self._gate = self._loop.create_future()
                    ext_output = self._log.pipe("extension", on_eof=self._on_extensions_gone)
                    self._ext_output = ext_output
            output = self._log.pipe()
            spec = SandboxSpec(
                sandbox_id=self.id,
                argv=ctx.argv,
                task_root=ctx.task_root,
                runtime_dir=ctx.runtime_dir,
                memory_mb=ctx.config.memory_size,
                ephemeral_storage_mb=ctx.config.ephemeral_storage,
                output_fd=output,
                opt_dir=ctx.opt_dir,
                lang_dir=ctx.lang_dir,
                interpreter=ctx.interpreter,
                python_in_zygote=ctx.python_in_zygote,
                network=ctx.network,
                vpc=ctx.vpc,
                extensions=extensions,
                extension_output_fd=ext_output,
                image_root=ctx.image_root,
                working_dir=ctx.working_dir,
                snapshot=self._snapshot,
            )
            if self.restored_from is not None:
                self._sandbox = SafeSandbox(self.restored_from.restore(spec))
            else:
                self._sandbox = SafeSandbox(ctx.backend.create(spec))
            self._telemetry.connect = self._sandbox.connect
            try:
                endpoint = await self._sandbox.prepare()
                t1 = time.perf_counter()
                env = dict(ctx.base_env)
                env["AWS_LAMBDA_RUNTIME_API"] = endpoint.address
                if not (self._snapshot or self.restored_from is not None):
                    # (not in SnapStart environments, as on Lambda: see `snap_start_env`)
                    env["AWS_LAMBDA_LOG_STREAM_NAME"] = self.log_stream
                if ctx.credentials is not None:
                    key_id, secret, token = ctx.credentials()
                    env["AWS_ACCESS_KEY_ID"] = key_id
                    env["AWS_SECRET_ACCESS_KEY"] = secret
                    env["AWS_SESSION_TOKEN"] = token
                # The function's own variables come last: Lambda lets them override all but
                # the reserved keys, which control/ has already refused.
                env.update(ctx.config.environment)
                if ctx.debugger is not None:
                    await self._open_debugger(env)
                if first is not None:
                    # Queued before the Runtime API is served, delivered the moment the
                    # runtime asks for work: no hop through this task between the end of
                    # the init phase and the invocation.
                    self._first = first[0]
                    self._api.submit(self._invocation(first[0], first[1]))
                gate_timer = None
                if self._gate is not None:
                    # Extensions that never register hold the runtime back no longer than the
                    # init phase may last; the init phase then fails as timed out.
                    gate_timer = self._loop.call_later(limits.INIT_TIMEOUT_S, self._open_gate)
                # Launch first, then serve the Runtime API while the runtime starts up: its
                # listening socket holds the runtime's connection until then.
                try:
                    started = self._extensions_started if self._gate is not None else None
                    await asyncio.gather(
                        self._sandbox.start(env, started), self._api.start(endpoint.sock)
                    )
                finally:
                    if gate_timer is not None:
                        gate_timer.cancel()
            finally:
                os.close(output)  # the runtime holds its own copy now
                self._close_extension_output()
            self._sandbox.on_exit(self._on_exit)
            if self._snapshot:
                task = self._loop.create_task(self._snapshotted())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            t3 = time.perf_counter()
            phase.labels("sandbox", runtime).observe(t1 - t0)
            phase.labels("start", runtime).observe(t3 - t1)
        except (SandboxError, OSError) as e:
            await self.destroy()
            cause = e.__cause__ if isinstance(e, SandboxError) else e
            if isinstance(cause, OSError) and cause.filename == ctx.argv[0]:
                # The runtime's entry point is missing, not executable or not a program: for
                # a custom runtime that is the function's own `bootstrap`.
                raise InitFailed(
                    error_payload(
                        "Runtime.InvalidEntrypoint",
                        f"Error: Couldn't find valid bootstrap(s): [{ctx.argv[0]}] "
                        f"({cause.strerror})",
                    )
                ) from e
            log.error("environment %s failed to start: %s", self.id, e)
            raise InitFailed(error_payload("Runtime.Unknown", f"Environment failed: {e}")) from e
        budget = self._phase_timeout
        try:
            left = budget - (time.perf_counter() - t1)
            if ctx.debugger is not None:
                left = float("inf")  # the init phase may wait for a debugger client
            failure = await asyncio.wait_for(asyncio.shield(self._ready), max(left, 0.001))
        except TimeoutError:
            phase_name = "Restore" if self.restored_from is not None else "Init"
            failure = error_payload(
                "Sandbox.Timedout",
                f"Error: {phase_name} phase timed out after {budget:.2f} seconds",
            )
            if self.restored_from is not None:
                self._restore_failure = SnapStartTimeoutError(RESTORE_TIMED_OUT)
        except asyncio.CancelledError:
            await self.destroy()
            raise
        if failure is not None:
            self._init_telemetry("failure", (time.perf_counter() - t0) * 1000, failure)
            self._api.take_current()
            self._runtime_exited = True  # a failed init gets no SHUTDOWN
            await self.destroy()
            raise InitFailed(failure, self._restore_failure)
        t4 = time.perf_counter()
        self._init_telemetry("success", (t4 - t0) * 1000, None)
        phase.labels("init", runtime).observe(t4 - t3)
        if self._sandbox is not None:
            # Once the first invocation is on its way (the caller submits it before yielding).
            self._loop.call_soon(self._sandbox.init_done)
        self.init_duration_s = t4 - t0
        self.start_phases = (t0, t1, t3, t4)
        self._unreported_init_ms = (t4 - t0) * 1000
        if self.state is EnvState.DEAD:
            # The runtime exited between its first /next and this task's wake-up (a first
            # invocation's handler that ends the process, on a busy loop): `_on_exit` has
            # settled that invocation already; without one, the start failed.
            if first is None:
                raise InitFailed(error_payload("Runtime.ExitError", "Error: Runtime exited"))
            return
        self._move(EnvState.IDLE)

    @property
    def _kind(self) -> str:
        """The Telemetry API's initializationType of this environment's init."""
        if self._snapshot or self.restored_from is not None:
            return "snap-start"
        return self.ctx.base_env.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")

    @property
    def _phase_timeout(self) -> float:
        if self.restored_from is not None:
            return limits.RESTORE_TIMEOUT_S
        if self._snapshot:
            return limits.SNAPSHOT_INIT_TIMEOUT_S
        return limits.INIT_TIMEOUT_S

    async def _snapshotted(self) -> None:
        """A template's runtime reached its snapshot point: its init is over."""
        assert self._sandbox is not None
        try:
            self.template = await self._sandbox.snapshotted()
        except SandboxError as e:
            if not self._ready.done():  # the exit callback says why, if it came first
                self._ready.set_result(error_payload("Runtime.ExitError", f"Error: {e}"))
            return
        if not self._ready.done():
            self._ready.set_result(None)

    def detach_template(self) -> Template:
        """A template environment whose start succeeded: hand its template over (the
        template owns its runtime now) and close the rest (Runtime API, log)."""
        template = self.template
        assert template is not None and self._snapshot
        self._sandbox = None  # `Template.destroy` is what kills it
        self._runtime_exited = True
        self._die()
        return template

    def _on_restore_error(self, body: bytes, error_type: str | None) -> None:
        """An after-restore hook failed (`/restore/error`): the invocation that waited for
        this environment gets SnapStartException; the runtime exits."""
        self._restore_failure = SnapStartError(HOOK_FAILED)
        if not self._ready.done():
            self._ready.set_result(body or error_payload(error_type or "Runtime.Unknown", ""))

    async def _open_debugger(self, env: dict[str, str]) -> None:
        assert self.ctx.debugger is not None and self._sandbox is not None
        self.debug_relay = await open_relay(self.ctx.debugger, self._sandbox.connect, env)
        self.debug_port.set_result(self.debug_relay.port)
        log.info(
            "environment %s of %s: debugger (%s) listening on 127.0.0.1:%d",
            self.id,
            self.ctx.config.name,
            self.ctx.debugger.kind,
            self.debug_relay.port,
        )

    async def _extensions_started(self) -> None:
        # Only the extensions hold their pipe from now on: its end of file is their exit.
        self._close_extension_output()
        assert self._gate is not None
        await self._gate

    def _close_extension_output(self) -> None:
        if self._ext_output is not None:
            os.close(self._ext_output)
            self._ext_output = None

    def _open_gate(self) -> None:
        if self._gate is not None and not self._gate.done():
            self._gate.set_result(None)

    def _on_extension(self, ext: Extension) -> None:
        self._telemetry.extension(ext.name, ext.events)
        extensions = self._api.extensions
        if extensions.expected <= {e.name for e in extensions.by_id.values() if e.external}:
            self._open_gate()

    def _on_extensions_gone(self) -> None:
        """Every external extension has exited (their output pipe's end of file)."""
        self._extensions_gone = True
        if not self._ready.done():
            # Before the init phase ended: it cannot end any more (Lambda's Extension.Crash).
            self._on_init_error(
                error_payload("Extension.Crash", "An extension exited before the init phase ended"),
                "Extension.Crash",
            )
        self._api.extensions.external_gone()

    def _line(self, category: str, stamp_ms: int, text: str) -> None:
        record: object = text
        if self.ctx.config.logging.json and text.startswith("{"):
            # In JSON log format a line that is a JSON object is sent as that object.
            with contextlib.suppress(ValueError):
                record = json.loads(text)
        self._telemetry.line(category, stamp_ms, record)

    def _init_telemetry(self, status: str, duration_ms: float, failure: bytes | None) -> None:
        error_type = None
        if failure is not None:
            with contextlib.suppress(ValueError, AttributeError):
                found = json.loads(failure).get("errorType")
                error_type = found if isinstance(found, str) else None
        if self.restored_from is not None:
            self._telemetry.restore_done(status, duration_ms, error_type)
        else:
            self._telemetry.init_done(status, duration_ms, error_type, self._kind)
        if not self._telemetry.wants_lines:
            self._log.listener = None  # nobody takes log lines: none of their cost

    def _on_ready(self) -> None:
        # Called as the runtime's first /next arrives, before a queued first invocation is
        # written to it: its START line goes after the init phase's output.
        self._ready_at = time.perf_counter()
        if self._restore_t0 is not None:
            self._log.restore_report((self._ready_at - self._restore_t0) * 1000)
            self._restore_t0 = None
        first, self._first = self._first, None
        if first is not None:
            self._log.start(first.request_id, self.ctx.config.version, capture=first.log_tail)
            if self._telemetry.active:
                self._telemetry.invoke_start(
                    first.request_id, self.ctx.config.version, first.trace_id
                )
        if not self._ready.done():
            self._ready.set_result(None)

    def _on_parked(self) -> None:
        # The runtime waits in /next with nothing to do: freeze the whole environment, as
        # Lambda does between invocations (and after an init that no invocation waits for),
        # so that threads and processes a handler left behind make no progress while idle.
        # Its request to /next is already sent; `invoke` thaws before answering it.
        if self._sandbox is not None:
            if self._freeze_timer is not None:
                self._freeze_timer.cancel()
            self._freeze_timer = self._loop.call_later(FREEZE_AFTER_S, self._freeze)

    def _freeze(self) -> None:
        self._freeze_timer = None
        if self._sandbox is None or self.state is EnvState.DEAD:
            return
        if self.ctx.debugger is not None:
            return  # a frozen debugger would drop its client between invocations
        if self._api.extensions.by_id and (self._api.extensions_busy or self._telemetry.active):
            # Lambda freezes only once every extension is back in /event/next (`_on_settled`
            # tries again then); and Lamina delivers telemetry into the sandbox over HTTP,
            # which a frozen listener would never answer: with a subscription, no freezing.
            return
        self._sandbox.freeze()

    def _on_init_error(self, body: bytes, error_type: str | None) -> None:
        self._open_gate()
        if not self._ready.done():
            self._ready.set_result(body or error_payload(error_type or "Runtime.Unknown", ""))

    def _on_exit(self, status: int) -> None:
        message = f"Runtime exited with error: {describe_exit(status)}"
        oom = self._sandbox is not None and self._sandbox.out_of_memory
        kind = "Runtime.OutOfMemory" if oom else "Runtime.ExitError"
        self._runtime_exited = True
        if not self._ready.done():
            self._ready.set_result(error_payload(kind, f"Error: {message}"))
        inv, delivered = self._api.take_current()
        if inv is not None and not inv.future.done():
            # An invocation the runtime never picked up was handed to an environment already
            # on its way out (a runtime may exit just after answering, as Node's does after
            # an uncaught error): the pool runs it elsewhere.
            inv.future.set_result(
                RuntimeOutcome(
                    ok=False,
                    body=error_payload(kind, f"RequestId: {inv.request_id} Error: {message}"),
                    error_type=kind if delivered else _NOT_DELIVERED,
                )
            )
        self._die()

    # -- invoke --------------------------------------------------------------------

    async def start_and_invoke(self, request: InvokeRequest) -> InvokeResult:
        """A cold start: start the environment with `request` queued as the runtime's first
        invocation. Raises `InitFailed` (the request did not run) or `NotDelivered`."""
        future: asyncio.Future[RuntimeOutcome] = self._loop.create_future()
        await self.start(first=(request, future))
        if self.state is EnvState.IDLE:
            self._move(EnvState.BUSY)
        init_ms, self._unreported_init_ms = self._unreported_init_ms, None
        return await self._outcome(request, future, self._ready_at, init_ms)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Run one invocation. A function failure is a result; the environment may die."""
        self._move(EnvState.BUSY)
        init_ms, self._unreported_init_ms = self._unreported_init_ms, None
        self._log.start(request.request_id, self.ctx.config.version, capture=request.log_tail)
        if self._telemetry.active:
            self._telemetry.invoke_start(
                request.request_id, self.ctx.config.version, request.trace_id
            )
        started = time.perf_counter()
        future: asyncio.Future[RuntimeOutcome] = self._loop.create_future()
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        if self._sandbox is not None:
            self._sandbox.thaw()
        self._api.submit(self._invocation(request, future))
        return await self._outcome(request, future, started, init_ms)

    def _invocation(
        self, request: InvokeRequest, future: asyncio.Future[RuntimeOutcome]
    ) -> Invocation:
        return Invocation(
            request_id=request.request_id,
            payload=request.payload,
            timeout_ms=self.ctx.config.timeout * 1000,
            invoked_arn=request.invoked_arn,
            future=future,
            trace_id=request.trace_id,
            client_context=request.client_context,
            tenant_id=request.tenant_id,
            stream=request.stream,
        )

    async def _outcome(
        self,
        request: InvokeRequest,
        future: asyncio.Future[RuntimeOutcome],
        started: float,
        init_ms: float | None,
    ) -> InvokeResult:
        """Wait for the runtime's answer to an invocation delivered at `started`."""
        config = self.ctx.config
        timeout = config.timeout - (time.perf_counter() - started)
        if self.ctx.debugger is not None:
            # Under a debugger a handler stopped at a breakpoint must not be killed: the
            # deadline is not enforced (the context still reports the configured timeout).
            timeout = float("inf")
        timer = self._loop.call_later(timeout, self._on_timeout, future, request.request_id)
        try:
            outcome = await future
        except BaseException:
            # Cancelled (the server is stopping): the runtime may be mid-invocation.
            self._die()
            raise
        finally:
            timer.cancel()
        if outcome.error_type == _NOT_DELIVERED:
            raise NotDelivered()
        if outcome.ok:
            self.outcome_kind = Outcome.SUCCESS
        elif outcome.error_type == _TIMED_OUT:
            self.outcome_kind = Outcome.TIMEOUT
        elif outcome.error_type in _PLATFORM_ERRORS:
            self.outcome_kind = Outcome.PLATFORM_ERROR
        else:
            self.outcome_kind = Outcome.FUNCTION_ERROR
        duration_ms = (time.perf_counter() - started) * 1000
        if self._telemetry.active:
            status = _status(outcome)
            self._telemetry.runtime_done(
                request.request_id,
                status,
                duration_ms,
                len(outcome.body),
                outcome.error_type if status != "success" else None,
            )
        if self._api.extensions_busy and self.state is EnvState.BUSY:
            # The caller gets the answer now; the environment is done when the extensions
            # that took this INVOKE are, and its REPORT counts (and bills) their time.
            self._settling = self._loop.create_future()
            self.finishing = self._loop.create_future()
            remaining = config.timeout - (time.perf_counter() - started)
            if self.ctx.debugger is not None:
                remaining = float("inf")  # no deadline in debug mode (see `_outcome`)
            finishing = self._after_extensions(request, started, init_ms, outcome, remaining)
            tail = None
            if request.log_tail:
                tail = await finishing  # the tail ends with the REPORT line
            else:
                task = self._loop.create_task(finishing)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return InvokeResult(
                payload=outcome.body,
                executed_version=config.version,
                function_error=None if outcome.ok else "Unhandled",
                error_type=outcome.error_type,
                duration_ms=duration_ms,
                init_duration_ms=init_ms,
                log_tail=tail,
            )
        if self.state is EnvState.BUSY:
            self._move(EnvState.IDLE)
            self.last_used = time.monotonic()
        tail = None
        if request.log_tail:
            tail = self._report(request.request_id, duration_ms, init_ms, outcome)
        else:
            # After the caller's answer has gone out (this task writes it before yielding).
            self._loop.call_soon(self._report, request.request_id, duration_ms, init_ms, outcome)
        return InvokeResult(
            payload=outcome.body,
            executed_version=config.version,
            function_error=None if outcome.ok else "Unhandled",
            error_type=outcome.error_type,
            duration_ms=duration_ms,
            init_duration_ms=init_ms,
            log_tail=tail,
        )

    async def _after_extensions(
        self,
        request: InvokeRequest,
        started: float,
        init_ms: float | None,
        outcome: RuntimeOutcome,
        remaining_s: float,
    ) -> bytes | None:
        """Wait for the extensions to finish the invocation (within its timeout), then
        free the environment and write the REPORT; returns the log tail if captured."""
        settling, finishing = self._settling, self.finishing
        assert settling is not None and finishing is not None
        try:
            try:
                await asyncio.wait_for(asyncio.shield(settling), max(remaining_s, 0.001))
            except TimeoutError:
                # Extensions past the function's timeout: the invocation timed out, as on
                # Lambda, and the environment is reset.
                outcome = RuntimeOutcome(ok=outcome.ok, body=outcome.body, error_type=_TIMED_OUT)
                self._shutdown_reason = "timeout"
                self._die()
            duration_ms = (time.perf_counter() - started) * 1000
            if self.state is EnvState.BUSY:
                self._move(EnvState.IDLE)
                self.last_used = time.monotonic()
            return self._report(request.request_id, duration_ms, init_ms, outcome)
        finally:
            self._settling = None
            if not finishing.done():
                finishing.set_result(None)

    def _on_settled(self) -> None:
        settling = self._settling
        if settling is not None and not settling.done():
            settling.set_result(None)
        self._on_parked()  # the extensions are idle now: the environment may freeze

    def _report(
        self, request_id: str, duration_ms: float, init_ms: float | None, outcome: RuntimeOutcome
    ) -> bytes | None:
        """Append END and REPORT (and Lambda's timeout line) for one invocation; returns the
        invocation's log tail if it was captured."""
        timed_out = outcome.error_type == _TIMED_OUT
        failed = not outcome.ok and outcome.error_type in _PLATFORM_ERRORS
        note = None
        if timed_out:
            now = datetime.now(UTC)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
            note = (
                f"{stamp} {request_id} Task timed out after {self.ctx.config.timeout:.2f} seconds"
            )
        restored = self.restored_from is not None
        report = Report(
            request_id=request_id,
            duration_ms=duration_ms,
            memory_size_mb=self.ctx.config.memory_size,
            max_memory_used_mb=self._sandbox.memory_peak_mb() if self._sandbox else 0,
            # a restored environment's first REPORT has its Restore Duration, no Init one
            init_duration_ms=None if restored else init_ms,
            restore_duration_ms=init_ms if restored else None,
            bill_init=self.ctx.bill_init,
            status="timeout" if timed_out else "error" if failed else None,
            error_type=outcome.error_type if failed and not timed_out else None,
            function_name=self.ctx.config.name,
            version=self.ctx.config.version,
        )
        tail = self._log.finish(report, note)
        if self._telemetry.active:
            self._telemetry.report(request_id, report.record())
        return tail

    def _on_timeout(self, future: asyncio.Future[RuntimeOutcome], request_id: str) -> None:
        if future.done():
            return
        self._api.take_current()  # whether picked up or not, its time is over
        future.set_result(
            RuntimeOutcome(
                ok=False,
                body=error_payload(
                    "Sandbox.Timedout",
                    f"RequestId: {request_id} Error: Task timed out after "
                    f"{self.ctx.config.timeout:.2f} seconds",
                ),
                error_type="Sandbox.Timedout",
            )
        )
        self._shutdown_reason = "timeout"
        self._die()

    # -- death ---------------------------------------------------------------------

    async def _shutdown_extensions(self) -> None:
        """Lambda's Shutdown phase, for an environment with extensions: SHUTDOWN to the
        external ones subscribed to it, until they are done (back in /event/next, or
        exited), then SIGTERM to the runtime until it exits; all within the phase's budget.

        Lambda signals the runtime and the extensions at once; here the runtime comes last
        because a namespace sandbox ends with its runtime, extensions included.
        """
        extensions = self._api.extensions
        if not extensions.by_id:
            return
        external = extensions.any_external and not self._extensions_gone
        end = time.monotonic() + (SHUTDOWN_EXTERNAL_S if external else SHUTDOWN_INTERNAL_S)
        targets = extensions.shutdown_subscribers() if external else []
        if targets:
            # What is buffered for them goes first, so the last REPORT reaches them.
            await self._telemetry.drain(SHUTDOWN_EXTERNAL_S / 4)
            deadline_ms = int(time.time() * 1000 + (end - time.monotonic()) * 1000)
            targets = self._api.shutdown(self._shutdown_reason, deadline_ms)
            while time.monotonic() < end and not self._extensions_gone:
                if all(t.done for t in targets):
                    break
                await asyncio.sleep(_SHUTDOWN_POLL_S)
        if self._sandbox is None or self._runtime_exited:
            return
        exited: asyncio.Future[None] = self._loop.create_future()

        def on_exit(_status: int) -> None:
            if not exited.done():
                exited.set_result(None)

        self._sandbox.on_exit(on_exit)
        self._sandbox.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited, max(end - time.monotonic(), 0.001))

    def _die(self) -> None:
        """Mark dead now and tear down in the background."""
        if self.state is not EnvState.DEAD:
            self._move(EnvState.DEAD)
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        if self._destroying is None:
            self._destroying = self._loop.create_task(self._teardown())

    async def destroy(self) -> None:
        """Kill the runtime and release everything; safe to call from any path, any number
        of times."""
        self._die()
        assert self._destroying is not None
        await asyncio.shield(self._destroying)

    async def _teardown(self) -> None:
        if self._sandbox is not None:
            # SHUTDOWN and SIGTERM need the environment running, not frozen.
            self._sandbox.thaw()
        if self._sandbox is not None and not self._runtime_exited:
            with contextlib.suppress(Exception):
                await self._shutdown_extensions()
        self._api.close()
        if self.debug_relay is not None:
            await self.debug_relay.close()
        try:
            if self._sandbox is not None:
                await self._sandbox.destroy()
        except SandboxError as e:
            log.error("environment %s: %s", self.id, e)
        finally:
            self._log.close()
            if self._on_gone is not None:
                self._on_gone(self)
