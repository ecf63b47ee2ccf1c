"""What the benchmarks share: starting and stopping servers, /proc, wrk, boto3, the floor.

The benchmarks are run as scripts from bench/, which puts bench/ on sys.path: they import
this module as `harness`. Nothing here measures anything by itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from signing import ADMIN_KEY

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Every benchmark's servers share the runtime images (the bundled AWS SDKs) with each other and
# with the test suite: installed once on this machine, not during a measurement.
os.environ.setdefault(
    "LAMINA_RUNTIME_CACHE", os.path.join(tempfile.gettempdir(), "lamina-test-runtimes")
)

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class BenchError(Exception):
    """A server failed to start or a measurement could not be taken."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


T = TypeVar("T")


def guarded(work: Callable[[], T], stopped: str = "servers") -> T:
    """Run a benchmark's `work` with SIGTERM taken as Ctrl-C. A `BenchError` or an interrupt
    is printed and ends the process (exit status 1, or 130) once `work`'s clean-up is done;
    `work` wraps its clean-up in `unbroken_cleanup()` so a second signal cannot cut it short."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return work()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"interrupted; {stopped} stopped", file=sys.stderr)
        raise SystemExit(130) from None


@contextlib.contextmanager
def unbroken_cleanup() -> Iterator[None]:
    """From the end of the block on, ignore Ctrl-C and SIGTERM: what the enclosing `with`
    statements clean up (servers, temporary directories) is then done whole."""
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class TreeStats:
    processes: int
    rss_mib: float


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def start_server(
    name: str, argv: Sequence[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None
) -> Server:
    """Start a server in its own session (like ``setsid``) so it can be stopped as a group."""
    log(f"starting {name}: {' '.join(argv)}")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, proc, log_path)


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of ``root`` and all its descendants."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    root_stat = _stat(root)
    todo = [] if root_stat is None else [(root, root_stat[1])]
    found: list[tuple[int, int]] = []
    while todo:
        node = todo.pop()
        found.append(node)
        todo.extend(children.get(node[0], []))
    return found


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def uss_kib(pid: int) -> int:
    """Private_Clean + Private_Dirty of one process (0 if it is gone or unreadable)."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def tree_stats(root: int) -> TreeStats:
    pids = [pid for pid, _ in process_tree(root)]
    return TreeStats(len(pids), sum(rss_kib(pid) for pid in pids) / 1024)


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def tree_cpu(root: int) -> dict[tuple[int, int], int]:
    """CPU ticks (utime + stime) of ``root`` and each of its descendants, by (pid, start
    time): a snapshot to subtract with `cpu_seconds_between`."""
    found: dict[tuple[int, int], int] = {}
    for pid, started in process_tree(root):
        ticks = _cpu_ticks(pid)
        if ticks is not None:
            found[(pid, started)] = ticks
    return found


def cpu_seconds_between(
    before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]
) -> float:
    """CPU seconds the process tree used between two `tree_cpu` snapshots: what each process
    alive at the second used since the first (all of it for one started since). A process that
    ended in between is missed; the warm benchmarks start and end none."""
    ticks = sum(value - before.get(key, 0) for key, value in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_server(server: Server) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left of its tree."""
    tree = process_tree(server.proc.pid)
    _kill_group(server.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=STOP_TIMEOUT_S)
    _kill_group(server.proc.pid, signal.SIGKILL)
    for pid, started in tree:  # descendants in their own sessions (e.g. Lamina environments)
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=5)
    log(f"stopped {server.name}")


def log_tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_ready(server: Server, probe: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with status {server.proc.returncode}:\n"
                + log_tail(server.log_path)
            )
        if probe():
            log(f"{server.name} is ready")
            return
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready after {timeout:.0f} s:\n{log_tail(server.log_path)}")


def http_ok(url: str, body: bytes | None = None, expect_json_ok: bool = False) -> bool:
    """True if ``url`` answers 200 (POST when ``body`` is given)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = response.read()
            ok = bool(response.status == 200)
    except (urllib.error.URLError, HTTPException, OSError):
        return False
    if expect_json_ok:
        with contextlib.suppress(ValueError):
            return ok and json.loads(payload).get("status") == "ok"
        return False
    return ok


# --- wrk ------------------------------------------------------------------------------------

_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = [f"{self.non_2xx} non-2xx/3xx responses"] if self.non_2xx else []
        found += [f"socket {kind} errors: {n}" for kind, n in self.socket_errors.items() if n]
        return found + (["no request completed"] if self.requests == 0 else [])


def parse_wrk(output: str) -> WrkResult:
    percentiles = {m[1]: float(m[2]) * _TO_MS[m[3]] for m in _PERCENTILE.finditer(output)}
    rps, requests = _RPS.search(output), _REQUESTS.search(output)
    if set(percentiles) != {"50", "99"} or rps is None or requests is None:
        raise BenchError(f"could not parse wrk output:\n{output}")
    non_2xx, sockets = _NON_2XX.search(output), _SOCKET.search(output)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        rps=float(rps[1]),
        requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors={k: int(v) for k, v in zip(kinds, sockets.groups(), strict=True)}
        if sockets
        else {},
    )


def run_wrk(url: str, connections: int, seconds: int, lua: Path | None) -> WrkResult:
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(lua), url] if lua is not None else [url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def start_uvicorn_floor(
    stack: contextlib.ExitStack, tmp: Path, source: str, ready: Callable[[int], bool]
) -> tuple[Server, int]:
    """A bare uvicorn app (`source`, defining `app`) on a free port, stopped with `stack`,
    once `ready(port)` says it answers: the floor a benchmark measures Lamina beside."""
    app_dir = tmp / "floor"
    app_dir.mkdir()
    (app_dir / "floor_app.py").write_text(source)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "floor_app:app", "--host", HOST, "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    server = start_server("floor", argv, app_dir, tmp / "floor.log")
    stack.callback(stop_server, server)
    wait_ready(server, lambda: ready(port))
    return server, port


def lambda_client(endpoint: str, attempts: int = 3) -> LambdaClient:
    """boto3 against Lamina, signing with the benchmarks' admin key (`signing.ADMIN_KEY`: what
    they start an authenticating server with; a server with `--auth off` takes any key). It
    never looks for real credentials."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_KEY[0],
        aws_secret_access_key=ADMIN_KEY[1],
        config=Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": attempts}),
    )


def create_functions(
    endpoint: str,
    names: Sequence[str],
    source: Callable[[str], str],
    *,
    memory_mb: int = 128,
    creators: int = 1,
    attempts: int = 1,
) -> None:
    """Create python3.11 functions `names` (app.py is `source(name)`) with `creators` clients
    at once, and wait until each is Active; `BenchError` if any cannot be."""

    def create(chunk: Sequence[str]) -> None:
        client = lambda_client(endpoint, attempts=attempts)
        for name in chunk:
            client.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": handler_zip(source(name))},
                MemorySize=memory_mb,
            )
        waiter = client.get_waiter("function_active_v2")
        for name in chunk:
            waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    chunks = [list(names[i::creators]) for i in range(creators)]
    try:
        with ThreadPoolExecutor(creators) as pool:
            for future in [pool.submit(create, c) for c in chunks if c]:
                future.result()
    except (BotoCoreError, ClientError, WaiterError) as exc:
        raise BenchError(f"creating the functions failed: {exc}") from exc


def handler_zip(source: str) -> bytes:
    """A deployment package holding `source` as app.py."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()
