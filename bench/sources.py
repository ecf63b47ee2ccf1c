"""Benchmark the RabbitMQ event source: messages per second and publish-to-handler latency,
beside a floor measured in the same run.

Run: ``.venv/bin/python bench/sources.py [--messages 20000] [--latency-messages 400]`` (or
``make bench-sources ARGS="..."``). Needs the RabbitMQ at 127.0.0.1:5672 (guest/guest).

What it measures
----------------
Everything runs on 127.0.0.1 in this one run; compare the ratios, not absolute numbers
across runs (these machines are noisy). Queues are new ones on the broker's "/" virtual host,
named ``lamina-bench-<random>``, and deleted at the end.

The floor: a bare aio-pika consumer (the client library Lamina's poller uses) in this
process, doing the least a consumer can: take each message and acknowledge it.

* throughput: ``--messages`` messages published first, then consumed and acknowledged one by
  one with prefetch 200 (what Lamina's poller asks for at BatchSize 100). Messages per second
  from the first delivery to the last.
* latency: prefetch 1, an idle consumer; ``--latency-messages`` messages published one at a
  time every ``--pace-ms`` (so none waits behind another), each body carrying
  ``time.time()`` at publishing; latency is the consumer's ``time.time()`` at delivery minus
  that stamp.

Lamina: ``lamina serve`` at its defaults (authentication on, with an admin key the
benchmark signs with; the server's default sandbox, or ``--sandbox``), a python3.11 function
that does nothing but print one line per invocation (the count of messages and its
``time.time()``; with one message, that message's stamp too), a role allowing
``mq:DescribeBroker``, the broker registered (``PUT /lamina/brokers/NAME``), and per phase a
mapping made with boto3's CreateEventSourceMapping:

* throughput: BatchSize 100 (Lambda's default window of 0.5 s), the same number of messages
  published before the mapping is created. Messages per second from the first invocation's
  receipt to the last one's, and the end-to-end wall time from CreateEventSourceMapping until
  the queue is empty.
* latency: BatchSize 1, ``MaximumBatchingWindowInSeconds`` 0, warmed by a few messages; then
  the same paced stamped messages as the floor's. Latency is the handler's ``time.time()``
  minus the stamp: broker, poller, scheduler, Runtime API and the runtime's hand-over.

What the handler printed is read back through Lamina's CloudWatch Logs API
(FilterLogEvents). Target (the issue's): >= 5,000 messages/s at BatchSize 100 and p50 <= 5 ms
at BatchSize 1 on the 2-core machine.

Exit status: 0 when the run was valid (whether or not the targets were met); 1 when a server
failed to start, a message was lost or a phase did not finish within ``--timeout``; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import boto3
import httpx
from botocore.config import Config
from botocore.credentials import Credentials

# bench/ is on sys.path because this file is run as a script from it.
from coldstart import Stats, summarize
from invoke import (
    HOST,
    BenchError,
    free_port,
    guarded,
    handler_zip,
    http_ok,
    log,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from lamina.cli.signing import Signer

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
ADMIN_KEY = ("bench", "bench-secret-key")
FUNCTION_NAME = "bench-rmq"
ROLE_NAME = "bench-rmq-reader"
ROLE_ARN = f"arn:aws:iam::000000000000:role/{ROLE_NAME}"
ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "mq:DescribeBroker", "Resource": "*"}],
}
TARGET_PER_S = 5000.0
TARGET_P50_MS = 5.0
#: the floor's prefetch in the throughput phase: what Lamina's poller asks for at BatchSize 100
FLOOR_PREFETCH = 200
WARMUP_MESSAGES = 5
#: the handler: one line per invocation, nothing else (time taken at entry)
HANDLER = """\
import base64, json, time


def handler(event, context):
    now = time.time()
    batch = [m for ms in event["rmqMessagesByQueue"].values() for m in ms]
    line = {"n": len(batch), "t": now}
    if len(batch) == 1:
        line["s"] = json.loads(base64.b64decode(batch[0]["data"]))["t"]
    print("BENCH " + json.dumps(line))
