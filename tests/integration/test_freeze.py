"""Environments are frozen between invocations, as Lambda freezes them: what a handler leaves
running (a thread, a child process) makes no progress while its environment is idle, and
picks up again at the next invocation. Runs on the namespace backend (cgroup freezer) and, with
LAMINA_TEST_SANDBOX=process, on the process backend (SIGSTOP of the process group)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import Functions
from tests.integration.test_provisioned import wait_status

#: a handler whose first call starts a counter in the background (a thread or a child
#: process, by the event), incremented every 5 ms in /tmp; every call returns its value, and
#: may sleep first so that the test sees it run while the environment is busy
COUNTER = """
import os, subprocess, sys, tempfile, threading, time

PATH = os.path.join(tempfile.gettempdir(), "counter")
started = False

def count():
    n = 0
    while True:
        n += 1
        with open(PATH + ".new", "w") as f:
            f.write(str(n))
        os.replace(PATH + ".new", PATH)
        time.sleep(0.005)

def read():
    for _ in range(100):
        try:
            with open(PATH) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.005)
    return -1

def handler(event, context):
    global started
    if not started:
        started = True
        if event.get("process"):
            code = "import app; app.count()"
            subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
        else:
            threading.Thread(target=count, daemon=True).start()
        read()
    time.sleep(event.get("sleep", 0))
    return read()
"""

IDLE_S = 1.0
#: 5 ms per step: ~200 steps in the idle second if the environment ran on; a frozen one may
#: take a few between answering and parking in /next (and after the thaw)
MOST_WHILE_IDLE = 40


def call(lam: Any, name: str, **event: Any) -> int:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    assert "FunctionError" not in resp, resp["Payload"].read()
    return int(json.loads(resp["Payload"].read()))


def check_frozen_while_idle(lam: Any, name: str, **start: Any) -> None:
    call(lam, name, **start)
    # Busy: the background work runs along with the handler.
    before = call(lam, name)
    during = call(lam, name, sleep=0.3)
    assert during - before >= 20, (before, during)
    # Idle for a second: frozen, so it barely moves.
    time.sleep(IDLE_S)
    after_idle = call(lam, name)
    assert after_idle - during < MOST_WHILE_IDLE, (during, after_idle)
    # Thawed for the next invocation: it runs again.
    resumed = call(lam, name, sleep=0.3)
    assert resumed - after_idle >= 20, (after_idle, resumed)


def test_background_thread_is_frozen_while_idle(functions: Functions, lam: Any) -> None:
    name = functions.create(COUNTER)["FunctionName"]
    check_frozen_while_idle(lam, name)


def test_background_process_is_frozen_while_idle(functions: Functions, lam: Any) -> None:
    name = functions.create(COUNTER)["FunctionName"]
    check_frozen_while_idle(lam, name, process=True)


def test_frozen_environment_still_times_out_and_is_replaced(functions: Functions, lam: Any) -> None:
    """A frozen environment is thawed for its invocation, so a timeout still kills it (a
    v1-frozen task would not die of SIGKILL), and the next one starts clean."""
    name = functions.create(COUNTER, Timeout=1)["FunctionName"]
    call(lam, name)
    time.sleep(0.3)  # parked and frozen
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 3}))
    assert resp.get("FunctionError") == "Unhandled"
    assert "Task timed out" in resp["Payload"].read().decode()
    # A new environment: its counter starts again from the beginning.
    assert call(lam, name) < 50


#: the counter started by the init phase (module import), as a provisioned environment runs it
COUNTER_AT_INIT = COUNTER.replace("started = False", "started = True") + (
    "\nthreading.Thread(target=count, daemon=True).start()\n"
)


def test_a_provisioned_environment_is_frozen_after_its_init(functions: Functions, lam: Any) -> None:
    """Lambda freezes an environment after its init phase too: what the init started does
    not run while the provisioned environment waits for its first invocation."""
    name = functions.create(COUNTER_AT_INIT, Publish=True)["FunctionName"]
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    wait_status(lam, name, "1", "READY")
    time.sleep(IDLE_S)
    resp = lam.invoke(FunctionName=name, Qualifier="1", Payload="{}")
    assert "FunctionError" not in resp
    assert int(json.loads(resp["Payload"].read())) < MOST_WHILE_IDLE
