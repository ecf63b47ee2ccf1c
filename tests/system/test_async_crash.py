"""Crash safety of asynchronous invocation: every event answered with 202 runs at least once,
even when the server is killed with SIGKILL while events are queued and running.

The function appends its request id to a file on the host (see `_async_crash.py`).
"""

from __future__ import annotations

import concurrent.futures
import signal
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
    with crash_server(tmp_path / "data") as server:
        lam = server.client()
        name = "crash-recorder"
        create_recorder(lam, name, RECORDING, record)
        # At most 4 at a time (each takes 20 ms): 1,000 events take seconds to run, so the
        # kill finds some queued, some running and some done.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=4)
        accepted = _send_all(server, name)
        assert len(set(accepted)) == EVENTS

        deadline = time.monotonic() + 60
        while sum(recorded(record, str).values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        state = queue_summary(server)["functions"][name]
        assert state["depth"] > 0 and state["running"] > 0, state
        server.stop(signal.SIGKILL)
        before = recorded(record, str)
        assert 0 < len(before) < EVENTS

        server.start()
        wait_queue_empty(server, name)
        after = recorded(record, str)
        missing = set(accepted) - set(after)
        assert not missing, f"{len(missing)} accepted event(s) never ran"
        assert name not in queue_summary(server)["functions"]
        assert set(after) <= set(accepted)
