"""SnapStart templates in the process backend: the template is the bootstrap started by the
fork-server's entry point (`zygote/_lamina_snapshot.py`, run as a script), and each copy a
fork of it in a process group of its own, with its own scratch directory as TMPDIR. Nothing
is isolated here beyond that, as in the rest of this backend; its memory watch reads a copy's
resident set, pages shared with the template included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Mapping

from lamina.sandbox._templates import (
    HELLO_TIMEOUT_S,
    TemplateChannel,
    isolate,
    send_go,
    snapshotted,
)
from lamina.sandbox.api import (
    RuntimeApiEndpoint,
    Sandbox,
    SandboxError,
    SandboxSpec,
    local_runtime_api,
)
from lamina.sandbox.process import ProcessSandbox


async def wait_template(
    sandbox: ProcessSandbox, sock: socket.socket, exited: asyncio.Future[int]
) -> ProcessTemplate:
    """The template of `sandbox` once its runtime is at its snapshot point; SandboxError if
    the runtime exits first."""
    return ProcessTemplate(sandbox, await snapshotted(sock, exited))


class ProcessTemplate:
    def __init__(self, sandbox: ProcessSandbox, channel: TemplateChannel) -> None:
        self._sandbox = sandbox
        self.channel = channel

    def restore(self, spec: SandboxSpec) -> Sandbox:
        backend = self._sandbox.backend
        copy = RestoredProcessSandbox(spec, self._sandbox, self.channel)
        if backend is not None:
            backend.watch(copy)
        return copy

    def memory_usage_mb(self) -> int | None:
        return self._sandbox.memory_usage_mb()

    @property
    def alive(self) -> bool:
        return not self.channel.closed

    async def destroy(self) -> None:
        self.channel.close()
        await self._sandbox.destroy()


class _Copied:
    """What `ProcessSandbox` needs of a `Popen` for a process it did not start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


class RestoredProcessSandbox(ProcessSandbox):
    """A sandbox whose runtime is a fork of a template's (see `api.py`)."""

    def __init__(
        self, spec: SandboxSpec, template: ProcessSandbox, channel: TemplateChannel
    ) -> None:
        super().__init__(spec, template.root, template.backend)
        self._template_tmp = template.scratch_dir
        self._channel = channel

    async def prepare(self) -> RuntimeApiEndpoint:
        if self._channel.closed:
            raise SandboxError("the SnapStart template is gone")
        return local_runtime_api()

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        # Its TMPDIR starts as the template's was (what the init wrote there), as a
        # restored environment's /tmp does.
        await loop.run_in_executor(
            None, lambda: shutil.copytree(self._template_tmp, self._scratch, symlinks=True)
        )
        made = await self._channel.copy()
        with contextlib.closing(made.ctl):
            self._proc = _Copied(made.pid)  # type: ignore[assignment]
            self._channel.watch(made.template_pid, self._exit.exited)
            with contextlib.suppress(OSError):
                self._status_fd = os.open(f"/proc/{made.pid}/status", os.O_RDONLY)
            go = {"env": {**env, "TMPDIR": str(self._scratch)}}
            try:
                await asyncio.wait_for(
                    isolate(made.ctl, self._spec.ephemeral_storage_mb), HELLO_TIMEOUT_S
                )
                problem = await asyncio.wait_for(
                    send_go(made.ctl, go, self._spec.output_fd), HELLO_TIMEOUT_S
                )
            except (OSError, TimeoutError) as e:
                raise SandboxError(f"sandbox {self.id}: {e or 'no hand-over'}") from e
        if problem is not None:
            raise SandboxError(f"sandbox {self.id}: {problem.get('error')}")
