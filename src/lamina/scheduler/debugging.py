"""Debugger attach: environments started with the language's debugger listening.

An environment in debug mode (`DebugSpec`) starts its runtime with the debugger listening on
a loopback port *inside* the sandbox (debugpy for Python, Node's inspector), and Lamina
listens on a port of the host's loopback (`DebugRelay`) and relays each connection an IDE
makes there into the sandbox (`Sandbox.connect`, which on the namespace backend opens the
socket in the sandbox's own network namespace). One mechanism serves both backends: on the
process backend the relay's far end is simply the host's loopback.

While an environment is in debug mode its invocations' deadline is not enforced (a handler
stopped at a breakpoint must not be killed), nor its init phase's, and it is never frozen
(a frozen debugger would drop the IDE's connection between invocations). The context still
reports the configured timeout (`get_remaining_time_in_millis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lamina.models import DEBUG_VARIABLE, FunctionConfig

log = logging.getLogger(__name__)

#: how long the relay tries to reach a debugger that is still starting (debugpy's adapter
#: takes ~1 s to listen) before it gives a client up
CONNECT_PATIENCE_S = 30.0
_CONNECT_RETRY_S = 0.1


@dataclass(frozen=True)
class DebugSpec:
    """How an environment's debugger starts."""

    #: hold the init phase (Python: before the handler's module is imported; Node: before
    #: the bootstrap runs) until a debugger client attaches
    wait: bool = False
    #: the host loopback port to listen on (0: a free one)
    port: int = 0


@dataclass(frozen=True)
class Debugger:
    """A pool's debugging: the spec, and how the runtime's debugger starts."""

    spec: DebugSpec
    #: "debugpy" or "node" (Node's inspector)
    kind: str
    #: Python: where debugpy is, as the runtime sees it (Lamina's runtime directory)
    debugpy_dir: str = ""

    def variables(self, inner_port: int) -> dict[str, str]:
        """What the runtime is started with to listen on `inner_port` of its loopback."""
        if self.kind == "node":
            flag = "--inspect-wait" if self.spec.wait else "--inspect"
            return {"NODE_OPTIONS": f"{flag}=127.0.0.1:{inner_port}"}
        return {
            "_LAMINA_DEBUG": "wait" if self.spec.wait else "listen",
            "_LAMINA_DEBUG_PORT": str(inner_port),
            "_LAMINA_DEBUGPY": self.debugpy_dir,
        }


def debug_setting(config: FunctionConfig) -> DebugSpec | None:
    """The function's LAMINA_DEBUG setting (None: off)."""
    value = config.environment.get(DEBUG_VARIABLE, "0")
    if value in ("", "0"):
        return None
    return DebugSpec(wait=value == "wait")


def free_port() -> int:
    """A port free on the host's loopback now (the debugger's inside port: on the namespace
    backend the sandbox's own loopback has nothing else, on the process backend it is the
    host's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Connect = Callable[[int], Awaitable[socket.socket]]


class DebugRelay:
    """A listener on the host's loopback whose connections are relayed to `inner_port` on the
    sandbox's loopback (`connect`). Counts the attached clients (`attached`)."""

    def __init__(self, connect: Connect, inner_port: int, port: int = 0) -> None:
        self._connect = connect
        self.inner_port = inner_port
        self._wanted = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: clients connected now
        self.attached = 0
        #: called with the number of clients still attached after one leaves
        self.on_detach: Callable[[int], None] | None = None
        self.port = port

    async def open(self) -> int:
        """Listen (raises OSError if the port is taken); returns the port."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self._wanted)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.attached += 1
        try:
            inner = await self._reach()
            if inner is None:
                return
            in_reader, in_writer = await asyncio.open_connection(sock=inner)
            try:
                await asyncio.gather(_pipe(reader, in_writer), _pipe(in_reader, writer))
            finally:
                in_writer.close()
        except (OSError, asyncio.IncompleteReadError) as e:
            log.debug("debugger relay: %s", e)
        finally:
            self.attached -= 1
            self._tasks.discard(task)
            writer.close()
            if self.on_detach is not None:
                self.on_detach(self.attached)

    async def _reach(self) -> socket.socket | None:
        """Connect to the debugger in the sandbox, waiting for it to listen."""
        end = time.monotonic() + CONNECT_PATIENCE_S
        while True:
            try:
                return await self._connect(self.inner_port)
            except OSError as e:
                if time.monotonic() > end:
                    log.warning("debugger relay: the debugger never answered (%s)", e)
                    return None
                await asyncio.sleep(_CONNECT_RETRY_S)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def open_relay(debugger: Debugger, connect: Connect, env: dict[str, str]) -> DebugRelay:
    """Listen for debugger clients on the host's loopback, and add to the runtime's
    environment `env` what starts its debugger on a port of its own loopback (the relay's far
    end). Raises OSError if the port is taken."""
    inner = free_port()
    relay = DebugRelay(connect, inner, debugger.spec.port)
    await relay.open()
    for name, value in debugger.variables(inner).items():
        if name == "NODE_OPTIONS" and env.get(name):
            value = f"{value} {env[name]}"  # the function's own options too
        env[name] = value
    return relay


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
