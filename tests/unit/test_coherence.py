"""Two nodes' control planes on one database stay coherent through the change feed.

Each node is the real services (functions, roles, rules, brokers, keys) over one SQLite file
and data directory, as two cluster nodes share one PostgreSQL database; an in-memory feed
delivers one node's publishes to the other's `ChangeApplier`, as the NATS feed does.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from lamina.auth.keys import KeyStore
from lamina.cluster.api import ChangeHandler
from lamina.control import FunctionService
from lamina.control.brokers import BrokerService
from lamina.control.changes import ChangeApplier, Refresh
from lamina.control.function_input import FunctionInput
from lamina.control.function_policies import PermissionInput
from lamina.control.roles import RoleService
from lamina.control.rules import RuleService
from lamina.errors import PreconditionFailedError, ResourceConflictError, ResourceNotFoundError
from lamina.events.http_routes import HttpRoutes
from lamina.models import LATEST
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.settings import Settings
from lamina.store import CodeStore, MetadataStore
from lamina.store.event_sources import EventSourceStore
from lamina.store.http_routes import RouteStore
from lamina.store.roles import RoleStore
from lamina.store.rules import RuleStore
from lamina.store.sealed import Sealer

ROLE = "arn:aws:iam::000000000000:role/runner"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


class Hub:
    """An in-memory change feed: what one node publishes reaches every other node."""

    def __init__(self) -> None:
        self.handlers: list[tuple[object, ChangeHandler]] = []
        self.published: list[tuple[str, str]] = []

    def feed(self, node: object) -> _Feed:
        return _Feed(self, node)


class _Feed:
    def __init__(self, hub: Hub, node: object) -> None:
        self._hub = hub
        self._node = node

    async def publish(self, area: str, key: str) -> None:
        self._hub.published.append((area, key))
        for node, handler in self._hub.handlers:
            if node is not self._node:
                await handler(area, key)

    def subscribe(self, handler: ChangeHandler) -> None:
        self._hub.handlers.append((self._node, handler))


class Node:
    """One node's control plane (what `server.create_app` builds of it)."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        runtime = RuntimeInfo("python3.12", sys.executable, settings.data_dir / "rt")
        self.metadata = MetadataStore.sqlite(settings.db_path, Sealer.open(settings.data_dir))
        self.functions = FunctionService(
            settings, self.metadata, CodeStore(settings.code_dir), RuntimeCatalog([runtime])
        )
        self.roles = RoleService(settings, RoleStore(self.metadata), self.functions)
        self.rules = RuleService(settings, RuleStore.sqlite(settings.db_path))
        store = EventSourceStore(self.metadata.engine, Sealer.open(settings.data_dir))
        self.brokers = BrokerService(settings, store, self.functions.run)
        self.keys = KeyStore(settings.data_dir, settings.account_id)
        #: what the local subscribers were told: (name, version)
        self.told: list[tuple[str, str | None]] = []
        self.reserved: list[tuple[str, int | None]] = []
        self.replans = 0

        async def changed(name: str, version: str | None) -> None:
            self.told.append((name, version))

        def replan() -> None:
            self.replans += 1

        self.functions.subscribe(changed)
        self.functions.concurrency.on_change = lambda n, r: self.reserved.append((n, r))
        self.rules.on_change = replan
        self.feed = feed = hub.feed(self)
        for service in (self.functions, self.functions.layers, self.roles, self.rules):
            service.feed = feed
        self.functions.signing.feed = feed
        self.brokers.feed = self.keys.feed = feed
        #: what the node's applier refreshes, by area
        self.areas: dict[str, Refresh] = {
            "function": self.functions.refresh,
            "layer": self.functions.layers.refresh,
            "code-signing": self.functions.signing.refresh,
            "capacity-provider": self.functions.capacity.refresh,
            "role": self.roles.refresh,
            "rule": self.rules.refresh,
            "broker": self.brokers.refresh,
            "key": self.keys.refresh,
        }
        self.applier = ChangeApplier(self.areas)
        feed.subscribe(self.applier)

    async def load(self) -> None:
        await self.functions.load()
        await self.roles.load()
        await self.brokers.load()
        await self.rules.load()

    def close(self) -> None:
        self.functions.close()
        self.rules.close()
        self.keys.close()


