"""Benchmark WebSocket APIs: messages echoed through a function, beside a bare echo server.

Run: ``.venv/bin/python bench/websocket.py [--duration 5] [--sandbox process]`` (or
``make bench-websocket ARGS="..."``).

What it measures
----------------
Everything runs on 127.0.0.1 in this one run; compare numbers within the run, the ratios are
the point.

* floor: a bare `websockets` echo server (its asyncio server, in a process of its own) that
  sends every message straight back. Nothing Lamina does can be faster than that.
* Lamina: ``lamina serve`` at its defaults (authentication on, its default sandbox), two
  python3.11 functions that return ``{"statusCode": 200, "body": event["body"]}``, and a
  WebSocket API (created with boto3's apigatewayv2 client) with a two-way route
  (RouteResponseSelectionExpression ``$default``) to each, chosen by the message's
  ``action``, stage ``bench``. So each message is: frame in, route selection, the API Gateway
  event, an Invoke through the scheduler into a warm environment, the result's body framed
  back. The 1-connection run goes to ``bench-echo-1`` (MemorySize 1024, as ``make bench``);
  the 64-connection run to ``bench-echo-64`` (MemorySize 256, so that 64 environments fit in
  the 2-core machine's memory without eviction). CPU follows memory as on Lambda (cgroup
  quota): a 128 MB function would be throttled to a few ms of CPU per 100 ms, which shows as
  ~50 ms stalls, not as the WebSocket path's cost.

For each, at 1 and at 64 connections (``--connections``): each connection sends a message
(``{"n": i}``), waits for its echo, and sends the next, for ``--duration`` seconds (after one
warm-up round trip per connection, which also starts the function's environments). Reported:
messages/s, round-trip p50 and p99, and Lamina / floor ratios. Targets (issue 21): p50 <= 2 ms
at 1 connection; >= 0.3x the floor's messages/s at 64 connections. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import boto3
from botocore.config import Config
from websockets.asyncio.client import connect

from harness import (
    HOST,
    create_functions,
    free_port,
    guarded,
    http_ok,
    log,
    port_in_use,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from signing import ADMIN_KEY, admin_key_args

ECHO = """
def handler(event, context):
    return {"statusCode": 200, "body": event.get("body", "")}
"""

FLOOR = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None):
        await asyncio.Future()

asyncio.run(main())
"""


async def _load(
    url: str, connections: int, seconds: float, action: str
) -> tuple[int, list[float], float]:
    """(messages echoed, round-trip latencies in ms, wall seconds)."""
    latencies: list[float] = []
    count = 0
    socks = [await connect(url, compression=None, open_timeout=60) for _ in range(connections)]
    try:
        # warm-up: one round trip each (starts the function's environments)
        await asyncio.gather(*(_round_trip(ws, -1, action) for ws in socks))
        stop = time.perf_counter() + seconds

        async def drive(ws: object, k: int) -> None:
            nonlocal count
            i = 0
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await _round_trip(ws, k * 1_000_000 + i, action)
                latencies.append((time.perf_counter() - t0) * 1000)
                count += 1
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(drive(ws, k) for k, ws in enumerate(socks)))
        wall = time.perf_counter() - began
    finally:
        for ws in socks:
            with contextlib.suppress(Exception):
                await ws.close()
    return count, latencies, wall


