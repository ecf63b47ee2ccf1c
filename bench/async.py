"""Benchmark asynchronous invocation: events accepted per second and events processed per second.

Run: ``.venv/bin/python bench/async.py [--duration 10] [--auth off] [--sandbox process]`` (or
``make bench-async ARGS="..."``).

What it measures
----------------
Everything runs on 127.0.0.1 in this one run. Timings on these machines are noisy, so compare
numbers within one run; the ratios are the point.

Floors, measured first:

* HTTP floor: a bare Starlette app under uvicorn whose one route reads the body and answers an
  empty ``202``, driven by the same client as Lamina (below). No Python HTTP server on this
  stack answers faster, so it bounds what accepting an event can reach.
* disk floor: one thread committing single-row SQLite transactions (``journal_mode=WAL``,
  ``synchronous=FULL``, ``BEGIN IMMEDIATE`` / ``INSERT`` / ``COMMIT``, as Lamina's event store
  commits) for 2 s in the temporary directory that also holds Lamina's data dir (so on the same
  filesystem). Each commit syncs the WAL, so this is what one fsync per event would allow.

Then ``lamina serve`` at its defaults: authentication on (``--admin-key test:test``), its
default sandbox (fresh data dir; ``--auth off``, ``--sandbox`` and ``--retry-base-delay`` passed
through when given, for comparison) with a no-op python3.11 function ``bench-noop`` (MemorySize
1024), warmed by one synchronous Invoke. Before the load, an unsigned event and one with a
wrong signature must be refused (403). The client (bench/event_load.py): ``--clients`` (16)
asyncio connections (uvloop when importable), each keep-alive raw HTTP/1.1, sending
``POST /2015-03-31/functions/bench-noop/invocations`` with ``X-Amz-Invocation-Type: Event`` and
the body ``{"n": i}`` (``i`` unique in the phase), one request at a time, for ``--duration``
seconds; it parses only the status line and Content-Length. Every event is SigV4-signed when
it is sent, with the admin key: the bodies differ, so one signature cannot be replayed as wrk
replays one in bench/invoke.py, and botocore's signer (~100 µs of Python) would make this
one-thread client the bottleneck; `signing.FastSigner` builds the same signature (checked
against botocore's at start) in a few µs. The HTTP floor's requests are signed the same way
(it ignores the signature), so both loads cost the client the same. The report shows the
client's CPU per request, its signing cost and how busy it was: well under 100% busy, it was
not what limited the rate.

* phase A, accept only: the function gets reserved concurrency 0 (PutFunctionConcurrency), so
  its events are stored and wait. Accepted events per second (202s over the load's wall time),
  p50/p99 latency, non-202s. Then durability: ``events.db`` is opened read-only with sqlite3
  and every ``n`` answered with 202 must be in a stored row's payload, the row count must equal
  the 202s, and ``GET /lamina/async`` must count them as ``accepted`` and as its depth. The
  server's CPU time (utime + stime from /proc) is sampled around the load: server CPU
  per accepted event, and how much of it is the main thread's (the event loop; the rest is
  the event store's writer thread and other threads). The whole process tree (server and
descendants) is sampled, so a front spread over processes is counted; the HTTP floor's server
is sampled alike.
  If ``perf`` is installed, ``perf stat`` counts the server's fsync and fdatasync calls during
  the load (syscall tracepoints, in the kernel): SQLite syncs the WAL once per commit, so
  202s / syncs is how many events one group commit carried.
* phase B, drain: DeleteFunctionConcurrency, then ``/lamina/async`` is polled every 50 ms until
  its depth is 0; ``succeeded`` must have grown by exactly the events of phase A. Events that
  were throttled while the limit was 0 back off as on Lambda (1 s doubling, up to 5 min,
  scaled by ``--retry-base-delay``), so nothing runs until the back-off ends: the report gives
  the wait before the first event finished and the rate from then on (the drain rate) apart.
* phase C, accept while processing: the same load with the function running, so the queue is
  drained while events arrive; then polled until empty. Accepted per second during the load,
  and the end-to-end rate: events finished / time from the first send until the queue is empty.

After each drain the function's live environments are counted (``/lamina/environments``), and
at the end the server log's warnings and errors are counted and the first few shown.

How to read the ratios
----------------------
* ``accepted/s / HTTP floor``: the fraction of bare-HTTP throughput kept while making every
  event durable (1.00 would mean storing costs nothing).
* ``events per commit`` (with perf): 202s / the server's syncs in phase A, measured; and the
  syncs per second as a fraction of the disk floor (near 1: the disk is the limit).
* ``accepted/s / disk floor``: how many events one fsync carried on average if the store's
  writer committed at the disk floor's rate; above 1 means group commit is working, below 1
  that the disk is not what limits accepting. With ``--clients`` requests in flight, one commit
  can carry at most that many, so ``clients x disk floor`` bounds accepted/s.
* target (issue 19): >= 5,000 signed events accepted/s at c16 with every one durable before
  its 202, judged on phase A and printed as met/missed.

Exit status: 0 when the run was valid (whether or not the target was met); 1 when a server
failed to start, a request failed (any status but 202, a broken connection, a timeout) or an
event was lost (not durable, not counted, not finished, or the queue did not drain within
``--drain-timeout``); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

# Server, stats and client helpers shared with the other benchmarks; bench/ is on sys.path
# because this file is run as a script from it.
from coldstart import Stats
from event_load import (
    EVENT_HEADERS,
    Load,
    Shape,
    event_signer,
    loop_factory,
    run_load,
    signing_cost_us,
)
from harness import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    http_ok,
    lambda_client,
    log,
    start_server,
    start_uvicorn_floor,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from invoke import FUNCTION_NAME, deploy_noop, health_sandbox
from signing import admin_key_args, signed_headers

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

TARGET_ACCEPTED_PER_S = 5000.0
DISK_FLOOR_SECONDS = 2.0
POLL_INTERVAL_S = 0.05
MAX_PROBLEMS_SHOWN = 10
INVOKE_PATH = f"/2015-03-31/functions/{FUNCTION_NAME}/invocations"
ASYNC_STATUS_PATH = "/lamina/async?MaxItems=1"
FLOOR_APP = """\
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route


