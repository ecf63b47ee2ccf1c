"""The floors `coldstart.py` measures cold starts beside, in the same run: fork and exec.

* fork: ``os.fork()`` from a warm Python process, the child computes the hello result and
  writes it to a pipe, the parent reads to EOF and reaps it. No cold start that creates a
  process can be cheaper, so ``cold p50 / fork p50`` is how far Lamina is from that bound.
  The floor forks from a lean ``/usr/bin/python3.11 -I`` that has loaded only os/json/time, as
  a zygote would; the same loop is also run in the bench process, which has boto3 loaded, to
  show how fork cost grows with the parent's memory (keep the zygote lean).
* exec: ``/usr/bin/python3.11 -c 'print(1)'`` run to completion (the real interpreter, never a
  pyenv shim): what any start that execs a fresh interpreter pays before user code runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from cold_load import Stats, elapsed_ms, summarize
from harness import BenchError, log

PYTHON311 = "/usr/bin/python3.11"
FORK_RUNS = 200
EXEC_RUNS = 30


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


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def floor_lines(floors: Floors) -> list[str]:
    fork, here = floors.fork, floors.here
    lines = [
        "floors (this run):",
        f"  fork from a warm Python process to a result: p50 {_ms(fork.p50)}, "
        f"p99 {_ms(fork.p99)} ({fork.count} runs; {floors.python} -I, "
        f"RSS {floors.fork_rss_mib:.0f} MiB): the x-fork columns",
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
