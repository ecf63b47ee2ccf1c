"""The CloudWatch metrics API: boto3's `cloudwatch` client in each protocol (CBOR, its
default; JSON 1.0; query) and the AWS CLI v1 read the same counts of real invocations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import cbor2
import httpx
import pytest
import redis
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.conftest import Functions, Server, lamina_env, wait_for, wait_seen
from tests.integration._mappings import delete_mapping
from tests.integration.test_authorization import new_key
from tests.integration.test_stream_mappings import (  # noqa: F401 (fixtures)
    REDIS_URL,
    broker,
    reader_role,
    redis_key,
)

pytestmark = pytest.mark.control_plane

CODE = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return "ok"
"""


def cloudwatch(
    server: Server, protocol: str | None = None, key: dict[str, str] | None = None, **config: Any
) -> Any:
    """A `cloudwatch` client speaking `protocol` (None: botocore's default, RPC v2 CBOR),
    signing with `key` (default: the admin's)."""
    key = key or {"AccessKeyId": "test", "SecretAccessKey": "test"}
    # A session of its own: sessions cache the loaded model and share it between clients.
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name="us-east-1",
    )

    def make() -> Any:
        settings = Config(retries={"total_max_attempts": 1}, **config)
        return session.client("cloudwatch", endpoint_url=server.endpoint, config=settings)

    if protocol is None:
        return make()
    # botocore speaks the first protocol of the model's list it supports: pin one.
    metadata = make().meta.service_model._service_description["metadata"]
    metadata["protocol"] = protocol
    metadata["protocols"] = [protocol]
    client = make()
    assert client.meta.service_model.protocol == protocol
    return client


def _window() -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"StartTime": now - timedelta(minutes=10), "EndTime": now + timedelta(minutes=2)}


def _stats(client: Any, name: str, metric: str, stats: list[str], **kw: Any) -> dict[str, Any]:
    resp = client.get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName=metric,
        Dimensions=[{"Name": "FunctionName", "Value": name}],
        Period=3600,
        **_window(),
        **({"Statistics": stats} if stats else {}),
        **kw,
    )
    points = resp["Datapoints"]
    assert len(points) <= 1, points  # one 1-hour period may straddle two: at most one here
    return points[0] if points else {}


@pytest.fixture(scope="module")
def invoked(server: Server) -> tuple[str, int, int]:
    """A function invoked 7 times, 3 of them failing."""
    lam = server.client()
    f = Functions(lam)
    name = f.create(CODE)["FunctionName"]
    for i in range(7):
        payload = {"fail": i % 3 == 0, "sleep": 0.05 if i == 1 else 0}
        lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    return name, 7, 3


def test_statistics_count_the_invocations_in_every_protocol(
    server: Server, invoked: tuple[str, int, int]
) -> None:
    name, total, errors = invoked
    for protocol in (None, "json", "query"):
        client = cloudwatch(server, protocol)
        inv = _stats(client, name, "Invocations", ["Sum", "SampleCount"])
        assert inv["Sum"] == total, protocol
        assert inv["Unit"] == "Count"
        err = _stats(client, name, "Errors", ["Sum"])
        assert err["Sum"] == errors, protocol
        dur = _stats(client, name, "Duration", ["Maximum", "Minimum", "Average"])
        assert dur["Unit"] == "Milliseconds"
        assert 50 <= dur["Maximum"] < 5000, dur  # the invocation that slept 50 ms
        assert 0 < dur["Minimum"] <= dur["Average"] <= dur["Maximum"]
        pct = _stats(client, name, "Duration", [], ExtendedStatistics=["p50", "p99"])
        p50, p99 = pct["ExtendedStatistics"]["p50"], pct["ExtendedStatistics"]["p99"]
        assert dur["Minimum"] <= p50 <= p99 <= dur["Maximum"] * 1.01, pct
        assert p99 >= dur["Maximum"] * 0.99


