"""Benchmark response streaming: time to first byte, streamed vs buffered, and chunk latency.

Run: ``.venv/bin/python bench/streaming.py [--rounds 30] [--chunks 20] [--gap-ms 10]
[--sandbox process]`` (or ``make bench-streaming ARGS="..."``).

What it measures
----------------
``lamina serve`` at its defaults (authentication on with the benchmarks' admin key, its default
sandbox, front workers), on 127.0.0.1, with two nodejs20.x functions:

* ``bench-stream``: ``awslambda.streamifyResponse``; writes ``--chunks`` lines, ``--gap-ms``
  apart, each stamped with the wall-clock time (µs) at which it was written.
* ``bench-noop``: returns ``{}`` at once: the floor, a warm synchronous round trip.

Each round, after one warm-up of each:

* streamed TTFB: ``invoke_with_response_stream`` (boto3) on ``bench-stream``, from the call to
  the first ``PayloadChunk`` in hand;
* buffered TTFB: ``invoke`` (boto3) on the same function doing the same work: Lambda buffers a
  streaming function's response for Invoke, so the first byte comes when the last is written;
* chunk latency: for every chunk of the streamed invocations, its arrival at the client minus
  the time the function stamped on it (same host, same clock);
* floor: ``invoke`` on ``bench-noop``.

Printed: p50/p99 of each, the ratios streamed/buffered TTFB and streamed TTFB/floor (measured
in this run), and chunk latency p50 against the target (issue 21: <= 5 ms). Nothing is
asserted: exit status 0 unless a server or a request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from harness import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    http_ok,
    lambda_client,
    log,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from signing import ADMIN_KEY

TARGET_CHUNK_P50_MS = 5.0

STREAMER = """
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
exports.handler = awslambda.streamifyResponse(async (event, stream) => {
  stream.setContentType('application/x-ndjson');
  for (let i = 0; i < event.chunks; i++) {
    if (i) await sleep(event.gap);
    stream.write(JSON.stringify({ i, us: now() }) + '\\n');
  }
  stream.end();
});
"""
NOOP = "exports.handler = async () => ({});\n"


def _zip(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.js", source)
    return buf.getvalue()


def start_lamina(stack: contextlib.ExitStack, tmp: Path, sandbox: str | None) -> str:
    data_dir = tmp / "lamina-data"
    data_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning"]
    argv += ["--admin-key", ":".join(ADMIN_KEY)]
    argv += ["--sandbox", sandbox] if sandbox else []
    server: Server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    return endpoint


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> None:
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-stream-", ignore_cleanup_errors=True)
    with tmp_dir as tmp_name, unbroken_cleanup(), contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        endpoint = start_lamina(stack, tmp, args.sandbox)
        client: Any = lambda_client(endpoint)
        try:
            for name, source in (("bench-stream", STREAMER), ("bench-noop", NOOP)):
                client.create_function(
                    FunctionName=name,
                    Runtime="nodejs20.x",
                    Role="arn:aws:iam::000000000000:role/bench",
                    Handler="index.handler",
                    Code={"ZipFile": _zip(source)},
                    MemorySize=512,
                    Timeout=60,
                )
                client.get_waiter("function_active_v2").wait(
                    FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
                )
            payload = json.dumps({"chunks": args.chunks, "gap": args.gap_ms}).encode()
            streamed, buffered, floor, chunk_ms = [], [], [], []
            for round_ in range(args.rounds + 1):
                t0 = time.perf_counter()
                resp = client.invoke_with_response_stream(
                    FunctionName="bench-stream", Payload=payload
                )
                first = None
                got = b""
                for event in resp["EventStream"]:
                    if "PayloadChunk" in event:
                        arrived_us = time.time() * 1e6
                        if first is None:
                            first = time.perf_counter() - t0
                        data = event["PayloadChunk"]["Payload"]
                        got += data
                        for line in data.splitlines():
                            if round_:
                                chunk_ms.append((arrived_us - json.loads(line)["us"]) / 1000)
                    elif "InvokeComplete" in event and event["InvokeComplete"].get("ErrorCode"):
                        raise BenchError(f"streamed invoke failed: {event['InvokeComplete']}")
                if first is None or got.count(b"\n") != args.chunks:
                    raise BenchError("the streamed invoke did not deliver every chunk")
                t1 = time.perf_counter()
                whole = client.invoke(FunctionName="bench-stream", Payload=payload)
                whole["Payload"].read()
                t2 = time.perf_counter()
                noop = client.invoke(FunctionName="bench-noop")
                noop["Payload"].read()
                t3 = time.perf_counter()
                if round_:  # round 0 warms up
                    streamed.append(first * 1000)
                    buffered.append((t2 - t1) * 1000)
                    floor.append((t3 - t2) * 1000)
        except (BotoCoreError, ClientError) as exc:
            raise BenchError(f"a request failed: {exc}") from exc
    work_ms = (args.chunks - 1) * args.gap_ms
    print(
        f"\nresponse streaming, {args.rounds} rounds, {args.chunks} chunks {args.gap_ms} ms apart"
    )
    print(f"(the function's own work: ~{work_ms} ms)\n")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}")
    for label, values in (
        ("floor (no-op Invoke)", floor),
        ("streamed TTFB", streamed),
        ("buffered TTFB (Invoke)", buffered),
        ("chunk latency", chunk_ms),
    ):
        print(f"{label:28}{pct(values, 50):10.2f}{pct(values, 99):10.2f}")
    s50, b50, f50 = (statistics.median(v) for v in (streamed, buffered, floor))
    print(f"\nstreamed / buffered TTFB (p50): {s50 / b50:.3f}")
    print(f"streamed TTFB / floor (p50):    {s50 / f50:.2f}")
    c50 = pct(chunk_ms, 50)
    verdict = "met" if c50 <= TARGET_CHUNK_P50_MS else "missed"
    print(f"chunk latency p50 {c50:.2f} ms vs target <= {TARGET_CHUNK_P50_MS} ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--gap-ms", type=int, default=10)
    parser.add_argument("--sandbox", default=None)
    args = parser.parse_args()
    log("starting")
    guarded(lambda: run(args))


if __name__ == "__main__":
    main()
