"""A front worker: a process that reads Invoke requests off the server's main address and
verifies their signatures, so that this work is done beside the server's event loop rather
than on it (the server is one Python thread; the workers are more).

The server starts `--workers` of them (`lamina.api.workers`); each inherits the main address's
listening socket and one end of a link to the server (`lamina.front.link`), and all of them
accept connections from that socket. On each connection a worker takes requests one at a
time (HTTP/1.1, keep-alive; pipelined requests wait their turn):

- a plain Invoke — `POST /2015-03-31/functions/<name>/invocations`, framed by one
  `Content-Length`, signed with SigV4 in the Authorization header by a long-term access key
  for `lambda` (or anything, with authentication off) — is verified here (the same
  `auth.sigv4.Verifier` as the server's), then sent over the link; the server authorizes
  and runs it exactly as it runs an Invoke it reads itself, and writes the response to the
  client itself (the connection's descriptor went along with its first Invoke), then tells
  the worker, which reads the connection's next request;
- anything else (another API, a function URL, a request that fails verification, chunked
  bodies, `Expect`, a role session's key, anything unusual) is handed over: the connection's
  descriptor and the bytes read from it go to the server, which serves that connection from
  then on as if it had accepted it. Errors are therefore always the server's own answers.

The worker knows no secrets until it needs one: it asks the server for the secret of an access
key the first time a request names it, and keeps it (a key's secret never changes; a deleted
key is refused by the server, which looks the key up again for every forwarded Invoke).

It ends when the link closes (the server is gone) or on SIGTERM: it stops accepting and taking
requests, closes idle connections, waits for the answers to what it forwarded, and closes the
rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
from typing import Any
from urllib.parse import unquote

from lamina.auth.principal import Principal
from lamina.auth.sigv4 import AuthError, SignedRequest, UnrecognizedClient, Verifier
from lamina.front.link import FORGET, HANDOVER, INVOKE, INVOKE_PATH, WRITTEN, Link, LinkClosed

log = logging.getLogger("lamina.front")

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\r\n\x00]*?)[ \t]*")
_REQUEST_LINE = re.compile(rb"POST (/[!-~]*) HTTP/1\.1")
#: a request head this long without its end is not one this worker takes
_HEAD_MAX_BYTES = 32 * 1024
#: the largest body taken here (Lambda's synchronous payload limit, with room for headers
#: counted apart): anything larger goes to the server, which refuses it in Lambda's words
_BODY_MAX_BYTES = 6 * 1024 * 1024
#: past this size, the body's hash is taken off the event loop
_HASH_INLINE_MAX = 256 * 1024
#: seconds an idle keep-alive connection is kept (uvicorn's default, as the server's own)
KEEP_ALIVE_S = 5.0
#: headers that make a request one for the server to read itself
_NOT_HERE = frozenset(
    {
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"x-amz-target",
        b"x-amz-security-token",
    }
)
_PR_SET_PDEATHSIG = 1


class _Secrets:
    """The access keys' secrets this worker has needed, asked of the server on first use."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}

    def secret_for(self, access_key_id: str, session_token: str | None) -> str:
        secret = self.known.get(access_key_id)
        if secret is None or session_token is not None:
            raise UnrecognizedClient()
        return secret

    def principal(self, access_key_id: str) -> Principal:
        # Who the key is, and whether it still is, is the server's to say (per Invoke).
        return Principal(access_key_id=access_key_id, arn="", account="")


class _Request:
    __slots__ = ("body", "close", "headers", "names", "query", "raw_path", "size")

    def __init__(
        self,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        names: dict[str, str],
        body: bytes,
        close: bool,
        size: int,
    ) -> None:
        #: the request's bytes on the connection, head and body
        self.size = size
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.names = names
        self.body = body
        self.close = close


