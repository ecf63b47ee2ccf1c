"""Stream event-source mappings end to end, through boto3: a NATS JetStream stream and a Redis
stream, each on a broker registered with the server, feed a Kinesis-written function; a
partial batch failure, bisected and retried, ends with the one bad record at the on-failure
destination (a function) as Lambda's stream failure record; checkpoints are in the brokers,
and deleting the mapping removes its consumer or group; a `kill -9` of the server mid-run
loses nothing and resumes in order. Needs NATS (127.0.0.1:4222) and Redis
(127.0.0.1:6379); each test uses a stream of its own and removes it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import redis
from tests._tcp_proxy import TcpProxy
from tests.conftest import SIGNED_HTTP, Functions, Server, seen, wait_for, wait_seen
from tests.integration._mappings import delete_mapping, wait_state

from lamina.runtimes.images import SdkState

pytestmark = pytest.mark.control_plane

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"

#: a handler written for Kinesis: it fails the records whose data starts with "bad"
KINESIS_HANDLER = """
import base64, json, time
def handler(event, context):
    failed = []
    for r in event["Records"]:
        k = r["kinesis"]
        data = base64.b64decode(k["data"]).decode()
        print("SEEN " + json.dumps({
            "t": time.time(), "data": data, "seq": k["sequenceNumber"],
            "key": k["partitionKey"], "arrived": k["approximateArrivalTimestamp"],
            "source": r["eventSource"], "arn": r["eventSourceARN"], "id": r["eventID"],
            "name": r["eventName"], "identity": r.get("invokeIdentityArn"),
            "region": r["awsRegion"],
        }))
        if data.startswith("bad"):
            failed.append({"itemIdentifier": k["sequenceNumber"]})
    return {"batchItemFailures": failed}
"""

#: an on-failure destination: prints the failure record it is invoked with
DESTINATION = """
import json, time
def handler(event, context):
    print("SEEN " + json.dumps({"t": time.time(), "record": event}))
"""


@pytest.fixture
def reader_role(server: Server) -> str:
    """An execution role that may read NATS and Redis streams."""
    name = f"stream-reader-{uuid.uuid4().hex[:8]}"
    statements = [
        {"Effect": "Allow", "Action": ["nats:ReadStream", "redis:ReadStream"], "Resource": "*"}
    ]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{name}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    return f"arn:aws:iam::000000000000:role/{name}"


@contextlib.contextmanager
def broker(server: Server, url: str) -> Iterator[str]:
    """A broker registered with the server: its ARN."""
    name = f"b{uuid.uuid4().hex[:10]}"
    endpoint = f"{server.endpoint}/lamina/brokers/{name}"
    resp = SIGNED_HTTP.put(endpoint, json={"Url": url})
    assert resp.status_code == 200, resp.text
    arn: str = resp.json()["Broker"]["Arn"]
    try:
        yield arn
    finally:
        SIGNED_HTTP.delete(endpoint)


@pytest.fixture
def nats_stream() -> Iterator[str]:
    name = "it" + uuid.uuid4().hex[:12]

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
        await nc.close()

    async def delete() -> None:
        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(create())
    yield name
    asyncio.run(delete())


def publish(stream: str, *items: tuple[str, str]) -> None:
    async def send() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for subject, data in items:
            await js.publish(f"{stream}.{subject}", data.encode())
        await nc.close()

    asyncio.run(send())


def nats_consumer(stream: str, name: str) -> Any:
    """The consumer's info, or None if it does not exist."""

    async def info() -> Any:
        nc = await nats.connect(NATS_URL)
        try:
            return await nc.jetstream().consumer_info(stream, name)
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(info())


@pytest.fixture
def redis_key() -> Iterator[str]:
    key = "lamina-it-" + uuid.uuid4().hex
    yield key
    with redis.Redis.from_url(REDIS_URL) as r:
        r.delete(key)


