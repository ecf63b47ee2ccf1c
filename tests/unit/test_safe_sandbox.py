"""The safety wrapper around every sandbox backend (`lamina.sandbox.SafeSandbox`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from lamina.sandbox import SafeSandbox, Sandbox, SandboxError
from lamina.sandbox.api import ExitCallback, RuntimeApiEndpoint


class FakeInner:
    """A minimal `Sandbox` whose start/destroy can fail or block on demand."""

    def __init__(self) -> None:
        self.started = 0
        self.destroyed = 0
        self.exit_callbacks: list[ExitCallback] = []
        self.start_error: BaseException | None = None
        self.destroy_error: Exception | None = None
        self.start_gate: asyncio.Event | None = None
        self.destroy_gate: asyncio.Event | None = None
        self.log: list[str] = []

    @property
    def id(self) -> str:
        return "sbx-1"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def scratch_dir(self) -> Path:
        return Path("/scratch/sbx-1")

    @property
    def out_of_memory(self) -> bool:
        return False

    def memory_peak_mb(self) -> int:
        return 0

    def init_done(self) -> None:
        self.log.append("init_done")

    def freeze(self) -> None:
        self.log.append("freeze")

    def thaw(self) -> None:
        self.log.append("thaw")

    async def prepare(self) -> RuntimeApiEndpoint:
        self.log.append("prepare")
        return RuntimeApiEndpoint(socket.socket(), "127.0.0.1:9001")

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.log.append("start:begin")
        self.started += 1
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.start_error is not None:
            raise self.start_error
        self.log.append("start:end")

    def on_exit(self, callback: ExitCallback) -> None:
        self.exit_callbacks.append(callback)

    def terminate(self) -> None:
        self.log.append("terminate")

    async def connect(self, port: int) -> socket.socket:
        raise OSError("no network here")

    async def destroy(self) -> None:
        self.log.append("destroy:begin")
        self.destroyed += 1
        if self.destroy_gate is not None:
            await self.destroy_gate.wait()
        if self.destroy_error is not None:
            raise self.destroy_error
        self.log.append("destroy:end")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 5))


def make() -> tuple[SafeSandbox, FakeInner]:
    inner = FakeInner()
    _: Sandbox = inner  # the fake satisfies the Protocol
    return SafeSandbox(inner), inner


async def started(sandbox: SafeSandbox) -> None:
    """prepare() then start(), as an environment calls them."""
    endpoint = await sandbox.prepare()
    endpoint.sock.close()
    await sandbox.start({})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_delegates_id_scratch_dir_and_on_exit() -> None:
    sandbox, inner = make()
    assert sandbox.id == "sbx-1"
    assert sandbox.scratch_dir == Path("/scratch/sbx-1")
    seen: list[int] = []
    sandbox.on_exit(seen.append)
    assert len(inner.exit_callbacks) == 1
    inner.exit_callbacks[0](-9)
    assert seen == [-9]


def test_start_then_destroy() -> None:
    async def test() -> None:
        sandbox, inner = make()
        assert not sandbox.dead
        await started(sandbox)
        assert inner.started == 1
        assert not sandbox.dead
        await sandbox.destroy()
        assert inner.destroyed == 1
        assert sandbox.dead

    run(test)


def test_destroy_twice_destroys_inner_once() -> None:
    async def test() -> None:
        sandbox, inner = make()
        await started(sandbox)
        await sandbox.destroy()
        await sandbox.destroy()
        assert inner.destroyed == 1

    run(test)


def test_destroy_without_start_destroys_inner() -> None:
    async def test() -> None:
        sandbox, inner = make()
        await sandbox.destroy()
        assert inner.destroyed == 1
        assert inner.started == 0

    run(test)


def test_start_after_destroy_raises_and_does_not_start_inner() -> None:
    async def test() -> None:
        sandbox, inner = make()
        await sandbox.destroy()
        with pytest.raises(SandboxError):
            await started(sandbox)
        assert inner.started == 0

    run(test)


def test_start_without_prepare_raises() -> None:
    async def test() -> None:
        sandbox, inner = make()
        with pytest.raises(SandboxError):
            await sandbox.start({})
        assert inner.started == 0

    run(test)


def test_start_twice_raises() -> None:
    async def test() -> None:
        sandbox, inner = make()
        await started(sandbox)
        with pytest.raises(SandboxError):
            await started(sandbox)
        assert inner.started == 1

    run(test)


def test_start_raising_oserror_destroys_inner_and_raises_sandbox_error() -> None:
    async def test() -> None:
        sandbox, inner = make()
        cause = OSError(2, "No such file or directory")
        inner.start_error = cause
        with pytest.raises(SandboxError) as exc:
            await started(sandbox)
        assert exc.value.__cause__ is cause
        assert "sbx-1" in str(exc.value)
        assert inner.destroyed == 1
        assert sandbox.dead
        # Later destroys (from other cleanup paths) are no-ops; restart is refused.
        await sandbox.destroy()
        assert inner.destroyed == 1
        with pytest.raises(SandboxError):
            await started(sandbox)
        assert inner.started == 1

    run(test)


def test_start_raising_sandbox_error_is_passed_through_after_destroy() -> None:
    async def test() -> None:
        sandbox, inner = make()
        original = SandboxError("cgroup setup failed")
        inner.start_error = original
        with pytest.raises(SandboxError) as exc:
            await started(sandbox)
        assert exc.value is original
        assert inner.destroyed == 1

    run(test)


def test_cancelled_start_destroys_inner_and_stays_cancelled() -> None:
    async def test() -> None:
        sandbox, inner = make()
        inner.start_gate = asyncio.Event()
        task = asyncio.create_task(started(sandbox))
        await settle()
        assert inner.started == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inner.destroyed == 1
        assert sandbox.dead

    run(test)


def test_destroy_error_is_reported_as_sandbox_error() -> None:
    async def test() -> None:
        sandbox, inner = make()
        cause = RuntimeError("backend broke its contract")
        inner.destroy_error = cause
        with pytest.raises(SandboxError) as exc:
            await sandbox.destroy()
        assert exc.value.__cause__ is cause
        assert sandbox.dead

    run(test)


def test_destroy_sandbox_error_passes_through() -> None:
    async def test() -> None:
        sandbox, inner = make()
        original = SandboxError("kill failed")
        inner.destroy_error = original
        with pytest.raises(SandboxError) as exc:
            await sandbox.destroy()
        assert exc.value is original

    run(test)


def test_concurrent_destroys_both_wait_and_inner_runs_once() -> None:
    async def test() -> None:
        sandbox, inner = make()
        await started(sandbox)
        inner.destroy_gate = asyncio.Event()
        first = asyncio.create_task(sandbox.destroy())
        second = asyncio.create_task(sandbox.destroy())
        await settle()
        assert inner.destroyed == 1
        assert not first.done()
        assert not second.done(), "a second destroy() must wait for the first to finish"
        inner.destroy_gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        assert inner.destroyed == 1
        assert inner.log[-1] == "destroy:end"

    run(test)


def test_destroy_during_start_waits_for_start_to_finish() -> None:
    async def test() -> None:
        sandbox, inner = make()
        inner.start_gate = asyncio.Event()
        starting = asyncio.create_task(started(sandbox))
        await settle()
        destroying = asyncio.create_task(sandbox.destroy())
        await settle()
        assert inner.destroyed == 0, "calls must be serialised, not interleaved"
        inner.start_gate.set()
        await asyncio.wait_for(asyncio.gather(starting, destroying), 1)
        assert inner.log == ["prepare", "start:begin", "start:end", "destroy:begin", "destroy:end"]
        assert sandbox.dead

    run(test)


def test_start_queued_behind_destroy_is_refused() -> None:
    async def test() -> None:
        sandbox, inner = make()
        inner.destroy_gate = asyncio.Event()
        destroying = asyncio.create_task(sandbox.destroy())
        await settle()
        starting = asyncio.create_task(started(sandbox))
        await settle()
        inner.destroy_gate.set()
        await destroying
        with pytest.raises(SandboxError):
            await starting
        assert inner.started == 0

    run(test)


def test_freeze_and_thaw_only_a_live_started_sandbox_once() -> None:
    async def test() -> None:
        sandbox, inner = make()
        sandbox.freeze()  # not started: nothing to freeze
        sandbox.thaw()  # not frozen: nothing to thaw
        await started(sandbox)
        sandbox.freeze()
        sandbox.freeze()
        sandbox.thaw()
        sandbox.thaw()
        sandbox.freeze()
        await sandbox.destroy()
        sandbox.thaw()  # dead: the backend's destroy() dealt with the frozen sandbox
        sandbox.freeze()
        calls = [c for c in inner.log if c in ("freeze", "thaw")]
        assert calls == ["freeze", "thaw", "freeze"]

    run(test)
