"""Benchmark warm invokes at Lamina's defaults beside a uvicorn floor and serverless-offline.

Run: ``.venv/bin/python bench/invoke.py [--duration SECONDS] [--peers] [--auth off]
[--sandbox process]`` (or ``make bench ARGS="..."``).

What it measures
----------------
Every server runs on 127.0.0.1 in this one run and they are measured one right after the
other with the same wrk settings. Timings on these machines are noisy, so compare numbers only
within one run; the ratios are the point, not the absolute values.

* floor: a bare Starlette app with one route returning ``PlainTextResponse("ok")``, served by
  uvicorn. No Python HTTP server on this stack answers faster, so it bounds what Lamina's
  HTTP layer can reach on this machine.
* lamina, at the defaults a user gets: ``lamina serve --admin-key test:test`` (authentication
  on: every request is SigV4-signed) with its default sandbox (``auto``: namespace as root),
  and two no-op functions with MemorySize 1024, ``bench-noop`` (python3.11) and
  ``bench-noop-js`` (nodejs20.x). wrk POSTs ``{}`` to the Lambda Invoke API. wrk cannot sign
  each request, so one Invoke is signed with botocore right before each wrk run and replayed
  unchanged: AWS accepts a signed request again within 5 minutes of its X-Amz-Date (SigV4 has
  no nonce), and so does Lamina, which verifies every replay in full. Before measuring, the
  script checks that the signed request is answered 200 twice and an unsigned one 403.
  MemorySize 1024 rather than 128: Lamina caps a function's CPU in proportion to its memory,
  as Lambda does (1,769 MB is one vCPU), and at 128 MB that cap (7% of a CPU) throttles the
  runtime for tens of ms now and then, which is faithful to Lambda and dominates the p99.
* serverless-offline (``--peers``): Serverless Framework v3 with serverless-offline 13, a
  python3.11 and a nodejs20.x handler, invoked through its Lambda Invoke API (no signature,
  no isolation); see bench/peers.py and bench/README.md.

Each target gets a warm-up request, a c1 latency run (``wrk -t1 -c1 --latency``), a 2 s c16
warm-up so 16 environments are already started (cold starts are not what this measures), and
a c16 throughput run (``wrk -t2 -c16 --latency``). Around the c16 run the CPU time (utime +
stime) of the server's process tree (the server and all its descendants, environments
included, from /proc) is sampled: server CPU per invoke is its growth divided by the requests
of the run. After it the tree's process count and summed RSS (an upper bound: shared pages
count once per process) are taken.

Targets (issue 19), judged per Lamina function: c1 p50 <= serverless-offline's (the better of
its two functions) and <= 3x the floor's; c1 p99 <= 1.5 ms; c16 req/s >= 1.5x
serverless-offline's (the better of its two) and >= 0.3x the floor's.

Exit status: 0 when every run was clean (whether or not the targets were met), 1 when a server
failed to start, a check failed, or a run had non-2xx responses or socket errors (flagged
INVALID), 2 when wrk is missing, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import TYPE_CHECKING

import peers

# What the other benchmarks import from here lives in harness.py now; re-exported so they
# keep working. bench/ is on sys.path because this file is run as a script from it.
from harness import HOST as HOST
from harness import BenchError as BenchError
from harness import Server as Server
from harness import TreeStats as TreeStats
from harness import WrkResult as WrkResult
from harness import cpu_seconds_between, run_wrk, tree_cpu, tree_stats
from harness import free_port as free_port
from harness import guarded as guarded
from harness import handler_zip as handler_zip
from harness import http_ok as http_ok
from harness import lambda_client as lambda_client
from harness import log as log
from harness import log_tail as log_tail
from harness import process_tree as process_tree
from harness import start_server as start_server
from harness import start_uvicorn_floor as start_uvicorn_floor
from harness import stop_server as stop_server
from harness import unbroken_cleanup as unbroken_cleanup
from harness import wait_ready as wait_ready
from lamina.settings import default_workers
from signing import admin_key_args, signed_headers, wrk_script

if TYPE_CHECKING:
    from mypy_boto3_lambda.literals import RuntimeType
else:
    RuntimeType = str

FUNCTION_NAME = "bench-noop"
MEMORY_MB = 1024
NOOP_HANDLER = "def handler(event, context):\n    return None\n"
NOOP_HANDLER_JS = "exports.handler = async () => null;\n"


@dataclass(frozen=True)
class Function:
    """One of Lamina's no-op functions."""

    runtime: RuntimeType
    name: str
    handler: str
    file: str
    source: str


