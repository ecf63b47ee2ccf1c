"""SnapStart templates in the namespace backend: the template is a sandbox like any other
(its own namespaces and cgroup, made for it rather than taken from the pool, with the
seccomp filter its copies need, see `zygote/_lamina_snapshot.py`); each copy gets a cgroup
of its own, joined here from outside, and its network namespace (made by the copy itself, in
its own user namespace) is set up here as a pooled one is: loopback, the Runtime API and the
relay to Lamina's API, the veth.

Memory: pages a copy shares with its template stay charged to the template's cgroup (the
node pays them once); the copy's cgroup holds what it writes. Its hard limit is the
function's memory less the template's share, so that template and copy together stay within
the function's MemorySize, and its Max Memory Used is its peak resident set (shared pages
included: the function used them), or its cgroup's peak if that is more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from lamina.sandbox._netns import RUNTIME_API_PORT, NetNamespace
from lamina.sandbox._signals import signal_main_thread
from lamina.sandbox._templates import (
    HELLO_TIMEOUT_S,
    TemplateChannel,
    isolate,
    send_go,
    snapshotted,
    vm_hwm_mb,
)
from lamina.sandbox.api import (
    ExitWatch,
    RuntimeApiEndpoint,
    Sandbox,
    SandboxError,
    SandboxSpec,
)
from lamina.sandbox.namespace import NamespaceSandbox, _first_child, _Prepared

if TYPE_CHECKING:
    from lamina.sandbox.namespace import NamespaceBackend

log = logging.getLogger(__name__)

#: the least hard limit a copy's cgroup gets (MB), whatever the template holds
MIN_COPY_MB = 16
#: copies each template keeps made ahead of need (isolated, waiting for their go), as the
#: pool keeps zygote children: a cold start then pays the go alone
READY_COPIES = 1


async def wait_template(
    sandbox: NamespaceSandbox, sock: socket.socket, exited: asyncio.Future[int]
) -> NamespaceTemplate:
    """The template of `sandbox` once its runtime is at its snapshot point; SandboxError if
    the runtime exits first."""
    return NamespaceTemplate(sandbox, await snapshotted(sock, exited))


class NamespaceTemplate:
    def __init__(
        self, sandbox: NamespaceSandbox, channel: TemplateChannel, ready: int = READY_COPIES
    ) -> None:
        self._sandbox = sandbox
        self._backend: NamespaceBackend = sandbox._backend
        self.channel = channel
        #: what the template holds (MB), read once it is at rest: every copy's share
        self.shared_mb = sandbox.memory_usage_mb() or 0
        #: /tmp of its copies (SnapStart allows no more than Lambda's default anyway)
        self._tmp_mb = sandbox._spec.ephemeral_storage_mb
        self._want = ready
        #: copies made ahead of need, isolated and waiting for their go
        self._ready: list[_Prepared] = []
        self._filling: asyncio.Task[None] | None = None
        self._seq = 0
        self._destroyed = False
        self._refill()

    def restore(self, spec: SandboxSpec) -> Sandbox:
        return RestoredSandbox(spec, self._backend, self)

    def memory_usage_mb(self) -> int | None:
        return self._sandbox.memory_usage_mb()

    @property
    def alive(self) -> bool:
        return not self.channel.closed and not self._destroyed

    async def destroy(self) -> None:
        self._destroyed = True
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, SandboxError):
                await self._filling
        ready, self._ready = self._ready, []
        for child in ready:
            await self._backend.release(child)
        self.channel.close()
        await self._sandbox.destroy()

    async def take(self) -> _Prepared:
        """A copy for a cold start: one made ahead if there is one (a restore is then the
        copy's go alone), else one made now."""
        if not self._ready and self._filling is not None:
            # One is on its way: sooner than a second made beside it.
            with contextlib.suppress(asyncio.CancelledError, SandboxError):
                await asyncio.shield(self._filling)
        while self._ready:
            child = self._ready.pop(0)
            if child.exit.status is None:
                self._refill()
                return child
            await self._backend.release(child)
        child = await self._copy()
        self._refill()
        return child

    def _refill(self) -> None:
        if self._filling is None and not self._destroyed and len(self._ready) < self._want:
            self._filling = asyncio.ensure_future(self._fill())

    async def _fill(self) -> None:
        try:
            while len(self._ready) < self._want and not self._destroyed:
                try:
                    child = await self._copy()
                except SandboxError as e:
                    log.warning("SnapStart copy made ahead failed: %s", e)
                    return
                if self.channel.closed:  # destroyed meanwhile
                    await self._backend.release(child)
                    return
                self._ready.append(child)
        finally:
            self._filling = None

    async def _copy(self) -> _Prepared:
        """A copy in a cgroup and a prepared network namespace of its own, isolated and
        waiting for its go. Raises SandboxError."""
        backend = self._backend
        template = self._sandbox._child
        if template is None or self.channel.closed or self._destroyed:
            raise SandboxError("the SnapStart template is gone")
        self._seq += 1
        sandbox_id = f"{template.sandbox_id}-c{self._seq}"
        loop = asyncio.get_running_loop()
        try:
            cgroup = await loop.run_in_executor(None, backend.cgroups.make, sandbox_id)
        except OSError as e:
            raise SandboxError(f"cannot make a cgroup: {e}") from e
        exit = ExitWatch()
        pidfd = -1
        made = None
        netns = None
        adopting: asyncio.Future[NetNamespace] | None = None
        try:
            made = await self.channel.copy()
            self.channel.watch(made.template_pid, exit.exited)
            pidfd = os.pidfd_open(made.pid)
            await loop.run_in_executor(None, _join, cgroup.procs_files, made.pid)
            fd = os.open(f"/proc/{made.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            # Its network set up from here while it isolates itself.
            adopting = loop.run_in_executor(None, backend.net.make, True, fd)
            isolating = asyncio.ensure_future(
                asyncio.wait_for(isolate(made.ctl, self._tmp_mb), HELLO_TIMEOUT_S)
            )
            # (shielded: a cancel must not lose the namespace its thread makes anyway)
            done = await asyncio.gather(asyncio.shield(adopting), isolating, return_exceptions=True)
            if isinstance(done[0], NetNamespace):
                netns = done[0]
            for result in done:
                if isinstance(result, BaseException):
                    raise result
            assert netns is not None
        except BaseException as e:
            if netns is not None:
                netns.close()
                backend.net.forget(netns)
            elif adopting is not None:
                # Cancelled while its thread still works: release what it makes.
                adopting.add_done_callback(partial(_release_adopted, backend))
            if pidfd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            if made is not None:
                made.ctl.close()
            await loop.run_in_executor(None, cgroup.kill_all)
            await loop.run_in_executor(None, cgroup.remove)
            if isinstance(e, SandboxError | asyncio.CancelledError):
                raise
            raise SandboxError(f"cannot restore from the SnapStart template: {e}") from e
        child = _Prepared(
            template.zygote, made.pid, pidfd, made.ctl, netns, cgroup, sandbox_id, exit=exit
        )
        # The copy (made.pid) forked its namespace's PID 1, which forked the runtime.
        child.runtime_pid = _first_child(_first_child(made.pid))
        return child


def _release_adopted(backend: NamespaceBackend, future: asyncio.Future[NetNamespace]) -> None:
    if not future.cancelled() and future.exception() is None:
        netns = future.result()
        netns.close()
        backend.net.forget(netns)


def _join(procs_files: list[str], pid: int) -> None:
    for procs in procs_files:
        with open(procs, "w") as f:
            f.write(str(pid))


class RestoredSandbox(NamespaceSandbox):
    """A sandbox whose runtime is a copy of a template's (see `api.py`)."""

    def __init__(
        self, spec: SandboxSpec, backend: NamespaceBackend, template: NamespaceTemplate
    ) -> None:
        own = max(spec.memory_mb - template.shared_mb, MIN_COPY_MB)
        super().__init__(replace(spec, memory_mb=own), backend)
        self._template = template

    async def prepare(self) -> RuntimeApiEndpoint:
        child = await self._template.take()
        self._child = child
        child.exit.on_exit(self._exited)
        return RuntimeApiEndpoint(child.netns.runtime_api, f"127.0.0.1:{RUNTIME_API_PORT}")

    async def start(
        self,
        env: Mapping[str, str],
        extensions_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        child = self._child
        if child is None:
            raise SandboxError("start() before prepare()")
        spec = self._spec
        try:
            await self._configure(child)
            await self._serve_relays(child)
            problem = await asyncio.wait_for(
                send_go(child.ctl, {"env": dict(env)}, spec.output_fd), HELLO_TIMEOUT_S
            )
        except (OSError, TimeoutError) as e:
            raise SandboxError(f"sandbox {self.id}: {e or 'no hand-over'}") from e
        if problem is not None:
            raise SandboxError(f"sandbox {self.id}: {problem.get('error')}")
        self._backend.watch_memory(self)

    def terminate(self) -> None:
        # (Its first child is its namespace's PID 1, which ignores SIGTERM: the runtime.)
        child = self._child
        if child is not None and child.exit.status is None and child.runtime_pid > 0:
            with contextlib.suppress(OSError):
                signal_main_thread(child.runtime_pid, signal.SIGTERM)

    def memory_peak_mb(self) -> int:
        child = self._child
        hwm = vm_hwm_mb(child.runtime_pid) if child is not None and child.runtime_pid else 0
        return max(super().memory_peak_mb(), hwm)
