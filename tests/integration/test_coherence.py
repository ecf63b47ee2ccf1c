"""Two whole servers (`create_app`) on one database, joined by an in-memory change feed: what
is written through one is served by the other at once, its environments included."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import make_zip

from lamina.cluster.api import ChangeHandler
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.server import create_app
from lamina.settings import Settings

pytestmark = pytest.mark.control_plane

ROLE = "arn:aws:iam::000000000000:role/runner"
FN = "/2015-03-31/functions"


def memory(event: Any, context: Any) -> Any:
    return {"memory": int(context.memory_limit_in_mb)}


class Hub:
    def __init__(self) -> None:
        self.handlers: list[tuple[int, ChangeHandler]] = []


class Feed:
    def __init__(self, hub: Hub, node: int) -> None:
        self._hub, self._node = hub, node

    async def publish(self, area: str, key: str) -> None:
        for node, handler in self._hub.handlers:
            if node != self._node:
                await handler(area, key)

    def subscribe(self, handler: ChangeHandler) -> None:
        self._hub.handlers.append((self._node, handler))


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan around a client of it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.get_running_loop().create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), 60)
    assert started["type"] == "lifespan.startup.complete", started
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), 60)
        await task


def test_a_function_written_through_one_server_runs_on_the_other(tmp_path: Path) -> None:
    runtime = RuntimeInfo("python3.12", sys.executable, tmp_path / "rt")
    settings = Settings(
        data_dir=tmp_path / "data",
        auth=False,
        install_sdks=False,
        # Nothing listens there: the mapping below is disabled, so nothing polls it.
        sqs_endpoint="http://127.0.0.1:9",
    )
    hub = Hub()

    def app(node: int) -> Any:
        return create_app(
            settings,
            backend=FakeBackend({"app.handler": memory}),
            runtimes=RuntimeCatalog([runtime]),
            feed=Feed(hub, node),
        )

    async def main() -> None:
        a_app, b_app = app(1), app(2)
        async with serving(a_app) as a, serving(b_app) as b:
            zipped = base64.b64encode(make_zip({"app.py": "x = 1\n"})).decode()
            created = await a.post(
                FN,
                json={
                    "FunctionName": "fn",
                    "Runtime": "python3.12",
                    "Role": ROLE,
                    "Handler": "app.handler",
                    "MemorySize": 128,
                    "Code": {"ZipFile": zipped},
                },
            )
            assert created.status_code == 201, created.text
            got = await b.get(f"{FN}/fn")
            assert got.status_code == 200, got.text
            ran = await b.post(f"{FN}/fn/invocations", content=b"{}")
            assert ran.status_code == 200, ran.text
            assert json.loads(ran.content) == {"memory": 128}
            updated = await a.put(f"{FN}/fn/configuration", json={"MemorySize": 256})
            assert updated.status_code == 200, updated.text
            ran = await b.post(f"{FN}/fn/invocations", content=b"{}")
            assert json.loads(ran.content) == {"memory": 256}
            alias = await a.post(
                f"{FN}/fn/aliases", json={"Name": "live", "FunctionVersion": "$LATEST"}
            )
            assert alias.status_code == 201, alias.text
            ran = await b.post(f"{FN}/fn/invocations?Qualifier=live", content=b"{}")
            assert json.loads(ran.content) == {"memory": 256}
            route = await a.post(
                "/lamina/routes", json={"routeKey": "GET /mem", "function": "fn:live"}
            )
            assert route.status_code == 201, route.text
            served = await b.get("/_http/mem")
            assert served.status_code == 200, served.text
            assert json.loads(served.content) == {"memory": 256}
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
            role = await a.put("/lamina/roles/runner", json={"Policies": [policy]})
            assert role.status_code == 200, role.text
            got_role = await b.get("/lamina/roles/runner")
            assert got_role.status_code == 200, got_role.text
            removed = await a.delete("/lamina/routes", params={"routeKey": "GET /mem"})
            assert removed.status_code == 204, removed.text
            assert (await b.get("/_http/mem")).status_code == 404
            esm = "/2015-03-31/event-source-mappings"
            source = "arn:aws:sqs:us-east-1:000000000000:orders"
            made = await a.post(
                esm, json={"FunctionName": "fn", "EventSourceArn": source, "Enabled": False}
            )
            assert made.status_code == 202, made.text
            uid = made.json()["UUID"]
            mapping = await b.get(f"{esm}/{uid}")
            assert mapping.status_code == 200, mapping.text
            assert mapping.json()["BatchSize"] == 10
            changed = await a.put(f"{esm}/{uid}", json={"BatchSize": 5})
            assert changed.status_code == 202, changed.text
            assert (await b.get(f"{esm}/{uid}")).json()["BatchSize"] == 5
            deleted = await a.delete(f"{FN}/fn")
            assert deleted.status_code == 204, deleted.text
            gone = await b.post(f"{FN}/fn/invocations", content=b"{}")
            assert gone.status_code == 404, gone.text
            # The function's mappings go with it, on both.
            deadline = asyncio.get_running_loop().time() + 30
            while (await b.get(f"{esm}/{uid}")).status_code != 404:
                assert asyncio.get_running_loop().time() < deadline, "the mapping stayed on B"
                await asyncio.sleep(0.05)
            assert (await a.get(f"{esm}/{uid}")).status_code == 404

    asyncio.run(main())
