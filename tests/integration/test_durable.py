"""Durable functions with AWS's own Python SDK (aws-durable-execution-sdk-python) installed
unchanged into the function package: executions checkpoint, suspend, resume and end through
Lamina's durable-execution API, driven by boto3 from outside."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import SIGNED_HTTP, Functions, fetch, wait_for

SDK = "aws-durable-execution-sdk-python==3.0.0"
#: the SDK installed once per machine, beside the tests' runtime images
_SDK_DIR = Path(os.environ["LAMINA_RUNTIME_CACHE"]) / "durable-sdk-python-3.0.0"


def _sdk_files() -> dict[str, str | bytes]:
    """The SDK's files for a function package. Its only dependency, boto3, is the runtime's
    own (the bundled botocore has the durable-execution operations)."""
    if not (_SDK_DIR / "aws_durable_execution_sdk_python").is_dir():
        tmp = _SDK_DIR.with_name(_SDK_DIR.name + f".{os.getpid()}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--no-deps",
                "--target",
                str(tmp),
                SDK,
            ],
            check=True,
            timeout=300,
        )
        # OSError: another worker installed it first
        with contextlib.suppress(OSError):
            tmp.rename(_SDK_DIR)
    files: dict[str, str | bytes] = {}
    root = _SDK_DIR / "aws_durable_execution_sdk_python"
    for path in root.rglob("*.py"):
        files[str(path.relative_to(_SDK_DIR))] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def sdk() -> dict[str, str | bytes]:
    return _sdk_files()


DURABLE = {"ExecutionTimeout": 120, "RetentionPeriodInDays": 1}

STEPS = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration, StepConfig
from aws_durable_execution_sdk_python.retries import RetryStrategyConfig, create_retry_strategy

RETRY = StepConfig(retry_strategy=create_retry_strategy(RetryStrategyConfig(
    max_attempts=3, initial_delay=Duration.from_seconds(1), max_delay=Duration.from_seconds(1),
    backoff_rate=1)))


def flaky(step):
    if step.attempt < 2:
        raise ValueError("not yet")
    return step.attempt


@durable_execution
def handler(event, context: DurableContext):
    a = context.step(lambda _: event["x"] + 1, name="add")
    attempts = context.step(flaky, name="flaky", config=RETRY)
    context.wait(Duration.from_seconds(1), name="pause")
    b = context.step(lambda _: a * 10, name="times")
    return {"a": a, "b": b, "attempts": attempts}
"""


def durable_function(
    functions: Functions, sdk: dict[str, str | bytes], code: str, **kw: Any
) -> str:
    name = f"d-{uuid.uuid4().hex[:12]}"
    functions.create(
        {**sdk, "app.py": code}, FunctionName=name, Timeout=30, DurableConfig=DURABLE, **kw
    )
    return name


