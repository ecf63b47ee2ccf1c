"""What `zygote.py` and `_lamina_snapshot.py` share (standard library only): the messages on
their control sockets (one JSON object per SOCK_SEQPACKET message, descriptors alongside by
SCM_RIGHTS) and a sandbox's init. Both run as scripts with this directory first on sys.path
(hence the name: no function's module can be taken for it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from typing import Any, NoReturn


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and its descriptors (not inheritable); (None, []) at end of file."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 8)
    for fd in fds:
        os.set_inheritable(fd, False)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def run_init(runtime: int, init_fd: int) -> NoReturn:
    """Be a sandbox's init: default dispositions for every signal (signals a function sends
    its namespace's init are then dropped by the kernel), then reap until `runtime` exits and
    exit as it did: the code of a normal exit, 128 + N for death by signal N (the shell's
    convention, read back by the server). With `init_fd` (>= 0) the native init (`init.c`)
    is exec'd to do the same with a fraction of the memory; the loop here if it cannot be."""
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
    if init_fd >= 0:
        with contextlib.suppress(OSError):  # e.g. a noexec mount: the loop below
            os.execve(init_fd, ["init", str(runtime)], {})
    code = 1
    try:
        while True:
            pid, status = os.wait()
            if pid == runtime:
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code
                break
    except ChildProcessError:
        pass
    finally:
        os._exit(code)
