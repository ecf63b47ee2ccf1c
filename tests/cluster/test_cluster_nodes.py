"""Three Lamina nodes on one PostgreSQL database and one 3-server NATS JetStream cluster, each
behind its own endpoint, driven with boto3 unchanged: state made through one node holds on the
others, invocations run wherever the cluster puts them, a dead node leaves the cluster within
its heartbeat TTL, and a node that cannot join says why and exits non-zero."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.cluster._engines import NatsCluster, Postgres
from tests.cluster._nodes import LaminaCluster
from tests.conftest import SIGNED_HTTP, Functions, Server, free_port, make_zip, wait_for

CODE_V1 = "def handler(event, context):\n    return {'v': 1, 'echo': event}\n"
CODE_V2 = "def handler(event, context):\n    return {'v': 2, 'echo': event}\n"


@pytest.fixture
def cluster(tmp_path: Path, pg: Postgres, nats3: NatsCluster) -> Iterator[LaminaCluster]:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        for name in ("a", "b", "c"):
            lc.node(name)
        yield lc
    finally:
        lc.stop()
        lc.print_logs()  # shown by pytest when the test failed


def invoke(server: Server, name: str, payload: Any, qualifier: str | None = None) -> Any:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    resp = server.client().invoke(FunctionName=name, Payload=json.dumps(payload), **kwargs)
    assert "FunctionError" not in resp, resp["Payload"].read()
    return json.loads(resp["Payload"].read()), resp["ExecutedVersion"]


def nodes(server: Server) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = SIGNED_HTTP.get(server.endpoint + "/lamina/nodes").json()[
        "Nodes"
    ]
    return listed


def environments(server: Server) -> int:
    return len(SIGNED_HTTP.get(server.endpoint + "/lamina/environments").json()["Environments"])


def test_made_on_one_node_invoked_on_the_others(cluster: LaminaCluster) -> None:
    a, b, c = (cluster.nodes[n] for n in "abc")
    fn = Functions(a.client()).create(CODE_V1)
    name = fn["FunctionName"]
    assert (
        c.client().get_function(FunctionName=name)["Configuration"]["CodeSha256"]
        == (fn["CodeSha256"])
    )
    for server in (b, c, a):
        assert invoke(server, name, {"n": server.port}) == (
            {"v": 1, "echo": {"n": server.port}},
            "$LATEST",
        )
    # New code through b: every node runs it from then on.
    b.client().update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": CODE_V2}))
    b.client().get_waiter("function_updated_v2").wait(FunctionName=name)
    for server in (a, b, c):
        assert wait_for(lambda s=server: invoke(s, name, {})[0]["v"] == 2, 20, "the new code")
    # Deleted through c: gone everywhere.
    c.client().delete_function(FunctionName=name)
    for server in (a, b):
        wait_for(lambda s=server: _gone(s, name), 10, "the deletion")
        with pytest.raises(server.client().exceptions.ResourceNotFoundException):
            invoke(server, name, {})


def _gone(server: Server, name: str) -> bool:
    try:
        server.client().get_function(FunctionName=name)
    except server.client().exceptions.ResourceNotFoundException:
        return True
    return False


def test_aliases_route_the_same_on_every_node(cluster: LaminaCluster) -> None:
    a, b, c = (cluster.nodes[n] for n in "abc")
    lam = a.client()
    name = Functions(lam).create(CODE_V1)["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": CODE_V2}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    v2 = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1)
    assert invoke(b, name, {}, "live") == ({"v": 1, "echo": {}}, v1)
    c.client().update_alias(FunctionName=name, Name="live", FunctionVersion=v2)
    assert wait_for(lambda: invoke(b, name, {}, "live")[1] == v2, 10, "the alias moved")
    assert invoke(a, name, {}, "live") == ({"v": 2, "echo": {}}, v2)


SLOW = """import time
def handler(event, context):
    time.sleep(event.get('s', 0))
    return 'ok'
