"""Fixtures shared by every test layer: a real Lamina server on a free port, boto3 against it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.credentials import Credentials
from tests.cluster._engines import free_port

from lamina.cli.signing import Signer
from lamina.runtimes.catalog import RuntimeCatalog
from lamina.runtimes.images import RuntimeImages, SdkState

# boto3 must never look for credentials on an instance-metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_var, None)

ROLE = "arn:aws:iam::000000000000:role/lamina-test"

#: every test server's admin key (`--admin-key test:test`), what boto3 clients here sign with
ADMIN_KEY = ("test", "test")
#: httpx auth that signs as the admin key (for raw HTTP calls to Lamina's endpoints)
SIGNED = Signer("", Credentials(*ADMIN_KEY), region="us-east-1")
#: an httpx client that signs so (thread-safe; a test's raw calls to the Lambda API)
SIGNED_HTTP = httpx.Client(auth=SIGNED, timeout=5.0)

# No test writes the real ~/.aws: a server that makes a profile writes it here.
_AWS_FILES = tempfile.mkdtemp(prefix="lamina-test-aws-")
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.path.join(_AWS_FILES, "credentials"))
os.environ.setdefault("AWS_CONFIG_FILE", os.path.join(_AWS_FILES, "config"))


# Runtime images (the bundled boto3 and AWS SDK for JavaScript v3) are installed once for every
# test server of a run, and kept between runs on this machine: `runtime_images` fills it.
os.environ.setdefault(
    "LAMINA_RUNTIME_CACHE", os.path.join(tempfile.gettempdir(), "lamina-test-runtimes")
)
#: the runtimes the tests deploy on, whose SDKs are installed before the first server starts
TEST_RUNTIMES = ("python3.11", "nodejs20.x", "nodejs22.x", "nodejs18.x")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The `anyio` tests run on asyncio, Lamina's event loop (uvicorn's), only: not also on
    trio, which anyio picks up once installed (Selenium brings it for the console's tests)."""
    return "asyncio"


@pytest.fixture(scope="session")
def runtime_images() -> dict[str, SdkState]:
    """Install the test runtimes' bundled SDKs into the shared runtime cache (from PyPI and
    npm the first time), so no test's first invoke waits for a download."""
    images = RuntimeImages(Path(os.environ["LAMINA_RUNTIME_CACHE"]))
    wanted = [r for r in RuntimeCatalog.discover().all() if r.name in TEST_RUNTIMES]
    return asyncio.run(images.install(wanted))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every test must run: a skipped test there is a failure (a missing install step)."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        print(f"\nCI: {len(skipped)} test(s) skipped; every test must run in CI.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _sandbox_args(extra: tuple[str, ...]) -> tuple[str, ...]:
    """`LAMINA_TEST_SANDBOX=process` runs the suite on that backend (the default is the
    server's own `auto`: namespace as root); a test that names a backend keeps it."""
    backend = os.environ.get("LAMINA_TEST_SANDBOX")
    if not backend or "--sandbox" in extra:
        return ()
    return ("--sandbox", backend)


def _auth_args(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Test servers' admin key is test:test (what the boto3 clients here sign with), unless
    a test sets up authentication itself."""
    if any(a in extra for a in ("--admin-key", "--auth")):
        return ()
    return ("--admin-key", ":".join(ADMIN_KEY))


def lamina_env(endpoint: str) -> dict[str, str]:
    """The environment for the `lamina` command against `endpoint`, without colours."""
    return dict(
        os.environ,
        LAMINA_ENDPOINT=endpoint,
        NO_COLOR="1",
        AWS_ACCESS_KEY_ID=ADMIN_KEY[0],
        AWS_SECRET_ACCESS_KEY=ADMIN_KEY[1],
    )


def lamina(*args: str, endpoint: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `lamina` command against a server and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args],
        capture_output=True,
        text=True,
        env=lamina_env(endpoint),
        input=stdin,
        timeout=60,
    )


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name == "bootstrap" else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


@dataclass
class Server:
    """A `lamina serve` process of our own."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()
    #: a command that runs the server's (`unshare ...`): it must exec it, not fork
    wrapper: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Server:
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "lamina",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *_sandbox_args(self.extra_args),
                *_auth_args(self.extra_args),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lamina serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.endpoint + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("lamina serve did not become healthy")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        path = self.data_dir.parent / f"server-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_events(self, group: str | None = None) -> list[tuple[str, str]]:
        """(stream, message) of every event the server's log store holds (of one group, if
        given), in time order; read from `<data-dir>/logs.db` without the server's help."""
        db = self.data_dir / "logs.db"
        if not db.exists():
            return []
        query = (
            "SELECT s.name, e.message FROM log_events e JOIN log_streams s ON s.id = e.stream_id "
            "JOIN log_groups g ON g.id = e.group_id"
        )
        args: tuple[str, ...] = ()
        if group is not None:
            query += " WHERE g.name = ?"
            args = (group,)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute(query + " ORDER BY e.timestamp_ms, e.id", args).fetchall()
        finally:
            conn.close()
        return [(stream, message) for stream, message in rows]

    def streams_text(self, group: str | None = None) -> dict[str, str]:
        """Each log stream's messages joined into text, a line each (a message keeps the \r
        a runtime writes in place of a multi-line record's newlines)."""
        out: dict[str, list[str]] = {}
        for stream, message in self.log_events(group):
            out.setdefault(stream, []).append(message)
        return {stream: "".join(f"{m}\n" for m in lines) for stream, lines in out.items()}

    def client(self, service: str = "lambda", region: str = "us-east-1", **config: Any) -> Any:
        """A boto3 client signing as the admin key for `region` (the server's)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=120, **config),
        )


def fetch(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str = ""
) -> tuple[int, dict[str, list[str]], bytes]:
    """(status, headers by lower-case name, body) of one plain urllib request, errors included
    (function URLs and HTTP routes are not AWS-signed)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method or None)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw_headers, body = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, raw_headers, body = e.code, e.headers, e.read()
    found: dict[str, list[str]] = {}
    for name, value in raw_headers.items():
        found.setdefault(name.lower(), []).append(value)
    return status, found, body


