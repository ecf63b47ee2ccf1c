"""One execution environment: a sandbox, its Runtime API, and its lifecycle.

States go STARTING → IDLE ⇄ BUSY → DEAD, and only through `_move()`, which rejects anything
else. An environment runs one invocation at a time. It dies when its runtime exits, when an
invocation times out (the sandbox is killed, as Lambda does), or when its owner destroys it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, IntEnum
from pathlib import Path

from lamina import limits
from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.observability import LogWriter, Metrics, Report
from lamina.runtime_api import Invocation, RuntimeApiServer, RuntimeOutcome
from lamina.sandbox import SafeSandbox, SandboxBackend, SandboxError, SandboxSpec

log = logging.getLogger(__name__)


# Errors of the platform rather than of the function's code: REPORT says "Status: error".
_PLATFORM_ERRORS = frozenset(
    {"Runtime.ExitError", "Runtime.OutOfMemory", "Function.ResponseSizeTooLarge"}
)


_NOT_DELIVERED = "Lamina.NotDelivered"
_TIMED_OUT = "Sandbox.Timedout"
#: how long an environment whose runtime waits for work stays unfrozen: one invoked again
#: within it (a busy function) never pays for a freeze and a thaw on its warm path, and a
#: handler's leftovers get at most this much more time than on Lambda
FREEZE_AFTER_S = 0.01


class Outcome(IntEnum):
    """How an invocation ended, as the invocation metric counts it (values index a tuple
    of metric children, so they run from 0)."""

    SUCCESS = 0
    #: the handler (or its init, reported through the Runtime API) failed
    FUNCTION_ERROR = 1
    TIMEOUT = 2
    #: the runtime exited or ran out of memory, the response was too large, or the
    #: environment never started
    PLATFORM_ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class NotDelivered(Exception):
    """The environment died before its runtime picked the invocation up: run it elsewhere."""


class EnvState(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


_ALLOWED: dict[EnvState, frozenset[EnvState]] = {
    EnvState.STARTING: frozenset({EnvState.IDLE, EnvState.DEAD}),
    EnvState.IDLE: frozenset({EnvState.BUSY, EnvState.DEAD}),
    EnvState.BUSY: frozenset({EnvState.IDLE, EnvState.DEAD}),
    EnvState.DEAD: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class InitFailed(Exception):
    """The environment never became ready; `payload` is what the caller gets (an error)."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(payload.decode(errors="replace"))
        self.payload = payload


def _error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def _describe_exit(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-status)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {status}"


@dataclass(frozen=True)
class EnvironmentContext:
    """What every environment of one pool shares."""

    config: FunctionConfig
    argv: tuple[str, ...]
    task_root: Path
    runtime_dir: Path
    #: the Lambda-defined variables that do not depend on the environment itself
    base_env: Mapping[str, str]
    backend: SandboxBackend
    metrics: Metrics
    logs: LogWriter
    #: custom runtimes are billed for their init phase, as Lambda bills them
    bill_init: bool = False
    #: the function's merged layers on the host, if any
    opt_dir: Path | None = None
    #: the runtime's interpreter on the host ("" for custom runtimes)
    interpreter: str = ""
    #: a Python runtime: a backend may run its bootstrap in a warm zygote
    python_in_zygote: bool = False
    #: False for a function set to have no network (LAMINA_NETWORK=none)
    network: bool = True
    #: each new environment's AWS credentials (key id, secret, session token), made when it
    #: starts so that a long-lived pool's later environments get fresh ones (None: dummies)
    credentials: Callable[[], tuple[str, str, str]] | None = None


