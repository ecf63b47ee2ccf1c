"""Issue 20's failure tests, through boto3 unchanged against three real `lamina serve --cluster`
nodes: a node killed (`kill -9`) during an async run, during an event-source mapping's run and
while it owns a schedule; a NATS server killed during an async run; a node cut off from NATS
that stops owning its jobs and rejoins cleanly.

The functions record what they were given in a file on the host (so the nodes run the
`process` sandbox): what a killed node finished is on disk, not in its log store. Delivery is
at least once, so the tests allow duplicates of an event; a schedule's tick is one event id
per tick `time`, so a tick fired twice would show as two ids for one time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import queue
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from tests._rabbit import count, declare, private_vhost, publish, vhost_url
from tests._tcp_proxy import TcpProxy
from tests.cluster._engines import NatsCluster, NatsServer, Postgres, nats_cluster
from tests.cluster._nodes import LaminaCluster
from tests.conftest import (
    SIGNED_HTTP,
    Functions,
    Server,
    allow_event_sources,
    wait_for,
)
from tests.integration._mappings import recorded, wait_recorded, wait_state

from lamina.cluster.hashing import owner
from lamina.runtimes.images import SdkState

RECORDER = """
import base64, json, os, time

def handler(event, context):
    if "rmqMessagesByQueue" in event:
        items = [
            {"data": base64.b64decode(m["data"]).decode(), "redelivered": m["redelivered"]}
            for messages in event["rmqMessagesByQueue"].values() for m in messages
        ]
    else:
        items = [event]
    time.sleep(float(os.environ.get("SLOW", "0")))
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(json.dumps(i) + "\\n" for i in items).encode())
    finally:
        os.close(fd)
    return "ok"
