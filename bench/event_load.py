"""The load bench/async.py drives: asyncio clients sending asynchronous invokes, each on one
keep-alive connection with raw HTTP/1.1, SigV4-signed per request (`signing.FastSigner`: each
event's body differs, so one signature cannot be replayed), and what is sampled around a load
(the server's CPU from /proc, its fsync calls with perf).

The client must not be the bottleneck: it parses only the status line and Content-Length,
signs in a few µs, and reports its own CPU time per request so a run can show how far below
its own capacity it ran.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# bench/ is on sys.path: the benchmarks are run as scripts from it.
from coldstart import Stats, summarize
from harness import HOST, Server, cpu_seconds_between, log, process_tree, tree_cpu
from signing import FastSigner

CONNECT_TIMEOUT_S = 10.0
#: how long after its deadline a load may take to finish the requests in flight
LOAD_GRACE_S = 30.0
MAX_PROBLEMS_SHOWN = 10
#: the syscall tracepoints SyncCounter counts, and how long perf may take to attach
SYNC_EVENTS = ("syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync")
PERF_ATTACH_S = 0.5

T = TypeVar("T")


def main_thread_cpu(pid: int) -> float:
    """User + system CPU seconds of a process's main thread (which runs its event loop)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ClientStats:
    """One connection's results; merged after the load."""

    latencies_s: list[float] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)  # the n of each 202
    statuses: Counter[int] = field(default_factory=Counter)  # the other statuses
    errors: list[str] = field(default_factory=list)

    def merge(self, other: ClientStats) -> None:
        self.latencies_s += other.latencies_s
        self.accepted += other.accepted
        self.statuses += other.statuses
        self.errors += other.errors


@dataclass
class Load:
    name: str
    started: float  # perf_counter of the first send
    seconds: float  # from the first send until the last response
    stats: ClientStats
    server_cpu_s: float  # the server and its descendants (all their threads)
    server_main_cpu_s: float  # the server's main thread (its event loop)
    client_cpu_s: float
    syncs: int | None = None  # the server's fsync + fdatasync calls (perf), if counted
    syncs_why: str | None = None  # why they were not

    @property
    def requests(self) -> int:
        return len(self.stats.latencies_s)

    @property
    def accepted_per_s(self) -> float:
        return len(self.stats.accepted) / self.seconds if self.seconds else 0.0

    def latency(self) -> Stats | None:
        return summarize([s * 1000 for s in self.stats.latencies_s]) if self.requests else None

    def problems(self) -> list[str]:
        found = [f"HTTP {status}: {n}" for status, n in sorted(self.stats.statuses.items())]
        if self.stats.errors:
            found.append(f"{len(self.stats.errors)} failed requests")
        return found + (["no request completed"] if self.requests == 0 else [])


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"no Content-Length in {head[:200]!r}")
    end = head.find(b"\r\n", at + 17)
    return int(head[at + 17 : end])


@dataclass(frozen=True)
class Shape:
    """What each client sends: POST `path` with `{"n": i}`, signed per request with `signer`
    (None: unsigned, for `--auth off`)."""

    port: int
    path: str
    signer: FastSigner | None


#: the headers every event carries besides Host, the signature and Content-Length (names as
#: signed: lower-case)
EVENT_HEADERS = {"content-type": "application/json", "x-amz-invocation-type": "Event"}


def event_signer(port: int, path: str) -> FastSigner:
    """The signer of the events `Shape` sends to 127.0.0.1:`port`, checked against botocore."""
    signer = FastSigner("POST", path, f"{HOST}:{port}", EVENT_HEADERS)
    signer.self_check(b'{"n": 0}')
    return signer


def signing_cost_us(signer: FastSigner, count: int = 20000) -> float:
    """µs of CPU one signature costs this client (part of its CPU per request)."""
    started = time.process_time()
    for n in range(count):
        signer.headers(b'{"n": %d}' % n)
    return (time.process_time() - started) * 1e6 / count


