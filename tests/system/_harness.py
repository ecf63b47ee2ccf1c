"""What the system tests share: a server on a chosen sandbox backend, with its data directory
where a sandbox could see it, and a neighbour function that must keep answering right."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import SIGNED_HTTP, Functions, Server

MB = 1024 * 1024

NEIGHBOUR = """
import os
# neighbour-marker: the containment tests look for this file on the host
def handler(event, context):
    return {"double": event["n"] * 2, "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
"""


@contextmanager
def running_server(backend: str, extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """A `lamina serve --sandbox <backend> [extra_args]` of its own, stopped (cleanly) and
    removed after.

    The data directory is under /var/tmp, made world-readable: a namespace sandbox sees the
    host's root (read-only) but a private /tmp, so under /tmp, or under a 0700 directory, the
    data would be out of a function's reach whatever Lamina did. Here only Lamina's own mask
    keeps it hidden.
    """
    base = Path(tempfile.mkdtemp(prefix="lamina-system-", dir="/var/tmp"))
    base.chmod(0o755)
    server = Server(data_dir=base / "data", extra_args=("--sandbox", backend, *extra_args))
    try:
        try:
            server.start()
        except RuntimeError as e:
            raise RuntimeError(f"{e}:\n{server.log()}") from e
        health = httpx.get(server.endpoint + "/health", timeout=5).json()
        assert health["sandbox"] == backend, health
        yield server
        code = server.stop()
        assert code == 0, server.log()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def functions_on(server: Server) -> Iterator[Functions]:
    functions = Functions(server.client())
    try:
        yield functions
    finally:
        functions.cleanup()


def invoke(lam: Any, name: str, event: Any = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    """Invoke and decode: (the response, the JSON payload)."""
    resp = lam.invoke(
        FunctionName=name, Payload=json.dumps(event if event is not None else {}), **kw
    )
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def result(lam: Any, name: str, event: Any = None, **kw: Any) -> Any:
    """The payload of an invocation that must succeed (no FunctionError)."""
    resp, out = invoke(lam, name, event, **kw)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, out
    return out


class Neighbour:
    """A function beside the attacks, in an environment of its own, that must keep working."""

    def __init__(self, server: Server, functions: Functions) -> None:
        self.server = server
        self.lam = server.client()
        self.name = str(functions.create(NEIGHBOUR, Timeout=10)["FunctionName"])

    def check(self, lam: Any | None = None) -> None:
        n = int.from_bytes(os.urandom(3), "big")
        out = result(lam or self.lam, self.name, {"n": n})
        assert out["double"] == 2 * n, out

    def assert_all_well(self) -> None:
        """The server answers /health and the neighbour answers right."""
        resp = httpx.get(self.server.endpoint + "/health", timeout=5)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "ok"
        assert self.server.proc is not None and self.server.proc.poll() is None
        self.check()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def environment_pids(server: Server, function_name: str) -> list[int]:
    """Host pids of the sandboxes' inits for a function's live environments."""
    envs = SIGNED_HTTP.get(server.endpoint + "/lamina/environments", timeout=5).json()
    return [int(e["Pid"]) for e in envs["Environments"] if e["FunctionName"] == function_name]


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass  # gone meanwhile
    return found


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
