"""The Logs API of a cluster (`cluster.logs`): three nodes, each with its own log store served
over the test's own NATS cluster, each connected to a different NATS server; every read asked
through one node sees the lines of all three."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from starlette.applications import Starlette
from starlette.routing import Route
from tests.cluster._engines import NatsCluster

from lamina.api import logs_api
from lamina.api.logs_api import Context, LogsApiError, Params
from lamina.cli import logs as cli_logs
from lamina.cli.logs import LogsClient
from lamina.cluster.api import NodeInfo
from lamina.cluster.logs import ClusterLogs, LogsResponder, join, logs_subject
from lamina.observability.log_store import LogStore, now_ms
from lamina.settings import ClusterSettings

GROUP = "/aws/lambda/fn"
REGION, ACCOUNT = "us-east-1", "000000000000"
#: the nodes' largest reply: a page or a listing larger than this comes in parts
REPLY_BYTES = 256 * 1024


@dataclass
class _Directory:
    """The live nodes, as the test says (`cluster.api.NodeDirectory`)."""

    self_name: str
    names: list[str]

    def live(self) -> list[NodeInfo]:
        return [NodeInfo(n, f"http://{n}", 0.0, time.time()) for n in sorted(self.names)]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class _Cluster:
    name: str
    stores: dict[str, LogStore]
    clients: dict[str, Client]
    directory: _Directory
    responders: dict[str, LogsResponder] = field(default_factory=dict)

    def reader(self, node: str = "a", timeout_s: float = 5.0) -> ClusterLogs:
        return ClusterLogs(self.clients[node], self.directory, self.name, timeout_s)

    async def call(self, operation: str, body: dict[str, Any], node: str = "a") -> dict[str, Any]:
        ctx = Context(self.stores[node], REGION, ACCOUNT)
        return await self.reader(node).call(operation, Params(body), ctx)

    async def write(self, node: str, stream: str, events: list[tuple[int, str]]) -> None:
        self.stores[node].append(GROUP, stream, events)
        await self.stores[node].flush()


@contextlib.asynccontextmanager
async def _cluster(nats3: NatsCluster, tmp_path: Path) -> AsyncIterator[_Cluster]:
    names = ["a", "b", "c"]
    cluster = _Cluster(f"t{uuid.uuid4().hex[:10]}", {}, {}, _Directory("a", list(names)))
    try:
        for i, node in enumerate(names):
            store = LogStore(tmp_path / node / "logs.db", 64 * 1024 * 1024)
            store.open()
            cluster.stores[node] = store
            nc = await nats.connect(servers=[nats3.urls[i % len(nats3.urls)]])
            cluster.clients[node] = nc
            ctx = Context(store, REGION, ACCOUNT)
            responder = LogsResponder(nc, ctx, cluster.name, node, max_reply_bytes=REPLY_BYTES)
            await responder.start()
            cluster.responders[node] = responder
        for nc in cluster.clients.values():
            await nc.flush()
        yield cluster
    finally:
        for responder in cluster.responders.values():
            await responder.close()
        for nc in cluster.clients.values():
            await nc.close()
        for store in cluster.stores.values():
            await store.close()


def _run(nats3: NatsCluster, tmp_path: Path, test: Any) -> None:
    async def main() -> None:
        async with _cluster(nats3, tmp_path) as cluster:
            await asyncio.wait_for(test(cluster), 60)

    asyncio.run(main())


async def _interleaved(cluster: _Cluster, base: int) -> list[tuple[int, str, str]]:
    """Lines on every node, their times interleaved (and some in the same millisecond on
    several nodes); what each wrote, as (timestamp, node, message) in the merged order."""
    written: list[tuple[int, str, str]] = []
    for n, node in enumerate(("a", "b", "c")):
        events = []
        for i in range(12):
            ts = base + i * 3 + (n if i % 4 else 0)  # every 4th line: the same ms on all nodes
            message = f"{node}-{i} {'ERROR boom' if i % 5 == 0 else 'ok'}"
            events.append((ts, message))
            written.append((ts, node, message))
        await cluster.write(node, f"stream-{node}", events)
    return sorted(written)


async def _filter_all(cluster: _Cluster, body: dict[str, Any], node: str = "a") -> list[Any]:
    """Every page of a FilterLogEvents, following nextToken; the events in the order given."""
    events: list[Any] = []
    body = dict(body)
    for _ in range(200):
        page = await cluster.call("FilterLogEvents", body, node)
        events += page["events"]
        if "nextToken" not in page:
            return events
        body["nextToken"] = page["nextToken"]
    raise AssertionError("FilterLogEvents never ended")


def test_get_log_events_of_a_stream_on_another_node(nats3: NatsCluster, tmp_path: Path) -> None:
    async def test(cluster: _Cluster) -> None:
        base = now_ms() - 60_000
        await cluster.write("b", "only-on-b", [(base + i, f"line {i}") for i in range(5)])
        await cluster.write("c", "elsewhere", [(base, "not this stream")])
        body = {"logGroupName": GROUP, "logStreamName": "only-on-b", "limit": 2}

        first = await cluster.call("GetLogEvents", {**body, "startFromHead": True})
        assert [e["message"] for e in first["events"]] == ["line 0", "line 1"]
        assert first["nextForwardToken"].endswith("/b")
        second = await cluster.call(
            "GetLogEvents", {**body, "nextToken": first["nextForwardToken"]}
        )
        assert [e["message"] for e in second["events"]] == ["line 2", "line 3"]
        back = await cluster.call(
            "GetLogEvents", {**body, "nextToken": second["nextBackwardToken"]}
        )
        assert [e["message"] for e in back["events"]] == ["line 0", "line 1"]

        third = await cluster.call(
            "GetLogEvents", {**body, "nextToken": second["nextForwardToken"]}, node="c"
        )
        assert [e["message"] for e in third["events"]] == ["line 4"]
        idle = await cluster.call("GetLogEvents", {**body, "nextToken": third["nextForwardToken"]})
        assert idle["events"] == []
        assert idle["nextForwardToken"] == third["nextForwardToken"]

        await cluster.write("b", "only-on-b", [(base + 10, "line 5")])
        fresh = await cluster.call("GetLogEvents", {**body, "nextToken": idle["nextForwardToken"]})
        assert [e["message"] for e in fresh["events"]] == ["line 5"]

        tail = await cluster.call("GetLogEvents", body)  # no token: the last page
        assert [e["message"] for e in tail["events"]] == ["line 4", "line 5"]

        with pytest.raises(LogsApiError) as missing:
            await cluster.call("GetLogEvents", {**body, "logStreamName": "nowhere"})
        assert missing.value.message == "The specified log stream does not exist."
        with pytest.raises(LogsApiError) as bad:
            await cluster.call("GetLogEvents", {**body, "nextToken": "f/1/2"})
        assert bad.value.error_type == "InvalidParameterException"
        with pytest.raises(LogsApiError) as bad:
            await cluster.call("GetLogEvents", {**body, "nextToken": "f/x/2/b"})
        assert bad.value.error_type == "InvalidParameterException"

        cluster.directory.names.remove("b")  # b is away: nothing new, the same place
        away = await cluster.call("GetLogEvents", {**body, "nextToken": fresh["nextForwardToken"]})
        assert away["events"] == []
        assert away["nextForwardToken"] == fresh["nextForwardToken"]
        cluster.directory.names.append("b")
        back_again = await cluster.call(
            "GetLogEvents", {**body, "nextToken": fresh["nextBackwardToken"]}
        )
        assert [e["message"] for e in back_again["events"]] == ["line 3", "line 4"]

    _run(nats3, tmp_path, test)


def test_filter_log_events_merges_every_node_in_time_order(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    async def test(cluster: _Cluster) -> None:
        written = await _interleaved(cluster, now_ms() - 60_000)
        everything = [m for _, _, m in written]

        whole = await cluster.call("FilterLogEvents", {"logGroupName": GROUP})
        assert [e["message"] for e in whole["events"]] == everything
        assert "nextToken" not in whole
        assert {e["logStreamName"] for e in whole["events"]} == {
            "stream-a",
            "stream-b",
            "stream-c",
        }
        ids = [e["eventId"] for e in whole["events"]]
        assert len(set(ids)) == len(ids) and all(i.split(":")[0] in "abc" for i in ids)

        for limit in (1, 2, 5, 7):
            paged = await _filter_all(cluster, {"logGroupName": GROUP, "limit": limit}, "b")
            assert [e["message"] for e in paged] == everything, limit

        errors = [m for m in everything if "ERROR" in m]
        assert len(errors) == 9
        filtered = await _filter_all(
            cluster, {"logGroupName": GROUP, "limit": 2, "filterPattern": "ERROR"}
        )
        assert [e["message"] for e in filtered] == errors

        after = written[10][0]
        since = await _filter_all(cluster, {"logGroupName": GROUP, "startTime": after, "limit": 4})
        assert [e["message"] for e in since] == [m for ts, _, m in written if ts >= after]

    _run(nats3, tmp_path, test)


def test_filter_token_continues_with_lines_written_after_it(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    """Paging to the end and then on, as a follower polls: new lines on any node come once."""

    async def test(cluster: _Cluster) -> None:
        base = now_ms() - 60_000
        await _interleaved(cluster, base)
        body: dict[str, Any] = {"logGroupName": GROUP, "limit": 10}
        seen: list[str] = []
        page = await cluster.call("FilterLogEvents", body)
        seen += [e["message"] for e in page["events"]]
        token = page["nextToken"]
        await cluster.write("c", "stream-c", [(base + 1_000, "late on c")])
        await cluster.write("a", "stream-a", [(base + 1_001, "late on a")])
        while token:
            page = await cluster.call("FilterLogEvents", {**body, "nextToken": token})
            seen += [e["message"] for e in page["events"]]
            token = page.get("nextToken")
        assert len(seen) == len(set(seen)) == 38
        assert seen[-2:] == ["late on c", "late on a"]

    _run(nats3, tmp_path, test)


def test_describe_streams_and_groups_are_merged(nats3: NatsCluster, tmp_path: Path) -> None:
    async def test(cluster: _Cluster) -> None:
        base = now_ms() - 60_000
        await _interleaved(cluster, base)
        await cluster.write("b", "stream-a", [(base + 500, "stream-a has a line on b too")])
        cluster.stores["c"].append("/aws/lambda/other", "s", [(base, "x")])

        streams = await cluster.call("DescribeLogStreams", {"logGroupName": GROUP, "limit": 2})
        assert [s["logStreamName"] for s in streams["logStreams"]] == ["stream-a", "stream-b"]
        rest = await cluster.call(
            "DescribeLogStreams", {"logGroupName": GROUP, "nextToken": streams["nextToken"]}
        )
        assert [s["logStreamName"] for s in rest["logStreams"]] == ["stream-c"]
        merged = streams["logStreams"][0]
        assert merged["lastEventTimestamp"] == base + 500
        per_node = [
            s.stored_bytes
            for node in ("a", "b")
            for s in await cluster.stores[node].streams(GROUP)
            if s.name == "stream-a"
        ]
        assert merged["storedBytes"] == sum(per_node)
        by_time = await cluster.call(
            "DescribeLogStreams",
            {"logGroupName": GROUP, "orderBy": "LastEventTime", "descending": True},
        )
        assert by_time["logStreams"][0]["logStreamName"] == "stream-a"

        groups = await cluster.call("DescribeLogGroups", {"logGroupNamePrefix": "/aws/lambda/"})
        assert [g["logGroupName"] for g in groups["logGroups"]] == [GROUP, "/aws/lambda/other"]
        fn = groups["logGroups"][0]
        stores = [await s.groups(GROUP) for s in cluster.stores.values()]
        assert fn["storedBytes"] == sum(g[0].stored_bytes for g in stores)
        assert fn["creationTime"] == min(g[0].created_ms for g in stores)

        with pytest.raises(LogsApiError) as missing:
            await cluster.call("DescribeLogStreams", {"logGroupName": "/aws/lambda/none"})
        assert missing.value.error_type == "ResourceNotFoundException"

    _run(nats3, tmp_path, test)


def test_a_node_that_does_not_answer_is_left_out(
    nats3: NatsCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(cluster: _Cluster) -> None:
        await _interleaved(cluster, now_ms() - 60_000)

        async def hang(msg: Msg) -> None:
            return None  # subscribed, never answers

        hung = ["hung1", "hung2", "hung3"]
        silent = [
            await cluster.clients["c"].subscribe(logs_subject(cluster.name, n), cb=hang)
            for n in hung
        ]
        await cluster.clients["c"].flush()
        cluster.directory.names += [*hung, "gone"]  # "gone": live, but nobody listens
        ctx = Context(cluster.stores["a"], REGION, ACCOUNT)
        reader = cluster.reader("a", timeout_s=1.5)

        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="lamina.cluster.logs"):
            page = await reader.call("FilterLogEvents", Params({"logGroupName": GROUP}), ctx)
        # The silent nodes are waited for at once, not one after another (4.5 s).
        assert time.monotonic() - started < 4
        assert len(page["events"]) == 36
        for node in hung:
            assert f"node {node} left out of FilterLogEvents" in caplog.text
        assert "node gone left out of FilterLogEvents" in caplog.text

        groups = await reader.call("DescribeLogGroups", Params({}), ctx)
        assert [g["logGroupName"] for g in groups["logGroups"]] == [GROUP]
        await reader.call(
            "PutRetentionPolicy", Params({"logGroupName": GROUP, "retentionInDays": 3}), ctx
        )
        for subscription in silent:
            await subscription.unsubscribe()

    _run(nats3, tmp_path, test)


def test_retention_and_deletion_through_one_node_apply_on_all(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    async def test(cluster: _Cluster) -> None:
        base = now_ms() - 60_000
        for node in ("b", "c"):  # not on a, the node asked
            await cluster.write(node, f"s-{node}", [(base, "x")])

        await cluster.call("PutRetentionPolicy", {"logGroupName": GROUP, "retentionInDays": 7})
        for node in ("b", "c"):
            assert [g.retention_days for g in await cluster.stores[node].groups()] == [7]
        shown = await cluster.call("DescribeLogGroups", {}, node="c")
        assert shown["logGroups"][0]["retentionInDays"] == 7

        with pytest.raises(LogsApiError) as bad:
            await cluster.call("PutRetentionPolicy", {"logGroupName": GROUP, "retentionInDays": 2})
        assert bad.value.error_type == "InvalidParameterException"

        await cluster.call("DeleteRetentionPolicy", {"logGroupName": GROUP})
        assert [g.retention_days for g in await cluster.stores["b"].groups()] == [None]
        await cluster.call("DeleteLogGroup", {"logGroupName": GROUP})
        for store in cluster.stores.values():
            assert await store.groups() == []
        with pytest.raises(LogsApiError) as missing:
            await cluster.call("DeleteLogGroup", {"logGroupName": GROUP})
        assert missing.value.error_type == "ResourceNotFoundException"

    _run(nats3, tmp_path, test)


def test_a_node_joined_at_start_up_serves_every_nodes_lines_over_http(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    """Node d joins (`cluster.logs.join`, as `lamina serve --cluster` does): its HTTP Logs API
    answers with b's lines and its own, and b reads d's; without `AppState.logs` it reads its
    own store alone."""

    async def test(cluster: _Cluster) -> None:
        await cluster.write("b", "s", [(now_ms() - 2_000, "from b")])
        store = LogStore(tmp_path / "d" / "logs.db", 64 * 1024 * 1024)
        store.open()
        state: Any = SimpleNamespace(
            log_store=store, logs=None, settings=SimpleNamespace(region=REGION, account_id=ACCOUNT)
        )
        settings = ClusterSettings("postgresql://unused", tuple(nats3.urls), "d", name=cluster.name)
        responder = await join(cluster.clients["a"], state, settings, cluster.directory)
        cluster.directory.names.append("d")
        app = Starlette(routes=[Route("/", logs_api.dispatch, methods=["POST"])])
        app.state.lamina = state
        try:
            store.append(GROUP, "s-d", [(now_ms() - 1_000, "from d")])
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://node-d"
            ) as client:

                async def messages() -> list[str]:
                    resp = await client.post(
                        "/",
                        json={"logGroupName": GROUP},
                        headers={"X-Amz-Target": "Logs_20140328.FilterLogEvents"},
                    )
                    assert resp.status_code == 200, resp.text
                    return [e["message"] for e in resp.json()["events"]]

                assert await messages() == ["from b", "from d"]
                from_b = await cluster.call("FilterLogEvents", {"logGroupName": GROUP}, "b")
                assert [e["message"] for e in from_b["events"]] == ["from b", "from d"]
                state.logs = None  # a single node: its own store alone
                assert await messages() == ["from d"]
        finally:
            await responder.close()
            await store.close()

    _run(nats3, tmp_path, test)


def test_pages_larger_than_a_reply_come_in_parts_in_order(
    nats3: NatsCluster, tmp_path: Path
) -> None:
    """Node b's lines take more than a reply may (REPLY_BYTES): b answers a part at a time,
    and the merge gives a's lines that are later than b's part only after the rest of b's."""

    async def test(cluster: _Cluster) -> None:
        base = now_ms() - 60_000
        big = [(base + 2 * i, f"b-{i} " + "x" * 100_000) for i in range(8)]
        await cluster.write("b", "big", big)
        await cluster.write("a", "small", [(base + 2 * i + 1, f"a-{i}") for i in range(8)])
        expected = [m for _, m in sorted(big + [(base + 2 * i + 1, f"a-{i}") for i in range(8)])]

        events = await _filter_all(cluster, {"logGroupName": GROUP})
        assert [e["message"] for e in events] == expected

        body: dict[str, Any] = {"logGroupName": GROUP, "logStreamName": "big"}
        page = await cluster.call("GetLogEvents", {**body, "startFromHead": True})
        read = [e["message"] for e in page["events"]]
        assert 0 < len(read) < 8
        while page["events"]:
            page = await cluster.call(
                "GetLogEvents", {**body, "nextToken": page["nextForwardToken"]}
            )
            read += [e["message"] for e in page["events"]]
        assert read == [m for _, m in big]

    _run(nats3, tmp_path, test)


