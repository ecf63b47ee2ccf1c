"""The server's side of a SnapStart template's control socket (the protocol is in
`zygote/_lamina_snapshot.py`), shared by the backends that snapshot: wait for the template to
reach its snapshot point, ask it for copies, learn each copy's pid and hear when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina.sandbox.api import SandboxError

#: the exit status reported for the copies of a template that is gone (killed with it)
KILLED = 128 + 9
#: how long each step of a copy may take (its hello, its isolation, its hand-over): each is
#: milliseconds of work; past this the copy is given up
HELLO_TIMEOUT_S = 10.0
_UCRED = struct.Struct("3i")


@dataclass
class Copy:
    """One copy, as its template made it."""

    #: its pid in the template's PID namespace (how the template reports its exit)
    template_pid: int
    #: its pid on the host (from its hello's credentials)
    pid: int
    #: its control socket (non-blocking), on which it waits for its go
    ctl: socket.socket


class TemplateChannel:
    """The template's control socket (ours, non-blocking), read on the event loop."""

    def __init__(self, ctl: socket.socket) -> None:
        ctl.setblocking(False)
        self._ctl = ctl
        self._loop = asyncio.get_running_loop()
        self.snapshotted: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, Callable[[int], None]] = {}
        self._early: dict[int, int] = {}
        self._seq = 0
        self.closed = False
        self._loop.add_reader(ctl.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self._ctl.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            try:
                message = json.loads(data)
            except ValueError:
                continue
            op = message.get("op")
            if op == "snapshotted" and not self.snapshotted.done():
                self.snapshotted.set_result(None)
            elif op == "restored":
                future = self._pending.pop(str(message.get("id")), None)
                if future is not None and not future.done():
                    if "pid" in message:
                        future.set_result(int(message["pid"]))
                    else:
                        future.set_exception(
                            SandboxError(f"restore failed: {message.get('error')}")
                        )
            elif op == "exit":
                pid, status = int(message["pid"]), int(message["status"])
                report = self._exits.pop(pid, None)
                if report is not None:
                    report(status)
                else:
                    self._early[pid] = status

    def watch(self, template_pid: int, report: Callable[[int], None]) -> None:
        """Call `report(status)` once when copy `template_pid` has exited."""
        if template_pid in self._early:
            self._loop.call_soon(report, self._early.pop(template_pid))
        elif self.closed:
            self._loop.call_soon(report, KILLED)
        else:
            self._exits[template_pid] = report

    async def copy(self) -> Copy:
        """A new copy, waiting for its go. Raises SandboxError."""
        if self.closed:
            raise SandboxError("the SnapStart template is gone")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        self._seq += 1
        request = f"r{self._seq}"
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending[request] = future
        try:
            try:
                data = json.dumps({"op": "restore", "id": request}).encode()
                socket.send_fds(self._ctl, [data], [theirs.fileno()])
            except OSError as e:
                raise SandboxError(f"the SnapStart template is gone: {e}") from e
            finally:
                theirs.close()
            template_pid = await asyncio.wait_for(future, HELLO_TIMEOUT_S)
            pid = await asyncio.wait_for(self._hello(ours), HELLO_TIMEOUT_S)
        except BaseException:
            self._pending.pop(request, None)
            ours.close()
            raise
        return Copy(template_pid, pid, ours)

    async def _hello(self, sock: socket.socket) -> int:
        """The copy's pid as the host sees it, from the credentials on its hello."""
        readable: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        self._loop.add_reader(sock.fileno(), ready)
        try:
            await readable
        finally:
            self._loop.remove_reader(sock.fileno())
        data, ancdata, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(_UCRED.size))
        if not data:
            raise SandboxError("the SnapStart copy exited before its hello")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = _UCRED.unpack(payload[: _UCRED.size])
                return int(pid)
        problem = json.loads(data) if data.startswith(b"{") else {}
        raise SandboxError(f"the SnapStart copy failed: {problem.get('error', data[:200])}")

    def close(self) -> None:
        """Close the socket: the template kills its copies and exits. Copies whose exit was
        not reported yet are reported killed."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._ctl.fileno())
        self._ctl.close()
        if not self.snapshotted.done():
            self.snapshotted.set_exception(SandboxError("the runtime exited before its snapshot"))
            self.snapshotted.exception()  # (retrieved: nobody may be waiting)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxError("the SnapStart template is gone"))
        self._pending.clear()
        exits, self._exits = self._exits, {}
        for report in exits.values():
            report(KILLED)


async def snapshotted(sock: socket.socket, exited: asyncio.Future[int]) -> TemplateChannel:
    """The channel of a template sandbox (`sock` its control socket) once its runtime is at
    its snapshot point; SandboxError if the runtime exits first (`exited` done)."""
    channel = TemplateChannel(sock)
    waits: list[asyncio.Future[object]] = [channel.snapshotted, exited]  # type: ignore[list-item]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if not channel.snapshotted.done() or channel.snapshotted.exception() is not None:
        channel.close()
        raise SandboxError("the runtime exited before its snapshot")
    return channel


async def isolate(ctl: socket.socket, tmp_mb: int) -> None:
    """Let a copy (in its cgroup now) isolate itself; returns once it is ready for its go.
    Raises SandboxError with what it reported if it could not."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(ctl, json.dumps({"isolate": True, "tmp_mb": tmp_mb}).encode())
    answer = await loop.sock_recv(ctl, 1 << 16)
    if b'"ready"' not in answer:
        problem = answer.decode(errors="replace") or "it exited"
        raise SandboxError(f"the SnapStart copy could not isolate itself: {problem}")


async def send_go(ctl: socket.socket, go: dict[str, Any], output_fd: int) -> dict[str, Any] | None:
    """Hand a copy its go (environment, output) and wait for its hand-over: None once it
    runs the function, else the problem it reported."""
    loop = asyncio.get_running_loop()
    socket.send_fds(ctl, [json.dumps(go).encode()], [output_fd])
    answer = await loop.sock_recv(ctl, 1 << 16)
    if not answer:
        return None
    try:
        problem = json.loads(answer)
    except ValueError:
        problem = {"error": answer.decode(errors="replace")}
    return problem if isinstance(problem, dict) else {"error": str(problem)}


def vm_hwm_mb(pid: int) -> int:
    """A process's peak resident memory (VmHWM, pages shared with its template included), in
    MB rounded up; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return -(-int(line.split()[1]) // 1024)
    except (OSError, ValueError, IndexError):
        pass
    return 0
