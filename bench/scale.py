"""Benchmark Lamina under mixed concurrent load: many clients, several functions, reserved limits.

Run: ``.venv/bin/python bench/scale.py [--duration 20] [--clients 64]`` (or
``make bench-scale ARGS="..."``).

What it measures
----------------
One ``lamina serve`` on 127.0.0.1 with a fresh data dir (``--sandbox`` is passed through when
given; otherwise the server's default: the namespace backend as root). Eight python3.11
functions ``scale-0`` .. ``scale-7`` (128 MB) are created with boto3; each handler sleeps its
own duration (``--durations``, default 0,5,10,20,50,100,200,500 ms: one function per entry)
and returns ``{"slept_ms": N}``. Some get reserved concurrency with PutFunctionConcurrency
(``--reserved``, default ``scale-6=4,scale-7=2``); a server without that API is reported and
the run goes on without limits.

Then ``--clients`` threads, each with its own keep-alive HTTP connection (raw HTTP, no boto3 on
the timed path), invoke for ``--duration`` seconds. Client ``i``'s ``k``-th request goes to
function ``(i + k) mod 8`` (``--pick random``: a seeded random choice instead), so every
client visits every function and slow functions gather more of the clients at once. There is
no warm-up: every environment's cold start happens inside the run and is counted.

Each request sends ``X-Amz-Log-Type: Tail``; a REPORT line with ``Init Duration`` in the
returned log tail marks a cold start. HTTP 429 is a throttle, counted per function and per
``Reason`` from its body (ReservedFunctionConcurrentInvocationLimitExceeded, ...), not an
error. Any other status, a function error, an unexpected body or a broken connection is an
error.

Concurrency is watched from both ends:

* server side (the check): a background thread polls ``GET /lamina/environments`` every 50 ms
  and counts, per function, the environments that are ``busy`` and those that are ``busy`` or
  ``starting``. Lamina starts an environment only for an invocation, so a starting one is
  running that invocation's init, which Lambda counts as concurrency; the check uses the
  larger count. A poll is a snapshot, so a peak shorter than the gap between polls can be
  missed: PASS is strong evidence, not proof.
* client side: the number of this function's requests between send and response at once
  ("in flight"). That includes time spent queued and the throttled requests, so it may
  exceed the limit without anything being wrong; it is shown for comparison.

Throughput is 200 responses per second of the load phase (start to the last client's end).
Percentiles are of 200 responses only, nearest rank. The bench and the server share this
machine's CPUs, so compare numbers within one run.

Exit status: 0 when the server started, no request failed (throttles are not failures) and no
function's server-side peak exceeded its limit; 1 otherwise; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

# Server, stats and client helpers shared with the other benchmarks; bench/ is on sys.path
# because this file is run as a script from it.
from coldstart import Stats, get_json, lambda_client, summarize
from invoke import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    handler_zip,
    http_ok,
    log,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

PREFIX = "scale-"
DEFAULT_DURATIONS_MS = (0, 5, 10, 20, 50, 100, 200, 500)
DEFAULT_RESERVED = "scale-6=4,scale-7=2"
MEMORY_MB = 128
POLL_INTERVAL_S = 0.05
REQUEST_TIMEOUT_S = 60.0
MAX_PROBLEMS_SHOWN = 10
INVOKE_HEADERS = {"Content-Type": "application/json", "X-Amz-Log-Type": "Tail"}
# The sleep comes from the function's environment, so all functions share one zip.
SLEEP_HANDLER = """\
import os
import time

SLEEP_MS = int(os.environ["SLEEP_MS"])


def handler(event, context):
    time.sleep(SLEEP_MS / 1000)
    return {"slept_ms": SLEEP_MS}
