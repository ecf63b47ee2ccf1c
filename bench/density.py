"""Benchmark density: many functions, each with one warm idle environment, on one server.

Run: ``.venv/bin/python bench/density.py [--functions 1000] [--variant NAME=SRC ...]``
(or ``make bench-density ARGS="..."``).

What it measures
----------------
Per variant (``--variant before=/path/to/old/src``: a ``lamina`` package from another source
directory; default: this checkout's), one after the other, never two servers at once:

1. ``lamina serve --admin-key test:test`` at its defaults (authentication on, the default
   sandbox: namespace as root), a fresh data dir. The server's USS right after start.
2. One no-op python3.11 function (MemorySize 128, the default) invoked ``--warm-requests``
   times in ``--rounds`` rounds: its warm p50 *alone*.
3. ``--functions`` - 1 more functions (each its own code), then every one invoked once, one
   after the other (cold starts, not timed as such: bench/coldstart.py measures those).
4. At rest (``--settle`` s later): USS (Private_Clean + Private_Dirty of
   ``/proc/PID/smaps_rollup``) of the server process, of its helpers (each zygote, and the
   pre-isolated sandboxes its pool keeps) apart, and of each idle environment's process tree
   (pids from ``GET /lamina/environments``): the environment's init and its runtime. Also the
   server's open descriptors and threads.
5. Second pass: every function invoked once more. Each must still be warm: no cold start (the
   ``lamina_cold_starts_total`` counter of ``/metrics`` must not move, and the environments
   listed must be the same ones as before the pass).
6. The first function's warm p50 again, now beside the crowd of idle environments.

Floors, measured in the same run: the USS of a forked child of a bare ``python3.11 -I``
(idle, nothing imported), the least a forked Python environment can hold, and of the bare
interpreter itself (what an exec'd runtime would hold).

Every request is SigV4-signed with the admin key (``signing.signed_headers``), signed before
its timer starts.

Targets (issue 19, item 4), judged per variant: idle environment USS <= 5 MiB (the mean over
all of them, with every function's environment alive; the median and max are printed), server
process USS <= 60 MiB at rest (judged twice: right after start, and beside the crowd, which
costs the server tens of KiB per environment), no cold start on the second pass (and the same
environments listed before and after it), and warm p50 with the crowd within 10% (or 0.05 ms)
of the p50 alone.

Exit status: 0 when the run was valid (whether or not the targets were met), 1 when a server
failed to start or an invoke failed (a status other than 200, a function error), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

from harness import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    http_ok,
    log,
    log_tail,
    process_tree,
    start_server,
    stop_server,
    unbroken_cleanup,
    uss_kib,
    wait_ready,
)
from harness import create_functions as create_all
from signing import admin_key_args, signed_headers

PYTHON311 = "/usr/bin/python3.11"
MEMORY_MB = 128
INVOKE_BODY = b"{}"
INVOKE_HEADERS = {"Content-Type": "application/json"}
#: threads creating functions (each with its own boto3 client)
CREATORS = 4

TARGET_ENV_USS_MIB = 5.0
TARGET_SERVER_USS_MIB = 60.0
#: warm p50 with the crowd may exceed the p50 alone by this much and count as unchanged
TARGET_P50_RATIO = 1.10
P50_SLACK_MS = 0.05

_COLD = re.compile(r"^lamina_cold_starts_total\{[^}]*\}\s+([0-9.eE+]+)$", re.M)


# --- /proc ----------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return None


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, all its threads (0 if it is gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def _count(path: str) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(path))
    return 0


# --- floors ---------------------------------------------------------------------------------

# A bare interpreter forks one child, which blocks on a pipe; both are measured, then killed.
FLOOR_SCRIPT = """\
import os, sys
print(os.getpid(), flush=True)
sys.stdin.readline()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)
    os._exit(0)
