"""`lamina durable show`'s timeline, from history events shaped as botocore's `lambda` model
defines them (GetDurableExecutionHistory's `Event`), and the callback command's own checks."""

from __future__ import annotations

from typing import Any

import botocore.session
from click.testing import CliRunner

from lamina.cli.durable import timeline_rows
from lamina.cli.main import main

T0 = 1_760_000_000.0

#: a step, a 5-second wait across two invocations, then a callback completed from outside:
#: the event sequence the SDKs' conformance requirements give for that workflow
HISTORY: list[dict[str, Any]] = [
    {
        "EventType": "ExecutionStarted",
        "EventId": 1,
        "Id": "exec",
        "Name": "order-17",
        "EventTimestamp": T0,
        "ExecutionStartedDetails": {
            "Input": {"Payload": '{"order": 17}', "Truncated": False},
            "ExecutionTimeout": 300,
        },
    },
    {
        "EventType": "StepStarted",
        "SubType": "Step",
        "EventId": 2,
        "Id": "1",
        "Name": "fetch-data",
        "EventTimestamp": T0 + 0.004,
        "StepStartedDetails": {},
    },
    {
        "EventType": "StepSucceeded",
        "SubType": "Step",
        "EventId": 3,
        "Id": "1",
        "Name": "fetch-data",
        "EventTimestamp": T0 + 0.011,
        "StepSucceededDetails": {
            "Result": {"Payload": '{"userId": 123}'},
            "RetryDetails": {"CurrentAttempt": 1},
        },
    },
    {
        "EventType": "WaitStarted",
        "SubType": "Wait",
        "EventId": 4,
        "Id": "2",
        "EventTimestamp": T0 + 0.015,
        "WaitStartedDetails": {"Duration": 5, "ScheduledEndTimestamp": T0 + 5.015},
    },
    {
        "EventType": "InvocationCompleted",
        "EventId": 5,
        "EventTimestamp": T0 + 0.02,
        "InvocationCompletedDetails": {
            "StartTimestamp": T0,
            "EndTimestamp": T0 + 0.02,
            "RequestId": "req-1",
        },
    },
    {
        "EventType": "WaitSucceeded",
        "SubType": "Wait",
        "EventId": 6,
        "Id": "2",
        "EventTimestamp": T0 + 5.02,
        "WaitSucceededDetails": {"Duration": 5},
    },
    {
        "EventType": "StepFailed",
        "SubType": "Step",
        "EventId": 7,
        "Id": "3",
        "Name": "charge",
        "EventTimestamp": T0 + 5.1,
        "StepFailedDetails": {
            "Error": {"Payload": {"ErrorType": "ValueError", "ErrorMessage": "card declined"}},
            "RetryDetails": {"CurrentAttempt": 2, "NextAttemptDelaySeconds": 4},
        },
    },
    {
        "EventType": "CallbackStarted",
        "SubType": "Callback",
        "EventId": 8,
        "Id": "4",
        "Name": "approval",
        "EventTimestamp": T0 + 5.2,
        "CallbackStartedDetails": {"CallbackId": "Y2Ix/", "Timeout": 120, "HeartbeatTimeout": 60},
    },
    {
        "EventType": "ExecutionSucceeded",
        "EventId": 9,
        "Id": "exec",
        "EventTimestamp": "2025-10-09T08:53:25.300000+00:00",  # ISO 8601 is read too
        "ExecutionSucceededDetails": {"Result": {"Payload": "x" * 100, "Truncated": True}},
    },
]


def test_history_fixture_is_valid_for_botocore() -> None:
    # The events above must be what GetDurableExecutionHistory may return: parse them through
    # botocore's own model so a misspelt member fails here, not silently in the renderer.
    model = botocore.session.get_session().get_service_model("lambda")
    event_shape = model.shape_for("Event")
    for event in HISTORY:
        assert set(event) <= set(event_shape.members), set(event) - set(event_shape.members)
        assert event["EventType"] in event_shape.members["EventType"].enum


def test_timeline_offsets_operations_and_details() -> None:
    rows = timeline_rows(HISTORY)
    assert [r[1] for r in rows] == [e["EventType"] for e in HISTORY]
    assert rows[0][:4] == ("+0.000s", "ExecutionStarted", "order-17", "")
    assert rows[0][4] == 'timeout 300 s, input {"order": 17}'
    assert rows[1][:4] == ("+0.004s", "StepStarted", "fetch-data", "Step")
    assert rows[2][4] == 'attempt 1, result {"userId": 123}'
    # An operation without a name is shown by its id.
    assert rows[3][2] == "2"
    assert rows[3][4] == "for 5 s, until 2025-10-09 08:53:25"
    assert rows[4][4] == "request req-1, 20 ms"
    assert rows[5][0] == "+5.020s" and rows[5][4] == "waited 5 s"
    assert rows[6][4] == "attempt 2, retry in 4 s, error ValueError: card declined"
    assert rows[7][4] == "callback id Y2Ix/, timeout 120 s, heartbeat 60 s"
    # Long payloads are cut to one cell; the truncation the server reported is kept visible.
    assert rows[8][0] == "+5.300s"
    assert rows[8][4].startswith("result xxx") and rows[8][4].endswith("…")
    assert len(rows[8][4]) == len("result ") + 60


def test_offsets_past_a_minute_and_an_hour() -> None:
    events = [
        {"EventType": "ExecutionStarted", "EventTimestamp": T0},
        {"EventType": "WaitSucceeded", "EventTimestamp": T0 + 125.3},
        {"EventType": "ExecutionSucceeded", "EventTimestamp": T0 + 3 * 3600 + 125},
    ]
    assert [r[0] for r in timeline_rows(events)] == ["+0.000s", "+2m05.300s", "+3h02m05s"]


def test_callback_needs_exactly_one_outcome() -> None:
    runner = CliRunner()
    ep = "http://127.0.0.1:9"  # never reached: the arguments are refused first
    for args in ([], ["--success", "1", "--heartbeat"], ["--failure", "x", "--success", "1"]):
        out = runner.invoke(main, ["durable", "callback", "cb", *args, "--endpoint", ep])
        assert out.exit_code == 1
        assert "exactly one of --success RESULT, --failure MESSAGE, --heartbeat" in out.output
    out = runner.invoke(
        main, ["durable", "callback", "cb", "--heartbeat", "--error-type", "X", "--endpoint", ep]
    )
    assert out.exit_code == 1 and "go with --failure" in out.output
