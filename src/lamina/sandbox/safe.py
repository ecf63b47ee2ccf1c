"""The one safety wrapper around any sandbox backend (after OpenLambda's `safeSandbox`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from lamina.sandbox.api import ExitCallback, RuntimeApiEndpoint, Sandbox, SandboxError, Template


class SafeSandbox:
    """Serialises calls, destroys on the first error, and makes `destroy()` idempotent.

    After `destroy()` (or a failed `start()`), `start()` raises `SandboxError`; `destroy()`
    may be called any number of times from any path and waits for the first one to finish.
    """

    def __init__(self, inner: Sandbox) -> None:
        self._inner = inner
        self._lock = asyncio.Lock()
        self._prepared = False
        self._started = False
        self._dead = False
        self._frozen = False

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def scratch_dir(self) -> Path:
        return self._inner.scratch_dir

    @property
    def pid(self) -> int | None:
        return self._inner.pid

    @property
    def dead(self) -> bool:
        return self._dead

    async def prepare(self) -> RuntimeApiEndpoint:
        async with self._lock:
            if self._dead or self._prepared:
                raise SandboxError(f"sandbox {self.id} cannot be prepared again")
            self._prepared = True
            try:
                return await self._inner.prepare()
            except BaseException as e:
                await self._destroy_locked()
                if isinstance(e, SandboxError | asyncio.CancelledError):
                    raise
                raise SandboxError(f"sandbox {self.id} failed to prepare: {e}") from e

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async with self._lock:
            if self._dead or self._started or not self._prepared:
                raise SandboxError(f"sandbox {self.id} cannot be started now")
            self._started = True
            try:
                await self._inner.start(env, extensions_started)
            except BaseException as e:
                await self._destroy_locked()
                if isinstance(e, SandboxError | asyncio.CancelledError):
                    raise
                raise SandboxError(f"sandbox {self.id} failed to start: {e}") from e

    async def connect(self, port: int) -> socket.socket:
        if self._dead:
            raise OSError(f"sandbox {self.id} is gone")
        return await self._inner.connect(port)

    @property
    def out_of_memory(self) -> bool:
        return self._inner.out_of_memory

    def terminate(self) -> None:
        if not self._dead:
            self._inner.terminate()

    def init_done(self) -> None:
        self._inner.init_done()

    def on_exit(self, callback: ExitCallback) -> None:
        self._inner.on_exit(callback)

    def freeze(self) -> None:
        """Freeze a started, live sandbox (once: a second call does nothing)."""
        if self._started and not self._dead and not self._frozen:
            self._frozen = True
            self._inner.freeze()

    def thaw(self) -> None:
        """Thaw it if it is frozen (so callers may thaw unconditionally)."""
        if self._frozen:
            self._frozen = False
            if not self._dead:
                self._inner.thaw()

    def memory_peak_mb(self) -> int:
        return self._inner.memory_peak_mb()

    def memory_usage_mb(self) -> int | None:
        return self._inner.memory_usage_mb()

    async def destroy(self) -> None:
        async with self._lock:
            await self._destroy_locked()

    async def snapshotted(self) -> Template:
        """The template (see `Sandbox.snapshotted`); not under the lock, as it waits for
        the runtime's init. A failure destroys the sandbox."""
        if self._dead or not self._started:
            raise SandboxError(f"sandbox {self.id} is not a started template")
        try:
            return await self._inner.snapshotted()
        except BaseException as e:
            await self.destroy()
            if isinstance(e, SandboxError | asyncio.CancelledError):
                raise
            raise SandboxError(f"sandbox {self.id} failed to snapshot: {e}") from e

    async def _destroy_locked(self) -> None:
        if self._dead:
            return
        self._dead = True
        try:
            await self._inner.destroy()
        except SandboxError:
            raise
        except Exception as e:  # a backend broke its contract; still report it our way
            raise SandboxError(f"sandbox {self.id} failed to stop: {e}") from e