def test_get_metric_data_and_list_metrics(server: Server, invoked: tuple[str, int, int]) -> None:
    name, total, errors = invoked
    for protocol in (None, "json", "query"):
        client = cloudwatch(server, protocol)
        metric = {
            "Namespace": "AWS/Lambda",
            "Dimensions": [{"Name": "FunctionName", "Value": name}],
        }
        resp = client.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "inv",
                    "MetricStat": {
                        "Metric": {**metric, "MetricName": "Invocations"},
                        "Period": 3600,
                        "Stat": "Sum",
                    },
                },
                {
                    "Id": "err",
                    "Label": "errors",
                    "MetricStat": {
                        "Metric": {**metric, "MetricName": "Errors"},
                        "Period": 3600,
                        "Stat": "Sum",
                    },
                },
            ],
            **_window(),
        )
        by_id = {r["Id"]: r for r in resp["MetricDataResults"]}
        assert sum(by_id["inv"]["Values"]) == total, protocol
        assert sum(by_id["err"]["Values"]) == errors
        assert by_id["err"]["Label"] == "errors"
        assert by_id["inv"]["StatusCode"] == "Complete"
        listed = client.list_metrics(
            Namespace="AWS/Lambda", Dimensions=[{"Name": "FunctionName", "Value": name}]
        )["Metrics"]
        names = {m["MetricName"] for m in listed}
        assert {"Invocations", "Errors", "Duration"} <= names, protocol
        assert all({"Name": "FunctionName", "Value": name} in m["Dimensions"] for m in listed)


