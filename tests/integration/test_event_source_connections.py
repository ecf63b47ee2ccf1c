"""What `EventSourceService.connection` hands the pollers works against the real brokers:
RabbitMQ (a user and a virtual host of the test's own, logged in with a BASIC_AUTH secret),
NATS JetStream and Redis, each with its client library.

The brokers are the ones dev and CI machines run (RabbitMQ 127.0.0.1:5672, NATS 4222, Redis
6379); what a test creates there it removes.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import nats
import pytest
import redis.asyncio as aioredis

from lamina.arns import FunctionRef, parse_function_ref
from lamina.control.brokers import BrokerService
from lamina.control.event_sources import EventSourceService
from lamina.control.mapping_input import MappingRequest
from lamina.errors import ResourceNotFoundError
from lamina.settings import Settings
from lamina.store.engine import open_database
from lamina.store.event_sources import EventSourceStore
from lamina.store.sealed import Sealer

pytestmark = pytest.mark.control_plane

T = TypeVar("T")


class _Config:
    role = "arn:aws:iam::000000000000:role/app"


class _Functions:
    """The one function `app` (no role check: the service runs without authentication)."""

    def ref(
        self, value: str, qualifier: str | None = None, *, namespaced: bool = False
    ) -> FunctionRef:
        return parse_function_ref(value, region="us-east-1", account="000000000000")

    def arn(self, name: str, qualifier: str | None = None) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{name}"

    def latest(self, name: str) -> Any:
        return _Config() if name == "app" else None

    def version(self, name: str, version: str) -> Any:
        return None

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundError:
        return ResourceNotFoundError(name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[EventSourceService, BrokerService]]:
    engine = open_database(f"sqlite:///{tmp_path / 'lamina.db'}", cluster=False)
    settings = Settings(data_dir=tmp_path, auth=False)
    store = EventSourceStore(engine, Sealer.open(tmp_path))
    functions = _Functions()
    brokers = BrokerService(settings, store, functions.run)
    yield EventSourceService(settings, store, functions, brokers), brokers
    engine.dispose()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def rabbit_user() -> Iterator[tuple[str, str, str]]:
    """A user and a virtual host of this test's own (removed after it): (user, password,
    vhost)."""
    suffix = uuid.uuid4().hex[:10]
    user, password, vhost = f"esm-{suffix}", f"pw:{suffix}@/x", f"esm-{suffix}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", user, password)
    _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    try:
        yield user, password, vhost
    finally:
        _rabbitmqctl("delete_user", user)
        _rabbitmqctl("delete_vhost", vhost)


def test_a_rabbitmq_connection_logs_in_with_the_secret_to_the_virtual_host(
    service: tuple[EventSourceService, BrokerService], rabbit_user: tuple[str, str, str]
) -> None:
    svc, brokers = service
    user, password, vhost = rabbit_user
    queue = f"esm-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        # The broker's own credentials (guest) cannot reach the test's virtual host; the
        # mapping's BASIC_AUTH secret can.
        broker = await brokers.add("rmq", "amqp://guest:guest@127.0.0.1:5672/")
        secret = await brokers.put_secret("esm-login", user, password)
        mapping = await svc.create(
            MappingRequest(
                function_name="app",
                source_arn=broker.arn,
                queues=[queue],
                access=[
                    {"Type": "BASIC_AUTH", "URI": secret.arn},
                    {"Type": "VIRTUAL_HOST", "URI": vhost},
                ],
            )
        )
        conn = svc.connection(mapping)
        assert conn.virtual_host == vhost
        connection = await aio_pika.connect(conn.url, timeout=10)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, auto_delete=True)
            await channel.default_exchange.publish(aio_pika.Message(b"hi"), routing_key=queue)
            message = await declared.get(timeout=5)
            assert message.body == b"hi"
            await message.ack()
            await declared.delete()
        finally:
            await connection.close()
        # Without BASIC_AUTH the broker's credentials are used, on the broker URL's vhost.
        plain = await svc.create(
            MappingRequest(function_name="app", source_arn=broker.arn, queues=["other"])
        )
        conn = svc.connection(plain)
        assert conn.virtual_host == "/"
        connection = await aio_pika.connect(conn.url, timeout=10)
        await connection.close()

    asyncio.run(scenario())


def test_nats_and_redis_connections_reach_their_servers(
    service: tuple[EventSourceService, BrokerService],
) -> None:
    svc, brokers = service

    async def scenario() -> None:
        js = await brokers.add("js", "nats://127.0.0.1:4222")
        rd = await brokers.add("rd", "redis://127.0.0.1:6379/0")
        on_nats = await svc.create(
            MappingRequest(
                function_name="app",
                source_arn=f"{js.arn}:stream/orders",
                starting_position="TRIM_HORIZON",
            )
        )
        on_redis = await svc.create(
            MappingRequest(
                function_name="app",
                source_arn=f"{rd.arn}:stream/orders:events",
                starting_position="LATEST",
            )
        )
        conn = svc.connection(on_nats)
        assert conn.stream == "orders"
        client = await nats.connect(conn.url, connect_timeout=5, allow_reconnect=False)
        try:
            await client.flush(timeout=5)
        finally:
            await client.close()
        conn = svc.connection(on_redis)
        assert conn.stream == "orders:events"
        r = aioredis.from_url(conn.url)
        try:
            assert await r.ping()
        finally:
            await r.aclose()

    asyncio.run(scenario())
