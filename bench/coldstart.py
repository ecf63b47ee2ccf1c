"""Benchmark cold Lambda invokes at Lamina's defaults, beside a fork floor measured in the same run.

Run: ``.venv/bin/python bench/coldstart.py [--backends namespace] [--variant before=SRC]``
(or ``make bench-coldstart ARGS="..."``).

What it measures
----------------
Each server is ``lamina serve --admin-key test:test --sandbox BACKEND`` (authentication on, as
users run it; ``--auth off`` for comparison only) on 127.0.0.1 with a fresh data dir, one at a
time. Every Invoke is raw HTTP, SigV4-signed per request (`cold_load.py`), timed from request
to full response. The functions (python3.11, ``app.handler`` returning ``{"ok": True}``,
128 MB) are all created with boto3 *before* any timing; the server then settles for
``--settle`` s (its pool of pre-isolated environments fills), and between the modes too:

* paced: ``--paced`` (40) never-invoked functions, one after the other on one keep-alive
  connection, ``--pace`` (50) ms apart: cold starts that are not a burst, each finding the
  backend's pool refilled.
* burst: ``--burst`` (40) other never-invoked functions back to back on one connection (the
  next request as soon as the last answer is read): the pool drains and the refill races the
  requests.
* c16: ``--c16-functions`` (200) other never-invoked functions from ``--connections`` (16)
  connections at once, each taking the next function when answered. Printed: p50/p99 and the
  cold-start rate, environments ready per second (each answer is one new environment's first
  invocation) over the wall time from the first request to the last answer. Every one must be
  answered 200 (errors make the run INVALID). 200 x 128 MB is more than the default memory
  capacity of a small machine: idle environments are then evicted (LRU), as users would see.
* warm: ``--warm-requests`` sequential invokes of one warm function (1,769 MB, one vCPU, so the
  CPU cap does not bind), then each idle environment's unshared memory (USS, from
  ``/lamina/environments`` and /proc).

The cold-start phases the server measured itself (``lamina_cold_start_phase_seconds`` from
``/metrics``: sandbox, start, init) are printed per mode as mean ms: where the time went.

Floors (`cold_floors.py`), measured once before any server starts: fork from a lean warm
Python to a result (the x-fork columns divide by its p50), the same fork from this bench
process, and exec of a fresh interpreter.

``--variant NAME=SRC`` (repeatable) runs the ``lamina`` package of another source tree (say a
``git worktree`` of the base) beside this checkout's; ``--rounds`` N alternates the variants N
times so a busy machine weighs on each alike, and pools each variant's samples. Compare
variants within one run only.

Machines here are noisy. Percentiles are nearest-rank (with 40 samples p99 is the slowest).
Exit status: 0 when every server started and every invoke answered 200 with the expected body
(targets met or not), 1 when a server failed or an invoke failed (INVALID), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cold_floors import Floors, floor_lines, measure_floors
from cold_load import (
    HELLO_HANDLER,
    Concurrent,
    Invoker,
    concurrent,
    sequential,
)

# Stats/summarize/elapsed_ms are imported from here by the other benchmarks.
from cold_load import Stats as Stats
from cold_load import elapsed_ms as elapsed_ms
from cold_load import summarize as summarize
from harness import (
    HOST,
    BenchError,
    Server,
    cpu_seconds_between,
    free_port,
    guarded,
    http_ok,
    log,
    log_tail,
    process_tree,
    start_server,
    stop_server,
    tree_cpu,
    unbroken_cleanup,
    uss_kib,
    wait_ready,
)
from harness import create_functions as harness_create
from harness import lambda_client as harness_client
from signing import admin_key_args, signed_headers

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

BACKENDS = ("process", "namespace")
#: the warm pass's function: one vCPU's worth of memory, so the CPU cap does not bind
WARM_MEMORY_MB = 1769
WARM_UP_INVOKES = 20
MAX_PROBLEMS_SHOWN = 5
MODES = ("paced", "burst", "c16")
UNITS = ["p50", "ms", "MiB", ""]  # the last columns' units, under the header

# Issue 19's targets for the namespace backend at the defaults.
TARGET_BURST_P50_MS = 3.0
TARGET_BURST_P99_MS = 10.0
TARGET_PACED_P50_MS = 2.0
TARGET_WARM_OVERHEAD = 0.10
TARGET_USS_MIB = 10.0


class BackendUnavailable(Exception):
    """This backend can't run here (not root, or this lamina does not offer it): skip it."""


# --- server and functions -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    src: str  # "." for this checkout's lamina


