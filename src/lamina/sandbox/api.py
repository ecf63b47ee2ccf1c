"""The sandbox contract: what every execution-environment backend promises.

A *sandbox* is the isolation boundary of one execution environment and the runtime process
inside it. The scheduler owns sandboxes only through `SafeSandbox` (see `safe.py`), which
enforces the calling rules below so that backends need not.

Lifecycle: `backend.create(spec)` allocates (no process yet) → `start()` launches the
runtime (`spec.argv`) inside → the runtime exits by itself or `destroy()` kills it.

Contract for backends:
- `start()` is called at most once. It returns once the runtime process exists (not when it
  is ready: readiness is the runtime's first `GET /invocation/next`).
- `on_exit(callback)` registers a callback run on the event loop, once, when the runtime
  process has exited, with its wait status as `subprocess` reports it (negative = signal).
  A callback registered after the exit runs soon after registration.
- `destroy()` kills every process in the sandbox, waits until they are gone, and removes
  everything the sandbox created (its scratch directory included). A second `destroy()` is a
  no-op. `destroy()` never raises for a sandbox that is already gone.
- The scratch directory (the function's writable `/tmp`) belongs to the sandbox: the backend
  creates it before the runtime starts and removes it in `destroy()`. `create()` does no
  blocking I/O (it runs on the event loop); `start()` does its blocking work off the loop.
- A backend enforces `spec.memory_mb` as well as it can (the process backend watches the
  runtime's resident memory; the namespace backend uses a cgroup) and, when it kills the
  runtime for it, sets `out_of_memory` before the exit callbacks run.
- A backend raises only `SandboxError` (wrapping the OS error that caused it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ExitCallback = Callable[[int], None]


class ExitWatch:
    """Exit bookkeeping for backends: the status once known, `on_exit` callbacks, and a future
    that `destroy()` can await. Create it on the event loop; call `exited()` there, once."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.status: int | None = None
        self.done: asyncio.Future[int] = self._loop.create_future()
        self._callbacks: list[ExitCallback] = []

    def exited(self, status: int) -> None:
        if self.status is not None:
            return
        self.status = status
        self.done.set_result(status)
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(status)

    def on_exit(self, callback: ExitCallback) -> None:
        if self.status is not None:
            self._loop.call_soon(callback, self.status)
        else:
            self._callbacks.append(callback)


class SandboxError(Exception):
    """A sandbox could not be created, started or stopped."""


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to make one execution environment."""

    sandbox_id: str
    argv: Sequence[str]
    env: Mapping[str, str]
    #: the function's unpacked code: LAMBDA_TASK_ROOT and the working directory
    task_root: Path
    #: where the runtime's own files are (LAMBDA_RUNTIME_DIR)
    runtime_dir: Path
    memory_mb: int
    ephemeral_storage_mb: int
    #: where the runtime's stdout and stderr go (an open descriptor the caller owns; the
    #: backend hands the runtime its own copy and never closes this one)
    output_fd: int


class Sandbox(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def scratch_dir(self) -> Path:
        """The sandbox's private writable directory (the function's /tmp)."""
        ...

    @property
    def out_of_memory(self) -> bool:
        """True once the backend killed the runtime for using more memory than
        `spec.memory_mb` (set before the exit callbacks run)."""
        ...

    async def start(self) -> None: ...

    def on_exit(self, callback: ExitCallback) -> None: ...

    def memory_peak_mb(self) -> int:
        """The most memory the runtime has used so far, in MB (0 if unknown). Cheap, but may
        read /proc: call it off the hot path."""
        ...

    async def destroy(self) -> None: ...


class SandboxBackend(Protocol):
    #: "process", "namespace", "fake"
    name: str

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Allocate a sandbox (scratch directory and the like); start nothing yet."""
        ...

    async def close(self) -> None:
        """Release what the backend itself holds. Sandboxes are destroyed by their owners."""
        ...
