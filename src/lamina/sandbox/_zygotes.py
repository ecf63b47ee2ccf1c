"""The server's side of the zygotes (`zygote/zygote.py`): start them, ask them for children,
hear about exits.

One zygote per runtime interpreter that runs the Python bootstrap in-process, and one "exec"
zygote (any Python) whose children exec Node.js, a custom runtime's bootstrap or a container
image's entry point after they are isolated (an image's children with its root as theirs).
A zygote that dies takes its children with it (they have a parent-death signal): every child
it had is reported as killed and the next request starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lamina.sandbox.api import RUNTIME_UMASK

log = logging.getLogger(__name__)

ZYGOTE = Path(__file__).resolve().parent / "zygote" / "zygote.py"
KILLED = -9

ExitReport = Callable[[int], None]


class ZygoteError(OSError):
    pass


class Zygote:
    def __init__(self, interpreter: str, config: dict[str, Any]) -> None:
        self.interpreter = interpreter
        self.config = config
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, ExitReport] = {}
        self._early_exits: dict[int, int] = {}
        self._ready: asyncio.Future[None] | None = None
        self._seq = 0
        self.version = ""

    @property
    def alive(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
        env["PYTHONIOENCODING"] = "utf-8"
        try:
            self._proc = await loop.run_in_executor(
                None,
                lambda: subprocess.Popen(
                    # -S: no `site`, so the host's site-packages are on no sys.path a Python
                    # runtime inherits (its children see only what Lambda's would).
                    [self.interpreter, "-B", "-S", str(ZYGOTE), str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=sys.stderr,
                    env=env,
                    cwd="/",
                    # The zygote makes its children's mount points and runs their runtimes:
                    # not with the server's private umask.
                    umask=RUNTIME_UMASK,
                ),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._send({**self.config, "op": "init"})
        reply = await self._receive_first()
        if not reply.get("ok"):
            raise ZygoteError(f"zygote {self.interpreter} failed to start: {reply}")
        self.version = str(reply.get("python", ""))
        loop.add_reader(ours.fileno(), self._readable)

    async def _receive_first(self) -> dict[str, Any]:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self._sock, 1 << 16), 30)
        except TimeoutError:
            data = b""
        if not data:
            self._lost()
            raise ZygoteError(f"zygote {self.interpreter} exited at start")
        return dict(json.loads(data))

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self._sock is None:
            raise ZygoteError("zygote is gone")
        data = json.dumps(message).encode()
        try:
            if fds:
                socket.send_fds(self._sock, [data], fds)
            else:
                self._sock.send(data)
        except OSError as e:
            self._lost()
            raise ZygoteError(f"zygote is gone: {e}") from e

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            message = json.loads(data)
            op = message.get("op")
            if op == "spawned":
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    if "pid" in message:
                        future.set_result(int(message["pid"]))
                    else:
                        future.set_exception(ZygoteError(message.get("error", "spawn failed")))
            elif op == "exit":
                pid, status = int(message["pid"]), int(message["status"])
                report = self._exits.pop(pid, None)
                if report is not None:
                    report(status)
                else:
                    self._early_exits[pid] = status

    async def spawn(
        self,
        cgroups: list[str],
        child_ctl: int,
        netns: int,
        nice: int = 0,
        image: str | None = None,
        template: bool = False,
    ) -> int:
        """A new child (its pid on the host); the descriptors are sent, not consumed. `nice`:
        the CPU priority it isolates itself at (it takes 0 back when claimed); `image`: a
        container image's unpacked root, its root instead of the host's system directories
        (an exec zygote's child only); `template`: a SnapStart template's child (a Python
        zygote's only, see `_ns_templates`)."""
        await self.start()
        self._seq += 1
        request = f"s{self._seq}"
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        message: dict[str, Any] = {"op": "spawn", "id": request, "cgroups": cgroups, "nice": nice}
        if image is not None:
            message["image"] = image
        if template:
            message["template"] = True
        self._send(message, [child_ctl, netns])
        return await future

    def watch(self, pid: int, report: ExitReport) -> None:
        """Call `report(status)` once when child `pid` has exited (and been reaped)."""
        if pid in self._early_exits:
            asyncio.get_running_loop().call_soon(report, self._early_exits.pop(pid))
        elif self._sock is None:
            asyncio.get_running_loop().call_soon(report, KILLED)
        else:
            self._exits[pid] = report

    def _lost(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._ready = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ZygoteError("zygote exited"))
        self._pending.clear()
        exits, self._exits = self._exits, {}
        for report in exits.values():
            report(KILLED)  # children die with their zygote (parent-death signal)
        if self._proc is not None:
            proc, self._proc = self._proc, None
            asyncio.get_running_loop().run_in_executor(None, proc.wait)
            log.warning("zygote %s exited", self.interpreter)

    async def close(self) -> None:
        proc = self._proc
        self._lost()
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def close_fd(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