"""


# --- the broker -------------------------------------------------------------------------------


async def _declare(queue: str) -> None:
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True)


async def _delete(queues: Sequence[str]) -> None:
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel()
        for queue in queues:
            await channel.queue_delete(queue)


async def _ready(queue: str) -> int:
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def _publish_bulk(queue: str, n: int) -> None:
    """`n` stamped messages, confirmed, in chunks (the broker's confirms keep up)."""
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(json.dumps({"i": i, "t": time.time()}).encode()), queue
                    )
                    for i in range(start, min(n, start + 1000))
                )
            )


async def _publish_paced(queue: str, n: int, pace_s: float) -> None:
    """`n` messages one at a time, each stamped just before it is sent."""
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel(publisher_confirms=False)
        for i in range(n):
            body = json.dumps({"i": i, "t": time.time()}).encode()
            await channel.default_exchange.publish(aio_pika.Message(body), queue)
            await asyncio.sleep(pace_s)


# --- the floor ------------------------------------------------------------------------------


@dataclass
class Throughput:
    messages: int
    seconds: float  # first delivery to last

    @property
    def per_s(self) -> float:
        return (self.messages - 1) / self.seconds if self.seconds > 0 else 0.0


async def floor_throughput(queue: str, n: int, within_s: float) -> Throughput:
    await _publish_bulk(queue, n)
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=FLOOR_PREFETCH)
        q = await channel.get_queue(queue)
        stamps: list[float] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            stamps.append(time.time())
            await message.ack()
            if len(stamps) >= n:
                done.set()

        tag = await q.consume(on_message)
        try:
            await asyncio.wait_for(done.wait(), within_s)
        except TimeoutError:
            raise BenchError(f"floor: {len(stamps)} of {n} messages in {within_s:.0f} s") from None
        await q.cancel(tag)
    return Throughput(n, stamps[-1] - stamps[0])


async def floor_latency(queue: str, n: int, pace_s: float, within_s: float) -> list[float]:
    conn = await aio_pika.connect(BROKER_URL)
    async with conn:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1)
        q = await channel.get_queue(queue)
        latencies: list[float] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.time()
            latencies.append((now - json.loads(message.body)["t"]) * 1000)
            await message.ack()
            if len(latencies) >= n:
                done.set()

        tag = await q.consume(on_message)
        await _publish_paced(queue, n, pace_s)
        try:
            await asyncio.wait_for(done.wait(), within_s)
        except TimeoutError:
            raise BenchError(f"floor: {len(latencies)} of {n} delivered") from None
        await q.cancel(tag)
    return latencies


# --- Lamina ---------------------------------------------------------------------------------


