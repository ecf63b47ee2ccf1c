"""Metering: `/lamina/usage` and `lamina usage` add up to exactly what the REPORT lines say."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, lamina

pytestmark = pytest.mark.control_plane

CODE = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return "ok"
"""

_START = re.compile(r"START RequestId: (\S+) Version: (\S+)")
_REPORT = re.compile(
    r"REPORT RequestId: (\S+)\tDuration: [\d.]+ ms\tBilled Duration: (\d+) ms\t"
    r"Memory Size: (\d+) MB\t"
)

# (version) -> [requests, billed ms, billed ms x memory MB]
Expected = dict[str, list[int]]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path / "data").start()
    yield srv
    srv.stop()


def invoke(lam: Any, name: str, event: dict[str, Any], expected: Expected, **kw: Any) -> Any:
    """Invoke with LogType=Tail and add what its REPORT line bills to `expected`."""
    resp = lam.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps(event).encode(), **kw)
    resp["Payload"].read()
    text = base64.b64decode(resp["LogResult"]).decode()
    rid = resp["ResponseMetadata"]["RequestId"]
    starts = {m[1]: m[2] for m in _START.finditer(text)}
    reports = [m for m in _REPORT.finditer(text) if m[1] == rid]
    assert len(reports) == 1, text
    billed, memory = int(reports[0][2]), int(reports[0][3])
    bucket = expected.setdefault(starts[rid], [0, 0, 0])
    bucket[0] += 1
    bucket[1] += billed
    bucket[2] += billed * memory
    return resp


def usage(server: Server, **params: str) -> dict[str, Any]:
    resp = SIGNED_HTTP.get(server.endpoint + "/lamina/usage", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def by_version(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int, float]]:
    out: dict[str, tuple[int, int, float]] = {}
    for row in rows:
        r, b, g = out.get(row["version"], (0, 0, 0.0))
        out[row["version"]] = (r + row["requests"], b + row["billedMs"], g + row["gbSeconds"])
    return out


def assert_matches(rows: list[dict[str, Any]], expected: Expected) -> None:
    got = by_version(rows)
    assert set(got) == set(expected)
    for version, (requests, billed, mb_ms) in expected.items():
        assert got[version][:2] == (requests, billed), version
        assert got[version][2] == pytest.approx(mb_ms / 1_024_000, rel=1e-12), version


def test_usage_equals_the_sum_of_the_report_lines(own_server: Server) -> None:
    lam = own_server.client()
    functions = Functions(lam)
    name = functions.create(CODE, MemorySize=128, Timeout=1)["FunctionName"]
    expected: Expected = {}
    for sleep in (0, 0.05, 0.01):
        invoke(lam, name, {"sleep": sleep}, expected)
    failed = invoke(lam, name, {"fail": True}, expected)
    assert failed["FunctionError"] == "Unhandled"
    timed_out = invoke(lam, name, {"sleep": 3}, expected)  # billed, as Lambda bills it
    assert timed_out["FunctionError"] == "Unhandled"
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, MemorySize=512)
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    invoke(lam, name, {"sleep": 0.02}, expected)  # $LATEST, now at 512 MB
    invoke(lam, name, {}, expected, Qualifier="1")  # version 1, still 128 MB
    invoke(lam, name, {"fail": True}, expected, Qualifier="1")
    assert expected["$LATEST"][0] == 6 and expected["1"][0] == 2

    # A REPORT is counted as it is written (with Tail, before the response); reading usage
    # writes out what is pending, so the figures are exact at once.
    data = usage(own_server, function=name)
    assert data["function"] == name
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert {row["day"] for row in data["usage"]} <= {today, _yesterday()}  # midnight race
    assert set(data["usage"][0]) == {
        "function",
        "version",
        "day",
        "requests",
        "billedMs",
        "gbSeconds",
    }
    assert_matches(data["usage"], expected)
    assert usage(own_server, function="no-such-function")["usage"] == []
    assert_matches(usage(own_server, since=str(int(time.time())))["usage"], expected)
    assert usage(own_server, since="2999-01-01")["usage"] == []
    bad = SIGNED_HTTP.get(own_server.endpoint + "/lamina/usage", params={"since": "soon"})
    assert bad.status_code == 400

    # The CLI: the same figures, and the cost at the prices given.
    out = lamina(
        "usage",
        "--json",
        "--function",
        name,
        "--price-gb-second",
        "0.5",
        "--price-per-million-requests",
        "2000000",
        endpoint=own_server.endpoint,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["prices"] == {
        "currency": "USD",
        "perGbSecond": 0.5,
        "perMillionRequests": 2000000,
    }
    assert [row["version"] for row in report["usage"]] == ["$LATEST", "1"]
    assert_matches(report["usage"], expected)
    total_mb_ms = sum(b[2] for b in expected.values())
    total_requests = sum(b[0] for b in expected.values())
    assert report["total"]["requests"] == total_requests
    assert report["total"]["billedMs"] == sum(b[1] for b in expected.values())
    assert report["total"]["cost"] == pytest.approx(
        total_mb_ms / 1_024_000 * 0.5 + total_requests * 2
    )

    table = lamina("usage", "--since", "24h", endpoint=own_server.endpoint)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == [
        "FUNCTION",
        "VERSION",
        "INVOCATIONS",
        "BILLED",
        "MS",
        "GB-S",
        "COST",
        "(USD)",
    ]
    assert lines[2].split()[:3] == [name, "$LATEST", "6"]
    assert lines[3].split()[:3] == [name, "1", "2"]
    assert lines[-1].split()[:2] == ["TOTAL", "8"]
    help_text = " ".join(lamina("usage", "--help", endpoint=own_server.endpoint).stdout.split())
    assert "x86 on-demand list price" in help_text and "no free" in help_text

    # Usage is durable: a restart keeps every figure.
    assert own_server.stop() == 0
    own_server.start()
    assert_matches(usage(own_server, function=name)["usage"], expected)


def test_usage_of_invocations_without_tail_arrives_once_reported(own_server: Server) -> None:
    """Without LogType=Tail a REPORT is written just after the response: poll for it."""
    lam = own_server.client()
    name = Functions(lam).create(CODE, MemorySize=256)["FunctionName"]
    for _ in range(5):
        lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = usage(own_server, function=name)["usage"]
        if rows and sum(r["requests"] for r in rows) == 5:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"usage never reached 5 requests: {rows}")
    billed = sum(r["billedMs"] for r in rows)
    assert sum(r["gbSeconds"] for r in rows) == pytest.approx(billed * 256 / 1_024_000)


def _yesterday() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
