"""The checkpoint rules of durable executions (`control.durable_ops`) and the store's
retention (`store.durable`), without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lamina.control import durable_ops as ops
from lamina.errors import InvalidParameterValueError
from lamina.store.durable import DurableStore, ExecutionRecord
from lamina.store.engine import open_database


def test_a_step_retries_then_succeeds_with_its_attempts_counted() -> None:
    start = ops.apply_update({"Id": "a", "Type": "STEP", "Action": "START"}, None, 10.0, "")
    assert start.doc["Status"] == "STARTED" and start.events == [("StepStarted", {})]
    retry = ops.apply_update(
        {
            "Id": "a",
            "Type": "STEP",
            "Action": "RETRY",
            "Error": {"ErrorMessage": "no"},
            "StepOptions": {"NextAttemptDelaySeconds": 5},
        },
        start.doc,
        11.0,
        "",
    )
    assert retry.doc["Status"] == "PENDING"
    assert retry.doc["StepDetails"]["Attempt"] == 1
    assert ops.next_timer(retry.doc) == 16.0
    done = ops.apply_update(
        {"Id": "a", "Type": "STEP", "Action": "SUCCEED", "Payload": "1"}, retry.doc, 17.0, ""
    )
    assert done.doc["Status"] == "SUCCEEDED" and done.doc["EndTimestamp"] == 17.0
    assert done.doc["StepDetails"]["Attempt"] == 2
    assert done.events[0][1]["RetryDetails"] == {"CurrentAttempt": 2}


def test_updates_lambda_refuses() -> None:
    started = {"a": {"Id": "a", "Type": "STEP", "Status": "SUCCEEDED"}}
    for update in (
        {"Id": "a", "Type": "STEP", "Action": "SUCCEED"},  # completed already
        {"Id": "a", "Type": "WAIT", "Action": "START", "WaitOptions": {"WaitSeconds": 1}},
        {"Id": "b", "Type": "CALLBACK", "Action": "SUCCEED"},  # not an action of callbacks
        {"Id": "b", "Type": "NOPE", "Action": "START"},
        {"Id": "b", "Type": "STEP", "Action": "START", "ParentId": "missing"},
        {"Id": "c", "Type": "WAIT", "Action": "START"},  # no WaitOptions
    ):
        with pytest.raises(InvalidParameterValueError):
            ops.check_update(update, started)


def test_callback_ids_name_their_operation() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f:1/durable-execution/n/i"
    minted = ops.mint_callback_id(arn, "op-1")
    assert ops.parse_callback_id(minted) == (arn, "op-1")
    assert ops.parse_callback_id("bm9wZQ==") is None
    assert ops.parse_callback_id("not base64!") is None


def test_ended_executions_are_deleted_after_their_retention(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'd.db'}", cluster=False)
    store = DurableStore(engine)
    now = datetime.now(UTC)
    for name, ended_days_ago in (("old", 3), ("young", 0.5), ("running", None)):
        record = ExecutionRecord(
            arn=f"arn:aws:lambda:us-east-1:000000000000:function:f:1/durable-execution/{name}/x",
            function_name="f",
            version="1",
            name=name,
            status="RUNNING" if ended_days_ago is None else "SUCCEEDED",
            input="{}",
            started_at=now - timedelta(days=4),
            deadline=now + timedelta(days=1),
            retention_days=1,
            ended_at=None if ended_days_ago is None else now - timedelta(days=ended_days_ago),
        )
        record.operations["x"] = (0, {"Id": "x", "Type": "EXECUTION", "Status": "STARTED"})
        assert store.create(record, [{"EventId": 1, "EventType": "ExecutionStarted"}])
    assert store.delete_ended_before(now) == 1
    assert {r.name for r in store.of_function("f")} == {"young", "running"}
    assert store.events(f"{record.arn.rsplit('/', 2)[0]}/old/x") == []
    engine.dispose()


def test_a_function_session_checkpoints_its_own_executions_only() -> None:
    from lamina.api.authz import _own_durable_execution
    from lamina.auth.principal import AccessRequest, Principal

    execution = "arn:aws:lambda:us-east-1:000000000000:function:orders:3/durable-execution/n/i"

    def session(function: str) -> Principal:
        return Principal(
            access_key_id="ASIA",
            arn=f"arn:aws:sts::000000000000:assumed-role/r/{function}",
            account="000000000000",
            role_arn="arn:aws:iam::000000000000:role/r",
        )

    checkpoint = AccessRequest("lambda:CheckpointDurableExecution", execution)
    assert _own_durable_execution(session("orders"), checkpoint)
    assert not _own_durable_execution(session("other"), checkpoint)
    assert not _own_durable_execution(
        session("orders"), AccessRequest("lambda:StopDurableExecution", execution)
    )
    key = Principal(access_key_id="AKIA", arn="arn:aws:iam::000000000000:user/orders", account="0")
    assert not _own_durable_execution(key, checkpoint)


def test_members_of_the_wrong_type_are_refused_not_crashed_on() -> None:
    for update in (
        {"Id": "w", "Type": "WAIT", "Action": "START", "WaitOptions": "soon"},
        {"Id": "w", "Type": "WAIT", "Action": "START", "WaitOptions": {"WaitSeconds": 0}},
        {
            "Id": "s",
            "Type": "STEP",
            "Action": "RETRY",
            "StepOptions": {"NextAttemptDelaySeconds": "1"},
        },
        {"Id": "s", "Type": "STEP", "Action": "SUCCEED", "Payload": 5},
        {"Id": "s", "Type": "STEP", "Action": "FAIL", "Error": "bad"},
        {"Id": "c", "Type": "CONTEXT", "Action": "START", "ContextOptions": []},
        {"Id": "i", "Type": "CHAINED_INVOKE", "Action": "START"},
        {"Id": "x" * 65, "Type": "STEP", "Action": "START"},
    ):
        with pytest.raises(InvalidParameterValueError):
            ops.check_update(update, {})
