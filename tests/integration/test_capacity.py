"""The node's memory capacity: running environments' MemorySize, plus what idle ones really
hold, never adds up past it; idle environments of other functions are stopped (least recently
used first) to make room; with no room, an invoke waits its turn for a bounded time and then
gets a clear 429."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ROLE, SIGNED_HTTP, Server, make_zip

# 100 MB of ballast: idle, an environment is charged what it really holds, so these hold
# nearly their 128 MB and two fill a node of 256 MB.
SLEEPER = (
    "import time\n"
    "BALLAST = b'x' * (100 << 20)\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return context.function_name\n"
)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Server, Any]]:
    """A node with room for two 128 MB environments; invokes wait at most 3 s for room."""
    srv = Server(
        data_dir=tmp_path / "data",
        extra_args=("--memory-capacity", "256", "--queue-timeout", "3"),
    ).start()
    try:
        lam = srv.client()
        for name in ("a", "b", "c", "d"):
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": make_zip({"app.py": SLEEPER})},
                Timeout=10,
            )
        yield srv, lam
    finally:
        assert srv.stop() == 0


def running(srv: Server) -> list[str]:
    listed = SIGNED_HTTP.get(srv.endpoint + "/lamina/environments").json()["Environments"]
    return sorted(e["FunctionName"] for e in listed)


def test_idle_environments_of_other_functions_make_room_lru_first(
    small: tuple[Server, Any],
) -> None:
    srv, lam = small
    lam.invoke(FunctionName="a")
    lam.invoke(FunctionName="b")
    assert running(srv) == ["a", "b"]
    lam.invoke(FunctionName="a")  # now b is the least recently used
    lam.invoke(FunctionName="c")
    assert running(srv) == ["a", "c"]
    lam.invoke(FunctionName="d")
    assert running(srv) == ["c", "d"]


NOOP = "def handler(event, context):\n    return None\n"


def test_idle_environments_that_hold_little_stay_warm_past_their_memory_size(
    tmp_path: Path,
) -> None:
    """Six 128 MB functions on a node of 256 MB: idle, each holds a few MB, so all six stay
    warm (their MemorySize adds up to three times the node) and run again without a cold
    start."""
    srv = Server(data_dir=tmp_path / "data", extra_args=("--memory-capacity", "256")).start()
    try:
        lam = srv.client()
        names = [f"n{i}" for i in range(6)]
        for name in names:
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": make_zip({"app.py": NOOP})},
            )
        for name in names:
            lam.invoke(FunctionName=name)
        before = SIGNED_HTTP.get(srv.endpoint + "/lamina/environments").json()["Environments"]
        assert sorted(e["FunctionName"] for e in before) == names
        for name in names:
            tail = lam.invoke(FunctionName=name, LogType="Tail")["LogResult"]
            assert "Init Duration" not in base64.b64decode(tail).decode(), f"{name} started again"
        after = SIGNED_HTTP.get(srv.endpoint + "/lamina/environments").json()["Environments"]
        assert {e["Id"] for e in after} == {e["Id"] for e in before}
    finally:
        assert srv.stop() == 0


def test_with_no_room_an_invoke_waits_its_turn_then_runs(small: tuple[Server, Any]) -> None:
    srv, lam = small
    done: list[str] = []
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(running(srv)))
            time.sleep(0.02)

    def call(name: str, sleep: float) -> None:
        lam.invoke(FunctionName=name, Payload=f'{{"sleep": {sleep}}}')
        done.append(name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # a frees its memory after ~1 s, b after ~2.5 s: c (first in line) gets a's room; d
    # waits for the next room (c's, once c is idle, or b's).
    busy = [threading.Thread(target=call, args=(n, s)) for n, s in (("a", 1.0), ("b", 2.5))]
    for t in busy:
        t.start()
    time.sleep(0.4)  # a and b hold all the memory
    waiting = []
    for name in ("c", "d"):
        waiting.append(threading.Thread(target=call, args=(name, 0.2)))
        waiting[-1].start()
        time.sleep(0.1)
    for t in busy + waiting:
        t.join(30)
    stop.set()
    watcher.join()
    assert sorted(done) == ["a", "b", "c", "d"]
    assert done.index("a") < done.index("c") < done.index("d")  # first come, first served
    assert peak[0] <= 2, "more environments than the memory capacity holds"


def test_with_no_room_for_too_long_an_invoke_is_throttled(small: tuple[Server, Any]) -> None:
    _, lam = small
    holders = [
        threading.Thread(target=lam.invoke, kwargs={"FunctionName": n, "Payload": '{"sleep": 5}'})
        for n in ("a", "b")
    ]
    for t in holders:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
        lam.invoke(FunctionName="c")
    waited = time.monotonic() - started
    assert e.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert "no memory" in e.value.response["message"]
    assert 2.5 < waited < 4.5  # the queue timeout (3 s), not the holders' 5 s
    for t in holders:
        t.join(30)


def test_a_function_bigger_than_the_node_is_refused_at_once(small: tuple[Server, Any]) -> None:
    _, lam = small
    lam.update_function_configuration(FunctionName="a", MemorySize=512)
    lam.get_waiter("function_updated_v2").wait(FunctionName="a")
    with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
        lam.invoke(FunctionName="a")
    assert "memory capacity" in e.value.response["message"]
