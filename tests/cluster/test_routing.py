"""Invoke routing (`cluster.routing`): rendezvous hashing, the router's choice of node, and
forwarding over a real 3-server NATS cluster (each side on a server of its own)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import nats
import pytest
from nats.aio.client import Client
from starlette.responses import Response
from starlette.types import ASGIApp, Message
from tests.cluster._engines import NatsCluster
from tests.conftest import make_zip
from tests.unit import test_scheduler as unit

from lamina.api.context import AppState
from lamina.api.invoke import invoke_function, run_forwarded
from lamina.cluster.api import (
    ForwardedInvoke,
    ForwardedResult,
    NodeInfo,
    NodeLoad,
    NodeUnavailable,
)
from lamina.cluster.hashing import owner, weight
from lamina.cluster.routing import (
    NatsRouter,
    decode_invoke,
    decode_result,
    encode_invoke,
    encode_result,
    version_key,
)
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.scheduler import Scheduler
from lamina.server import create_app
from lamina.settings import Settings

NODES = ["node-a", "node-b", "node-c"]
KEYS = [version_key(f"fn-{i}", "$LATEST") for i in range(300)]


def _node(
    name: str, idle: dict[str, int] | None = None, problems: tuple[str, ...] = ()
) -> NodeInfo:
    now = time.time()
    return NodeInfo(
        name=name,
        endpoint=f"http://{name}",
        started_at=now,
        heartbeat_at=now,
        load=NodeLoad(idle=idle or {}),
        problems=problems,
    )


class Directory:
    """A `NodeDirectory` whose live nodes the test sets."""

    def __init__(self, me: str, nodes: list[NodeInfo]) -> None:
        self._me = me
        self.nodes = nodes

    @property
    def self_name(self) -> str:
        return self._me

    def live(self) -> list[NodeInfo]:
        return sorted(self.nodes, key=lambda n: n.name)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _router(
    me: str, nodes: list[NodeInfo], local_idle: Callable[[str, str], int] = lambda n, v: 0
) -> NatsRouter:
    # choose() reads the directory only: no connection needed
    return NatsRouter(cast(Client, None), Directory(me, nodes), local_idle)


# -- hashing ------------------------------------------------------------------------------


def test_weights_are_stable_across_processes() -> None:
    # A literal: Python's salted hash() (or any change of the function) would differ here,
    # and nodes would disagree about owners.
    assert weight("fn:1", "node-a") == 0x41DD52FB2BDE820E
    assert owner("fn:1", NODES) == owner("fn:1", list(reversed(NODES)))


def test_functions_spread_over_three_nodes() -> None:
    counts = Counter(owner(key, NODES) for key in KEYS)
    assert set(counts) == set(NODES)
    assert all(70 <= c <= 130 for c in counts.values()), counts


def test_removing_a_node_moves_only_its_functions() -> None:
    before = {key: owner(key, NODES) for key in KEYS}
    after = {key: owner(key, ["node-a", "node-c"]) for key in KEYS}
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "node-b"}
    assert {after[key] for key in moved} == {"node-a", "node-c"}


def test_unhealthy_nodes_are_not_chosen() -> None:
    nodes = [_node("node-a"), _node("node-b", problems=("database unreachable",)), _node("node-c")]
    router = _router("node-a", nodes)
    chosen = {router.choose(f"fn-{i}", "$LATEST") for i in range(100)}
    assert chosen == {None, "node-c"}
    # even when it reports idle environments
    nodes[1] = _node("node-b", {"fn-0:$LATEST": 3}, problems=("database unreachable",))
    assert router.choose("fn-0", "$LATEST") != "node-b"


# -- choose ---------------------------------------------------------------------------------


def _owned_by(node: str) -> str:
    """A function name whose $LATEST hashes to `node` among NODES."""
    return next(k.split(":")[0] for k in KEYS if owner(k, NODES) == node)


def test_local_idle_environment_wins() -> None:
    name = _owned_by("node-c")
    idle = {("fn-x", "1"): 1, (name, "$LATEST"): 2}
    router = _router("node-a", [_node(n) for n in NODES], lambda n, v: idle.get((n, v), 0))
    assert router.choose(name, "$LATEST") is None
    idle.clear()
    assert router.choose(name, "$LATEST") == "node-c"


def test_remote_idle_environment_wins_over_the_owner() -> None:
    name = _owned_by("node-c")
    key = version_key(name, "$LATEST")
    nodes = [_node("node-a"), _node("node-b", {key: 1}), _node("node-c")]
    assert _router("node-a", nodes).choose(name, "$LATEST") == "node-b"
    # idle environments of another version do not count
    other = owner(version_key(name, "7"), NODES)
    assert _router("node-a", nodes).choose(name, "7") == (None if other == "node-a" else other)


def test_owner_otherwise_and_none_when_it_is_this_node() -> None:
    nodes = [_node(n) for n in NODES]
    router = _router("node-a", nodes)
    for key in KEYS[:50]:
        name = key.split(":")[0]
        expected = owner(key, NODES)
        assert router.choose(name, "$LATEST") == (None if expected == "node-a" else expected)


def test_alone_runs_everything_here() -> None:
    assert _router("node-a", [_node("node-a")]).choose("fn-1", "$LATEST") is None
    assert _router("node-a", []).choose("fn-1", "$LATEST") is None
    lonely = [_node("node-a"), _node("node-b", {"fn-1:$LATEST": 5}, problems=("nats",))]
    assert _router("node-a", lonely).choose("fn-1", "$LATEST") is None


# -- the wire -------------------------------------------------------------------------------


def test_encodings_round_trip() -> None:
    invoke = ForwardedInvoke(
        function_name="fn",
        version="3",
        qualifier="live",
        payload=b'{"k": "\xc3\xa9"}',
        invocation_type="RequestResponse",
        log_type="Tail",
        client_context='{"custom": {"é": 1}}',
        trace_header=None,
        request_id="r-1",
        tenant_id="t 1",
    )
    assert decode_invoke(encode_invoke(invoke)) == invoke
    result = ForwardedResult(200, (("x-amz-executed-version", "3"), ("a", "")), b"\x00\xff")
    assert decode_result(encode_result(result)) == result
    with pytest.raises(ValueError):
        decode_invoke(encode_invoke(invoke)[:20])
    with pytest.raises(ValueError):
        decode_result(b"\x02\x00")


# -- forward and serve over NATS ------------------------------------------------------------

Run = Callable[[ForwardedInvoke], Awaitable[ForwardedResult]]


def _invoke(payload: bytes = b"{}", name: str = "fn") -> ForwardedInvoke:
    return ForwardedInvoke(
        function_name=name,
        version="$LATEST",
        qualifier=None,
        payload=payload,
        invocation_type="RequestResponse",
    )


async def _pair(
    nats3: NatsCluster, run: Run, server: str | None = None
) -> tuple[NatsRouter, NatsRouter, Client, Client]:
    """A receiving router (on the cluster's first server) and a serving one (on its last),
    named by a prefix of this test's own; returns once a request gets through."""
    prefix = f"t{os.urandom(4).hex()}"
    nodes = [_node("recv"), _node("serve")]
    recv_nc = await nats.connect(nats3.urls[0], allow_reconnect=False)
    serve_nc = await nats.connect(server or nats3.urls[-1], allow_reconnect=False)
    recv = NatsRouter(recv_nc, Directory("recv", nodes), lambda n, v: 0, prefix=prefix)
    serving = NatsRouter(serve_nc, Directory("serve", nodes), lambda n, v: 0, prefix=prefix)
    await serving.serve(run)
    deadline = time.monotonic() + 10
    while True:  # the subscription's interest reaches the other server asynchronously
        try:
            await recv.forward("serve", _invoke(b'{"ping": 1}'), timeout_s=1)
            return recv, serving, recv_nc, serve_nc
        except NodeUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _close(recv: NatsRouter, serving: NatsRouter, *conns: Client) -> None:
    await serving.close()
    await recv.close()
    for nc in conns:
        await nc.close()


async def _echo(invoke: ForwardedInvoke) -> ForwardedResult:
    return ForwardedResult(
        200,
        (("x-amz-executed-version", invoke.version), ("x-name", invoke.function_name)),
        invoke.payload,
    )


def test_forward_round_trips_a_large_binary_payload(nats3: NatsCluster) -> None:
    payload = os.urandom(1_000_000)

    async def run() -> ForwardedResult:
        recv, serving, *conns = await _pair(nats3, _echo)
        try:
            return await recv.forward("serve", _invoke(payload, "big"), timeout_s=3)
        finally:
            await _close(recv, serving, *conns)

    result = asyncio.run(run())
    assert result.status == 200
    assert dict(result.headers) == {"x-amz-executed-version": "$LATEST", "x-name": "big"}
    assert result.body == payload


def test_an_exception_in_run_is_a_service_exception_and_serving_goes_on(
    nats3: NatsCluster,
) -> None:
    async def run(invoke: ForwardedInvoke) -> ForwardedResult:
        if invoke.function_name == "boom":
            raise RuntimeError("secret detail")
        return await _echo(invoke)

    async def go() -> tuple[ForwardedResult, ForwardedResult]:
        recv, serving, *conns = await _pair(nats3, run)
        try:
            failed = await recv.forward("serve", _invoke(name="boom"), timeout_s=3)
            after = await recv.forward("serve", _invoke(b'{"a": 2}'), timeout_s=3)
            return failed, after
        finally:
            await _close(recv, serving, *conns)

    failed, after = asyncio.run(go())
    assert failed.status == 500
    headers = dict(failed.headers)
    assert headers["x-amzn-errortype"] == "ServiceException"
    assert headers["x-amzn-requestid"]
    body = json.loads(failed.body)
    assert body["Type"] == "Service"
    assert "RequestId" in body["Message"] and "secret" not in body["Message"]
    assert int(headers["content-length"]) == len(failed.body)
    assert after.status == 200 and after.body == b'{"a": 2}'


def test_a_node_that_is_gone_is_unavailable_at_once(nats3: NatsCluster) -> None:
    async def go() -> float:
        nc = await nats.connect(nats3.urls[0], allow_reconnect=False)
        router = NatsRouter(nc, Directory("recv", []), lambda n, v: 0, prefix="tgone")
        try:
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match="no responders"):
                await router.forward("nobody", _invoke(), timeout_s=60)
            return time.monotonic() - started
        finally:
            await nc.close()

    # no responders is answered by the server at once, not after the 60 s (+ margin) timeout
    assert asyncio.run(go()) < 5