def test_a_nats_stream_feeds_a_kinesis_function_and_the_bad_record_reaches_the_destination(
    server: Server, lam: Any, functions: Functions, reader_role: str, nats_stream: str
) -> None:
    fn = functions.create(KINESIS_HANDLER, Role=reader_role)
    dest = functions.create(DESTINATION, Role=reader_role)
    publish(nats_stream, ("eu", "a"), ("us", "b"), ("eu", "bad"), ("us", "c"))
    with broker(server, NATS_URL) as broker_arn:
        source_arn = f"{broker_arn}:stream/{nats_stream}"
        created = lam.create_event_source_mapping(
            FunctionName=fn["FunctionName"],
            EventSourceArn=source_arn,
            StartingPosition="TRIM_HORIZON",
            BatchSize=10,
            FunctionResponseTypes=["ReportBatchItemFailures"],
            BisectBatchOnFunctionError=True,
            MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": dest["FunctionArn"]}},
        )
        uuid_ = created["UUID"]
        wait_state(lam, uuid_, "Enabled")

        [failure] = wait_seen(server, dest["FunctionName"], 1, timeout=60)
        record = failure["record"]
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert record["requestContext"]["functionArn"] == fn["FunctionArn"]
        assert record["responseContext"]["statusCode"] == 200
        assert record["version"] == "1.0"
        info = record["NatsStreamBatchInfo"]
        assert info["shardId"] == "shardId-000000000000"
        assert (info["startSequenceNumber"], info["endSequenceNumber"]) == ("3", "3")
        assert info["batchSize"] == 1
        assert info["streamArn"] == source_arn

        # everything is checkpointed: the consumer's ack floor is the last record
        name = f"lamina-{uuid_}"
        wait_for(
            lambda: (c := nats_consumer(nats_stream, name)) and c.ack_floor.stream_seq == 4,
            timeout=30,
            message="the consumer's ack floor at 4",
        )
        got = seen(server, fn["FunctionName"])
        assert [g["data"] for g in got[:4]] == ["a", "b", "bad", "c"]
        assert got[-1]["data"] == "c"  # delivered after the bad one was set aside
        assert "a" not in [g["data"] for g in got[4:]]  # checkpointed, never again
        first = got[0]
        assert first["source"] == "lamina:nats"
        assert first["name"] == "lamina:nats:record"
        assert first["key"] == f"{nats_stream}.eu"
        assert first["seq"] == "1"
        assert first["id"] == "shardId-000000000000:1"
        assert first["arn"] == source_arn
        assert first["identity"] == reader_role
        assert first["region"] == "us-east-1"
        mapping = lam.get_event_source_mapping(UUID=uuid_)
        assert mapping["LastProcessingResult"] == "OK"

        delete_mapping(lam, uuid_)
        assert nats_consumer(nats_stream, name) is None  # its checkpoint went with it


def test_a_redis_stream_feeds_a_function_in_order_and_resumes_after_a_disable(
    server: Server, lam: Any, functions: Functions, reader_role: str, redis_key: str
) -> None:
    fn = functions.create(KINESIS_HANDLER, Role=reader_role)
    with redis.Redis.from_url(REDIS_URL) as r, broker(server, REDIS_URL) as broker_arn:
        first_id = r.xadd(redis_key, {"data": "one", "partitionKey": "k1"}).decode()
        r.xadd(redis_key, {"temperature": "21"})
        source_arn = f"{broker_arn}:stream/{redis_key}"
        created = lam.create_event_source_mapping(
            FunctionName=fn["FunctionName"],
            EventSourceArn=source_arn,
            StartingPosition="TRIM_HORIZON",
            BatchSize=1,
        )
        uuid_ = created["UUID"]
        wait_state(lam, uuid_, "Enabled")
        got = wait_seen(server, fn["FunctionName"], 2, timeout=60)
        assert [g["data"] for g in got] == ["one", '{"temperature":"21"}']
        assert got[0]["key"] == "k1"
        assert got[0]["seq"] == first_id
        assert got[0]["source"] == "lamina:redis"
        assert got[0]["arrived"] == int(first_id.split("-")[0]) / 1000
        group = f"lamina-{uuid_}"
        wait_for(
            lambda: r.xpending(redis_key, group)["pending"] == 0,
            timeout=30,
            message="every entry acknowledged",
        )

        # disabled, the mapping keeps its place; enabled again, it reads only what is new
        lam.update_event_source_mapping(UUID=uuid_, Enabled=False)
        wait_state(lam, uuid_, "Disabled")
        r.xadd(redis_key, {"data": "three"})
        lam.update_event_source_mapping(UUID=uuid_, Enabled=True)
        wait_state(lam, uuid_, "Enabled")
        got = wait_seen(server, fn["FunctionName"], 3, timeout=60)
        assert [g["data"] for g in got] == ["one", '{"temperature":"21"}', "three"]

        delete_mapping(lam, uuid_)
        assert r.xinfo_groups(redis_key) == []  # the group went with the mapping