async def _client(shape: Shape, index: int, step: int, deadline: float, stats: ClientStats) -> None:
    """Send events one at a time on one keep-alive connection until ``deadline``."""
    prefix = (
        f"POST {shape.path} HTTP/1.1\r\nHost: {HOST}:{shape.port}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in EVENT_HEADERS.items())
    ).encode()
    signer = shape.signer
    perf = time.perf_counter
    n = index
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while perf() < deadline:
            if connection is None:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(HOST, shape.port), CONNECT_TIMEOUT_S
                )
            reader, writer = connection
            body = b'{"n": %d}' % n
            started = perf()
            # Signed when sent, as an SDK signs: the time to sign is part of the latency.
            signature = b""
            if signer is not None:
                signed = signer.headers(body)
                signature = b"x-amz-date: %s\r\nauthorization: %s\r\n" % (
                    signed["X-Amz-Date"].encode(),
                    signed["Authorization"].encode(),
                )
            request = prefix + signature + b"content-length: %d\r\n\r\n" % len(body) + body
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = _content_length(head)
                reply = await reader.readexactly(length) if length else b""
            except (OSError, EOFError, asyncio.LimitOverrunError, ValueError) as exc:
                # EOFError covers IncompleteReadError. The next request reconnects.
                stats.errors.append(f"n={n}: {exc!r}")
                writer.close()
                connection = None
                n += step
                continue
            stats.latencies_s.append(perf() - started)
            if status == 202:
                stats.accepted.append(n)
            else:
                stats.statuses[status] += 1
                if len(stats.errors) < MAX_PROBLEMS_SHOWN:
                    stats.errors.append(f"n={n}: HTTP {status} {reply[:200]!r}")
            n += step
    finally:
        if connection is not None:
            connection[1].close()


async def _load(shape: Shape, clients: int, seconds: float) -> tuple[float, float, ClientStats]:
    started = time.perf_counter()
    deadline = started + seconds
    per_client = [ClientStats() for _ in range(clients)]
    tasks = [
        asyncio.create_task(_client(shape, i, clients, deadline, per_client[i]))
        for i in range(clients)
    ]
    done, pending = await asyncio.wait(tasks, timeout=seconds + LOAD_GRACE_S)
    finished = time.perf_counter()
    merged = ClientStats()
    for stats in per_client:
        merged.merge(stats)
    for task in pending:
        task.cancel()
        merged.errors.append(f"a client was still waiting {LOAD_GRACE_S:.0f} s after the end")
    for task in done:
        if task.exception() is not None:
            merged.errors.append(f"a client failed: {task.exception()!r}")
    await asyncio.gather(*pending, return_exceptions=True)
    return started, finished, merged


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


class SyncCounter:
    """The fsync and fdatasync calls of processes (all their threads) from now until `stop`,
    counted in the kernel by ``perf stat`` on the syscall tracepoints. In WAL mode with
    synchronous=FULL, SQLite syncs the WAL once per commit (a checkpoint adds a couple), so
    this counts the event store's commits."""

    def __init__(self, pids: list[int]) -> None:
        self.why: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        perf = shutil.which("perf")
        if perf is None:
            self.why = "perf not found (apt-get install -y linux-perf)"
            return
        argv = [
            perf,
            "stat",
            "-x",
            ",",
            "-e",
            ",".join(SYNC_EVENTS),
            "-p",
            ",".join(map(str, pids)),
        ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(PERF_ATTACH_S)
        if self._proc.poll() is not None:
            self.why = f"perf stat failed: {self._output()[-300:].strip()}"
            self._proc = None

    def _output(self) -> str:
        assert self._proc is not None
        try:
            return self._proc.communicate(timeout=10)[1] or ""
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.communicate()[1] or ""

    def stop(self) -> int | None:
        """The calls counted, or None (and `why`) if they could not be."""
        if self._proc is None:
            return None
        self._proc.send_signal(signal.SIGINT)
        output = self._output()
        self._proc = None
        total, seen = 0, 0
        for line in output.splitlines():
            parts = line.split(",")
            if len(parts) < 3 or parts[2] not in SYNC_EVENTS:
                continue
            seen += 1
            if parts[0].isdigit():
                total += int(parts[0])
            elif parts[0] != "<not counted>":  # not counted: no thread ran while attached
                self.why = f"perf stat: {line.strip()}"
                return None
        if seen != len(SYNC_EVENTS):
            self.why = f"perf stat: unexpected output {output[-300:].strip()!r}"
            return None
        return total


def run_load(
    name: str, server: Server, shape: Shape, clients: int, seconds: float, count_syncs: bool = False
) -> Load:
    log(f"{name}: {clients} clients for {seconds:g} s")
    root = server.proc.pid
    counter = SyncCounter(sorted(pid for pid, _ in process_tree(root))) if count_syncs else None
    try:
        tree, main, client_cpu = tree_cpu(root), main_thread_cpu(root), time.process_time()
        started, finished, stats = run_async(_load(shape, clients, seconds))
        tree_s = cpu_seconds_between(tree, tree_cpu(root))
        main_s = main_thread_cpu(root) - main
        client_cpu = time.process_time() - client_cpu
    finally:
        syncs = counter.stop() if counter is not None else None
    return Load(
        name,
        started,
        finished - started,
        stats,
        tree_s,
        main_s,
        client_cpu,
        syncs,
        counter.why if counter is not None else "not counted",
    )