def test_a_payload_larger_than_nats_takes_is_unavailable(nats3: NatsCluster) -> None:
    async def go() -> None:
        recv, serving, *conns = await _pair(nats3, _echo)
        try:
            with pytest.raises(NodeUnavailable, match="max_payload"):
                await recv.forward("serve", _invoke(b"x" * (9 << 20)), timeout_s=3)
        finally:
            await _close(recv, serving, *conns)

    asyncio.run(go())


def test_a_response_larger_than_nats_takes_is_a_service_exception(nats3: NatsCluster) -> None:
    async def big(invoke: ForwardedInvoke) -> ForwardedResult:
        if invoke.function_name != "big":
            return await _echo(invoke)
        return ForwardedResult(200, (), b"x" * (9 << 20))

    async def go() -> ForwardedResult:
        recv, serving, *conns = await _pair(nats3, big)
        try:
            return await recv.forward("serve", _invoke(name="big"), timeout_s=3)
        finally:
            await _close(recv, serving, *conns)

    result = asyncio.run(go())
    assert result.status == 500
    assert dict(result.headers)["x-amzn-errortype"] == "ServiceException"
    assert "max_payload" in json.loads(result.body)["Message"]


def test_twenty_requests_are_served_concurrently(nats3: NatsCluster) -> None:
    in_flight = 0
    most = 0
    all_in = asyncio.Event()

    async def run(invoke: ForwardedInvoke) -> ForwardedResult:
        nonlocal in_flight, most
        if invoke.function_name != "slow":
            return await _echo(invoke)
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 20:
            all_in.set()
        try:
            # each holds until all twenty run at once: served one by one, none would finish
            await asyncio.wait_for(all_in.wait(), 20)
        finally:
            in_flight -= 1
        return await _echo(invoke)

    async def go() -> list[ForwardedResult]:
        recv, serving, *conns = await _pair(nats3, run)
        try:
            return await asyncio.gather(
                *(
                    recv.forward("serve", _invoke(f'{{"i": {i}}}'.encode(), "slow"), timeout_s=30)
                    for i in range(20)
                )
            )
        finally:
            await _close(recv, serving, *conns)

    results = asyncio.run(go())
    assert most == 20
    assert sorted(json.loads(r.body)["i"] for r in results) == list(range(20))


