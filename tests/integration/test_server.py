"""`lamina serve` as a process: health, restart on the same data dir, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import ROLE, SIGNED_HTTP, Server, make_zip

COUNTER = "import os\ndef handler(e, c):\n    return os.environ['AWS_LAMBDA_LOG_STREAM_NAME']\n"


def runtime_pids(endpoint: str) -> set[int]:
    """Runtime processes of this server's environments that are still alive."""
    try:
        listed = SIGNED_HTTP.get(endpoint + "/lamina/environments", timeout=5).json()
    except httpx.TransportError:  # the server is gone: are its environments gone too?
        return {pid for pid in _KNOWN.get(endpoint, set()) if Path(f"/proc/{pid}").exists()}
    pids = {e["Pid"] for e in listed["Environments"] if e["Pid"]}
    _KNOWN.setdefault(endpoint, set()).update(pids)
    return {pid for pid in _KNOWN[endpoint] if Path(f"/proc/{pid}").exists()}


# Every runtime pid a server has listed: after it stops, they must all be gone.
_KNOWN: dict[str, set[int]] = {}


def test_health(server: Server) -> None:
    resp = httpx.get(server.endpoint + "/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    # `auto`: the namespace backend wherever it can run (as root), else the process one.
    expected = os.environ.get("LAMINA_TEST_SANDBOX") or (
        "namespace" if os.geteuid() == 0 else "process"
    )
    assert body["sandbox"] == expected


def test_restart_keeps_functions_and_sigterm_stops_environments(own_server: Any) -> None:
    first = own_server()
    lam = first.client()
    lam.create_function(
        FunctionName="survivor",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": COUNTER})},
        Environment={"Variables": {"KEPT": "yes"}},
    )
    before = lam.get_function_configuration(FunctionName="survivor")
    lam.invoke(FunctionName="survivor")
    assert runtime_pids(first.endpoint), "an environment should be running"

    assert first.stop(signal.SIGTERM) == 0
    assert not runtime_pids(first.endpoint), "SIGTERM must stop every environment"

    orphan = first.data_dir / "code" / "tasks" / ("0" * 64)
    orphan.mkdir()
    (first.data_dir / "code" / "zips" / f"{'0' * 64}.zip").write_bytes(b"PK")
    second = own_server(first.data_dir)
    assert not orphan.exists(), "code no function references is collected at start"
    assert not (first.data_dir / "code" / "zips" / f"{'0' * 64}.zip").exists()
    lam2 = second.client()
    after = lam2.get_function_configuration(FunctionName="survivor")
    for key in ("FunctionArn", "CodeSha256", "RevisionId", "LastModified", "Environment"):
        assert after[key] == before[key]
    assert lam2.invoke(FunctionName="survivor")["StatusCode"] == 200
    assert second.stop(signal.SIGINT) == 0
    assert not runtime_pids(second.endpoint)


def test_region_and_account_are_configurable(own_server: Any, tmp_path: Path) -> None:
    srv = own_server(tmp_path / "other", "--region", "eu-west-1", "--account-id", "123456789012")
    lam = srv.client(region="eu-west-1")  # signed for the server's region, as it must be
    resp = lam.create_function(
        FunctionName="here",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": COUNTER})},
    )
    assert resp["FunctionArn"] == "arn:aws:lambda:eu-west-1:123456789012:function:here"
    got = lam.get_function(FunctionName="arn:aws:lambda:eu-west-1:123456789012:function:here")
    assert got["Configuration"]["FunctionName"] == "here"


def test_non_loopback_without_auth_is_refused(tmp_path: Path) -> None:
    """Beyond loopback, authentication is required (on by default). Tests never bind beyond
    loopback: this one is refused before anything binds."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--host",
            "0.0.0.0",
            "--auth",
            "off",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--auth off is only allowed on a loopback address" in result.stderr
    assert not (tmp_path / "d").exists()


def test_metrics_time_each_cold_start_phase(server: Server, lam: Any) -> None:
    lam.create_function(
        FunctionName="metered",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": COUNTER})},
    )
    try:
        lam.invoke(FunctionName="metered")
        text = httpx.get(server.endpoint + "/metrics").text
    finally:
        lam.delete_function(FunctionName="metered")
    for phase in ("sandbox", "start", "init"):
        assert (
            f'lamina_cold_start_phase_seconds_count{{phase="{phase}",runtime="python3.11"}}' in text
        )
    assert (
        'lamina_invocations_total{function="metered",outcome="success",qualifier="$LATEST",'
        'runtime="python3.11",version="$LATEST"}' in text
    )


def test_sigterm_does_not_wait_for_a_hanging_function(own_server: Any, tmp_path: Path) -> None:
    srv = own_server(tmp_path / "hang", "--shutdown-grace", "1")
    lam = srv.client()
    lam.create_function(
        FunctionName="hangs",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Timeout=300,
        Code={
            "ZipFile": make_zip(
                {"app.py": "import time\ndef handler(e, c):\n    time.sleep(300)\n"}
            )
        },
    )
    outcome: list[Any] = []

    def call() -> None:
        try:
            lam.invoke(FunctionName="hangs")
        except Exception as e:  # the answer to an invocation cut short
            outcome.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    for _ in range(500):
        if runtime_pids(srv.endpoint):
            break
        time.sleep(0.01)
    assert runtime_pids(srv.endpoint)
    # The server must stop long before the function's 300 s timeout.
    assert srv.stop(signal.SIGTERM, timeout=30) == 0
    caller.join(30)
    assert not runtime_pids(srv.endpoint)
    assert outcome and "ServiceException" in str(outcome[0])
