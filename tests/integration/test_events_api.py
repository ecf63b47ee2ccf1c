"""The EventBridge API with boto3's `events` client: rules, targets, PutEvents reaching exactly
the functions whose rules match, Input/InputPath, qualified targets, disabled rules, errors in
EventBridge's classes, and TestEventPattern."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator
from tests.conftest import SIGNED_HTTP, Functions, Server, seen, wait_for, wait_seen

pytestmark = pytest.mark.control_plane

# The recorder prints what it got; its log file under the data directory is read back.
RECORDER = """
import json, time
def handler(event, context):
    print("SEEN " + json.dumps({"event": event, "arn": context.invoked_function_arn,
                                "t": time.time()}))
    return "ok"
"""
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("events")
    srv = Server(data_dir=base / "data", extra_args=("--retry-base-delay", "0.3")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture(scope="module")
def events(server: Server) -> Any:
    return server.client("events")


@pytest.fixture
def functions(lam: Any) -> Iterator[Functions]:
    f = Functions(lam)
    yield f
    f.cleanup()


class Rules:
    """Creates uniquely named rules and deletes them (targets first) after the test."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.names: list[str] = []

    def put(self, targets: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
        name = kwargs.pop("Name", None) or f"r-{uuid.uuid4().hex[:10]}"
        if "EventPattern" in kwargs and not isinstance(kwargs["EventPattern"], str):
            kwargs["EventPattern"] = json.dumps(kwargs["EventPattern"])
        self.client.put_rule(Name=name, **kwargs)
        self.names.append(name)
        if targets:
            resp = self.client.put_targets(Rule=name, Targets=targets)
            assert resp["FailedEntryCount"] == 0, resp
        return name

    def cleanup(self) -> None:
        for name in self.names:
            try:
                listed = self.client.list_targets_by_rule(Rule=name)["Targets"]
            except self.client.exceptions.ResourceNotFoundException:
                continue  # the test deleted it
            ids = [t["Id"] for t in listed]
            if ids:
                self.client.remove_targets(Rule=name, Ids=ids)
            self.client.delete_rule(Name=name)


@pytest.fixture
def rules(events: Any) -> Iterator[Rules]:
    r = Rules(events)
    yield r
    r.cleanup()


def allow_events(lam: Any, name: str, qualifier: str | None = None, **extra: Any) -> None:
    """The resource policy statement EventBridge needs to invoke a function, as on AWS."""
    if qualifier:
        extra["Qualifier"] = qualifier
    lam.add_permission(
        FunctionName=name,
        StatementId=f"events-{uuid.uuid4().hex[:8]}",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        **extra,
    )


def recorder(functions: Functions, allowed: bool = True) -> tuple[str, str]:
    """A function that records its events, which EventBridge may invoke (unless not
    `allowed`): (name, ARN)."""
    config = functions.create(RECORDER)
    if allowed:
        allow_events(functions.client, config["FunctionName"])
    return config["FunctionName"], config["FunctionArn"]


def queued(server: Server) -> set[str]:
    """Functions with events still in the async queue."""
    return set(SIGNED_HTTP.get(server.endpoint + "/lamina/async").json()["functions"])


def put(events: Any, detail: dict[str, Any], source: str = "app.orders", **kw: Any) -> str:
    resp = events.put_events(
        Entries=[
            {"Source": source, "DetailType": "Order Placed", "Detail": json.dumps(detail), **kw}
        ]
    )
    assert resp["FailedEntryCount"] == 0, resp
    event_id: str = resp["Entries"][0]["EventId"]
    return event_id


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


# -- delivery ----------------------------------------------------------------------------


def test_put_events_reaches_exactly_the_matching_functions(
    server: Server, events: Any, functions: Functions, rules: Rules
) -> None:
    (big, big_arn), (every, every_arn), (other, other_arn) = (recorder(functions) for _ in "abc")
    tag = uuid.uuid4().hex  # keeps other tests' events out of these rules
    rules.put(
        EventPattern={
            "source": ["app.orders"],
            "detail": {"tag": [tag], "amount": [{"numeric": [">", 100]}]},
        },
        targets=[{"Id": "big", "Arn": big_arn}],
    )
    rules.put(
        EventPattern={"source": ["app.orders"], "detail": {"tag": [tag]}},
        targets=[{"Id": "every", "Arn": every_arn}],
    )
    rules.put(
        EventPattern={"source": ["app.other"], "detail": {"tag": [tag]}},
        targets=[{"Id": "other", "Arn": other_arn}],
    )
    first = put(events, {"tag": tag, "amount": 150}, Resources=["arn:aws:s3:::bucket"])
    second = put(events, {"tag": tag, "amount": 50}, Time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))

    (got,) = wait_seen(server, big, 1)
    event = got["event"]
    assert event["id"] == first
    assert event["version"] == "0"
    assert event["source"] == "app.orders"
    assert event["detail-type"] == "Order Placed"
    assert event["account"] == ACCOUNT
    assert event["region"] == "us-east-1"
    assert event["resources"] == ["arn:aws:s3:::bucket"]
    assert event["detail"] == {"tag": tag, "amount": 150}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    got_every = {r["event"]["id"]: r["event"] for r in wait_seen(server, every, 2)}
    assert set(got_every) == {first, second}
    assert got_every[second]["time"] == "2024-01-02T03:04:05Z"

    wait_for(lambda: not queued(server) & {big, every, other}, message="the queue to empty")
    assert len(seen(server, big)) == 1
    assert len(seen(server, every)) == 2
    assert seen(server, other) == []


