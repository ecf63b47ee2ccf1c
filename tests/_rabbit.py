"""RabbitMQ for the tests: the broker every dev and CI machine runs at 127.0.0.1:5672
(guest/guest), a virtual host of a test's own (made and removed with `rabbitmqctl`, so that
parallel runs never share a queue), and a publisher."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def broker_available() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, PORT)) == 0


@contextlib.contextmanager
def private_vhost(prefix: str = "lamina-test") -> Iterator[str]:
    """A new virtual host guest may use (with a `/` in its name, which AMQP URIs must
    %-encode), deleted with everything in it afterwards."""
    if not broker_available() or shutil.which("rabbitmqctl") is None:
        pytest.skip("needs RabbitMQ at 127.0.0.1:5672 and rabbitmqctl")
    vhost = f"{prefix}/{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        _ctl("delete_vhost", vhost)


def vhost_url(vhost: str, url: str = URL) -> str:
    return url.rstrip("/") + "/" + quote(vhost, safe="")


async def declare(vhost: str, queue: str, arguments: dict[str, Any] | None = None) -> None:
    conn = await aio_pika.connect(vhost_url(vhost))
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True, arguments=arguments)


async def publish(
    vhost: str,
    queue: str,
    bodies: Sequence[bytes],
    *,
    exchange: str = "",
    **properties: Any,
) -> None:
    """Publish each body to `queue` (through the default exchange), with confirms."""
    conn = await aio_pika.connect(vhost_url(vhost))
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        target = channel.default_exchange if not exchange else await channel.get_exchange(exchange)
        await asyncio.gather(
            *(target.publish(aio_pika.Message(body, **properties), queue) for body in bodies)
        )


async def count(vhost: str, queue: str) -> int:
    """Messages ready in `queue`."""
    conn = await aio_pika.connect(vhost_url(vhost))
    async with conn:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)