@pytest.mark.parametrize("kind", ["nats", "redis"])
def test_a_broker_outage_is_reported_then_survived(
    server: Server,
    lam: Any,
    functions: Functions,
    reader_role: str,
    nats_stream: str,
    redis_key: str,
    kind: str,
) -> None:
    """The broker goes away (a proxy in front of the shared one is cut): the mapping says
    `PROBLEM: ...`, stays Enabled, and once the broker is back it goes on where it was."""
    fn = functions.create(KINESIS_HANDLER, Role=reader_role)
    port = 4222 if kind == "nats" else 6379
    r = redis.Redis.from_url(REDIS_URL)

    def add(data: str) -> None:
        if kind == "nats":
            publish(nats_stream, ("k", data))
        else:
            r.xadd(redis_key, {"data": data})

    stream = nats_stream if kind == "nats" else redis_key
    try:
        with TcpProxy("127.0.0.1", port) as proxy:
            url = f"{kind}://127.0.0.1:{proxy.port}" + ("/0" if kind == "redis" else "")
            with broker(server, url) as broker_arn:
                created = lam.create_event_source_mapping(
                    FunctionName=fn["FunctionName"],
                    EventSourceArn=f"{broker_arn}:stream/{stream}",
                    StartingPosition="TRIM_HORIZON",
                )
                uuid_ = created["UUID"]
                add("before")
                wait_seen(server, fn["FunctionName"], 1, timeout=60)
                proxy.stop()
                result = wait_for(
                    lambda: (
                        (
                            m := lam.get_event_source_mapping(UUID=uuid_)["LastProcessingResult"]
                        ).startswith("PROBLEM:")
                        and m
                    ),
                    timeout=60,
                    message="a PROBLEM result",
                )
                assert f"127.0.0.1:{proxy.port}" in result, result
                assert lam.get_event_source_mapping(UUID=uuid_)["State"] == "Enabled"
                add("during")
                proxy.start()
                got = wait_seen(server, fn["FunctionName"], 2, timeout=90)
                assert [g["data"] for g in got] == ["before", "during"]
                wait_for(
                    lambda: (
                        lam.get_event_source_mapping(UUID=uuid_)["LastProcessingResult"] == "OK"
                    ),
                    timeout=30,
                    message="an OK result again",
                )
                delete_mapping(lam, uuid_)
    finally:
        r.close()


#: a tumbling-window aggregator: sums the records' data over each window
WINDOW_SUM = """
import base64, json, time
def handler(event, context):
    total = event["state"].get("sum", 0)
    total += sum(int(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"])
    print("SEEN " + json.dumps({
        "t": time.time(), "window": event["window"], "in": event["state"], "sum": total,
        "final": event["isFinalInvokeForWindow"], "early": event["isWindowTerminatedEarly"],
        "shard": event["shardId"], "n": len(event["Records"]),
    }))
    return {"state": {"sum": total}}
"""