"""


# --- server and functions -------------------------------------------------------------------


def start_lamina(stack: contextlib.ExitStack, tmp: Path, sandbox: str | None) -> str:
    """A ready ``lamina serve`` (with ``--sandbox`` only when asked); returns its endpoint."""
    data_dir = tmp / "lamina-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning"]
    # Raw HTTP (wrk, sockets) does not sign; bench/auth.py measures authentication's cost.
    argv += ["--auth", "off"]
    argv += ["--sandbox", sandbox] if sandbox else []
    server: Server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    return endpoint


def create_functions(endpoint: str, durations: dict[str, int]) -> None:
    client, code = lambda_client(endpoint), handler_zip(SLEEP_HANDLER)
    try:
        for name, sleep_ms in durations.items():
            client.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": code},
                MemorySize=MEMORY_MB,
                Timeout=max(3, sleep_ms // 1000 + 3),  # Lambda's default 3 s, or room to sleep
                Environment={"Variables": {"SLEEP_MS": str(sleep_ms)}},
            )
        waiter = client.get_waiter("function_active_v2")
        for name in durations:
            waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    except (BotoCoreError, ClientError, WaiterError) as exc:
        raise BenchError(f"creating the functions failed: {exc}") from exc


def _not_implemented(exc: Exception) -> bool:
    """Whether a failed call means the server has no such operation (rather than refusing it)."""
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = exc.response.get("Error", {}).get("Code", "")
    return status in (404, 405, 501) or code in ("UnknownOperationException", "404")


def set_reserved(endpoint: str, wanted: dict[str, int]) -> dict[str, int]:
    """Put each function's reserved concurrency; the limits that the server took."""
    client, applied = lambda_client(endpoint), {}
    for name, limit in wanted.items():
        try:
            client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=limit)
        except (BotoCoreError, ClientError) as exc:
            if _not_implemented(exc):
                print(f"reserved concurrency not supported by this server: {exc}", flush=True)
                return {}
            print(f"reserved concurrency {name}={limit} refused, no limit: {exc}", flush=True)
            continue
        applied[name] = limit
    return applied


def account_settings_line(endpoint: str) -> str:
    try:
        settings = lambda_client(endpoint).get_account_settings()
    except (BotoCoreError, ClientError) as exc:
        return f"account settings: not available from this server: {exc}"
    limit = settings.get("AccountLimit", {})
    return (
        f"account settings: ConcurrentExecutions {limit.get('ConcurrentExecutions', '?')}, "
        f"UnreservedConcurrentExecutions {limit.get('UnreservedConcurrentExecutions', '?')}"
    )


# --- load -----------------------------------------------------------------------------------


@dataclass
class FunctionStats:
    """One function's counts; each client thread keeps its own, merged after the run."""

    ok_ms: list[float] = field(default_factory=list)
    cold: int = 0
    throttles: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def invokes(self) -> int:
        return len(self.ok_ms) + sum(self.throttles.values()) + len(self.errors)

    def merge(self, other: FunctionStats) -> None:
        self.ok_ms += other.ok_ms
        self.cold += other.cold
        self.throttles += other.throttles
        self.errors += other.errors


