"""Concurrency: the account limit, reserved concurrency, and throttling as Lambda does it
(HTTP 429 TooManyRequestsException with a Reason, at once, never a hang)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ROLE, SIGNED_HTTP, Server, make_zip

SLEEPER = (
    "import time\n"
    "def handler(event, context):\n"
    "    if event.get('fail'):\n"
    "        raise RuntimeError('failed on purpose')\n"
    "    if event.get('crash'):\n"
    "        import os\n"
    "        os._exit(3)\n"
    "    time.sleep(event.get('sleep', 1.0))\n"
    "    return 'slept'\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: an account limit of 150 leaves room for reservations up to 50."""
    base = tmp_path_factory.mktemp("concurrency")
    srv = Server(data_dir=base / "data", extra_args=("--concurrency-limit", "150")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client(max_pool_connections=64)


def create(lam: Any, name: str, **kw: Any) -> str:
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": SLEEPER})},
        Timeout=5,
        **kw,
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT = "ConcurrentInvocationLimitExceeded"


def burst(
    lam: Any, name: str, count: int, event: str = '{"sleep": 1.0}', **kw: Any
) -> Counter[str]:
    """`count` invokes sent at the same moment; what each got: "ok", an error type, or the
    throttle's Reason."""
    start = threading.Barrier(count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        try:
            resp = lam.invoke(FunctionName=name, Payload=event, **kw)
            outcome = "ok" if "FunctionError" not in resp else "function-error"
            resp["Payload"].read()
        except lam.exceptions.TooManyRequestsException as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            outcome = str(e.response["Reason"])
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return Counter(outcomes)


def test_reserved_concurrency_throttles_exactly_the_excess(lam: Any) -> None:
    name = create(lam, "reserved-three")
    assert (
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)[
            "ReservedConcurrentExecutions"
        ]
        == 3
    )
    got = burst(lam, name, 10)
    assert got == Counter({"ok": 3, RESERVED: 7})
    # The leases came back: three at once again.
    assert burst(lam, name, 3) == Counter({"ok": 3})


def test_zero_reserved_stops_the_function(lam: Any) -> None:
    name = create(lam, "stopped")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
        lam.invoke(FunctionName=name)
    assert e.value.response["Reason"] == RESERVED
    lam.delete_function_concurrency(FunctionName=name)
    assert (
        lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    )
    assert lam.invoke(FunctionName=name, Payload='{"sleep": 0}')["StatusCode"] == 200


def test_counts_return_to_zero_after_failures_timeouts_and_crashes(lam: Any) -> None:
    name = create(lam, "unlucky")
    lam.update_function_configuration(FunctionName=name, Timeout=1)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for event in ('{"fail": true}', '{"crash": true}', '{"sleep": 3}', '{"sleep": 0}'):
        got = burst(lam, name, 2, event)
        assert (
            sum(got.values()) == 2
            and "ReservedFunctionConcurrentInvocationLimitExceeded" not in got
        )
    # Nothing leaked: exactly two may run at once, still.
    got = burst(lam, name, 4, '{"sleep": 0.8}')
    assert got == Counter({"ok": 2, RESERVED: 2})


def test_reservation_covers_every_version_and_alias(lam: Any, server: Server) -> None:
    name = create(lam, "versioned", Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    holder = threading.Thread(
        target=lambda: lam.invoke(FunctionName=name, Qualifier="1", Payload='{"sleep": 2}')
    )
    holder.start()
    try:
        # Once version 1 has an environment, its invoke holds the function's one lease.
        for _ in range(200):
            listed = SIGNED_HTTP.get(server.endpoint + "/lamina/environments").json()
            if any(e["FunctionName"] == name for e in listed["Environments"]):
                break
            time.sleep(0.01)
        for qualifier in ("$LATEST", "1", "live"):
            with pytest.raises(lam.exceptions.TooManyRequestsException):
                lam.invoke(FunctionName=name, Qualifier=qualifier, Payload='{"sleep": 0}')
    finally:
        holder.join(30)


def test_reservation_rules_and_account_settings(lam: Any, lam_unchecked: Any) -> None:
    name = create(lam, "rules")
    before = lam.get_account_settings()["AccountLimit"]
    assert before["ConcurrentExecutions"] == 150
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=20)
    after = lam.get_account_settings()
    assert after["AccountLimit"]["UnreservedConcurrentExecutions"] == (
        before["UnreservedConcurrentExecutions"] - 20
    )
    assert after["AccountUsage"]["FunctionCount"] >= 1
    assert lam.get_function(FunctionName=name)["Concurrency"] == {
        "ReservedConcurrentExecutions": 20
    }
    # Unreserved concurrency never drops below its minimum (100 here).
    room = after["AccountLimit"]["UnreservedConcurrentExecutions"] - 100
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=20 + room + 1)
    assert "minimum value of [100]" in str(e.value)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=20 + room)
    lam.delete_function_concurrency(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_concurrency(FunctionName="no-such", ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName=f"{name}:1", ReservedConcurrentExecutions=1)
    with pytest.raises(lam_unchecked.exceptions.ClientError) as bad:
        lam_unchecked.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=-1)
    assert bad.value.response["Error"]["Code"] == "ValidationException"


@pytest.fixture(scope="module")
def lam_unchecked(server: Server) -> Any:
    return server.client(parameter_validation=False)


def test_account_limit_throttles_unreserved_functions(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--concurrency-limit", "2")).start()
    try:
        lam = srv.client(max_pool_connections=16)
        create(lam, "one")
        create(lam, "two")
        got = burst(lam, "one", 5)
        assert got == Counter({"ok": 2, ACCOUNT: 3})
        # The account's limit is shared: one running invoke of "one" leaves one for "two".
        holder = threading.Thread(
            target=lambda: lam.invoke(FunctionName="one", Payload='{"sleep": 1.5}')
        )
        holder.start()
        try:
            for _ in range(300):  # until the holder's invoke runs (and holds its lease)
                listed = SIGNED_HTTP.get(srv.endpoint + "/lamina/environments").json()
                if any(
                    e["FunctionName"] == "one" and e["State"] == "busy"
                    for e in listed["Environments"]
                ):
                    break
                time.sleep(0.01)
            assert burst(lam, "two", 3)[ACCOUNT] == 2
        finally:
            holder.join(30)
        text = httpx.get(srv.endpoint + "/metrics").text
        assert (
            'lamina_throttles_total{function="one",qualifier="$LATEST",'
            'reason="ConcurrentInvocationLimitExceeded",runtime="python3.11"} 3.0' in text
        )
    finally:
        assert srv.stop() == 0


def test_reservations_survive_a_restart(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--concurrency-limit", "150")).start()
    try:
        lam = srv.client()
        create(lam, "kept")
        lam.put_function_concurrency(FunctionName="kept", ReservedConcurrentExecutions=0)
    finally:
        assert srv.stop() == 0
    srv = Server(data_dir=tmp_path / "data", extra_args=("--concurrency-limit", "150")).start()
    try:
        lam = srv.client()
        assert (
            lam.get_function_concurrency(FunctionName="kept")["ReservedConcurrentExecutions"] == 0
        )
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            lam.invoke(FunctionName="kept")
    finally:
        assert srv.stop() == 0
