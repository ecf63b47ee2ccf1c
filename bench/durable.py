"""Benchmark durable functions: a 10-step workflow end to end, and 1,000 executions suspended
on a wait, with AWS's Python SDK (aws-durable-execution-sdk-python) unchanged.

Run: ``.venv/bin/python bench/durable.py [--workflows 30] [--suspended 1000]`` (or
``make bench-durable ARGS="..."``).

What it measures
----------------
One ``lamina serve`` at the defaults a user gets (authentication on, the default sandbox:
namespace as root), everything signed with the benchmarks' admin key; the functions are
python3.11 packages holding the SDK with its dependencies (pip-installed once into a directory
beside the runtime cache), with an execution role allowed what AWS's managed policy for
durable functions allows.

1. **Workflow**: ``--workflows`` executions, one after the other, of a function whose handler
   runs 10 steps (each returns a small dict), started with a synchronous Invoke (the call
   returns when the execution has ended). Reported: steps per second end to end (10 x
   executions / wall time), and the latency of each ``CheckpointDurableExecution`` call the
   SDK makes, timed inside the function with botocore event hooks on the client handed to
   the SDK (``before-send`` to ``after-call``: the signed HTTP round trip and the server's
   work, durable write included), p50 and p99.
   Floors, in the same run: the same 10 steps as plain function calls in a non-durable
   function invoked the same way (steps/s without checkpoints), and a signed
   ``GetFunctionConfiguration`` made from inside the durable function with the same client
   and timed the same way (an API round trip that writes nothing), in executions of their
   own after the timed ones.
2. **Suspended**: ``--suspended`` executions started with asynchronous Invokes, at most
   ``--start-concurrency`` (8) of them between their start and their suspension at once (a
   client pacing itself), each of which checkpoints a step that computes how long to wait,
   then waits until a common moment ``--suspend-seconds`` after the first start. Once every
   one has suspended: the server process's RSS over what it held before the first start,
   environments busy and invocations running (both should be 0: a suspended execution
   holds nothing), environments alive (idle warm ones the pool keeps, as for any function).
   After the common moment: the time until the last execution has SUCCEEDED (polled with
   ListDurableExecutionsByFunction), and per execution the lateness of its end past its
   wait's ScheduledEndTimestamp (p50, max). Floor: as many asynchronous Invokes of a no-op
   function (8 clients at once), drained (the fastest the server runs that many).

Targets (issue 22): checkpoint p50 <= 2 ms; 1,000 suspended executions hold no environment
and <= 50 MB of server memory; all resume within 10 s of their wait ending. Nothing is
asserted; a run whose executions fail is invalid (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from botocore.credentials import Credentials

from harness import (
    HOST,
    BenchError,
    free_port,
    guarded,
    http_ok,
    lambda_client,
    log,
    rss_kib,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from signing import ADMIN_KEY, admin_key_args

SDK = "aws-durable-execution-sdk-python==3.0.0"
ROLE_NAME = "bench-durable"
ROLE = f"arn:aws:iam::000000000000:role/{ROLE_NAME}"
ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "lambda:CheckpointDurableExecution",
                "lambda:GetDurableExecutionState",
                "lambda:GetFunctionConfiguration",  # the in-function floor call
            ],
            "Resource": "*",
        }
    ],
}
DURABLE_CONFIG = {"ExecutionTimeout": 3600, "RetentionPeriodInDays": 1}
FLOOR_CALLS = 20

# The handler builds the SDK's client itself and hands it over (the SDK's documented
# `boto3_client` parameter) so that the benchmark can hook it; the steps are what is measured.
WORKFLOW = """\
import time

import boto3
from aws_durable_execution_sdk_python import DurableContext, durable_execution

_client = boto3.client("lambda")
_timings = {"CheckpointDurableExecution": [], "GetFunctionConfiguration": []}
_started = {}


def _hooks(op):
    def before(**kwargs):  # before-send: signed, about to go out
        _started[op] = time.perf_counter()

    def after(**kwargs):  # after-call: answered and parsed
        _timings[op].append((time.perf_counter() - _started.pop(op)) * 1000)

    _client.meta.events.register(f"before-send.lambda.{op}", before)
    _client.meta.events.register(f"after-call.lambda.{op}", after)


for _op in _timings:
    _hooks(_op)


