"""What the `kill -9` tests of the asynchronous queue share (`test_async_crash.py`, events
queued and running at the kill; `test_async_accept_crash.py`, events being accepted at the
kill): a server whose function appends what it ran to a file on the host, and the queue's
summary (`/lamina/async`).

The function writes host files, so these servers run the `process` backend (a namespace
sandbox cannot write host files, by design); the queue under test is the same on every
backend. Failed events are retried after 0.1 s, so that a retry never outlasts a test.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import ROLE, SIGNED_HTTP, Server, make_zip

T = TypeVar("T")


@contextmanager
def crash_server(data_dir: Path) -> Iterator[Server]:
    """A started server (process backend, quick retries); stopped after unless a test
    killed it and did not start it again."""
    server = Server(
        data_dir=data_dir,
        extra_args=("--sandbox", "process", "--retry-base-delay", "0.1"),
    ).start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def create_recorder(lam: Any, name: str, code: str, record: Path) -> None:
    """The function `name` running `code` (which appends to the file named by its `RECORD`
    variable), once Active."""
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": code})},
        Environment={"Variables": {"RECORD": str(record)}},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)


def recorded(path: Path, parse: Callable[[str], T]) -> collections.Counter[T]:
    """How many times each value the function wrote (one per line, read with `parse`)."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(parse(line) for line in path.read_text().splitlines() if line)


def queue_summary(server: Server) -> dict[str, Any]:
    """The asynchronous queue's state: per function its depth and running events, and the
    counts of failed, expired and dropped events."""
    data: dict[str, Any] = SIGNED_HTTP.get(server.endpoint + "/lamina/async", timeout=10).json()
    return data


def wait_queue_empty(server: Server, name: str, timeout: float = 120.0) -> None:
    """Wait (at most `timeout`) until the queue holds nothing more for the function `name`;
    the test then says what it expects."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and name in queue_summary(server)["functions"]:
        time.sleep(0.2)
