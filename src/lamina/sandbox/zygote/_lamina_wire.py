"""Messages on a zygote's and a SnapStart template's control sockets (standard library only):
one JSON object per SOCK_SEQPACKET message, descriptors alongside by SCM_RIGHTS. Shared by
`zygote.py` and `_lamina_snapshot.py`, which run as scripts with this directory first on
sys.path (hence the name: no function's module can be taken for it)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any


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