#: an identity policy that lets a function's role read every kind of event source (what
#: CreateEventSourceMapping checks the role for when authentication is on)
EVENT_SOURCES_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["sqs:*", "mq:DescribeBroker", "nats:ReadStream", "redis:ReadStream"],
            "Resource": "*",
        }
    ],
}


def allow_event_sources(server: Server, role: str = ROLE) -> None:
    """Define `role` (by default the tests' functions' role) in `server` with
    `EVENT_SOURCES_POLICY`, so that its functions may be mapped to any source."""
    name = role.rsplit("/", 1)[1]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{name}", json={"Policies": [EVENT_SOURCES_POLICY]}
    )
    assert put.status_code == 200, put.text


def wait_for(what: Callable[[], Any], timeout: float = 20.0, message: str = "condition") -> Any:
    """Poll `what` until it returns something true; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def seen(server: Server, name: str) -> list[dict[str, Any]]:
    """What a recorder function printed as `SEEN <json>` lines, from the log store, in the
    order of their `t` (the async queue's and EventBridge's tests use such recorders)."""
    out = [
        json.loads(message[5:])
        for _, message in server.log_events(f"/aws/lambda/{name}")
        if message.startswith("SEEN ")
    ]
    return sorted(out, key=lambda r: r["t"])


def wait_seen(server: Server, name: str, count: int, timeout: float = 20.0) -> list[Any]:
    """The recorder's records once there are at least `count` of them."""

    def enough() -> list[Any] | None:
        records = seen(server, name)
        return records if len(records) >= count else None

    found: list[Any] = wait_for(enough, timeout, f"{count} invocation(s) of {name}")
    return found


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, SdkState]
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("lamina")
    srv = Server(data_dir=base / "data").start()
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


@pytest.fixture
def own_server(
    tmp_path: Path, runtime_images: dict[str, SdkState]
) -> Iterator[Callable[..., Server]]:
    """Starts servers of the test's own, `own_server(data_dir=None, *args)` (`data_dir` again
    to restart on the same data), and stops those still running after the test."""
    servers: list[Server] = []

    def start(data_dir: Path | None = None, *args: str) -> Server:
        srv = Server(data_dir=data_dir or tmp_path / "data", extra_args=args).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.proc is not None and srv.proc.poll() is None:
            with contextlib.suppress(Exception):
                srv.stop()


@pytest.fixture(scope="session")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture(scope="session")
def lam_unchecked(server: Server) -> Any:
    """A client that sends what it is given: the server, not boto3, must refuse bad values."""
    return server.client(parameter_validation=False)


class Functions:
    """Creates uniquely named functions and deletes them after the test."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.names: list[str] = []

    def create(
        self,
        code: str | dict[str, str | bytes],
        handler: str = "app.handler",
        runtime: str = "python3.11",
        wait: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        name = kwargs.pop("FunctionName", None) or f"t-{uuid.uuid4().hex[:12]}"
        files = {"app.py": code} if isinstance(code, str) else code
        resp: dict[str, Any] = self.client.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=kwargs.pop("Role", ROLE),
            Handler=handler,
            Code={"ZipFile": make_zip(files)},
            **kwargs,
        )
        self.names.append(name)
        if wait:
            self.client.get_waiter("function_active_v2").wait(
                FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
            )
        return resp

    def create_zip(
        self, zipped: bytes, handler: str, runtime: str, **kwargs: Any
    ) -> dict[str, Any]:
        """Create a function from a ready zip (kept modes: a custom runtime's bootstrap)."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        resp: dict[str, Any] = self.client.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=ROLE,
            Handler=handler,
            Code={"ZipFile": zipped},
            **kwargs,
        )
        self.names.append(name)
        self.client.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        return resp

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(self.client.exceptions.ResourceNotFoundException):
                self.client.delete_function(FunctionName=name)


@pytest.fixture
def functions(lam: Any) -> Iterator[Functions]:
    f = Functions(lam)
    yield f
    f.cleanup()
