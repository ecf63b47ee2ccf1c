"""The `process` backend: each environment is an ordinary child process, unprivileged.

It runs anywhere (no root, no namespaces) and isolates nothing beyond a process group, a
private scratch directory (TMPDIR) and a clean environment; the `namespace` backend is the
isolating one (and the only one that runs container-image functions: this one refuses them).
Exits are watched with a pidfd on the event loop, not a thread per child.

Memory: without a cgroup, the limit is enforced by watching the runtime process's resident
set (`/proc/PID/statm`) every `MEMORY_POLL_S` and killing it when it passes `memory_mb`. That
misses children of the runtime and spikes shorter than the poll interval; the namespace
backend's cgroup does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from lamina.sandbox._signals import signal_main_thread
from lamina.sandbox.api import (
    IMAGE_NEEDS_NAMESPACE,
    RUNTIME_UMASK,
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

MEMORY_POLL_S = 0.1
#: a template's entry point (the fork-server that runs the bootstrap, see `_process_templates`)
SNAPSHOT_ENTRY = Path(__file__).resolve().parent / "zygote" / "_lamina_snapshot.py"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024


class ProcessSandbox:
    def __init__(
        self, spec: SandboxSpec, root: Path, backend: ProcessBackend | None = None
    ) -> None:
        self._spec = spec
        #: where sandboxes' directories are, and the backend (what a template's copies need)
        self.root = root
        self.backend = backend
        self._dir = root / spec.sandbox_id
        self._scratch = self._dir / "tmp"
        self._proc: subprocess.Popen[bytes] | None = None
        #: the extensions' process group (the first extension's pid), once started
        self._ext_group: int | None = None
        self._exit = ExitWatch()
        self._oom = False
        self._peak_bytes = 0
        self._destroyed = False
        self._status_fd: int | None = None
        self._hwm_read_at = 0.0
        #: a template's control socket (ours), once started (see `_process_templates`)
        self._template_sock: socket.socket | None = None

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

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
        spec = self._spec
        env = dict(env)
        env["TMPDIR"] = str(self._scratch)
        loop = asyncio.get_running_loop()
        if spec.extensions:
            try:
                await loop.run_in_executor(None, self._spawn_extensions, env)
            except OSError as e:
                raise SandboxError(f"cannot start extensions: {e}") from e
            if extensions_started is not None:
                await extensions_started()
        try:
            # Opening the log, fork and exec all block: off the event loop.
            self._proc = await loop.run_in_executor(None, self._spawn, env)
        except OSError as e:
            raise SandboxError(f"cannot start {spec.argv[0]}: {e}") from e
        try:
            pidfd = os.pidfd_open(self._proc.pid)
        except OSError:
            # No pidfd (old kernel): fall back to a waiter thread.
            proc = self._proc
            fut = loop.run_in_executor(None, proc.wait)
            fut.add_done_callback(lambda f: self._exit.exited(f.result()))
            return
        loop.add_reader(pidfd, self._pidfd_ready, pidfd)
        with contextlib.suppress(OSError):
            self._status_fd = os.open(f"/proc/{self._proc.pid}/status", os.O_RDONLY)

    def _spawn_extensions(self, env: dict[str, str]) -> None:
        """Each extension a process of one group of their own (killed whole), its output on
        the extensions' pipe; an extension that cannot be executed is reported on it."""
        spec = self._spec
        self._scratch.mkdir(parents=True, mode=0o700)
        out = spec.extension_output_fd
        for path in spec.extensions:
            try:
                proc = subprocess.Popen(
                    [path],
                    env=env,
                    cwd=spec.task_root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    process_group=self._ext_group or 0,
                    close_fds=True,
                )
            except OSError as e:
                if out is not None:
                    os.write(out, f"lamina: extension {path} failed to start: {e}\n".encode())
                continue
            if self._ext_group is None:
                self._ext_group = proc.pid
            # Reaped by a waiter thread: the process backend has no init to do it.
            threading.Thread(target=proc.wait, daemon=True).start()

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        spec = self._spec
        self._scratch.mkdir(parents=True, mode=0o700, exist_ok=True)
        argv, pass_fds = list(spec.argv), tuple[int, ...]()
        if spec.snapshot:
            # A template: the bootstrap run by the fork-server's entry point, which hands
            # it its snapshot point (see `_process_templates`).
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._template_sock = ours
            argv = [*argv[:-1], str(SNAPSHOT_ENTRY), str(theirs.fileno()), argv[-1]]
            pass_fds = (theirs.fileno(),)
        try:
            return self._popen(argv, env, pass_fds)
        finally:
            if spec.snapshot:
                theirs.close()

    def _popen(
        self, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...]
    ) -> subprocess.Popen[bytes]:
        spec = self._spec
        return subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            env=env,
            cwd=spec.task_root,
            stdin=subprocess.DEVNULL,
            stdout=spec.output_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole
            close_fds=True,
            umask=RUNTIME_UMASK,
        )

    def _pidfd_ready(self, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._close_status()
        assert self._proc is not None
        self._exit.exited(self._proc.wait())

    @property
    def out_of_memory(self) -> bool:
        return self._oom

    @property
    def finished(self) -> bool:
        """Exited or destroyed: nothing left to watch."""
        return self._destroyed or self._exit.status is not None

    def terminate(self) -> None:
        if self._proc is not None and self._exit.status is None:
            with contextlib.suppress(OSError):  # gone, or no longer ours
                signal_main_thread(self._proc.pid, signal.SIGTERM)

    def init_done(self) -> None:
        pass

    def freeze(self) -> None:
        # No cgroup here: SIGSTOP to the runtime's process group stops the runtime and what
        # it started (unless a child left the group with setsid). A stopped process can
        # still be killed, so `destroy()` needs no thaw.
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT)

    def _signal_group(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is not None and self._exit.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit.on_exit(callback)

    def memory_peak_mb(self) -> int:
        # VmHWM (the peak resident set) from /proc/PID/status, read at most once per poll
        # interval: the kernel renders the whole file for each read, which costs more than a
        # warm invocation does; in between, the poller's samples stand in.
        now = time.monotonic()
        if (
            self._status_fd is not None
            and self._exit.status is None
            and now - self._hwm_read_at >= MEMORY_POLL_S
        ):
            self._hwm_read_at = now
            with contextlib.suppress(OSError, ValueError):
                status = os.pread(self._status_fd, 4096, 0)
                at = status.find(b"VmHWM:")
                if at >= 0:
                    hwm = int(status[at + 6 : status.index(b"kB", at)]) * 1024
                    self._peak_bytes = max(self._peak_bytes, hwm)
        return -(-self._peak_bytes // _MB)

    def memory_usage_mb(self) -> int | None:
        # The runtime's resident set (pages it shares with other processes counted whole).
        proc = self._proc
        if proc is None or self._exit.status is not None:
            return None
        try:
            with open(f"/proc/{proc.pid}/statm", "rb") as f:
                return -(-int(f.read().split()[1]) * _PAGE // _MB)
        except (OSError, ValueError, IndexError):
            return None

    def check_memory(self) -> None:
        """Kill the runtime if its resident memory is over the function's limit."""
        proc = self._proc
        if proc is None or self._exit.status is not None or self._oom:
            return
        try:
            with open(f"/proc/{proc.pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return
        self._peak_bytes = max(self._peak_bytes, rss)
        if rss > self._spec.memory_mb * _MB:
            self._oom = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _close_status(self) -> None:
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None

    async def destroy(self) -> None:
        self._destroyed = True
        self._close_status()
        if self._template_sock is not None:  # a template that never got to its snapshot
            self._template_sock.close()
            self._template_sock = None
        if self._ext_group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._ext_group, signal.SIGKILL)
        proc = self._proc
        if proc is not None and self._exit.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(self._exit.done)
        elif proc is not None:
            # The runtime is gone; anything it left in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: shutil.rmtree(self._dir, ignore_errors=True)
        )

    async def snapshotted(self) -> Template:
        from lamina.sandbox._process_templates import wait_template

        sock, self._template_sock = self._template_sock, None
        if sock is None:
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        return await wait_template(self, sock, self._exit.done)


class ProcessBackend:
    name = "process"
    lambda_paths = False
    description = "process (no isolation beyond a process group)"

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        # Sandboxes left by a crashed server own nothing any more.
        for leftover in root.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        self._live: set[ProcessSandbox] = set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        pass

    def can_snapshot(self, spec: SandboxSpec) -> bool:
        # The Python bootstrap, started by the fork-server's entry point
        # (`_process_templates`); extensions are processes of their own, never copied.
        return spec.python_in_zygote and not spec.extensions

    def expect(self, runtimes: Sequence[RuntimeSpec]) -> None:
        pass

    def create(self, spec: SandboxSpec) -> ProcessSandbox:
        if spec.image_root is not None:
            # An image's root would have to be the runtime's `/`: nothing here can do that
            # (running its entry point on the host's filesystem would be another function).
            raise SandboxError(IMAGE_NEEDS_NAMESPACE)
        if spec.snapshot and not self.can_snapshot(spec):
            raise SandboxError(SNAPSHOT_UNSUPPORTED)
        sandbox = ProcessSandbox(spec, self._root, self)
        self.watch(sandbox)
        return sandbox

    def watch(self, sandbox: ProcessSandbox) -> None:
        """Watch a sandbox's memory (every one made here, restored copies included)."""
        self._live.add(sandbox)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_memory())

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_POLL_S)
            for sandbox in list(self._live):
                if sandbox.finished:
                    self._live.discard(sandbox)
                else:
                    sandbox.check_memory()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
