"""The client side of `coldstart.py`: SigV4-signed Invokes over raw HTTP, one after the other
(burst, paced) or from many connections at once (c16), each timed from request to response.

Each function's Invoke has its own path, so its own signature: `signing.FastSigner` (one per
function, checked against botocore once) signs a request in a few µs, off the timed span
(signed just before it is sent, so its X-Amz-Date is current), where botocore's ~100 µs of
Python per request would be felt in a burst. Invokes go out on keep-alive `http.client`
connections: no boto3 on the timed path.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import statistics
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException

from signing import FastSigner

HELLO_HANDLER = 'def handler(event, context):\n    return {"ok": True}\n'
HELLO_RESULT = {"ok": True}  # also the fork floor's RESULT
#: the headers an Invoke carries besides Host, the signature and Content-Length (signed)
INVOKE_HEADERS = {"content-type": "application/json"}
BODY = b"{}"


# --- numbers --------------------------------------------------------------------------------


@dataclass
class Stats:
    p50: float
    p99: float
    low: float
    high: float
    count: int


def summarize(values: Sequence[float]) -> Stats:
    ordered = sorted(values)
    rank99 = max(1, math.ceil(0.99 * len(ordered)))  # nearest rank
    return Stats(
        statistics.median(ordered), ordered[rank99 - 1], ordered[0], ordered[-1], len(ordered)
    )


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --- signed invokes -------------------------------------------------------------------------


def invoke_path(name: str) -> str:
    return f"/2015-03-31/functions/{name}/invocations"


@dataclass
class Answer:
    """One Invoke as the client saw it."""

    took_ms: float  # from request to full response
    problem: str | None  # None when answered 200 with the hello result
    status: int  # HTTP status (0: no answer)
    log_tail: str = ""  # the decoded X-Amz-Log-Result (with `log_tail=True`), else ""


class Invoker:
    """Signed (or, with `signed=False`, unsigned) raw-HTTP Invokes of one Lamina server; of
    `qualifier` (a version or alias) when given, asking for the log tail (`LogType=Tail`, the
    REPORT line) with `log_tail`."""

    def __init__(
        self,
        host: str,
        port: int,
        signed: bool = True,
        qualifier: str | None = None,
        log_tail: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.signed = signed
        self._query = f"Qualifier={urllib.parse.quote(qualifier, safe='')}" if qualifier else ""
        self._fixed = {**INVOKE_HEADERS, **({"x-amz-log-type": "Tail"} if log_tail else {})}
        self._signers: dict[str, FastSigner] = {}

    def _signer(self, name: str) -> FastSigner:
        return FastSigner(
            "POST", invoke_path(name), f"{self.host}:{self.port}", self._fixed, self._query
        )

    def self_check(self, name: str) -> None:
        """Raise `AssertionError` unless the fast signer signs as botocore does."""
        self._signer(name).self_check(BODY)

    def headers(self, name: str, body: bytes = BODY) -> dict[str, str]:
        headers = dict(self._fixed)
        if self.signed:
            signer = self._signers.get(name)
            if signer is None:
                signer = self._signers[name] = self._signer(name)
            headers.update(signer.headers(body))
        return headers

    def connect(self) -> HTTPConnection:
        return HTTPConnection(self.host, self.port, timeout=60)

    def call(
        self,
        conn: HTTPConnection,
        name: str,
        headers: dict[str, str] | None = None,
        body: bytes = BODY,
    ) -> Answer:
        """One Invoke of `name` with `body` (signed now unless `headers` are given)."""
        if headers is None:
            headers = self.headers(name, body)
        path = invoke_path(name) + (f"?{self._query}" if self._query else "")
        started = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (HTTPException, OSError) as exc:
            conn.close()  # the next request reconnects
            return Answer(elapsed_ms(started), f"{name}: {exc!r}", 0)
        took = elapsed_ms(started)
        tail = ""
        with contextlib.suppress(ValueError):
            tail = base64.b64decode(response.getheader("X-Amz-Log-Result") or "").decode(
                errors="replace"
            )
        if response.status != 200:
            problem = f"{name}: HTTP {response.status} {payload[:200]!r}"
            return Answer(took, problem, response.status, tail)
        if response.getheader("X-Amz-Function-Error"):
            return Answer(took, f"{name}: function error {payload[:200]!r}", response.status, tail)
        with contextlib.suppress(ValueError):
            if json.loads(payload) == HELLO_RESULT:
                return Answer(took, None, response.status, tail)
        return Answer(took, f"{name}: unexpected body {payload[:200]!r}", response.status, tail)

    def invoke(
        self, conn: HTTPConnection, name: str, headers: dict[str, str] | None = None
    ) -> tuple[float, str | None, int]:
        """(milliseconds from request to full response, problem or None, HTTP status) of one
        Invoke of `name` (signed now unless `headers` are given)."""
        answer = self.call(conn, name, headers)
        return answer.took_ms, answer.problem, answer.status


def sequential(
    invoker: Invoker,
    conn: HTTPConnection,
    names: Sequence[str],
    problems: list[str],
    pace_s: float = 0.0,
) -> list[float]:
    """Invoke each of `names` in turn on one connection, `pace_s` apart (0: back to back,
    the next request sent as soon as the last response is read); their times in ms."""
    times: list[float] = []
    for name in names:
        headers = invoker.headers(name)  # signed before the clock starts
        took, problem, _ = invoker.invoke(conn, name, headers)
        times.append(took)
        if problem is not None:
            problems.append(problem)
        if pace_s:
            time.sleep(pace_s)
    return times


@dataclass
class Concurrent:
    """What `concurrent` measured."""

    times: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Invokes answered per second (each a cold start: environments ready per second)."""
        return len(self.times) / self.wall_s if self.wall_s else 0.0


def concurrent(invoker: Invoker, names: Sequence[str], connections: int) -> Concurrent:
    """Invoke each of `names` once from `connections` threads, each on its own keep-alive
    connection (connected before the clock starts) taking the next name as soon as its last
    request is answered. `wall_s`: from the first request sent to the last response read."""
    result = Concurrent()
    todo = iter(list(names))
    lock = threading.Lock()
    conns = [invoker.connect() for _ in range(connections)]
    for conn in conns:
        conn.connect()
    start = threading.Barrier(connections + 1)
    ends: list[float] = []

    def client(conn: HTTPConnection) -> None:
        start.wait()
        while True:
            with lock:
                name = next(todo, None)
            if name is None:
                break
            headers = invoker.headers(name)
            took, problem, _ = invoker.invoke(conn, name, headers)
            with lock:
                result.times.append(took)
                if problem is not None:
                    result.problems.append(problem)
        with lock:
            ends.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(conn,), daemon=True) for conn in conns]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = max(ends, default=began) - began
    for conn in conns:
        conn.close()
    return result