def history(lam: Any, arn: str) -> list[dict[str, Any]]:
    return list(lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"])


def test_steps_retry_and_wait_run_to_the_end_synchronously(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, STEPS)
    config = lam.get_function_configuration(FunctionName=name)
    assert config["DurableConfig"] == DURABLE
    # Versions keep it; ListFunctions shows it.
    version = lam.publish_version(FunctionName=name)["Version"]
    assert (
        lam.get_function(FunctionName=name, Qualifier=version)["Configuration"]["DurableConfig"]
        == DURABLE
    )
    listed = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert listed[0]["DurableConfig"] == DURABLE
    started = time.monotonic()
    resp = lam.invoke(FunctionName=f"{name}:$LATEST", Payload=json.dumps({"x": 4}))
    took = time.monotonic() - started
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {"a": 5, "b": 50, "attempts": 2}
    assert took >= 2  # a 1 s retry delay and a 1 s wait
    arn = resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"]
    execution = lam.get_durable_execution(DurableExecutionArn=arn)
    assert execution["Status"] == "SUCCEEDED"
    assert json.loads(execution["Result"]) == body
    assert json.loads(execution["InputPayload"]) == {"x": 4}
    types = [e["EventType"] for e in history(lam, arn)]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    for expected in (
        "StepStarted",
        "StepSucceeded",
        "StepFailed",
        "WaitStarted",
        "WaitSucceeded",
        "InvocationCompleted",
    ):
        assert expected in types, types
    # The execution was suspended on its retry and its wait: three invocations at least.
    assert types.count("InvocationCompleted") >= 3
    metrics = httpx.get(f"{lam.meta.endpoint_url}/metrics").text
    assert f'lamina_durable_executions_ended_total{{function="{name}",status="SUCCEEDED"}} 1.0' in (
        metrics
    )
    assert f'lamina_durable_checkpoint_seconds_count{{function="{name}"}}' in metrics


CALLBACK = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration


@durable_execution
def handler(event, context: DurableContext):
    callback = context.create_callback(
        name="approval", config=CallbackConfig(timeout=Duration.from_seconds(60)))
    context.step(lambda _: callback.callback_id, name="publish")
    return {"approved": callback.result()}
"""


def _callback_id(lam: Any, arn: str) -> str:
    def started() -> str | None:
        for event in history(lam, arn):
            if event["EventType"] == "CallbackStarted":
                return str(event["CallbackStartedDetails"]["CallbackId"])
        return None

    return str(wait_for(started, message="the callback to start"))


def _ended(lam: Any, arn: str, timeout: float = 30.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        execution: dict[str, Any] = lam.get_durable_execution(DurableExecutionArn=arn)
        return execution if execution["Status"] != "RUNNING" else None

    return dict(wait_for(done, timeout=timeout, message="the execution to end"))


def _start(lam: Any, name: str, payload: Any, **kw: Any) -> str:
    resp = lam.invoke(
        FunctionName=f"{name}:$LATEST",
        InvocationType="Event",
        Payload=json.dumps(payload),
        **kw,
    )
    assert resp["StatusCode"] == 202
    return str(resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"])


def test_callbacks_completed_and_failed_from_outside(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, CALLBACK)
    ok = _start(lam, name, {})
    bad = _start(lam, name, {})
    ok_id, bad_id = _callback_id(lam, ok), _callback_id(lam, bad)
    # Suspended: nothing runs until the callback comes.
    time.sleep(0.3)
    assert lam.get_durable_execution(DurableExecutionArn=ok)["Status"] == "RUNNING"
    lam.send_durable_execution_callback_heartbeat(CallbackId=ok_id)
    lam.send_durable_execution_callback_success(CallbackId=ok_id, Result=b'"yes"')
    lam.send_durable_execution_callback_failure(
        CallbackId=bad_id, Error={"ErrorType": "Rejected", "ErrorMessage": "no way"}
    )
    done = _ended(lam, ok)
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["Result"]) == {"approved": '"yes"'}
    failed = _ended(lam, bad)
    assert failed["Status"] == "FAILED", failed
    assert "no way" in failed["Error"]["ErrorMessage"]
    types = [e["EventType"] for e in history(lam, ok)]
    assert types.index("CallbackStarted") < types.index("CallbackSucceeded")
    assert "CallbackFailed" in [e["EventType"] for e in history(lam, bad)]
    # A completed callback cannot be completed again; an unknown one is not found.
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.send_durable_execution_callback_success(CallbackId=ok_id, Result=b"1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.send_durable_execution_callback_success(CallbackId="bm9wZQ==", Result=b"1")
    # A result that is not text is refused, not stored half-read.
    again = _start(lam, name, {})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.send_durable_execution_callback_success(
            CallbackId=_callback_id(lam, again), Result=b"\xff\xfe"
        )
    lam.stop_durable_execution(DurableExecutionArn=again)


CHAINED_TARGET = """
def handler(event, context):
    return {"doubled": event["n"] * 2}
"""

CHAINED = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution


@durable_execution
def handler(event, context: DurableContext):
    out = context.invoke(event["target"], {"n": event["n"]}, name="double")
    return {"got": out}
"""


DURABLE_TARGET = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution


@durable_execution
def handler(event, context: DurableContext):
    return {"doubled": context.step(lambda _: event["n"] * 2, name="double")}
"""


@pytest.mark.parametrize("durable_target", [False, True])
def test_chained_invoke_runs_the_target_and_resumes(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes], durable_target: bool
) -> None:
    if durable_target:
        target = f"{durable_function(functions, sdk, DURABLE_TARGET)}:$LATEST"
    else:
        target = functions.create(CHAINED_TARGET)["FunctionName"]
    name = durable_function(functions, sdk, CHAINED)
    resp = lam.invoke(
        FunctionName=f"{name}:$LATEST", Payload=json.dumps({"target": target, "n": 21})
    )
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {"got": {"doubled": 42}}
    arn = resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"]
    events = history(lam, arn)
    started = next(e for e in events if e["EventType"] == "ChainedInvokeStarted")
    assert started["ChainedInvokeStartedDetails"]["FunctionName"] == target
    assert "ChainedInvokeSucceeded" in [e["EventType"] for e in events]


PARALLEL = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import (
    CompletionConfig, MapConfig, ParallelConfig, StepConfig)
from aws_durable_execution_sdk_python.retries import RetryStrategyConfig, create_retry_strategy

ONCE = StepConfig(retry_strategy=create_retry_strategy(RetryStrategyConfig(max_attempts=1)))


def square(ctx, item, index, items):
    def run(_):
        if item == 3:
            raise ValueError("three is bad")
        return item * item
    return ctx.step(run, name=f"square-{index}", config=ONCE)


@durable_execution
def handler(event, context: DurableContext):
    tolerant = CompletionConfig(tolerated_failure_count=1)
    mapped = context.map([1, 2, 3], square, name="squares",
                         config=MapConfig(completion_config=tolerant))
    branches = context.parallel(
        [lambda c: c.step(lambda _: "left", name="l"),
         lambda c: c.step(lambda _: "right", name="r")],
        name="both", config=ParallelConfig(completion_config=CompletionConfig()))
    return {
        "mapped": sorted(i.result for i in mapped.all if i.result is not None),
        "failed": len([i for i in mapped.all if i.error is not None]),
        "branches": sorted(i.result for i in branches.all),
    }
"""


def test_parallel_and_map_with_a_failing_branch(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, PARALLEL)
    resp = lam.invoke(FunctionName=f"{name}:$LATEST", Payload=b"{}")
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {"mapped": [1, 4], "failed": 1, "branches": ["left", "right"]}
    arn = resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"]
    events = history(lam, arn)
    contexts = [e for e in events if e["EventType"] == "ContextStarted"]
    assert {e.get("SubType") for e in contexts} >= {"Map", "MapIteration", "Parallel"}
    assert any(e["EventType"] == "StepFailed" for e in events)


CONDITION = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python.waits import (
    WaitForConditionConfig, WaitForConditionDecision)


def strategy(state, attempt):
    if state >= 3:
        return WaitForConditionDecision.stop_polling()
    return WaitForConditionDecision.continue_waiting(Duration.from_seconds(1))


@durable_execution
def handler(event, context: DurableContext):
    final = context.wait_for_condition(
        lambda state, ctx: state + 1,
        config=WaitForConditionConfig(wait_strategy=strategy, initial_state=0),
        name="poll")
    return {"final": final}
"""


def test_wait_for_condition_polls_until_done(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, CONDITION)
    resp = lam.invoke(FunctionName=f"{name}:$LATEST", Payload=b"{}")
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {"final": 3}


WAITS = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration


@durable_execution
def handler(event, context: DurableContext):
    context.step(lambda _: "before", name="before")
    context.wait(Duration.from_seconds(event.get("wait", 2)), name="nap")
    return {"woke": True}
"""


def test_idempotent_start_by_name_stop_and_listing(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, WAITS)
    first = _start(lam, name, {"wait": 60}, DurableExecutionName="order-1")
    again = _start(lam, name, {"wait": 60}, DurableExecutionName="order-1")
    assert again == first
    assert "/durable-execution/order-1/" in first
    with pytest.raises(lam.exceptions.DurableExecutionAlreadyStartedException):
        _start(lam, name, {"wait": 5}, DurableExecutionName="order-1")
    other = _start(lam, name, {"wait": 60})
    wait_for(
        lambda: "WaitStarted" in [e["EventType"] for e in history(lam, first)],
        message="the wait to start",
    )
    stopped = lam.stop_durable_execution(
        DurableExecutionArn=first, Error={"ErrorType": "Cancelled", "ErrorMessage": "by test"}
    )
    assert stopped["StopTimestamp"]
    stopped_execution = lam.get_durable_execution(DurableExecutionArn=first)
    assert stopped_execution["Status"] == "STOPPED"
    assert stopped_execution["Error"] == {"ErrorType": "Cancelled", "ErrorMessage": "by test"}
    last = history(lam, first)[-1]
    assert last["EventType"] == "ExecutionStopped"
    assert last["ExecutionStoppedDetails"]["Error"]["Payload"]["ErrorMessage"] == "by test"
    listed = lam.list_durable_executions_by_function(FunctionName=name)["DurableExecutions"]
    assert {e["DurableExecutionArn"] for e in listed} == {first, other}
    running = lam.list_durable_executions_by_function(FunctionName=name, Statuses=["RUNNING"])
    assert [e["DurableExecutionArn"] for e in running["DurableExecutions"]] == [other]
    named = lam.list_durable_executions_by_function(
        FunctionName=name, DurableExecutionName="order-1"
    )
    assert [e["Status"] for e in named["DurableExecutions"]] == ["STOPPED"]
    page = lam.list_durable_executions_by_function(FunctionName=name, MaxItems=1)
    assert len(page["DurableExecutions"]) == 1 and page["NextMarker"]
    rest = lam.list_durable_executions_by_function(
        FunctionName=name, MaxItems=1, Marker=page["NextMarker"]
    )
    assert len(rest["DurableExecutions"]) == 1 and "NextMarker" not in rest
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_durable_execution(DurableExecutionArn=other)  # running
    lam.stop_durable_execution(DurableExecutionArn=other)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.stop_durable_execution(DurableExecutionArn=other)
    assert lam.delete_durable_execution(DurableExecutionArn=other)["DeletionRequestTimestamp"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_durable_execution_history(DurableExecutionArn=other)


def test_bad_inputs_are_refused_as_lambda_does(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, WAITS)
    arn = _start(lam, name, {"wait": 60})
    wait_for(
        lambda: "WaitStarted" in [e["EventType"] for e in history(lam, arn)],
        message="the wait to start",
    )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken="bm9wZQ==")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.get_durable_execution_state(DurableExecutionArn=arn, CheckpointToken="bm9wZQ==")
    unknown = arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_durable_execution(DurableExecutionArn=unknown)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_durable_execution_history(DurableExecutionArn=unknown)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_durable_executions_by_function(FunctionName="no-such-function")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(WAITS, DurableConfig={"RetentionPeriodInDays": 3})
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.update_function_configuration(
            FunctionName=functions.create("def handler(e, c):\n    return 1\n")["FunctionName"],
            DurableConfig=DURABLE,
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    # A time past datetime's range, and an error nested past the parser's depth (both once
    # answered 500 by the fuzz test)
    far = SIGNED_HTTP.get(
        f"{lam.meta.endpoint_url}/2025-12-01/functions/{name}/durable-executions",
        params={"StartedAfter": "99999999999999999999999999"},
    )
    assert far.status_code == 400, far.text
    assert far.headers["x-amzn-errortype"].startswith("InvalidParameterValueException")
    deep = SIGNED_HTTP.post(
        f"{lam.meta.endpoint_url}/2025-12-01/durable-execution-callbacks/x/fail",
        content=b"[" * 100_000,
    )
    assert deep.status_code == 400, deep.text
    assert deep.headers["x-amzn-errortype"].startswith("InvalidParameterValueException")
    lam.stop_durable_execution(DurableExecutionArn=arn)


SLOW_STEP = """
import time
from aws_durable_execution_sdk_python import DurableContext, durable_execution


@durable_execution
def handler(event, context: DurableContext):
    return context.step(lambda _: time.sleep(2) or "slept", name="slow")
"""


def test_a_wait_outlives_a_kill_and_restart_of_the_server(
    own_server: Any, tmp_path: Path, sdk: dict[str, str | bytes]
) -> None:
    srv = own_server(tmp_path / "data")
    lam = srv.client()
    functions = Functions(lam)
    name = durable_function(functions, sdk, WAITS)
    arn = _start(lam, name, {"wait": 3})
    slow = _start(lam, durable_function(functions, sdk, SLOW_STEP), {})
    wait_for(
        lambda: (
            "InvocationCompleted" in [e["EventType"] for e in history(lam, arn)]
            and "StepStarted" in [e["EventType"] for e in history(lam, slow)]
        ),
        message="one execution to suspend on its wait, the other to be in its step",
    )
    # Kill -9 the server, start it again on the same data.
    assert srv.stop(signal.SIGKILL) != 0
    srv.start()
    # The invocation cut off in its step is replayed: the step runs again and ends.
    cut = _ended(lam, slow, timeout=30)
    assert cut["Status"] == "SUCCEEDED", cut
    assert json.loads(cut["Result"]) == "slept"
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] in ("RUNNING", "SUCCEEDED")
    done = _ended(lam, arn, timeout=30)
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["Result"]) == {"woke": True}
    events = history(lam, arn)
    types = [e["EventType"] for e in events]
    assert types.count("WaitStarted") == 1 and types.count("WaitSucceeded") == 1
    # The wait ended when it was due, not at the restart.
    waited = next(e for e in events if e["EventType"] == "WaitSucceeded")
    began = next(e for e in events if e["EventType"] == "WaitStarted")
    assert (waited["EventTimestamp"] - began["EventTimestamp"]).total_seconds() >= 2.9
    assert [e["EventId"] for e in events] == list(range(1, len(events) + 1))