class InFlight:
    """Client-side requests between send and response, per function, and the peak of each."""

    def __init__(self, names: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._now = dict.fromkeys(names, 0)
        self.peak = dict.fromkeys(names, 0)

    @contextlib.contextmanager
    def request(self, name: str) -> Iterator[None]:
        with self._lock:
            self._now[name] += 1
            self.peak[name] = max(self.peak[name], self._now[name])
        try:
            yield
        finally:
            with self._lock:
                self._now[name] -= 1


def _throttle_reason(response_body: bytes, error_type: str | None) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        reason = json.loads(response_body).get("Reason")
        if reason:
            return str(reason)
    return f"(no Reason; {error_type or 'no x-amzn-ErrorType'})"


def _is_cold(log_result: str | None) -> bool:
    if not log_result:
        return False
    with contextlib.suppress(ValueError):
        return b"Init Duration" in base64.b64decode(log_result)
    return False


def invoke_once(conn: HTTPConnection, name: str, expected: bytes, stats: FunctionStats) -> None:
    """One timed Invoke of ``name``, recorded in ``stats``."""
    started = time.perf_counter()
    try:
        conn.request("POST", f"/2015-03-31/functions/{name}/invocations", b"{}", INVOKE_HEADERS)
        response = conn.getresponse()
        body = response.read()
    except (HTTPException, OSError) as exc:
        conn.close()  # the next request reconnects
        stats.errors.append(f"{name}: {exc!r}")
        return
    took = (time.perf_counter() - started) * 1000
    if response.status == 429:
        stats.throttles[_throttle_reason(body, response.getheader("x-amzn-ErrorType"))] += 1
    elif response.status != 200:
        stats.errors.append(f"{name}: HTTP {response.status} {body[:200]!r}")
    elif response.getheader("X-Amz-Function-Error"):
        stats.errors.append(f"{name}: function error {body[:200]!r}")
    elif body.replace(b" ", b"") != expected:
        stats.errors.append(f"{name}: unexpected body {body[:200]!r}")
    else:
        stats.ok_ms.append(took)
        stats.cold += _is_cold(response.getheader("X-Amz-Log-Result"))


@dataclass
class Client:
    index: int
    port: int
    names: Sequence[str]
    expected: dict[str, bytes]
    in_flight: InFlight
    stop: threading.Event
    pick: str
    seed: int
    stats: dict[str, FunctionStats] = field(default_factory=dict)

    def run(self) -> None:
        self.stats = {name: FunctionStats() for name in self.names}
        chooser = random.Random(self.seed + self.index)
        conn = HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT_S)
        k = 0
        try:
            while not self.stop.is_set():
                if self.pick == "random":
                    name = chooser.choice(self.names)
                else:
                    name = self.names[(self.index + k) % len(self.names)]
                k += 1
                with self.in_flight.request(name):
                    invoke_once(conn, name, self.expected[name], self.stats[name])
        finally:
            conn.close()


class EnvironmentPoller(threading.Thread):
    """Polls ``/lamina/environments`` and keeps each function's peak busy environments."""

    def __init__(self, port: int, names: Sequence[str]) -> None:
        super().__init__(name="environment-poller", daemon=True)
        self._port = port
        self._halt = threading.Event()
        self.busy = dict.fromkeys(names, 0)
        self.executing = dict.fromkeys(names, 0)  # busy or starting
        self.environments = dict.fromkeys(names, 0)
        self.polls = 0
        self.problem: str | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        conn = HTTPConnection(HOST, self._port, timeout=10)
        try:
            while not self._halt.is_set():
                if not self._poll(conn):
                    return
                self._halt.wait(POLL_INTERVAL_S)
        finally:
            conn.close()

    def _poll(self, conn: HTTPConnection) -> bool:
        try:
            conn.request("GET", "/lamina/environments")
            response = conn.getresponse()
            body = response.read()
        except (HTTPException, OSError) as exc:
            conn.close()
            self.problem = f"GET /lamina/environments failed: {exc!r}"
            return True  # try again: the server may just be slow under this load
        if response.status != 200:
            self.problem = f"GET /lamina/environments answered {response.status}"
            return False
        try:
            environments = json.loads(body)["Environments"]
        except (ValueError, KeyError, TypeError):
            self.problem = f"GET /lamina/environments: unexpected body {body[:200]!r}"
            return False
        counts: dict[str, Counter[str]] = {}
        for env in environments:
            counts.setdefault(str(env.get("FunctionName")), Counter())[str(env.get("State"))] += 1
        for name in self.busy:
            states = counts.get(name, Counter())
            self.busy[name] = max(self.busy[name], states["busy"])
            executing = states["busy"] + states["starting"]
            self.executing[name] = max(self.executing[name], executing)
            self.environments[name] = max(self.environments[name], states.total() - states["dead"])
        self.polls += 1
        return True


@dataclass
class LoadResult:
    seconds: float
    stats: dict[str, FunctionStats]
    in_flight: dict[str, int]
    poller: EnvironmentPoller


