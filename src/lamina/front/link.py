"""The link between the server and one front worker: a socket pair, framed messages, and
connections handed over with their descriptor.

The server makes the pair and passes one end to the worker it starts (nothing listens: no
other process can reach the link, whatever its user or namespace). Over it go, in frames of a
4-byte big-endian length and a `marshal`-encoded tuple (both ends are Lamina's own processes,
so no untrusted bytes are decoded):

- worker → server `("i", id, conn, close, raw_path, query, headers, client, akid, body)`: an
  Invoke the worker read on its connection `conn` and whose signature it verified (`akid`:
  the access key that signed it; None when authentication is off). The first Invoke of a
  connection carries the connection's descriptor: the server writes the response to the
  client itself (one hop fewer than through the worker), and closes the connection after it
  if `close`;
- server → worker `("w", id, ok)`: that response is written (or could not be: `ok` false),
  so the worker may read the connection's next request;
- worker → server `("f", conn)`: the connection is gone; the server closes its copy;
- worker → server `("h", client, buffered, conn)` with the connection's descriptor attached
  (SCM_RIGHTS): a connection whose request the worker does not serve itself, handed over with
  the bytes already read from it, to be served by the server from there on (a copy the server
  holds for writing Invokes' responses, `conn`, is closed);
- worker → server `("k", akid)` and server → worker `("s", akid, secret)`: a long-term access
  key's secret, asked for the first time a request names the key (None: no such key).

A frame that carries a descriptor says so in its length's top bit. The descriptor rides on the
frame's first byte, so by the time the frame is whole it has arrived: they are matched first
in, first out.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import marshal
import os
import re
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
#: the length's top bit: a descriptor came with the frame
_WITH_FD = 1 << 31
#: a frame's largest size: an Invoke's 6 MB body and its headers, with room to spare
FRAME_MAX_BYTES = 64 * 1024 * 1024
#: descriptors one read takes at most (a read holds a few frames at a time)
_FDS_PER_READ = 64
_READ_BYTES = 256 * 1024

#: the Invoke path, matched on the percent-decoded path: what the server routes to Invoke,
#: and so what a worker may forward as one (one pattern for both, so they cannot disagree)
INVOKE_PATH = re.compile(r"/2015-03-31/functions/([^/]+)/invocations/?")

INVOKE = "i"
WRITTEN = "w"
FORGET = "f"
HANDOVER = "h"


class LinkClosed(Exception):
    """The other end is gone."""


class Link:
    """One end of a link, on the running loop: `send` queues a frame (and a descriptor to
    hand over with it), `on_frame(frame, fd)` is called for each whole frame received (`fd`
    is -1 unless one came with it; the callee owns it), and `on_close()` once when the other
    end goes or a frame cannot be read."""

    def __init__(
        self,
        sock: socket.socket,
        on_frame: Callable[[tuple[Any, ...], int], None],
        on_close: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_frame = on_frame
        self._on_close = on_close
        self._in = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        #: frames waiting to go out: [data, offset, fd to attach (-1: none or sent)]
        self._out: collections.deque[list[Any]] = collections.deque()
        self._writing = False
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frame: tuple[Any, ...], fd: int = -1) -> None:
        """Queue `frame` (with `fd`, which stays the caller's to close once this returns: the
        kernel takes its own reference when it is sent). Raises `LinkClosed`."""
        if self._closed:
            raise LinkClosed()
        data = marshal.dumps(frame)
        size = len(data)
        if fd >= 0:
            fd = os.dup(fd)  # ours until sent, whatever the caller does with its own
            size |= _WITH_FD
        self._out.append([_LENGTH.pack(size) + data, 0, fd])
        if not self._writing:
            self._flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock.fileno())
        for entry in self._out:
            if entry[2] >= 0:
                os.close(entry[2])
        self._out.clear()
        while self._fds:
            os.close(self._fds.popleft())
        self._sock.close()
        self._on_close()

    # -- writing ---------------------------------------------------------------------------

    def _flush(self) -> None:
        while self._out:
            entry = self._out[0]
            data, offset, fd = entry
            try:
                if fd >= 0:
                    fds = array.array("i", [fd])
                    sent = self._sock.sendmsg(
                        [memoryview(data)[offset:]],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
                    )
                    os.close(fd)
                    entry[2] = -1
                else:
                    sent = self._sock.send(memoryview(data)[offset:])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("front link: send failed: %s", e)
                self.close()
                return
            offset += sent
            if offset < len(data):
                entry[1] = offset
                break
            self._out.popleft()
        want = bool(self._out)
        if want and not self._writing:
            self._loop.add_writer(self._sock.fileno(), self._flush)
        elif not want and self._writing:
            self._loop.remove_writer(self._sock.fileno())
        self._writing = want

    # -- reading ---------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self._sock.recvmsg(
                _READ_BYTES,
                socket.CMSG_SPACE(_FDS_PER_READ * 4),
                socket.MSG_CMSG_CLOEXEC,
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("front link: receive failed: %s", e)
            self.close()
            return
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            self.close()
            return
        self._in += data
        self._frames()

    def _frames(self) -> None:
        buf = self._in
        start = 0
        while len(buf) - start >= 4:
            (size,) = _LENGTH.unpack_from(buf, start)
            with_fd = bool(size & _WITH_FD)
            size &= ~_WITH_FD
            if size > FRAME_MAX_BYTES:
                log.error("front link: a frame of %d bytes: closing the link", size)
                self.close()
                return
            end = start + 4 + size
            if len(buf) < end:
                break
            try:
                frame = marshal.loads(memoryview(buf)[start + 4 : end])
            except (ValueError, EOFError, TypeError) as e:
                log.error("front link: a frame that cannot be read (%s): closing the link", e)
                self.close()
                return
            start = end
            fd = -1
            if with_fd:
                if not self._fds:
                    log.error("front link: a frame without its descriptor: closing the link")
                    self.close()
                    return
                fd = self._fds.popleft()
            try:
                self._on_frame(frame, fd)
            except Exception:  # one bad frame must not stop the link
                log.exception("front link: handling a frame failed")
            if self._closed:
                return
        if start:
            del buf[:start]
