"""PauseDurableExecution / ResumeDurableExecution with AWS's Python SDK in the function:
a paused execution is not invoked while its waits still end; resumed, it runs to its end."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Functions, lamina, wait_for
from tests.integration.test_durable import (
    CALLBACK,
    WAITS,
    _callback_id,
    _ended,
    _start,
    durable_function,
    history,
    sdk,
)

pytestmark = pytest.mark.control_plane

__all__ = ["sdk"]  # the fixture, shared with test_durable

SLOW_STEP = """
import time

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration


@durable_execution
def handler(event, context: DurableContext):
    context.step(lambda _: time.sleep(event["sleep"]) or "slept", name="slow")
    context.wait(Duration.from_seconds(1), name="nap")
    return {"done": True}
"""


def _types(lam: Any, arn: str) -> list[str]:
    return [e["EventType"] for e in history(lam, arn)]


def _status(lam: Any, arn: str) -> str:
    return str(lam.get_durable_execution(DurableExecutionArn=arn)["Status"])


def test_a_paused_execution_records_its_wait_but_runs_only_once_resumed(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, WAITS)
    arn = _start(lam, name, {"wait": 2})
    wait_for(
        lambda: "InvocationCompleted" in _types(lam, arn),
        message="the execution to suspend on its wait",
    )
    token = uuid.uuid4().hex
    lam.pause_durable_execution(DurableExecutionArn=arn, Reason="maintenance", ClientToken=token)
    # the same request again: success, nothing done again; another pause: a conflict
    lam.pause_durable_execution(DurableExecutionArn=arn, Reason="maintenance", ClientToken=token)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.pause_durable_execution(DurableExecutionArn=arn)
    paused = lam.get_durable_execution(DurableExecutionArn=arn)
    assert paused["Status"] == "PAUSED"
    assert paused["PauseDetails"]["Reason"] == "maintenance"
    assert paused["PauseDetails"]["ExecutionTimeoutPaused"] is True
    hidden = lam.get_durable_execution(DurableExecutionArn=arn, IncludeExecutionData=False)
    assert "Reason" not in hidden["PauseDetails"]
    listed = lam.list_durable_executions_by_function(FunctionName=name, Statuses=["PAUSED"])
    assert [e["DurableExecutionArn"] for e in listed["DurableExecutions"]] == [arn]

    # The wait ends while paused: recorded, but the function is not invoked.
    wait_for(lambda: "WaitSucceeded" in _types(lam, arn), message="the wait to end")
    time.sleep(1.5)
    assert _status(lam, arn) == "PAUSED"
    assert _types(lam, arn).count("InvocationCompleted") == 1

    lam.resume_durable_execution(DurableExecutionArn=arn, Reason="done")
    done = _ended(lam, arn)
    assert done["Status"] == "SUCCEEDED", done
    assert done["Result"] == '{"woke": true}'
    assert "PauseDetails" not in done
    events = history(lam, arn)
    types = [e["EventType"] for e in events]
    assert types.index("ExecutionPaused") < types.index("WaitSucceeded")
    assert types.index("WaitSucceeded") < types.index("ExecutionResumed")
    assert types.count("InvocationCompleted") == 2
    pause_event = next(e for e in events if e["EventType"] == "ExecutionPaused")
    assert pause_event["ExecutionPausedDetails"]["Reason"]["Payload"] == "maintenance"
    assert pause_event["ExecutionPausedDetails"]["ExecutionTimeoutPaused"] is True
    resumed = next(e for e in events if e["EventType"] == "ExecutionResumed")
    assert resumed["ExecutionResumedDetails"]["Reason"]["Payload"] == "done"
    truncated = lam.get_durable_execution_history(
        DurableExecutionArn=arn, IncludeExecutionData=False
    )
    reason = next(e for e in truncated["Events"] if e["EventType"] == "ExecutionPaused")
    assert reason["ExecutionPausedDetails"]["Reason"] == {"Truncated": True}

    # Ended: neither paused nor resumed; unknown: not found.
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.resume_durable_execution(DurableExecutionArn=arn)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.pause_durable_execution(DurableExecutionArn=arn)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.pause_durable_execution(DurableExecutionArn=arn.rsplit("/", 1)[0] + "/" + "0" * 36)


def test_a_pause_during_an_invocation_waits_for_its_end_and_resume_reinvokes(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, SLOW_STEP)
    running = _start(lam, name, {"sleep": 4})
    wait_for(lambda: "ExecutionStarted" in _types(lam, running), message="the start")
    time.sleep(0.5)
    lam.pause_durable_execution(DurableExecutionArn=running, ExecutionTimeoutPaused=False)
    assert _status(lam, running) == "PAUSING"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.pause_durable_execution(DurableExecutionArn=running)
    wait_for(lambda: _status(lam, running) == "PAUSED", message="the pause", timeout=30)
    assert (
        lam.get_durable_execution(DurableExecutionArn=running)["PauseDetails"][
            "ExecutionTimeoutPaused"
        ]
        is False
    )
    # The invocation's wait ends while paused; nothing runs until the resume.
    wait_for(lambda: "WaitSucceeded" in _types(lam, running), message="the wait to end")
    assert _status(lam, running) == "PAUSED"
    lam.resume_durable_execution(DurableExecutionArn=running)
    assert _ended(lam, running)["Status"] == "SUCCEEDED"

    # A resume while PAUSING cancels the pause: the invocation carries on.
    other = _start(lam, name, {"sleep": 3})
    wait_for(lambda: "ExecutionStarted" in _types(lam, other), message="the start")
    time.sleep(0.5)
    lam.pause_durable_execution(DurableExecutionArn=other)
    assert _status(lam, other) == "PAUSING"
    lam.resume_durable_execution(DurableExecutionArn=other)
    assert _status(lam, other) == "RUNNING"
    done = _ended(lam, other)
    assert done["Status"] == "SUCCEEDED"
    assert "ExecutionPaused" not in _types(lam, other)


def test_the_cli_pauses_and_resumes_and_a_resume_with_nothing_due_keeps_waiting(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes], server: Any
) -> None:
    name = durable_function(functions, sdk, WAITS)
    arn = _start(lam, name, {"wait": 60})
    wait_for(
        lambda: "InvocationCompleted" in _types(lam, arn),
        message="the execution to suspend on its wait",
    )
    paused = lamina(
        "durable", "pause", arn, "--reason", "by cli", "--keep-timeout-running",
        endpoint=server.endpoint,
    )  # fmt: skip
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused ")
    details = lam.get_durable_execution(DurableExecutionArn=arn)
    assert details["Status"] == "PAUSED"
    assert details["PauseDetails"] == {
        "PauseRequestTimestamp": details["PauseDetails"]["PauseRequestTimestamp"],
        "Reason": "by cli",
        "ExecutionTimeoutPaused": False,
    }
    shown = lamina("durable", "show", arn, "--data", endpoint=server.endpoint)
    assert shown.returncode == 0, shown.stderr
    assert "PAUSED" in shown.stdout and "reason by cli" in shown.stdout
    resumed = lamina("durable", "resume", arn, endpoint=server.endpoint)
    assert resumed.returncode == 0, resumed.stderr
    # Nothing completed meanwhile: it keeps waiting, not invoked again.
    time.sleep(1.5)
    assert _status(lam, arn) == "RUNNING"
    assert _types(lam, arn).count("InvocationCompleted") == 1
    again = lamina("durable", "resume", arn, endpoint=server.endpoint)
    assert again.returncode != 0 and "ResourceConflictException" in again.stderr
    # A paused execution can be stopped.
    lam.pause_durable_execution(DurableExecutionArn=arn)
    lam.stop_durable_execution(DurableExecutionArn=arn)
    assert _status(lam, arn) == "STOPPED"


def test_a_pause_outlives_a_kill_and_restart_of_the_server(
    own_server: Any, tmp_path: Path, sdk: dict[str, str | bytes]
) -> None:
    srv = own_server(tmp_path / "data")
    lam = srv.client()
    functions = Functions(lam)
    waiting = _start(lam, durable_function(functions, sdk, WAITS), {"wait": 2})
    cut = _start(lam, durable_function(functions, sdk, SLOW_STEP), {"sleep": 5})
    wait_for(
        lambda: "InvocationCompleted" in _types(lam, waiting) and "StepStarted" in _types(lam, cut),
        message="one execution to suspend on its wait, the other to be in its step",
    )
    lam.pause_durable_execution(DurableExecutionArn=waiting)
    lam.pause_durable_execution(DurableExecutionArn=cut)
    assert (_status(lam, waiting), _status(lam, cut)) == ("PAUSED", "PAUSING")
    assert srv.stop(signal.SIGKILL) != 0
    time.sleep(2)  # the wait is due while the server is down
    srv.start()
    # The invocation the restart cut off is not replayed while paused; the wait is recorded.
    wait_for(lambda: "WaitSucceeded" in _types(lam, waiting), message="the wait to end")
    assert _status(lam, cut) == "PAUSED"
    time.sleep(1.5)
    assert (_status(lam, waiting), _status(lam, cut)) == ("PAUSED", "PAUSED")
    assert "InvocationCompleted" not in _types(lam, cut)
    assert _types(lam, waiting).count("InvocationCompleted") == 1
    for arn in (waiting, cut):
        lam.resume_durable_execution(DurableExecutionArn=arn)
    assert _ended(lam, waiting, timeout=30)["Status"] == "SUCCEEDED"
    assert _ended(lam, cut, timeout=60)["Status"] == "SUCCEEDED"


def test_a_callback_answered_while_paused_is_recorded_and_handed_over_on_resume(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    arn = _start(lam, durable_function(functions, sdk, CALLBACK), {})
    callback_id = _callback_id(lam, arn)
    wait_for(
        lambda: "InvocationCompleted" in _types(lam, arn),
        message="the execution to suspend on its callback",
    )
    lam.pause_durable_execution(DurableExecutionArn=arn)
    lam.send_durable_execution_callback_heartbeat(CallbackId=callback_id)
    lam.send_durable_execution_callback_success(CallbackId=callback_id, Result=b'"yes"')
    assert "CallbackSucceeded" in _types(lam, arn)
    time.sleep(1.0)
    assert _status(lam, arn) == "PAUSED"
    assert _types(lam, arn).count("InvocationCompleted") == 1
    lam.resume_durable_execution(DurableExecutionArn=arn)
    done = _ended(lam, arn)
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["Result"]) == {"approved": '"yes"'}
