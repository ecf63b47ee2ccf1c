"""Provisioned concurrency: environments initialised ahead for a version or an alias, kept,
and used before on-demand ones."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server

CODE = (
    "import os\n"
    "INIT = os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n"
    "def handler(event, context):\n"
    "    if event.get('sleep'):\n"
    "        import time\n"
    "        time.sleep(event['sleep'])\n"
    "    return [INIT, context.log_stream_name]\n"
)


def environments(server: Server, name: str) -> list[dict[str, Any]]:
    listed = SIGNED_HTTP.get(server.endpoint + "/lamina/environments").json()["Environments"]
    return [e for e in listed if e["FunctionName"] == name]


def wait_status(lam: Any, name: str, qualifier: str, status: str) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for _ in range(200):
        got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if got["Status"] == status:
            return got
        time.sleep(0.05)
    raise AssertionError(f"status stayed {got.get('Status')}: {got}")


def test_provisioned_environments_are_ready_ahead_and_used_first(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
    )
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    ready = wait_status(lam, name, "1", "READY")
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    before = environments(server, name)
    assert [e["Version"] for e in before] == ["1", "1"]
    streams = {e["LogStreamName"] for e in before}

    resp = lam.invoke(FunctionName=name, Qualifier="1", LogType="Tail")
    init_type, stream = json.loads(resp["Payload"].read())
    assert init_type == "provisioned-concurrency"
    assert stream in streams
    report = base64.b64decode(resp["LogResult"]).decode()
    assert "REPORT RequestId" in report and "Init Duration" not in report
    # $LATEST is not provisioned: it starts on demand.
    on_demand = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert on_demand[0] == "on-demand"

    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)
    assert [c["FunctionArn"] for c in listed["ProvisionedConcurrencyConfigs"]] == [
        lam.get_function_configuration(FunctionName=name, Qualifier="1")["FunctionArn"]
    ]
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    for _ in range(100):  # the provisioned environments stop once no longer provisioned
        if not [e for e in environments(server, name) if e["LogStreamName"] in streams]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("provisioned environments still running")


def test_a_provisioned_environment_that_dies_is_replaced(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create(CODE, Publish=True, Timeout=1)["FunctionName"]
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    wait_status(lam, name, "1", "READY")
    (first,) = environments(server, name)
    resp = lam.invoke(FunctionName=name, Qualifier="1", Payload='{"sleep": 3}')
    assert json.loads(resp["Payload"].read())["errorType"] == "Sandbox.Timedout"
    for _ in range(200):
        now = environments(server, name)
        if now and now[0]["Id"] != first["Id"] and now[0]["State"] == "idle":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"not replaced: {environments(server, name)}")
    assert wait_status(lam, name, "1", "READY")["AllocatedProvisionedConcurrentExecutions"] == 1


def test_provisioned_alias(functions: Functions, lam: Any, server: Server) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    wait_status(lam, name, "live", "READY")
    assert [e["Version"] for e in environments(server, name)] == ["1"]
    out = json.loads(lam.invoke(FunctionName=name, Qualifier="live")["Payload"].read())
    assert out[0] == "provisioned-concurrency"
    # Not the version too: its environments are the alias's.
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
        )
    lam.delete_alias(FunctionName=name, Name="live")
    assert (
        lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
        == []
    )


def test_provisioned_rules(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as latest:
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    assert "unpublished" in str(latest.value)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="9", ProvisionedConcurrentExecutions=1
        )
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
        )
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioning_that_cannot_initialise_fails_with_a_reason(
    functions: Functions, lam: Any
) -> None:
    name = functions.create("import no_such_module\n", Publish=True)["FunctionName"]
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    failed = wait_status(lam, name, "1", "FAILED")
    assert "no_such_module" in failed["StatusReason"]
    assert failed["AllocatedProvisionedConcurrentExecutions"] == 0
