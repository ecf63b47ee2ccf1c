"""RabbitMQ event-source mappings end to end, beyond `test_event_sources.py` (fed, failed
batches, filters, roles): a broker added with `lamina brokers add` whose URL names the
virtual host, a queue that does not exist, an outage of the broker reported as `PROBLEM:` and
survived, and a `kill -9` of the server during a 10,000-message run losing nothing.

The function appends what it got to a file on the host, so these servers run the `process`
backend (a namespace sandbox cannot write host files, by design); the poller under test is the
same on every backend.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._rabbit import HOST, PORT, count, declare, private_vhost, publish, vhost_url
from tests._tcp_proxy import TcpProxy
from tests.conftest import SIGNED_HTTP, Server, lamina_env, wait_for
from tests.integration._mappings import (
    create_recorder,
    delete_mapping,
    put_role,
    recorded,
    wait_recorded,
    wait_result,
    wait_state,
)

from lamina.runtimes.images import SdkState

pytestmark = pytest.mark.control_plane

ROLE_NAME = "rmq-reader"
ROLE_ARN = f"arn:aws:iam::000000000000:role/{ROLE_NAME}"
#: what a RabbitMQ mapping's execution role needs (as AWS asks `mq:DescribeBroker` of it)
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "mq:DescribeBroker", "Resource": "*"}],
}

RECORDER = """
import base64, json, os

def handler(event, context):
    lines, fail = [], False
    for key, messages in event["rmqMessagesByQueue"].items():
        for m in messages:
            data = base64.b64decode(m["data"]).decode()
            fail = fail or (data.startswith("fail") and not m["redelivered"])
            lines.append(json.dumps({
                "source": event["eventSource"], "arn": event["eventSourceArn"], "key": key,
                "data": data, "redelivered": m["redelivered"], "props": m["basicProperties"],
                "batch": len(messages),
            }))
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
    finally:
        os.close(fd)
    if fail:
        raise RuntimeError("failing the batch once")
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def start_server(data_dir: Path, *args: str) -> Server:
    return Server(data_dir=data_dir, extra_args=("--sandbox", "process", *args)).start(60)


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    with private_vhost("lamina-itest") as name:
        yield name


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, SdkState]) -> Any:
    server = start_server(tmp_path_factory.mktemp("rmq") / "data")
    put_role(server, ROLE_NAME, POLICY)
    yield server
    assert server.stop() == 0, server.log()


def register_broker(server: Server, url: str) -> str:
    name = f"rmq-{uuid.uuid4().hex[:8]}"
    resp = SIGNED_HTTP.put(f"{server.endpoint}/lamina/brokers/{name}", json={"Url": url})
    assert resp.status_code == 200, resp.text
    arn: str = resp.json()["Broker"]["Arn"]
    assert arn.startswith("arn:aws:mq:us-east-1:000000000000:broker:" + name + ":b-")
    return arn


def make_function(lam: Any, record: Path) -> str:
    return create_recorder(
        lam, RECORDER, prefix="rmq-", role=ROLE_ARN, variables={"RECORD": str(record)}
    )


def wait_drained(vhost: str, queue: str, timeout: float = 30.0) -> None:
    wait_for(lambda: run(count(vhost, queue)) == 0, timeout, f"queue {queue} drained")


def create_mapping(lam: Any, function: str, arn: str, queue: str, vhost: str, **kw: Any) -> str:
    m = lam.create_event_source_mapping(
        FunctionName=function,
        EventSourceArn=arn,
        Queues=[queue],
        SourceAccessConfigurations=[{"Type": "VIRTUAL_HOST", "URI": vhost}],
        **kw,
    )
    wait_state(lam, m["UUID"], "Enabled")
    return str(m["UUID"])


def test_broker_added_with_the_cli_and_its_urls_vhost(
    srv: Server, vhost: str, tmp_path: Path
) -> None:
    lam = srv.client()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    run(declare(vhost, queue))
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    # registered with the CLI, as a user would
    name = f"rmq-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "brokers", "add", name, vhost_url(vhost)],
        env=lamina_env(srv.endpoint),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "guest:guest" not in out.stdout  # the password is never shown
    arn = next(
        b["Arn"]
        for b in SIGNED_HTTP.get(f"{srv.endpoint}/lamina/brokers").json()["Brokers"]
        if b["Name"] == name
    )
    sent = [f"m{i}" for i in range(30)]
    run(publish(vhost, queue, [s.encode() for s in sent], content_type="text/plain"))
    # no VIRTUAL_HOST: the vhost of the broker's registered URL
    m = lam.create_event_source_mapping(
        FunctionName=function, EventSourceArn=arn, Queues=[queue], BatchSize=10
    )
    uuid_ = m["UUID"]
    assert m["BatchSize"] == 10 and m["Queues"] == [queue]
    wait_state(lam, uuid_, "Enabled")
    got = wait_recorded(record, 30)
    assert sorted(r["data"] for r in got) == sorted(sent)
    first = got[0]
    assert first["source"] == "aws:rmq" and first["arn"] == arn
    assert first["key"] == f"{queue}::{vhost}"
    assert first["props"]["contentType"] == "text/plain"
    assert first["props"]["bodySize"] == len(first["data"])
    assert all(r["batch"] <= 10 for r in got)
    assert not any(r["redelivered"] for r in got)
    wait_result(lam, uuid_, "OK")
    delete_mapping(lam, uuid_)
    # Acknowledged, not just delivered: with the consumer gone nothing comes back.
    assert run(count(vhost, queue)) == 0
    time.sleep(0.5)
    assert len(recorded(record)) == 30