def test_input_input_path_and_a_qualified_target(
    server: Server, lam: Any, events: Any, functions: Functions, rules: Rules
) -> None:
    (constant, constant_arn), (path, path_arn) = recorder(functions), recorder(functions)
    lam.publish_version(FunctionName=path)
    lam.create_alias(FunctionName=path, Name="live", FunctionVersion="1")
    allow_events(lam, path, "live")  # the alias's own policy: the function's does not cover it
    tag = uuid.uuid4().hex
    rules.put(
        EventPattern={"detail": {"tag": [tag]}},
        targets=[
            {"Id": "constant", "Arn": constant_arn, "Input": '{"fixed": [1, 2]}'},
            {"Id": "path", "Arn": path_arn + ":live", "InputPath": "$.detail.order"},
        ],
    )
    put(events, {"tag": tag, "order": {"id": 7, "items": ["a"]}})
    (got,) = wait_seen(server, constant, 1)
    assert got["event"] == {"fixed": [1, 2]}
    (got,) = wait_seen(server, path, 1)
    assert got["event"] == {"id": 7, "items": ["a"]}
    assert got["arn"] == path_arn + ":live"


def test_a_disabled_rule_does_not_fire_until_enabled(
    server: Server, events: Any, functions: Functions, rules: Rules
) -> None:
    name, arn = recorder(functions)
    tag = uuid.uuid4().hex
    rule = rules.put(
        EventPattern={"detail": {"tag": [tag]}},
        State="DISABLED",
        targets=[{"Id": "t", "Arn": arn}],
    )
    put(events, {"tag": tag, "n": 1})
    events.enable_rule(Name=rule)
    put(events, {"tag": tag, "n": 2})
    events.disable_rule(Name=rule)
    put(events, {"tag": tag, "n": 3})
    assert events.describe_rule(Name=rule)["State"] == "DISABLED"
    wait_seen(server, name, 1)
    wait_for(lambda: name not in queued(server), message="the queue to empty")
    assert [r["event"]["detail"]["n"] for r in seen(server, name)] == [2]


def test_a_target_needs_a_resource_policy_that_lets_the_rule_invoke_it(
    server: Server, lam: Any, events: Any, functions: Functions, rules: Rules
) -> None:
    """As on AWS: without lambda:InvokeFunction for events.amazonaws.com (and a SourceArn
    that matches the rule, when given) the target is not invoked; PutEvents still succeeds."""
    (bare, bare_arn), (elsewhere, elsewhere_arn), (mine, mine_arn), (alias, alias_arn) = (
        recorder(functions, allowed=False) for _ in "abcd"
    )
    tag = uuid.uuid4().hex
    rule = rules.put(
        EventPattern={"detail": {"tag": [tag]}},
        targets=[
            {"Id": "bare", "Arn": bare_arn},
            {"Id": "elsewhere", "Arn": elsewhere_arn},
            {"Id": "mine", "Arn": mine_arn},
            {"Id": "alias", "Arn": alias_arn + ":live"},
        ],
    )
    rule_arn = events.describe_rule(Name=rule)["Arn"]
    allow_events(lam, elsewhere, SourceArn=rule_arn + "-other")
    allow_events(lam, mine, SourceArn=rule_arn, SourceAccount=ACCOUNT)
    lam.publish_version(FunctionName=alias)
    lam.create_alias(FunctionName=alias, Name="live", FunctionVersion="1")
    allow_events(lam, alias)  # the function's policy, not the alias's: does not cover :live
    lam.add_permission(  # everyone but EventBridge
        FunctionName=bare, StatementId="acct", Action="lambda:*", Principal=ACCOUNT
    )
    resp = events.put_events(
        Entries=[{"Source": "app", "DetailType": "t", "Detail": json.dumps({"tag": tag})}]
    )
    assert resp["FailedEntryCount"] == 0
    wait_seen(server, mine, 1)
    wait_for(lambda: not queued(server) & {bare, elsewhere, mine, alias}, message="the queue")
    for name in (bare, elsewhere, alias):
        assert seen(server, name) == [], name
    log = server.log()
    for target in (bare_arn, elsewhere_arn, alias_arn + ":live"):
        assert f"rule {rule} may not invoke {target}:" in log
    metrics = httpx.get(server.endpoint + "/metrics").text
    assert (
        f'lamina_events_failed_invocations_total{{reason="permission",rule="{rule}"}} 3.0'
        in metrics
    )