def run_load(port: int, names: Sequence[str], durations: dict[str, int], args: Any) -> LoadResult:
    expected = {n: json.dumps({"slept_ms": durations[n]}).replace(" ", "").encode() for n in names}
    stop, in_flight = threading.Event(), InFlight(names)
    clients = [
        Client(i, port, names, expected, in_flight, stop, args.pick, args.seed)
        for i in range(args.clients)
    ]
    threads = [threading.Thread(target=c.run, name=f"client-{c.index}") for c in clients]
    poller = EnvironmentPoller(port, names)
    poller.start()
    log(f"{args.clients} clients for {args.duration:g} s over {len(names)} functions")
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        stop.wait(args.duration)
    finally:  # on Ctrl-C too: let every request in flight finish, so the server stops cleanly
        stop.set()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        poller.stop()
    merged = {name: FunctionStats() for name in names}
    for client in clients:
        for name, stats in client.stats.items():
            merged[name].merge(stats)
    return LoadResult(seconds, merged, in_flight.peak, poller)


# --- report ---------------------------------------------------------------------------------


def _ms(stats: Stats | None, which: str) -> str:
    return "-" if stats is None else f"{getattr(stats, which):.1f} ms"


def _row(cells: Sequence[str]) -> str:
    widths = (8, 6, 5, 7, 8, 9, 9, 5, 9, 5, 7, 5, 6, 10)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 2}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def _verdict(peak: int, limit: int | None, measured: bool) -> str:
    if limit is None:
        return "-"
    if not measured:
        return "unchecked"
    return "PASS" if peak <= limit else "FAIL"


def table(
    result: LoadResult, durations: dict[str, int], limits: dict[str, int]
) -> tuple[list[str], list[str]]:
    """(table lines, functions whose server-side peak exceeded the limit)."""
    header = ["function", "sleep", "limit", "invokes", "ok/s", "p50", "p99", "cold"]
    header += ["throttled", "busy", "busy+st", "envs", "flight", "peak<=lim"]
    lines, over = [_row(header)], []
    measured = result.poller.polls > 0
    for name, stats in result.stats.items():
        ok = summarize(stats.ok_ms) if stats.ok_ms else None
        limit = limits.get(name)
        poller = result.poller
        verdict = _verdict(poller.executing[name], limit, measured)
        if verdict == "FAIL":
            over.append(name)
        peaks = (poller.busy, poller.executing, poller.environments)
        server_peaks = [str(peak[name]) if measured else "-" for peak in peaks]
        cells = [name, f"{durations[name]} ms", "-" if limit is None else str(limit)]
        cells += [f"{stats.invokes:,}", f"{len(stats.ok_ms) / result.seconds:,.1f}"]
        cells += [_ms(ok, "p50"), _ms(ok, "p99"), str(stats.cold)]
        cells += [f"{sum(stats.throttles.values()):,}", *server_peaks]
        cells += [str(result.in_flight[name]), verdict]
        lines.append(_row(cells))
    total = FunctionStats()
    for stats in result.stats.values():
        total.merge(stats)
    ok = summarize(total.ok_ms) if total.ok_ms else None
    lines.append(
        f"total: {total.invokes:,} invokes, {len(total.ok_ms) / result.seconds:,.1f} ok/s, "
        f"p50 {_ms(ok, 'p50')}, p99 {_ms(ok, 'p99')}, {total.cold} cold starts, "
        f"{sum(total.throttles.values()):,} throttles, {len(total.errors)} errors"
    )
    return lines, over


def report(
    result: LoadResult,
    durations: dict[str, int],
    limits: dict[str, int],
    header: Sequence[str],
) -> list[str]:
    """Print the report; return the problems that make the run fail."""
    rows, over = table(result, durations, limits)
    lines = [*header, "", *rows, ""]
    poller = result.poller
    if poller.polls:
        lines.append(
            f"server side: {poller.polls} polls of /lamina/environments in "
            f"{result.seconds:.1f} s; busy / busy+st(arting) / envs (any live state) are peaks; "
            "peak<=lim checks busy+starting"
        )
    else:
        lines.append("server side: not measured (no successful poll of /lamina/environments)")
    if poller.problem:
        lines.append(f"  last poll problem: {poller.problem}")
    lines.append("flight: peak requests of the function between send and response (client side)")
    reasons = [
        f"  {name}: " + ", ".join(f"{reason} {n:,}" for reason, n in stats.throttles.items())
        for name, stats in result.stats.items()
        if stats.throttles
    ]
    if reasons:
        lines += ["throttles by Reason:", *reasons]
    errors = [error for stats in result.stats.values() for error in stats.errors]
    problems = [f"{len(errors)} failed requests"] if errors else []
    problems += [
        f"{name}: server-side peak {poller.executing[name]} exceeded its limit {limits[name]}"
        for name in over
    ]
    if errors:
        lines += ["", "failed requests (first few):"]
        lines += [f"  {error}" for error in errors[:MAX_PROBLEMS_SHOWN]]
    print("\n".join(lines), flush=True)
    return problems


