"""Crash safety of group commit: the server is killed with SIGKILL in the middle of a flood of
concurrent Event invokes, while batches of them are being written, and every event answered
with 202 still runs after the restart (none ran before it: the function was held at reserved
concurrency 0), while nothing runs that was never sent.

An event whose request was in flight at the kill may have been stored or not (its caller
heard nothing, as when a connection to Lambda breaks): it may run, but need not.

The function appends the `n` of each event to a file on the host (see `_async_crash.py`).
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time
from pathlib import Path

import httpx
from tests.conftest import SIGNED, Server
from tests.system._async_crash import (
    crash_server,
    create_recorder,
    queue_summary,
    recorded,
    wait_queue_empty,
)

CLIENTS = 16
#: 202s to wait for before the kill (at a few thousand a second: well inside the flood)
ACCEPTED_BEFORE_KILL = 1500

RECORDING = """
import json, os
def handler(event, context):
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(event["n"]) + "\\n").encode())
    finally:
        os.close(fd)
"""


class _Flood:
    """`CLIENTS` threads sending Event invokes with distinct `n`, each on a keep-alive
    connection, until the server stops answering."""

    def __init__(self, server: Server, name: str) -> None:
        self.url = f"{server.endpoint}/2015-03-31/functions/{name}/invocations"
        self.accepted: set[int] = set()
        self.sent: set[int] = set()
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def client(self, worker: int) -> None:
        with httpx.Client(timeout=30, auth=SIGNED) as http:
            n = worker
            while True:
                with self._lock:
                    self.sent.add(n)
                try:
                    resp = http.post(
                        self.url,
                        content=json.dumps({"n": n}),
                        headers={"X-Amz-Invocation-Type": "Event"},
                    )
                except httpx.TransportError:
                    return  # the server is gone
                with self._lock:
                    if resp.status_code == 202:
                        self.accepted.add(n)
                    else:
                        self.refused.append(f"{resp.status_code} {resp.text[:200]}")
                        return
                n += CLIENTS

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)


def test_every_202_survives_a_kill_9_in_the_middle_of_concurrent_accepts(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    with crash_server(tmp_path / "data") as server:
        lam = server.client()
        name = "accept-crash"
        create_recorder(lam, name, RECORDING, record)
        # Nothing runs before the kill: every event found afterwards ran from the store.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)

        flood = _Flood(server, name)
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            clients = [pool.submit(flood.client, i) for i in range(CLIENTS)]
            deadline = time.monotonic() + 60
            while flood.count() < ACCEPTED_BEFORE_KILL and time.monotonic() < deadline:
                assert not any(c.done() for c in clients), flood.refused
                time.sleep(0.005)
            server.stop(signal.SIGKILL)
            for c in clients:
                c.result(timeout=60)
        assert not flood.refused, flood.refused
        assert len(flood.accepted) >= ACCEPTED_BEFORE_KILL
        assert not record.exists(), "an event ran while the function's concurrency was 0"

        server.start()
        lam = server.client()
        lam.delete_function_concurrency(FunctionName=name)
        wait_queue_empty(server, name)
        assert name not in queue_summary(server)["functions"]
        ran = recorded(record, int)
        missing = flood.accepted - set(ran)
        assert not missing, f"{len(missing)} of {len(flood.accepted)} accepted events never ran"
        assert set(ran) <= flood.sent, "an event ran that was never sent"
        summary = queue_summary(server)
        assert summary["failed"] == summary["expired"] == summary["dropped"] == 0, summary
