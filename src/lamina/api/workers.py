"""The server's side of its front workers (`lamina.front.worker`): starting and watching them,
serving the Invokes they forward, and adopting the connections they hand over.

With `--workers N` (N > 0) the server does not accept on its main address itself: its N
workers do, and read and verify plain Invokes there, in processes of their own. What the
server still does for such an Invoke is what must happen in one place: who the access key is
now (a deleted key is refused here), authorization against the caller's and the function's
policies, and the invocation itself (concurrency, environments, logs, metering). It runs them
through the same code as an Invoke it reads itself (`Authorize.denial`, then
`api.invoke.invoke_function`, errors answered by `api.errors.error_response`), so both answer
alike, without the ASGI layers around them, and writes the response to the client's
connection itself (`api.client_writes`).

A connection a worker does not serve is handed over with the bytes already read from it and
served by uvicorn's protocol here from then on, as if accepted here (its peer address is the
client's own).

A worker that dies is started again (after a pause, if it dies young); the link closing is how
each side learns the other is gone. On shutdown the workers get SIGTERM first: they stop
accepting and taking requests; what they forwarded gets the shutdown grace, then is cut short
(answered ServiceException, as the server's own Invokes are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.responses import Response
from starlette.types import Message

from lamina import ids
from lamina.api.authz import Authorize, send_denial
from lamina.api.client_writes import Clients, ResponseWriter
from lamina.api.context import AppState
from lamina.api.errors import error_response, internal_error
from lamina.api.invoke import invoke_function
from lamina.auth.keys import KeyStore
from lamina.auth.sigv4 import AuthError
from lamina.errors import LaminaError
from lamina.front.link import FORGET, HANDOVER, INVOKE, INVOKE_PATH, WRITTEN, Link, LinkClosed

log = logging.getLogger(__name__)

#: a worker that lives less than this before dying is restarted only after `_RESTART_PAUSE_S`
_YOUNG_S = 5.0
_RESTART_PAUSE_S = 1.0
#: how long workers get to deliver their last answers and exit before they are killed
_STOP_GRACE_S = 5.0


class _WorkerProcess:
    """One worker: its process and its link."""

    def __init__(self, proc: subprocess.Popen[bytes], link: Link, clients: Clients) -> None:
        self.proc = proc
        self.link = link
        self.clients = clients
        self.started = time.monotonic()


class FrontWorkers:
    """Runs `count` front workers on `listener` (see the module's docstring). Forwarded
    Invokes are authorized by `authorize` and run with `state`; `adopt(sock, buffered)` serves
    a handed-over connection."""

    def __init__(
        self,
        count: int,
        listener: socket.socket,
        *,
        region: str,
        keys: KeyStore | None,
        state: AppState,
        authorize: Authorize,
        adopt: Callable[[socket.socket, bytes], None],
        log_level: str = "warning",
    ) -> None:
        self.count = count
        self._listener = listener
        self._region = region
        self._keys = keys
        self._state = state
        self._authorize = authorize
        self._adopt = adopt
        self._log_level = log_level
        self._workers: list[_WorkerProcess] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._server_addr: tuple[str, int] | None = None
        self._http = ResponseWriter()

    async def start(self) -> None:
        """Start the workers (the listener is listening already)."""
        name = self._listener.getsockname()
        self._server_addr = (str(name[0]), int(name[1]))
        for _ in range(self.count):
            self._workers.append(self._spawn())
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM every worker (they stop accepting and taking requests, and close each
        connection once its request is answered); give the Invokes they forwarded `grace_s`
        to finish, then cut them short (each is answered ServiceException, as an Invoke the
        server read itself is); wait for the workers to exit, killing those that do not."""
        if self._stopping:
            return  # stopped already (the server stops its workers before its lifespan ends)
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for worker in self._workers:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=_STOP_GRACE_S)
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in self._workers:
            left = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.to_thread(worker.proc.wait, left)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                await asyncio.to_thread(worker.proc.wait)
            worker.link.close()
        self._workers.clear()

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self) -> _WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fd = self._listener.fileno()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lamina.front.worker",
                    "--listen-fd",
                    str(listen_fd),
                    "--link-fd",
                    str(theirs.fileno()),
                    "--parent",
                    str(os.getpid()),
                    "--region",
                    self._region,
                    "--auth",
                    "on" if self._keys is not None else "off",
                    "--log-level",
                    self._log_level,
                ],
                pass_fds=(listen_fd, theirs.fileno()),
                stdin=subprocess.DEVNULL,
                # Out of the server's process group: a Ctrl-C at the terminal, or a signal to
                # the group, is the server's to handle; the workers stop when it says so (or
                # when it is gone: the link closes, and the parent-death signal).
                start_new_session=True,
            )
        finally:
            theirs.close()
        holder: list[_WorkerProcess] = []
        clients = Clients()
        link = Link(
            ours,
            lambda frame, fd: self._frame(holder[0], frame, fd),
            clients.close_all,  # the worker is gone: so are the connections it read
        )
        worker = _WorkerProcess(proc, link, clients)
        holder.append(worker)
        return worker

    async def _watch(self) -> None:
        """Start a worker again when one dies."""
        while True:
            await asyncio.sleep(0.2)
            for i, worker in enumerate(self._workers):
                code = worker.proc.poll()
                if code is None:
                    continue
                worker.link.close()
                lived = time.monotonic() - worker.started
                log.warning(
                    "front worker %d exited (code %s) after %.1f s; starting another",
                    worker.proc.pid,
                    code,
                    lived,
                )
                if lived < _YOUNG_S:
                    await asyncio.sleep(_RESTART_PAUSE_S)
                if self._stopping:
                    return
                self._workers[i] = self._spawn()

    # -- frames ----------------------------------------------------------------------------

    def _frame(self, worker: _WorkerProcess, frame: tuple[Any, ...], fd: int) -> None:
        kind = frame[0]
        if kind == INVOKE:
            conn_id = frame[2]
            if fd >= 0:  # the connection's first Invoke: its descriptor, to answer on
                worker.clients.add(conn_id, socket.socket(fileno=fd))
            task = asyncio.get_running_loop().create_task(self._invoke(worker, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == FORGET:
            worker.clients.close(frame[1])
        elif kind == HANDOVER:
            _, _client, buffered, conn_id = frame
            worker.clients.close(conn_id)
            sock = socket.socket(fileno=fd)
            try:
                self._adopt(sock, buffered)
            except Exception:
                log.exception("front workers: a handed-over connection could not be adopted")
                sock.close()
        elif kind == "k":
            worker.link.send(("s", frame[1], self._secret(frame[1])))
        elif fd >= 0:
            os.close(fd)

    def _secret(self, akid: str) -> str | None:
        if self._keys is None:
            return None
        try:
            # A long-term key's (role sessions sign with a token: the server reads those).
            return self._keys.secret_for(akid, None)
        except AuthError:
            return None

    async def _invoke(self, worker: _WorkerProcess, frame: tuple[Any, ...]) -> None:
        _, rid, conn_id, close, raw_path, query, headers, client, akid, body = frame
        try:
            status, out_headers, out_body = await self._run(
                raw_path, query, headers, client, akid, body
            )
        except Exception as e:  # not a LaminaError: answered as the last-resort handler does
            log.error("front workers: a forwarded Invoke failed", exc_info=e)
            response = error_response(internal_error(e, "Invoke"))
            status, out_headers = response.status_code, list(response.raw_headers)
            out_body = bytes(response.body)
        data = self._http.response(status, out_headers, out_body, close)
        ok = await worker.clients.write(conn_id, data, close)
        with contextlib.suppress(LinkClosed):
            worker.link.send((WRITTEN, rid, ok))

    async def _run(
        self,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: Any,
        akid: str | None,
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path = unquote(raw_path.decode("ascii"))
        match = INVOKE_PATH.fullmatch(path)
        if match is None:  # the worker checked: never here
            raise ValueError(f"not an Invoke path: {path}")
        principal = None
        if akid is not None and self._keys is not None:
            try:
                principal = self._keys.principal(akid)
            except AuthError as e:  # deleted since the worker learnt its secret
                return _parts(error_response(e))
        if principal is not None and not principal.admin:
            scope = {
                "type": "http",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "query_string": query,
                "headers": headers,
                "client": tuple(client) if client else None,
            }
            message = self._authorize.denial(scope, principal, None)
            if message is not None:
                return await _denied(message)
        qualifier = None
        if query:  # as Starlette reads it for the Invoke handler: the last one, blank or not
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if key == "Qualifier":
                    qualifier = value
        amz = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name.startswith(b"x-amz")
        }
        try:
            response = await invoke_function(self._state, match[1], qualifier, amz, body)
        except LaminaError as e:
            response = error_response(e)
        return _parts(response)


def _parts(response: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A whole response's status, headers and body (every response has a request id)."""
    headers = list(response.raw_headers)
    if not any(name == b"x-amzn-requestid" for name, _ in headers):
        headers.append((b"x-amzn-requestid", ids.request_id().encode()))
    return response.status_code, headers, bytes(response.body)


async def _denied(message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def send(event: Message) -> None:
        if event["type"] == "http.response.start":
            start.update(event)
        else:
            chunks.append(event.get("body", b""))

    await send_denial(send, message, json_api=False)
    return int(start["status"]), list(start["headers"]), b"".join(chunks)
