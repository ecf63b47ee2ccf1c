"""Benchmark warm Lambda invokes: Lamina against a bare-uvicorn floor (and serverless-offline).

Run: ``.venv/bin/python bench/invoke.py [--duration SECONDS] [--peers]`` (or ``make bench``).

What it measures
----------------
Every server runs on 127.0.0.1 in this one run and they are measured one right after the
other with the same wrk settings. Timings on these machines are noisy, so compare numbers only
within one run; the ratios are the point, not the absolute values.

* floor: a bare Starlette app with one route returning ``PlainTextResponse("ok")``, served by
  uvicorn. No Python HTTP server on this stack answers faster, so it bounds what Lamina's
  HTTP layer can reach on this machine.
* lamina: ``lamina serve`` with a no-op python3.11 function ``bench-noop``; wrk POSTs ``{}`` to
  the Lambda Invoke API ``/2015-03-31/functions/bench-noop/invocations``.
* serverless-offline (``--peers``): Serverless Framework v3 with serverless-offline 13 and a
  Python 3.11 handler, invoked through its Lambda Invoke API on port 3002, set up as in
  /work/shared/bench/peers.md in the scratch dir ``bench/.peers/peers-hello/``.

Each target gets a warm-up request, a c1 latency run (``wrk -t1 -c1 --latency``), a 2 s c16
warm-up so 16 environments are already started (cold starts are not what this measures), and
a c16 throughput run (``wrk -t2 -c16 --latency``). Right after the c16 run the server's process
tree (the server and all its descendants, from /proc) is sampled: process count and summed RSS
(pages shared between processes are counted once per process, so it is an upper bound).

How to read the ratios
----------------------
* ``c1 p50 / floor``: how many floor medians one warm invoke takes (1.0x would mean no cost on
  top of bare HTTP; lower is better).
* ``c16 req/s / floor``: the fraction of the floor's throughput reached with 16 connections
  (1.00 would mean no cost; higher is better).
* ``lamina / serverless-offline``: the same two, Lamina against the peer: p50 below 1.0x and
  req/s above 1.0x mean Lamina is ahead.

Exit status: 0 when every run was clean (whether or not the targets were met), 1 when a server
failed to start or a run had non-2xx responses or socket errors (flagged INVALID), 2 when wrk is
missing, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
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
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Every benchmark's servers share the runtime images (the bundled AWS SDKs) with each other and
# with the test suite: installed once on this machine, not during a measurement.
os.environ.setdefault(
    "LAMINA_RUNTIME_CACHE", os.path.join(tempfile.gettempdir(), "lamina-test-runtimes")
)

HOST = "127.0.0.1"
FUNCTION_NAME = "bench-noop"
TARGET_C1_P50_MS = 0.35
TARGET_C16_RPS = 4500.0
WARMUP_SECONDS = 2
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
NPM_TIMEOUT_S = 900.0
# npm init -y names the package after its directory, and ".peers" is not a valid name.
PEERS_DIR = Path(__file__).resolve().parent / ".peers" / "peers-hello"
PEER_NAME = "serverless-offline"
PEER_PORTS = (3000, 3002)
PEER_URL = "http://127.0.0.1:3002/2015-03-31/functions/peers-hello-dev-py/invocations"
NPM_STEPS = (["npm", "init", "-y"], ["npm", "install", "serverless@3", "serverless-offline@13"])
PEER_ENV = {
    "SLS_TELEMETRY_DISABLED": "1",
    "SLS_NOTIFICATIONS_MODE": "off",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}

FLOOR_APP = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ok(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", ok)])
"""
POST_LUA = """\
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
"""
NOOP_HANDLER = "def handler(event, context):\n    return None\n"
PEER_HANDLER = 'def handler(event, context):\n    return {"statusCode": 200, "body": "ok"}\n'
PEER_SERVERLESS_YML = """\
service: peers-hello
frameworkVersion: '3'
provider: {name: aws, region: us-east-1, stage: dev}
functions:
  py:
    runtime: python3.11
    handler: handler.handler
    events: [{httpApi: {path: /py, method: get}}]
plugins: [serverless-offline]
custom:
  serverless-offline: {host: 127.0.0.1, httpPort: 3000, lambdaPort: 3002, noPrependStageInUrl: true}
"""


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


def tree_stats(root: int) -> TreeStats:
    pids = [pid for pid, _ in process_tree(root)]
    return TreeStats(len(pids), sum(rss_kib(pid) for pid in pids) / 1024)


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


# --- targets --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    url: str
    lua: Path | None