"""

#: schedule time runs 60x: rate(1 minute) ticks every real second
CLOCK_RATE = 60
EVENTS = 5_000
MESSAGES = 3_000


def start_nodes(
    lc: LaminaCluster, names: str = "abc", proxied: dict[str, list[str]] | None = None
) -> None:
    """Start the nodes, on the process sandbox, with the test clock at `CLOCK_RATE` from one
    origin (each node keeps its clock's origin in its data directory: the same origin makes
    their schedule times agree, as real clocks do)."""
    origin = repr(time.time())
    for name in names:
        data = lc.base / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "test-clock-origin").write_text(origin)
        lc.node(
            name,
            "--sandbox",
            "process",
            "--test-clock-rate",
            str(CLOCK_RATE),
            nats_urls=(proxied or {}).get(name),
        )


@pytest.fixture
def cluster(
    tmp_path: Path, pg: Postgres, nats3: NatsCluster, runtime_images: dict[str, SdkState]
) -> Iterator[LaminaCluster]:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        start_nodes(lc)
        yield lc
    finally:
        lc.stop()
        lc.print_logs()  # shown by pytest when the test failed


def recorder(server: Server, record: Path, slow: float = 0.0) -> dict[str, Any]:
    env = {"RECORD": str(record), "SLOW": str(slow)}
    return Functions(server.client()).create(RECORDER, Environment={"Variables": env})


def kill(server: Server) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(30)


def live_names(server: Server) -> set[str]:
    nodes = SIGNED_HTTP.get(server.endpoint + "/lamina/nodes").json()["Nodes"]
    return {n["Name"] for n in nodes if n["Healthy"]}


def async_depth(server: Server) -> int:
    return int(SIGNED_HTTP.get(server.endpoint + "/lamina/async").json()["depth"])


class Senders:
    """Threads invoking `function` asynchronously (InvocationType=Event) with `{"id": ...}`,
    each id first through the node it is dealt to, then through the next ones while a node
    does not take it (killed: its callers fail over, as a load balancer's would), round
    after round until one does."""

    def __init__(self, servers: list[Server], function: str, ids: list[str], per_node: int = 3):
        self.servers = servers
        self.function = function
        self.accepted: dict[str, str] = {}
        #: statuses of refused invokes (a 5xx is a bug unless the node was killed)
        self.refused: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._work: list[queue.SimpleQueue[str]] = [queue.SimpleQueue() for _ in servers]
        for i, event_id in enumerate(ids):
            self._work[i % len(servers)].put(event_id)
        #: what went wrong in a sender thread (the test fails with it)
        self.failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._guarded, args=(n,), daemon=True)
            for n in range(len(servers))
            for _ in range(per_node)
        ]

    def start(self) -> Senders:
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not self.failures, self.failures
        assert not any(t.is_alive() for t in self._threads), "the senders did not finish"

    def _guarded(self, n: int) -> None:
        try:
            self._run(n)
        except BaseException as e:
            self.failures.append(e)

    def _run(self, n: int) -> None:
        clients = [s.client(connect_timeout=5) for s in self.servers]
        work = self._work[n]
        while True:
            try:
                event_id = work.get_nowait()
            except queue.Empty:
                return
            # A node refusing while NATS elects a leader (503) is asked again, as an SDK's
            # retries would; no node taking an event for a minute is a failure.
            deadline = time.monotonic() + 60
            while not any(
                self._send(clients[k], self.servers[k], event_id)
                for k in itertools.chain(range(n, len(clients)), range(n))
            ):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no node took event {event_id}: {self.refused[-3:]}")
                time.sleep(0.2)

    def _send(self, client: Any, server: Server, event_id: str) -> bool:
        try:
            resp = client.invoke(
                FunctionName=self.function,
                InvocationType="Event",
                Payload=json.dumps({"id": event_id}),
            )
        except botocore.exceptions.ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            with self._lock:
                self.refused.append((event_id, status, str(e)))
            return False
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError):
            return False
        assert resp["StatusCode"] == 202, resp
        with self._lock:
            self.accepted[event_id] = server.endpoint
        return True


def recorded_ids(record: Path) -> collections.Counter[str]:
    return collections.Counter(str(r["id"]) for r in recorded(record))


def wait_all_recorded(record: Path, ids: list[str], timeout: float) -> collections.Counter[str]:
    wanted = set(ids)

    def done() -> collections.Counter[str] | None:
        got = recorded_ids(record)
        return got if wanted <= got.keys() else None

    try:
        found: collections.Counter[str] = wait_for(done, timeout, f"all {len(ids)} events")
    except AssertionError:
        missing = sorted(wanted - recorded_ids(record).keys())
        raise AssertionError(f"{len(missing)} event(s) never ran, e.g. {missing[:5]}") from None
    return found


def test_a_node_killed_during_an_async_run_loses_nothing(
    cluster: LaminaCluster, tmp_path: Path
) -> None:
    a, b, c = (cluster.nodes[n] for n in "abc")
    record = tmp_path / "record.jsonl"
    name = recorder(a, record, slow=0.01)["FunctionName"]
    ids = [f"e{i:05d}" for i in range(EVENTS)]
    senders = Senders([a, b, c], name, ids).start()
    # Well into the run, with events of b's still queued there: they must be adopted.
    wait_for(lambda: len(recorded(record)) >= EVENTS // 5, 120, "a fifth of the events run")
    wait_for(lambda: async_depth(b) > 0, 30, "events queued on b")
    kill(b)
    senders.join(180)
    assert len(recorded_ids(record)) < EVENTS, "the run ended before the kill: nothing tested"
    got = wait_all_recorded(record, ids, 60 + 4 * cluster.ttl_s)
    assert set(got) == set(ids)
    assert all(status != 500 for _, status, _ in senders.refused), senders.refused[:5]
    assert set(senders.accepted) == set(ids)


# -- a NATS server killed --------------------------------------------------------------------


def _jsz(server: NatsServer) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port + 10000}/jsz?accounts=true&streams=true"
    with urllib.request.urlopen(url, timeout=2) as r:
        found: dict[str, Any] = json.load(r)
    return found


def stream_leader(nats: NatsCluster, stream: str) -> NatsServer | None:
    """The server leading `stream` (as the monitoring port of a live server says), if any."""
    by_name = {s.name: s for s in nats.servers}
    for server in nats.servers:
        if server.proc is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            for account in _jsz(server).get("account_details", []):
                for detail in account.get("stream_detail", []) or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader in by_name:
                        return by_name[leader]
    return None


def test_a_nats_server_killed_during_an_async_run_loses_nothing(
    cluster: LaminaCluster, nats3: NatsCluster, tmp_path: Path
) -> None:
    a, b, c = (cluster.nodes[n] for n in "abc")
    record = tmp_path / "record.jsonl"
    name = recorder(a, record, slow=0.01)["FunctionName"]
    ids = [f"e{i:05d}" for i in range(EVENTS)]
    leader = wait_for(
        lambda: stream_leader(nats3, f"KV_{cluster.name}_async"), 30, "the async bucket's leader"
    )
    senders = Senders([a, b, c], name, ids).start()
    wait_for(lambda: len(recorded(record)) >= EVENTS // 5, 120, "a fifth of the events run")
    leader.kill()
    try:
        wait_for(lambda: len(recorded(record)) >= EVENTS // 2, 120, "half the events run")
        assert len(recorded_ids(record)) < EVENTS, "the run ended: nothing was tested"
    finally:
        leader.start()
        nats3.wait_ready(60)
    senders.join(180)
    got = wait_all_recorded(record, ids, 120)
    assert set(got) == set(ids)
    assert set(senders.accepted) == set(ids)
    # An invoke that met the election may be refused, saying why (not accepted: nothing
    # stored); the sender tried again, as an SDK retries a ServiceException.
    assert all(
        "was not accepted: cannot store the event in NATS JetStream" in why
        for _, _, why in senders.refused
    ), senders.refused[:5]
    # Every node is a whole member again.
    for server in (a, b, c):
        wait_for(lambda s=server: live_names(s) == {"a", "b", "c"}, 30, "three healthy nodes")


# -- an event-source mapping's owner killed ----------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    with private_vhost("lamina-cluster") as name:
        yield name


def register_broker(server: Server, vhost: str) -> str:
    """A broker for `vhost` registered through `server`; its ARN."""
    resp = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/brokers/rmq-{uuid.uuid4().hex[:8]}",
        json={"Url": vhost_url(vhost)},
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["Broker"]["Arn"])


def batches(server: Server, uuid_: str) -> int:
    """Batches of the mapping the node has run since it started."""
    for source in SIGNED_HTTP.get(server.endpoint + "/lamina/sources").json()["Sources"]:
        if source["UUID"] == uuid_:
            return int((source.get("Stats") or {}).get("Batches", 0))
    return 0


def mapping_owner(lc: LaminaCluster, uuid_: str) -> str | None:
    """The node whose runner reports having run the mapping (polled, or running its
    pollers) since it started."""
    for name, server in lc.nodes.items():
        if server.proc is None or server.proc.poll() is not None:
            continue
        for source in SIGNED_HTTP.get(server.endpoint + "/lamina/sources").json()["Sources"]:
            stats = source.get("Stats")
            if source["UUID"] == uuid_ and stats and stats["Batches"] > 0:
                return name
    return None


def test_the_owner_of_a_mapping_killed_during_its_run_loses_nothing(
    cluster: LaminaCluster, vhost: str, tmp_path: Path
) -> None:
    a = cluster.nodes["a"]
    queue_name = f"q-{uuid.uuid4().hex[:8]}"
    run(declare(vhost, queue_name))
    ids = [f"m{i:05d}" for i in range(MESSAGES)]
    run(publish(vhost, queue_name, [i.encode() for i in ids]))
    allow_event_sources(a)
    record = tmp_path / "record.jsonl"
    lam = a.client()
    function = recorder(a, record, slow=0.02)["FunctionName"]
    m = lam.create_event_source_mapping(
        FunctionName=function,
        EventSourceArn=register_broker(a, vhost),
        Queues=[queue_name],
        BatchSize=20,
    )
    uuid_ = m["UUID"]
    wait_recorded(record, MESSAGES // 5, timeout=120)
    first = wait_for(lambda: mapping_owner(cluster, uuid_), 30, "the mapping's owner")
    kill(cluster.nodes[first])
    assert len({r["data"] for r in recorded(record)}) < MESSAGES, "the run ended: no test"
    survivor = next(s for n, s in cluster.nodes.items() if n != first)
    wait_for(lambda: mapping_owner(cluster, uuid_), 30 + 2 * cluster.ttl_s, "a new owner")

    def all_seen() -> bool:
        return {r["data"] for r in recorded(record)} >= set(ids)

    wait_for(all_seen, 180, f"all {MESSAGES} messages recorded")
    wait_for(lambda: run(count(vhost, queue_name)) == 0, 30, "the queue drained")
    got = recorded(record)
    assert {r["data"] for r in got} == set(ids)
    # What came twice was in flight at the kill, and the broker said so the second time.
    firsts: set[str] = set()
    for r in got:
        assert r["data"] not in firsts or r["redelivered"], r
        firsts.add(r["data"])
    lam = survivor.client()
    wait_state(lam, uuid_, "Enabled")
    lam.delete_event_source_mapping(UUID=uuid_)


# -- schedules ---------------------------------------------------------------------------------


def every_minute_rule(server: Server, record: Path, rule: str = "every-minute") -> str:
    """A recorder function and a rate(1 minute) rule `rule` targeting it; the function's
    name."""
    fn = recorder(server, record)
    events = server.client("events")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)")["RuleArn"]
    server.client().add_permission(
        FunctionName=fn["FunctionName"],
        StatementId=rule,
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=rule_arn,
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": fn["FunctionArn"]}])
    return str(fn["FunctionName"])


def fired(server: Server) -> int:
    """Ticks the node has fired since it started."""
    return int(SIGNED_HTTP.get(server.endpoint + "/lamina/schedules").json()["Fired"])


def ticks(record: Path) -> dict[float, set[str]]:
    """Each recorded tick's time, with the event ids recorded for it."""
    out: dict[float, set[str]] = collections.defaultdict(set)
    for r in recorded(record):
        t = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
        out[t].add(r["id"])
    return out


def assert_each_tick_fired_once(record: Path) -> dict[float, set[str]]:
    """No tick fired twice (a tick's event delivered twice, at least once, has one id), and
    ticks are whole minutes apart."""
    found = ticks(record)
    assert all(len(ids) == 1 for ids in found.values()), {
        t: ids for t, ids in found.items() if len(ids) > 1
    }
    times = sorted(found)
    assert all((b - a) % 60 == 0 and b > a for a, b in itertools.pairwise(times)), times
    return found


def test_a_schedule_fires_once_per_tick_with_its_owner_killed(
    cluster: LaminaCluster, tmp_path: Path
) -> None:
    a = cluster.nodes["a"]
    record = tmp_path / "record.jsonl"
    every_minute_rule(a, record)
    wait_for(lambda: len(ticks(record)) >= 3, 60, "three ticks")
    first = next(n for n, s in cluster.nodes.items() if fired(s) > 0)
    assert [n for n, s in cluster.nodes.items() if fired(s) > 0] == [first]
    before = len(ticks(record))
    kill(cluster.nodes[first])
    others = {n: s for n, s in cluster.nodes.items() if n != first}
    wait_for(lambda: len(ticks(record)) >= before + 5, 60 + 2 * cluster.ttl_s, "ticks go on")
    assert any(fired(s) > 0 for s in others.values()), "no other node fired a tick"
    assert_each_tick_fired_once(record)


def mapping_of(server: Server, vhost: str, function: str, node: str, nodes: str) -> tuple[str, str]:
    """A RabbitMQ mapping (on a queue of its own) whose rightful owner among `nodes` is
    `node`: mappings are made until one hashes there (the others stay, on other nodes);
    its UUID and queue."""
    lam = server.client()
    arn = register_broker(server, vhost)
    while True:
        queue_name = f"q-{uuid.uuid4().hex[:8]}"
        run(declare(vhost, queue_name))
        m = lam.create_event_source_mapping(
            FunctionName=function, EventSourceArn=arn, Queues=[queue_name], BatchSize=10
        )
        if owner(f"mapping/{m['UUID']}", nodes) == node:
            return str(m["UUID"]), queue_name


def test_a_partitioned_node_lets_its_jobs_go_and_rejoins(
    tmp_path: Path, pg: Postgres, vhost: str, runtime_images: dict[str, SdkState]
) -> None:
    """Node c reaches NATS only through a proxy (one NATS server: a NATS cluster would tell
    c about its other servers, and c would go round the cut), and owns a schedule and a
    RabbitMQ mapping. The proxy cut, c says so in /health and the others take both jobs;
    restored, c is a live, healthy node again and takes its jobs back, with no tick fired
    twice and no message lost throughout."""
    with nats_cluster(1) as nats1, TcpProxy("127.0.0.1", nats1.servers[0].port) as proxy:
        lc = LaminaCluster(tmp_path, pg.new_database(), nats1.urls)
        try:
            start_nodes(lc, proxied={"c": [f"nats://127.0.0.1:{proxy.port}"]})
            a, b, c = (lc.nodes[n] for n in "abc")
            rule = next(
                r
                for i in itertools.count()
                if owner(f"rule/default/{(r := f'tick-{i}')}", "abc") == "c"
            )
            record = tmp_path / "record.jsonl"
            every_minute_rule(a, record, rule)
            allow_event_sources(a)
            fed = tmp_path / "fed.jsonl"
            function = recorder(a, fed)["FunctionName"]
            uuid_, queue_name = mapping_of(a, vhost, function, "c", "abc")

            def feed(label: str, n: int = 20) -> set[str]:
                sent = {f"{label}-{i}" for i in range(n)}
                run(publish(vhost, queue_name, [m.encode() for m in sorted(sent)]))
                return sent

            def fed_all(sent: set[str]) -> bool:
                return {r["data"] for r in recorded(fed)} >= sent

            sent = feed("before")
            wait_for(lambda: fed_all(sent), 60, "c feeding the function")
            wait_for(lambda: fired(c) >= 2, 60, "c firing the schedule")
            assert fired(a) == fired(b) == 0
            assert batches(c, uuid_) > 0 and batches(a, uuid_) == batches(b, uuid_) == 0
            proxy.stop()
            cut = time.monotonic()
            health = wait_for(
                lambda: (h := SIGNED_HTTP.get(c.endpoint + "/health")).status_code == 503 and h,
                lc.ttl_s + 10,
                "c degraded",
            ).json()
            assert health["status"] == "degraded"
            assert any("NATS" in p for p in health["problems"]), health
            for server in (a, b):
                wait_for(lambda s=server: "c" not in live_names(s), lc.ttl_s + 10, "c gone")
            assert time.monotonic() - cut <= lc.ttl_s + 10
            wait_for(lambda: fired(a) + fired(b) >= 3, 30 + 2 * lc.ttl_s, "a or b firing")
            assert_each_tick_fired_once(record)
            sent |= feed("cut")
            wait_for(lambda: fed_all(sent), 30 + 2 * lc.ttl_s, "a or b feeding the function")
            assert batches(a, uuid_) + batches(b, uuid_) > 0
            fired_by_c, fed_by_c = fired(c), batches(c, uuid_)
            proxy.start()
            for server in (a, b):
                wait_for(lambda s=server: "c" in live_names(s), 30, "c back among the live")
            wait_for(lambda: _healthy(c), 30, "c healthy")
            wait_for(lambda: fired(c) >= fired_by_c + 2, 30 + 2 * lc.ttl_s, "c firing again")
            assert_each_tick_fired_once(record)

            def c_feeds_again() -> bool:
                # more messages whenever the last are in: until c's poller takes some
                nonlocal sent
                if fed_all(sent):
                    sent |= feed(f"back-{uuid.uuid4().hex[:4]}", 5)
                return batches(c, uuid_) > fed_by_c

            try:
                wait_for(c_feeds_again, 30 + 2 * lc.ttl_s, "c feeding the function again")
            except AssertionError as e:
                raise AssertionError(f"{e} ({mapping_view(lc, uuid_)})") from None
            wait_for(lambda: fed_all(sent), 60, "every message fed")
        finally:
            lc.stop()


def mapping_view(lc: LaminaCluster, uuid_: str) -> str:
    """Each node's batches of the mapping, and the live nodes it sees (for a failure's
    message: where the mapping is stuck)."""
    return "; ".join(
        f"{name}: {batches(s, uuid_)} batches, sees {sorted(live_names(s))}"
        for name, s in lc.nodes.items()
    )


def _healthy(server: Server) -> bool:
    return SIGNED_HTTP.get(server.endpoint + "/health").status_code == 200