# -- the scheduler's idle counts ------------------------------------------------------------


def test_scheduler_counts_idle_environments_by_version(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        assert s.idle("fn", "$LATEST") == 0 and s.idle_by_version() == {}
        await s.invoke(unit.config(), unit.request())
        assert s.idle("fn", "$LATEST") == 1
        assert s.idle("fn", "1") == 0
        assert s.idle_by_version() == {"fn:$LATEST": 1}
        # a new revision: the old pool is retired (its idle environment stops), the new
        # one's environment is busy; neither counts
        busy = asyncio.get_running_loop().create_task(
            s.invoke(unit.config("h.slow", revision="r2"), unit.request({"sleep": 0.5}))
        )
        await asyncio.sleep(0)
        assert s.idle("fn", "$LATEST") == 0 and s.idle_by_version() == {}
        assert not busy.done()
        await busy
        assert s.idle_by_version() == {"fn:$LATEST": 1}

    unit.run(tmp_path, body)


# -- through Invoke: one Lamina app, its router forwarding over NATS to its own serving side --


def _echo_handler(event: Any, context: Any) -> Any:
    return {
        "event": event,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
    }


def _failing_handler(event: Any, context: Any) -> Any:
    raise ValueError("nope")


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp) -> AsyncIterator[None]:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


