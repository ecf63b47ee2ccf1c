"""Durable functions written with AWS's SDKs, unchanged, run on a real server and are watched
and answered from outside with boto3 and `lamina durable` (Lamina issue 22).

- AWS's Python Quick Start (read from the SDK's published README) checkpoints a step,
  suspends on a 5-second wait, survives a `kill -9` of the server while suspended, resumes on
  the restarted server and succeeds; its history is compared with the event sequence the SDKs'
  conformance requirements give for a step then a wait.
- A Python function takes callbacks answered with boto3 and with `lamina durable callback`
  (success and failure), and one waiting on a callback is stopped with `lamina durable stop`.
- A Node function written as AWS's JavaScript examples are (steps, a wait, `waitForCallback`)
  with `@aws/durable-execution-sdk-js` from npm, answered with boto3.

History shapes: every execution starts with ExecutionStarted and ends with one of
ExecutionSucceeded / ExecutionFailed / ExecutionStopped; a step that returns is StepStarted
then StepSucceeded; a wait is WaitStarted (with its Duration and ScheduledEndTimestamp) then
WaitSucceeded; a callback is CallbackStarted (with its CallbackId) then CallbackSucceeded /
CallbackFailed; each invocation adds an InvocationCompleted. `operations()` drops the
InvocationCompleted events, whose places between the others depend on timing.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Server, lamina
from tests.integration._durable import (
    DURABLE_CONFIG,
    aws_python_quick_start,
    define_durable_role,
    history,
    node_sdk,
    operations,
    package,
    python_sdk,
    require_durable_api,
    wait_event,
    wait_status,
)

#: ours, in the SDK's documented style: a step, then a callback the outside answers
CALLBACK_APP = """\
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import CallbackConfig, Duration


@durable_execution
def handler(event, context: DurableContext):
    item = context.step(lambda _: {"item": event["item"]}, name="reserve")
    callback = context.create_callback(
        name="approval", config=CallbackConfig(timeout=Duration.from_seconds(300))
    )
    decision = callback.result()
    return {"item": item["item"], "decision": decision}
"""

#: ours, as AWS's JavaScript examples are written: steps, a named wait, waitForCallback
NODE_APP = """\
import { withDurableExecution } from "@aws/durable-execution-sdk-js";

