"""The `process` backend: each environment is an ordinary child process, unprivileged.

It runs anywhere (no root, no namespaces) and isolates nothing beyond a process group, a
private scratch directory (TMPDIR) and a clean environment; the `namespace` backend is the
isolating one. Exits are watched with a pidfd on the event loop, not a thread per child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from lamina.sandbox.api import ExitCallback, ExitWatch, SandboxError, SandboxSpec


class ProcessSandbox:
    def __init__(self, spec: SandboxSpec, root: Path) -> None:
        self._spec = spec
        self._dir = root / spec.sandbox_id
        self._scratch = self._dir / "tmp"
        self._proc: subprocess.Popen[bytes] | None = None
        self._exit = ExitWatch()

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def scratch_dir(self) -> Path:
        return self._scratch

    async def start(self) -> None:
        spec = self._spec
        env = dict(spec.env)
        env["TMPDIR"] = str(self._scratch)
        loop = asyncio.get_running_loop()
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

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        spec = self._spec
        self._scratch.mkdir(parents=True, mode=0o700)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            return subprocess.Popen(
                list(spec.argv),
                env=env,
                cwd=spec.task_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole
                close_fds=True,
            )

    def _pidfd_ready(self, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        assert self._proc is not None
        self._exit.exited(self._proc.wait())

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit.on_exit(callback)

    async def destroy(self) -> None:
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


class ProcessBackend:
    name = "process"

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        # Sandboxes left by a crashed server own nothing any more.
        for leftover in root.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def create(self, spec: SandboxSpec) -> ProcessSandbox:
        return ProcessSandbox(spec, self._root)

    async def close(self) -> None:
        return None