def start_lamina(
    stack: contextlib.ExitStack,
    tmp: Path,
    backend: str,
    variant: Variant,
    auth: bool,
    extra: Sequence[str] = (),
) -> tuple[Server, str]:
    """A ready ``lamina serve --sandbox BACKEND [EXTRA...]`` on a fresh data dir; raises
    BackendUnavailable if it has no such backend."""
    label = f"{variant.name}-{backend}-{time.monotonic_ns()}"
    data_dir = tmp / f"{label}-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--sandbox", backend, "--host", HOST]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    argv += admin_key_args() if auth else ["--auth", "off"]
    argv += extra
    env = dict(os.environ)
    if variant.src != ".":
        env["PYTHONPATH"] = os.path.abspath(variant.src)
    name = f"lamina {variant.name} ({backend})"
    server = start_server(name, argv, tmp, tmp / f"{label}.log", env)
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


def get_json(url: str, signed: bool = False) -> tuple[int, Any]:
    """(status, parsed body) of a GET (SigV4-signed with the admin key if `signed`); the
    body is None when it is not JSON."""
    headers = signed_headers("GET", url, b"", {}) if signed else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


def lambda_client(endpoint: str) -> LambdaClient:
    return harness_client(endpoint, attempts=1)


def create_functions(endpoint: str, names: Sequence[str], memory_mb: int = 128) -> None:
    harness_create(endpoint, names, lambda _: HELLO_HANDLER, memory_mb=memory_mb)


def check_auth(invoker: Invoker, name: str, problems: list[str]) -> str:
    """Before timing: the fast signer agrees with botocore, an unsigned Invoke is refused
    (403) and a signed one answered 200. Returns what was seen."""
    invoker.self_check(name)
    unsigned = Invoker(invoker.host, invoker.port, signed=False)
    conn = invoker.connect()
    try:
        _, _, status_unsigned = unsigned.invoke(conn, name)
        _, problem, status_signed = invoker.invoke(conn, name)
    finally:
        conn.close()
    if status_unsigned != 403:
        problems.append(f"an unsigned Invoke of {name} was answered {status_unsigned}, not 403")
    if problem is not None:
        problems.append(f"a signed Invoke failed: {problem}")
    return f"unsigned Invoke {status_unsigned}, signed {status_signed}"


@contextlib.contextmanager
def fresh(invoker: Invoker) -> Iterator[HTTPConnection]:
    """A keep-alive connection of its own for one pass, connected before the clock starts
    (a connection left idle while another pass runs may have been closed by the server)."""
    conn = invoker.connect()
    conn.connect()
    try:
        yield conn
    finally:
        conn.close()


# --- the server's own phase timings ---------------------------------------------------------


def _phase_pattern(runtime: str) -> re.Pattern[str]:
    return re.compile(
        r'^lamina_cold_start_phase_seconds_(sum|count)\{phase="([a-z]+)",runtime="'
        + re.escape(runtime)
        + r'"\}\s+([0-9.e+-]+)$',
        re.M,
    )


Phases = dict[str, tuple[float, float]]  # phase: (seconds summed, count)


def phases(endpoint: str, runtime: str = "python3.11") -> Phases:
    """The server's cold-start phase histograms of `runtime` (sum, count) from /metrics."""
    try:
        with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    found: dict[str, list[float]] = {}
    for kind, phase, value in _phase_pattern(runtime).findall(text):
        found.setdefault(phase, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
    return {phase: (pair[0], pair[1]) for phase, pair in found.items()}


def phase_means(before: Phases, after: Phases) -> dict[str, float]:
    """Mean ms per phase over the cold starts between two snapshots."""
    means = {}
    for phase, (total, count) in after.items():
        total0, count0 = before.get(phase, (0.0, 0.0))
        if count > count0:
            means[phase] = (total - total0) / (count - count0) * 1000
    return means


# --- idle memory ----------------------------------------------------------------------------


def tree_uss_mib(pid: int) -> float | None:
    """USS of ``pid`` and all its descendants, or None if ``pid`` is gone."""
    tree = process_tree(pid)
    return sum(uss_kib(p) for p, _ in tree) / 1024 if tree else None


def idle_uss(endpoint: str, names: set[str]) -> list[float]:
    """USS (MiB) of each idle environment of the functions `names`."""
    status, body = get_json(f"{endpoint}/lamina/environments", signed=True)
    if status != 200 or not isinstance(body, dict):
        return []
    envs = [e for e in body.get("Environments", []) if e.get("FunctionName") in names]
    pids = [int(e["Pid"]) for e in envs if e.get("State") == "idle" and e.get("Pid")]
    sizes = [tree_uss_mib(pid) for pid in pids]
    return [s for s in sizes if s is not None]


# --- one server -----------------------------------------------------------------------------


@dataclass
class Result:
    variant: str
    backend: str
    sandbox: str = "?"  # as the server's /health names it
    skipped: str | None = None
    auth: str = ""
    paced: list[float] = field(default_factory=list)
    burst: list[float] = field(default_factory=list)
    c16: list[Concurrent] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)
    phases: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def merge(self, other: Result) -> None:
        self.sandbox, self.auth = other.sandbox, other.auth
        self.paced += other.paced
        self.burst += other.burst
        self.c16 += other.c16
        self.warm += other.warm
        self.uss += other.uss
        for mode, means in other.phases.items():
            self.phases.setdefault(mode, []).extend(means)
        self.problems += other.problems


