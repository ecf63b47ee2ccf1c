"""SnapStart in the scheduler, with the fake sandbox: one template per published version, cold
starts restored from it (no init, after-restore hooks run, Restore Duration on the REPORT),
a failed hook is SnapStartException, a failed init settles the version Failed, and templates
go with their versions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lamina import limits
from lamina.control import snapstart
from lamina.errors import (
    ResourceConflictError,
    SnapStartError,
    SnapStartNotReadyError,
    SnapStartTimeoutError,
)
from lamina.models import FunctionConfig, FunctionState, InvokeRequest, LogFormat, LoggingConfig
from lamina.observability import LogStore, Meter, Metrics, Usage
from lamina.observability.logs import LogWriter, Report
from lamina.observability.metering import utc_day
from lamina.runtime_api.telemetry import Telemetry
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend, FakeHooks
from lamina.scheduler import Scheduler
from lamina.settings import Settings


def config(handler: str = "h.ok", version: str = "1", **kw: Any) -> FunctionConfig:
    return FunctionConfig(
        name="fn",
        version=version,
        runtime="python3.12",
        handler=handler,
        role="arn:aws:iam::000000000000:role/x",
        code_sha256="ab" * 32,
        code_size=1,
        revision_id=kw.pop("revision_id", "r1"),
        last_modified=datetime.now(UTC),
        snap_start="PublishedVersions",
        **kw,
    )


def request() -> InvokeRequest:
    return InvokeRequest(
        request_id=str(uuid.uuid4()),
        payload=b"{}",
        invoked_arn="arn:aws:lambda:us-east-1:000000000000:function:fn:1",
    )


class Calls:
    """What the fake function's hooks and handler saw (they run on the fake's threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.before = 0
        self.after = 0
        self.fail_after = False
        self.fail_before = False
        #: set: after-restore hooks wait for it (at most a second)
        self.slow_restore: threading.Event | None = None
        #: set: before-snapshot hooks wait for it (at most a second)
        self.slow_snapshot: threading.Event | None = None
        self.hold = threading.Event()
        self.hold.set()
        self.store: LogStore | None = None

    def before_snapshot(self) -> None:
        with self.lock:
            self.before += 1
        if self.slow_snapshot is not None:
            self.slow_snapshot.wait(1)
        if self.fail_before:
            raise RuntimeError("cannot snapshot this")

    def after_restore(self) -> None:
        with self.lock:
            self.after += 1
        if self.slow_restore is not None:
            self.slow_restore.wait(1)
        if self.fail_after:
            raise RuntimeError("no connection after restore")

    def handler(self, event: Any, context: Any) -> Any:
        self.hold.wait(5)
        # Each fake environment is a thread of its own: its id tells environments apart.
        return {
            "env": threading.get_ident(),
            "stream": context.log_stream_name,
            "group": context.log_group_name,
        }


def run(
    tmp_path: Path,
    body: Callable[[Scheduler, FakeBackend, Calls, list[Report]], Awaitable[None]],
) -> None:
    calls = Calls()

    async def main() -> None:
        hooks = FakeHooks(calls.before_snapshot, calls.after_restore)
        backend = FakeBackend({"h.ok": calls.handler}, {"h.ok": hooks})
        catalog = RuntimeCatalog(
            [RuntimeInfo("python3.12", "/nonexistent/python3.12", tmp_path / "runtime")]
        )
        store = calls.store = LogStore(tmp_path / "logs.db", 1 << 30)
        store.open()
        sched = Scheduler(
            Settings(data_dir=tmp_path),
            backend,
            catalog,
            Metrics(),
            task_root=lambda sha: tmp_path / "task",
            log_store=store,
        )
        reports: list[Report] = []
        sched.logs.on_report.append(reports.append)
        sched.start()
        try:
            await body(sched, backend, calls, reports)
        finally:
            await sched.close()
            await backend.close()
            await store.close()
        assert sched.environment_count() == 0

    asyncio.run(main())


async def _built(s: Scheduler, cfg: FunctionConfig) -> list[tuple[str, bytes | None]]:
    """Build the version's template as a publish does; what `on_built` was told."""
    told: list[tuple[str, bytes | None]] = []
    done = asyncio.Event()

    async def on_built(config: FunctionConfig, failure: bytes | None) -> None:
        told.append((config.version, failure))
        done.set()

    s.snapshots.on_built = on_built
    s.snapshots.build(cfg)
    await asyncio.wait_for(done.wait(), 10)
    return told


