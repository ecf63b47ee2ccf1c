"""The SQL stores behave the same on SQLite and PostgreSQL: each test runs on both back ends
(the `db_url` fixture), on a database `open_database` made at head.

What PostgreSQL adds is checked too: two nodes' writes meeting in one database (keys made on
one node known to another, usage summed across nodes, a function created by two nodes at
once created once)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from tests.conftest import wait_for

from lamina.auth.keys import KeyStore
from lamina.auth.sigv4 import UnrecognizedClient
from lamina.mappings import Broker, EventSourceMapping, MappingState, SourceKind
from lamina.models import (
    LATEST,
    Alias,
    EventInvokeConfig,
    FunctionConfig,
    FunctionLayer,
    FunctionUrl,
    LayerVersion,
    Role,
    Rule,
    RuleState,
    RuleTarget,
    UrlCors,
)
from lamina.observability import Meter, Report, Usage
from lamina.store import MetadataStore
from lamina.store.engine import open_database
from lamina.store.event_sources import EventSourceStore, StoredBroker, StoredSecret
from lamina.store.function_policies import FunctionPolicyStore
from lamina.store.function_urls import FunctionUrlStore
from lamina.store.roles import RoleStore
from lamina.store.rules import RuleStore
from lamina.store.schema import function_versions
from lamina.store.sealed import SealedError, Sealer

KEY = bytes(range(32))
ACCOUNT = "000000000000"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lamina.db'}"
    url: str = request.getfixturevalue("database_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    opened = open_database(db_url, cluster=False)
    yield opened
    opened.dispose()


@pytest.fixture
def metadata(engine: Engine) -> MetadataStore:
    return MetadataStore(engine, Sealer(KEY))


def config(name: str, version: str = LATEST, **fields: object) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        version=version,
        runtime="python3.12",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_sha256="ab" * 32,
        code_size=1234,
        revision_id="r1",
        last_modified=NOW,
        **fields,  # type: ignore[arg-type]
    )


def test_functions_versions_aliases_and_layers_round_trip(metadata: MetadataStore) -> None:
    layer = metadata.publish_layer_version(
        LayerVersion(
            name="deps",
            version=0,
            code_sha256="cd" * 32,
            code_size=99,
            created=NOW,
            description="d",
            compatible_runtimes=("python3.12",),
            compatible_architectures=("x86_64",),
            license_info="MIT",
        )
    )
    assert layer.version == 1
    again = metadata.publish_layer_version(layer)
    assert again.version == 2
    assert metadata.get_layer_version("deps", 1) == layer
    assert [v.version for v in metadata.layer_versions("deps")] == [2, 1]

    ref = FunctionLayer(
        arn="arn:aws:lambda:us-east-1:000000000000:layer:deps:1",
        code_sha256="cd" * 32,
        code_size=99,
    )
    latest = config("fn", environment={"A": "1", "SECRET": "s3cret"}, layers=(ref,), timeout=30)
    assert metadata.create_function(latest, {"team": "x"})
    assert not metadata.create_function(latest, {})
    fn = metadata.get_function("fn")
    assert fn is not None and fn.latest == latest and fn.tags == {"team": "x"}

    published = metadata.publish_version(replace(latest, revision_id="r2"), expect_revision="r1")
    assert published is not None and published.version == "1"
    assert (
        metadata.publish_version(replace(latest, revision_id="r3"), expect_revision="stale") is None
    )
    assert metadata.get_version("fn", "1") == published
    assert {c.version for c in metadata.list_versions("fn")} == {LATEST, "1"}

    alias = Alias("fn", "live", "1", "a1", description="prod", routing={"1": 0.25})
    assert metadata.create_alias(alias) and not metadata.create_alias(alias)
    assert metadata.all_aliases() == [alias]
    assert metadata.replace_alias(Alias("fn", "live", "1", "a2"), expect_revision="a1")
    assert not metadata.replace_alias(Alias("fn", "live", "1", "a3"), expect_revision="a1")

    assert metadata.set_reserved_concurrency("fn", 7)
    assert metadata.reserved_concurrency() == {"fn": 7}
    metadata.put_provisioned("fn", "live", 3, NOW)
    assert metadata.all_provisioned() == [("fn", "live", 3, NOW)]
    invoke = EventInvokeConfig("fn", "1", NOW, maximum_retry_attempts=1, on_failure="arn:x")
    assert metadata.put_event_invoke(invoke)
    assert metadata.all_event_invoke() == [invoke]

    assert metadata.code_in_use("cd" * 32) and metadata.referenced_code() == {"ab" * 32, "cd" * 32}
    assert metadata.delete_version("fn", "1")
    assert metadata.all_event_invoke() == []
    assert metadata.delete_function("fn")
    assert metadata.get_function("fn") is None and metadata.all_aliases() == []
    assert metadata.delete_layer_version("deps", 1) == layer


def test_environment_values_are_sealed_in_the_database(engine: Engine) -> None:
    store = MetadataStore(engine, Sealer(KEY))
    assert store.create_function(config("fn", environment={"TOKEN": "hunter2"}), {})
    with engine.begin() as conn:
        stored = conn.execute(select(function_versions.c.environment)).scalar_one()
    assert isinstance(stored, str) and b"hunter2" not in base64.b64decode(stored)
    fn = store.get_function("fn")
    assert fn is not None and fn.latest.environment == {"TOKEN": "hunter2"}
    other = MetadataStore(engine, Sealer(bytes(32)))
    with pytest.raises(SealedError, match="cannot be unsealed"):
        other.get_function("fn")


def test_urls_and_policies(metadata: MetadataStore) -> None:
    urls, policies = FunctionUrlStore(metadata), FunctionPolicyStore(metadata)
    url = FunctionUrl(
        "fn",
        LATEST,
        "a" * 32,
        "NONE",
        "BUFFERED",
        NOW,
        NOW,
        UrlCors(allow_origins=("*",), max_age=5),
    )
    assert not urls.create(url)  # no such function yet
    assert metadata.create_function(config("fn"), {})
    assert urls.create(url) and not urls.create(url)
    assert urls.all() == [url]
    changed = FunctionUrl(
        "fn", LATEST, "a" * 32, "AWS_IAM", "RESPONSE_STREAM", NOW, NOW + timedelta(seconds=1)
    )
    assert urls.replace(changed) and urls.all() == [changed]

    assert policies.put("fn", "", '{"Statement": []}', "p1", expect_revision=None)
    assert not policies.put("fn", "", '{"Statement": [1]}', "p2", expect_revision=None)
    assert policies.put("fn", "", '{"Statement": [1]}', "p2", expect_revision="p1")
    assert policies.all() == {("fn", ""): ('{"Statement": [1]}', "p2")}
    assert not policies.put("fn", "9", "{}", "p", expect_revision=None)  # no version 9

    assert metadata.delete_function("fn")  # its URL and policies go with it
    assert urls.all() == [] and policies.all() == {}


def test_rules(engine: Engine) -> None:
    store = RuleStore(engine)
    rule = Rule(
        "nightly", "default", RuleState.ENABLED, NOW, NOW, schedule_expression="rate(1 day)"
    )
    store.put(rule)
    store.set_targets("nightly", [RuleTarget("t1", "arn:aws:lambda:us-east-1:0:function:fn")])
    [got] = store.all()
    assert got.schedule_expression == "rate(1 day)" and got.created_at == NOW
    assert [t.id for t in got.targets] == ["t1"]
    tick = NOW + timedelta(days=1)
    assert store.claim_tick("nightly", tick) and not store.claim_tick("nightly", tick)
    store.put(rule)  # a stale copy does not move the tick back
    assert store.all()[0].last_tick == tick
    assert store.delete("nightly") and store.all() == []


def test_roles(metadata: MetadataStore) -> None:
    store = RoleStore(metadata)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    role = Role("Admin", "/", "arn:aws:iam::000000000000:role/Admin", (policy,), NOW, "d")
    store.put(role)
    store.put(Role("admin", "/", "arn:aws:iam::000000000000:role/admin", (), NOW))  # replaces
    assert [r.name for r in store.all()] == ["admin"]
    assert store.delete("ADMIN") and not store.delete("admin")


def test_event_source_mappings_brokers_and_secrets(engine: Engine) -> None:
    store = EventSourceStore(engine, Sealer(KEY))
    mapping = EventSourceMapping(
        uuid="7c8e3f1a-0000-4000-8000-000000000001",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
        function_name="fn",
        qualifier=None,
        source_arn="arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
        kind=SourceKind.RABBITMQ,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=1_700_000_000.5,
        last_result="No records processed",
        batch_size=10,
        batching_window_s=0,
        queues=("orders",),
        tags={"k": "v"},
    )
    store.put_mapping(mapping)
    store.set_results({mapping.uuid: "OK", "gone": "OK"})
    [got] = store.all_mappings()
    assert got.last_result == "OK" and got.queues == ("orders",) and got.tags == {"k": "v"}

    broker = Broker("b", SourceKind.RABBITMQ, "b-1", "arn:b", "amqp://u@h/", 1.0)
    store.put_broker(StoredBroker(broker, "amqp://u:pw@h/"))
    assert store.all_brokers() == [StoredBroker(broker, "amqp://u:pw@h/")]
    secret = StoredSecret("s", "arn:aws:secretsmanager:us-east-1:0:secret:s", "u", "pw", 2.0)
    store.put_secret(secret)
    assert store.all_secrets() == [secret]
    with pytest.raises(SealedError):
        EventSourceStore(engine, Sealer(bytes(32))).all_secrets()
    assert store.delete_mapping(mapping.uuid) and store.delete_broker("b")
    assert store.delete_secret("s") and not store.delete_secret("s")


def test_keys_are_shared_by_the_stores_on_one_database(tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for node in ("a", "b"):  # the cluster's one sealing key, in each node's data directory
        (tmp_path / node / "secret.key").write_bytes(KEY)
    a = KeyStore(tmp_path / "a", ACCOUNT, engine=engine)
    key_id, secret = a.create("alice")
    policy = {"Version": "2012-10-17", "Statement": []}
    a.attach_policy(key_id, policy)
    b = KeyStore(tmp_path / "b", ACCOUNT, engine=engine)
    assert b.secret_for(key_id, None) == secret
    assert b.principal(key_id).policies == (policy,)
    with pytest.raises(Exception, match="already exists"):
        b.create("again", access_key_id=key_id, secret="x")
    b.delete(key_id)
    a.reload()
    with pytest.raises(UnrecognizedClient):
        a.secret_for(key_id, None)
    assert not (tmp_path / "a" / "auth.db").exists()  # the database's, not a file of its own


def _report(ms: float, memory: int = 256) -> Report:
    return Report("r", ms, memory, 10, function_name="fn", version="1")


def test_usage_of_two_nodes_adds_up(engine: Engine) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC).timestamp()

    async def node(durations: list[float]) -> None:
        meter = Meter(engine, clock=lambda: day + 60)
        await meter.open()
        for d in durations:
            meter.record(_report(d))
        await meter.close()

    async def both() -> list[Usage]:
        await asyncio.gather(node([10, 20]), node([30]))
        meter = Meter(engine)
        await meter.open()
        try:
            return await meter.usage(since_day="2026-03-01")
        finally:
            await meter.close()

    assert asyncio.run(both()) == [Usage("fn", "1", "2026-03-01", 3, 60, 60 * 256)]
    big = 10_000 * 10_240 * 30  # 3e9 MB-ms: more than a 32-bit column holds

    async def heavy() -> list[Usage]:
        meter = Meter(engine, clock=lambda: day + 60)
        await meter.open()
        meter.record(_report(300_000, 10_240))
        try:
            return await meter.usage(function="fn")
        finally:
            await meter.close()

    assert asyncio.run(heavy())[0].mb_ms == 60 * 256 + big


def _race(database_url: str, table: str, create: Callable[[MetadataStore], bool]) -> list[bool]:
    """What `create` answered on each of two nodes (stores on engines of their own) that both
    found the row missing and then inserted it: `table` is held until both wait to insert,
    so the race is certain, and the table's key decides it."""
    engines = [open_database(database_url, cluster=False) for _ in range(3)]
    stores = [MetadataStore(e, Sealer(KEY)) for e in engines[:2]]
    results: list[bool] = []
    try:
        with engines[2].connect() as holder, holder.begin():
            holder.exec_driver_sql(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            threads = [
                threading.Thread(target=lambda s=s: results.append(create(s))) for s in stores
            ]
            for t in threads:
                t.start()
            wait_for(
                lambda: (
                    holder.exec_driver_sql(
                        f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass "
                        "AND NOT granted"
                    ).scalar_one()
                    == 2
                ),
                message="both nodes waiting to insert",
            )
        for t in threads:
            t.join(30)
    finally:
        for e in engines:
            e.dispose()
    return sorted(results)


def test_two_nodes_creating_one_function_or_url_create_it_once(database_url: str) -> None:
    """PostgreSQL only: a single machine's SQLite has one writer, the control worker."""
    assert _race(database_url, "functions", lambda s: s.create_function(config("fn"), {})) == [
        False,
        True,
    ]
    url = FunctionUrl("fn", LATEST, "b" * 32, "NONE", "BUFFERED", NOW, NOW)
    assert _race(database_url, "function_urls", lambda s: FunctionUrlStore(s).create(url)) == [
        False,
        True,
    ]