# -- rules and targets -------------------------------------------------------------------


def test_rule_lifecycle(events: Any, rules: Rules) -> None:
    name = rules.put(
        EventPattern={"source": ["x"]}, Description="orders", Name=f"life-{uuid.uuid4().hex[:8]}"
    )
    arn = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/{name}"
    described = events.describe_rule(Name=name)
    assert described["Arn"] == arn
    assert described["State"] == "ENABLED"
    assert described["Description"] == "orders"
    assert described["EventBusName"] == "default"
    assert json.loads(described["EventPattern"]) == {"source": ["x"]}
    assert "ScheduleExpression" not in described

    # PutRule again replaces: the schedule is added, the description (left out) goes
    again = events.put_rule(
        Name=name, EventPattern='{"source": ["y"]}', ScheduleExpression="rate(5 minutes)"
    )
    assert again["RuleArn"] == arn
    described = events.describe_rule(Name=name)
    assert described["ScheduleExpression"] == "rate(5 minutes)"
    assert "Description" not in described

    target = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:whatever"
    events.put_targets(Rule=name, Targets=[{"Id": "a", "Arn": target}])
    with pytest.raises(ClientError) as e:
        events.delete_rule(Name=name)
    assert code(e) == "ValidationException"
    assert e.value.response["Error"]["Message"] == "Rule can't be deleted since it has targets."
    with pytest.raises(ClientError) as e:
        events.delete_rule(Name=name, Force=True)  # Force is for AWS-managed rules only
    assert code(e) == "ValidationException"
    assert events.remove_targets(Rule=name, Ids=["a", "missing"])["FailedEntryCount"] == 0
    assert events.list_targets_by_rule(Rule=name)["Targets"] == []
    events.delete_rule(Name=name)
    with pytest.raises(events.exceptions.ResourceNotFoundException) as e:
        events.describe_rule(Name=name)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    events.delete_rule(Name=name)  # a rule already gone: nothing to do, as on EventBridge


def test_list_rules_by_prefix_with_paging(events: Any, rules: Rules) -> None:
    prefix = f"page-{uuid.uuid4().hex[:8]}-"
    names = [rules.put(Name=f"{prefix}{i}", EventPattern={"source": ["p"]}) for i in range(5)]
    listed, token, pages = [], None, 0
    while True:
        resp = events.list_rules(
            NamePrefix=prefix, Limit=2, **({"NextToken": token} if token else {})
        )
        listed += [r["Name"] for r in resp["Rules"]]
        pages += 1
        token = resp.get("NextToken")
        if not token:
            break
    assert listed == sorted(names)
    assert pages == 3
    assert events.list_rules(NamePrefix=prefix + "9")["Rules"] == []


def test_list_rule_names_by_target(events: Any, rules: Rules) -> None:
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:by-target-{uuid.uuid4().hex[:8]}"
    names = sorted(
        rules.put([{"Id": "t", "Arn": fn}], ScheduleExpression="rate(1 day)") for _ in range(3)
    )
    # a qualified ARN is another target, as on EventBridge
    rules.put([{"Id": "t", "Arn": fn + ":live"}], ScheduleExpression="rate(1 day)")
    first = events.list_rule_names_by_target(TargetArn=fn, Limit=2)
    assert first["RuleNames"] == names[:2]
    rest = events.list_rule_names_by_target(TargetArn=fn, NextToken=first["NextToken"])
    assert rest["RuleNames"] == names[2:] and "NextToken" not in rest
    assert events.list_rule_names_by_target(TargetArn=fn + "-none")["RuleNames"] == []
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.list_rule_names_by_target(TargetArn=fn, EventBusName="other")


