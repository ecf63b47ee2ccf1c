"""The process's HTTP server: uvicorn's configuration, the listening sockets, the hand-over of
connections from front workers (`api.workers`), and the order of shutdown (front workers first,
then uvicorn's connections). `server.serve` assembles the app and runs it on these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp

from lamina import limits
from lamina.api.http_protocol import AwsErrorsHttpProtocol
from lamina.api.workers import FrontWorkers
from lamina.settings import Settings

log = logging.getLogger(__name__)


def running(server: LaminaServer | None) -> LaminaServer:
    """The server, which exists by the time front workers hand a connection over."""
    assert server is not None
    return server


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="uvloop" if has_uvloop() else "asyncio",
        # httptools, answering requests it cannot parse (too long, malformed) in AWS's shape.
        http=AwsErrorsHttpProtocol,
        # WebSocket APIs (`api.websocket_front`).
        ws="websockets-sansio",
        # API Gateway's message limit: a larger message closes the connection with 1009.
        ws_max_size=limits.WEBSOCKET_MESSAGE_MAX_BYTES,
        # API Gateway negotiates no permessage-deflate: frames go as sent, and no CPU is spent
        # compressing every message of every connection.
        ws_per_message_deflate=False,
        # Nothing stands in front of Lamina; trusting X-Forwarded-* from loopback clients
        # would let any local caller claim another address (and costs time on every request).
        proxy_headers=False,
        # In-flight invocations get this long to finish on SIGTERM/Ctrl-C; then they are
        # cancelled and their environments killed (a function may run for 15 minutes).
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


#: connections the main address queues while no worker accepts them (as uvicorn's default)
BACKLOG = 2048


@dataclass(frozen=True)
class FrontSpec:
    """Front workers to run (`api.workers`): how many, the main address's listening socket,
    and how the server adopts a connection a worker hands over."""

    count: int
    listener: socket.socket
    adopt: Callable[[socket.socket, bytes], None]
    log_level: str = "warning"
    #: the workers once running (the lifespan puts them here; the server stops them first)
    running: list[FrontWorkers] = field(default_factory=list)


def adopter(server: Callable[[], uvicorn.Server]) -> Callable[[socket.socket, bytes], None]:
    """Serve a handed-over connection with uvicorn's protocol, as if accepted here, starting
    with the bytes the worker had read from it."""

    adoptions: set[asyncio.Task[None]] = set()

    def adopt(sock: socket.socket, buffered: bytes) -> None:
        running = server()
        config = running.config
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return AwsErrorsHttpProtocol(
                config=config,
                server_state=running.server_state,
                app_state=running.lifespan.state,
                prefill=buffered,
            )

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(protocol, sock)
            except OSError as e:
                log.info("a handed-over connection was gone before it was adopted: %s", e)
                sock.close()

        task = loop.create_task(connect())
        adoptions.add(task)
        task.add_done_callback(adoptions.discard)

    return adopt


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (uvicorn listens on it), or exit with why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"lamina: cannot listen on {listen_url(host, port)}: {e.strerror}") from e
    return sock


def listen_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class LaminaServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would die
    of the signal; Lamina has stopped every environment by then, and a clean stop exits 0.

    Front workers stop first, before uvicorn closes its connections: they stop accepting and
    finish the Invokes they forwarded (served here meanwhile), and hand nothing over after."""

    def __init__(self, config: uvicorn.Config, front: FrontSpec | None = None) -> None:
        super().__init__(config)
        self.front = front

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.front is not None:
            for workers in self.front.running:
                await workers.stop(float(self.config.timeout_graceful_shutdown or 0) + 5.0)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def raise_open_files_limit() -> None:
    """Every environment holds a few descriptors here (its log pipe, Runtime API socket,
    relay and control sockets): take the hard limit, not the soft default of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