def test_unreachable_broker_is_a_problem_then_resumes(
    srv: Server, vhost: str, tmp_path: Path
) -> None:
    lam = srv.client()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    run(declare(vhost, queue))
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    with TcpProxy(HOST, PORT) as proxy:
        arn = register_broker(srv, vhost_url(vhost, f"amqp://guest:guest@127.0.0.1:{proxy.port}/"))
        uuid_ = create_mapping(lam, function, arn, queue, vhost, BatchSize=10)
        run(publish(vhost, queue, [b"before"]))
        wait_recorded(record, 1)
        proxy.stop()  # the broker goes away
        result = wait_result(lam, uuid_, "PROBLEM:")
        assert f"127.0.0.1:{proxy.port}" in result
        assert "guest:guest" not in result
        run(publish(vhost, queue, [b"during-1", b"during-2"]))
        time.sleep(1.0)
        assert len(recorded(record)) == 1
        assert lam.get_event_source_mapping(UUID=uuid_)["State"] == "Enabled"
        proxy.start()  # back: the mapping resumes by itself
        every = {"before", "during-1", "during-2"}

        def all_seen() -> list[dict[str, Any]] | None:
            got = recorded(record)
            return got if {r["data"] for r in got} >= every else None

        got = wait_for(all_seen, 60, "every message after the broker came back")
        assert {r["data"] for r in got} == every
        # Delivery is at least once: the broker cut right after `before` ran may have lost
        # its ack, and then delivers it again; the messages sent while it was away run once.
        assert sorted(r["data"] for r in got if r["data"] != "before") == ["during-1", "during-2"]
        wait_result(lam, uuid_, "OK")
        delete_mapping(lam, uuid_)
    assert run(count(vhost, queue)) == 0


def test_missing_queue_is_a_problem(srv: Server, vhost: str, tmp_path: Path) -> None:
    lam = srv.client()
    function = make_function(lam, tmp_path / "record.jsonl")
    arn = register_broker(srv, vhost_url(vhost))
    m = lam.create_event_source_mapping(
        FunctionName=function,
        EventSourceArn=arn,
        Queues=["no-such-queue"],
        SourceAccessConfigurations=[{"Type": "VIRTUAL_HOST", "URI": vhost}],
    )
    result = wait_result(lam, m["UUID"], "PROBLEM:")
    assert result == f"PROBLEM: queue no-such-queue does not exist in virtual host {vhost}"
    delete_mapping(lam, m["UUID"])


def test_wrong_password_is_a_problem_until_a_basic_auth_secret_logs_in(
    srv: Server, vhost: str, tmp_path: Path
) -> None:
    lam = srv.client()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    run(declare(vhost, queue))
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    arn = register_broker(srv, vhost_url(vhost, f"amqp://guest:wr0ng-pa55@{HOST}:{PORT}/"))
    m = lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, Queues=[queue])
    result = wait_result(lam, m["UUID"], "PROBLEM:")
    assert result == "PROBLEM: authentication failed for user guest"
    # BASIC_AUTH names a secret with the right password (Lamina's stand-in for Secrets Manager)
    resp = SIGNED_HTTP.put(
        f"{srv.endpoint}/lamina/secrets/rmq-{uuid.uuid4().hex[:8]}",
        json={"Username": "guest", "Password": "guest"},
    )
    assert resp.status_code == 200, resp.text
    secret = resp.json()["Secret"]["Arn"]
    lam.update_event_source_mapping(
        UUID=m["UUID"],
        SourceAccessConfigurations=[
            {"Type": "BASIC_AUTH", "URI": secret},
            {"Type": "VIRTUAL_HOST", "URI": vhost},
        ],
    )
    run(publish(vhost, queue, [b"let-in"]))
    assert [r["data"] for r in wait_recorded(record, 1)] == ["let-in"]
    wait_result(lam, m["UUID"], "OK")
    delete_mapping(lam, m["UUID"])
    assert "wr0ng-pa55" not in srv.log()


MESSAGES = 10_000


def test_kill_9_during_a_run_loses_nothing(
    tmp_path: Path, vhost: str, runtime_images: dict[str, SdkState]
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    run(declare(vhost, queue))
    ids = [f"id-{i:05d}" for i in range(MESSAGES)]
    run(publish(vhost, queue, [i.encode() for i in ids]))
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    try:
        put_role(first, ROLE_NAME, POLICY)
        lam = first.client()
        record = tmp_path / "record.jsonl"
        function = make_function(lam, record)
        arn = register_broker(first, vhost_url(vhost))
        create_mapping(lam, function, arn, queue, vhost, BatchSize=100)
        wait_recorded(record, 1500, timeout=120)  # well into the run
    finally:
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    seen_at_kill = len(recorded(record))
    assert seen_at_kill < MESSAGES, "the run ended before the kill: nothing was tested"
    second = Server(data_dir=data_dir, port=first.port, extra_args=first.extra_args).start(60)
    try:

        def all_seen() -> bool:
            return len({r["data"] for r in recorded(record)}) >= MESSAGES

        wait_for(all_seen, 180, f"all {MESSAGES} messages seen")
        wait_drained(vhost, queue, timeout=60)
    finally:
        assert second.stop() == 0, second.log()
    got = recorded(record)
    distinct = collections.Counter(r["data"] for r in got)
    assert set(distinct) == set(ids)  # none lost
    # What came twice was in flight at the kill, and the broker said so the second time.
    firsts: set[str] = set()
    for r in got:
        if r["data"] in firsts:
            assert r["redelivered"], r
        firsts.add(r["data"])
    assert run(count(vhost, queue)) == 0