async def accept(request):
    await request.body()
    return Response(status_code=202)


PATH = "/2015-03-31/functions/{name}/invocations"
app = Starlette(routes=[Route(PATH, accept, methods=["POST"])])
"""
#: outcomes in /lamina/async that mean an event left the queue without succeeding
LOSSES = ("failed", "expired", "dropped")


def filesystem(path: Path) -> str:
    """The type and mount point of the filesystem holding ``path`` (from /proc/self/mounts)."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return f"{kind} on {best or '?'}"


def start_floor(stack: contextlib.ExitStack, tmp: Path) -> tuple[Server, int]:
    return start_uvicorn_floor(stack, tmp, FLOOR_APP, port_answers)


def port_answers(port: int) -> bool:
    """Whether something answers HTTP there (any status)."""
    conn = HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    except (HTTPException, OSError):
        return False
    finally:
        conn.close()
    return True


def start_lamina(
    stack: contextlib.ExitStack, tmp: Path, args: argparse.Namespace
) -> tuple[Server, str, Path]:
    """A ready ``lamina serve``; returns it, its endpoint and its data dir."""
    data_dir = tmp / "lamina-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
    argv += ["--auth", "off"] if args.auth == "off" else []
    argv += ["--sandbox", args.sandbox] if args.sandbox else []
    argv += ["--retry-base-delay", str(args.retry_base_delay)] if args.retry_base_delay else []
    server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    return server, endpoint, data_dir


def set_reserved(endpoint: str, limit: int | None) -> None:
    """Put reserved concurrency ``limit`` on the function, or delete it (None)."""
    client = lambda_client(endpoint, attempts=1)
    try:
        if limit is None:
            client.delete_function_concurrency(FunctionName=FUNCTION_NAME)
        else:
            client.put_function_concurrency(
                FunctionName=FUNCTION_NAME, ReservedConcurrentExecutions=limit
            )
    except (BotoCoreError, ClientError) as exc:
        what = "deleting" if limit is None else f"putting {limit} as"
        raise BenchError(
            f"{what} the reserved concurrency of {FUNCTION_NAME} failed: {exc}"
        ) from exc


