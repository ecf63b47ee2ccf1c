"""The scheduler with the fake sandbox: pools, reuse, scaling, failures, retirement."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.observability import Metrics
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.scheduler import Scheduler
from lamina.scheduler.environment import Environment
from lamina.settings import Settings


def config(handler: str = "h.ok", *, timeout: int = 3, revision: str = "r1") -> FunctionConfig:
    return FunctionConfig(
        name="fn",
        version="$LATEST",
        runtime="python3.11",
        handler=handler,
        role="arn:aws:iam::000000000000:role/x",
        code_sha256="ab" * 32,
        code_size=1,
        revision_id=revision,
        last_modified=datetime.now(UTC),
        timeout=timeout,
    )


def request(payload: Any = None) -> InvokeRequest:
    return InvokeRequest(
        request_id=str(uuid.uuid4()),
        payload=json.dumps(payload if payload is not None else {}).encode(),
        invoked_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
    )


def ident(event: Any, context: Any) -> Any:
    return {"event": event, "env": context.log_stream_name, "rid": context.aws_request_id}


def fail(event: Any, context: Any) -> Any:
    raise ValueError("nope")


def slow(event: Any, context: Any) -> Any:
    time.sleep(event.get("sleep", 0.2))
    return context.log_stream_name


HANDLERS = {"h.ok": ident, "h.fail": fail, "h.slow": slow}


def run(
    tmp_path: Path,
    body: Callable[[Scheduler], Awaitable[None]],
    runtime: RuntimeInfo | None = None,
    **settings: Any,
) -> None:
    async def main() -> None:
        backend = FakeBackend(HANDLERS)
        catalog = RuntimeCatalog(
            [runtime or RuntimeInfo("python3.11", "/nonexistent/python3.11", tmp_path / "runtime")]
        )
        released: list[str] = []

        async def on_released(sha: str) -> None:
            released.append(sha)

        sched = Scheduler(
            Settings(data_dir=tmp_path, **settings),
            backend,
            catalog,
            Metrics(),
            task_root=lambda sha: tmp_path / "task",
            on_code_released=on_released,
        )
        sched.start()
        try:
            await body(sched)
        finally:
            await sched.close()
            await backend.close()
        assert sched.environment_count() == 0

    asyncio.run(main())


def payload(result: InvokeResult) -> Any:
    return json.loads(result.payload)


def test_warm_reuse(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        first = await s.invoke(config(), request({"n": 1}))
        second = await s.invoke(config(), request({"n": 2}))
        assert first.function_error is None
        assert payload(first)["event"] == {"n": 1}
        assert first.init_duration_ms is not None, "the first invoke is a cold start"
        assert second.init_duration_ms is None, "the second reuses the environment"
        assert payload(first)["env"] == payload(second)["env"]
        assert s.environment_count() == 1

    run(tmp_path, body)


def test_a_runtime_is_prepared_before_its_first_start(tmp_path: Path) -> None:
    """A runtime with something to build (Java's client) has it built before an environment
    starts, off the event loop, and outside the Init Duration; a failure to build is the
    invocation's error, not the server's."""
    built: list[str] = []
    broken = False

    def prepare() -> None:
        if broken:
            raise OSError("javac failed: no space left")
        time.sleep(0.6)  # not counted as init
        built.append("yes")

    runtime = RuntimeInfo(
        "python3.11", "/nonexistent/python3.11", tmp_path / "runtime", prepare=prepare
    )

    async def body(s: Scheduler) -> None:
        nonlocal broken
        result = await s.invoke(config(), request({"n": 1}))
        assert result.function_error is None
        assert built
        assert result.init_duration_ms is not None and result.init_duration_ms < 600
        broken = True
        result = await s.invoke(config(revision="r2"), request({"n": 2}))
        assert result.function_error == "Unhandled"
        error = payload(result)
        assert error["errorType"] == "Runtime.Unknown"
        assert "could not prepare the python3.11 runtime: javac failed" in error["errorMessage"]

    run(tmp_path, body, runtime)


def test_scales_out_one_invocation_per_environment(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        results = await asyncio.gather(
            *(s.invoke(config("h.slow"), request({"sleep": 0.3})) for _ in range(4))
        )
        assert len({payload(r) for r in results}) == 4
        assert s.environment_count() == 4
        # Sequential calls afterwards reuse those four rather than starting more.
        for _ in range(3):
            await s.invoke(config("h.slow"), request({"sleep": 0}))
        assert s.environment_count() == 4

    run(tmp_path, body)


def test_function_error_is_a_result(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        result = await s.invoke(config("h.fail"), request())
        assert result.function_error == "Unhandled"
        assert payload(result)["errorType"] == "ValueError"
        assert s.environment_count() == 1  # the environment survives

    run(tmp_path, body)


def test_init_error_is_a_result(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        result = await s.invoke(config("h.missing"), request())
        assert result.function_error == "Unhandled"
        assert payload(result)["errorType"] == "Runtime.HandlerNotFound"
        await asyncio.sleep(0.05)
        assert s.environment_count() == 0

    run(tmp_path, body)


def test_timeout_kills_the_environment(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        result = await s.invoke(config("h.slow", timeout=1), request({"sleep": 1.5}))
        assert result.function_error == "Unhandled"
        assert payload(result)["errorType"] == "Sandbox.Timedout"
        ok = await s.invoke(config("h.slow", timeout=1), request({"sleep": 0}))
        assert ok.function_error is None
        assert ok.init_duration_ms is not None, "a timed-out environment is not reused"

    run(tmp_path, body)


def test_new_revision_retires_old_environments(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        old = await s.invoke(config(revision="r1"), request())
        new = await s.invoke(config(revision="r2"), request())
        assert new.init_duration_ms is not None
        assert payload(old)["env"] != payload(new)["env"]
        await asyncio.sleep(0.1)
        assert s.environment_count() == 1

    run(tmp_path, body)


def test_retire_stops_idle_environments(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        await s.invoke(config(), request())
        s.retire("fn")
        for _ in range(100):
            if s.environment_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert s.environment_count() == 0
        assert not s.code_in_use("ab" * 32)

    run(tmp_path, body)


def test_idle_environments_scale_to_zero(tmp_path: Path) -> None:
    async def body(s: Scheduler) -> None:
        await s.invoke(config(), request())
        assert s.environment_count() == 1
        for _ in range(200):
            if s.environment_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert s.environment_count() == 0

    run(tmp_path, body, idle_timeout_s=0.2)


@pytest.mark.parametrize("n", [1, 8])
def test_close_stops_busy_environments(tmp_path: Path, n: int) -> None:
    async def body(s: Scheduler) -> None:
        tasks = [
            asyncio.ensure_future(s.invoke(config("h.slow"), request({"sleep": 0.2})))
            for _ in range(n)
        ]
        await asyncio.sleep(0.05)
        assert s.environment_count() == n
        await asyncio.gather(*tasks)

    run(tmp_path, body)


def test_request_ids_are_version_4_uuids() -> None:
    from lamina.ids import request_id

    ids = {request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == rid


def test_a_runtime_that_exits_right_after_its_init_fails_the_invocation_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's exit can be seen before the cold start's task wakes from the init wait
    (a first handler that ends the process, on a busy loop): that invocation fails as an exit,
    never as an illegal state change of the environment."""
    original = Environment._on_ready

    def ready_then_exit(self: Environment) -> None:
        original(self)
        self._on_exit(1)

    monkeypatch.setattr(Environment, "_on_ready", ready_then_exit)

    async def body(s: Scheduler) -> None:
        result = await s.invoke(config(), request())
        assert result.function_error == "Unhandled"
        assert payload(result)["errorType"] == "Runtime.ExitError"

    run(tmp_path, body)