"""


def test_reserved_concurrency_holds_across_nodes(cluster: LaminaCluster) -> None:
    """Reserved concurrency 1, set through c: while an invocation runs through a, another
    through b is throttled with Lambda's reason; once it ends, b's runs."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    name = Functions(a.client()).create(SLOW, Timeout=30)["FunctionName"]
    c.client().put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(invoke, a, name, {"s": 4})
        # An invocation that ended early (throttled, failed) raises here, not as a timeout.
        wait_for(lambda: running.done() or sum(busy(s) for s in (a, b, c)) == 1, 20, "one running")
        assert not running.done(), running.result()
        with pytest.raises(b.client().exceptions.TooManyRequestsException) as throttled:
            invoke(b, name, {})
        assert throttled.value.response["Reason"] == (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        )
        assert running.result()[0] == "ok"
    assert wait_for(lambda: _runs(b, name), 20, "b's invocation once a's ended")


def busy(server: Server) -> int:
    """Environments running an invocation, or starting for one (a cold start holds its
    invocation's concurrency slot already)."""
    envs = SIGNED_HTTP.get(server.endpoint + "/lamina/environments").json()["Environments"]
    return sum(1 for env in envs if env["State"] in ("busy", "starting"))


def _runs(server: Server, name: str) -> bool:
    try:
        return invoke(server, name, {})[0] == "ok"
    except server.client().exceptions.TooManyRequestsException:
        return False


def test_provisioned_environments_are_kept_once_for_the_cluster(cluster: LaminaCluster) -> None:
    """Provisioned concurrency 2 on an alias: two environments in the whole cluster (on the
    node the version hashes to), READY through every node, used from every node."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    lam = a.client()
    name = Functions(lam).create(CODE_V1)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    for server in (a, b, c):
        last: dict[str, Any] = {}

        def ready(s: Server = server, last: dict[str, Any] = last) -> dict[str, Any] | None:
            last.update(
                s.client().get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
            )
            return last if last["Status"] == "READY" else None

        try:
            config = wait_for(ready, 30, "READY through every node")
        except AssertionError:
            raise AssertionError(f"not READY through {server.port}: {last}") from None
        assert config["AvailableProvisionedConcurrentExecutions"] == 2
    # (an environment a retired pool was still starting may take a moment to go)
    counts: list[int] = []

    def two_in_all() -> bool:
        counts[:] = [environments(s) for s in (a, b, c)]
        return sorted(counts) == [0, 0, 2]

    try:
        wait_for(two_in_all, 10, "two environments in the cluster")
    except AssertionError:
        raise AssertionError(f"environments per node: {counts}") from None
    for server in (a, b, c):
        assert invoke(server, name, {}, "live") == ({"v": 1, "echo": {}}, version)
    assert sum(environments(s) for s in (a, b, c)) == 2
    # Their node dies: another node of the cluster provisions them.
    keeper = next(s for s in (a, b, c) if environments(s) == 2)
    keeper.stop(signal.SIGKILL)
    rest = [s for s in (a, b, c) if s is not keeper]
    wait_for(
        lambda: sorted(environments(s) for s in rest) == [0, 2],
        cluster.ttl_s + 30,
        "the environments provisioned again on one other node",
    )
    for server in rest:
        assert invoke(server, name, {}, "live") == ({"v": 1, "echo": {}}, version)


def test_warm_environments_concentrate(cluster: LaminaCluster) -> None:
    """Sequential invokes through every node use one environment: the first one starts where
    the function hashes, the others run where it is warm and idle."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    name = Functions(a.client()).create(CODE_V1)["FunctionName"]
    for _ in range(3):
        for server in (a, b, c):
            invoke(server, name, {})
    assert sum(environments(s) for s in (a, b, c)) == 1


def test_nodes_are_listed_and_a_killed_one_leaves(cluster: LaminaCluster) -> None:
    a, b, c = (cluster.nodes[n] for n in "abc")
    listed = wait_for(lambda: len(nodes(a)) == 3 and nodes(a), 15, "three nodes")
    assert {n["Name"] for n in listed} == {"a", "b", "c"}
    assert all(n["Healthy"] for n in listed)
    assert [n["Name"] for n in listed if n["Self"]] == ["a"]
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "nodes", "--endpoint", b.endpoint],
        capture_output=True,
        text=True,
        env=_cli_env(),
        check=True,
    ).stdout
    assert "b *" in out and c.endpoint in out
    started = time.monotonic()
    c.stop(signal.SIGKILL)
    wait_for(lambda: {n["Name"] for n in nodes(a)} == {"a", "b"}, cluster.ttl_s + 10, "c gone")
    assert time.monotonic() - started <= cluster.ttl_s + 10
    # A function made after c died still runs on a and b.
    name = Functions(a.client()).create(CODE_V1)["FunctionName"]
    for server in (a, b):
        assert invoke(server, name, {})[0]["v"] == 1


