"""Crash safety of asynchronous invocation: every event answered with 202 runs at least once,
even when the server is killed with SIGKILL while events are queued and running.

The function appends its request id to a file on the host, so this runs on the `process`
backend (a namespace sandbox cannot write host files, by design); the queue under test is
the same on every backend.
"""

from __future__ import annotations

import collections
import concurrent.futures
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import ROLE, SIGNED, SIGNED_HTTP, Server, make_zip

EVENTS = 1000
CLIENTS = 16

RECORDING = """
import os, time
def handler(event, context):
    time.sleep(0.02)
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (context.aws_request_id + "\\n").encode())
    finally:
        os.close(fd)
    return "ok"
"""


def _recorded(path: Path) -> collections.Counter[str]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line for line in path.read_text().splitlines() if line)


def _queue(server: Server) -> dict[str, Any]:
    data: dict[str, Any] = SIGNED_HTTP.get(server.endpoint + "/lamina/async", timeout=10).json()
    return data


def _send_all(server: Server, name: str) -> list[str]:
    url = f"{server.endpoint}/2015-03-31/functions/{name}/invocations"

    def send(worker: int) -> list[str]:
        ids = []
        with httpx.Client(timeout=30, auth=SIGNED) as client:
            for i in range(worker, EVENTS, CLIENTS):
                resp = client.post(
                    url, content=b'{"n": %d}' % i, headers={"X-Amz-Invocation-Type": "Event"}
                )
                assert resp.status_code == 202, resp.text
                ids.append(resp.headers["x-amzn-RequestId"])
        return ids

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return [rid for ids in pool.map(send, range(CLIENTS)) for rid in ids]


def test_every_accepted_event_runs_after_a_kill_9(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    server = Server(
        data_dir=tmp_path / "data",
        extra_args=("--sandbox", "process", "--retry-base-delay", "0.1"),
    ).start()
    try:
        lam = server.client()
        name = "crash-recorder"
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": RECORDING})},
            Environment={"Variables": {"RECORD": str(record)}},
        )
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        # At most 4 at a time (each takes 20 ms): 1,000 events take seconds to run, so the
        # kill finds some queued, some running and some done.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=4)
        accepted = _send_all(server, name)
        assert len(set(accepted)) == EVENTS

        deadline = time.monotonic() + 60
        while sum(_recorded(record).values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        state = _queue(server)["functions"][name]
        assert state["depth"] > 0 and state["running"] > 0, state
        server.stop(signal.SIGKILL)
        before = _recorded(record)
        assert 0 < len(before) < EVENTS

        server.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if name not in _queue(server)["functions"]:
                break
            time.sleep(0.2)
        after = _recorded(record)
        missing = set(accepted) - set(after)
        assert not missing, f"{len(missing)} accepted event(s) never ran"
        assert name not in _queue(server)["functions"]
        assert set(after) <= set(accepted)
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