def _state(app: Any) -> AppState:
    """The app's `AppState`, found through the layers around the Starlette app."""
    while True:
        state = getattr(app, "state", None)
        if isinstance(state, AppState):
            return state
        if state is not None and isinstance(getattr(state, "lamina", None), AppState):
            return cast(AppState, state.lamina)
        app = app.app


class _Counting:
    """A router that counts the invocations it forwarded and got an answer for."""

    def __init__(self, router: NatsRouter) -> None:
        self.router = router
        self.answered = 0

    def choose(self, function_name: str, version: str) -> str | None:
        return self.router.choose(function_name, version)

    async def forward(
        self, node: str, invoke: ForwardedInvoke, *, timeout_s: float = 900
    ) -> ForwardedResult:
        result = await self.router.forward(node, invoke, timeout_s=timeout_s)
        self.answered += 1
        return result


def _comparable(response: httpx.Response) -> dict[str, str]:
    """A response's headers but those that differ from one invoke to the next."""
    return {
        k: v
        for k, v in response.headers.items()
        if k not in ("x-amzn-requestid", "x-amz-log-result")
    }


def _body(response: httpx.Response) -> bytes:
    """A response's body, its request id (a failed invoke's body names it) made alike."""
    return response.content.replace(response.headers["x-amzn-requestid"].encode(), b"RID")


def _owned_by_serve(stem: str) -> str:
    return next(
        f"{stem}-{i}"
        for i in range(100)
        if owner(f"{stem}-{i}:$LATEST", ["recv", "serve"]) == "serve"
    )


