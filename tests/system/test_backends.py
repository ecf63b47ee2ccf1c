"""The same function behaves the same on each sandbox backend: `process` (anywhere) and
`namespace` (root). One server per backend, the same checks on each."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.conftest import Server
from tests.system._harness import functions_on, invoke, result, running_server

pytestmark = pytest.mark.system

FUNCTION = """
import os
def handler(event, context):
    action = event.get("action")
    if action == "fail":
        raise ValueError("boom: " + event["why"])
    if action == "tmp-write":
        with open("/tmp/" + event["file"], "w") as f:
            f.write(event["data"])
        return "written"
    if action == "tmp-read":
        path = "/tmp/" + event["file"]
        with open(path) as f:
            data = f.read()
        os.unlink(path)
        return data
    print("log-marker", event.get("marker"))
    return {
        "hello": event.get("name"),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "ctx": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
        },
    }
"""


@dataclass
class Deployed:
    server: Server
    lam: Any
    name: str
    arn: str


def _backend(name: str) -> Any:
    # CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
    # skipped: this skip can only hide the namespace runs on an unprivileged developer machine.
    marks = []
    if name == "namespace" and os.geteuid() != 0:
        marks.append(pytest.mark.skip(reason="namespace sandboxes need root"))
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="module", params=[_backend("process"), _backend("namespace")])
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    with running_server(request.param) as server, functions_on(server) as functions:
        created = functions.create(
            FUNCTION,
            MemorySize=256,
            Timeout=10,
            Environment={"Variables": {"GREETING": "hi there", "EMPTYISH": " "}},
        )
        yield Deployed(server, server.client(), created["FunctionName"], created["FunctionArn"])


def test_hello(deployed: Deployed) -> None:
    resp, out = invoke(deployed.lam, deployed.name, {"name": "world"})
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    assert out["hello"] == "world"


def test_error_shape(deployed: Deployed) -> None:
    resp, out = invoke(deployed.lam, deployed.name, {"action": "fail", "why": "on purpose"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert out["errorMessage"] == "boom: on purpose"
    assert isinstance(out["stackTrace"], list) and out["stackTrace"]
    assert any("app.py" in line and "handler" in line for line in out["stackTrace"]), out


def test_environment_variables(deployed: Deployed) -> None:
    out = result(deployed.lam, deployed.name, {})
    env = out["env"]
    assert env["GREETING"] == "hi there"
    assert env["EMPTYISH"] == " "
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == deployed.name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{deployed.name}"
    assert out["cwd"] == env["LAMBDA_TASK_ROOT"]


def test_tmp_is_writable_and_kept_while_warm(deployed: Deployed) -> None:
    file, data = f"backend-{uuid.uuid4().hex}", uuid.uuid4().hex
    assert result(deployed.lam, deployed.name, {"action": "tmp-write", "file": file, "data": data})
    assert result(deployed.lam, deployed.name, {"action": "tmp-read", "file": file}) == data


def test_context_fields(deployed: Deployed) -> None:
    resp, out = invoke(deployed.lam, deployed.name, {})
    ctx = out["ctx"]
    assert ctx["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert ctx["function_name"] == deployed.name
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == deployed.arn
    assert ctx["memory_limit_in_mb"] == "256"
    assert 8000 < ctx["remaining"] <= 10000
    assert ctx["log_group_name"] == f"/aws/lambda/{deployed.name}"
    assert ctx["log_stream_name"] == out["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]


def test_log_tail(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    resp, _ = invoke(deployed.lam, deployed.name, {"marker": marker}, LogType="Tail")
    request_id = resp["ResponseMetadata"]["RequestId"]
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert f"log-marker {marker}" in tail
    for line in (f"START RequestId: {request_id}", f"END RequestId: {request_id}"):
        assert line in tail, tail
    assert f"REPORT RequestId: {request_id}" in tail, tail