class Environment:
    """One execution environment. `on_gone(env)` runs once, after it is fully torn down."""

    def __init__(
        self, ctx: EnvironmentContext, on_gone: Callable[[Environment], None] | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ctx = ctx
        self._on_gone = on_gone
        self.state = EnvState.STARTING
        self.last_used = time.monotonic()
        created = datetime.now(UTC)
        self.log_stream = f"{created:%Y/%m/%d}/[{ctx.config.version}]{self.id}"
        self._loop = asyncio.get_running_loop()
        self._api = RuntimeApiServer(
            on_ready=self._on_ready, on_init_error=self._on_init_error, on_parked=self._on_parked
        )
        self._sandbox: SafeSandbox | None = None
        # None once the runtime is ready; an error payload if it failed first.
        self._ready: asyncio.Future[bytes | None] = self._loop.create_future()
        self._destroying: asyncio.Task[None] | None = None
        self._log = ctx.logs.log(
            ctx.config.log_group,
            self.log_stream,
            ctx.config.logging,
        )
        # Reported once, on the REPORT line of the invocation that waited for the init.
        self._unreported_init_ms: float | None = None
        self._freeze_timer: asyncio.TimerHandle | None = None
        self._first: InvokeRequest | None = None
        self._ready_at = 0.0
        #: how long the start took (the init phase included), once it has succeeded
        self.init_duration_s: float | None = None
        #: how the last invocation ended (read by the pool, which counts it)
        self.outcome_kind = Outcome.SUCCESS
        ctx.metrics.environments.labels(EnvState.STARTING.value).inc()

    def prewarmed(self) -> None:
        """Started ahead of need (provisioned concurrency): its init phase belongs to no
        invocation, so no REPORT line carries its Init Duration (as on Lambda)."""
        self._unreported_init_ms = None

    @property
    def pid(self) -> int | None:
        """The runtime's process id on the host, once it has one."""
        return self._sandbox.pid if self._sandbox is not None else None

    def _move(self, new: EnvState) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"environment {self.id}: {self.state.name} -> {new.name}")
        gauge = self.ctx.metrics.environments
        gauge.labels(self.state.value).dec()
        gauge.labels(new.value).inc()
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
        t0 = time.perf_counter()
        try:
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
                interpreter=ctx.interpreter,
                python_in_zygote=ctx.python_in_zygote,
                network=ctx.network,
            )
            self._sandbox = SafeSandbox(ctx.backend.create(spec))
            try:
                endpoint = await self._sandbox.prepare()
                t1 = time.perf_counter()
                env = dict(ctx.base_env)
                env["AWS_LAMBDA_RUNTIME_API"] = endpoint.address
                env["AWS_LAMBDA_LOG_STREAM_NAME"] = self.log_stream
                if ctx.credentials is not None:
                    key_id, secret, token = ctx.credentials()
                    env["AWS_ACCESS_KEY_ID"] = key_id
                    env["AWS_SECRET_ACCESS_KEY"] = secret
                    env["AWS_SESSION_TOKEN"] = token
                # The function's own variables come last: Lambda lets them override all but
                # the reserved keys, which control/ has already refused.
                env.update(ctx.config.environment)
                if first is not None:
                    # Queued before the Runtime API is served, delivered the moment the
                    # runtime asks for work: no hop through this task between the end of
                    # the init phase and the invocation.
                    self._first = first[0]
                    self._api.submit(self._invocation(first[0], first[1]))
                # Launch first, then serve the Runtime API while the runtime starts up: its
                # listening socket holds the runtime's connection until then.
                await asyncio.gather(self._sandbox.start(env), self._api.start(endpoint.sock))
            finally:
                os.close(output)  # the runtime holds its own copy now
            self._sandbox.on_exit(self._on_exit)
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
                    _error_payload(
                        "Runtime.InvalidEntrypoint",
                        f"Error: Couldn't find valid bootstrap(s): [{ctx.argv[0]}] "
                        f"({cause.strerror})",
                    )
                ) from e
            log.error("environment %s failed to start: %s", self.id, e)
            raise InitFailed(_error_payload("Runtime.Unknown", f"Environment failed: {e}")) from e
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._ready), limits.INIT_TIMEOUT_S)
        except TimeoutError:
            failure = _error_payload(
                "Sandbox.Timedout",
                f"Error: Init phase timed out after {limits.INIT_TIMEOUT_S:.2f} seconds",
            )
        except asyncio.CancelledError:
            await self.destroy()
            raise
        if failure is not None:
            self._api.take_current()
            await self.destroy()
            raise InitFailed(failure)
        t4 = time.perf_counter()
        phase.labels("init", runtime).observe(t4 - t3)
        if self._sandbox is not None:
            # Once the first invocation is on its way (the caller submits it before yielding).
            self._loop.call_soon(self._sandbox.init_done)
        self.init_duration_s = t4 - t0
        self._unreported_init_ms = (t4 - t0) * 1000
        self._move(EnvState.IDLE)

    def _on_ready(self) -> None:
        # Called as the runtime's first /next arrives, before a queued first invocation is
        # written to it: its START line goes after the init phase's output.
        self._ready_at = time.perf_counter()
        first, self._first = self._first, None
        if first is not None:
            self._log.start(first.request_id, self.ctx.config.version, capture=first.log_tail)
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
            self._freeze_timer = self._loop.call_later(FREEZE_AFTER_S, self._sandbox.freeze)

    def _on_init_error(self, body: bytes, error_type: str | None) -> None:
        if not self._ready.done():
            self._ready.set_result(body or _error_payload(error_type or "Runtime.Unknown", ""))

    def _on_exit(self, status: int) -> None:
        message = f"Runtime exited with error: {_describe_exit(status)}"
        oom = self._sandbox is not None and self._sandbox.out_of_memory
        kind = "Runtime.OutOfMemory" if oom else "Runtime.ExitError"
        if not self._ready.done():
            self._ready.set_result(_error_payload(kind, f"Error: {message}"))
        inv, delivered = self._api.take_current()
        if inv is not None and not inv.future.done():
            # An invocation the runtime never picked up was handed to an environment already
            # on its way out (a runtime may exit just after answering, as Node's does after
            # an uncaught error): the pool runs it elsewhere.
            inv.future.set_result(
                RuntimeOutcome(
                    ok=False,
                    body=_error_payload(kind, f"RequestId: {inv.request_id} Error: {message}"),
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
        self._move(EnvState.BUSY)
        init_ms, self._unreported_init_ms = self._unreported_init_ms, None
        return await self._outcome(request, future, self._ready_at, init_ms)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Run one invocation. A function failure is a result; the environment may die."""
        self._move(EnvState.BUSY)
        init_ms, self._unreported_init_ms = self._unreported_init_ms, None
        self._log.start(request.request_id, self.ctx.config.version, capture=request.log_tail)
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
            duration_ms=duration_ms,
            init_duration_ms=init_ms,
            log_tail=tail,
        )

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
        return self._log.finish(
            Report(
                request_id=request_id,
                duration_ms=duration_ms,
                memory_size_mb=self.ctx.config.memory_size,
                max_memory_used_mb=self._sandbox.memory_peak_mb() if self._sandbox else 0,
                init_duration_ms=init_ms,
                bill_init=self.ctx.bill_init,
                status="timeout" if timed_out else "error" if failed else None,
                error_type=outcome.error_type if failed and not timed_out else None,
                function_name=self.ctx.config.name,
                version=self.ctx.config.version,
            ),
            note,
        )

    def _on_timeout(self, future: asyncio.Future[RuntimeOutcome], request_id: str) -> None:
        if future.done():
            return
        self._api.take_current()  # whether picked up or not, its time is over
        future.set_result(
            RuntimeOutcome(
                ok=False,
                body=_error_payload(
                    "Sandbox.Timedout",
                    f"RequestId: {request_id} Error: Task timed out after "
                    f"{self.ctx.config.timeout:.2f} seconds",
                ),
                error_type="Sandbox.Timedout",
            )
        )
        self._die()

    # -- death ---------------------------------------------------------------------

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
        self._api.close()
        try:
            if self._sandbox is not None:
                await self._sandbox.destroy()
        except SandboxError as e:
            log.error("environment %s: %s", self.id, e)
        finally:
            self._log.close()
            if self._on_gone is not None:
                self._on_gone(self)
