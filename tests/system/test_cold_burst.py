"""Cold starts in a burst on the namespace backend: every one answered, each runtime at the
normal CPU priority although the pool isolates its children at a low one, and the pool grown
by the demand it saw (`lamina.sandbox._pool`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Functions, Server
from tests.system._harness import environment_pids, functions_on, result, running_server, wait_until

from lamina.sandbox.namespace import POOL_NICE

if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

PRIORITY = """
import os
def handler(event, context):
    return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "pid": os.getpid()}
"""

BURST = 24


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # A server of its own: the pool's size depends on the demand this module makes.
    with running_server("namespace") as server:
        yield server


@pytest.fixture(scope="module")
def functions(server: Server) -> Iterator[Functions]:
    with functions_on(server) as functions:
        yield functions


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (the server starts its zygotes from worker threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _zygotes(server: Server) -> list[int]:
    assert server.proc is not None
    found = []
    for pid in _children(server.proc.pid):
        try:
            if b"zygote.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _pooled(server: Server, names: list[str]) -> list[int]:
    """Children of the zygotes that belong to no environment: isolated, waiting in the pool."""
    claimed = {pid for name in names for pid in environment_pids(server, name)}
    return [p for z in _zygotes(server) for p in _children(z) if p not in claimed]


def test_a_burst_of_cold_starts_is_answered_at_the_normal_priority(
    server: Server, functions: Functions
) -> None:
    lam: Any = server.client()
    names = [str(functions.create(PRIORITY)["FunctionName"]) for _ in range(BURST)]
    with ThreadPoolExecutor(8) as workers:
        outs = list(workers.map(lambda name: result(lam, name), names))
    # Made for the pool at a low priority (most of them), claimed at the normal one.
    assert [out["nice"] for out in outs] == [0] * BURST, outs
    assert all(out["pid"] == 2 for out in outs), outs  # the init is PID 1
    for name in names:
        [init] = environment_pids(server, name)
        assert _nice(init) == 0

    # The burst is the pool's demand now: it grows past its resting size (2), made at the
    # low priority, ready for the next one.
    assert wait_until(lambda: len(_pooled(server, names)) > 2, timeout=20), _pooled(server, names)
    pooled = {p: _nice(p) for p in _pooled(server, names)}
    # (one made at full priority for a claim that another child served first is kept too)
    assert POOL_NICE in pooled.values(), pooled
    assert set(pooled.values()) <= {0, POOL_NICE}, pooled