FUNCTIONS = (
    Function("python3.11", FUNCTION_NAME, "app.handler", "app.py", NOOP_HANDLER),
    Function("nodejs20.x", "bench-noop-js", "index.handler", "index.js", NOOP_HANDLER_JS),
)
TARGET_C1_P99_MS = 1.5
TARGET_C1_P50_X_FLOOR = 3.0
TARGET_C16_X_PEER = 1.5
TARGET_C16_X_FLOOR = 0.3
WARMUP_SECONDS = 2
INVOKE_BODY = b"{}"
INVOKE_HEADERS = {"Content-Type": "application/json"}

FLOOR_APP = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ok(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", ok)])
"""


# --- targets --------------------------------------------------------------------------------

#: a target's request for one wrk run: writes a Lua script in the directory given (or
#: returns None for a plain GET); called right before each run, so a signature is fresh
Script = Callable[[Path], Path | None]


@dataclass
class Target:
    name: str
    kind: str  # "floor", "lamina" or "peer"
    server: Server
    url: str
    script: Script


@dataclass
class Measurement:
    name: str
    kind: str
    c1: WrkResult
    c16: WrkResult
    cpu_s: float  # the server's process tree, over the c16 run
    tree: TreeStats
    warmup_problems: list[str]

    def problems(self) -> list[str]:
        return [f"c1: {p}" for p in self.c1.problems()] + [f"c16: {p}" for p in self.c16.problems()]

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.c16.requests if self.c16.requests else float("nan")


def measure(target: Target, seconds: int, tmp: Path) -> Measurement:
    def wrk(connections: int, duration: int) -> WrkResult:
        return run_wrk(target.url, connections, duration, target.script(tmp))

    log(f"{target.name}: c1 for {seconds} s")
    c1 = wrk(1, seconds)
    log(f"{target.name}: c16 warm-up for {WARMUP_SECONDS} s")
    warmup = wrk(16, WARMUP_SECONDS)
    log(f"{target.name}: c16 for {seconds} s")
    script = target.script(tmp)  # signed before the CPU sample starts
    before = tree_cpu(target.server.proc.pid)
    c16 = run_wrk(target.url, 16, seconds, script)
    cpu_s = cpu_seconds_between(before, tree_cpu(target.server.proc.pid))
    tree = tree_stats(target.server.proc.pid)
    return Measurement(target.name, target.kind, c1, c16, cpu_s, tree, warmup.problems())


def unsigned_post(tmp: Path) -> Path:
    path = tmp / "post.lua"
    wrk_script(path, "POST", INVOKE_BODY, INVOKE_HEADERS)
    return path


def signed_post(url: str) -> Script:
    """A fresh botocore signature of one Invoke of `url`, replayed by wrk for one run."""

    def script(tmp: Path) -> Path:
        path = tmp / "signed.lua"
        headers = signed_headers("POST", url, INVOKE_BODY, INVOKE_HEADERS)
        wrk_script(path, "POST", INVOKE_BODY, headers)
        return path

    return script


def start_floor(stack: contextlib.ExitStack, tmp: Path) -> Target:
    server, port = start_uvicorn_floor(
        stack, tmp, FLOOR_APP, lambda port: http_ok(f"http://{HOST}:{port}/")
    )
    return Target("floor (uvicorn)", "floor", server, f"http://{HOST}:{port}/", lambda _: None)


def function_zip(function: Function) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(function.file, function.source)
    return buffer.getvalue()


def deploy(endpoint: str, function: Function, memory_mb: int = MEMORY_MB) -> None:
    """Create `function` (signed with the admin key), wait until Active, invoke it once."""
    client = lambda_client(endpoint)
    client.create_function(
        FunctionName=function.name,
        Runtime=function.runtime,
        Role="arn:aws:iam::000000000000:role/bench",
        Handler=function.handler,
        MemorySize=memory_mb,
        Code={"ZipFile": function_zip(function)},
    )
    waiter = client.get_waiter("function_active_v2")
    waiter.wait(FunctionName=function.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    started = time.perf_counter()
    response = client.invoke(FunctionName=function.name, Payload=INVOKE_BODY)
    if response.get("FunctionError") or response["StatusCode"] != 200:
        payload = response["Payload"].read().decode(errors="replace")
        raise BenchError(f"warm-up invoke of {function.name} failed: {payload}")
    took_ms = (time.perf_counter() - started) * 1000
    log(f"lamina: first invoke of {function.name} took {took_ms:.0f} ms")


def deploy_noop(endpoint: str, memory_mb: int = MEMORY_MB) -> None:
    """The python3.11 no-op function `FUNCTION_NAME` (bench/async.py's)."""
    deploy(endpoint, FUNCTIONS[0], memory_mb)


def _post(port: int, path: str, headers: dict[str, str]) -> int:
    conn = HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("POST", path, body=INVOKE_BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        return int(response.status)
    except (HTTPException, OSError) as exc:
        raise BenchError(f"POST {path} failed: {exc!r}") from exc
    finally:
        conn.close()


def check_auth(port: int, path: str, auth: bool) -> list[str]:
    """With authentication on, one signed Invoke is answered 200 twice (AWS accepts a replay
    within its 5 minutes, so replaying with wrk is what a client could do) and an unsigned one
    403; with it off, the unsigned one 200. Returns what was seen, in words; raises
    `BenchError` if it is not so."""
    url = f"http://{HOST}:{port}{path}"
    signed = signed_headers("POST", url, INVOKE_BODY, INVOKE_HEADERS)
    first, replay = _post(port, path, signed), _post(port, path, signed)
    unsigned = _post(port, path, INVOKE_HEADERS)
    seen = f"signed {first}, the same request replayed {replay}, unsigned {unsigned}"
    expected = (200, 200, 403) if auth else (200, 200, 200)
    if (first, replay, unsigned) != expected:
        raise BenchError(f"authentication check of {path}: {seen}, expected {expected}")
    return [seen]


@dataclass
class LaminaInfo:
    sandbox: str
    auth: bool
    checks: list[str]
    #: the server's front workers (`--workers`)
    workers: int


def start_lamina(
    stack: contextlib.ExitStack, tmp: Path, args: argparse.Namespace
) -> tuple[list[Target], LaminaInfo]:
    data_dir = tmp / "lamina-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
    argv += ["--auth", "off"] if args.auth == "off" else []
    argv += ["--sandbox", args.sandbox] if args.sandbox else []
    argv += ["--workers", str(args.workers)] if args.workers is not None else []
    server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    sandbox = health_sandbox(endpoint)
    targets, checks = [], []
    for function in FUNCTIONS:
        deploy(endpoint, function)
        path = f"/2015-03-31/functions/{function.name}/invocations"
        checks += [f"{function.name}: {c}" for c in check_auth(port, path, args.auth == "on")]
        url = endpoint + path
        script = signed_post(url) if args.auth == "on" else unsigned_post
        targets.append(Target(f"lamina {function.runtime}", "lamina", server, url, script))
    workers = default_workers() if args.workers is None else args.workers
    return targets, LaminaInfo(sandbox, args.auth == "on", checks, workers)


def health_sandbox(endpoint: str) -> str:
    conn = HTTPConnection(HOST, int(endpoint.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/health")
        return str(json.loads(conn.getresponse().read()).get("sandbox", "?"))
    except (HTTPException, OSError, ValueError, AttributeError):
        return "?"
    finally:
        conn.close()


def start_peers(stack: contextlib.ExitStack, tmp: Path, failures: list[str]) -> list[Target]:
    """serverless-offline's two functions, or none after recording why it did not start."""
    try:
        server = peers.start_peer(stack, tmp)
    except BenchError as exc:
        log(f"{peers.PEER_NAME} failed to start, continuing without it: {exc}")
        failures.append(f"{peers.PEER_NAME} failed to start")
        return []
    return [
        Target(f"sls-offline {runtime}", "peer", server, url, unsigned_post)
        for runtime, url in peers.PEER_URLS.items()
    ]


# --- report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _row(cells: Sequence[str]) -> str:
    widths = (22, 10, 10, 9, 10, 10, 9, 9, 6, 8, 7)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 2}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def table(measurements: Sequence[Measurement]) -> list[str]:
    header = ["target", "c1 p50", "c1 p99", "c1 req/s", "c16 p50", "c16 p99", "c16 req/s"]
    lines = [_row([*header, "CPU µs", "procs", "RSS MiB", "valid"])]
    for m in measurements:
        cells = [m.name, _ms(m.c1.p50_ms), _ms(m.c1.p99_ms), f"{m.c1.rps:,.0f}"]
        cells += [_ms(m.c16.p50_ms), _ms(m.c16.p99_ms), f"{m.c16.rps:,.0f}"]
        cells += [f"{m.cpu_us_per_request:,.0f}", str(m.tree.processes), f"{m.tree.rss_mib:.0f}"]
        lines.append(_row([*cells, "INVALID" if m.problems() else "yes"]))
    lines.append(
        "  CPU µs: CPU time (user + system) of the server's whole process tree during the c16 "
        "run, per request"
    )
    return lines


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "nan"


def ratio_line(subject: Measurement, base: Measurement) -> str:
    return (
        f"  {subject.name} / {base.name}: c1 p50 {_x(subject.c1.p50_ms, base.c1.p50_ms)}, "
        f"c16 req/s {_x(subject.c16.rps, base.c16.rps)}, "
        f"CPU per request {_x(subject.cpu_us_per_request, base.cpu_us_per_request)}"
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def target_lines(m: Measurement, floor: Measurement, peers: Sequence[Measurement]) -> list[str]:
    """One met/missed line per issue-19 target for one Lamina function."""
    lines = [f"targets (issue 19), {m.name}:"]
    if m.problems() or floor.problems():
        return [*lines, "  not judged: this run is INVALID"]
    p50, p99, rps = m.c1.p50_ms, m.c1.p99_ms, m.c16.rps
    valid_peers = [p for p in peers if not p.problems()]
    if valid_peers:
        fastest = min(valid_peers, key=lambda p: p.c1.p50_ms)
        busiest = max(valid_peers, key=lambda p: p.c16.rps)
        bound = TARGET_C16_X_PEER * busiest.c16.rps
        lines += [
            f"  c1 p50 <= serverless-offline's: {_verdict(p50 <= fastest.c1.p50_ms)} "
            f"({_ms(p50)} vs {_ms(fastest.c1.p50_ms)}, {fastest.name})",
            f"  c16 >= {TARGET_C16_X_PEER}x serverless-offline's: {_verdict(rps >= bound)} "
            f"({rps:,.0f}/s vs {bound:,.0f}/s = {TARGET_C16_X_PEER} x {busiest.c16.rps:,.0f}, "
            f"{busiest.name})",
        ]
    else:
        why = "no valid serverless-offline run" if peers else "run with --peers"
        lines += [f"  c1 p50 and c16 against serverless-offline: not judged ({why})"]
    p50_bound = TARGET_C1_P50_X_FLOOR * floor.c1.p50_ms
    rps_bound = TARGET_C16_X_FLOOR * floor.c16.rps
    lines += [
        f"  c1 p50 <= {TARGET_C1_P50_X_FLOOR:g}x floor: {_verdict(p50 <= p50_bound)} "
        f"({_ms(p50)} vs {_ms(p50_bound)} = {TARGET_C1_P50_X_FLOOR:g} x {_ms(floor.c1.p50_ms)})",
        f"  c1 p99 <= {TARGET_C1_P99_MS} ms: {_verdict(p99 <= TARGET_C1_P99_MS)} ({_ms(p99)})",
        f"  c16 >= {TARGET_C16_X_FLOOR}x floor: {_verdict(rps >= rps_bound)} "
        f"({rps:,.0f}/s vs {rps_bound:,.0f}/s = {TARGET_C16_X_FLOOR} x {floor.c16.rps:,.0f})",
    ]
    return lines


def problem_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines: list[str] = []
    for m in measurements:
        lines += [f"  INVALID {m.name} {p}" for p in m.problems()]
        lines += [f"  warning {m.name} c16 warm-up: {p}" for p in m.warmup_problems]
    return lines


def report(measurements: Sequence[Measurement], info: LaminaInfo, seconds: int) -> None:
    floor = next(m for m in measurements if m.kind == "floor")
    laminas = [m for m in measurements if m.kind == "lamina"]
    peers = [m for m in measurements if m.kind == "peer"]
    auth = "on (SigV4; one signed request replayed by wrk)" if info.auth else "OFF"
    lines = [
        f"wrk, {seconds} s per run, loopback, {os.cpu_count()} CPUs; Lamina: auth {auth}, "
        f"sandbox {info.sandbox}, front workers {info.workers}, MemorySize {MEMORY_MB}",
        *[f"check: {c}" for c in info.checks],
        "",
        *table(measurements),
        "",
        "ratios (same run; c1 p50 and CPU: lower is better, c16 req/s: higher is better):",
    ]
    lines += [ratio_line(m, floor) for m in [*laminas, *peers]]
    lines += [ratio_line(m, p) for m in laminas for p in peers]
    judged: list[str] = []
    for m in laminas:
        judged += target_lines(m, floor, peers)
    met = sum(": met (" in line for line in judged)
    missed = sum(": missed (" in line for line in judged)
    lines += ["", *judged, f"summary: {met} targets met, {missed} missed"]
    problems = problem_lines(measurements)
    if problems:
        lines += ["", "problems:", *problems]
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--peers", action="store_true", help="also run serverless-offline")
    parser.add_argument(
        "--auth",
        choices=("on", "off"),
        default="on",
        help="Lamina's --auth, for comparison (default: on, Lamina's default)",
    )
    parser.add_argument(
        "--sandbox",
        choices=("auto", "namespace", "process"),
        default=None,
        help="Lamina's --sandbox, for comparison (default: the server's own, auto)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Lamina's --workers, for comparison (default: the server's own, one per CPU but one)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 120:
        # A replayed signature must stay within AWS's 5 minutes for one wrk run.
        parser.error("--duration must be between 1 and 120 seconds")
    return args


def run(
    stack: contextlib.ExitStack, args: argparse.Namespace, failures: list[str]
) -> tuple[list[Measurement], LaminaInfo]:
    tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-bench-", ignore_cleanup_errors=True)
    tmp = Path(stack.enter_context(tmp_dir))
    with_peer = args.peers and peers.peer_installed_or_skipped()
    targets = [start_floor(stack, tmp)]
    lamina_targets, info = start_lamina(stack, tmp, args)
    targets += lamina_targets
    targets += start_peers(stack, tmp, failures) if with_peer else []
    return [measure(target, args.duration, tmp) for target in targets], info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    failures: list[str] = []

    def work() -> tuple[list[Measurement], LaminaInfo]:
        with contextlib.ExitStack() as stack, unbroken_cleanup():
            return run(stack, args, failures)

    measurements, info = guarded(work)
    report(measurements, info, args.duration)
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
    return 1 if failures or any(m.problems() for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
