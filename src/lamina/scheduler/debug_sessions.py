"""Debug sessions: one environment of a function version started with its debugger
listening, outside the version's pool (`lamina invoke NAME --debug`).

A session is asked for (`DebugSessions.open`), which starts a NEW environment of the version
with the debugger listening on a port of the host's loopback, and answers with that port as
soon as it listens (the init phase may still be waiting for the IDE). Invocations that name
the session (Invoke with the `X-Lamina-Debug-Session` header) run in that environment, one
at a time, with the deadline not enforced; ordinary invocations never reach it, and it never
joins the warm pool. As SAM local's debugging is, it is per invocation: the session ends
(its environment is destroyed) when the caller ends it (the CLI does after its invocation),
when the debugger client disconnects after an invocation has run, when its environment dies,
or after `IDLE_S` with no debugger client attached and no invocation started or client
gone in that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from lamina.errors import InvalidParameterValueError, ResourceConflictError, ResourceNotFoundError
from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.runtimes.catalog import Family, RuntimeInfo
from lamina.runtimes.images import DEBUGGER_DIR, DebuggerInstaller
from lamina.scheduler.capacity import MemoryCapacity
from lamina.scheduler.debugging import Debugger, DebugSpec
from lamina.scheduler.environment import Environment, EnvironmentContext, EnvState, InitFailed
from lamina.scheduler.lambda_env import LAMBDA_LANG

log = logging.getLogger(__name__)

#: seconds a session lives without an invocation or an attached debugger client
IDLE_S = 900.0
#: how often idle sessions are looked for
_REAP_EVERY_S = 10.0


def with_debugger(
    ctx: EnvironmentContext,
    spec: DebugSpec,
    runtime: RuntimeInfo | None,
    lambda_paths: bool,
    installer: DebuggerInstaller | None,
) -> EnvironmentContext:
    """`ctx` with the runtime's debugger (InvalidParameterValueError: it has none here)."""
    config = ctx.config
    if config.serving_image is not None or runtime is None:
        raise InvalidParameterValueError(
            "Lamina attaches debuggers to Python and Node.js zip functions only."
        )
    if runtime.family is Family.NODE:
        return replace(ctx, debugger=Debugger(spec, "node"))
    if runtime.family is not Family.PYTHON:
        raise InvalidParameterValueError(
            f"Lamina has no debugger for the {config.runtime} runtime (Python: debugpy, "
            "Node.js: its inspector)."
        )
    if installer is None or ctx.lang_dir is None:
        raise InvalidParameterValueError(
            "This server has no runtime directory to install debugpy into."
        )
    lang_seen = LAMBDA_LANG if lambda_paths else ctx.lang_dir
    return replace(
        ctx,
        debugger=Debugger(spec, "debugpy", str(lang_seen / DEBUGGER_DIR)),
        debugger_ready=partial(_debugpy_ready, installer, runtime),
        # A fresh interpreter: the debugger's threads and adapter process start in it, not
        # in a child forked from the zygote's warm one.
        python_in_zygote=False,
    )


async def _debugpy_ready(installer: DebuggerInstaller, runtime: RuntimeInfo) -> None:
    await installer.ensure(runtime)


@dataclass(eq=False)
class DebugSession:
    id: str
    config: FunctionConfig
    env: Environment
    port: int
    debugger: str
    starting: asyncio.Task[None]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    invocations: int = 0
    last_used: float = field(default_factory=time.monotonic)

    def describe(self) -> dict[str, object]:
        return {
            "Session": self.id,
            "FunctionName": self.config.name,
            "Version": self.config.version,
            "Debugger": self.debugger,
            "Host": "127.0.0.1",
            "Port": self.port,
        }