def measure_server(tmp: Path, backend: str, variant: Variant, args: argparse.Namespace) -> Result:
    result = Result(variant.name, backend)
    if backend == "namespace" and os.geteuid() != 0:
        raise BackendUnavailable("needs root (namespaces, cgroups)")
    with contextlib.ExitStack() as stack:
        server, endpoint = start_lamina(stack, tmp, backend, variant, args.auth == "on")
        _, health = get_json(f"{endpoint}/health")
        result.sandbox = str(health.get("sandbox", "?")) if isinstance(health, dict) else "?"
        if result.sandbox != backend:
            result.problems.append(f"asked for --sandbox {backend}, /health says {result.sandbox}")
        names = {
            "paced": [f"paced-{i}" for i in range(args.paced)],
            "burst": [f"burst-{i}" for i in range(args.burst)],
            "c16": [f"c16-{i}" for i in range(args.c16_functions)],
        }
        cold_names = [n for mode in args.modes for n in names[mode]]
        log(f"{variant.name} {backend}: creating {len(cold_names)} functions")
        warm_name = f"warm-{WARM_MEMORY_MB}"
        create_functions(endpoint, [warm_name], WARM_MEMORY_MB)
        create_functions(endpoint, cold_names)
        port = int(endpoint.rsplit(":", 1)[1])
        invoker = Invoker(HOST, port, signed=args.auth == "on")
        if invoker.signed:
            result.auth = check_auth(invoker, warm_name, result.problems)
        for mode in args.modes:
            time.sleep(args.settle)  # the pool refills, torn-down environments go
            before = phases(endpoint)
            cpu_before = tree_cpu(server.proc.pid)
            if mode == "c16":
                log(f"{mode}: {args.c16_functions} cold invokes on {args.connections} connections")
                load = concurrent(invoker, names[mode], args.connections)
                result.c16.append(load)
                result.problems += load.problems
            else:
                pace = args.pace / 1000 if mode == "paced" else 0.0
                log(f"{mode}: {len(names[mode])} cold invokes, {pace * 1000:g} ms apart")
                with fresh(invoker) as conn:
                    times = sequential(invoker, conn, names[mode], result.problems, pace)
                getattr(result, mode).extend(times)
            cpu_s = cpu_seconds_between(cpu_before, tree_cpu(server.proc.pid))
            means = phase_means(before, phases(endpoint))
            means["cpu"] = cpu_s * 1000 / len(names[mode])
            result.phases.setdefault(mode, []).append(means)
        log(f"warm: {args.warm_requests} invokes of {warm_name}")
        with fresh(invoker) as conn:
            sequential(invoker, conn, [warm_name] * WARM_UP_INVOKES, result.problems)
            result.warm = sequential(
                invoker, conn, [warm_name] * args.warm_requests, result.problems
            )
        result.uss = idle_uss(endpoint, {warm_name, *cold_names})
        if server.proc.poll() is not None:
            result.problems.append(f"the server exited ({server.proc.returncode})")
    return result


# --- report ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _x(value: float | None, floor: float) -> str:
    return "-" if value is None or not floor else f"{value / floor:.1f}x"


def _stats(values: Sequence[float]) -> Stats | None:
    return summarize(values) if values else None


def _p50(stats: Stats | None) -> float | None:
    return None if stats is None else stats.p50


def _p99(stats: Stats | None) -> float | None:
    return None if stats is None else stats.p99


def _row(cells: Sequence[str]) -> str:
    widths = (16, 9, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 7, 7)
    first = f"{cells[0]:<{widths[0]}}"
    rest = "".join(f"{cell:>{w + 1}}" for cell, w in zip(cells[1:], widths[1:], strict=True))
    return first + rest


def _c16(r: Result) -> tuple[Stats | None, float | None, int]:
    times = [t for load in r.c16 for t in load.times]
    rates = [load.rate for load in r.c16]
    errors = sum(len(load.problems) for load in r.c16)
    return _stats(times), (statistics.median(rates) if rates else None), errors


