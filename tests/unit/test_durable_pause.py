"""Paused durable executions in the store (what start-up re-arms, what the scan finds due)
and the authorization of PauseDurableExecution / ResumeDurableExecution, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.api.access import AccessMap
from lamina.store.durable import DurableStore, ExecutionRecord
from lamina.store.engine import open_database

_ARN = "arn:aws:lambda:us-east-1:000000000000:function:f:1/durable-execution/{}/x"


def test_paused_executions_are_rearmed_at_start_but_never_due(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'd.db'}", cluster=False)
    store = DurableStore(engine)
    now = datetime.now(UTC)
    past = now - timedelta(seconds=5)
    rows = {
        # name: (status, checkpoint token, claim lapsed at)
        "running": ("RUNNING", None, None),
        "paused": ("PAUSED", None, None),
        "pausing-live": ("PAUSING", "tok", now + timedelta(minutes=5)),
        "pausing-lapsed": ("PAUSING", "tok", past),
        "done": ("SUCCEEDED", None, None),
    }
    for name, (status, token, claimed_until) in rows.items():
        record = ExecutionRecord(
            arn=_ARN.format(name),
            function_name="f",
            version="1",
            name=name,
            status=status,
            input="{}",
            started_at=now - timedelta(minutes=1),
            deadline=now + timedelta(days=1),
            retention_days=1,
            token=token,
            claimed_until=claimed_until,
            wake_at=past,  # every timer is due
        )
        record.operations["x"] = (0, {"Id": "x", "Type": "EXECUTION", "Status": "STARTED"})
        assert store.create(record, [])
    assert {r.name for r in store.running()} == {
        "running",
        "paused",
        "pausing-live",
        "pausing-lapsed",
    }
    assert set(store.due(now)) == {_ARN.format("running"), _ARN.format("pausing-lapsed")}
    engine.dispose()


def test_pause_and_resume_are_authorized_on_the_execution() -> None:
    access = AccessMap("us-east-1", "000000000000")
    arn = _ARN.format("order-1")
    for suffix, action in (("pause", "Pause"), ("resume", "Resume")):
        request = access.request("POST", f"/2025-12-01/durable-executions/{arn}/{suffix}", {}, {})
        assert request is not None
        assert request.action == f"lambda:{action}DurableExecution"
        assert request.resource == arn