async def _round_trip(ws: object, n: int, action: str) -> None:
    message = json.dumps({"action": action, "n": n})
    await ws.send(message)  # type: ignore[attr-defined]
    reply = await asyncio.wait_for(ws.recv(), 60)  # type: ignore[attr-defined]
    if reply != message:
        raise RuntimeError(f"echo mismatch: sent {message!r}, got {reply!r}")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _setup_api(endpoint: str) -> str:
    v2 = boto3.client(
        "apigatewayv2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_KEY[0],
        aws_secret_access_key=ADMIN_KEY[1],
        config=Config(retries={"total_max_attempts": 1}),
    )
    api = v2.create_api(
        Name="bench", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )
    for conns in (1, 64):
        integration = v2.create_integration(
            ApiId=api["ApiId"], IntegrationType="AWS_PROXY", IntegrationUri=f"bench-echo-{conns}"
        )
        v2.create_route(
            ApiId=api["ApiId"],
            RouteKey=f"c{conns}",
            Target=f"integrations/{integration['IntegrationId']}",
            RouteResponseSelectionExpression="$default",
        )
    v2.create_stage(ApiId=api["ApiId"], StageName="bench")
    lam = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_KEY[0],
        aws_secret_access_key=ADMIN_KEY[1],
        config=Config(retries={"total_max_attempts": 1}),
    )
    for conns in (1, 64):  # API Gateway may invoke only what the function's policy allows
        lam.add_permission(
            FunctionName=f"bench-echo-{conns}",
            StatementId=f"bench-{api['ApiId']}",
            Action="lambda:InvokeFunction",
            Principal="apigateway.amazonaws.com",
            SourceArn=f"arn:aws:execute-api:us-east-1:000000000000:{api['ApiId']}/*",
        )
    return f"{api['ApiEndpoint']}/bench"


def run(tmp: Path, args: argparse.Namespace) -> dict[str, dict[int, tuple[float, float, float]]]:
    results: dict[str, dict[int, tuple[float, float, float]]] = {"floor": {}, "lamina": {}}
    with contextlib.ExitStack() as stack:
        port = free_port()
        floor = start_server(
            "floor", [sys.executable, "-c", FLOOR, str(port)], tmp, tmp / "floor.log"
        )
        stack.callback(stop_server, floor)
        wait_ready(floor, lambda: port_in_use(port))
        for n in args.connections:
            results["floor"][n] = _measure(f"ws://{HOST}:{port}/", n, args.duration, "floor", n)

        data_dir = tmp / "lamina-data"
        data_dir.mkdir()
        lport = free_port()
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(lport)]
        argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
        argv += ["--sandbox", args.sandbox] if args.sandbox else []
        server = start_server("lamina", argv, tmp, tmp / "lamina.log")
        stack.callback(stop_server, server)
        endpoint = f"http://{HOST}:{lport}"
        wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
        create_functions(endpoint, ["bench-echo-1"], lambda _: ECHO, memory_mb=1024)
        create_functions(endpoint, ["bench-echo-64"], lambda _: ECHO, memory_mb=256)
        url = _setup_api(endpoint)
        for n in args.connections:
            results["lamina"][n] = _measure(url, n, args.duration, "lamina", n)
    return results


def _measure(
    url: str, connections: int, seconds: float, name: str, n: int
) -> tuple[float, float, float]:
    log(f"{name}: {connections} connection(s) for {seconds:.0f} s")
    # the 1-connection function for 1, the 64-connection one for any other count
    action = "c1" if n == 1 else "c64"
    count, latencies, wall = asyncio.run(_load(url, connections, seconds, action))
    return count / wall, statistics.median(latencies) if latencies else 0.0, _pct(latencies, 0.99)


def report(results: dict[str, dict[int, tuple[float, float, float]]]) -> None:
    print(f"{'':8} {'conns':>5} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("floor", "lamina"):
        for n, (rate, p50, p99) in results[name].items():
            print(f"{name:8} {n:>5} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f}")
    print()
    for n in results["lamina"]:
        rate, p50, _ = results["lamina"][n]
        frate, fp50, _ = results["floor"][n]
        print(
            f"{n:>3} connection(s): lamina/floor msg/s = {rate / frate:.2f}x, "
            f"p50 {p50:.2f} ms vs floor {fp50:.2f} ms"
        )
    one = results["lamina"].get(1)
    many, fmany = results["lamina"].get(64), results["floor"].get(64)
    if one is not None:
        print(f"target p50 <= 2 ms at 1 connection: {one[1]:.2f} ms")
    if many is not None and fmany is not None:
        print(f"target >= 0.3x floor msg/s at 64 connections: {many[0] / fmany[0]:.2f}x")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--sandbox", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> dict[str, dict[int, tuple[float, float, float]]]:
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-ws-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            return run(Path(tmp), args)

    report(guarded(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
