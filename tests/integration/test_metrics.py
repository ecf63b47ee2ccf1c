"""GET /metrics: a known sequence of invocations moves each series by exactly its count, and
the exposition parses with Prometheus' text parser (prometheus_client's port of it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import ROLE, Server, make_zip

pytestmark = pytest.mark.control_plane

CODE = """
import os, time
def handler(event, context):
    do = event.get("do")
    if do == "raise":
        raise ValueError("asked to")
    if do == "sleep":
        time.sleep(event["for"])
    if do == "exit":
        os._exit(3)
    return "ok"
"""
RUNTIME = "python3.11"
RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(data_dir=tmp_path_factory.mktemp("metrics") / "data").start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def lam(srv: Server) -> Any:
    return srv.client()


def scrape(srv: Server) -> Samples:
    resp = httpx.get(srv.endpoint + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain;")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def create(lam: Any, name: str, **kwargs: Any) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime=RUNTIME,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": CODE})},
        **kwargs,
    )


def wait_for(srv: Server, check: Callable[[Samples], bool]) -> Samples:
    samples: Samples = {}
    for _ in range(500):
        samples = scrape(srv)
        if check(samples):
            return samples
        time.sleep(0.01)
    raise AssertionError("metrics never showed it")


def invoke(lam: Any, name: str, payload: str = "{}", **kwargs: Any) -> str | None:
    resp = lam.invoke(FunctionName=name, Payload=payload, **kwargs)
    resp["Payload"].read()
    error: str | None = resp.get("FunctionError")
    return error


def test_each_counter_moves_by_exactly_the_invocations_made(srv: Server, lam: Any) -> None:
    name = "counted"
    create(lam, name, Timeout=1)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    before = scrape(srv)
    assert value(before, "lamina_function_info", function=name, version="$LATEST", runtime=RUNTIME)

    for _ in range(3):
        assert invoke(lam, name) is None
    for _ in range(2):
        assert invoke(lam, name, '{"do": "raise"}') == "Unhandled"
    assert invoke(lam, name, '{"do": "sleep", "for": 5}') == "Unhandled"  # times out
    assert invoke(lam, name, '{"do": "exit"}') == "Unhandled"  # a new environment, crashed
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        invoke(lam, name)
    lam.delete_function_concurrency(FunctionName=name)
    assert invoke(lam, name, Qualifier="live") is None
    assert invoke(lam, name, Qualifier="1") is None

    expected = {
        ("$LATEST", "success"): 3,
        ("$LATEST", "function_error"): 2,
        ("$LATEST", "timeout"): 1,
        ("$LATEST", "platform_error"): 1,
        ("1", "success"): 2,  # through the alias and by number
    }
    # Counted just after each answer goes out: wait for the last one.
    after = wait_for(
        srv,
        lambda s: (
            value(s, "lamina_invocations_total", function=name, version="1", outcome="success") == 2
        ),
    )
    for (version, outcome), count in expected.items():
        labels = {"function": name, "version": version, "outcome": outcome}
        assert value(after, "lamina_invocations_total", **labels) == count, labels
    total = sum(
        v
        for (n, labels), v in after.items()
        if n == "lamina_invocations_total" and ("function", name) in labels
    )
    assert total == sum(expected.values())
    assert value(after, "lamina_throttles_total", function=name, reason=RESERVED) == 1
    # Labelled by what was invoked and by runtime too: version 1 through the alias and by number.
    for qualifier in ("live", "1"):
        by = {"function": name, "version": "1", "qualifier": qualifier, "runtime": RUNTIME}
        assert value(after, "lamina_invocations_total", outcome="success", **by) == 1, qualifier
    assert (
        value(
            after,
            "lamina_throttles_total",
            function=name,
            qualifier="$LATEST",
            runtime=RUNTIME,
            reason=RESERVED,
        )
        == 1
    )

    # Every invocation that reached a runtime has a duration, under the qualifier it named.
    def durations(qualifier: str, version: str, suffix: str = "_count", **le: str) -> float:
        return value(
            after,
            "lamina_invocation_duration_seconds" + suffix,
            function=name,
            version=version,
            qualifier=qualifier,
            runtime=RUNTIME,
            **le,
        )

    assert durations("$LATEST", "$LATEST") == 7
    assert durations("$LATEST", "$LATEST", "_bucket", le="+Inf") == 7
    assert durations("$LATEST", "$LATEST", "_sum") >= 1  # the timeout alone ran 1 s
    assert durations("live", "1") == 1
    assert durations("1", "1") == 1

    # $LATEST started two environments (the first; the one after the timeout killed it),
    # version 1 one: each a cold start for the invocation that waited, each one init.
    for version, started in (("$LATEST", 2), ("1", 1)):
        labels = {"function": name, "version": version, "runtime": RUNTIME}
        assert value(after, "lamina_cold_starts_total", **labels) == started, version
        assert value(after, "lamina_init_duration_seconds_count", **labels) == started, version
        assert value(after, "lamina_init_duration_seconds_sum", **labels) > 0
    for phase in ("sandbox", "start", "init"):
        assert (
            value(after, "lamina_cold_start_phase_seconds_count", phase=phase, runtime=RUNTIME) >= 3
        )
    assert value(after, "lamina_concurrent_executions", function=name) == 0


def test_concurrent_executions_while_an_invocation_runs(srv: Server, lam: Any) -> None:
    name = "slowpoke"
    create(lam, name, Timeout=30)
    assert invoke(lam, name) is None
    assert value(scrape(srv), "lamina_concurrent_executions", function=name) == 0
    slow = threading.Thread(target=invoke, args=(lam, name, '{"do": "sleep", "for": 1.5}'))
    slow.start()
    try:
        running = wait_for(
            srv, lambda s: value(s, "lamina_concurrent_executions", function=name) == 1
        )
        assert value(running, "lamina_environments", state="busy") >= 1
    finally:
        slow.join(30)
    assert value(scrape(srv), "lamina_concurrent_executions", function=name) == 0


def test_provisioned_concurrency_and_its_utilisation(srv: Server, lam: Any) -> None:
    name = "provisioned"
    create(lam, name, Timeout=30)
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    v1 = {"function": name, "version": "1"}
    ready = wait_for(
        srv, lambda s: value(s, "lamina_provisioned_concurrency", **v1, state="allocated") == 1
    )
    assert value(ready, "lamina_provisioned_concurrency", **v1, state="requested") == 1
    assert value(ready, "lamina_provisioned_concurrency_utilization", **v1) == 0
    with_runtime = {**v1, "runtime": RUNTIME}
    assert value(ready, "lamina_init_duration_seconds_count", **with_runtime) == 1
    assert value(ready, "lamina_cold_starts_total", **with_runtime) == 0

    slow = threading.Thread(
        target=invoke, args=(lam, name, '{"do": "sleep", "for": 1.5}'), kwargs={"Qualifier": "1"}
    )
    slow.start()
    try:
        wait_for(srv, lambda s: value(s, "lamina_provisioned_concurrency_utilization", **v1) == 1)
    finally:
        slow.join(30)
    after = wait_for(
        srv, lambda s: value(s, "lamina_provisioned_concurrency_utilization", **v1) == 0
    )
    # The provisioned environment served it: no cold start, no second init.
    assert value(after, "lamina_cold_starts_total", **with_runtime) == 0
    assert value(after, "lamina_init_duration_seconds_count", **with_runtime) == 1
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    gone = wait_for(
        srv, lambda s: value(s, "lamina_provisioned_concurrency", **v1, state="allocated") == 0
    )
    assert ("lamina_provisioned_concurrency_utilization", frozenset(v1.items())) not in gone


def test_a_deleted_function_leaves_the_gauges(srv: Server, lam: Any) -> None:
    name = "ephemeral"
    create(lam, name)
    assert invoke(lam, name) is None
    assert value(
        scrape(srv), "lamina_function_info", function=name, version="$LATEST", runtime=RUNTIME
    )
    lam.delete_function(FunctionName=name)
    samples = wait_for(
        srv, lambda s: ("lamina_concurrent_executions", frozenset({("function", name)})) not in s
    )
    assert not value(
        samples, "lamina_function_info", function=name, version="$LATEST", runtime=RUNTIME
    )
