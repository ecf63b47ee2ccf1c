"""Answering a front worker's clients directly: the server holds a copy of each connection a
worker forwarded an Invoke from, and writes the response to it itself (one hop fewer than
sending it back through the worker, which reads the connection's next request once told the
answer is out). See `lamina.front.link` for the frames that go with it.

Only one process writes to a connection at a time: the worker writes nothing to a client whose
Invoke it forwarded, and hands a connection over (to be served here, by uvicorn) only after
being told the last answer is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import socket
import time

log = logging.getLogger(__name__)


class ResponseWriter:
    """HTTP/1.1 responses as the server's uvicorn writes them (its `date` and `server`
    headers, a `content-length`)."""

    def __init__(self) -> None:
        self._date = b""
        self._date_at = 0

    def response(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, close: bool
    ) -> bytes:
        try:
            reason = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        has_length = False
        for name, value in headers:
            if name.lower() == b"content-length":
                has_length = True
            lines.append(name + b": " + value)
        if not has_length:
            lines.append(b"content-length: %d" % len(body))
        lines.append(b"date: " + self._date_header())
        lines.append(b"server: uvicorn")
        if close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def _date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = email.utils.formatdate(now, usegmt=True).encode()
        return self._date


class Clients:
    """The connections of one worker that this server answers on, by the worker's id."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}
        #: connections with a write waiting for room, and what waits for it
        self._writing: dict[int, asyncio.Future[None]] = {}

    def add(self, conn_id: int, sock: socket.socket) -> None:
        sock.setblocking(False)
        old = self._socks.pop(conn_id, None)
        if old is not None:
            old.close()
        self._socks[conn_id] = sock

    async def write(self, conn_id: int, data: bytes, close: bool) -> bool:
        """Write `data` to the connection (then close this copy, if `close`); False if the
        connection is gone or fails."""
        sock = self._socks.get(conn_id)
        if sock is None:
            return False
        view = memoryview(data)
        ok = True
        try:
            while view:
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    await self._room(conn_id, sock)
                    if self._socks.get(conn_id) is not sock:
                        return False  # closed meanwhile
                    continue
                view = view[sent:]
        except OSError as e:
            log.debug("front workers: a client went away mid-answer: %s", e)
            ok = False
        if close or not ok:
            self.close(conn_id)
        return ok

    async def _room(self, conn_id: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._writing[conn_id] = ready
        fd = sock.fileno()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, writable)
        try:
            await ready
        finally:
            self._writing.pop(conn_id, None)
            with contextlib.suppress(Exception):
                loop.remove_writer(fd)

    def close(self, conn_id: int) -> None:
        """Close this server's copy of the connection (the worker's stays its own)."""
        sock = self._socks.pop(conn_id, None)
        if sock is None:
            return
        waiting = self._writing.pop(conn_id, None)
        if waiting is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(sock.fileno())
            if not waiting.done():
                waiting.set_result(None)
        sock.close()

    def close_all(self) -> None:
        for conn_id in list(self._socks):
            self.close(conn_id)