print(pid, flush=True)
sys.stdin.read()
"""


@dataclass
class Floors:
    forked_mib: float
    bare_mib: float


def measure_floors() -> Floors:
    python = PYTHON311 if os.access(PYTHON311, os.X_OK) else sys.executable
    proc = subprocess.Popen(
        [python, "-I", "-c", FLOOR_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.readline()
        time.sleep(0.2)
        bare = uss_kib(proc.pid) / 1024  # before the fork: nothing shared yet
        proc.stdin.write("fork\n")
        proc.stdin.flush()
        child = int(proc.stdout.readline())
        time.sleep(0.2)
        return Floors(uss_kib(child) / 1024, bare)
    finally:
        proc.kill()
        proc.wait()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, 9)


# --- the server -----------------------------------------------------------------------------


@dataclass
class Lamina:
    server: Server
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_lamina(
    stack: contextlib.ExitStack, tmp: Path, name: str, src: str, extra: Sequence[str]
) -> Lamina:
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args(), *extra]
    env = dict(os.environ)
    if src != ".":
        env["PYTHONPATH"] = os.path.abspath(src)
    server = start_server(f"lamina ({name})", argv, tmp, tmp / f"{name}.log", env)
    stack.callback(stop_server, server)
    lamina = Lamina(server, port)
    wait_ready(server, lambda: http_ok(f"{lamina.endpoint}/health", expect_json_ok=True))
    return lamina


class Connection(HTTPConnection):
    """A keep-alive connection that starts afresh after an idle second (the server closes
    connections idle for its keep-alive, 5 s, and a request sent then would be lost)."""

    last_used = 0.0


#: seconds a connection may idle before the next request opens a new one
IDLE_RECONNECT_S = 1.0


def request(
    conn: Connection, method: str, path: str, body: bytes = b"", sign: bool = True
) -> tuple[int, bytes, float]:
    """(status, body, ms from sending to the full answer); the signing happens before."""
    url = f"http://{HOST}:{conn.port}{path}"
    headers = signed_headers(method, url, body, INVOKE_HEADERS) if sign else INVOKE_HEADERS
    if time.monotonic() - conn.last_used > IDLE_RECONNECT_S:
        conn.close()
    started = time.perf_counter()
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    except (HTTPException, OSError) as exc:
        conn.close()
        raise BenchError(f"{method} {path}: {exc!r}") from exc
    took = (time.perf_counter() - started) * 1000
    conn.last_used = time.monotonic()
    if response.getheader("X-Amz-Function-Error"):
        return 599, payload, took
    return int(response.status), payload, took


def invoke(conn: Connection, name: str, problems: list[str]) -> float:
    path = f"/2015-03-31/functions/{name}/invocations"
    status, payload, took = request(conn, "POST", path, INVOKE_BODY)
    if status != 200 or payload != b"null":
        problems.append(f"{name}: HTTP {status} {payload[:200]!r}")
    return took


def environments(conn: Connection) -> list[dict[str, Any]]:
    status, payload, _ = request(conn, "GET", "/lamina/environments")
    if status != 200:
        raise BenchError(f"/lamina/environments answered {status}: {payload[:200]!r}")
    return list(json.loads(payload)["Environments"])


def cold_starts(conn: Connection) -> float:
    """The sum of `lamina_cold_starts_total` over its labels (unsigned: /metrics is open)."""
    status, payload, _ = request(conn, "GET", "/metrics", sign=False)
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    return sum(float(m[1]) for m in _COLD.finditer(payload.decode()))


def create_functions(endpoint: str, names: Sequence[str]) -> None:
    """Each function with code of its own (its name in a comment), as separate functions are."""
    create_all(
        endpoint,
        names,
        lambda name: f"# {name}\ndef handler(event, context):\n    return None\n",
        memory_mb=MEMORY_MB,
        creators=CREATORS,
        attempts=3,
    )


# --- numbers --------------------------------------------------------------------------------


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class Memory:
    server_mib: float = 0.0
    helpers: list[tuple[str, float]] = field(default_factory=list)
    #: per idle environment: (whole tree, its init, its runtime and the rest) MiB
    envs: list[tuple[float, float, float]] = field(default_factory=list)
    fds: int = 0
    threads: int = 0

    @property
    def env_total(self) -> float:
        return sum(e[0] for e in self.envs)

    @property
    def env_mean(self) -> float:
        return self.env_total / len(self.envs) if self.envs else math.nan


def measure_memory(server_pid: int, envs: Sequence[dict[str, Any]]) -> Memory:
    memory = Memory(
        server_mib=uss_kib(server_pid) / 1024,
        fds=_count(f"/proc/{server_pid}/fd"),
        threads=_count(f"/proc/{server_pid}/task"),
    )
    in_envs: set[int] = set()
    for env in envs:
        pid = env.get("Pid")
        if pid is None or str(env.get("State")).lower() != "idle":
            continue
        tree = [p for p, _ in process_tree(int(pid))]
        in_envs.update(tree)
        init = uss_kib(int(pid)) / 1024
        total = sum(uss_kib(p) for p in tree) / 1024
        memory.envs.append((total, init, total - init))
    pooled = 0.0
    pooled_count = 0
    for pid, _ in process_tree(server_pid):
        if pid == server_pid or pid in in_envs:
            continue
        parent = _ppid(pid)
        if parent == server_pid:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            label = " ".join(c.decode(errors="replace") for c in cmd[:2] if c)
            memory.helpers.append((f"helper {pid} ({label[-60:]})", uss_kib(pid) / 1024))
        else:
            pooled += uss_kib(pid) / 1024
            pooled_count += 1
    if pooled_count:
        memory.helpers.append((f"{pooled_count} other descendants (pooled sandboxes)", pooled))
    return memory


@dataclass
class Result:
    name: str
    fresh_mib: float = math.nan
    alone: list[float] = field(default_factory=list)
    crowd: list[float] = field(default_factory=list)
    first_pass_s: float = math.nan
    #: the server process's CPU at rest beside the crowd, in cores
    rest_cpu: float = math.nan
    memory: Memory | None = None
    fresh: Memory | None = None
    live_before: int = 0
    live_after: int = 0
    same_envs: int = 0
    cold_second: float = math.nan
    second_pass_p50: float = math.nan
    problems: list[str] = field(default_factory=list)


def warm_rounds(
    conn: Connection, name: str, rounds: int, requests: int, problems: list[str]
) -> list[float]:
    for _ in range(5):
        invoke(conn, name, problems)
    return [p50([invoke(conn, name, problems) for _ in range(requests)]) for _ in range(rounds)]


def measure(tmp: Path, name: str, src: str, args: argparse.Namespace) -> Result:
    try:
        return _measure(tmp, name, src, args)
    except BenchError as exc:
        tail = log_tail(tmp / f"{name}.log")
        raise BenchError(f"{exc}\nthe server's log ends:\n{tail}") from None


def _measure(tmp: Path, name: str, src: str, args: argparse.Namespace) -> Result:
    result = Result(name)
    names = [f"density-{i}" for i in range(args.functions)]
    with contextlib.ExitStack() as stack:
        lamina = start_lamina(stack, tmp, name, src, args.serve_arg)
        try:
            _phases(lamina, stack, name, names, result, args)
        except BenchError as exc:
            status = lamina.server.proc.poll()
            if status is not None:
                raise BenchError(f"{exc} (the server exited with status {status})") from None
            raise
    return result


def _phases(
    lamina: Lamina,
    stack: contextlib.ExitStack,
    name: str,
    names: list[str],
    result: Result,
    args: argparse.Namespace,
) -> None:
    conn = Connection(HOST, lamina.port, timeout=120)
    stack.callback(conn.close)
    pid = lamina.server.proc.pid
    time.sleep(args.settle)
    result.fresh = measure_memory(pid, [])
    log(f"{name}: one function alone, {args.rounds} x {args.warm_requests} warm invokes")
    create_functions(lamina.endpoint, names[:1])
    result.alone = warm_rounds(conn, names[0], args.rounds, args.warm_requests, result.problems)
    log(f"{name}: creating {len(names) - 1} more functions")
    create_functions(lamina.endpoint, names[1:])
    log(f"{name}: first pass, {len(names)} invokes")
    started = time.perf_counter()
    for function in names:
        invoke(conn, function, result.problems)
    result.first_pass_s = time.perf_counter() - started
    ticks = _cpu_ticks(pid)
    time.sleep(args.settle)
    result.rest_cpu = (_cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK") / args.settle
    before = environments(conn)
    result.live_before = len(before)
    log(f"{name}: at rest: measuring {len(before)} environments")
    result.memory = measure_memory(pid, before)
    cold_before = cold_starts(conn)
    log(f"{name}: second pass, {len(names)} invokes")
    second = [invoke(conn, function, result.problems) for function in names]
    result.second_pass_p50 = p50(second)
    result.cold_second = cold_starts(conn) - cold_before
    after = environments(conn)
    result.live_after = len(after)
    result.same_envs = len({e["Id"] for e in before} & {e["Id"] for e in after})
    log(f"{name}: {names[0]} beside the crowd")
    result.crowd = warm_rounds(conn, names[0], args.rounds, args.warm_requests, result.problems)


# --- report ---------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: Sequence[Result], floors: Floors, args: argparse.Namespace) -> None:
    lines = [
        f"density: {args.functions} python3.11 no-op functions, MemorySize {MEMORY_MB}, one warm "
        f"idle environment each; {os.cpu_count()} CPUs; USS = Private_Clean + Private_Dirty",
        f"floors (this run): forked child of a bare python3.11 -I {floors.forked_mib:.2f} MiB; "
        f"the bare interpreter itself {floors.bare_mib:.2f} MiB",
    ]
    for r in results:
        m, fresh = r.memory, r.fresh
        lines += ["", f"== {r.name} =="]
        if fresh is not None:
            lines.append(
                f"server at start: USS {fresh.server_mib:.1f} MiB, {fresh.fds} fds, "
                f"{fresh.threads} threads"
            )
        if m is None:
            lines.append("  not measured")
            continue
        n = len(m.envs)
        lines.append(
            f"first pass: {args.functions} invokes in {r.first_pass_s:.1f} s; "
            f"{r.live_before} environments live after it, {n} idle with a pid"
        )
        lines.append(
            f"server at rest with them: USS {m.server_mib:.1f} MiB, {m.fds} fds, "
            f"{m.threads} threads, CPU {r.rest_cpu:.1%} of a core over {args.settle:g} s"
        )
        if fresh is not None and n:
            per = (m.server_mib - fresh.server_mib) * 1024 / n
            fds = (m.fds - fresh.fds) / n
            lines.append(
                f"  server-side per environment (with its function's own state): {per:.1f} KiB "
                f"USS, {fds:.1f} fds"
            )
        for label, mib in m.helpers:
            lines.append(f"  {label}: USS {mib:.1f} MiB")
        if n:
            totals = sorted(e[0] for e in m.envs)
            inits = statistics.mean(e[1] for e in m.envs)
            runtimes = statistics.mean(e[2] for e in m.envs)
            lines.append(
                f"idle environments: USS mean {m.env_mean:.2f} MiB (init {inits:.2f} + runtime "
                f"{runtimes:.2f}), median {p50(totals):.2f}, max {totals[-1]:.2f}; "
                f"{m.env_mean / floors.forked_mib:.1f}x the forked floor"
            )
            everything = m.server_mib + sum(h[1] for h in m.helpers) + m.env_total
            lines.append(
                f"total USS: {everything:.0f} MiB (environments {m.env_total:.0f} MiB, server "
                f"{m.server_mib:.0f} MiB, helpers {sum(h[1] for h in m.helpers):.0f} MiB)"
            )
        lines.append(
            f"second pass: cold starts {r.cold_second:g}, environments kept "
            f"{r.same_envs}/{r.live_before} (live after: {r.live_after}), "
            f"invoke p50 {r.second_pass_p50:.3f} ms"
        )
        alone, crowd = p50(r.alone), p50(r.crowd)
        lines.append(
            f"warm p50 of {args.warm_requests} invokes, per round: alone "
            + " ".join(f"{v:.3f}" for v in r.alone)
            + " ms; with the crowd "
            + " ".join(f"{v:.3f}" for v in r.crowd)
            + f" ms; median {alone:.3f} -> {crowd:.3f} ms ({crowd / alone:.2f}x)"
        )
        lines.append("targets:")
        env_ok = n == args.functions and m.env_mean <= TARGET_ENV_USS_MIB
        lines.append(
            f"  idle environment USS <= {TARGET_ENV_USS_MIB:g} MiB (mean of {n}/{args.functions}):"
            f" {m.env_mean:.2f} MiB {_verdict(env_ok)}"
        )
        if fresh is not None:
            lines.append(
                f"  server USS at rest, no environment yet <= {TARGET_SERVER_USS_MIB:g} MiB: "
                f"{fresh.server_mib:.1f} MiB {_verdict(fresh.server_mib <= TARGET_SERVER_USS_MIB)}"
            )
        lines.append(
            f"  server USS at rest with the {n} idle environments <= {TARGET_SERVER_USS_MIB:g} "
            f"MiB: {m.server_mib:.1f} MiB {_verdict(m.server_mib <= TARGET_SERVER_USS_MIB)}"
        )
        warm_ok = r.cold_second == 0 and r.same_envs == args.functions
        lines.append(
            f"  every environment still warm on the second pass: {r.cold_second:g} cold starts,"
            f" {r.same_envs}/{args.functions} kept {_verdict(warm_ok)}"
        )
        p50_ok = crowd <= max(alone * TARGET_P50_RATIO, alone + P50_SLACK_MS)
        lines.append(
            f"  warm p50 unchanged by the crowd (<= {TARGET_P50_RATIO:g}x or "
            f"+{P50_SLACK_MS:g} ms): {alone:.3f} -> {crowd:.3f} ms {_verdict(p50_ok)}"
        )
        for problem in r.problems[:5]:
            lines.append(f"  INVALID: {problem}")
        if len(r.problems) > 5:
            lines.append(f"  INVALID: ... and {len(r.problems) - 5} more")
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--functions", type=int, default=1000, help="functions (>= 2)")
    parser.add_argument("--warm-requests", type=int, default=300, help="invokes per round")
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds, alone and crowded")
    parser.add_argument("--settle", type=float, default=3.0, help="s before measuring at rest")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=SRC",
        help="a lamina package from another source directory (repeatable)",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more `lamina serve` argument, for every variant (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.functions < 2:
        parser.error("--functions must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("this", ".")]

    def work() -> tuple[Floors, list[Result]]:
        floors = measure_floors()
        results = []
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-density-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            for name, src in variants:
                results.append(measure(Path(tmp), name, src, args))
        return floors, results

    floors, results = guarded(work)
    report(results, floors, args)
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