def test_invoke_forwards_and_answers_as_a_local_invoke(nats3: NatsCluster, tmp_path: Path) -> None:
    """One app plays both nodes: its router names the serving node for these functions (it
    counts no idle environment here), and the serving side runs them with `run_forwarded`
    in the same app. Forwarded answers equal local ones but for the request id and log
    lines; a forwarded invoke is not forwarded again; with the node gone it runs here."""
    catalog = RuntimeCatalog(
        [RuntimeInfo("python3.11", "/nonexistent/python3.11", tmp_path / "runtime")]
    )
    settings = Settings(data_dir=tmp_path / "data", auth=False, install_sdks=False)
    app = create_app(
        settings,
        backend=FakeBackend({"h.echo": _echo_handler, "h.fail": _failing_handler}),
        runtimes=catalog,
    )
    state = _state(app)
    name, failing = _owned_by_serve("fn"), _owned_by_serve("bad")
    # version 1 (behind alias "live") may hash to either: "serve" reports it idle
    nodes = [_node("recv"), _node("serve", {f"{name}:1": 1})]
    prefix = f"t{os.urandom(4).hex()}"

    async def go() -> None:
        async with _lifespan(app):
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l")
            for fn, handler in ((name, "h.echo"), (failing, "h.fail")):
                created = await http.post(
                    "/2015-03-31/functions",
                    json={
                        "FunctionName": fn,
                        "Runtime": "python3.11",
                        "Role": "arn:aws:iam::000000000000:role/x",
                        "Handler": handler,
                        "Code": {"ZipFile": base64.b64encode(make_zip({"h.py": ""})).decode()},
                    },
                )
                assert created.status_code == 201, created.text
            published = await http.post(f"/2015-03-31/functions/{name}/versions", json={})
            assert published.status_code == 201, published.text
            aliased = await http.post(
                f"/2015-03-31/functions/{name}/aliases",
                json={"Name": "live", "FunctionVersion": "1"},
            )
            assert aliased.status_code == 201, aliased.text

            async def call(fn: str, qualifier: str | None = None) -> httpx.Response:
                return await http.post(
                    f"/2015-03-31/functions/{fn}/invocations",
                    params={"Qualifier": qualifier} if qualifier else None,
                    content=b'{"x": "\\u00e9"}',
                    headers={"X-Amz-Log-Type": "Tail"},
                )

            async def direct(fn: str) -> Response:
                """As the front workers' path calls it (`api.workers`)."""
                return await invoke_function(
                    state, fn, None, {"x-amz-log-type": "Tail"}, b'{"x": "\\u00e9"}'
                )

            local = [await call(name), await call(failing), await call(name, "live")]
            local_direct = await direct(name)
            recv_nc = await nats.connect(nats3.urls[0], allow_reconnect=False)
            serve_nc = await nats.connect(nats3.urls[1], allow_reconnect=False)
            serving = NatsRouter(
                serve_nc, Directory("serve", nodes), state.scheduler.idle, prefix=prefix
            )
            router = _Counting(
                NatsRouter(recv_nc, Directory("recv", nodes), lambda n, v: 0, prefix=prefix)
            )
            try:
                await serving.serve(lambda invoke: run_forwarded(state, invoke))
                deadline = time.monotonic() + 10
                while True:  # until the subscription's interest reached the other server
                    try:
                        missing = await router.forward("serve", _invoke(name="nothing"))
                        break
                    except NodeUnavailable:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                assert missing.status == 404
                assert dict(missing.headers)["x-amzn-errortype"] == "ResourceNotFoundException"
                state.router = router
                router.answered = 0
                forwarded = [await call(name), await call(failing), await call(name, "live")]
                # each forwarded once: the serving side ran it without routing it again
                assert router.answered == 3
                assert json.loads(forwarded[2].content)["arn"].endswith(f":{name}:live")
                assert forwarded[2].headers["x-amz-executed-version"] == "1"
                forwarded_direct = await direct(name)
                assert router.answered == 4
                # asynchronous and dry-run invokes are this node's (the async queue)
                for kind, status in (("Event", 202), ("DryRun", 204)):
                    other = await http.post(
                        f"/2015-03-31/functions/{name}/invocations",
                        headers={"X-Amz-Invocation-Type": kind},
                    )
                    assert other.status_code == status
                assert router.answered == 4
                assert forwarded_direct.status_code == local_direct.status_code == 200
                assert bytes(forwarded_direct.body) == bytes(local_direct.body)
                for before, after in zip(local, forwarded, strict=True):
                    assert after.status_code == before.status_code == 200
                    assert _comparable(after) == _comparable(before)
                    assert _body(after) == _body(before)
                assert forwarded[1].headers["x-amz-function-error"] == "Unhandled"
                tail = base64.b64decode(forwarded[0].headers["x-amz-log-result"])
                rid = forwarded[0].headers["x-amzn-requestid"]
                # the log tail of the run there, under the request id the receiving node gave
                assert f"START RequestId: {rid}".encode() in tail
                # the serving node gone: the invoke runs here
                await serving.close()
                await serve_nc.close()
                alone = await call(name)
                assert alone.status_code == 200 and alone.content == local[0].content
                assert router.answered == 4
            finally:
                state.router = None
                await serving.close()
                await recv_nc.close()
                if not serve_nc.is_closed:
                    await serve_nc.close()
                await http.aclose()

    asyncio.run(go())


def test_a_function_the_serving_node_has_not_heard_of_yet_is_read_and_run(
    tmp_path: Path,
) -> None:
    """An invocation forwarded the moment its function was made (the change's news not yet
    there) is read from the database and run, not answered 404."""
    catalog = RuntimeCatalog(
        [RuntimeInfo("python3.11", "/nonexistent/python3.11", tmp_path / "runtime")]
    )
    settings = Settings(data_dir=tmp_path / "data", auth=False, install_sdks=False)
    app = create_app(settings, backend=FakeBackend({"h.echo": _echo_handler}), runtimes=catalog)
    state = _state(app)

    async def go() -> ForwardedResult:
        async with _lifespan(app):
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l")
            created = await http.post(
                "/2015-03-31/functions",
                json={
                    "FunctionName": "fresh",
                    "Runtime": "python3.11",
                    "Role": "arn:aws:iam::000000000000:role/x",
                    "Handler": "h.echo",
                    "Code": {"ZipFile": base64.b64encode(make_zip({"h.py": ""})).decode()},
                },
            )
            assert created.status_code == 201, created.text
            state.functions._forget_function("fresh")  # as a node the news has not reached
            assert state.functions.version("fresh", "$LATEST") is None
            return await run_forwarded(
                state,
                ForwardedInvoke("fresh", "$LATEST", None, b'{"a": 1}', "RequestResponse"),
            )

    result = asyncio.run(go())
    assert result.status == 200, result.body