class DebugSessions:
    """The open debug sessions of this server."""

    def __init__(
        self,
        context: Callable[[FunctionConfig, DebugSpec], EnvironmentContext],
        capacity: MemoryCapacity,
    ) -> None:
        self._context = context
        self._capacity = capacity
        self._sessions: dict[str, DebugSession] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def open(self, config: FunctionConfig, spec: DebugSpec) -> DebugSession:
        """Start a debug environment of `config`; returns once its debugger port listens.
        Raises InvalidParameterValueError (the function cannot be debugged, the port is
        taken, or the environment failed before it listened)."""
        ctx = self._context(config, spec)  # raises for a runtime without a debugger
        if spec.port and not _free(spec.port):
            raise ResourceConflictError(f"Port {spec.port} of 127.0.0.1 is in use.")
        await self._capacity.take(config.memory_size)
        env = Environment(ctx, on_gone=self._gone)
        starting = asyncio.ensure_future(env.start())
        either: set[asyncio.Future[Any]] = {starting, env.debug_port}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller went away: nobody will ever use this one
            starting.cancel()
            await env.destroy()
            raise
        if not env.debug_port.done():
            why = "the environment ended"
            if not starting.cancelled() and isinstance(starting.exception(), InitFailed):
                why = str(starting.exception())
            await env.destroy()
            raise InvalidParameterValueError(f"The debug environment did not start: {why}")
        session = DebugSession(
            id=uuid.uuid4().hex,
            config=config,
            env=env,
            port=env.debug_port.result(),
            debugger=ctx.debugger.kind if ctx.debugger is not None else "",
            starting=starting,
        )
        assert env.debug_relay is not None
        env.debug_relay.on_detach = lambda left: self._detached(session, left)
        self._sessions[session.id] = session
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_forever())
        return session

    def environments(self) -> list[Environment]:
        return [s.env for s in self._sessions.values()]

    def get(self, session_id: str) -> DebugSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise ResourceNotFoundError(f"Debug session not found: {session_id}")
        return session

    async def invoke(self, config: FunctionConfig, request: InvokeRequest) -> InvokeResult:
        """Run `request` in the session it names (the caller holds the concurrency lease)."""
        assert request.debug_session is not None
        session = self.get(request.debug_session)
        if (session.config.name, session.config.version) != (config.name, config.version):
            raise InvalidParameterValueError(
                f"Debug session {session.id} belongs to {session.config.name}:"
                f"{session.config.version}, not {config.name}:{config.version}."
            )
        async with session.lock:
            session.last_used = time.monotonic()
            try:
                try:
                    await asyncio.shield(session.starting)
                except InitFailed as failure:
                    return InvokeResult(
                        payload=failure.payload,
                        executed_version=config.version,
                        function_error="Unhandled",
                    )
                if session.env.state is not EnvState.IDLE:
                    raise InvalidParameterValueError(
                        f"The environment of debug session {session.id} has ended."
                    )
                return await session.env.invoke(request)
            finally:
                session.invocations += 1
                session.last_used = time.monotonic()

    async def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise ResourceNotFoundError(f"Debug session not found: {session_id}")
        session.starting.cancel()
        await session.env.destroy()

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session_id in list(self._sessions):
            with contextlib.suppress(ResourceNotFoundError):
                await self.close(session_id)

    def _detached(self, session: DebugSession, left: int) -> None:
        session.last_used = time.monotonic()
        # The IDE went away after an invocation ran, with none running: the session is over.
        if left == 0 and session.invocations and not session.lock.locked():
            self._end_soon(session)

    def _end_soon(self, session: DebugSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            session.starting.cancel()
            task = asyncio.ensure_future(session.env.destroy())
            task.add_done_callback(lambda t: None if t.cancelled() else t.exception())

    def _gone(self, env: Environment) -> None:
        self._capacity.give_back(env.charged_mb)
        for session in list(self._sessions.values()):
            if session.env is env:
                del self._sessions[session.id]

    async def _reap_forever(self) -> None:
        while self._sessions:
            await asyncio.sleep(_REAP_EVERY_S)
            cutoff = time.monotonic() - IDLE_S
            for session in list(self._sessions.values()):
                relay = session.env.debug_relay
                attached = relay is not None and relay.attached > 0
                # (An invocation waiting all that time for an IDE that never came ends too.)
                if session.last_used < cutoff and not attached:
                    log.info("debug session %s: idle, ended", session.id)
                    self._end_soon(session)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