@durable_execution(boto3_client=_client)
def handler(event, context: DurableContext):
    for calls in _timings.values():  # this invocation's calls only
        calls.clear()
    for i in range(10):
        context.step(lambda _, i=i: {"step": i}, name=f"step-{i}")
    for _ in range(FLOOR_CALLS if event.get("floor") else 0):
        _client.get_function_configuration(FunctionName=event["self"])
    return _timings
""".replace("FLOOR_CALLS", str(FLOOR_CALLS))

PLAIN_STEPS = """\
def handler(event, context):
    return [{"step": i} for i in range(10)]
"""

SUSPEND = """\
import math
import time

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration


@durable_execution
def handler(event, context: DurableContext):
    # The wait's length is checkpointed by a step, so a replay waits the same.
    seconds = context.step(
        lambda _: max(1, math.ceil(event["until"] - time.time())), name="how-long"
    )
    context.wait(Duration.from_seconds(seconds), name="until")
    return "resumed"
"""

NOOP = """\
def handler(event, context):
    return None
"""


@dataclass
class Results:
    workflow_s: float = 0.0
    workflows: int = 0
    plain_s: float = 0.0
    checkpoint_ms: list[float] = field(default_factory=list)
    floor_call_ms: list[float] = field(default_factory=list)
    suspended: int = 0
    start_s: float = 0.0
    rss_before_mib: float = 0.0
    rss_suspended_mib: float = 0.0
    busy_envs: float = 0.0
    running_invocations: float = 0.0
    live_envs: float = 0.0
    resume_all_s: float = 0.0
    lateness_s: list[float] = field(default_factory=list)
    floor_drain_s: float = 0.0
    #: why the run is invalid (executions that failed), printed after what was measured
    failure: str = ""


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _sdk_dir() -> Path:
    """The SDK with its dependencies, pip-installed once beside the runtime cache (the tests
    use the same directory)."""
    target = Path(os.environ["LAMINA_RUNTIME_CACHE"]).parent / "lamina-test-durable-python"
    if (target / ".installed").exists():
        return target
    log(f"installing {SDK} into {target}")
    staging = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
    try:
        subprocess.run(
            [*pip, SDK, "--target", str(staging)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        (staging / ".installed").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"pip could not install {SDK}: {exc.stderr.decode()[-500:]}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _package(sdk: Path | None, source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(sdk.rglob("*")) if sdk is not None else []:
            rel = path.relative_to(sdk) if sdk is not None else path
            if path.is_file() and rel.parts[0] != ".installed" and "__pycache__" not in rel.parts:
                zf.write(path, rel.as_posix())
        zf.writestr("app.py", source)
    return buf.getvalue()


def _create(lam: Any, name: str, zipped: bytes, durable: bool, memory_mb: int = 512) -> None:
    extra = {"DurableConfig": DURABLE_CONFIG} if durable else {}
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zipped},
        MemorySize=memory_mb,
        Timeout=60,
        **extra,
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240}
    )


def _metrics(endpoint: str) -> dict[str, float]:
    text = httpx.get(f"{endpoint}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(lamina_environments|lamina_concurrent_executions)\{(.*)\} (\S+)$", line)
        if m:
            found[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return found


def _busy(metrics: dict[str, float], function: str) -> tuple[float, float, float]:
    """(environments busy, invocations running of `function`, environments alive)."""
    busy = sum(
        v for k, v in metrics.items() if k.startswith("lamina_environments") and 'state="busy"' in k
    )
    alive = sum(
        v
        for k, v in metrics.items()
        if k.startswith("lamina_environments") and 'state="dead"' not in k
    )
    running = sum(
        v
        for k, v in metrics.items()
        if k.startswith("lamina_concurrent_executions") and f'function="{function}"' in k
    )
    return busy, running, alive


def _invoke_sync(lam: Any, name: str, payload: dict[str, Any], durable: bool) -> bytes:
    extra = {"Qualifier": "$LATEST", "DurableExecutionName": uuid.uuid4().hex} if durable else {}
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **extra)
    body: bytes = resp["Payload"].read()
    if resp.get("FunctionError"):
        raise BenchError(f"{name} failed: {body[:500]!r}")
    return body


def workflow(endpoint: str, sdk: Path, res: Results, count: int) -> None:
    lam: Any = lambda_client(endpoint, attempts=1)
    _create(lam, "bench-steps", _package(sdk, WORKFLOW), durable=True)
    _create(lam, "bench-plain-steps", _package(None, PLAIN_STEPS), durable=False)
    for _ in range(2):  # warm-up: environments started, the SDK imported, the store warm
        _invoke_sync(lam, "bench-steps", {"self": "bench-steps"}, durable=True)
        _invoke_sync(lam, "bench-plain-steps", {}, durable=False)
    log(f"workflow: {count} executions of 10 steps")
    t0 = time.perf_counter()
    for _ in range(count):
        out = json.loads(_invoke_sync(lam, "bench-steps", {"self": "bench-steps"}, durable=True))
        res.checkpoint_ms += out["CheckpointDurableExecution"]
    res.workflow_s = time.perf_counter() - t0
    res.workflows = count
    # The in-function floor, in executions of their own so the workflow's time holds none.
    for _ in range(max(1, count // 5)):
        payload = {"self": "bench-steps", "floor": True}
        out = json.loads(_invoke_sync(lam, "bench-steps", payload, durable=True))
        res.floor_call_ms += out["GetFunctionConfiguration"]
    t0 = time.perf_counter()
    for _ in range(count):
        _invoke_sync(lam, "bench-plain-steps", {}, durable=False)
    res.plain_s = time.perf_counter() - t0


def _start_all(endpoint: str, name: str, payloads: Sequence[dict[str, Any]], durable: bool) -> None:
    clients: list[Any] = [lambda_client(endpoint, attempts=3) for _ in range(8)]

    def send(i: int) -> None:
        extra = {"Qualifier": "$LATEST", "DurableExecutionName": f"s-{i}"} if durable else {}
        resp = clients[i % 8].invoke(
            FunctionName=name,
            InvocationType="Event",
            Payload=json.dumps(payloads[i]).encode(),
            **extra,
        )
        if resp["StatusCode"] != 202:
            raise BenchError(f"Event invoke answered {resp['StatusCode']}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(len(payloads))))


def _why(lam: Any, arn: str) -> str:
    """The last error an execution's history records (for a failed run's message)."""
    page = lam.get_durable_execution_history(DurableExecutionArn=arn, IncludeExecutionData=True)
    for event in reversed(page["Events"]):
        for key, value in event.items():
            if key.endswith("Details") and isinstance(value, dict) and "Error" in value:
                return f"{event['EventType']}: {value['Error'].get('Payload')}"
    return "no error recorded"


def _start_paced(
    endpoint: str, name: str, payload: dict[str, Any], count: int, in_flight: int
) -> list[str]:
    """Start `count` executions with asynchronous invokes, at most `in_flight` of them between
    their start and their suspension at once (a client pacing itself, as one starting a
    thousand workflows would; the server's own pacing of a burst is a separate question)."""
    clients: list[Any] = [lambda_client(endpoint, attempts=3) for _ in range(in_flight)]

    def one(i: int) -> str:
        lam = clients[i % in_flight]
        resp = lam.invoke(
            FunctionName=name,
            InvocationType="Event",
            Qualifier="$LATEST",
            DurableExecutionName=f"s-{i}",
            Payload=json.dumps(payload).encode(),
        )
        arn: str = resp["DurableExecutionArn"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            page = lam.get_durable_execution_history(DurableExecutionArn=arn, MaxItems=1000)
            kinds = [e["EventType"] for e in page["Events"]]
            if "WaitStarted" in kinds and kinds[-1] == "InvocationCompleted":
                return arn
            if kinds and kinds[-1] in ("ExecutionFailed", "ExecutionSucceeded"):
                raise BenchError(f"{arn} ended before its wait: {_why(lam, arn)}")
            time.sleep(0.01)
        raise BenchError(f"{arn} had not suspended after 120 s")

    with ThreadPoolExecutor(in_flight) as pool:
        return list(pool.map(one, range(count)))


def _statuses(lam: Any, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    marker: str | None = None
    while True:
        page = lam.list_durable_executions_by_function(
            FunctionName=name, MaxItems=1000, **({"Marker": marker} if marker else {})
        )
        found += page["DurableExecutions"]
        marker = page.get("NextMarker")
        if not marker:
            return found


def _suspended_count(lam: Any, arns: Sequence[str]) -> int:
    """How many executions have checkpointed their wait and ended their invocation."""

    def one(arn: str) -> bool:
        page = lam.get_durable_execution_history(DurableExecutionArn=arn, MaxItems=1000)
        kinds = [e["EventType"] for e in page["Events"]]
        return "WaitStarted" in kinds and kinds[-1] == "InvocationCompleted"

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, arns))


def suspended(
    server_pid: int,
    endpoint: str,
    sdk: Path,
    res: Results,
    count: int,
    hold_s: float,
    in_flight: int,
) -> None:
    lam: Any = lambda_client(endpoint, attempts=3)
    _create(lam, "bench-suspend", _package(sdk, SUSPEND), durable=True, memory_mb=256)
    _create(lam, "bench-noop", _package(None, NOOP), durable=False, memory_mb=256)

    # Floor: as many plain Event invokes, drained.
    log(f"floor: {count} asynchronous invokes of a no-op function")
    t0 = time.perf_counter()
    _start_all(endpoint, "bench-noop", [{}] * count, durable=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        depth = httpx.get(f"{endpoint}/metrics", timeout=10).text
        m = re.search(r'^lamina_async_queue_depth\{function="bench-noop"\} (\S+)$', depth, re.M)
        running = _busy(_metrics(endpoint), "bench-noop")[1]
        if (m is None or float(m.group(1)) == 0) and running == 0:
            break
        time.sleep(0.05)
    res.floor_drain_s = time.perf_counter() - t0

    # Warm up the durable function (one execution to its end) before the memory baseline.
    lam.invoke(
        FunctionName="bench-suspend",
        Qualifier="$LATEST",
        DurableExecutionName="warm",
        Payload=json.dumps({"until": time.time() + 1}).encode(),
    )
    time.sleep(1.0)
    res.rss_before_mib = rss_kib(server_pid) / 1024

    until = time.time() + hold_s
    log(f"suspended: starting {count} executions ({in_flight} at once) that wait until "
        f"+{hold_s:.0f} s")  # fmt: skip
    t0 = time.perf_counter()
    arns = _start_paced(endpoint, "bench-suspend", {"until": until}, count, in_flight)
    res.start_s = time.perf_counter() - t0
    if time.time() >= until - 1:
        raise BenchError(
            f"starting took {res.start_s:.0f} s, past the waits' end: raise --suspend-seconds"
        )
    time.sleep(0.5)  # the last invocations' environments return to the pool
    busy, running, alive = _busy(_metrics(endpoint), "bench-suspend")
    res.suspended = _suspended_count(lam, arns)
    res.rss_suspended_mib = rss_kib(server_pid) / 1024
    res.busy_envs, res.running_invocations, res.live_envs = busy, running, alive
    if res.suspended != count:
        raise BenchError(f"only {res.suspended} of {count} executions are suspended")

    log("waiting for the executions to resume")
    deadline = until + 300
    while time.time() < deadline:
        ended = [e for e in _statuses(lam, "bench-suspend") if e["Status"] != "RUNNING"]
        if len(ended) == count + 1:
            break
        time.sleep(0.05)
    res.resume_all_s = time.time() - until
    by_arn = {e["DurableExecutionArn"]: e["Status"] for e in _statuses(lam, "bench-suspend")}
    failed = [arn for arn in arns if by_arn.get(arn) != "SUCCEEDED"]
    if failed:
        res.failure = (
            f"{len(failed)} of {count} executions did not succeed after their wait, e.g. "
            f"{failed[0]} ({by_arn.get(failed[0])}): {_why(lam, failed[0])}"
        )
    arns = [arn for arn in arns if arn not in set(failed)]

    def lateness(arn: str) -> float:
        events = lam.get_durable_execution_history(DurableExecutionArn=arn, MaxItems=1000)["Events"]
        due: datetime = next(
            e["WaitStartedDetails"]["ScheduledEndTimestamp"]
            for e in events
            if e["EventType"] == "WaitStarted"
        )
        end: datetime = events[-1]["EventTimestamp"]
        return (end - due).total_seconds()

    with ThreadPoolExecutor(8) as pool:
        res.lateness_s = list(pool.map(lateness, arns))
    res.lateness_s = res.lateness_s or [float("nan")]


def _define_role(endpoint: str) -> None:
    from lamina.cli.signing import Signer

    signer = Signer(endpoint, Credentials(*ADMIN_KEY), region="us-east-1")
    put = httpx.put(
        f"{endpoint}/lamina/roles/{ROLE_NAME}",
        json={"Policies": [ROLE_POLICY]},
        auth=signer,
        timeout=10,
    )
    if put.status_code != 200:
        raise BenchError(f"defining the role failed: {put.status_code} {put.text}")


def run(tmp: Path, args: argparse.Namespace) -> Results:
    res = Results()
    sdk = _sdk_dir()
    with contextlib.ExitStack() as stack:
        data_dir = tmp / "lamina-data"
        data_dir.mkdir()
        port = free_port()
        argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
        argv += ["--sandbox", args.sandbox] if args.sandbox else []
        server = start_server("lamina", argv, tmp, tmp / "lamina.log")
        stack.callback(stop_server, server)
        endpoint = f"http://{HOST}:{port}"
        wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
        _define_role(endpoint)
        if args.workflows:
            workflow(endpoint, sdk, res, args.workflows)
        if args.suspended:
            suspended(
                server.proc.pid,
                endpoint,
                sdk,
                res,
                args.suspended,
                args.suspend_seconds,
                args.start_concurrency,
            )
    return res


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def report(res: Results) -> None:
    if res.workflows:
        steps = 10 * res.workflows
        rate, plain = steps / res.workflow_s, steps / res.plain_s
        cp50, cp99 = _pct(res.checkpoint_ms, 0.5), _pct(res.checkpoint_ms, 0.99)
        f50, f99 = _pct(res.floor_call_ms, 0.5), _pct(res.floor_call_ms, 0.99)
        per = len(res.checkpoint_ms) / res.workflows
        print(f"10-step workflow, {res.workflows} executions (synchronous invokes)")
        print(
            f"  steps/s end to end {rate:.1f}; floor (the same steps, no checkpoints) "
            f"{plain:.1f}; ratio {rate / plain:.2f}x"
        )
        print(
            f"  CheckpointDurableExecution p50 {cp50:.2f} ms, p99 {cp99:.2f} ms "
            f"({len(res.checkpoint_ms)} calls, {per:.1f} per execution)"
        )
        print(
            f"  floor: GetFunctionConfiguration from the function p50 {f50:.2f} ms, "
            f"p99 {f99:.2f} ms; checkpoint/floor p50 {cp50 / f50:.2f}x"
        )
        print(f"  target checkpoint p50 <= 2 ms: {cp50:.2f} ms ({_met(cp50 <= 2)})")
    if res.suspended:
        rss = res.rss_suspended_mib - res.rss_before_mib
        held = res.busy_envs + res.running_invocations
        late50, late_max = _pct(res.lateness_s, 0.5), max(res.lateness_s)
        print(f"{res.suspended} executions suspended on a wait")
        print(f"  started in {res.start_s:.1f} s ({res.suspended / res.start_s:.0f}/s)")
        print(
            f"  server RSS {res.rss_before_mib:.1f} -> {res.rss_suspended_mib:.1f} MiB "
            f"(+{rss:.1f} MiB, {rss * 1024 / res.suspended:.1f} KiB per execution)"
        )
        print(
            f"  environments busy {res.busy_envs:.0f}, invocations running "
            f"{res.running_invocations:.0f}; environments alive (idle in the pool) "
            f"{res.live_envs:.0f}"
        )
        print(
            f"  all ended {res.resume_all_s:.2f} s after the common wait end; lateness of the "
            f"{len(res.lateness_s)} that succeeded past their wait's end p50 {late50:.2f} s, "
            f"max {late_max:.2f} s"
        )
        print(
            f"  floor: {res.suspended} Event invokes of a no-op drained in "
            f"{res.floor_drain_s:.2f} s; resume/floor {res.resume_all_s / res.floor_drain_s:.2f}x"
        )
        print(f"  target <= 50 MB held: +{rss:.1f} MiB ({_met(rss <= 50)})")
        print(f"  target no environment held: {held:.0f} ({_met(held == 0)})")
        resumed = late_max <= 10 and not res.failure
        print(f"  target all resumed within 10 s: {late_max:.2f} s ({_met(resumed)})")
    if res.failure:
        print(f"INVALID: {res.failure}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workflows", type=int, default=30, help="10-step executions (0: skip)")
    parser.add_argument("--suspended", type=int, default=1000, help="suspended executions")
    parser.add_argument(
        "--suspend-seconds",
        type=float,
        default=120.0,
        help="how long after the first start every wait ends (time to start them all, and more)",
    )
    parser.add_argument(
        "--start-concurrency",
        type=int,
        default=8,
        help="executions between their start and their suspension at once",
    )
    parser.add_argument("--sandbox", default=None, help="for comparison only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> Results:
        tmp_dir = tempfile.TemporaryDirectory(prefix="lamina-durable-", ignore_cleanup_errors=True)
        with tmp_dir as tmp, unbroken_cleanup():
            return run(Path(tmp), args)

    res = guarded(work)
    report(res)
    return 1 if res.failure else 0


if __name__ == "__main__":
    sys.exit(main())