def test_targets_are_lambda_functions_and_at_most_five(events: Any, rules: Rules) -> None:
    name = rules.put(EventPattern={"source": ["t"]})
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
    resp = events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "ok", "Arn": fn + "one"},
            {"Id": "sqs", "Arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:queue"},
            {"Id": "region", "Arn": "arn:aws:lambda:eu-west-1:000000000000:function:x"},
            {"Id": "both", "Arn": fn + "two", "Input": "{}", "InputPath": "$.detail"},
            {"Id": "badjson", "Arn": fn + "two", "Input": "{nope"},
            {"Id": "badpath", "Arn": fn + "two", "InputPath": "detail"},
        ],
    )
    assert resp["FailedEntryCount"] == 5
    assert [f["TargetId"] for f in resp["FailedEntries"]] == [
        "sqs",
        "region",
        "both",
        "badjson",
        "badpath",
    ]
    assert "Lambda" in resp["FailedEntries"][0]["ErrorMessage"]
    assert [t["Id"] for t in events.list_targets_by_rule(Rule=name)["Targets"]] == ["ok"]

    events.put_targets(Rule=name, Targets=[{"Id": f"t{i}", "Arn": fn + f"f{i}"} for i in range(4)])
    with pytest.raises(events.exceptions.LimitExceededException):
        events.put_targets(Rule=name, Targets=[{"Id": "sixth", "Arn": fn + "six"}])
    # replacing one by Id is no new target
    events.put_targets(Rule=name, Targets=[{"Id": "t0", "Arn": fn + "again", "Input": "[1]"}])
    first = events.list_targets_by_rule(Rule=name, Limit=3)
    assert [t["Id"] for t in first["Targets"]] == ["ok", "t0", "t1"]
    assert first["Targets"][1] == {"Id": "t0", "Arn": fn + "again", "Input": "[1]"}
    rest = events.list_targets_by_rule(Rule=name, Limit=3, NextToken=first["NextToken"])
    assert [t["Id"] for t in rest["Targets"]] == ["t2", "t3"]
    assert "NextToken" not in rest


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ('{"source": "x"}', '"source" must be an object or an array'),
        ('{"source": [{"prefix": 1}]}', "prefix match pattern must be a string"),
        ('{"n": [{"numeric": [">", "a"]}]}', "Value of > must be numeric"),
        ('{"n": [{"nope": 1}]}', "Unrecognized match type nope"),
        ("not json", "Filter is not valid JSON"),
    ],
)
def test_invalid_patterns_are_invalid_event_pattern_exceptions(
    events: Any, pattern: str, reason: str
) -> None:
    with pytest.raises(events.exceptions.InvalidEventPatternException) as e:
        events.put_rule(Name="bad-pattern", EventPattern=pattern)
    message = e.value.response["Error"]["Message"]
    assert message.startswith("Event pattern is not valid. Reason: ")
    assert reason in message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(events.exceptions.InvalidEventPatternException):
        events.test_event_pattern(EventPattern=pattern, Event="{}")
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.describe_rule(Name="bad-pattern")