@dataclass
class Measurement:
    name: str
    c1: WrkResult
    c16: WrkResult
    tree: TreeStats
    warmup_problems: list[str]

    def problems(self) -> list[str]:
        return [f"c1: {p}" for p in self.c1.problems()] + [f"c16: {p}" for p in self.c16.problems()]


def measure(target: Target, seconds: int) -> Measurement:
    log(f"{target.name}: c1 for {seconds} s")
    c1 = run_wrk(target.url, 1, seconds, target.lua)
    log(f"{target.name}: c16 warm-up for {WARMUP_SECONDS} s")
    warmup = run_wrk(target.url, 16, WARMUP_SECONDS, target.lua)
    log(f"{target.name}: c16 for {seconds} s")
    c16 = run_wrk(target.url, 16, seconds, target.lua)
    tree = tree_stats(target.server.proc.pid)
    return Measurement(target.name, c1, c16, tree, warmup.problems())


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


def start_floor(stack: contextlib.ExitStack, tmp: Path) -> Target:
    server, port = start_uvicorn_floor(
        stack, tmp, FLOOR_APP, lambda port: http_ok(f"http://{HOST}:{port}/")
    )
    return Target("floor (uvicorn)", server, f"http://{HOST}:{port}/", None)


def lambda_client(endpoint: str, attempts: int = 3) -> LambdaClient:
    """boto3 against Lamina, with dummy credentials (it never looks for real ones)."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": attempts}),
    )


def handler_zip(source: str) -> bytes:
    """A deployment package holding `source` as app.py."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


def deploy_noop(endpoint: str) -> None:
    client = lambda_client(endpoint)
    client.create_function(
        FunctionName=FUNCTION_NAME,
        Runtime="python3.11",
        Role="arn:aws:iam::000000000000:role/bench",
        Handler="app.handler",
        Code={"ZipFile": handler_zip(NOOP_HANDLER)},
    )
    waiter = client.get_waiter("function_active_v2")
    waiter.wait(FunctionName=FUNCTION_NAME, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    started = time.perf_counter()
    response = client.invoke(FunctionName=FUNCTION_NAME, Payload=b"{}")
    if response.get("FunctionError") or response["StatusCode"] != 200:
        payload = response["Payload"].read().decode(errors="replace")
        raise BenchError(f"warm-up invoke of {FUNCTION_NAME} failed: {payload}")
    log(f"lamina: first invoke took {(time.perf_counter() - started) * 1000:.0f} ms")


def start_lamina(stack: contextlib.ExitStack, tmp: Path, lua: Path) -> Target:
    data_dir = tmp / "lamina-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning"]
    # Raw HTTP (wrk, sockets) does not sign; bench/auth.py measures authentication's cost.
    argv += ["--auth", "off"]
    server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    deploy_noop(endpoint)
    url = f"{endpoint}/2015-03-31/functions/{FUNCTION_NAME}/invocations"
    return Target("lamina", server, url, lua)


# --- serverless-offline ---------------------------------------------------------------------


def _peer_installed() -> bool:
    modules = PEERS_DIR / "node_modules"
    return (modules / "serverless/bin/serverless.js").is_file() and (
        modules / "serverless-offline/package.json"
    ).is_file()


def prepare_peer() -> str | None:
    """Write the peer's files and npm-install it if needed; return why it can't run, or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y nodejs npm)"
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERS_DIR / "handler.py").write_text(PEER_HANDLER)
    (PEERS_DIR / "serverless.yml").write_text(PEER_SERVERLESS_YML)
    if _peer_installed():
        return None
    for argv in NPM_STEPS:
        log(f"{PEER_NAME}: running {' '.join(argv)} in {PEERS_DIR} (may take minutes)")
        try:
            done = subprocess.run(
                argv, cwd=PEERS_DIR, capture_output=True, text=True, timeout=NPM_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)} failed: {exc}"
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            return f"{' '.join(argv)} exited with status {done.returncode}:\n{output}"
    return None


def start_peer(stack: contextlib.ExitStack, tmp: Path, lua: Path) -> Target:
    busy = [port for port in PEER_PORTS if port_in_use(port)]
    if busy:
        raise BenchError(f"{PEER_NAME} needs ports {PEER_PORTS}, in use: {busy}")
    argv = ["node", "node_modules/serverless/bin/serverless.js", "offline", "--noSponsor"]
    env = {**os.environ, **PEER_ENV}
    server = start_server(PEER_NAME, argv, PEERS_DIR, tmp / "serverless-offline.log", env)
    stack.callback(stop_server, server)
    wait_ready(server, lambda: http_ok(PEER_URL, body=b"{}"))  # the first invoke warms it up
    return Target(PEER_NAME, server, PEER_URL, lua)


def peer_installed_or_skipped() -> bool:
    """Install the peer if needed (before any server starts); False, saying why, if it can't."""
    why = prepare_peer()
    if why is not None:
        log(f"{PEER_NAME} skipped: {why}")
    return why is None


