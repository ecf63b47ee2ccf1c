"""Benchmark cold Lambda invokes per sandbox backend, beside a fork floor measured in the same run.

Run: ``.venv/bin/python bench/coldstart.py [--backends process,namespace] [--functions 40]``
(or ``make bench-coldstart ARGS="..."``).

What it measures
----------------
For each backend in ``--backends`` this starts its own ``lamina serve --sandbox BACKEND`` on
127.0.0.1 with a fresh data dir, one after the other (never two servers at once), and:

* cold: creates ``--functions`` distinct hello functions ``cold-<i>`` (python3.11,
  ``app.handler`` returning ``{"ok": True}``) with boto3 *before* timing, lets the server settle
  for ``--settle`` seconds, then invokes each never-invoked function once with a raw HTTP POST
  over one keep-alive connection (no boto3 on the timed path), timing request to full response.
  After each cold invoke it pauses ``--pace`` ms: the namespace backend keeps a small pool of
  pre-isolated environments and refills it in the background, and the pause lets that refill
  happen off the measured path (a burst of cold starts faster than the refill would measure
  the refill, not the pool).
* warm: ``--warm-requests`` sequential invokes of one already-warm function, same connection.
  The namespace/process warm p50 ratio is the isolation's warm overhead. That function has
  1,769 MB (one vCPU): the namespace backend caps CPU in proportion to memory as Lambda does,
  and at the default 128 MB (7% of a CPU) a tight loop of invokes is throttled by the cap, not
  slowed by the isolation; the process backend caps nothing.
* idle USS: after the warm pass, the unshared memory (Private_Clean + Private_Dirty from
  ``/proc/PID/smaps_rollup``) of each idle environment, summed over the environment's process
  and all its descendants. Pids come from ``GET /lamina/environments``; when a server has no
  such endpoint (404) the process backend falls back to the server's direct children (each is
  one environment, all idle after the sequential warm pass). The output says which was used.

Floors, measured in the same run before any server starts:

* fork: ``os.fork()`` from a warm Python process, the child computes the hello result and
  writes it to a pipe, the parent reads to EOF and reaps it. No cold start that creates a
  process can be cheaper, so ``cold p50 / fork p50`` is how far a backend is from that bound.
  The floor forks from a lean ``/usr/bin/python3.11 -I`` that has loaded only os/json/time, as
  a zygote would; the same loop is also run in this bench process, which has boto3 loaded, to
  show how fork cost grows with the parent's memory (keep the zygote lean).
* exec: ``/usr/bin/python3.11 -c 'print(1)'`` run to completion (the real interpreter, never a
  pyenv shim): what any start that execs a fresh interpreter pays before user code runs.

Machines here are noisy: compare numbers within one run. Percentiles are nearest-rank, so with
40 cold samples p99 is the slowest one.

Backends that can't run are skipped with a printed line, not an error: ``namespace`` when not
root, and any backend this ``lamina serve`` does not offer yet.

Exit status: 0 when every server started and every invoke answered 200 with the expected body
(whether or not the targets were met), 1 when a server failed to start or an invoke failed
(flagged INVALID), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from invoke import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    handler_zip,
    http_ok,
    log,
    log_tail,
    process_tree,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)

# Server start/stop and /proc helpers shared with the warm benchmark; bench/ is on sys.path
# because this file is run as a script from it.
from invoke import lambda_client as invoke_client

#: the warm pass's function: one vCPU's worth of memory, so the CPU cap does not bind
WARM_MEMORY_MB = 1769

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

BACKENDS = ("process", "namespace")
PYTHON311 = "/usr/bin/python3.11"
HELLO_HANDLER = 'def handler(event, context):\n    return {"ok": True}\n'
HELLO_RESULT = {"ok": True}  # also FORK_FLOOR_SCRIPT's RESULT
INVOKE_HEADERS = {"Content-Type": "application/json"}
FORK_RUNS = 200
EXEC_RUNS = 30
WARM_UP_INVOKES = 20
MAX_PROBLEMS_SHOWN = 5

TARGET_COLD_P50_MS = 5.0
STRETCH_COLD_P50_MS = 2.0
TARGET_WARM_OVERHEAD = 0.10
TARGET_USS_MIB = 10.0


class BackendUnavailable(Exception):
    """This backend can't run here (not root, or this lamina does not offer it): skip it."""


# --- numbers --------------------------------------------------------------------------------


@dataclass
class Stats:
    p50: float
    p99: float
    low: float
    high: float
    count: int


