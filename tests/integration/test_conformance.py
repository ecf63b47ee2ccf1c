"""`make conformance` (tools/conformance.py): its table of operations other issues own, and a
full run against a fresh server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

pytestmark = pytest.mark.control_plane

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import conformance  # noqa: E402

MODEL = botocore.session.get_session().get_service_model("lambda")


def test_owned_operations_are_real_operations_of_the_model() -> None:
    assert set(conformance.OWNED) <= set(MODEL.operation_names)
    # Every family is served now (durable executions, issue 22, with pause and resume).
    assert set(conformance.OWNED) == set()


def test_minimal_inputs_pass_botocore_validation() -> None:
    from botocore.validate import ParamValidator

    validator = ParamValidator()
    for op in MODEL.operation_names:
        shape = MODEL.operation_model(op).input_shape
        if shape is None:
            continue
        report = validator.validate(conformance.minimal_input(MODEL, op), shape)
        assert not report.has_errors(), f"{op}: {report.generate_report()}"


def test_a_full_run_classifies_every_operation() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "conformance.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ops = result["Operations"]
    assert set(ops) == set(MODEL.operation_names)
    assert result["Total"] == len(MODEL.operation_names)
    assert sum(result["Counts"].values()) == result["Total"]
    # Operations Lamina has served for long answer as implemented; no probe gets a 5xx.
    for op in (
        "CreateFunction",
        "Invoke",
        "InvokeWithResponseStream",
        "GetFunction",
        "PublishLayerVersion",
        "DeleteFunction",
    ):
        assert ops[op] == {"Status": "implemented", "Detail": "ok"}, op
    # The event-source mapping operations answer (a made-up UUID names no mapping).
    for op in (
        "CreateEventSourceMapping",
        "GetEventSourceMapping",
        "ListEventSourceMappings",
        "UpdateEventSourceMapping",
        "DeleteEventSourceMapping",
    ):
        assert ops[op]["Status"] == "implemented", (op, ops[op])
    assert result["Counts"]["errored"] == 0, {
        op: r for op, r in ops.items() if r["Status"] == "errored"
    }
    for op in conformance.OWNED:
        assert ops[op]["Status"] == "owned"
    assert {"PauseDurableExecution", "ResumeDurableExecution"} <= set(MODEL.operation_names)
    for op in MODEL.operation_names:
        if "DurableExecution" in op and op not in conformance.OWNED:
            assert ops[op]["Status"] == "implemented", (op, ops[op])
