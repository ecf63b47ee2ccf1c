"""Durable executions on a cluster: the API answers on every node from the shared database,
a callback sent to another node resumes the execution, and a wait whose node was killed
while it was suspended fires once, on a node still alive."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster._engines import NatsCluster, Postgres
from tests.cluster._nodes import LaminaCluster
from tests.conftest import Functions, wait_for
from tests.integration.test_durable import CALLBACK, DURABLE, WAITS, _sdk_files


@pytest.fixture
def cluster(tmp_path: Path, pg: Postgres, nats3: NatsCluster) -> Iterator[LaminaCluster]:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        for name in ("a", "b"):
            lc.node(name)
        yield lc
    finally:
        lc.stop()
        lc.print_logs()  # shown by pytest when the test failed


def _start(lam: Any, name: str, payload: Any) -> str:
    resp = lam.invoke(
        FunctionName=f"{name}:$LATEST", InvocationType="Event", Payload=json.dumps(payload)
    )
    return str(resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-durable-execution-arn"])


def _events(lam: Any, arn: str) -> list[str]:
    events = lam.get_durable_execution_history(DurableExecutionArn=arn)["Events"]
    return [e["EventType"] for e in events]


def _ended(lam: Any, arn: str, timeout: float = 40.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        execution: dict[str, Any] = lam.get_durable_execution(DurableExecutionArn=arn)
        return execution if execution["Status"] != "RUNNING" else None

    return dict(wait_for(done, timeout=timeout, message="the execution to end"))


def test_durable_executions_across_nodes(cluster: LaminaCluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    lam_a, lam_b = a.client(), b.client()
    sdk = _sdk_files()
    functions = Functions(lam_a)
    waits = functions.create({**sdk, "app.py": WAITS}, Timeout=30, DurableConfig=DURABLE)
    callback = functions.create({**sdk, "app.py": CALLBACK}, Timeout=30, DurableConfig=DURABLE)
    # A callback sent to the other node resumes an execution started on this one.
    waiting = _start(lam_a, callback["FunctionName"], {})

    def callback_id() -> str | None:
        events = lam_b.get_durable_execution_history(DurableExecutionArn=waiting)["Events"]
        for event in events:
            if event["EventType"] == "CallbackStarted":
                return str(event["CallbackStartedDetails"]["CallbackId"])
        return None

    lam_b.send_durable_execution_callback_success(
        CallbackId=wait_for(callback_id, timeout=30, message="the callback"), Result=b'"ok"'
    )
    done = _ended(lam_a, waiting)
    assert done["Status"] == "SUCCEEDED", done
    # A wait whose node is killed while it is suspended fires once, on the node left.
    napping = _start(lam_a, waits["FunctionName"], {"wait": 3})
    wait_for(
        lambda: "InvocationCompleted" in _events(lam_b, napping),
        timeout=30,
        message="the execution to suspend on its wait",
    )
    a.stop(signal.SIGKILL)
    done = _ended(lam_b, napping)
    assert done["Status"] == "SUCCEEDED", done
    types = _events(lam_b, napping)
    assert types.count("WaitSucceeded") == 1
    assert types.count("InvocationCompleted") == 2