def maybe_start_peer(
    stack: contextlib.ExitStack, tmp: Path, lua: Path, failures: list[str]
) -> Target | None:
    """The running peer, or None after recording that it failed to start."""
    try:
        return start_peer(stack, tmp, lua)
    except BenchError as exc:
        log(f"{PEER_NAME} failed to start, continuing without it: {exc}")
        failures.append(f"{PEER_NAME} failed to start")
        return None


# --- report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _row(cells: Sequence[str]) -> str:
    widths = (20, 10, 10, 9, 10, 10, 9, 6, 8, 7)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 2}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def table(measurements: Sequence[Measurement]) -> list[str]:
    header = ["target", "c1 p50", "c1 p99", "c1 req/s", "c16 p50", "c16 p99", "c16 req/s"]
    lines = [_row([*header, "procs", "RSS MiB", "valid"])]
    for m in measurements:
        cells = [m.name, _ms(m.c1.p50_ms), _ms(m.c1.p99_ms), f"{m.c1.rps:,.0f}"]
        cells += [_ms(m.c16.p50_ms), _ms(m.c16.p99_ms), f"{m.c16.rps:,.0f}"]
        cells += [str(m.tree.processes), f"{m.tree.rss_mib:.0f}"]
        lines.append(_row([*cells, "INVALID" if m.problems() else "yes"]))
    return lines


def ratio_lines(subject: Measurement, base: Measurement) -> list[str]:
    p50 = subject.c1.p50_ms / base.c1.p50_ms if base.c1.p50_ms else float("nan")
    rps = subject.c16.rps / base.c16.rps if base.c16.rps else float("nan")
    return [
        f"  {subject.name} c1 p50 / {base.name} c1 p50 = {p50:.2f}x",
        f"  {subject.name} c16 req/s / {base.name} c16 req/s = {rps:.2f}",
    ]


def target_lines(lamina: Measurement) -> list[str]:
    lines = [f"target: c1 p50 <= {TARGET_C1_P50_MS} ms, c16 >= {TARGET_C16_RPS:,.0f}/s"]
    if lamina.problems():
        return [*lines, "  this run: not judged (Lamina's runs are INVALID)"]
    p50_met = "met" if lamina.c1.p50_ms <= TARGET_C1_P50_MS else "NOT met"
    rps_met = "met" if lamina.c16.rps >= TARGET_C16_RPS else "NOT met"
    return [
        *lines,
        f"  this run: c1 p50 {_ms(lamina.c1.p50_ms)} ({p50_met}), "
        f"c16 {lamina.c16.rps:,.0f}/s ({rps_met})",
    ]


def problem_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines: list[str] = []
    for m in measurements:
        lines += [f"  INVALID {m.name} {p}" for p in m.problems()]
        lines += [f"  warning {m.name} c16 warm-up: {p}" for p in m.warmup_problems]
    return lines


def report(measurements: Sequence[Measurement], seconds: int) -> None:
    floor, lamina, *peers = measurements
    lines = [f"wrk, {seconds} s per run, loopback, {os.cpu_count()} CPUs", *table(measurements)]
    lines += ["", "ratios (same run; p50: lower is better, req/s: higher is better):"]
    lines += ratio_lines(lamina, floor)
    for peer in peers:
        lines += ratio_lines(peer, floor) + ratio_lines(lamina, peer)
    lines += ["", *target_lines(lamina)]
    problems = problem_lines(measurements)
    if problems:
        lines += ["", "problems:", *problems]
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--peers", action="store_true", help="also run serverless-offline")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    return args


def run(
    stack: contextlib.ExitStack, args: argparse.Namespace, failures: list[str]
) -> list[Measurement]:
    tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-bench-", ignore_cleanup_errors=True)
    tmp = Path(stack.enter_context(tmp_dir))
    lua = tmp / "post.lua"
    lua.write_text(POST_LUA)
    with_peer = args.peers and peer_installed_or_skipped()
    targets = [start_floor(stack, tmp), start_lamina(stack, tmp, lua)]
    peer = maybe_start_peer(stack, tmp, lua, failures) if with_peer else None
    targets += [peer] if peer is not None else []
    return [measure(target, args.duration) for target in targets]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    failures: list[str] = []

    def work() -> list[Measurement]:
        with contextlib.ExitStack() as stack, unbroken_cleanup():
            return run(stack, args, failures)

    measurements = guarded(work)
    report(measurements, args.duration)
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
    return 1 if failures or any(m.problems() for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