def run_nodes(tmp_path: Path, test: Callable[[Node, Node, Hub], Awaitable[None]]) -> None:
    settings = Settings(data_dir=tmp_path, auth=False)
    hub = Hub()

    async def main() -> None:
        a, b = Node(settings, hub), Node(settings, hub)
        try:
            await a.load()
            await b.load()
            await test(a, b, hub)
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def code(text: str = "def handler(event, context):\n    return 1\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", text)
    return buf.getvalue()


async def create(node: Node, name: str = "fn", **fields: Any) -> None:
    req = FunctionInput(
        name=name,
        runtime="python3.12",
        role=ROLE,
        handler="app.handler",
        zip_file=code(),
        **fields,
    )
    await node.functions.create(req)


def test_a_function_created_on_one_node_is_served_by_the_other(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        assert ("function", "fn") in hub.published
        config = b.functions.resolve(b.functions.ref("fn"))
        assert config.handler == "app.handler"
        assert (await b.functions.get(b.functions.ref("fn"))).latest == config
        assert b.told == [("fn", LATEST)]

    run_nodes(tmp_path, test)


def test_a_config_update_retires_the_other_nodes_environments(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        b.told.clear()
        await a.functions.update_config(a.functions.ref("fn"), FunctionInput(timeout=42))
        assert b.functions.require("fn").timeout == 42
        assert b.told == [("fn", LATEST)]
        await a.functions.update_code(a.functions.ref("fn"), code("x = 2\n"), None)
        assert b.functions.require("fn").code_sha256 == a.functions.require("fn").code_sha256
        assert b.told == [("fn", LATEST), ("fn", LATEST)]

    run_nodes(tmp_path, test)


def test_versions_and_alias_weights_move_on_the_other_node(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        await a.functions.publish(a.functions.ref("fn"))
        await a.functions.update_config(a.functions.ref("fn"), FunctionInput(timeout=9))
        await a.functions.publish(a.functions.ref("fn"))
        assert b.functions.version("fn", "2") is not None
        assert ("fn", "2") in b.told
        await a.functions.aliases.create("fn", "live", "1")
        assert b.functions.resolve(b.functions.ref("fn", "live")).version == "1"
        await a.functions.aliases.update("fn", "live", "2")
        assert b.functions.resolve(b.functions.ref("fn", "live")).version == "2"
        await a.functions.aliases.update(
            "fn", "live", "1", routing={"AdditionalVersionWeights": {"2": 0.5}}
        )
        assert b.functions.aliases.get("fn", "live") == a.functions.aliases.get("fn", "live")
        assert b.functions.aliases.get("fn", "live").routing == {"2": 0.5}
        picked = {b.functions.resolve(b.functions.ref("fn", "live")).version for _ in range(200)}
        assert picked == {"1", "2"}

    run_nodes(tmp_path, test)


def test_a_deleted_function_is_gone_on_the_other_node(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        await a.functions.concurrency.put(a.functions.ref("fn"), 5)
        assert b.reserved == [("fn", 5)]
        b.told.clear()
        await a.functions.delete(a.functions.ref("fn"))
        with pytest.raises(ResourceNotFoundError):
            b.functions.resolve(b.functions.ref("fn"))
        assert b.told == [("fn", None)]
        assert b.reserved == [("fn", 5), ("fn", None)]

    run_nodes(tmp_path, test)


def test_roles_rules_brokers_and_keys_follow(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await a.roles.put("runner", [POLICY])
        assert b.roles.policies_for(ROLE) == (POLICY,)
        await a.roles.delete("runner")
        assert b.roles.policies_for(ROLE) == ()
        await a.rules.put_rule("tick", schedule_expression="rate(1 minute)")
        assert b.rules.get("tick").schedule_expression == "rate(1 minute)"
        assert b.replans == 1
        await a.brokers.add("q", "nats://127.0.0.1:4222")
        assert [x.name for x in b.brokers.brokers()] == ["q"]
        key_id, secret = await a.keys.create_async("ci")
        assert b.keys.secret_for(key_id, None) == secret
        await a.keys.delete_async(key_id)
        assert key_id not in {k.access_key_id for k in b.keys.access_keys()}

    run_nodes(tmp_path, test)


def test_a_resync_brings_a_node_that_missed_changes_up_to_date(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a, "kept")
        await create(a, "dropped")
        hub.handlers = [(n, h) for n, h in hub.handlers if n is a]  # b hears nothing now
        await create(a, "new")
        await a.functions.update_config(a.functions.ref("kept"), FunctionInput(timeout=7))
        await a.functions.delete(a.functions.ref("dropped"))
        await a.roles.put("runner", [POLICY])
        await a.rules.put_rule("tick", schedule_expression="rate(1 minute)")
        b.told.clear()
        await b.applier.resync()
        assert sorted(c.name for c in b.functions.all_configs()) == ["kept", "new"]
        assert b.functions.require("kept").timeout == 7
        assert sorted(b.told) == [("dropped", None), ("kept", LATEST), ("new", LATEST)]
        assert b.roles.policies_for(ROLE) == (POLICY,)
        assert b.rules.get("tick")

    run_nodes(tmp_path, test)


def test_a_refresh_of_what_did_not_change_fires_nothing(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        await a.functions.publish(a.functions.ref("fn"))
        await a.functions.aliases.create("fn", "live", "1")
        await a.functions.concurrency.put(a.functions.ref("fn"), 3)
        await a.rules.put_rule("tick", schedule_expression="rate(1 minute)")
        b.told.clear()
        b.reserved.clear()
        replans = b.replans
        await b.applier("function", "fn")
        await b.applier.resync()
        assert b.told == []
        assert b.reserved == []
        assert b.replans == replans

    run_nodes(tmp_path, test)


def test_a_change_that_arrives_during_a_local_write_is_applied_after_it(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        b.told.clear()
        b.functions._busy.add("fn")  # as while B's own update of fn is under way
        await a.functions.update_config(a.functions.ref("fn"), FunctionInput(timeout=33))
        assert b.functions.require("fn").timeout != 33
        b.functions._done("fn")
        deadline = asyncio.get_running_loop().time() + 10
        while not b.told:
            assert asyncio.get_running_loop().time() < deadline, "B never re-read fn"
            await asyncio.sleep(0.01)
        assert b.told == [("fn", LATEST)]
        assert b.functions.require("fn").timeout == 33

    run_nodes(tmp_path, test)


def deafen(hub: Hub, node: Node) -> None:
    """From now on `node` hears nothing (as a node whose feed lags)."""
    hub.handlers = [(n, h) for n, h in hub.handlers if n is not node]


def test_a_write_on_a_node_that_missed_a_change_is_refused_then_catches_up(
    tmp_path: Path,
) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a, "changed")
        await create(a, "deleted")
        deafen(hub, b)
        await a.functions.update_config(a.functions.ref("changed"), FunctionInput(timeout=5))
        await a.functions.delete(a.functions.ref("deleted"))
        with pytest.raises(PreconditionFailedError):
            await b.functions.update_config(b.functions.ref("changed"), FunctionInput(timeout=6))
        with pytest.raises(ResourceNotFoundError):
            await b.functions.update_config(b.functions.ref("deleted"), FunctionInput(timeout=6))

        def caught_up() -> bool:
            return b.functions.require("changed").timeout == 5 and not b.functions.latest("deleted")

        deadline = asyncio.get_running_loop().time() + 10
        while not caught_up():
            assert asyncio.get_running_loop().time() < deadline, "B never re-read"
            await asyncio.sleep(0.01)
        await b.functions.update_config(b.functions.ref("changed"), FunctionInput(timeout=6))
        assert (await a.functions.get(a.functions.ref("changed"))).latest.timeout == 6

    run_nodes(tmp_path, test)


def test_a_constraint_the_database_catches_is_a_conflict_not_a_crash(tmp_path: Path) -> None:
    def duplicate() -> None:
        raise IntegrityError("INSERT ...", None, Exception("UNIQUE constraint failed"))

    async def test(a: Node, b: Node, hub: Hub) -> None:
        with pytest.raises(ResourceConflictError):
            await a.functions.run(duplicate)
        with pytest.raises(ResourceConflictError):
            await a.rules._run(duplicate)

    run_nodes(tmp_path, test)


def test_a_name_taken_on_another_node_is_a_conflict(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        deafen(hub, b)
        await create(a)
        with pytest.raises(ResourceConflictError):
            await create(b)
        await a.functions.publish(a.functions.ref("fn"))
        await a.functions.aliases.create("fn", "live", "1")
        await b.functions.refresh("fn")
        b.functions.aliases.forget_function("fn")  # as if B had not heard of the alias yet
        with pytest.raises(ResourceConflictError):
            await b.functions.aliases.create("fn", "live", "1")

    run_nodes(tmp_path, test)


def test_a_functions_settings_follow(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        ref = a.functions.ref("fn")
        url = await a.functions.urls.create(ref, "NONE")
        assert b.functions.urls.by_id(url.url_id) == url
        await a.functions.event_invoke.put(ref, retries=1)
        found = b.functions.event_invoke.effective("fn", None)
        assert found is not None and found.maximum_retry_attempts == 1
        permission = PermissionInput(
            statement_id="s3", action="lambda:InvokeFunction", principal="s3.amazonaws.com"
        )
        await a.functions.policies.add(ref, permission)
        assert b.functions.policies.get(b.functions.ref("fn")) == a.functions.policies.get(ref)
        await a.functions.urls.delete(ref)
        assert b.functions.urls.by_id(url.url_id) is None
        await a.functions.policies.remove(ref, "s3")
        with pytest.raises(ResourceNotFoundError):
            b.functions.policies.get(b.functions.ref("fn"))

    run_nodes(tmp_path, test)


def test_code_signing_configs_and_capacity_providers_follow(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        profile = "arn:aws:signer:us-east-1:000000000000:/signing-profiles/p/abcdef1234"
        config = await a.functions.signing.create(
            "ci", {"SigningProfileVersionArns": [profile]}, None, None
        )
        assert b.functions.signing.find(config.arn) == config
        await a.functions.signing.delete(config.arn)
        with pytest.raises(ResourceNotFoundError):
            b.functions.signing.find(config.arn)
        body = {
            "CapacityProviderName": "pool",
            "VpcConfig": {"SubnetIds": ["subnet-0a1b2c"], "SecurityGroupIds": ["sg-0a1b2c"]},
            "PermissionsConfig": {"CapacityProviderOperatorRoleArn": ROLE},
        }
        await a.functions.capacity.create(body)
        assert b.functions.capacity.get("pool") == a.functions.capacity.get("pool")
        await a.functions.capacity.delete("pool")
        with pytest.raises(ResourceNotFoundError):
            b.functions.capacity.get("pool")

    run_nodes(tmp_path, test)


def test_routes_in_a_cluster_are_the_databases(tmp_path: Path) -> None:
    """Each node has its own route file; the database's routes are what every node serves."""
    seed = {"routes": [{"routeKey": "GET /a", "function": "fn"}]}
    (tmp_path / "a.json").write_text(json.dumps(seed))
    (tmp_path / "b.json").write_text(json.dumps({"routes": []}))

    def routes(node: Node, file: str) -> HttpRoutes:
        settings = Settings(data_dir=tmp_path, routes_file=tmp_path / file)
        served = HttpRoutes(settings, node.functions, RouteStore(node.metadata.engine))
        served.feed = node.feed
        node.areas["route"] = served.refresh
        return served

    async def test(a: Node, b: Node, hub: Hub) -> None:
        await create(a)
        on_a, on_b = routes(a, "a.json"), routes(b, "b.json")
        await on_a.load()  # the first node seeds the database from its file
        await on_b.load()
        assert [r.route_key for r in on_b.table.routes] == ["GET /a"]
        assert on_b.api_id == on_a.api_id
        await on_a.add({"routeKey": "GET /b", "function": "fn"})
        assert [r.route_key for r in on_b.table.routes] == ["GET /a", "GET /b"]
        await on_b.remove("GET /a")
        assert [r.route_key for r in on_a.table.routes] == ["GET /b"]
        deafen(hub, b)
        await on_a.add({"routeKey": "GET /c", "function": "fn"})
        with pytest.raises(ResourceConflictError):
            await on_b.add({"routeKey": "GET /d", "function": "fn"})
        assert [r.route_key for r in on_b.table.routes] == ["GET /b", "GET /c"]
        await on_b.add({"routeKey": "GET /d", "function": "fn"})
        assert [r.route_key for r in on_a.table.routes] == ["GET /b", "GET /c", "GET /d"]
        assert json.loads((tmp_path / "b.json").read_text()) == {"routes": []}

    run_nodes(tmp_path, test)


def test_the_route_store_takes_one_write_per_revision(tmp_path: Path) -> None:
    async def test(a: Node, b: Node, hub: Hub) -> None:
        one, two = RouteStore(a.metadata.engine), RouteStore(b.metadata.engine)
        assert one.read() is None
        assert one.write({"routes": [1]}, None) == 1
        assert two.write({"routes": [2]}, None) is None  # seeded already
        assert two.write({"routes": [2]}, 1) == 2
        assert one.write({"routes": [3]}, 1) is None  # read before the other's write
        assert one.read() == ({"routes": [2]}, 2)

    run_nodes(tmp_path, test)