def _cli_env() -> dict[str, str]:
    from tests.conftest import lamina_env

    env = lamina_env("")
    env.pop("LAMINA_ENDPOINT", None)
    return env


def test_every_node_reads_every_nodes_logs(cluster: LaminaCluster) -> None:
    """Lines written where the function ran are read through any node (FilterLogEvents and
    GetLogEvents), and usage through any node sums the cluster."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    code = "def handler(event, context):\n    print('MARK', event['n'])\n    return 'ok'\n"
    name = Functions(a.client()).create(code)["FunctionName"]
    for i, server in enumerate((a, b, c)):
        server.client().invoke(FunctionName=name, Payload=json.dumps({"n": i}))
    group = f"/aws/lambda/{name}"
    for server in (a, b, c):
        logs = server.client("logs")
        marks = wait_for(
            lambda lg=logs: (
                len(
                    found := [
                        e["message"]
                        for e in lg.filter_log_events(logGroupName=group, filterPattern="MARK")[
                            "events"
                        ]
                    ]
                )
                == 3
                and found
            ),
            20,
            "three MARK lines",
        )
        assert sorted(m.split()[-1] for m in marks) == ["0", "1", "2"]
        stream = logs.describe_log_streams(logGroupName=group)["logStreams"][0]["logStreamName"]
        events = logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]
        assert any(e["message"].startswith("MARK") for e in events)
    # Usage is metered in batches (about a second): the three invocations' rows arrive soon.
    wait_for(lambda: _requests(c, name) == 3, 20, "three invocations in the usage")


def _invocations(server: Server, name: str) -> float:
    now = datetime.now(UTC)
    points = server.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda",
        MetricName="Invocations",
        Dimensions=[{"Name": "FunctionName", "Value": name}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=2),
        Period=3600,
        Statistics=["Sum"],
    )["Datapoints"]
    return sum(float(p["Sum"]) for p in points)


def test_every_node_reads_every_nodes_cloudwatch_metrics(cluster: LaminaCluster) -> None:
    """CloudWatch's data is in the cluster's PostgreSQL: invocations counted on the nodes
    they ran on are read through every node, each counted once (a node writes a minute
    within 5 s of its end and reads its own unwritten minutes from memory, so a read may
    wait for the minute to end)."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    name = Functions(a.client()).create(CODE_V1)["FunctionName"]
    for server in (a, a, c):
        invoke(server, name, {})
    for server in (b, c, a):
        wait_for(lambda s=server: _invocations(s, name) == 3, 75, "three invocations")
    time.sleep(6)  # every node's minute written: still counted once
    assert [_invocations(s, name) for s in (a, b, c)] == [3, 3, 3]


def _requests(server: Server, name: str) -> int:
    usage = SIGNED_HTTP.get(server.endpoint + "/lamina/usage", params={"function": name}).json()
    return sum(int(u["requests"]) for u in usage["usage"])


def test_metrics_name_the_node(cluster: LaminaCluster) -> None:
    b = cluster.nodes["b"]
    name = Functions(b.client()).create(CODE_V1)["FunctionName"]
    invoke(b, name, {})
    text = SIGNED_HTTP.get(b.endpoint + "/metrics").text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all('node="b"' in line for line in samples)


def _refused(server: Server, timeout: float = 60.0) -> tuple[int, str]:
    """Start a node that must not join: its exit status and what it printed."""
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout=timeout)
    assert server.proc is not None
    return server.proc.returncode, server.log()


def test_a_node_that_cannot_join_says_why_and_exits(
    tmp_path: Path, pg: Postgres, nats3: NatsCluster
) -> None:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        lc.node("a")
        # A name a live node has.
        code, log = _refused(_second(lc, "a"))
        assert code != 0 and "already named a" in log
        # Another sealing key than the cluster's.
        other = lc.node("k", start=False)
        (other.data_dir / "secret.key").unlink(missing_ok=True)
        code, log = _refused(other)
        assert code != 0 and "sealing key" in log
        # No database there.
        dead_db = LaminaCluster(
            tmp_path / "x", lc.database_url.replace(f":{pg.port}/", f":{free_port()}/"), nats3.urls
        )
        code, log = _refused(dead_db.node("x", start=False))
        assert code != 0 and "cannot reach the database" in log
        # No NATS there.
        dead_nats = LaminaCluster(
            tmp_path / "y", lc.database_url, [f"nats://127.0.0.1:{free_port()}"]
        )
        lost = dead_nats.node("y", start=False)
        shutil.copy2(lc.nodes["a"].data_dir / "secret.key", lost.data_dir / "secret.key")
        code, log = _refused(lost)
        assert code != 0 and "cannot reach NATS" in log
    finally:
        lc.stop()


