"""Scheduled rules on a real server with the test-only clock at 60x (a simulated minute per
real second): `rate(1 minute)` fires once a minute with EventBridge's Scheduled Event, a
restart neither loses the rule nor fires a tick twice, a disabled rule is quiet, and
`lamina schedules` shows it all."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, lamina, seen, wait_for, wait_seen
from tests.integration.test_events_api import RECORDER, queued

pytestmark = pytest.mark.control_plane

RATE = 60  # schedule time runs 60x: rate(1 minute) fires every second


def fast_server(tmp_path: Path, rate: float) -> Server:
    return Server(
        data_dir=tmp_path / "data",
        extra_args=("--test-clock-rate", str(rate), "--retry-base-delay", "0.3"),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = fast_server(tmp_path, RATE).start()
    yield srv
    assert srv.stop() == 0, srv.log()


def tick_times(records: list[dict[str, Any]]) -> list[float]:
    return [
        datetime.fromisoformat(r["event"]["time"].replace("Z", "+00:00")).timestamp()
        for r in records
    ]


def every_minute_rule(server: Server) -> tuple[str, str, str]:
    """A recorder function and a rate(1 minute) rule targeting it: (function, arn, rule)."""
    fn = Functions(server.client()).create(RECORDER)
    events = server.client("events")
    rule_arn = events.put_rule(Name="every-minute", ScheduleExpression="rate(1 minute)")["RuleArn"]
    # What `aws events put-targets` users add on AWS: the rule's permission to invoke.
    server.client().add_permission(
        FunctionName=fn["FunctionName"],
        StatementId="every-minute",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=rule_arn,
    )
    events.put_targets(Rule="every-minute", Targets=[{"Id": "fn", "Arn": fn["FunctionArn"]}])
    return fn["FunctionName"], fn["FunctionArn"], rule_arn


def schedules(server: Server) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = SIGNED_HTTP.get(server.endpoint + "/lamina/schedules").json()[
        "Schedules"
    ]
    return listed


def test_rate_one_minute_fires_once_per_simulated_minute(server: Server) -> None:
    name, fn_arn, rule_arn = every_minute_rule(server)
    records = wait_seen(server, name, 3)[:3]
    for r in records:
        event = r["event"]
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["resources"] == [rule_arn]
        assert event["detail"] == {}
        assert event["account"] == "000000000000"
    times = tick_times(records)
    assert [b - a for a, b in itertools.pairwise(times)] == [60.0, 60.0]
    # one a (simulated) minute, not a burst: about a real second apart
    real = [r["t"] for r in records]
    assert real[2] - real[0] > 1.4

    (listed,) = schedules(server)
    assert listed["Name"] == "every-minute"
    assert listed["State"] == "ENABLED"
    assert listed["Targets"] == [fn_arn]
    assert listed["NextFire"] > listed["LastFired"] >= records[2]["event"]["time"]

    out = lamina("schedules", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "every-minute" in out.stdout
    assert "rate(1 minute)" in out.stdout
    assert "ENABLED" in out.stdout
    assert fn_arn in out.stdout
    assert f"next {listed['NextFire'][:10]}" in out.stdout


def test_a_disabled_schedule_does_not_fire(server: Server) -> None:
    name, _, _ = every_minute_rule(server)
    events = server.client("events")
    wait_seen(server, name, 1)
    events.disable_rule(Name="every-minute")
    # a tick queued just before it was disabled may still run: let it land first
    wait_for(lambda: name not in queued(server), message="the queue to empty")
    time.sleep(0.2)
    settled = len(seen(server, name))
    time.sleep(2.2)  # two simulated minutes and a bit: two ticks, were it enabled
    assert len(seen(server, name)) == settled
    assert schedules(server)[0]["NextFire"] is None

    events.enable_rule(Name="every-minute")
    wait_seen(server, name, settled + 1)


def test_a_restart_keeps_the_rule_and_does_not_fire_a_tick_twice(tmp_path: Path) -> None:
    """At 20x, a simulated minute is 3 s and so is the 60 s grace for missed ticks: the tick
    fired just before the stop is well within the grace when the server is back, so only its
    record keeps it from firing again."""
    server = fast_server(tmp_path, 20).start()
    try:
        restart_without_double_fire(server)
    finally:
        server.stop()


def restart_without_double_fire(server: Server) -> None:
    name, fn_arn, _ = every_minute_rule(server)
    wait_seen(server, name, 1)
    assert server.stop() == 0, server.log()
    before = tick_times(seen(server, name))
    assert len(before) == 1
    server.start()

    events = server.client("events")
    assert events.describe_rule(Name="every-minute")["ScheduleExpression"] == "rate(1 minute)"
    assert events.list_targets_by_rule(Rule="every-minute")["Targets"] == [
        {"Id": "fn", "Arn": fn_arn}
    ]
    (listed,) = schedules(server)
    assert listed["LastFired"] is not None
    after_restart = wait_seen(server, name, len(before) + 1)
    wait_for(lambda: name not in queued(server), message="the queue to empty")
    after_restart = seen(server, name)
    times = tick_times(after_restart)
    assert times[: len(before)] == before
    assert len(set(times)) == len(times), f"a tick fired twice: {times}"
    assert times == sorted(times)
    # every tick is on the rule's minute grid (counted from its creation)
    assert all((t - times[0]) % 60 == 0 for t in times)
    assert json.dumps(after_restart)  # records are plain JSON