class Lamina:
    """One `lamina serve` and signed clients for it."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, sandbox: str | None) -> None:
        data_dir = tmp / "lamina-data"
        data_dir.mkdir()
        port = free_port()
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(data_dir), "--log-level", "warning"]
        argv += ["--admin-key", ":".join(ADMIN_KEY)]  # authentication stays on (the default)
        argv += ["--sandbox", sandbox] if sandbox else []
        self.server = start_server("lamina", argv, tmp, tmp / "lamina.log")
        stack.callback(stop_server, self.server)
        self.endpoint = f"http://{HOST}:{port}"
        wait_ready(self.server, lambda: http_ok(f"{self.endpoint}/health", expect_json_ok=True))
        signer = Signer("", Credentials(*ADMIN_KEY), region="us-east-1")
        self.http = httpx.Client(base_url=self.endpoint, auth=signer, timeout=30)
        stack.callback(self.http.close)
        config = Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": 3})
        self.lam = self._client("lambda", config)
        self.logs = self._client("logs", config)

    def _client(self, service: str, config: Config) -> Any:
        make: Any = boto3.client  # (boto3-stubs' overloads want a literal service name)
        return make(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ADMIN_KEY[0],
            aws_secret_access_key=ADMIN_KEY[1],
            config=config,
        )

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.put(path, json=body)
        if resp.status_code != 200:
            raise BenchError(f"PUT {path}: {resp.status_code} {resp.text}")
        out: dict[str, Any] = resp.json()
        return out

    def deploy(self) -> str:
        """The role, the function and the broker; the broker's ARN."""
        self.put(f"/lamina/roles/{ROLE_NAME}", {"Policies": [ROLE_POLICY]})
        self.lam.create_function(
            FunctionName=FUNCTION_NAME,
            Runtime="python3.11",
            Role=ROLE_ARN,
            Handler="app.handler",
            Code={"ZipFile": handler_zip(HANDLER)},
        )
        self.lam.get_waiter("function_active_v2").wait(
            FunctionName=FUNCTION_NAME, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        broker = self.put("/lamina/brokers/bench", {"Url": BROKER_URL})["Broker"]
        return str(broker["Arn"])

    def map(self, arn: str, queue: str, **settings: Any) -> str:
        m = self.lam.create_event_source_mapping(
            FunctionName=FUNCTION_NAME, EventSourceArn=arn, Queues=[queue], **settings
        )
        return str(m["UUID"])

    def unmap(self, uuid_: str, timeout: float) -> None:
        self.lam.delete_event_source_mapping(UUID=uuid_)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.lam.get_event_source_mapping(UUID=uuid_)
            except self.lam.exceptions.ResourceNotFoundException:
                return
            time.sleep(0.1)
        raise BenchError(f"mapping {uuid_} not deleted after {timeout:.0f} s")

    def lines(self, since_ms: int) -> list[dict[str, Any]]:
        """The handler's BENCH lines since `since_ms` (epoch ms)."""
        out: list[dict[str, Any]] = []
        pages = self.logs.get_paginator("filter_log_events").paginate(
            logGroupName=f"/aws/lambda/{FUNCTION_NAME}",
            startTime=since_ms,
            filterPattern='"BENCH "',
        )
        for page in pages:
            for event in page["events"]:
                message = event["message"]
                at = message.find("BENCH ")
                if at >= 0:
                    out.append(json.loads(message[at + 6 :]))
        return out

    def wait_lines(self, since_ms: int, messages: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.lines(since_ms)
            if sum(int(line["n"]) for line in got) >= messages:
                return got
            time.sleep(0.5)
        seen = sum(int(line["n"]) for line in got)
        raise BenchError(f"lamina: the function saw {seen} of {messages} in {timeout:.0f} s")


@dataclass
class LaminaThroughput:
    rate: Throughput
    wall_s: float  # CreateEventSourceMapping to an empty queue
    invocations: int


def lamina_throughput(lamina: Lamina, arn: str, queue: str, n: int, timeout: float) -> Any:
    asyncio.run(_publish_bulk(queue, n))
    since = int(time.time() * 1000)
    started = time.perf_counter()
    mapping = lamina.map(arn, queue, BatchSize=100)
    deadline = time.monotonic() + timeout
    while asyncio.run(_ready(queue)) > 0:
        if time.monotonic() > deadline:
            raise BenchError(f"lamina: queue not drained in {timeout:.0f} s")
        time.sleep(0.05)
    lines = lamina.wait_lines(since, n, timeout)
    wall = time.perf_counter() - started
    lamina.unmap(mapping, timeout)
    stamps = sorted(float(line["t"]) for line in lines)
    first_batch = int(min(lines, key=lambda line: float(line["t"]))["n"])
    seen = sum(int(line["n"]) for line in lines)
    if seen < n:
        raise BenchError(f"lamina: {seen} of {n} messages seen")
    # From the first invocation's receipt to the last one's: the first batch's messages
    # arrived before the clock started.
    rate = Throughput(n - first_batch + 1, stamps[-1] - stamps[0])
    return LaminaThroughput(rate, wall, len(lines))


def lamina_latency(
    lamina: Lamina, arn: str, queue: str, n: int, pace_s: float, timeout: float
) -> list[float]:
    mapping = lamina.map(arn, queue, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    warm_since = int(time.time() * 1000)
    asyncio.run(_publish_paced(queue, WARMUP_MESSAGES, pace_s))
    lamina.wait_lines(warm_since, WARMUP_MESSAGES, timeout)
    since = int(time.time() * 1000)
    asyncio.run(_publish_paced(queue, n, pace_s))
    lines = lamina.wait_lines(since, n, timeout)
    lamina.unmap(mapping, timeout)
    return [(float(line["t"]) - float(line["s"])) * 1000 for line in lines if "s" in line]


# --- the report -----------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def report(
    floor_rate: Throughput,
    lamina_rate: LaminaThroughput,
    floor_lat: Stats,
    lamina_lat: Stats,
) -> list[str]:
    rows = [
        ("", "floor (aio-pika)", "lamina", "lamina/floor"),
        (
            "BatchSize 100: messages/s",
            f"{floor_rate.per_s:,.0f}",
            f"{lamina_rate.rate.per_s:,.0f}",
            _ratio(lamina_rate.rate.per_s, floor_rate.per_s),
        ),
        (
            "BatchSize 1: latency p50 ms",
            f"{floor_lat.p50:.2f}",
            f"{lamina_lat.p50:.2f}",
            _ratio(lamina_lat.p50, floor_lat.p50),
        ),
        (
            "BatchSize 1: latency p99 ms",
            f"{floor_lat.p99:.2f}",
            f"{lamina_lat.p99:.2f}",
            _ratio(lamina_lat.p99, floor_lat.p99),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    out.append(
        f"lamina throughput: {lamina_rate.invocations} invocations "
        f"({lamina_rate.rate.messages / max(1, lamina_rate.invocations):.0f} messages each on "
        f"average); {lamina_rate.wall_s:.2f} s from CreateEventSourceMapping to all handled"
    )
    met_rate = lamina_rate.rate.per_s >= TARGET_PER_S
    met_p50 = lamina_lat.p50 <= TARGET_P50_MS
    out.append(
        f"targets: >= {TARGET_PER_S:,.0f} messages/s at BatchSize 100: "
        f"{'met' if met_rate else 'MISSED'}; p50 <= {TARGET_P50_MS:.0f} ms at BatchSize 1: "
        f"{'met' if met_p50 else 'MISSED'}"
    )
    return out


def run(args: argparse.Namespace) -> list[str]:
    prefix = f"lamina-bench-{uuid.uuid4().hex[:8]}"
    queues = [f"{prefix}-{what}" for what in ("floor-rate", "floor-lat", "rate", "lat")]
    pace_s = args.pace_ms / 1000
    try:
        for q in queues:
            asyncio.run(_declare(q))
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BenchError(f"RabbitMQ at 127.0.0.1:5672 (guest/guest): {exc}") from None
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: asyncio.run(_delete(queues)))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lamina-bench-")))
        with unbroken_cleanup():
            log(f"floor: {args.messages} messages, prefetch {FLOOR_PREFETCH}")
            floor_rate = asyncio.run(floor_throughput(queues[0], args.messages, args.timeout))
            log(f"floor: {args.latency_messages} paced messages, prefetch 1")
            floor_lat = asyncio.run(
                floor_latency(queues[1], args.latency_messages, pace_s, args.timeout)
            )
            lamina = Lamina(stack, tmp, args.sandbox)
            arn = lamina.deploy()
            log(f"lamina: {args.messages} messages, BatchSize 100")
            lamina_rate = lamina_throughput(lamina, arn, queues[2], args.messages, args.timeout)
            log(f"lamina: {args.latency_messages} paced messages, BatchSize 1")
            lamina_lat = lamina_latency(
                lamina, arn, queues[3], args.latency_messages, pace_s, args.timeout
            )
    if len(lamina_lat) < args.latency_messages:
        raise BenchError(f"lamina: {len(lamina_lat)} of {args.latency_messages} latencies")
    return report(floor_rate, lamina_rate, summarize(floor_lat), summarize(lamina_lat))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20_000, help="throughput phase (20000)")
    p.add_argument("--latency-messages", type=int, default=400, help="latency phase (400)")
    p.add_argument("--pace-ms", type=float, default=10.0, help="between paced messages (10)")
    p.add_argument("--sandbox", help="Lamina's sandbox backend (default: the server's)")
    p.add_argument("--timeout", type=float, default=300.0, help="per phase, seconds (300)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lines = guarded(lambda: run(args))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