def summarize(values: Sequence[float]) -> Stats:
    ordered = sorted(values)
    rank99 = max(1, math.ceil(0.99 * len(ordered)))  # nearest rank
    return Stats(
        statistics.median(ordered), ordered[rank99 - 1], ordered[0], ordered[-1], len(ordered)
    )


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --- floors ---------------------------------------------------------------------------------


# The fork floor's code is one source run two ways: as the script of a lean warm interpreter
# (the floor: only os/json/time loaded, as a zygote's parent would be) and, for comparison,
# exec'd into this bench process. Fork cost grows with the parent's mapped memory, and this
# process carries boto3 (about 3x slower forks on these VMs), so it would overstate the floor.
FORK_FLOOR_SCRIPT = """\
import json, os, sys, time

RESULT = {"ok": True}


def fork_once():
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must never return into its parent's code, whatever happens
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(RESULT).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    took = (time.perf_counter() - started) * 1000
    if status != 0 or json.loads(data) != RESULT:
        raise RuntimeError(f"fork floor: child exited with {status} and wrote {data!r}")
    return took


def fork_runs(runs):
    for _ in range(10):  # warm the allocator and the pipe path
        fork_once()
    return [fork_once() for _ in range(runs)]


def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    times = fork_runs(int(sys.argv[1]))
    print(json.dumps({"ms": times, "rss_kib": rss_kib()}))
"""


def fork_floor_lean(python: str) -> tuple[Stats, float]:
    """(fork floor, parent RSS MiB) from a fresh ``python -I`` running FORK_FLOOR_SCRIPT."""
    argv = [python, "-I", "-c", FORK_FLOOR_SCRIPT, str(FORK_RUNS)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    try:
        out = json.loads(done.stdout)
        return summarize(out["ms"]), out["rss_kib"] / 1024
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(
            f"fork floor in {python} failed ({done.returncode}): {done.stderr}"
        ) from exc


def fork_floor_here() -> tuple[Stats, float]:
    """(fork timings, RSS MiB) of the same code run in this bench process."""
    namespace: dict[str, Any] = {"__name__": "fork_floor"}
    exec(FORK_FLOOR_SCRIPT, namespace)
    times = namespace["fork_runs"](FORK_RUNS)
    return summarize(times), namespace["rss_kib"]() / 1024


def exec_once() -> float:
    started = time.perf_counter()
    done = subprocess.run([PYTHON311, "-c", "print(1)"], capture_output=True, check=False)
    took = elapsed_ms(started)
    if done.returncode != 0 or done.stdout.strip() != b"1":
        raise BenchError(f"exec floor: {PYTHON311} exited {done.returncode}: {done.stderr!r}")
    return took


@dataclass
class Floors:
    python: str  # the lean interpreter the fork floor ran in
    fork: Stats  # the floor: forks from a lean warm interpreter
    fork_rss_mib: float
    here: Stats  # the same forks from this (boto3-laden) bench process, for comparison
    here_rss_mib: float
    exec: Stats | None  # None when there is no /usr/bin/python3.11


def measure_floors() -> Floors:
    python = PYTHON311 if os.access(PYTHON311, os.X_OK) else sys.executable
    log(f"floor: {FORK_RUNS} forks from a lean {python}, then from this process")
    fork, fork_rss = fork_floor_lean(python)
    here, here_rss = fork_floor_here()
    if python != PYTHON311:
        log(f"floor: {PYTHON311} not found, no exec floor")
        return Floors(python, fork, fork_rss, here, here_rss, None)
    log(f"floor: {EXEC_RUNS} runs of {PYTHON311} -c 'print(1)'")
    exec_once()  # the first run pays for the page cache
    execs = summarize([exec_once() for _ in range(EXEC_RUNS)])
    return Floors(python, fork, fork_rss, here, here_rss, execs)


# --- server and functions -------------------------------------------------------------------


def start_lamina(stack: contextlib.ExitStack, tmp: Path, backend: str) -> tuple[Server, str]:
    """A ready ``lamina serve --sandbox BACKEND``; raises BackendUnavailable if it has none."""
    data_dir = tmp / f"{backend}-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--sandbox", backend, "--host", HOST]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    # Raw HTTP does not sign; bench/auth.py measures authentication's cost.
    argv += ["--auth", "off"]
    server = start_server(f"lamina ({backend})", argv, tmp, tmp / f"{backend}.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    try:
        wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    except BenchError:
        # click's usage error (status 2) for a --sandbox choice this build does not have yet.
        text = log_tail(server.log_path)
        if server.proc.poll() == 2 and "Invalid value for '--sandbox'" in text:
            raise BackendUnavailable(f"this lamina serve has no --sandbox {backend}") from None
        raise
    return server, endpoint


def get_json(url: str) -> tuple[int, Any]:
    """(status, parsed body) of a GET; the body is None when it is not JSON."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, payload = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


def lambda_client(endpoint: str) -> LambdaClient:
    return invoke_client(endpoint, attempts=1)


def create_functions(endpoint: str, names: Sequence[str], memory_mb: int = 128) -> None:
    client, code = lambda_client(endpoint), handler_zip(HELLO_HANDLER)
    try:
        for name in names:
            client.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": code},
                MemorySize=memory_mb,
            )
        waiter = client.get_waiter("function_active_v2")
        for name in names:
            waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    except (BotoCoreError, ClientError, WaiterError) as exc:
        raise BenchError(f"creating the functions failed: {exc}") from exc


# --- invokes --------------------------------------------------------------------------------


def invoke_raw(conn: HTTPConnection, name: str) -> tuple[float, str | None]:
    """(milliseconds from request to full response, problem or None) of one Invoke."""
    path = f"/2015-03-31/functions/{name}/invocations"
    started = time.perf_counter()
    try:
        conn.request("POST", path, body=b"{}", headers=INVOKE_HEADERS)
        response = conn.getresponse()
        body = response.read()
    except (HTTPException, OSError) as exc:
        conn.close()  # the next request reconnects
        return elapsed_ms(started), f"{name}: {exc!r}"
    took = elapsed_ms(started)
    if response.status != 200:
        return took, f"{name}: HTTP {response.status} {body[:200]!r}"
    if response.getheader("X-Amz-Function-Error"):
        return took, f"{name}: function error {body[:200]!r}"
    with contextlib.suppress(ValueError):
        if json.loads(body) == HELLO_RESULT:
            return took, None
    return took, f"{name}: unexpected body {body[:200]!r}"


def timed_invokes(
    conn: HTTPConnection, names: Sequence[str], problems: list[str], pace_s: float = 0.0
) -> Stats:
    times: list[float] = []
    for name in names:
        took, problem = invoke_raw(conn, name)
        times.append(took)
        if problem is not None:
            problems.append(problem)
        if pace_s:
            time.sleep(pace_s)
    return summarize(times)


# --- idle memory ----------------------------------------------------------------------------


def uss_kib(pid: int) -> int:
    """Private_Clean + Private_Dirty of one process (0 if it is gone or unreadable)."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def tree_uss_mib(pid: int) -> float | None:
    """USS of ``pid`` and all its descendants, or None if ``pid`` is gone."""
    tree = process_tree(pid)
    return sum(uss_kib(p) for p, _ in tree) / 1024 if tree else None


def direct_children(pid: int) -> list[int]:
    return [p for p, _ in process_tree(pid) if p != pid and _ppid(p) == pid]


def _ppid(pid: int) -> int | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return None


@dataclass
class Memory:
    method: str
    mib: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.mib) if self.mib else None

    @property
    def max(self) -> float | None:
        return max(self.mib) if self.mib else None


