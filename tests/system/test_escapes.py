"""Ways out of a sandbox that the first containment suite found open, kept closed: a listener
at AWS_ENDPOINT_URL for a function without network, Python's SIGINT handler in the sandbox's
init, and the host's unix-socket services (a read-only mount does not stop connect())."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Functions
from tests.system._harness import Neighbour, invoke, result

# CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
# skipped: this skip can only hide these tests on an unprivileged developer machine.
if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

PROBES = """
import os, signal, socket, time

def failure(e):
    return {"type": type(e).__name__, "errno": getattr(e, "errno", None)}

def handler(event, context):
    probe = event["probe"]
    if probe == "endpoint":
        port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return {"ok": True}
        except OSError as e:
            return failure(e)
    if probe == "signal-init":
        os.kill(1, getattr(signal, event["signal"]))
        time.sleep(0.3)  # had init died, the whole sandbox would be gone by now
        return {"stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
    if probe == "unix":
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(event["path"])
                s.sendall(b"from the sandbox")
                return {"ok": True}
        except OSError as e:
            return failure(e)
    raise ValueError(probe)
"""


@pytest.fixture(scope="module")
def probes(ns_functions: Functions) -> str:
    return str(ns_functions.create(PROBES, Timeout=10)["FunctionName"])


@pytest.fixture(scope="module")
def offline_probes(ns_functions: Functions) -> str:
    env = {"Variables": {"LAMINA_NETWORK": "none"}}
    return str(ns_functions.create(PROBES, Timeout=10, Environment=env)["FunctionName"])


def test_no_network_leaves_no_listener_at_the_api_port(
    ns_lam: Any, offline_probes: str, neighbour: Neighbour
) -> None:
    """`LAMINA_NETWORK=none`: nothing but the Runtime API. A connection to AWS_ENDPOINT_URL is
    refused at once (a listener left unserved would let a request hang until the client gives
    up: an SDK with default timeouts waits a minute)."""
    out = result(ns_lam, offline_probes, {"probe": "endpoint"})
    assert out == {"type": "ConnectionRefusedError", "errno": errno.ECONNREFUSED}, out
    neighbour.assert_all_well()


def test_sigint_to_init_does_no_harm(ns_lam: Any, probes: str, neighbour: Neighbour) -> None:
    """The sandbox's init is a fork of the Python zygote: with Python's SIGINT handler left in
    place, a function's `os.kill(1, SIGINT)` would raise KeyboardInterrupt in init and end the
    environment mid-invocation. With default dispositions the kernel drops it, as it drops
    SIGKILL and SIGTERM sent to a namespace's init from inside."""
    before = result(ns_lam, probes, {"probe": "signal-init", "signal": "SIGUSR1"})
    resp, out = invoke(ns_lam, probes, {"probe": "signal-init", "signal": "SIGINT"})
    assert "FunctionError" not in resp, out
    assert out["stream"] == before["stream"], "the environment was replaced"
    neighbour.assert_all_well()


@pytest.fixture
def host_unix_service() -> Iterator[tuple[str, socket.socket]]:
    """A service of the test's own on the host, on a unix socket anyone may connect to, where
    services keep theirs (/run): like a local PostgreSQL's /run/postgresql/.s.PGSQL.5432."""
    directory = Path(tempfile.mkdtemp(prefix="lamina-systest-", dir="/run"))
    directory.chmod(0o755)
    path = directory / "service.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen(8)
        listener.setblocking(False)
        yield str(path), listener
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_host_unix_socket_services_out_of_reach(
    ns_lam: Any, probes: str, neighbour: Neighbour, host_unix_service: tuple[str, socket.socket]
) -> None:
    """The host's services are out of a function's reach on unix sockets too, not only on
    loopback TCP (its 127.0.0.1 is its own): a read-only mount does not stop connect() on a
    socket file, so the sandbox's root holds only the host's system directories (/usr, /lib*,
    /bin, /sbin, /etc), never /run, /var/run or /tmp, where services keep their sockets."""
    path, listener = host_unix_service
    out = result(ns_lam, probes, {"probe": "unix", "path": path})
    try:
        conn, _ = listener.accept()
        conn.close()
        reached = True
    except BlockingIOError:
        reached = False
    assert out.get("errno") in (errno.ENOENT, errno.EACCES, errno.ECONNREFUSED), out
    assert not reached, "the host's service accepted a connection from the sandbox"
    neighbour.assert_all_well()