def table(results: Sequence[Result], floors: Floors) -> list[str]:
    fork = floors.fork.p50
    header = ["variant/backend", "sandbox", "paced", "p99", "xfork"]
    header += ["burst", "p99", "xfork", "c16", "p99", "env/s", "errors"]
    header += ["warm", "p99", "USS", "valid"]
    lines = [
        _row(header),
        _row(["", "", "p50 ms", "ms", "", "p50 ms", "ms", "", "p50 ms", "ms", "", "", *UNITS]),
    ]
    for r in results:
        label = f"{r.variant}/{r.backend}"
        if r.skipped is not None:
            lines.append(f"{label:<17}skipped: {r.skipped}")
            continue
        paced, burst, warm = _stats(r.paced), _stats(r.burst), _stats(r.warm)
        c16, rate, errors = _c16(r)
        cells = [label, r.sandbox]
        cells += [_ms(_p50(paced)), _ms(_p99(paced)), _x(_p50(paced), fork)]
        cells += [_ms(_p50(burst)), _ms(_p99(burst)), _x(_p50(burst), fork)]
        cells += [_ms(_p50(c16)), _ms(_p99(c16))]
        cells += ["-" if rate is None else f"{rate:.0f}", str(errors) if r.c16 else "-"]
        cells += [_ms(_p50(warm)), _ms(_p99(warm))]
        cells += [f"{statistics.median(r.uss):.1f}" if r.uss else "-"]
        cells.append("INVALID" if r.problems else "yes")
        lines.append(_row(cells))
    return lines


def phase_lines(results: Sequence[Result]) -> list[str]:
    lines = [
        "the server's own cold-start phases (mean ms; sandbox / start / init), and the CPU ms "
        "per cold start of the server's whole process tree (zygotes, pool and environments "
        "included; less noisy than latency on a shared machine):"
    ]
    for r in results:
        if r.skipped is not None:
            continue
        parts = []
        for mode, runs in r.phases.items():
            means = {
                p: statistics.median([run[p] for run in runs if p in run])
                for p in ("sandbox", "start", "init", "cpu")
                if any(p in run for run in runs)
            }
            shown = " / ".join(
                f"{means[p]:.2f}" if p in means else "-" for p in ("sandbox", "start", "init")
            )
            cpu = f"{means['cpu']:.1f}" if "cpu" in means else "-"
            parts.append(f"{mode} {shown}, cpu {cpu}")
        lines.append(f"  {r.variant}/{r.backend}: " + "; ".join(parts))
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target_lines(results: Sequence[Result], args: argparse.Namespace) -> list[str]:
    lines = ["targets (issue 19, namespace backend at the defaults; 2-core machine):"]
    for r in results:
        if r.skipped is not None or r.backend != "namespace":
            continue
        who = f"  {r.variant}:"
        burst, paced = _stats(r.burst), _stats(r.paced)
        if burst is not None:
            lines.append(
                f"{who} burst of {args.burst} p50 <= {TARGET_BURST_P50_MS:g} ms: "
                f"{burst.p50:.2f} ms {_verdict(burst.p50 <= TARGET_BURST_P50_MS)}"
            )
            lines.append(
                f"{who} burst of {args.burst} p99 <= {TARGET_BURST_P99_MS:g} ms: "
                f"{burst.p99:.2f} ms {_verdict(burst.p99 <= TARGET_BURST_P99_MS)}"
            )
        if paced is not None:
            lines.append(
                f"{who} paced ({args.pace:g} ms apart) p50 <= {TARGET_PACED_P50_MS:g} ms:"
                f" {paced.p50:.2f} ms {_verdict(paced.p50 <= TARGET_PACED_P50_MS)}"
            )
        if r.c16:
            _, rate, errors = _c16(r)
            count = sum(len(load.times) for load in r.c16)
            lines.append(
                f"{who} {count} cold starts at c{args.connections} with no error: "
                f"{errors} errors {_verdict(errors == 0)}; {rate:.0f} environments "
                "ready/s (reported)"
            )
        if r.uss:
            worst = max(r.uss)
            lines.append(
                f"{who} idle environment USS <= {TARGET_USS_MIB:g} MiB (max): "
                f"{worst:.1f} MiB {_verdict(worst <= TARGET_USS_MIB)}"
            )
    by_key = {(r.variant, r.backend): r for r in results if r.skipped is None}
    for (variant, backend), ns in by_key.items():
        proc = by_key.get((variant, "process"))
        if backend != "namespace" or proc is None or not ns.warm or not proc.warm:
            continue
        overhead = statistics.median(ns.warm) / statistics.median(proc.warm) - 1
        lines.append(
            f"  {variant}: warm overhead (namespace vs process p50) <= "
            f"{TARGET_WARM_OVERHEAD:.0%}: {overhead:+.1%} "
            f"{_verdict(overhead <= TARGET_WARM_OVERHEAD)}"
        )
    return lines