def idle_memory(endpoint: str, server: Server, backend: str) -> Memory:
    status, body = get_json(f"{endpoint}/lamina/environments")
    if status == 200 and isinstance(body, dict):
        envs = body.get("Environments", [])
        idle = [e for e in envs if str(e.get("State", "")).lower() == "idle"]
        pids = [int(e["Pid"]) for e in idle if e.get("Pid") is not None]
        method = f"/lamina/environments: {len(envs)} environments, {len(pids)} idle with a pid"
    elif status == 404 and backend == "process":
        pids = direct_children(server.proc.pid)
        method = f"no /lamina/environments (404): the server's {len(pids)} child processes"
    else:
        return Memory(f"not measured: /lamina/environments answered {status}")
    sizes = [tree_uss_mib(pid) for pid in pids]
    return Memory(method, [s for s in sizes if s is not None])


# --- one backend ----------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    sandbox: str = "?"  # as the server's /health names it
    skipped: str | None = None
    cold: Stats | None = None
    warm: Stats | None = None
    memory: Memory | None = None
    problems: list[str] = field(default_factory=list)


def measure_backend(tmp: Path, backend: str, args: argparse.Namespace) -> Result:
    result = Result(backend)
    if backend == "namespace" and os.geteuid() != 0:
        raise BackendUnavailable("needs root (namespaces, cgroups)")
    with contextlib.ExitStack() as stack:
        server, endpoint = start_lamina(stack, tmp, backend)
        _, health = get_json(f"{endpoint}/health")
        result.sandbox = str(health.get("sandbox", "?")) if isinstance(health, dict) else "?"
        log(f"{backend}: /health says sandbox={result.sandbox}")
        if result.sandbox != backend:
            result.problems.append(f"asked for --sandbox {backend}, /health says {result.sandbox}")
        names = [f"cold-{i}" for i in range(args.functions)]
        log(f"{backend}: creating {len(names)} functions")
        create_functions(endpoint, names)
        warm_name = f"warm-{WARM_MEMORY_MB}"
        create_functions(endpoint, [warm_name], WARM_MEMORY_MB)
        time.sleep(args.settle)  # let any background pre-warming finish before timing
        conn = HTTPConnection(HOST, int(endpoint.rsplit(":", 1)[1]), timeout=60)
        stack.callback(conn.close)
        log(f"{backend}: {len(names)} cold invokes, {args.pace:g} ms pause after each")
        result.cold = timed_invokes(conn, names, result.problems, args.pace / 1000)
        timed_invokes(conn, [warm_name] * WARM_UP_INVOKES, result.problems)
        log(f"{backend}: {args.warm_requests} warm invokes of {warm_name}")
        result.warm = timed_invokes(conn, [warm_name] * args.warm_requests, result.problems)
        result.memory = idle_memory(endpoint, server, backend)
    return result


