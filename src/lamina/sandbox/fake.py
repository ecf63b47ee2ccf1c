"""The `fake` backend, for fast tests: the "runtime" is a thread in this process.

It runs Lamina's real Python bootstrap loop against the environment's real Runtime API, with
handlers given as Python callables instead of imported from code. Nothing is isolated and
nothing is forked, so scheduler tests run in milliseconds without root.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lamina.runtimes.python import bootstrap
from lamina.sandbox.api import (
    SNAPSHOT_UNSUPPORTED,
    ExitCallback,
    ExitWatch,
    RuntimeApiEndpoint,
    RuntimeSpec,
    SandboxError,
    SandboxSpec,
    Template,
    connect_local,
    local_runtime_api,
)

FakeHandler = Callable[[Any, Any], Any]


class FakeSandbox:
    def __init__(
        self,
        spec: SandboxSpec,
        handlers: Mapping[str, FakeHandler],
        root: Path,
        usage: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._spec = spec
        self._backend_usage = usage
        self._handlers = handlers
        self._scratch = root / spec.sandbox_id
        self._thread: threading.Thread | None = None
        self._client: bootstrap.RuntimeClient | None = None
        self._loop = asyncio.get_running_loop()
        self._exit = ExitWatch()

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def pid(self) -> int | None:
        return None

    @property
    def scratch_dir(self) -> Path:
        return self._scratch

    async def prepare(self) -> RuntimeApiEndpoint:
        return local_runtime_api()

    async def connect(self, port: int) -> socket.socket:
        return await connect_local(port)

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if extensions_started is not None:
            await extensions_started()  # the fake starts no processes; in-process ones register
        self._scratch.mkdir(parents=True)  # tiny, and the fake is for tests: on the loop
        env = dict(env)
        if "AWS_LAMBDA_RUNTIME_API" not in env:
            raise SandboxError("no AWS_LAMBDA_RUNTIME_API in the sandbox's environment")
        self._client = bootstrap.RuntimeClient(env["AWS_LAMBDA_RUNTIME_API"])
        self._thread = threading.Thread(target=self._run, args=(env,), daemon=True)
        self._thread.start()

    def _run(self, env: dict[str, str]) -> None:
        assert self._client is not None
        status = 0
        handler = self._handlers.get(env.get("_HANDLER", ""))
        try:
            if handler is None:
                error = bootstrap.InitError(
                    "Runtime.HandlerNotFound", f"Handler '{env.get('_HANDLER')}' missing"
                )
                self._client.post_init_error(error.to_json())
                status = 1
            else:
                bootstrap.serve(self._client, handler, env)
        except Exception:
            status = 1
        finally:
            self._client.close()
            self._loop.call_soon_threadsafe(self._exit.exited, status)

    @property
    def out_of_memory(self) -> bool:
        return False  # threads share this process's memory: nothing to enforce

    def terminate(self) -> None:
        pass  # the fake's runtime is a thread: no signal reaches it

    def init_done(self) -> None:
        pass

    def freeze(self) -> None:
        pass  # a thread of this process cannot be stopped alone

    def thaw(self) -> None:
        pass

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit.on_exit(callback)

    def memory_peak_mb(self) -> int:
        return 0

    def memory_usage_mb(self) -> int | None:
        return self._backend_usage()

    async def destroy(self) -> None:
        # A thread cannot be killed: the environment's Runtime API is closed by its owner,
        # which ends the bootstrap loop. Wait for that briefly, then let the daemon go.
        if self._thread is not None and self._exit.status is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit.done), timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)

    async def snapshotted(self) -> Template:
        raise SandboxError(SNAPSHOT_UNSUPPORTED)


class FakeBackend:
    name = "fake"
    lambda_paths = False
    description = "fake (threads in the server, for tests)"

    def __init__(self, handlers: Mapping[str, FakeHandler]) -> None:
        self.handlers = handlers
        #: what each sandbox says it holds (`memory_usage_mb`); None: it cannot tell
        self.usage_mb: int | None = None
        self._root = Path(tempfile.mkdtemp(prefix="lamina-fake-"))

    def start(self) -> None:
        pass

    def can_snapshot(self, spec: SandboxSpec) -> bool:
        return False

    def expect(self, runtimes: Sequence[RuntimeSpec]) -> None:
        pass

    def create(self, spec: SandboxSpec) -> FakeSandbox:
        return FakeSandbox(spec, self.handlers, self._root, lambda: self.usage_mb)

    async def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