export const handler = withDurableExecution(async (event, context) => {
  const user = await context.step("fetch-user", async () => ({ id: event.userId }));
  await context.wait("cool-off", { seconds: 1 });
  const answer = await context.waitForCallback("approval", async (callbackId) => {
    console.log("callback " + callbackId);
  });
  const done = await context.step("finish", async () => `${user.id}:${answer}`);
  return { done };
});
"""


def _create(lam: Any, zipped: bytes, handler: str, runtime: str) -> str:
    """A durable function, Active."""
    name = f"durable-{uuid.uuid4().hex[:10]}"
    lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role=define_durable_role(lam.meta.endpoint_url),
        Handler=handler,
        Code={"ZipFile": zipped},
        Timeout=60,
        MemorySize=512,
        DurableConfig=DURABLE_CONFIG,
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    require_durable_api(lam, name)
    return name


def _start(lam: Any, name: str, payload: dict[str, Any], execution: str | None = None) -> str:
    resp = lam.invoke(
        FunctionName=name,
        Qualifier="$LATEST",
        InvocationType="Event",
        DurableExecutionName=execution or f"x-{uuid.uuid4().hex[:10]}",
        Payload=json.dumps(payload).encode(),
    )
    assert resp["StatusCode"] == 202
    arn: str = resp["DurableExecutionArn"]
    return arn


@pytest.fixture(scope="module")
def python_pkg() -> Path:
    return python_sdk()


@pytest.fixture
def restartable(own_server: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    yield own_server(tmp_path / "data")


def test_aws_quick_start_suspends_across_kill_and_resumes(
    restartable: Server, own_server: Callable[..., Server], python_pkg: Path
) -> None:
    srv = restartable
    lam = srv.client()
    app = aws_python_quick_start(python_pkg)
    name = _create(lam, package(python_pkg, {"app.py": app}), "app.handler", "python3.11")
    arn = _start(lam, name, {"order_id": "o-17"}, execution="order-17")

    # Suspended on the wait: the step is checkpointed and no invocation is running.
    wait_started = wait_event(lam, arn, "WaitStarted")
    assert wait_started["Name"] == "await_confirmation"
    assert wait_started["WaitStartedDetails"]["Duration"] == 5
    wait_event(lam, arn, "InvocationCompleted")
    assert lam.get_durable_execution(DurableExecutionArn=arn)["Status"] == "RUNNING"

    # The server dies while the execution waits; a new one on the same data resumes it.
    srv.stop(signal.SIGKILL)
    srv = own_server(srv.data_dir)
    lam = srv.client()
    done = wait_status(lam, arn, timeout=60)
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["Result"]) == {"status": "approved", "order_id": "o-17"}

    events = history(lam, arn)
    assert operations(events) == [
        ("ExecutionStarted", "order-17"),
        ("StepStarted", "validate_order"),
        ("StepSucceeded", "validate_order"),
        ("WaitStarted", "await_confirmation"),
        ("WaitSucceeded", "await_confirmation"),
        ("ExecutionSucceeded", ""),  # as in the conformance requirements: no Id, no Name
    ]
    # As the conformance requirement for a wait (2.1) has it, after a step: each invocation
    # ends with InvocationCompleted, the execution's end comes after the last one, and the
    # event ids count up from 1 without a gap.
    kinds = [e["EventType"] for e in events]
    assert kinds == [
        "ExecutionStarted",
        "StepStarted",
        "StepSucceeded",
        "WaitStarted",
        "InvocationCompleted",
        "WaitSucceeded",
        "InvocationCompleted",
        "ExecutionSucceeded",
    ]
    assert [e["EventId"] for e in events] == list(range(1, len(events) + 1))
    assert events[5]["WaitSucceededDetails"]["Duration"] == 5
    # The step's result as the SDK checkpointed it (in its own typed envelope).
    step_done = next(e for e in events if e["EventType"] == "StepSucceeded")
    assert '"o-17"' in step_done["StepSucceededDetails"]["Result"]["Payload"]

    # The same history through `lamina durable`.
    shown = lamina("durable", "show", arn, endpoint=srv.endpoint)
    assert shown.returncode == 0, shown.stderr
    assert "SUCCEEDED" in shown.stdout.splitlines()[0]
    timeline = [line.split() for line in shown.stdout.splitlines() if line.startswith("+")]
    assert [row[1] for row in timeline] == kinds
    wait_row = next(row for row in timeline if row[1] == "WaitStarted")
    assert wait_row[2:5] == ["await_confirmation", "Wait", "for"]
    listed = lamina("durable", "list", name, "--status", "succeeded", endpoint=srv.endpoint)
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == ["order-17", "SUCCEEDED"] for line in listed.stdout.splitlines())
    none = lamina("durable", "list", name, "--status", "RUNNING", endpoint=srv.endpoint)
    assert none.returncode == 0 and none.stdout.strip() == "no durable executions"


def _callback_id(lam: Any, arn: str, name: str | None = "approval") -> str:
    """The id of the execution's callback, once the execution has suspended on it."""
    started = wait_event(lam, arn, "CallbackStarted")
    if name is not None:
        assert started["Name"] == name
    callback_id: str = started["CallbackStartedDetails"]["CallbackId"]
    # Answer once the invocation that started the callback has ended (as the conformance
    # requirements do, with a delay): an answer while it is still ending comes before its
    # InvocationCompleted in the history, which is right but not the sequence compared below.
    deadline = time.monotonic() + 60
    while not any(
        e["EventType"] == "InvocationCompleted" and e["EventId"] > started["EventId"]
        for e in history(lam, arn)
    ):
        assert time.monotonic() < deadline, f"{arn} did not suspend on its callback"
        time.sleep(0.05)
    return callback_id