# --- report ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MiB"


def _row(cells: Sequence[str]) -> str:
    widths = (10, 10, 10, 10, 10, 10, 9, 10, 10, 9, 9, 5, 7)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 2}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def table(results: Sequence[Result], floors: Floors) -> list[str]:
    header = ["backend", "sandbox", "cold p50", "cold p99", "cold min", "cold max", "cold/fork"]
    header += ["warm p50", "warm p99", "USS med", "USS max", "envs", "valid"]
    lines = [_row(header)]
    for r in results:
        if r.skipped is not None:
            lines.append(f"{r.backend:<12}skipped: {r.skipped}")
            continue
        cells = [r.backend, r.sandbox]
        if r.cold is None:
            cells += ["-"] * 5
        else:
            c = r.cold
            ratio = f"{c.p50 / floors.fork.p50:.1f}x" if floors.fork.p50 else "-"
            cells += [_ms(c.p50), _ms(c.p99), _ms(c.low), _ms(c.high), ratio]
        cells += [_ms(r.warm.p50), _ms(r.warm.p99)] if r.warm else ["-", "-"]
        mem = r.memory
        cells += [_mib(mem.median), _mib(mem.max), str(len(mem.mib))] if mem else ["-"] * 3
        cells.append("INVALID" if r.problems else "yes")
        lines.append(_row(cells))
    return lines


def floor_lines(floors: Floors) -> list[str]:
    fork, here = floors.fork, floors.here
    lines = [
        "floors (this run):",
        f"  fork from a warm Python process to a result: p50 {_ms(fork.p50)}, "
        f"p99 {_ms(fork.p99)} ({fork.count} runs; {floors.python} -I, "
        f"RSS {floors.fork_rss_mib:.0f} MiB): the cold/fork column",
        f"  the same from this bench process (boto3 loaded, RSS {floors.here_rss_mib:.0f} MiB): "
        f"p50 {_ms(here.p50)}, p99 {_ms(here.p99)}: fork cost grows with the parent's memory",
    ]
    if floors.exec is None:
        return [*lines, f"  exec {PYTHON311}: not measured ({PYTHON311} not found)"]
    ex = floors.exec
    return [
        *lines,
        f"  exec {PYTHON311} -c 'print(1)' to exit: p50 {_ms(ex.p50)}, p99 {_ms(ex.p99)} "
        f"({ex.count} runs; {ex.p50 / fork.p50:.0f}x the fork floor: why exec-based starts lose)",
    ]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target_lines(by_name: dict[str, Result]) -> list[str]:
    ns, proc = by_name.get("namespace"), by_name.get("process")
    ns_cold = ns.cold if ns else None
    lines = ["targets (2-core dev machine):"]
    if ns_cold is None:
        lines.append(f"  namespace cold p50 <= {TARGET_COLD_P50_MS:g} ms: not measured")
    else:
        stretch = _verdict(ns_cold.p50 <= STRETCH_COLD_P50_MS)
        lines.append(
            f"  namespace cold p50 <= {TARGET_COLD_P50_MS:g} ms: {_ms(ns_cold.p50)} "
            f"{_verdict(ns_cold.p50 <= TARGET_COLD_P50_MS)} "
            f"(stretch <= {STRETCH_COLD_P50_MS:g} ms: {stretch})"
        )
    limit = f"{TARGET_WARM_OVERHEAD:.0%}"
    if ns and ns.warm and proc and proc.warm and proc.warm.p50:
        overhead = ns.warm.p50 / proc.warm.p50 - 1
        lines.append(
            f"  warm overhead (namespace vs process p50) <= {limit}: {overhead:+.1%} "
            f"{_verdict(overhead <= TARGET_WARM_OVERHEAD)}"
        )
    else:
        lines.append(f"  warm overhead (namespace vs process p50) <= {limit}: not measured")
    for r in by_name.values():
        worst = r.memory.max if r.memory else None
        verdict = "not measured" if worst is None else _verdict(worst <= TARGET_USS_MIB)
        lines.append(
            f"  {r.backend} idle environment USS <= {TARGET_USS_MIB:g} MiB (each, so the max): "
            f"{_mib(worst)} {verdict}"
        )
    return lines