class Worker:
    """The worker's state: its link, the requests in flight, the secrets it knows."""

    def __init__(self, link_sock: socket.socket, region: str, auth: bool) -> None:
        self.auth = auth
        self.secrets = _Secrets()
        self.verifier = Verifier(self.secrets, region)
        self.link = Link(link_sock, self._frame, self._link_closed)
        #: the connections waiting for a response, by request id
        self.waiting: dict[int, FrontProtocol] = {}
        self.secret_waits: dict[str, asyncio.Future[str | None]] = {}
        self.connections: set[FrontProtocol] = set()
        #: stopping: each connection closes once its request is answered
        self.closing = False
        self.stopped = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self._next_conn = 0

    def new_conn_id(self) -> int:
        self._next_conn += 1
        return self._next_conn

    def forward(self, request: _Request, akid: str | None, protocol: FrontProtocol) -> None:
        """Send `request` to the server, which writes the response to the client itself;
        `protocol.written` is told when it has. The connection's descriptor goes along the
        first time. Raises `LinkClosed` when the server is gone."""
        self._next_id += 1
        rid = self._next_id
        fd = -1
        if not protocol.shared:
            fd = protocol.fileno()
        self.link.send(
            (
                INVOKE,
                rid,
                protocol.conn_id,
                request.close or self.closing,
                request.raw_path,
                request.query,
                request.headers,
                protocol.client,
                akid,
                request.body,
            ),
            fd,
        )
        protocol.shared = True
        self.waiting[rid] = protocol

    def forget(self, conn_id: int) -> None:
        """Tell the server a connection it writes to is gone here (it closes its copy)."""
        with contextlib.suppress(LinkClosed):
            self.link.send((FORGET, conn_id))

    async def secret(self, akid: str) -> str | None:
        """The secret of `akid`, asked of the server (None: no such long-term key)."""
        known = self.secrets.known.get(akid)
        if known is not None:
            return known
        wait = self.secret_waits.get(akid)
        if wait is None:
            wait = self.secret_waits[akid] = asyncio.get_running_loop().create_future()
            self.link.send(("k", akid))
        return await asyncio.shield(wait)

    def hand_over(self, protocol: FrontProtocol, buffered: bytes) -> None:
        self.link.send((HANDOVER, protocol.client, buffered, protocol.conn_id), protocol.fileno())

    def _frame(self, frame: tuple[Any, ...], fd: int) -> None:
        kind = frame[0]
        if kind == WRITTEN:
            _, rid, ok = frame
            protocol = self.waiting.pop(rid, None)
            if protocol is not None:
                protocol.written(ok)
        elif kind == "s":
            _, akid, secret = frame
            if secret is not None:
                self.secrets.known[akid] = secret
            wait = self.secret_waits.pop(akid, None)
            if wait is not None and not wait.done():
                wait.set_result(secret)
        if fd >= 0:
            os.close(fd)

    def _link_closed(self) -> None:
        waiting, self.waiting = list(self.waiting.values()), {}
        for protocol in waiting:
            protocol.abort()
        for future in self.secret_waits.values():
            if not future.done():
                future.set_exception(ConnectionError("the server is gone"))
        if not self.stopped.done():
            self.stopped.set_result(None)