def test_a_published_version_is_initialised_once_and_cold_starts_restore(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        cfg = config()
        assert await _built(s, cfg) == [("1", None)]
        assert (fake.snapshots, calls.before, calls.after) == (1, 1, 0)
        s.snapshots.build(cfg)  # told again (a settle): nothing new
        calls.hold.clear()  # two invocations at once: two cold starts
        first = asyncio.create_task(s.invoke(cfg, request()))
        second = asyncio.create_task(s.invoke(cfg, request()))
        await asyncio.sleep(0.3)
        calls.hold.set()
        results = await asyncio.gather(first, second)
        assert all(r.function_error is None for r in results)
        answers = [json.loads(r.payload) for r in results]
        assert len({a["env"] for a in answers}) == 2, "two environments"
        # As on Lambda, SnapStart environments have no log group or stream variables.
        assert all(a["stream"] is None and a["group"] is None for a in answers)
        assert (fake.snapshots, fake.restores, calls.before, calls.after) == (1, 2, 1, 2)
        warm = await s.invoke(cfg, request())
        assert json.loads(warm.payload)["env"] in {a["env"] for a in answers}
        assert fake.restores == 2
        await asyncio.sleep(0.05)  # REPORTs are written after the answers
        restored = [r for r in reports if r.restore_duration_ms is not None]
        assert len(restored) == 2 and len(reports) == 3
        for r in restored:
            assert r.init_duration_ms is None
            line = r.line()
            assert "\tRestore Duration: " in line and "\tBilled Restore Duration: " in line
            assert "Init Duration" not in line
            billed = r.billed_restore_ms()
            assert billed is not None and r.metered_ms() == r.billed_ms() + billed
        # Each restored environment's stream: RESTORE_START, RESTORE_REPORT, then START.
        assert calls.store is not None
        await asyncio.sleep(0.3)
        await calls.store.flush()
        by_stream: dict[str, list[str]] = {}
        for e in await calls.store.events("/aws/lambda/fn"):
            by_stream.setdefault(e.stream, []).append(e.message)
        assert len(by_stream) == 2, "a stream per restored environment"
        for messages in by_stream.values():
            kinds = [m.split(" ", 1)[0] for m in messages]
            assert kinds[:3] == ["RESTORE_START", "RESTORE_REPORT", "START"], kinds

    run(tmp_path, body)


def test_a_failed_after_restore_hook_is_snapstart_exception(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        cfg = config()
        await _built(s, cfg)
        calls.fail_after = True
        with pytest.raises(SnapStartError) as raised:
            await s.invoke(cfg, request())
        assert raised.value.status == 400
        assert "afterRestore()" in raised.value.message
        calls.fail_after = False
        ok = await s.invoke(cfg, request())
        assert ok.function_error is None
        assert fake.snapshots == 1, "the template is kept"

    run(tmp_path, body)


def test_a_failed_init_or_before_snapshot_hook_fails_the_version(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        [(_, missing)] = await _built(s, config(handler="h.missing", version="1"))
        assert missing is not None
        code, reason = snapstart.failure_reason(missing)
        assert code == "FunctionError.RuntimeInitError"
        assert "Runtime.HandlerNotFound" in reason
        calls.fail_before = True
        [(_, hook)] = await _built(s, config(version="2"))
        assert hook is not None
        code, reason = snapstart.failure_reason(hook)
        assert code == "FunctionError.RuntimeInitError"
        assert "Runtime.BeforeSnapshotError" in reason and "cannot snapshot this" in reason
        assert fake.snapshots == 0
        assert s.snapshots.held("fn", "2") is None

    run(tmp_path, body)


def test_a_backend_that_cannot_snapshot_fails_the_version(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        fake.snapshot_capable = False
        [(_, failure)] = await _built(s, config())
        assert failure is not None and b"Lamina snapshots the Python bootstrap" in failure
        assert calls.before == 0

    run(tmp_path, body)


def test_templates_go_with_their_versions_and_at_close(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        await _built(s, config(version="1"))
        await _built(s, config(version="2"))
        assert s.snapshots.count == 2
        s.snapshots.retain("fn", "1", None)  # version 1 deleted
        await asyncio.sleep(0.05)
        assert fake.templates_destroyed == 1
        assert s.snapshots.held("fn", "1") is None and s.snapshots.held("fn", "2") is not None
        # A cold start of a version with no template here (a restart) makes one first.
        result = await s.invoke(config(version="3"), request())
        assert result.function_error is None
        assert (fake.snapshots, fake.restores) == (3, 1)
        s.snapshots.forget("fn")  # the function deleted
        await asyncio.sleep(0.05)
        assert fake.templates_destroyed == 3

    run(tmp_path, body)


def test_template_memory_is_charged_once(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        fake.template_mb = 40
        before = s.capacity.used_mb
        await _built(s, config())
        assert s.capacity.used_mb == before + 40
        s.snapshots.forget("fn", "1")
        await asyncio.sleep(0.05)
        assert s.capacity.used_mb == before

    run(tmp_path, body)


def test_the_version_states() -> None:
    pending = snapstart.published(replace(config(), state=FunctionState.ACTIVE))
    assert (pending.state, pending.state_reason_code) == (FunctionState.PENDING, "Creating")
    with pytest.raises(SnapStartNotReadyError) as raised:
        snapstart.require_invocable(pending)
    assert raised.value.status == 409
    active = snapstart.settled("1", "r1", None, pending)
    assert active is not None and active.state is FunctionState.ACTIVE
    snapstart.require_invocable(active)
    failed = snapstart.settled("1", "r1", ("FunctionError.InitTimeout", "timed out"), pending)
    assert failed is not None and failed.state is FunctionState.FAILED
    with pytest.raises(ResourceConflictError):
        snapstart.require_invocable(failed)
    assert snapstart.settled("1", "other-revision", None, pending) is None
    latest = replace(config(version="$LATEST"), state=FunctionState.ACTIVE)
    assert not latest.snap_start_on
    assert snapstart.published(replace(config(), snap_start="None")).state is FunctionState.ACTIVE


def test_a_slow_restore_is_snapstart_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "RESTORE_TIMEOUT_S", 0.3)

    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        cfg = config()
        await _built(s, cfg)
        slow = calls.slow_restore = threading.Event()
        with pytest.raises(SnapStartTimeoutError) as raised:
            await s.invoke(cfg, request())
        assert raised.value.status == 408
        assert raised.value.message == (
            "Lambda couldn't restore the snapshot within the timeout limit."
        )
        slow.set()

    run(tmp_path, body)


def test_snapstart_environments_say_so(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        env = s._context(config()).base_env
        assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"
        assert "AWS_LAMBDA_LOG_GROUP_NAME" not in env
        latest = s._context(config(version="$LATEST")).base_env
        assert latest["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
        assert latest["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"

    run(tmp_path, body)


@pytest.mark.parametrize("json_format", [False, True])
def test_restore_lines_come_before_the_first_start(tmp_path: Path, json_format: bool) -> None:
    store = LogStore(tmp_path / "logs.db", 1 << 30)
    group = "/aws/lambda/fn"

    async def main() -> None:
        store.open()
        try:
            writer = LogWriter(store)
            config = LoggingConfig(LogFormat.JSON if json_format else LogFormat.TEXT)
            log = writer.log(group, "s", config, function="fn")
            log.restore_start("python3.12")
            log._output(b"after restore hook ran\n")
            log.restore_report(4.5678)
            log.start("rid", "1")
            log.finish(Report("rid", 1.2, 128, 10, restore_duration_ms=4.5678))
            log.close()
            await asyncio.sleep(0.3)  # the writer hands lines over in batches
            await store.flush()
            got = [e.message for e in await store.events(group)]
        finally:
            await store.close()
        if json_format:
            kinds = [json.loads(m)["type"] if m.startswith("{") else m for m in got]
            assert kinds == [
                "platform.restoreStart",
                "after restore hook ran",
                "platform.restoreReport",
                "platform.start",
                "platform.runtimeDone",
                "platform.report",
            ]
            report = json.loads(got[-1])["record"]["metrics"]
            assert report["restoreDurationMs"] == 4.568
            assert report["billedRestoreDurationMs"] == 5
            assert "initDurationMs" not in report
        else:
            assert got[:4] == [
                "RESTORE_START Runtime Version: python:3.12",
                "after restore hook ran",
                "RESTORE_REPORT Restore Duration: 4.57 ms",
                "START RequestId: rid Version: 1",
            ]
            assert got[-1].endswith("\tRestore Duration: 4.57 ms\tBilled Restore Duration: 5 ms\t")

    asyncio.run(main())


def test_telemetry_restore_events() -> None:
    telemetry = Telemetry()
    seen: list[tuple[str, dict[str, Any]] | None] = []
    telemetry.platform = lambda t, logs_api=None: seen.append(t)  # type: ignore[method-assign]
    telemetry.restore_start("fn", "1", "env-1", 128)
    telemetry.restore_done("failure", 4.5678, "Runtime.AfterRestoreError")
    assert seen == [
        (
            "platform.restoreStart",
            {
                "functionName": "fn",
                "functionVersion": "1",
                "instanceId": "env-1",
                "instanceMaxMemory": 128,
            },
        ),
        (
            "platform.restoreRuntimeDone",
            {"status": "failure", "errorType": "Runtime.AfterRestoreError"},
        ),
        (
            "platform.restoreReport",
            {
                "status": "failure",
                "errorType": "Runtime.AfterRestoreError",
                "metrics": {"durationMs": 4.568},
            },
        ),
    ]


def test_the_scheduler_runs_a_snapstart_version_only_once_it_is_active(tmp_path: Path) -> None:
    """Callers other than Invoke (the async queue, event sources) reach the scheduler
    directly: a Pending or Failed SnapStart version starts nothing there either."""

    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        pending = snapstart.published(config())
        with pytest.raises(SnapStartNotReadyError) as raised:
            await s.invoke(pending, request())
        assert raised.value.message.startswith("Lambda is initializing your function.")
        failed = replace(config(), state=FunctionState.FAILED)
        with pytest.raises(ResourceConflictError):
            await s.invoke(failed, request())
        assert (fake.snapshots, fake.restores, s.environment_count()) == (0, 0, 0)

    run(tmp_path, body)


def test_a_build_under_way_stops_with_the_server(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        slow = calls.slow_snapshot = threading.Event()
        told: list[bytes | None] = []

        async def on_built(config: FunctionConfig, failure: bytes | None) -> None:
            told.append(failure)

        s.snapshots.on_built = on_built
        s.snapshots.build(config())
        await asyncio.sleep(0.2)
        assert calls.before == 1 and s.snapshots.count == 0
        asyncio.get_running_loop().call_later(0.2, slow.set)
        await s.snapshots.close()
        assert s.snapshots.count == 0 and told == [], "a stop settles nothing"
        await asyncio.sleep(0.3)
        assert fake.snapshots == 0, "the template sandbox was destroyed before its snapshot point"

    run(tmp_path, body)


def test_metering_bills_the_restore(tmp_path: Path) -> None:
    async def main() -> list[Usage]:
        meter = Meter(tmp_path / "usage.db")
        await meter.open()
        restored = Report("a", 9.2, 1024, 10, function_name="fn", version="1")
        meter.record(replace(restored, restore_duration_ms=40.1))  # 10 + 41 ms
        meter.record(replace(restored, request_id="b"))  # warm: 10 ms
        rows = await meter.usage()
        await meter.close()
        return rows

    assert asyncio.run(main()) == [Usage("fn", "1", utc_day(time.time()), 2, 61, 61 * 1024)]


def test_a_template_that_died_is_made_again(tmp_path: Path) -> None:
    async def body(s: Scheduler, fake: FakeBackend, calls: Calls, reports: list[Report]) -> None:
        cfg = config()
        await _built(s, cfg)
        template = s.snapshots.held("fn", "1")
        assert template is not None and template.alive and s.snapshots.count == 1
        template.kill()  # type: ignore[attr-defined]  # (the fake's: its zygote died, say)
        assert s.snapshots.count == 0
        # The next cold start does not restore from the dead one: a new template, then it.
        result = await s.invoke(cfg, request())
        assert result.function_error is None
        assert (fake.snapshots, fake.restores, calls.before) == (2, 1, 2)
        fresh = s.snapshots.held("fn", "1")
        assert fresh is not None and fresh is not template and s.snapshots.count == 1
        await asyncio.sleep(0.05)
        assert fake.templates_destroyed == 1  # the dead one released (its memory given back)

    run(tmp_path, body)