def test_the_aws_cli_v1_reads_the_same_counts(
    server: Server, invoked: tuple[str, int, int], tmp_path: Path
) -> None:
    name, total, _ = invoked
    window = _window()
    env = {
        **os.environ,
        **lamina_env(server.endpoint),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    env.pop("AWS_PROFILE", None)
    aws = Path(sys.executable).parent / "aws"
    out = subprocess.run(
        [
            str(aws),
            "--endpoint-url",
            server.endpoint,
            "cloudwatch",
            "get-metric-statistics",
            "--namespace",
            "AWS/Lambda",
            "--metric-name",
            "Invocations",
            "--dimensions",
            f"Name=FunctionName,Value={name}",
            "--statistics",
            "Sum",
            "--period",
            "3600",
            "--start-time",
            window["StartTime"].isoformat(),
            "--end-time",
            window["EndTime"].isoformat(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    points = json.loads(out.stdout)["Datapoints"]
    assert sum(p["Sum"] for p in points) == total


@pytest.mark.parametrize("protocol", [None, "json", "query"])
def test_bad_input_is_refused_in_the_callers_protocol(server: Server, protocol: str | None) -> None:
    client = cloudwatch(server, protocol, parameter_validation=False)
    base = {"Namespace": "AWS/Lambda", "MetricName": "Invocations", **_window()}
    cases = [
        ({**base, "Period": 90, "Statistics": ["Sum"]}, "InvalidParameterValue"),
        ({**base, "Period": 60}, "MissingParameter"),
        (
            {**base, "Period": 60, "Statistics": ["Sum"], "ExtendedStatistics": ["p50"]},
            "InvalidParameterCombination",
        ),
        ({**base, "Period": 60, "Statistics": ["Median"]}, "InvalidParameterValue"),
        (
            {
                **base,
                "Period": 60,
                "StartTime": datetime(2020, 1, 1, tzinfo=UTC),
                "Statistics": ["Sum"],
            },
            "InvalidParameterCombination",  # too many datapoints
        ),
    ]
    for params, code in cases:
        with pytest.raises(ClientError) as e:
            client.get_metric_statistics(**params)
        assert e.value.response["Error"]["Code"] == code, (protocol, params)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        client.get_metric_data(
            MetricDataQueries=[{"Id": "e1", "Expression": "SUM(METRICS())"}], **_window()
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        client.list_metrics(NextToken="not-a-token")
    assert e.value.response["Error"]["Code"] == "InvalidNextToken"


def test_concurrency_and_async_metrics(server: Server, functions: Functions) -> None:
    """ConcurrentExecutions is sampled while an invocation runs; AsyncEventsReceived counts
    the queue's accepted events."""
    name = functions.create(CODE, Timeout=20)["FunctionName"]
    lam = server.client()
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"sleep": 6}')
    client = cloudwatch(server)
    wait_for(
        lambda: _stats(client, name, "Invocations", ["Sum"]).get("Sum") == 1,
        timeout=30,
        message="the async invocation to end",
    )
    assert _stats(client, name, "AsyncEventsReceived", ["Sum"])["Sum"] == 1
    assert _stats(client, name, "ConcurrentExecutions", ["Maximum"])["Maximum"] == 1
    account = client.get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="ConcurrentExecutions",
        Period=3600,
        Statistics=["Maximum"],
        **_window(),
    )["Datapoints"]
    assert max(p["Maximum"] for p in account) >= 1


def test_provisioned_concurrency_metrics(server: Server, functions: Functions) -> None:
    """Invocations served by provisioned environments, and the one spilling over, by
    Resource (the alias invoked); AsyncEventAge of a queued event."""
    name = functions.create(CODE, Timeout=10)["FunctionName"]
    lam = server.client()
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    wait_for(
        lambda: (
            lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")["Status"]
            == "READY"
        ),
        timeout=60,
        message="provisioned concurrency",
    )
    lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    # Two at once: one on the provisioned environment, the other spills over.
    lam.invoke(FunctionName=name, Qualifier="live", InvocationType="Event", Payload=b'{"sleep": 2}')
    time.sleep(0.5)
    lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    client = cloudwatch(server)
    resource = [
        {"Name": "FunctionName", "Value": name},
        {"Name": "Resource", "Value": f"{name}:live"},
    ]

    def total(metric: str) -> float:
        points = client.get_metric_statistics(
            Namespace="AWS/Lambda",
            MetricName=metric,
            Dimensions=resource,
            Period=3600,
            Statistics=["Sum"],
            **_window(),
        )["Datapoints"]
        return sum(p["Sum"] for p in points)

    wait_for(lambda: total("Invocations") == 3, timeout=30, message="three invocations")
    assert total("ProvisionedConcurrencyInvocations") == 2
    assert total("ProvisionedConcurrencySpilloverInvocations") == 1
    age = _stats(client, name, "AsyncEventAge", ["SampleCount", "Maximum"])
    assert age["SampleCount"] == 1 and 0 <= age["Maximum"] < 5000
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")


def test_a_stream_mapping_records_iterator_age(
    server: Server, functions: Functions, request: pytest.FixtureRequest
) -> None:
    """IteratorAge: how old a stream batch's last record was when it was done (Redis at
    127.0.0.1:6379, as the stream mapping tests use, with their fixtures)."""
    role: str = request.getfixturevalue("reader_role")
    key: str = request.getfixturevalue("redis_key")
    fn = functions.create(CODE, Role=role)["FunctionName"]
    lam = server.client()
    with redis.Redis.from_url(REDIS_URL) as r, broker(server, REDIS_URL) as broker_arn:
        r.xadd(key, {"data": "one"})
        time.sleep(1.0)  # the record is at least this old when its batch is done
        created = lam.create_event_source_mapping(
            FunctionName=fn,
            EventSourceArn=f"{broker_arn}:stream/{key}",
            StartingPosition="TRIM_HORIZON",
            BatchSize=1,
        )
        client = cloudwatch(server)
        age = wait_for(
            lambda: _stats(client, fn, "IteratorAge", ["SampleCount", "Minimum", "Maximum"]),
            timeout=60,
            message="IteratorAge",
        )
        assert age["SampleCount"] == 1 and age["Unit"] == "Milliseconds"
        assert 1000 <= age["Minimum"] < 60_000
        delete_mapping(lam, created["UUID"])


def _arn(lam: Any, name: str) -> str:
    arn: str = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    return arn


def test_failed_deliveries_to_dead_letter_targets_and_destinations(
    server: Server, functions: Functions
) -> None:
    """DeadLetterErrors and DestinationDeliveryFailures count deliveries to targets deleted
    since they were configured (Lambda's "misconfigured resources"); a delivery that works
    counts nothing and is an event the target's queue received."""
    lam = server.client()
    gone = [functions.create(CODE)["FunctionName"] for _ in range(3)]
    dlq_arn, on_failure_arn, on_success_arn = (_arn(lam, n) for n in gone)
    failing = functions.create(CODE, DeadLetterConfig={"TargetArn": dlq_arn})["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=failing,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": on_failure_arn}},
    )
    succeeding = functions.create(CODE)["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=succeeding, DestinationConfig={"OnSuccess": {"Destination": on_success_arn}}
    )
    sink = functions.create(CODE)["FunctionName"]
    delivered = functions.create(CODE)["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=delivered, DestinationConfig={"OnSuccess": {"Destination": _arn(lam, sink)}}
    )
    for name in gone:
        lam.delete_function(FunctionName=name)
    lam.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"fail": true}')
    lam.invoke(FunctionName=succeeding, InvocationType="Event", Payload=b"{}")
    lam.invoke(FunctionName=delivered, InvocationType="Event", Payload=b"{}")
    client = cloudwatch(server)
    wait_for(
        lambda: (
            _stats(client, sink, "Invocations", ["Sum"]).get("Sum") == 1
            and _stats(client, failing, "DeadLetterErrors", ["Sum"]).get("Sum") == 1
            and _stats(client, succeeding, "DestinationDeliveryFailures", ["Sum"]).get("Sum") == 1
        ),
        timeout=30,
        message="the events to be settled",
    )
    failures = _stats(client, failing, "DestinationDeliveryFailures", ["Sum"])
    assert failures["Sum"] == 1 and failures["Unit"] == "Count"
    assert _stats(client, failing, "DeadLetterErrors", ["Sum"])["Unit"] == "Count"
    assert _stats(client, failing, "AsyncEventsDropped", ["Sum"])["Sum"] == 1
    for name in (succeeding, delivered):
        assert _stats(client, name, "AsyncEventsDropped", ["Sum"]) == {}
    assert _stats(client, delivered, "DestinationDeliveryFailures", ["Sum"]) == {}
    assert _stats(client, succeeding, "DeadLetterErrors", ["Sum"]) == {}
    # The record delivered is an asynchronous invoke of its target.
    assert _stats(client, sink, "AsyncEventsReceived", ["Sum"])["Sum"] == 1
    for name in (failing, succeeding, delivered):
        assert _stats(client, name, "AsyncEventsReceived", ["Sum"])["Sum"] == 1
        assert _stats(client, name, "AsyncEventAge", ["SampleCount"])["SampleCount"] == 1