def _second(lc: LaminaCluster, name: str) -> Server:
    """A second node of that name, in a data directory of its own."""
    data = lc.base / f"{name}-again" / "data"
    data.mkdir(parents=True)
    first = lc.nodes[name]
    (data / "secret.key").write_bytes((first.data_dir / "secret.key").read_bytes())
    return Server(data_dir=data, extra_args=lc.args(name))


def health(server: Server) -> tuple[int, dict[str, Any]]:
    resp = SIGNED_HTTP.get(server.endpoint + "/health")
    body: dict[str, Any] = resp.json()
    return resp.status_code, body


def test_a_node_that_loses_its_database_says_so_and_resumes(
    tmp_path: Path, pg: Postgres, nats3: NatsCluster
) -> None:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        a = lc.node("a")
        name = Functions(a.client()).create(CODE_V1)["FunctionName"]
        assert health(a) == (200, health(a)[1]) and health(a)[1]["problems"] == []
        pg.stop()
        try:
            _, body = wait_for(
                lambda: (h := health(a))[0] == 503 and h, 15, "the node to say it lost the database"
            )
            assert body["status"] == "degraded"
            assert any("database unreachable" in p for p in body["problems"])
            # Its heartbeat says so too (the next one).
            wait_for(
                lambda: any("database unreachable" in p for p in nodes(a)[0]["Problems"]),
                10,
                "lamina nodes to show the problem",
            )
            # It takes no new work (no concurrency grant without the database: a 429, as a
            # throttled Lambda answers), and what needs the database is an AWS error.
            with pytest.raises(a.client().exceptions.TooManyRequestsException):
                invoke(a, name, {})
            with pytest.raises(a.client().exceptions.ServiceException):
                a.client().create_function(
                    FunctionName="t-during-outage",
                    Runtime="python3.11",
                    Role="arn:aws:iam::000000000000:role/lamina-test",
                    Handler="app.handler",
                    Code={"ZipFile": make_zip({"app.py": CODE_V1})},
                )
        finally:
            pg.start()
        wait_for(lambda: health(a)[0] == 200, 20, "the node to be healthy again")
        assert wait_for(lambda: _runs_v1(a, name), 20, "invocations again")
        fn = Functions(a.client()).create(CODE_V2)
        assert invoke(a, fn["FunctionName"], {})[0]["v"] == 2
    finally:
        lc.stop()


def _runs_v1(server: Server, name: str) -> bool:
    try:
        return invoke(server, name, {})[0]["v"] == 1
    except server.client().exceptions.TooManyRequestsException:
        return False


SNAP = """import os, random
from snapshot_restore_py import register_before_snapshot

TOKEN = random.random()
BEFORE = []
register_before_snapshot(lambda: BEFORE.append(1))


def handler(event, context):
    return {
        "token": TOKEN,
        "before": len(BEFORE),
        "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
    }
"""


def test_a_snapstart_version_is_restored_on_every_node(cluster: LaminaCluster) -> None:
    # Published through a (whose template settles the version); every node restores it, each
    # from a template of its own, made at its first cold start.
    a, b, c = (cluster.nodes[n] for n in "abc")
    lam = a.client()
    name = Functions(lam).create(
        SNAP, runtime="python3.12", SnapStart={"ApplyOn": "PublishedVersions"}
    )["FunctionName"]
    assert lam.publish_version(FunctionName=name)["State"] == "Pending"

    def active(server: Server) -> bool:
        config = server.client().get_function_configuration(FunctionName=name, Qualifier="1")
        assert config["State"] != "Failed", config
        return bool(config["State"] == "Active")

    for server in (c, b):
        wait_for(lambda s=server: active(s), 60, "the version to be Active")
    for server in (b, c, a):
        out, version = invoke(server, name, {}, "1")
        assert version == "1" and out["init"] == "snap-start" and out["before"] == 1, out