class FrontProtocol(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.gone = False
        self.client: Any = None
        self._idle: asyncio.TimerHandle | None = None
        self.conn_id = worker.new_conn_id()
        #: whether the server holds a copy of this connection's descriptor
        self.shared = False
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = tuple(peer[:2]) if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.worker.connections.add(self)
        self._wait_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.worker.connections.discard(self)
        self._stop_idle()
        if self.shared:
            self.shared = False
            self.worker.forget(self.conn_id)

    def fileno(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("socket").fileno())

    def data_received(self, data: bytes) -> None:
        self._stop_idle()
        self.buf += data
        if not self.busy:
            self._next()

    def _wait_idle(self) -> None:
        """Close a keep-alive connection left idle for `KEEP_ALIVE_S`, as uvicorn does."""
        self._stop_idle()
        self._idle = asyncio.get_running_loop().call_later(KEEP_ALIVE_S, self._idle_over)

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_over(self) -> None:
        self._idle = None
        if self.idle and self.transport is not None and not self.gone:
            self.transport.close()

    def eof_received(self) -> bool:
        # A client that stops sending still gets the answer to what it sent.
        return self.busy

    @property
    def idle(self) -> bool:
        return not self.busy and not self.buf

    def _next(self) -> None:
        """Take the next whole request in the buffer, if there is one."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _HEAD_MAX_BYTES:
                self._hand_over()
            return
        parsed = _parse_head(bytes(buf[:end]), self.worker.auth)
        if parsed is None:
            self._hand_over()
            return
        raw_path, query, headers, names, length, close = parsed
        start = end + 4
        if len(buf) < start + length:
            return  # the rest of the body is still coming
        body = bytes(buf[start : start + length])
        request = _Request(raw_path, query, headers, names, body, close, start + length)
        self.busy = True
        worker = self.worker
        if not worker.auth:
            self._forward(request, None)
            return
        akid = _signing_key(request)
        if akid is None:
            self._hand_over()
        elif akid in worker.secrets.known and len(body) <= _HASH_INLINE_MAX:
            # The common case, without a task: verified and sent within this read.
            if self._verified(request):
                self._forward(request, akid)
            else:
                self._hand_over()
        else:
            asyncio.get_running_loop().create_task(self._verify_later(request, akid))

    async def _verify_later(self, request: _Request, akid: str) -> None:
        """Verify once the key's secret is known (asked of the server), or off the loop for
        a large body; then forward, or hand the connection over."""
        try:
            if await self.worker.secret(akid) is None:
                verified = False
            elif len(request.body) > _HASH_INLINE_MAX:
                verified = await asyncio.to_thread(self._verified, request)
            else:
                verified = self._verified(request)
        except (ConnectionError, LinkClosed):  # the server is gone: nobody can answer
            self.abort()
            return
        if verified:
            self._forward(request, akid)
        else:
            self._hand_over()

    def _verified(self, request: _Request) -> bool:
        signed = SignedRequest(
            "POST",
            request.raw_path.decode("latin-1"),
            request.query.decode("latin-1"),
            request.names,
            request.body,
        )
        try:
            self.worker.verifier.verify(signed, "lambda")
        except AuthError:
            return False
        return True

    def _forward(self, request: _Request, akid: str | None) -> None:
        if self.gone:
            return
        del self.buf[: request.size]
        self._close_after = request.close
        try:
            self.worker.forward(request, akid, self)
        except LinkClosed:
            self.abort()

    def written(self, ok: bool) -> None:
        """The server wrote the response to the request in flight (or could not)."""
        if self.gone or self.transport is None:
            return
        if not ok:
            self.transport.abort()
            return
        if self._close_after or self.worker.closing:
            self.transport.close()
            return
        self.busy = False
        if self.buf:
            self._next()
        else:
            self._wait_idle()

    def _hand_over(self) -> None:
        """Give this connection, and what was read from it, to the server."""
        transport = self.transport
        if transport is None or self.gone:
            return
        # Nothing of ours is still going out: the worker writes nothing to a client, and the
        # server has written the last answer before telling us so.
        self.busy = True
        transport.pause_reading()
        buffered = bytes(self.buf)
        self.buf.clear()
        try:
            self.worker.hand_over(self, buffered)
        except Exception as e:  # the link is gone: nobody can answer
            log.warning("front worker: could not hand a connection over: %s", e)
            transport.abort()
            return
        # The server holds its own descriptor now: closing ours leaves the connection open.
        self.shared = False  # the handover tells the server to drop any copy it had
        self.gone = True
        self.worker.connections.discard(self)
        transport.close()

    def abort(self) -> None:
        """Drop the connection: nobody can answer its request."""
        if self.transport is not None:
            self.transport.abort()


_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]{16,128})/")


def _signing_key(request: _Request) -> str | None:
    """The access key id an Authorization header names, if it names one of this form."""
    match = _CREDENTIAL.search(request.names.get("authorization", ""))
    return match[1] if match is not None else None


def _parse_head(
    head: bytes, auth: bool
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], dict[str, str], int, bool] | None:
    """A plain Invoke's head as this worker takes it, or None: the server's to read."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    target = match[1]
    raw_path, _, query = target.partition(b"?")
    try:
        path = unquote(raw_path.decode("ascii"), errors="strict")
    except UnicodeError:
        return None
    if INVOKE_PATH.fullmatch(path) is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    names: dict[str, str] = {}
    length = -1
    close = False
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None:
            return None
        name = header[1].lower()
        value = header[2]
        if name in _NOT_HERE:
            return None
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
        elif name == b"host":
            if b".lambda-url." in value or "host" in names:
                return None
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = b"close" in tokens
        headers.append((name, value))
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        names[key] = names[key] + "," + text if key in names else text
    if length < 0 or length > _BODY_MAX_BYTES or "host" not in names:
        return None
    if auth and not names.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
        return None
    return raw_path, query, headers, names, length, close


async def _run(listen_fd: int, link_fd: int, region: str, auth: bool) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket(fileno=listen_fd)
    link = socket.socket(fileno=link_fd)
    worker = Worker(link, region, auth)
    server = await loop.create_server(lambda: FrontProtocol(worker), sock=listener, backlog=2048)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    waiter = loop.create_task(stopping.wait())
    await asyncio.wait([waiter, worker.stopped], return_when=asyncio.FIRST_COMPLETED)
    server.close()
    # No new requests: idle connections close now, busy ones once answered.
    worker.closing = True
    for connection in list(worker.connections):
        if connection.idle and connection.transport is not None:
            connection.transport.close()
    if not worker.stopped.done():
        # Finish what was forwarded (the server answers it, or goes and fails it).
        # Polled: a handful of checks at shutdown, not worth an event on every response.
        while any(not c.idle for c in worker.connections) and not worker.stopped.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    for connection in list(worker.connections):
        if connection.transport is not None:
            connection.transport.close()
    waiter.cancel()
    worker.link.close()


def _die_with_parent(parent: int) -> None:
    """Linux's parent-death signal, so a server killed with -9 takes its workers along."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lamina-front-worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--link-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--auth", choices=("on", "off"), default="on")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(_run(args.listen_fd, args.link_fd, args.region, args.auth == "on"))
    sys.exit(0)


if __name__ == "__main__":
    main()