def test_async_event_age_counts_invocations_not_throttled_attempts(
    server: Server, functions: Functions
) -> None:
    """An event throttled while a synchronous invocation holds the function's one slot runs
    after it: one AsyncEventAge sample, as old as the wait, however often it was throttled
    meanwhile."""
    name = functions.create(CODE, Timeout=10)["FunctionName"]
    lam = server.client()
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(lam.invoke, FunctionName=name, Payload=b'{"sleep": 3}')
        time.sleep(1.0)  # started (cold starts take milliseconds)
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
        assert "FunctionError" not in held.result()
    client = cloudwatch(server)
    wait_for(
        lambda: _stats(client, name, "Invocations", ["Sum"]).get("Sum") == 2,
        timeout=30,
        message="the event to run",
    )
    age = _stats(client, name, "AsyncEventAge", ["SampleCount", "Minimum"])
    assert age["SampleCount"] == 1 and age["Unit"] == "Milliseconds"
    assert 1500 <= age["Minimum"] < 30_000
    assert _stats(client, name, "AsyncEventsDropped", ["Sum"]) == {}


FAILING = """
def handler(event, context):
    raise ValueError("every batch fails")
"""


def test_a_stream_mappings_failed_destination_deliveries(
    server: Server, functions: Functions, request: pytest.FixtureRequest
) -> None:
    """A stream mapping whose OnFailure function was deleted: each attempt to deliver the
    failure record counts in DestinationDeliveryFailures (the batch waits meanwhile)."""
    role: str = request.getfixturevalue("reader_role")
    key: str = request.getfixturevalue("redis_key")
    fn = functions.create(FAILING, Role=role)["FunctionName"]
    sink = functions.create(CODE)["FunctionName"]
    lam = server.client()
    with redis.Redis.from_url(REDIS_URL) as r, broker(server, REDIS_URL) as broker_arn:
        created = lam.create_event_source_mapping(
            FunctionName=fn,
            EventSourceArn=f"{broker_arn}:stream/{key}",
            StartingPosition="TRIM_HORIZON",
            BatchSize=1,
            MaximumRetryAttempts=0,
            DestinationConfig={"OnFailure": {"Destination": _arn(lam, sink)}},
        )
        lam.delete_function(FunctionName=sink)
        r.xadd(key, {"data": "one"})
        client = cloudwatch(server)
        failures = wait_for(
            lambda: _stats(client, fn, "DestinationDeliveryFailures", ["Sum"]),
            timeout=60,
            message="DestinationDeliveryFailures",
        )
        assert failures["Sum"] >= 1 and failures["Unit"] == "Count"
        assert _stats(client, fn, "Errors", ["Sum"])["Sum"] >= 1
        delete_mapping(lam, created["UUID"])