def test_callbacks_answered_with_boto3_and_the_cli(server: Server, python_pkg: Path) -> None:
    lam = server.client()
    name = _create(lam, package(python_pkg, {"app.py": CALLBACK_APP}), "app.handler", "python3.11")
    by_boto3 = _start(lam, name, {"item": "a"})
    by_cli = _start(lam, name, {"item": "b"})
    refused = _start(lam, name, {"item": "c"})
    stopped = _start(lam, name, {"item": "d"})

    lam.send_durable_execution_callback_success(
        CallbackId=_callback_id(lam, by_boto3), Result=b"yes"
    )
    ok = lamina(
        "durable", "callback", _callback_id(lam, by_cli), "--success", '{"by": "cli"}',
        endpoint=server.endpoint,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    failed = lamina(
        "durable", "callback", _callback_id(lam, refused), "--failure", "over budget",
        "--error-type", "Rejected", endpoint=server.endpoint,
    )  # fmt: skip
    assert failed.returncode == 0, failed.stderr
    _callback_id(lam, stopped)
    halted = lamina("durable", "stop", stopped, endpoint=server.endpoint)
    assert halted.returncode == 0, halted.stderr
    assert halted.stdout.startswith("stopped ")

    first = wait_status(lam, by_boto3)
    assert first["Status"] == "SUCCEEDED"
    # The SDKs hand a callback's result to the function as it was sent (no parsing).
    assert json.loads(first["Result"]) == {"item": "a", "decision": "yes"}
    second = wait_status(lam, by_cli)
    assert json.loads(second["Result"]) == {"item": "b", "decision": '{"by": "cli"}'}
    third = wait_status(lam, refused)
    assert third["Status"] == "FAILED"
    assert "over budget" in json.dumps(third.get("Error", {}))
    assert wait_status(lam, stopped)["Status"] == "STOPPED"

    # As the conformance requirement for a named callback (4.2) has it, after a step.
    events = history(lam, by_boto3)
    assert [(e["EventType"], e.get("Name", "")) for e in events] == [
        ("ExecutionStarted", events[0]["Name"]),
        ("StepStarted", "reserve"),
        ("StepSucceeded", "reserve"),
        ("CallbackStarted", "approval"),
        ("InvocationCompleted", ""),
        ("CallbackSucceeded", "approval"),
        ("InvocationCompleted", ""),
        ("ExecutionSucceeded", ""),
    ]
    assert events[5]["CallbackSucceededDetails"]["Result"]["Payload"] == "yes"
    assert ("CallbackFailed", "approval") in operations(history(lam, refused))
    assert history(lam, stopped)[-1]["EventType"] == "ExecutionStopped"

    # `lamina durable list` sees all four with their statuses; --status filters.
    listed = lamina("durable", "list", name, endpoint=server.endpoint)
    assert listed.returncode == 0, listed.stderr
    statuses = sorted(line.split()[1] for line in listed.stdout.splitlines()[1:])
    assert statuses == ["FAILED", "STOPPED", "SUCCEEDED", "SUCCEEDED"]
    only = lamina(
        "durable", "list", name, "--status", "STOPPED", "--json", endpoint=server.endpoint
    )
    assert [e["DurableExecutionArn"] for e in json.loads(only.stdout)] == [stopped]

    # A callback already answered cannot be answered again; the CLI says why and exits 1.
    again = lamina(
        "durable", "callback", _callback_id(lam, by_boto3), "--success", "1",
        endpoint=server.endpoint,
    )  # fmt: skip
    assert again.returncode == 1
    assert "Exception" in again.stderr


def test_node_sdk_steps_wait_and_callback(server: Server) -> None:
    lam = server.client()
    zipped = package(node_sdk(), {"index.mjs": NODE_APP}, skip=("package.json",))
    runtime = "nodejs22.x" if "nodejs22.x" in _runtimes(server) else "nodejs20.x"
    name = _create(lam, zipped, "index.handler", runtime)
    arn = _start(lam, name, {"userId": "u1"})
    callback_id = wait_event(lam, arn, "CallbackStarted", timeout=60)["CallbackStartedDetails"][
        "CallbackId"
    ]
    lam.send_durable_execution_callback_success(CallbackId=callback_id, Result=b"ok")
    done = wait_status(lam, arn)
    assert done["Status"] == "SUCCEEDED", done
    assert json.loads(done["Result"]) == {"done": "u1:ok"}
    ops = operations(history(lam, arn))
    assert ops[0][0] == "ExecutionStarted" and ops[-1][0] == "ExecutionSucceeded"
    assert ("StepSucceeded", "fetch-user") in ops
    assert ops.index(("WaitStarted", "cool-off")) < ops.index(("WaitSucceeded", "cool-off"))
    # waitForCallback is a child context holding the callback (and its submitter step).
    assert [kind for kind, _ in ops].count("CallbackSucceeded") == 1
    assert ops.index(("StepSucceeded", "fetch-user")) < ops.index(("StepSucceeded", "finish"))


def _runtimes(server: Server) -> set[str]:
    out = lamina("runtimes", endpoint=server.endpoint)
    return {
        line.split()[0] for line in out.stdout.splitlines() if line and "unavailable" not in line
    }


def test_cli_errors_are_aws_errors(server: Server) -> None:
    ep = server.endpoint
    lam = server.client()
    handler = "def handler(event, context):\n    return None\n"
    _create(lam, package(Path("/nonexistent"), {"app.py": handler}), "app.handler", "python3.11")
    missing = "arn:aws:lambda:us-east-1:000000000000:function:nope:$LATEST/durable-execution/a/b"
    shown = lamina("durable", "show", missing, endpoint=ep)
    assert shown.returncode == 1
    assert "ResourceNotFoundException" in shown.stderr
    listed = lamina("durable", "list", f"no-such-{uuid.uuid4().hex[:6]}", endpoint=ep)
    assert listed.returncode == 1
    assert "ResourceNotFoundException" in listed.stderr
    answered = lamina("durable", "callback", "bm9uZQ==", "--heartbeat", endpoint=ep)
    assert answered.returncode == 1
    assert "Exception" in answered.stderr


def _manual_block(lang: str, after: str) -> str:
    """The first ```lang block after the heading `after` in docs/durable.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "durable.md").read_text()
    block = re.search(rf"```{lang}\n(.*?)```", text[text.index(after) :], re.DOTALL)
    assert block is not None, f"no {lang} block after {after!r} in docs/durable.md"
    return block.group(1)


def test_the_manuals_examples_run(server: Server, python_pkg: Path) -> None:
    """docs/durable.md's Python and Node handlers, packaged as it says, started as it says
    (named, asynchronous, `$LATEST`) and answered with `lamina durable callback`."""
    lam = server.client()
    py = _create(
        lam,
        package(python_pkg, {"app.py": _manual_block("python", "### Python")}),
        "app.handler",
        "python3.11",
    )
    js = _create(
        lam,
        package(node_sdk(), {"index.mjs": _manual_block("js", "### Node.js")}, ("package.json",)),
        "index.handler",
        "nodejs20.x",
    )
    started = [_start(lam, name, {"order": 17}, execution="order-17") for name in (py, js)]
    for arn in started:
        answer = lamina(
            "durable", "callback", _callback_id(lam, arn, name=None), "--success", "approved",
            endpoint=server.endpoint,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
    for arn in started:
        done = wait_status(lam, arn)
        assert done["Status"] == "SUCCEEDED", done
        assert json.loads(done["Result"]) == {"order": 17, "decision": "approved"}
    shown = lamina("durable", "show", started[0], endpoint=server.endpoint)
    assert shown.returncode == 0, shown.stderr
    assert "for 5 s, until" in shown.stdout and "waited 5 s" in shown.stdout


def test_cli_deploys_and_starts_durable_functions(
    server: Server, python_pkg: Path, tmp_path: Path
) -> None:
    """`lamina deploy --durable-timeout/--durable-retention` and `lamina invoke --durable-name`,
    with a start by the same name and payload answered by the execution already there."""
    ep = server.endpoint
    lam = server.client()
    role = define_durable_role(ep)
    zipped = tmp_path / "fn.zip"
    zipped.write_bytes(package(python_pkg, {"app.py": CALLBACK_APP}))
    name = f"durable-cli-{uuid.uuid4().hex[:6]}"
    common = ("--handler", "app.handler", "--role", role, "--timeout", "60")
    made = lamina(
        "deploy", name, str(zipped), *common, "--durable-timeout", "300",
        "--durable-retention", "3", endpoint=ep,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = lam.get_function_configuration(FunctionName=name)
    assert config["DurableConfig"] == {"ExecutionTimeout": 300, "RetentionPeriodInDays": 3}
    updated = lamina("deploy", name, str(zipped), *common, "--durable-timeout", "600", endpoint=ep)
    assert updated.returncode == 0, updated.stderr
    assert lam.get_function_configuration(FunctionName=name)["DurableConfig"] == {
        "ExecutionTimeout": 600,
        "RetentionPeriodInDays": 14,
    }

    payload = '{"item": "z"}'
    start = ("invoke", name, "--qualifier", "$LATEST", "--durable-name", "cli-1")
    queued = lamina(*start, "--payload", payload, "--async", endpoint=ep)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("queued ")
    (arn,) = re.findall(r"^durable execution (\S+)$", queued.stderr, re.MULTILINE)
    answered = lamina(
        "durable", "callback", _callback_id(lam, arn), "--success", "fine", endpoint=ep
    )
    assert answered.returncode == 0, answered.stderr
    # The same name and payload, synchronously: the execution already there, to its end.
    again = lamina(*start, "--payload", payload, endpoint=ep)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"item": "z", "decision": "fine"}
    assert f"durable execution {arn}" in again.stderr
    listed = lamina("durable", "list", name, "--json", endpoint=ep)
    assert [e["DurableExecutionName"] for e in json.loads(listed.stdout)] == ["cli-1"]

    # A function made without DurableConfig does not become durable on update.
    plain = f"plain-cli-{uuid.uuid4().hex[:6]}"
    src = tmp_path / "plain"
    src.mkdir()
    (src / "app.py").write_text("def handler(e, c):\n    return 1\n")
    assert (
        lamina("deploy", plain, str(src), "--handler", "app.handler", endpoint=ep).returncode == 0
    )
    refused = lamina(
        "deploy", plain, str(src), "--handler", "app.handler", "--durable-timeout", "60",
        endpoint=ep,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "InvalidParameterValueException" in refused.stderr
    assert "only be enabled when the function is created" in refused.stderr
    retention_alone = lamina(
        "deploy", plain, str(src), "--handler", "app.handler", "--durable-retention", "3",
        endpoint=ep,
    )  # fmt: skip
    assert retention_alone.returncode == 1
    assert "--durable-retention goes with --durable-timeout" in retention_alone.stderr