def report(results: Sequence[Result], floors: Floors, args: argparse.Namespace) -> None:
    lines = [
        f"cold Invoke: {args.functions} never-invoked python3.11 hello functions, raw HTTP "
        f"keep-alive, loopback, {os.cpu_count()} CPUs",
        f"  paced: {args.pace:g} ms pause after each cold invoke so a backend's pre-warmed "
        "environment pool can refill off the measured path",
        f"warm Invoke: {args.warm_requests} sequential invokes of one warm function "
        f"({WARM_MEMORY_MB} MB: one vCPU, so the namespace backend's CPU cap does not bind)",
        "",
        *table(results, floors),
        "",
        *floor_lines(floors),
    ]
    measured = {r.backend: r for r in results if r.skipped is None}
    memories = [f"  {r.backend}: {r.memory.method}" for r in measured.values() if r.memory]
    if memories:
        lines += ["", "idle USS (Private_Clean + Private_Dirty, each environment's tree):"]
        lines += memories
    ns, proc = measured.get("namespace"), measured.get("process")
    if ns and ns.warm and proc and proc.warm and proc.warm.p50:
        lines += ["", f"namespace warm p50 / process warm p50 = {ns.warm.p50 / proc.warm.p50:.2f}x"]
    lines += ["", *target_lines(measured)]
    problems = [
        f"  INVALID {r.backend}: {p}" for r in results for p in r.problems[:MAX_PROBLEMS_SHOWN]
    ]
    problems += [
        f"  INVALID {r.backend}: ... and {len(r.problems) - MAX_PROBLEMS_SHOWN} more"
        for r in results
        if len(r.problems) > MAX_PROBLEMS_SHOWN
    ]
    if problems:
        lines += ["", "problems:", *problems]
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def _backends(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {','.join(BACKENDS)}, got {value!r}")
    return list(dict.fromkeys(names))


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", type=_backends, default=list(BACKENDS), help="comma list")
    parser.add_argument(
        "--functions", type=_bounded(int, 1, 1000), default=40, help="cold invokes per backend"
    )
    parser.add_argument(
        "--warm-requests", type=_bounded(int, 1, 100_000), default=2000, help="warm invokes"
    )
    parser.add_argument(
        "--pace", type=_bounded(float, 0, 10_000), default=50.0, help="ms after each cold invoke"
    )
    parser.add_argument(
        "--settle", type=_bounded(float, 0, 60), default=1.0, help="s after creating functions"
    )
    return parser.parse_args(argv)


def run(tmp: Path, args: argparse.Namespace, failures: list[str]) -> list[Result]:
    results: list[Result] = []
    for backend in args.backends:
        try:
            results.append(measure_backend(tmp, backend, args))
        except BackendUnavailable as exc:
            log(f"{backend}: skipped: {exc}")
            results.append(Result(backend, skipped=str(exc)))
        except BenchError as exc:
            log(f"{backend}: failed: {exc}")
            failures.append(f"lamina --sandbox {backend}: {exc}")
            results.append(Result(backend, skipped="failed (see FAILED below)"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    failures: list[str] = []

    def work() -> tuple[Floors, list[Result]]:
        floors = measure_floors()
        tmp_dir = tempfile.TemporaryDirectory(
            prefix="lamina-coldstart-", ignore_cleanup_errors=True
        )
        with tmp_dir as tmp, unbroken_cleanup():
            return floors, run(Path(tmp), args, failures)

    floors, results = guarded(work)
    report(results, floors, args)
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
    return 1 if failures or any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