CRASH = """
import os
from aws_durable_execution_sdk_python import DurableContext, durable_execution


@durable_execution
def handler(event, context: DurableContext):
    context.step(lambda _: "kept", name="first")
    os._exit(3)
"""


def test_an_execution_times_out_and_a_crashing_one_fails_after_retries(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = f"d-{uuid.uuid4().hex[:12]}"
    functions.create(
        {**sdk, "app.py": WAITS},
        FunctionName=name,
        DurableConfig={"ExecutionTimeout": 2, "RetentionPeriodInDays": 1},
    )
    slow = _start(lam, name, {"wait": 30})
    crash = _start(lam, durable_function(functions, sdk, CRASH), {})
    timed_out = _ended(lam, slow, timeout=20)
    assert timed_out["Status"] == "TIMED_OUT"
    assert history(lam, slow)[-1]["EventType"] == "ExecutionTimedOut"
    failed = _ended(lam, crash, timeout=30)
    assert failed["Status"] == "FAILED"
    events = history(lam, crash)
    completed = [e for e in events if e["EventType"] == "InvocationCompleted"]
    # The first attempt and two more, each of which failed.
    assert len(completed) == 3
    assert all("Error" in e["InvocationCompletedDetails"] for e in completed)
    # The step checkpointed by the first attempt was replayed, not run again.
    assert [e["EventType"] for e in events].count("StepSucceeded") == 1


STEP_THEN_WAIT = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration


@durable_execution
def handler(event, context: DurableContext):
    value = context.step(lambda _: "cached_value")
    context.wait(Duration.from_seconds(1))
    return value
"""


def _shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each event's type, id, sub-type and operation (by order of first appearance)."""
    ids: dict[str, str] = {}
    out = []
    for e in events:
        op = ids.setdefault(e["Id"], f"ID{len(ids)}") if "Id" in e else None
        out.append((e["EventId"], e["EventType"], e.get("SubType"), op))
    return out


def test_history_of_a_step_and_a_wait_is_as_lambda_records_it(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    """The conformance suite's "replay skips succeeded step" scenario (requirement 1-9 of
    aws-durable-execution-conformance-tests): event ids, order, sub-types and details."""
    name = durable_function(functions, sdk, STEP_THEN_WAIT)
    resp = lam.invoke(FunctionName=f"{name}:$LATEST", Payload=b"{}")
    assert json.loads(resp["Payload"].read()) == "cached_value"
    arn = resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"]
    events = history(lam, arn)
    assert _shape(events) == [
        (1, "ExecutionStarted", None, "ID0"),
        (2, "StepStarted", "Step", "ID1"),
        (3, "StepSucceeded", "Step", "ID1"),
        (4, "WaitStarted", "Wait", "ID2"),
        (5, "InvocationCompleted", None, None),
        (6, "WaitSucceeded", "Wait", "ID2"),
        (7, "InvocationCompleted", None, None),
        (8, "ExecutionSucceeded", None, None),
    ]
    assert events[0]["ExecutionStartedDetails"]["ExecutionTimeout"] == 120
    assert events[3]["WaitStartedDetails"]["Duration"] == 1
    assert events[5]["WaitSucceededDetails"] == {"Duration": 1}
    assert events[2]["StepSucceededDetails"]["Result"]["Payload"] == '"cached_value"'
    assert events[7]["ExecutionSucceededDetails"]["Result"]["Payload"] == '"cached_value"'
    completed = events[4]["InvocationCompletedDetails"]
    assert completed["StartTimestamp"] <= completed["EndTimestamp"] and completed["RequestId"]
    # The reverse order, paging, and without the payloads.
    reverse = lam.get_durable_execution_history(DurableExecutionArn=arn, ReverseOrder=True)
    assert [e["EventId"] for e in reverse["Events"]] == list(range(8, 0, -1))
    page = lam.get_durable_execution_history(DurableExecutionArn=arn, MaxItems=3)
    assert len(page["Events"]) == 3
    rest = lam.get_durable_execution_history(DurableExecutionArn=arn, Marker=page["NextMarker"])
    assert [e["EventId"] for e in page["Events"] + rest["Events"]] == list(range(1, 9))
    bare = lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=False)
    assert "Payload" not in bare["Events"][2]["StepSucceededDetails"]["Result"]


def test_a_queued_event_starts_an_execution(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    """An event through the asynchronous queue (here InvokeAsync) starts a durable
    execution, as Invoke does, rather than handing the SDK a plain event."""
    name = durable_function(functions, sdk, WAITS)
    assert lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"wait": 1}))["Status"] == 202

    def listed() -> list[dict[str, Any]] | None:
        found = lam.list_durable_executions_by_function(FunctionName=name)["DurableExecutions"]
        return list(found) or None

    (execution,) = wait_for(listed, message="the execution to start")
    done = _ended(lam, execution["DurableExecutionArn"])
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["InputPayload"]) == {"wait": 1}


