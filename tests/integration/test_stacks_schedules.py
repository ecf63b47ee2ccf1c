"""SAM's `ScheduleV2` events (AWS::Scheduler::Schedule) deployed as stacks: Lamina runs each as
a scheduled EventBridge rule that delivers the schedule's `Input`, granted its function's
invoke as the schedule's role would be; a one-time `at(...)` schedule, which no rule can
stand in for, fails the deploy, naming why, and is rolled back. The server's test-only clock
runs 60x, so `rate(1 minute)` fires about every second."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Server, lamina, seen, wait_seen
from tests.integration.test_events_api import RECORDER

pytestmark = pytest.mark.control_plane

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Expression:
    Type: String
    Default: rate(1 minute)
Resources:
  Nightly:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Events:
        Job:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: !Ref Expression
            Input: '{"job": "nightly"}'
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--test-clock-rate", "60")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "jobs"
    (app / "src").mkdir(parents=True)
    (app / "src" / "app.py").write_text(RECORDER)
    (app / "template.yaml").write_text(TEMPLATE)
    return app / "template.yaml"


def test_a_schedule_v2_event_runs_as_a_rule_delivering_its_input(
    server: Server, tmp_path: Path
) -> None:
    out = lamina("deploy", "--template", str(_app(tmp_path)), endpoint=server.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AWS::Scheduler::Schedule" in out.stdout
    records = wait_seen(server, "jobs-Nightly", 2, timeout=30)
    assert [r["event"] for r in records[:2]] == [{"job": "nightly"}] * 2

    listed = lamina("schedules", "--json", endpoint=server.endpoint)
    schedules = json.loads(listed.stdout)["Schedules"]
    # the SAM translator names a ScheduleV2 event's schedule after its logical id
    assert [(s["Name"], s["ScheduleExpression"]) for s in schedules] == [
        ("NightlyJob", "rate(1 minute)")
    ]
    policy = json.loads(server.client().get_policy(FunctionName="jobs-Nightly")["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["lamina-schedule-NightlyJob"]

    gone = lamina("stacks", "delete", "jobs", endpoint=server.endpoint)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    listed = lamina("schedules", "--json", endpoint=server.endpoint)
    assert json.loads(listed.stdout)["Schedules"] == []


def test_a_one_time_schedule_fails_the_deploy_and_is_rolled_back(
    server: Server, tmp_path: Path
) -> None:
    out = lamina(
        "deploy",
        "--template",
        str(_app(tmp_path)),
        "--parameter-overrides",
        "Expression=at(2030-01-01T00:00:00)",
        endpoint=server.endpoint,
    )
    assert out.returncode == 1
    assert "one-time schedule at(2030-01-01T00:00:00)" in out.stdout + out.stderr
    assert "rolled back" in out.stderr
    assert "jobs" not in lamina("stacks", endpoint=server.endpoint).stdout
    with pytest.raises(server.client().exceptions.ResourceNotFoundException):
        server.client().get_function(FunctionName="jobs-Nightly")
    assert seen(server, "jobs-Nightly") == []