@pytest.mark.parametrize(
    "expression", ["rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "cron(0 12 * * * *)"]
)
def test_invalid_schedule_expressions_are_validation_exceptions(
    events: Any, expression: str
) -> None:
    with pytest.raises(ClientError) as e:
        events.put_rule(Name="bad-schedule", ScheduleExpression=expression)
    assert code(e) == "ValidationException"
    assert e.value.response["Error"]["Message"] == "Parameter ScheduleExpression is not valid."


def test_other_errors(events: Any) -> None:
    with pytest.raises(events.exceptions.ResourceNotFoundException) as e:
        events.describe_rule(Name="no-such-rule")
    assert e.value.response["Error"]["Message"] == (
        "Rule no-such-rule does not exist on EventBus default."
    )
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.put_rule(Name="x", EventPattern='{"a": ["b"]}', EventBusName="other-bus")
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.put_targets(Rule="no-such-rule", Targets=[{"Id": "a", "Arn": "arn:x"}])
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.enable_rule(Name="no-such-rule")
    with pytest.raises(ClientError) as e:
        events.put_rule(Name="neither")
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        events.put_rule(Name="bad name!", EventPattern='{"a": ["b"]}')
    assert code(e) == "ValidationException"


def test_put_events_fails_bad_entries_one_by_one(events: Any) -> None:
    resp = events.put_events(
        Entries=[
            {"Source": "a", "DetailType": "t", "Detail": "{}"},
            {"DetailType": "t", "Detail": "{}"},
            {"Source": "a", "Detail": "{}"},
            {"Source": "a", "DetailType": "t"},
            {"Source": "a", "DetailType": "t", "Detail": "[1]"},
            {"Source": "a", "DetailType": "t", "Detail": "{}", "EventBusName": "nope"},
        ]
    )
    assert resp["FailedEntryCount"] == 5
    first, *failed = resp["Entries"]
    assert set(first) == {"EventId"}
    assert [(f["ErrorCode"], f["ErrorMessage"]) for f in failed[:4]] == [
        (
            "InvalidArgument",
            "Parameter Source is not valid. Reason: Source is a required argument.",
        ),
        (
            "InvalidArgument",
            "Parameter DetailType is not valid. Reason: DetailType is a required argument.",
        ),
        (
            "InvalidArgument",
            "Parameter Detail is not valid. Reason: Detail is a required argument.",
        ),
        ("MalformedDetail", "Detail is malformed."),
    ]
    assert failed[4]["ErrorCode"] == "InvalidArgument"


def test_test_event_pattern(events: Any) -> None:
    event = json.dumps(
        {
            "id": "1",
            "account": ACCOUNT,
            "source": "app.orders",
            "time": "2024-01-01T00:00:00Z",
            "region": "us-east-1",
            "detail-type": "Order Placed",
            "resources": [],
            "detail": {"amount": 300},
        }
    )
    yes = '{"source": ["app.orders"], "detail": {"amount": [3.0e2]}}'
    no = '{"detail": {"amount": [{"numeric": ["<", 300]}]}}'
    assert events.test_event_pattern(EventPattern=yes, Event=event)["Result"] is True
    assert events.test_event_pattern(EventPattern=no, Event=event)["Result"] is False
    with pytest.raises(ClientError) as e:
        events.test_event_pattern(EventPattern=yes, Event='{"source": "app.orders"}')
    assert code(e) == "ValidationException"


def test_logs_and_events_share_post_root(server: Server, events: Any) -> None:
    logs = server.client("logs")
    assert "logGroups" in logs.describe_log_groups(limit=1)
    assert "Rules" in events.list_rules(Limit=1)
    resp = SIGNED_HTTP.post(
        server.endpoint + "/",
        headers={
            "X-Amz-Target": "AWSEvents.NoSuchThing",
            "Content-Type": "application/x-amz-json-1.1",
        },
        content=b"{}",
    )
    assert resp.status_code == 400
    assert resp.json()["__type"] == "UnknownOperationException"


def test_raw_responses_fit_botocore_s_output_shapes(server: Server, rules: Rules) -> None:
    """What the server sends, before boto3 parses (and silently drops) anything: every member
    is in the model, with the model's type, and required members are there."""
    model = botocore.session.get_session().get_service_model("events")
    name = rules.put(EventPattern={"source": ["shape"]}, ScheduleExpression="rate(1 day)")
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("DescribeRule", {"Name": name}),
        ("ListRules", {"NamePrefix": name, "Limit": 1}),
        ("PutTargets", {"Rule": name, "Targets": [{"Id": "a", "Arn": fn, "InputPath": "$.x"}]}),
        ("PutTargets", {"Rule": name, "Targets": [{"Id": "b", "Arn": "arn:aws:sqs:x:1:q"}]}),
        ("ListTargetsByRule", {"Rule": name}),
        ("ListRuleNamesByTarget", {"TargetArn": fn}),
        ("PutEvents", {"Entries": [{"Source": "s", "DetailType": "d", "Detail": "{}"}, {}]}),
        ("TestEventPattern", {"EventPattern": '{"a": ["b"]}', "Event": "{}"}),
        ("RemoveTargets", {"Rule": name, "Ids": ["a"]}),
        ("DisableRule", {"Name": name}),
        ("PutRule", {"Name": name, "EventPattern": '{"source": ["shape"]}'}),
    ]
    validator = ParamValidator()
    for operation, body in calls:
        resp = SIGNED_HTTP.post(
            server.endpoint + "/",
            headers={
                "X-Amz-Target": f"AWSEvents.{operation}",
                "Content-Type": "application/x-amz-json-1.1",
            },
            content=json.dumps(body).encode(),
        )
        data = resp.json()
        if operation == "TestEventPattern":  # the event lacks required fields
            assert resp.status_code == 400 and data["__type"] == "ValidationException"
            continue
        assert resp.status_code == 200, (operation, data)
        shape = model.operation_model(operation).output_shape
        if shape is None:
            assert data == {}, operation
            continue
        report = validator.validate(data, shape)
        assert not report.has_errors(), (operation, report.generate_report())