def test_a_node_whose_store_fails_is_left_out(
    nats3: NatsCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(cluster: _Cluster) -> None:
        written = await _interleaved(cluster, now_ms() - 60_000)
        await cluster.stores["c"].close()
        with caplog.at_level(logging.WARNING, logger="lamina.cluster.logs"):
            page = await cluster.call("FilterLogEvents", {"logGroupName": GROUP})
            streams = await cluster.call("DescribeLogStreams", {"logGroupName": GROUP})
        assert [e["message"] for e in page["events"]] == [m for _, n, m in written if n != "c"]
        assert [s["logStreamName"] for s in streams["logStreams"]] == ["stream-a", "stream-b"]
        assert "node c left out of FilterLogEvents: it failed" in caplog.text

    _run(nats3, tmp_path, test)


def test_a_listing_larger_than_a_reply_comes_in_parts(nats3: NatsCluster, tmp_path: Path) -> None:
    async def test(cluster: _Cluster) -> None:
        names = [f"{i:05d}-" + "s" * 480 for i in range(1_000)]  # about 0.5 MB of rows
        for name in names:
            cluster.stores["b"].append(GROUP, name, [(now_ms(), "x")])
        await cluster.write("a", "zz-on-a", [(now_ms(), "y")])
        last = await cluster.call(
            "DescribeLogStreams", {"logGroupName": GROUP, "descending": True, "limit": 2}
        )
        assert [s["logStreamName"] for s in last["logStreams"]] == ["zz-on-a", names[-1]]

    _run(nats3, tmp_path, test)


class _ThroughNode(LogsClient):
    """`lamina logs`' client, its calls answered by a node's ClusterLogs (on the test's loop)."""

    def __init__(self, cluster: _Cluster, loop: asyncio.AbstractEventLoop) -> None:
        self._cluster = cluster
        self._loop = loop
        self.stop = threading.Event()

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.stop.is_set():
            raise KeyboardInterrupt
        call = self._cluster.call(operation, body, "b")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result(30)


def test_logs_follow_through_a_node_prints_every_nodes_lines_once(
    nats3: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node a's ids run far ahead of b's and c's: each node's lines are followed by their own
    ids (eventId NODE:ID), so none is hidden behind another node's and none comes twice."""
    printed: list[str] = []
    monkeypatch.setattr(cli_logs.click, "echo", lambda line, **_: printed.append(line))
    monkeypatch.setattr(cli_logs, "format_event", lambda event, color: event["message"])

    async def test(cluster: _Cluster) -> None:
        start = now_ms() - 5_000
        await cluster.write("a", "sa", [(now_ms(), f"a-{i}") for i in range(30)])
        await cluster.write("b", "sb", [(now_ms(), "b-0")])
        client = _ThroughNode(cluster, asyncio.get_running_loop())

        def follow() -> None:
            with contextlib.suppress(KeyboardInterrupt):
                cli_logs._follow(client, "fn", GROUP, start, None, False)

        follower = asyncio.create_task(asyncio.to_thread(follow))

        async def until_printed(*lines: str) -> None:
            deadline = time.monotonic() + 20
            while not set(lines) <= set(printed):
                assert time.monotonic() < deadline, f"not printed: {set(lines) - set(printed)}"
                await asyncio.sleep(0.05)

        try:
            await until_printed("a-29", "b-0")
            await cluster.write("c", "sc", [(now_ms(), "c-0")])
            await cluster.write("b", "sb", [(now_ms(), "b-1"), (now_ms(), "b-2")])
            await until_printed("c-0", "b-1", "b-2")
            polls = len(printed)
            await asyncio.sleep(3 * cli_logs.POLL_INTERVAL_S)  # a few more polls
        finally:
            client.stop.set()
            await follower
        assert len(printed) == polls
        expected = {f"a-{i}" for i in range(30)} | {"b-0", "b-1", "b-2", "c-0"}
        assert sorted(printed) == sorted(expected)

    _run(nats3, tmp_path, test)