def test_a_redis_stream_aggregated_in_tumbling_windows(
    server: Server, lam: Any, functions: Functions, reader_role: str, redis_key: str
) -> None:
    fn = functions.create(WINDOW_SUM, Role=reader_role)
    with redis.Redis.from_url(REDIS_URL) as r, broker(server, REDIS_URL) as broker_arn:
        # entries of two windows long over (ids name their arrival in milliseconds)
        for entry_id, value in (("120000-0", 1), ("121000-0", 2), ("185000-0", 10)):
            r.xadd(redis_key, {"data": str(value)}, id=entry_id)
        created = lam.create_event_source_mapping(
            FunctionName=fn["FunctionName"],
            EventSourceArn=f"{broker_arn}:stream/{redis_key}",
            StartingPosition="TRIM_HORIZON",
            BatchSize=10,
            TumblingWindowInSeconds=60,
        )
        got = wait_seen(server, fn["FunctionName"], 4, timeout=60)
        assert [(g["n"], g["in"], g["final"]) for g in got] == [
            (2, {}, False),
            (0, {"sum": 3}, True),
            (1, {}, False),
            (0, {"sum": 10}, True),
        ]
        assert got[0]["window"] == {"start": "1970-01-01T00:02:00Z", "end": "1970-01-01T00:03:00Z"}
        assert got[2]["window"]["start"] == "1970-01-01T00:03:00Z"
        assert not any(g["early"] for g in got)
        assert got[0]["shard"] == "shardId-000000000000"
        group = f"lamina-{created['UUID']}"
        wait_for(
            lambda: r.xpending(redis_key, group)["pending"] == 0,
            timeout=30,
            message="the windows' records acknowledged after their final invokes",
        )
        delete_mapping(lam, created["UUID"])


#: a Kinesis handler that appends each record's sequence number to a file on the host (the
#: kill -9 test's record must outlive the server)
FILE_RECORDER = """
import base64, os
def handler(event, context):
    lines = "".join(r["kinesis"]["sequenceNumber"] + "\\n" for r in event["Records"])
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, lines.encode())
    finally:
        os.close(fd)
"""
MESSAGES = 5000


def test_kill_9_during_a_nats_run_loses_nothing_and_resumes_in_order(
    tmp_path: Path, nats_stream: str, runtime_images: dict[str, SdkState]
) -> None:
    async def fill() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for i in range(MESSAGES):
            await js.publish(f"{nats_stream}.k{i % 7}", b"%d" % i)
        await nc.close()

    asyncio.run(fill())
    record = tmp_path / "record.txt"

    def recorded() -> list[int]:
        if not record.exists():
            return []
        # Only whole lines: the function may be writing the last one as it is read.
        return [int(line) for line in record.read_text().split("\n")[:-1] if line]

    data_dir = tmp_path / "data"
    # the process backend: the function writes a file of the host
    first = Server(data_dir=data_dir, extra_args=("--sandbox", "process")).start(60)
    try:
        role = "stream-reader"
        statements = [{"Effect": "Allow", "Action": "nats:ReadStream", "Resource": "*"}]
        put = SIGNED_HTTP.put(
            f"{first.endpoint}/lamina/roles/{role}",
            json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
        )
        assert put.status_code in (200, 201), put.text
        lam = first.client()
        fn = Functions(lam).create(
            FILE_RECORDER,
            Role=f"arn:aws:iam::000000000000:role/{role}",
            Environment={"Variables": {"RECORD": str(record)}},
        )
        resp = SIGNED_HTTP.put(f"{first.endpoint}/lamina/brokers/js", json={"Url": NATS_URL})
        assert resp.status_code == 200, resp.text
        lam.create_event_source_mapping(
            FunctionName=fn["FunctionName"],
            EventSourceArn=f"{resp.json()['Broker']['Arn']}:stream/{nats_stream}",
            StartingPosition="TRIM_HORIZON",
            BatchSize=100,
        )
        wait_for(lambda: len(recorded()) >= 1000, 120, "well into the run")
    finally:
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    at_kill = recorded()
    assert len(at_kill) < MESSAGES, "the run ended before the kill: nothing was tested"
    second = Server(data_dir=data_dir, port=first.port, extra_args=first.extra_args).start(60)
    try:
        wait_for(lambda: len(set(recorded())) >= MESSAGES, 180, f"all {MESSAGES} records")
    finally:
        assert second.stop() == 0, second.log()
    got = recorded()
    assert set(got) == set(range(1, MESSAGES + 1))  # none lost
    # in order before the kill; after it, in order again from a checkpoint not past the last
    # record the function finished
    assert at_kill == list(range(1, len(at_kill) + 1))
    after = got[len(at_kill) :]
    assert after[0] <= len(at_kill) + 1
    assert after == list(range(after[0], MESSAGES + 1))