# --- main -----------------------------------------------------------------------------------


def _durations(value: str) -> list[int]:
    try:
        parsed = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a comma list of milliseconds, got {value!r}") from exc
    if not 1 <= len(parsed) <= 64 or any(not 0 <= ms <= 60_000 for ms in parsed):
        raise argparse.ArgumentTypeError("1 to 64 durations, each 0 to 60000 ms")
    return parsed


def _reserved(value: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, number = part.partition("=")
        try:
            limits[name.strip()] = int(number)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"name=N pairs, got {part!r}") from exc
    return limits


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=64, help="concurrent client threads")
    parser.add_argument(
        "--durations",
        type=_durations,
        default=list(DEFAULT_DURATIONS_MS),
        help="ms each function sleeps, one function per entry (default 0,5,...,500)",
    )
    parser.add_argument(
        "--reserved",
        type=_reserved,
        default=_reserved(DEFAULT_RESERVED),
        help=f"reserved concurrency, name=N,... (default {DEFAULT_RESERVED}; '' for none)",
    )
    parser.add_argument("--pick", choices=("round-robin", "random"), default="round-robin")
    parser.add_argument("--seed", type=int, default=1, help="for --pick random")
    parser.add_argument(
        "--sandbox", default=None, help="passed to lamina serve --sandbox (default: its own)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 3600:
        parser.error("--duration must be between 1 and 3600 seconds")
    if not 1 <= args.clients <= 1024:
        parser.error("--clients must be between 1 and 1024")
    names = {f"{PREFIX}{i}" for i in range(len(args.durations))}
    unknown = sorted(set(args.reserved) - names)
    if unknown:
        parser.error(f"--reserved names functions that do not exist: {', '.join(unknown)}")
    if any(n < 0 for n in args.reserved.values()):
        parser.error("--reserved limits must be >= 0")
    return args


def run(tmp: Path, args: argparse.Namespace) -> list[str]:
    durations = {f"{PREFIX}{i}": ms for i, ms in enumerate(args.durations)}
    with contextlib.ExitStack() as stack:
        endpoint = start_lamina(stack, tmp, args.sandbox)
        _, health = get_json(f"{endpoint}/health")
        sandbox = health.get("sandbox", "?") if isinstance(health, dict) else "?"
        log(f"/health says sandbox={sandbox}; creating {len(durations)} functions")
        create_functions(endpoint, durations)
        limits = set_reserved(endpoint, args.reserved)
        settings = account_settings_line(endpoint)
        result = run_load(int(endpoint.rsplit(":", 1)[1]), list(durations), durations, args)
    pick = "round robin from the client's index" if args.pick == "round-robin" else "seeded random"
    header = [
        f"{args.clients} clients (raw HTTP keep-alive, {pick}) over {len(durations)} python3.11 "
        f"functions ({MEMORY_MB} MB), {result.seconds:.1f} s, sandbox {sandbox}, "
        f"loopback, {os.cpu_count()} CPUs",
        "reserved concurrency: "
        + (", ".join(f"{n}={v}" for n, v in limits.items()) if limits else "none"),
        settings,
    ]
    return report(result, durations, limits, header)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> list[str]:
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-scale-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            return run(Path(tmp), args)

    problems = guarded(work, "server")
    for problem in problems:
        print(f"FAILED: {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