@pytest.mark.parametrize("protocol", [None, "json", "query"])
def test_authorization_in_every_protocol(
    server: Server, tmp_path: Path, protocol: str | None
) -> None:
    """Each operation is `cloudwatch:<Operation>`; a denial and an unsigned request are
    answered in the caller's protocol."""
    key = new_key(
        server,
        tmp_path,
        {"Effect": "Allow", "Action": "cloudwatch:ListMetrics", "Resource": "*"},
    )
    user = cloudwatch(server, protocol, key)
    assert isinstance(user.list_metrics(Namespace="AWS/Lambda")["Metrics"], list)
    with pytest.raises(ClientError) as e:
        user.describe_alarms()
    assert e.value.response["Error"]["Code"] == "AccessDenied", protocol
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "cloudwatch:DescribeAlarms" in e.value.response["Error"]["Message"]
    anonymous = cloudwatch(server, protocol, signature_version=UNSIGNED)
    with pytest.raises(ClientError) as e:
        anonymous.list_metrics()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, protocol
    assert e.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"


def _raw(server: Server, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A request signed for `monitoring` as the admin, sent as it is."""
    aws = AWSRequest(method="POST", url=server.endpoint + path, data=body, headers=headers)
    SigV4Auth(Credentials("test", "test"), "monitoring", "us-east-1").add_auth(aws)
    return httpx.post(server.endpoint + path, content=body, headers=dict(aws.headers), timeout=20)


_CBOR_HEADERS = {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
_JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0"}
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_BAD_MEMBERS: list[dict[str, Any]] = [
    {"Namespace": 5, "MetricName": [], "Period": "x", "StartTime": "x", "EndTime": {}},
    {"Namespace": "AWS/Lambda", "MetricName": "Errors", "Dimensions": 5, "Period": 60},
    {"Dimensions": [5, {"Name": 1}], "Statistics": "Sum", "ExtendedStatistics": 7},
    {"MetricDataQueries": [5, {"Id": 1}], "StartTime": 1e300, "EndTime": -1},
    {"MetricDataQueries": [{"Id": "a", "MetricStat": {"Metric": 5, "Period": 1.5}}]},
    {"AlarmName": ["x"], "Threshold": "NaN", "EvaluationPeriods": True, "AlarmActions": "x"},
    {"AlarmNames": "x", "MaxRecords": 10**20, "NextToken": 5, "StateValue": []},
]


def test_malformed_requests_get_400_in_each_protocol(server: Server) -> None:
    """No body, however wrong, makes the server fail: every error is a 4xx the caller's
    protocol parses."""
    ops = [
        "GetMetricStatistics",
        "GetMetricData",
        "ListMetrics",
        "PutMetricAlarm",
        "DescribeAlarms",
        "DeleteAlarms",
        "SetAlarmState",
        "DescribeAlarmHistory",
    ]
    for op in ops:
        cbor_path = f"/service/GraniteServiceVersion20100801/operation/{op}"
        json_headers = {**_JSON_HEADERS, "X-Amz-Target": f"GraniteServiceVersion20100801.{op}"}
        sent = [
            (cbor_path, b"\xff\x00garbage", _CBOR_HEADERS),
            (cbor_path, cbor2.dumps([1, 2]), _CBOR_HEADERS),
            ("/", b"[1,2", json_headers),
            ("/", b"[]", json_headers),
            ("/", f"Action={op}&Version=2010-08-01&Period=x&StartTime=yesterday".encode(), _FORM),
            ("/", f"Action={op}&Dimensions.member.1.Name=a&Threshold=1e999".encode(), _FORM),
        ]
        for members in _BAD_MEMBERS:
            sent.append((cbor_path, cbor2.dumps(members), _CBOR_HEADERS))
            sent.append(("/", json.dumps(members).encode(), json_headers))
        for path, body, headers in sent:
            resp = _raw(server, path, body, headers)
            # (members an operation does not have are ignored: then it may well succeed)
            assert resp.status_code < 500, (op, body, resp.status_code, resp.content)
            if resp.status_code < 400:
                continue
            if path != "/" or "X-Amz-Target" in headers:
                decoded = cbor2.loads(resp.content) if path != "/" else json.loads(resp.content)
                assert decoded["__type"], decoded
            else:
                assert b"<Code>" in resp.content, resp.content
    unknown = _raw(server, "/", b"Action=PutDashboard&Version=2010-08-01", _FORM)
    assert unknown.status_code == 400 and b"<Code>InvalidAction</Code>" in unknown.content
    big = _raw(server, "/", b"Action=ListMetrics&x=" + b"a" * (1024 * 1024 + 1), _FORM)
    assert big.status_code == 413


def test_data_survives_a_restart(own_server: Any, tmp_path: Path) -> None:
    srv = own_server(tmp_path / "data")
    lam = srv.client()
    f = Functions(lam)
    name = f.create(CODE)["FunctionName"]
    for _ in range(3):
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert srv.stop() == 0
    srv = own_server(tmp_path / "data")
    point = _stats(cloudwatch(srv), name, "Invocations", ["Sum"])
    assert point["Sum"] == 3


# -- alarms ----------------------------------------------------------------------------------

RECORDER = """
import json, time
def handler(event, context):
    print("SEEN " + json.dumps({"event": event, "t": time.time()}))
    return "ok"
"""
ACCOUNT = "000000000000"


def _allow_alarms(lam: Any, name: str, alarm: str) -> None:
    lam.add_permission(
        FunctionName=name,
        StatementId="AlarmAction",
        Action="lambda:InvokeFunction",
        Principal="lambda.alarms.cloudwatch.amazonaws.com",
        SourceAccount=ACCOUNT,
        SourceArn=f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{alarm}",
    )


@pytest.fixture
def alarm_server(own_server: Any, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("LAMINA_TEST_ALARM_INTERVAL_S", "1")
    srv: Server = own_server()
    return srv


def test_an_alarm_on_errors_invokes_its_function(alarm_server: Server) -> None:
    srv = alarm_server
    lam = srv.client()
    f = Functions(lam)
    failing = f.create(CODE)["FunctionName"]
    sink = f.create(RECORDER)["FunctionName"]
    sink_arn = lam.get_function(FunctionName=sink)["Configuration"]["FunctionArn"]
    _allow_alarms(lam, sink, "errors-alarm")
    cw = cloudwatch(srv)
    cw.put_metric_alarm(
        AlarmName="errors-alarm",
        AlarmDescription="errors of the failing function",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": failing}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
        AlarmActions=[sink_arn],
        OKActions=[sink_arn],
    )
    alarm = cw.describe_alarms(AlarmNames=["errors-alarm"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:errors-alarm"
    # Successes only: the alarm goes to OK (and its OK action runs).
    lam.invoke(FunctionName=failing, Payload=b"{}")
    wait_for(
        lambda: cw.describe_alarms(StateValue="OK")["MetricAlarms"], message="the alarm to be OK"
    )
    # An error: ALARM, and the function gets CloudWatch's alarm action event. (Not in a
    # minute's last seconds: the error's period must still be the newest one evaluated.)
    while time.time() % 60 > 55:
        time.sleep(0.5)
    lam.invoke(FunctionName=failing, Payload=json.dumps({"fail": True}).encode())
    records = wait_seen(srv, sink, 2, timeout=30)
    first, second = (r["event"] for r in records[:2])
    assert first["alarmData"]["state"]["value"] == "OK"
    event = second
    assert event["source"] == "aws.cloudwatch"
    assert event["alarmArn"] == alarm["AlarmArn"]
    assert event["accountId"] == ACCOUNT and event["region"] == "us-east-1"
    data = event["alarmData"]
    assert data["alarmName"] == "errors-alarm"
    assert data["state"]["value"] == "ALARM"
    assert data["state"]["reason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints")
    reason_data = json.loads(data["state"]["reasonData"])
    assert reason_data["recentDatapoints"] == [1.0] and reason_data["threshold"] == 1.0
    assert data["previousState"]["value"] == "OK"
    assert data["configuration"]["description"] == "errors of the failing function"
    stat = data["configuration"]["metrics"][0]["metricStat"]
    assert stat == {
        "metric": {
            "namespace": "AWS/Lambda",
            "name": "Errors",
            "dimensions": {"FunctionName": failing},
        },
        "period": 60,
        "stat": "Sum",
    }
    assert datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%f%z")
    history = cw.describe_alarm_history(AlarmName="errors-alarm")["AlarmHistoryItems"]
    kinds = [(h["HistoryItemType"], h["HistorySummary"]) for h in reversed(history)]
    assert kinds[0] == ("ConfigurationUpdate", 'Alarm "errors-alarm" created')
    updates = [s for k, s in kinds if k == "StateUpdate"]
    assert updates[:2] == [
        "Alarm updated from INSUFFICIENT_DATA to OK",
        "Alarm updated from OK to ALARM",
    ]
    assert any(k == "Action" and s.startswith("Successfully executed action") for k, s in kinds)


def test_set_alarm_state_describe_and_delete(alarm_server: Server) -> None:
    srv = alarm_server
    lam = srv.client()
    f = Functions(lam)
    sink = f.create(RECORDER)["FunctionName"]
    sink_arn = lam.get_function(FunctionName=sink)["Configuration"]["FunctionArn"]
    _allow_alarms(lam, sink, "manual")
    for protocol in (None, "json", "query"):
        cw = cloudwatch(srv, protocol)
        common = {
            "Namespace": "AWS/Lambda",
            "MetricName": "Throttles",
            "Statistic": "Sum",
            "Period": 300,
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "Threshold": 5.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "ignore",  # no throttles: its state stays as set
        }
        cw.put_metric_alarm(AlarmName="manual", AlarmActions=[sink_arn], **common)
        cw.put_metric_alarm(AlarmName="other-1", **common)
        cw.put_metric_alarm(AlarmName="other-2", **common)
        page = cw.describe_alarms(AlarmNamePrefix="other-", MaxRecords=1)
        assert [a["AlarmName"] for a in page["MetricAlarms"]] == ["other-1"], protocol
        rest = cw.describe_alarms(AlarmNamePrefix="other-", NextToken=page["NextToken"])
        assert [a["AlarmName"] for a in rest["MetricAlarms"]] == ["other-2"]
        assert rest["MetricAlarms"][0]["DatapointsToAlarm"] == 2
        cw.set_alarm_state(
            AlarmName="manual", StateValue="ALARM", StateReason="testing", StateReasonData="{}"
        )
        got = cw.describe_alarms(AlarmNames=["manual"])["MetricAlarms"][0]
        assert (got["StateValue"], got["StateReason"]) == ("ALARM", "testing"), protocol
        with pytest.raises(ClientError) as e:
            cw.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x")
        assert e.value.response["Error"]["Code"] == "ResourceNotFound", protocol
        with pytest.raises(ClientError) as e:
            cw.put_metric_alarm(AlarmName="bad", **{**common, "ComparisonOperator": "Sideways"})
        assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
        with pytest.raises(ClientError) as e:
            cw.put_metric_alarm(
                AlarmName="bad", **common, AlarmActions=["arn:aws:sns:us-east-1:000000000000:t"]
            )
        assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
        with pytest.raises(ClientError) as e:
            cw.put_metric_alarm(AlarmName="bad", **{**common, "DatapointsToAlarm": 4})
        assert e.value.response["Error"]["Code"] == "InvalidParameterCombination"
        cw.delete_alarms(AlarmNames=["manual", "other-1", "other-2"])
        assert cw.describe_alarms()["MetricAlarms"] == []
        with pytest.raises(ClientError) as e:
            cw.delete_alarms(AlarmNames=["manual"])
        assert e.value.response["Error"]["Code"] == "ResourceNotFound"
    events = [r["event"] for r in wait_seen(srv, sink, 3)]
    assert {e["alarmData"]["state"]["reason"] for e in events} == {"testing"}
    assert all(e["alarmData"]["previousState"]["value"] == "INSUFFICIENT_DATA" for e in events)
