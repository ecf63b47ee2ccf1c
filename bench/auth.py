"""Benchmark authentication under attack: good callers' latency, alone and beside a flood of
requests with bad signatures.

Run: ``.venv/bin/python bench/auth.py [--requests N] [--flooders N]``.

One ``lamina serve --admin-key test:test`` on 127.0.0.1. A good caller sends signed
ListFunctions requests (signed with botocore's SigV4 once per request, over one keep-alive
connection with http.client) and its latencies are recorded: first alone, then while
``--flooders`` processes send the same request with a wrong signature as fast as they can (each
answered 403 InvalidSignatureException). Printed: p50/p99 of each phase, the ratio
(flooded / alone), and how many bad requests were refused meanwhile. A ratio near the share of
the CPU the flood takes is expected: verification costs the same for good and bad requests,
and nothing bad reaches the app. Timings here are noisy; compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# bench/ is on sys.path: this file is run as a script from it.
from invoke import HOST, free_port, http_ok, start_server, stop_server, wait_ready

PATH = "/2015-03-31/functions"


def _headers(port: int, secret: str) -> dict[str, str]:
    request = AWSRequest(method="GET", url=f"http://{HOST}:{port}{PATH}")
    SigV4Auth(Credentials("test", secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _get(conn: HTTPConnection, headers: dict[str, str]) -> int:
    conn.request("GET", PATH, headers=headers)
    response = conn.getresponse()
    response.read()
    return int(response.status)


def _good_latencies(port: int, n: int) -> list[float]:
    conn = HTTPConnection(HOST, port, timeout=30)
    out = []
    for _ in range(n):
        headers = _headers(port, "test")
        t0 = time.perf_counter()
        status = _get(conn, headers)
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"a good request got HTTP {status}")
    conn.close()
    return out


def _flood(port: int, stop: Any, count: Any) -> None:
    """One flooder (a process of its own, so it does not share the good caller's GIL)."""
    conn = HTTPConnection(HOST, port, timeout=30)
    headers = _headers(port, "wrong-secret")  # one bad signature, replayed
    while not stop.is_set():
        if _get(conn, headers) != 403:
            raise SystemExit("a bad signature was accepted")
        with count.get_lock():
            count.value += 1
    conn.close()


def _summary(name: str, ms: list[float]) -> float:
    p50 = statistics.median(ms)
    p99 = statistics.quantiles(ms, n=100)[98]
    print(f"{name:<10} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(ms)} requests)")
    return p50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--flooders", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        port = free_port()
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(Path(tmp) / "data"), "--log-level", "warning"]
        argv += ["--admin-key", "test:test", "--sandbox", "process"]
        server = start_server("lamina", argv, Path(tmp), Path(tmp) / "lamina.log")
        stack.callback(stop_server, server)
        endpoint = f"http://{HOST}:{port}"
        wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
        _good_latencies(port, 50)  # warm-up
        alone = _summary("alone", _good_latencies(port, args.requests))
        stop = multiprocessing.Event()
        count = multiprocessing.Value("q", 0)
        flooders = [
            multiprocessing.Process(target=_flood, args=(port, stop, count), daemon=True)
            for _ in range(args.flooders)
        ]
        for p in flooders:
            p.start()
        try:
            time.sleep(0.5)  # the flood under way before the good caller starts
            flooded = _summary("flooded", _good_latencies(port, args.requests))
        finally:
            stop.set()
            for p in flooders:
                p.join()
        print(f"ratio      p50 flooded / alone = {flooded / alone:.2f}x")
        print(f"refused    {count.value} bad-signature requests meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