def test_durable_actions_are_authorized_by_their_lambda_names(
    lam: Any, server: Any, tmp_path: Path, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    from tests.integration.test_authorization import client, new_key

    name = durable_function(functions, sdk, WAITS)
    arn = _start(lam, name, {"wait": 60})
    reader = client(
        server,
        new_key(
            server,
            tmp_path,
            {
                "Effect": "Allow",
                "Action": ["lambda:GetDurableExecution", "lambda:GetDurableExecutionHistory"],
                "Resource": f"arn:aws:lambda:us-east-1:000000000000:function:{name}:*",
            },
            {
                "Effect": "Allow",
                "Action": "lambda:ListDurableExecutionsByFunction",
                "Resource": f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
            },
        ),
    )
    assert reader.get_durable_execution(DurableExecutionArn=arn)["DurableExecutionArn"] == arn
    assert reader.get_durable_execution_history(DurableExecutionArn=arn)["Events"]
    listed = reader.list_durable_executions_by_function(FunctionName=name)
    assert [e["DurableExecutionArn"] for e in listed["DurableExecutions"]] == [arn]
    for call in (
        lambda: reader.stop_durable_execution(DurableExecutionArn=arn),
        # Only the function's own session checkpoints its executions unasked.
        lambda: reader.get_durable_execution_state(DurableExecutionArn=arn, CheckpointToken="x"),
        lambda: reader.send_durable_execution_callback_success(CallbackId="bm9wZQ==", Result=b""),
    ):
        with pytest.raises(reader.exceptions.ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    lam.stop_durable_execution(DurableExecutionArn=arn)


RAW = '''
import json
import boto3


def handler(event, context):
    """The durable-execution contract without the SDK: the event, the calls, the output."""
    lam = boto3.client("lambda")
    arn, token = event["DurableExecutionArn"], event["CheckpointToken"]
    ops = event["InitialExecutionState"]["Operations"]
    update = [{"Id": "s1", "Type": "STEP", "Action": "START", "Name": "raw"}]
    first = lam.checkpoint_durable_execution(
        DurableExecutionArn=arn, CheckpointToken=token, Updates=update, ClientToken="c1")
    again = lam.checkpoint_durable_execution(
        DurableExecutionArn=arn, CheckpointToken=token, Updates=update, ClientToken="c1")
    try:
        lam.checkpoint_durable_execution(DurableExecutionArn=arn, CheckpointToken=token)
        stale = "accepted"
    except lam.exceptions.InvalidParameterValueException:
        stale = "refused"
    new = first["CheckpointToken"]
    page = lam.get_durable_execution_state(
        DurableExecutionArn=arn, CheckpointToken=new, MaxItems=1)
    rest = lam.get_durable_execution_state(
        DurableExecutionArn=arn, CheckpointToken=new, Marker=page["NextMarker"])
    done = lam.checkpoint_durable_execution(
        DurableExecutionArn=arn, CheckpointToken=new,
        Updates=[{"Id": "s1", "Type": "STEP", "Action": "SUCCEED", "Payload": "7"}])
    return {"Status": "SUCCEEDED", "Result": json.dumps({
        "input": json.loads(ops[0]["ExecutionDetails"]["InputPayload"]),
        "first_type": ops[0]["Type"],
        "replayed": [first[k] for k in ("CheckpointToken", "NewExecutionState")]
        == [again[k] for k in ("CheckpointToken", "NewExecutionState")],
        "rotated": new != token,
        "stale": stale,
        "pages": [o["Id"] for o in page["Operations"] + rest["Operations"]][1:],
        "step": [o["StepDetails"] for o in done["NewExecutionState"]["Operations"]],
    })}
'''


def test_the_contract_without_the_sdk(lam: Any, functions: Functions) -> None:
    """What an invocation receives and may call: tokens are spent by each checkpoint, a
    batch retried with its ClientToken gets the same answer, state pages by marker."""
    name = f"d-{uuid.uuid4().hex[:12]}"
    functions.create(RAW, FunctionName=name, Timeout=30, DurableConfig=DURABLE)
    resp = lam.invoke(FunctionName=f"{name}:$LATEST", Payload=json.dumps({"k": 1}))
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body == {
        "input": {"k": 1},
        "first_type": "EXECUTION",
        "replayed": True,
        "rotated": True,
        "stale": "refused",
        "pages": ["s1"],
        "step": [{"Attempt": 1, "Result": "7"}],
    }


def test_a_throttled_execution_waits_for_concurrency_instead_of_failing(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    name = durable_function(functions, sdk, WAITS)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    arn = _start(lam, name, {"wait": 1})
    time.sleep(2.5)  # several throttled attempts
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"
    lam.delete_function_concurrency(FunctionName=name)
    done = _ended(lam, arn)
    assert done["Status"] == "SUCCEEDED", done
    # The throttled attempts did not run the function: they are not in its history.
    types = [e["EventType"] for e in history(lam, arn)]
    assert types.count("InvocationCompleted") == 2, types


URL_HANDLER = """
from aws_durable_execution_sdk_python import DurableContext, durable_execution


@durable_execution
def handler(event, context: DurableContext):
    path = context.step(lambda _: event["rawPath"], name="path")
    return {"statusCode": 200, "body": "durable " + path}
"""


def test_a_function_url_request_runs_a_durable_execution(
    lam: Any, functions: Functions, sdk: dict[str, str | bytes]
) -> None:
    from tests.integration.test_function_urls import make_public

    name = durable_function(functions, sdk, URL_HANDLER)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    status, _, body = fetch(url + "orders")
    assert (status, body) == (200, b"durable /orders")
    (execution,) = lam.list_durable_executions_by_function(FunctionName=name)["DurableExecutions"]
    assert execution["Status"] == "SUCCEEDED"