def signed_get(port: int, path: str, conn: HTTPConnection | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET of Lamina's own endpoint `path`, signed with the admin key
    (as the `lamina` command signs it), on `conn` or a connection of its own."""
    own = conn is None
    conn = conn or HTTPConnection(HOST, port, timeout=10)
    try:
        headers = signed_headers("GET", f"http://{HOST}:{port}{path}", b"", {})
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return int(response.status), response.read()
    finally:
        if own:
            conn.close()


def live_environments(endpoint: str) -> int | None:
    """The function's environments that are not dead, or None if the server would not say."""
    try:
        status, raw = signed_get(int(endpoint.rsplit(":", 1)[1]), "/lamina/environments")
        body = json.loads(raw)
    except (HTTPException, OSError, ValueError):
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    return sum(
        1
        for env in body.get("Environments", [])
        if env.get("FunctionName") == FUNCTION_NAME and env.get("State") != "dead"
    )


def log_findings(path: Path) -> list[str]:
    """The server log's warning, error and traceback lines (it runs at --log-level warning)."""
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        keys = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [line for line in lines if any(key in line for key in keys)]
    return []


# --- the disk floor -------------------------------------------------------------------------


@dataclass
class DiskFloor:
    commits: int
    seconds: float
    where: str

    @property
    def rate(self) -> float:
        return self.commits / self.seconds


def disk_floor(directory: Path, seconds: float = DISK_FLOOR_SECONDS) -> DiskFloor:
    """Single-row transactions per second, WAL + synchronous=FULL, one thread."""
    directory.mkdir()
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE events (id TEXT PRIMARY KEY, payload BLOB NOT NULL)")
        commits = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events VALUES (?, ?)", (f"event-{commits}", b'{"n": 0}'))
            conn.execute("COMMIT")
            commits += 1
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return DiskFloor(commits, elapsed, filesystem(directory))


# --- the queue ------------------------------------------------------------------------------


class AsyncStatus:
    """``GET /lamina/async`` on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn = HTTPConnection(HOST, port, timeout=10)

    def close(self) -> None:
        self._conn.close()

    def get(self) -> dict[str, Any]:
        for attempt in range(3):
            try:
                status, body = signed_get(self._port, ASYNC_STATUS_PATH, self._conn)
            except (HTTPException, OSError) as exc:
                self._conn.close()  # the next request reconnects
                if attempt == 2:
                    raise BenchError(f"GET /lamina/async failed: {exc!r}") from exc
                continue
            if status != 200:
                raise BenchError(f"GET /lamina/async answered {status}: {body[:200]!r}")
            try:
                found = json.loads(body)
            except ValueError as exc:
                raise BenchError(f"GET /lamina/async: not JSON: {body[:200]!r}") from exc
            if not isinstance(found, dict) or not isinstance(found.get("depth"), int):
                raise BenchError(f"GET /lamina/async: unexpected body {body[:200]!r}")
            return found
        raise AssertionError("unreachable")


@dataclass
class Drain:
    """From ``started`` (perf_counter) until the queue was empty, polled every 50 ms."""

    started: float
    depth_at_start: int
    first_done_s: float | None  # until the first poll that saw an event finished
    empty_s: float | None  # None: still not empty at the timeout
    before: dict[str, Any]
    after: dict[str, Any]
    environments: int | None = None

    def delta(self, outcome: str) -> int:
        return int(self.after.get(outcome, 0)) - int(self.before.get(outcome, 0))


def drain(status: AsyncStatus, started: float, before: dict[str, Any], timeout: float) -> Drain:
    """Poll until the queue is empty; ``before`` is the status when the events were counted."""
    first = status.get()
    result = Drain(started, first["depth"], None, None, before, first)
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        current = status.get()
        result.after = current
        if result.first_done_s is None and result.delta("succeeded") > 0:
            result.first_done_s = now - started
        if current["depth"] == 0:
            result.empty_s = now - started
            return result
        if now > deadline:
            return result
        time.sleep(POLL_INTERVAL_S)


# --- durability -----------------------------------------------------------------------------


@dataclass
class Durability:
    answered: int  # 202s
    rows: int  # rows in events.db
    found: int  # 202s whose payload is in a row
    counted: int  # /lamina/async accepted
    depth: int  # /lamina/async depth

    def problems(self) -> list[str]:
        found = []
        if self.found != self.answered:
            found.append(f"{self.answered - self.found} accepted events not in events.db")
        if self.rows != self.answered:
            found.append(f"events.db holds {self.rows} rows for {self.answered} 202s")
        if self.counted != self.answered:
            found.append(f"/lamina/async counts {self.counted} accepted for {self.answered} 202s")
        if self.depth != self.answered:
            found.append(f"/lamina/async depth {self.depth} for {self.answered} 202s")
        return found


def check_durable(db: Path, accepted: Sequence[int], status: dict[str, Any]) -> Durability:
    """Read events.db (read-only, beside the running server) for every accepted ``n``."""
    if not db.is_file():
        raise BenchError(f"{db} does not exist")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored: set[int] = set()
        rows = 0
        for (payload,) in conn.execute("SELECT payload FROM events"):
            rows += 1
            with contextlib.suppress(ValueError, TypeError, KeyError, UnicodeDecodeError):
                stored.add(int(json.loads(bytes(payload))["n"]))
    except sqlite3.Error as exc:
        raise BenchError(f"reading {db} failed: {exc}") from exc
    finally:
        conn.close()
    found = sum(1 for n in accepted if n in stored)
    return Durability(len(accepted), rows, found, int(status.get("accepted", -1)), status["depth"])


# --- report ---------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ms(stats: Stats | None, which: str) -> str:
    return "-" if stats is None else f"{getattr(stats, which):.2f} ms"


def _per(cpu_s: float, count: int) -> str:
    # max: the main thread's share is read apart from the total, a clock tick may be between
    return f"{max(cpu_s, 0.0) * 1e6 / count:,.0f}" if count else "-"


def _row(cells: Sequence[str]) -> str:
    widths = (30, 8, 9, 9, 9, 8, 7, 10, 10)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 2}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def load_table(loads: Sequence[Load]) -> list[str]:
    header = ["load", "202s", "202s/s", "p50", "p99", "non-202", "errors"]
    lines = [_row([*header, "server µs", "client µs"])]
    for load in loads:
        latency, accepted = load.latency(), len(load.stats.accepted)
        cells = [load.name, f"{accepted:,}", _rate(load.accepted_per_s)]
        cells += [_ms(latency, "p50"), _ms(latency, "p99")]
        cells += [f"{sum(load.stats.statuses.values()):,}", f"{len(load.stats.errors):,}"]
        cells += [_per(load.server_cpu_s, accepted), _per(load.client_cpu_s, load.requests)]
        lines.append(_row(cells))
    lines.append(
        "  202s/s: 202s over the load's wall time; server/client µs: CPU time (user + system) "
        "per 202 of the server's process tree and per request of this client"
    )
    for load in loads:
        accepted = len(load.stats.accepted)
        lines.append(
            f"  {load.name}: server µs per 202 = {_per(load.server_main_cpu_s, accepted)} in "
            "the main (event-loop) thread + "
            f"{_per(load.server_cpu_s - load.server_main_cpu_s, accepted)} in other threads"
        )
    return lines


def drain_lines(name: str, events: int, result: Drain, since: str, waited: bool) -> list[str]:
    """``waited``: the queue was full when polling began (phase B), so the time until the
    first event finished is the wait before processing started."""
    if result.empty_s is None:
        return [f"{name}: NOT empty after the timeout, depth {result.after['depth']}"]
    envs = "?" if result.environments is None else str(result.environments)
    first = result.first_done_s
    lines = [
        f"{name}: {events:,} events, queue empty {result.empty_s:.2f} s after {since} "
        f"({events / result.empty_s:,.0f}/s); depth when polling began "
        f"{result.depth_at_start:,}; live environments after: {envs}"
    ]
    if waited and first is not None and result.empty_s > first:
        running = result.empty_s - first
        lines.append(
            f"  first event finished after {first:.2f} s; then {running:.2f} s to empty: "
            f"{result.delta('succeeded'):,} finished, {result.delta('succeeded') / running:,.0f}/s"
        )
    counts = ", ".join(
        f"{outcome} +{result.delta(outcome):,}"
        for outcome in ("succeeded", "retried", "throttled", *LOSSES)
    )
    return [*lines, f"  /lamina/async: {counts}"]


def syncs_line(load: Load, disk_rate: float) -> str:
    if load.syncs is None:
        return f"  A events per commit: not measured ({load.syncs_why})"
    per_s = load.syncs / load.seconds
    per_sync = f"{len(load.stats.accepted) / load.syncs:.1f}" if load.syncs else "-"
    return (
        f"  A events per commit = {per_sync}: the server made {load.syncs:,} fsync/fdatasync "
        f"calls (perf stat), {per_s:,.0f}/s = {_ratio(per_s, disk_rate)} of the disk floor"
    )


@dataclass
class Run:
    cpus: str
    sandbox: str
    disk: DiskFloor
    floor: Load
    accept: Load
    durable: Durability
    drain: Drain
    mixed: Load
    mixed_drain: Drain
    server_log: list[str]  # warnings and errors while it ran
    shutdown_log: list[str]  # those it logged while being stopped
    clients: int
    seconds: float
    auth: bool
    signing_us: float  # this client's CPU per signature
    checks: list[str]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "nan"


def report(run: Run) -> list[str]:
    """Print the report; return the problems that make the run invalid."""
    a, c, floor, disk = run.accept, run.mixed, run.floor, run.disk
    accepted_a, accepted_c = len(a.stats.accepted), len(c.stats.accepted)
    cpu_a = a.server_cpu_s / max(accepted_a, 1)
    cpu_floor = floor.server_cpu_s / max(floor.requests, 1)
    auth = "on (SigV4, each event signed by the client)" if run.auth else "OFF"
    lines = [
        f"{run.clients} clients (asyncio{' + uvloop' if loop_factory() else ''}, raw HTTP/1.1 "
        f"keep-alive), {run.seconds:g} s per load, sandbox {run.sandbox}, auth {auth}, "
        f"loopback, {run.cpus}",
        *[f"check: {check}" for check in run.checks],
        "",
        *load_table([floor, a, c]),
        *client_lines(run),
        "",
        f"disk floor: {disk.commits:,} single-row commits in {disk.seconds:.2f} s = "
        f"{disk.rate:,.0f} commits/s (WAL, synchronous=FULL, one thread; {disk.where})",
        f"durable (phase A): {run.durable.found:,}/{run.durable.answered:,} accepted events in "
        f"events.db ({run.durable.rows:,} rows); /lamina/async accepted {run.durable.counted:,}, "
        f"depth {run.durable.depth:,}",
        *drain_lines("B drain", accepted_a, run.drain, "the limit was deleted", True),
        *drain_lines("C end-to-end", accepted_c, run.mixed_drain, "the first send", False),
        "",
        "ratios (same run):",
        f"  A accepted/s / HTTP floor = {_ratio(a.accepted_per_s, floor.accepted_per_s)}",
        f"  C accepted/s / HTTP floor = {_ratio(c.accepted_per_s, floor.accepted_per_s)}",
        f"  A accepted/s / disk floor = {_ratio(a.accepted_per_s, disk.rate)} (events per "
        "fsync if the store committed at the disk floor's rate: > 1 is group commit at work, "
        "< 1 means the disk is not what limits accepting)",
        syncs_line(a, disk.rate),
        f"  {run.clients} clients x disk floor = {run.clients * disk.rate:,.0f}/s: the most "
        "accepted/s with one fsync per commit and one request in flight per client",
        f"  A server CPU per event / floor's per request = {_ratio(cpu_a, cpu_floor)}",
    ]
    problems = [f"floor: {p}" for p in floor.problems()]
    problems += [f"A: {p}" for p in a.problems()] + [f"C: {p}" for p in c.problems()]
    problems += [f"A durability: {p}" for p in run.durable.problems()]
    for name, events, result in (("B", accepted_a, run.drain), ("C", accepted_c, run.mixed_drain)):
        if result.empty_s is None:
            problems.append(f"{name}: the queue did not drain (depth {result.after['depth']})")
        elif result.delta("succeeded") != events:
            problems.append(f"{name}: succeeded +{result.delta('succeeded')} for {events} events")
        problems += [
            f"{name}: {outcome} +{result.delta(outcome)}"
            for outcome in LOSSES
            if result.delta(outcome)
        ]
    if run.drain.empty_s is not None:
        lines.append(f"  B drain: {accepted_a / run.drain.empty_s:,.0f} events/s overall")
    if run.mixed_drain.empty_s is not None:
        lines.append(f"  C end-to-end: {accepted_c / run.mixed_drain.empty_s:,.0f} events/s")
    durable = not a.problems() and not run.durable.problems()
    met = a.accepted_per_s >= TARGET_ACCEPTED_PER_S and durable
    verdict = "met" if met else "missed" if durable else "not judged (phase A is INVALID)"
    lines += [
        "",
        f"target (issue 19): >= {TARGET_ACCEPTED_PER_S:,.0f} signed events accepted/s at "
        f"c{run.clients}, each durable before its 202: {verdict} (phase A "
        f"{a.accepted_per_s:,.0f}/s, durable {run.durable.found:,}/{run.durable.answered:,}; "
        f"beside the HTTP floor's {floor.accepted_per_s:,.0f}/s and the disk floor's "
        f"{disk.rate:,.0f} commits/s; phase C {c.accepted_per_s:,.0f}/s)",
    ]
    if run.server_log:
        lines += ["", f"server log: {len(run.server_log)} warning/error lines, first few:"]
        lines += [f"  {line[:200]}" for line in run.server_log[:MAX_PROBLEMS_SHOWN]]
    else:
        lines += ["", "server log: no warnings or errors"]
    if run.shutdown_log:
        lines.append(f"server log while it was being stopped: {len(run.shutdown_log)} lines")
        lines += [f"  {line[:200]}" for line in run.shutdown_log[:MAX_PROBLEMS_SHOWN]]
    failed = [e for load in (floor, a, c) for e in load.stats.errors][:MAX_PROBLEMS_SHOWN]
    if failed:
        lines += ["", "failed requests (first few):", *[f"  {e}" for e in failed]]
    print("\n".join(lines), flush=True)
    return problems


def client_lines(run: Run) -> list[str]:
    """Whether this client could have been the bottleneck: its CPU per request and how busy
    it was (one thread; near 100% busy it, not the server, would set the rate)."""
    lines = []
    for load in (run.floor, run.accept, run.mixed):
        busy = load.client_cpu_s / load.seconds if load.seconds else 0.0
        lines.append(
            f"  client during {load.name}: {_per(load.client_cpu_s, load.requests)} µs CPU "
            f"per request, busy {busy:.0%} of the load's wall time"
        )
    lines.append(
        f"  signing one event costs this client {run.signing_us:.1f} µs (botocore's signer "
        "would cost ~100 µs); the HTTP floor's clients sign too, so both loads pay it"
    )
    return lines


# --- main -----------------------------------------------------------------------------------


def cpu_line() -> str:
    usable = len(os.sched_getaffinity(0))
    total = os.cpu_count()
    return f"{usable} CPUs" if usable == total else f"{usable} of {total} CPUs"


def check_auth(port: int, auth: bool) -> list[str]:
    """With authentication on, an unsigned event and one whose signature is wrong are refused
    (403, so nothing is queued) while a signed one is accepted (its 202s are the load's); the
    signer was checked against botocore's. Raises `BenchError` if the server does otherwise."""
    if not auth:
        return ["authentication is off (--auth off): events are sent unsigned"]
    body = b'{"n": -1}'
    signed = {**EVENT_HEADERS, **event_signer(port, INVOKE_PATH).headers(body)}
    wrong = {**signed, "Authorization": signed["Authorization"][:-1] + "x"}
    seen = []
    for name, headers in (("unsigned", EVENT_HEADERS), ("wrong signature", wrong)):
        conn = HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("POST", INVOKE_PATH, body=body, headers=headers)
            status = conn.getresponse().status
        except (HTTPException, OSError) as exc:
            raise BenchError(f"the {name} event failed: {exc!r}") from exc
        finally:
            conn.close()
        if status != 403:
            raise BenchError(f"an event with {name} got HTTP {status}, not 403")
        seen.append(f"{name} {status}")
    return [
        f"events: {', '.join(seen)}; each of the load's events is signed (FastSigner, "
        "checked against botocore's signature)"
    ]


def run(tmp: Path, args: argparse.Namespace) -> Run:
    log("disk floor: single-row commits for 2 s")
    disk = disk_floor(tmp / "disk-floor")
    with contextlib.ExitStack() as stack:
        floor_server, floor_port = start_floor(stack, tmp)
        # Signed like Lamina's load (the floor ignores the signature): the same client work.
        floor_shape = Shape(floor_port, INVOKE_PATH, event_signer(floor_port, INVOKE_PATH))
        signing_us = signing_cost_us(event_signer(floor_port, INVOKE_PATH))
        floor = run_load(
            "HTTP floor (uvicorn, 202)", floor_server, floor_shape, args.clients, args.duration
        )
    with contextlib.ExitStack() as stack:
        server, endpoint, data_dir = start_lamina(stack, tmp, args)
        port = int(endpoint.rsplit(":", 1)[1])
        sandbox = health_sandbox(endpoint)
        log(f"/health says sandbox={sandbox}")
        deploy_noop(endpoint)
        checks = check_auth(port, args.auth == "on")
        shape = Shape(
            port, INVOKE_PATH, event_signer(port, INVOKE_PATH) if args.auth == "on" else None
        )
        status = AsyncStatus(port)
        stack.callback(status.close)

        set_reserved(endpoint, 0)
        accept = run_load(
            "A accept only (limit 0)", server, shape, args.clients, args.duration, count_syncs=True
        )
        after_a = status.get()
        durable = check_durable(data_dir / "events.db", accept.stats.accepted, after_a)
        log(f"A: durable {durable.found}/{durable.answered}; deleting the reserved concurrency")

        set_reserved(endpoint, None)
        drained = drain(status, time.perf_counter(), after_a, args.drain_timeout)
        drained.environments = live_environments(endpoint)
        log(f"B: drained in {drained.empty_s} s")

        before_c = status.get()
        mixed = run_load("C accept while processing", server, shape, args.clients, args.duration)
        mixed_drain = drain(status, mixed.started, before_c, args.drain_timeout)
        mixed_drain.environments = live_environments(endpoint)
        log(f"C: empty {mixed_drain.empty_s} s after the first send")
        during = log_findings(server.log_path)
    return Run(
        cpu_line(),
        sandbox,
        disk,
        floor,
        accept,
        durable,
        drained,
        mixed,
        mixed_drain,
        during,
        log_findings(server.log_path)[len(during) :],
        args.clients,
        args.duration,
        args.auth == "on",
        signing_us,
        checks,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument(
        "--sandbox",
        choices=("auto", "namespace", "process"),
        default=None,
        help="passed to lamina serve --sandbox, for comparison (default: its own, auto)",
    )
    parser.add_argument(
        "--auth",
        choices=("on", "off"),
        default="on",
        help="Lamina's --auth, for comparison (default: on, Lamina's default)",
    )
    parser.add_argument(
        "--retry-base-delay",
        type=float,
        default=None,
        help="passed to lamina serve (default: its own, Lambda's 60 s; scales throttle back-off)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="seconds to wait for an empty queue"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    if not 1 <= args.clients <= 1024:
        parser.error("--clients must be between 1 and 1024")
    if args.retry_base_delay is not None and args.retry_base_delay <= 0:
        parser.error("--retry-base-delay must be > 0")
    if args.drain_timeout <= 0:
        parser.error("--drain-timeout must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def work() -> Run:
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-async-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            return run(Path(tmp), args)

    result = guarded(work)
    problems = report(result)
    print(f"\nrun took {time.perf_counter() - started:.0f} s", flush=True)
    for problem in problems:
        print(f"INVALID: {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