def report(results: Sequence[Result], floors: Floors, args: argparse.Namespace) -> None:
    auth = "SigV4-signed per request (auth on)" if args.auth == "on" else "unsigned (--auth off)"
    lines = [
        f"cold Invoke of never-invoked python3.11 hello functions (128 MB), raw HTTP, {auth}, "
        f"loopback, {os.cpu_count()} CPUs, {args.rounds} round(s) per variant, samples pooled",
        f"  paced: {args.paced} on one connection, {args.pace:g} ms apart; burst: {args.burst} "
        f"back to back; c16: {args.c16_functions} from {args.connections} connections",
        f"warm Invoke: {args.warm_requests} sequential invokes of one warm function "
        f"({WARM_MEMORY_MB} MB: one vCPU, so the namespace backend's CPU cap does not bind)",
        *(f"  {r.variant}/{r.backend} auth check: {r.auth}" for r in results if r.auth),
        "",
        *table(results, floors),
        "",
        *floor_lines(floors),
        "",
        *phase_lines(results),
        "",
        *target_lines(results, args),
    ]
    problems = [
        f"  INVALID {r.variant}/{r.backend}: {p}"
        for r in results
        for p in r.problems[:MAX_PROBLEMS_SHOWN]
    ]
    problems += [
        f"  INVALID {r.variant}/{r.backend}: ... and {len(r.problems) - MAX_PROBLEMS_SHOWN} more"
        for r in results
        if len(r.problems) > MAX_PROBLEMS_SHOWN
    ]
    if problems:
        lines += ["", "problems:", *problems]
    print("\n".join(lines), flush=True)


# --- main -----------------------------------------------------------------------------------


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {value!r}")
        return list(dict.fromkeys(names))

    return parse


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _variant(text: str) -> Variant:
    name, sep, src = text.partition("=")
    if not sep or not name or not src:
        raise argparse.ArgumentTypeError(f"expected NAME=SRC_DIR, got {text!r}")
    if src != "." and not Path(src, "lamina").is_dir():
        raise argparse.ArgumentTypeError(f"{src} has no lamina package")
    return Variant(name, src)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--backends", type=_choices(BACKENDS), default=["namespace"], help="comma list")
    add("--modes", type=_choices(MODES), default=list(MODES), help="comma list")
    add("--variant", type=_variant, action="append", default=[], help="NAME=SRC (repeatable)")
    add("--rounds", type=_bounded(int, 1, 20), default=1, help="alternations of the variants")
    add("--auth", choices=("on", "off"), default="on", help="off: for comparison only")
    add("--paced", type=_bounded(int, 1, 1000), default=40, help="paced cold invokes")
    add("--pace", type=_bounded(float, 0, 10_000), default=50.0, help="ms between paced ones")
    add("--burst", type=_bounded(int, 1, 1000), default=40, help="back-to-back cold invokes")
    add("--c16-functions", type=_bounded(int, 1, 5000), default=200, help="concurrent cold ones")
    add("--connections", type=_bounded(int, 1, 256), default=16, help="for the c16 mode")
    add("--warm-requests", type=_bounded(int, 1, 100_000), default=1000, help="warm invokes")
    add("--settle", type=_bounded(float, 0, 60), default=1.0, help="s before each mode")
    return parser.parse_args(argv)


def run(tmp: Path, args: argparse.Namespace, failures: list[str]) -> list[Result]:
    variants = [Variant("this", "."), *args.variant] if args.variant else [Variant("this", ".")]
    merged: dict[tuple[str, str], Result] = {}
    for round_no in range(args.rounds):
        for variant in variants:
            for backend in args.backends:
                key = (variant.name, backend)
                total = merged.setdefault(key, Result(variant.name, backend))
                if total.skipped is not None:
                    continue
                log(f"round {round_no + 1}: {variant.name} ({variant.src}), {backend}")
                try:
                    total.merge(measure_server(tmp, backend, variant, args))
                except BackendUnavailable as exc:
                    log(f"{backend}: skipped: {exc}")
                    total.skipped = str(exc)
                except BenchError as exc:
                    log(f"{variant.name} {backend}: failed: {exc}")
                    failures.append(f"lamina {variant.name} --sandbox {backend}: {exc}")
                    total.skipped = "failed (see FAILED below)"
    return list(merged.values())


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
