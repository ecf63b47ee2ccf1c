"""Idle environments charged what they really hold against the memory capacity (the fake
sandbox says how much): more of them stay warm than their MemorySize adds up to, one about to
run takes its MemorySize back first, and when memory is short they still go LRU-first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_scheduler import HANDLERS, config, payload, request

from lamina.errors import TooManyRequestsError
from lamina.observability import Metrics
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo
from lamina.sandbox.fake import FakeBackend
from lamina.scheduler import Scheduler
from lamina.settings import Settings


def fn(name: str, handler: str = "h.ok") -> Any:
    return replace(config(handler), name=name)


def run(
    tmp_path: Path, body: Callable[[Scheduler, FakeBackend], Awaitable[None]], **settings: Any
) -> None:
    async def main() -> None:
        backend = FakeBackend(HANDLERS)
        catalog = RuntimeCatalog(
            [RuntimeInfo("python3.11", "/nonexistent/python3.11", tmp_path / "runtime")]
        )
        sched = Scheduler(
            Settings(data_dir=tmp_path, **settings),
            backend,
            catalog,
            Metrics(),
            task_root=lambda sha: tmp_path / "task",
        )
        sched.start()
        try:
            await body(sched, backend)
        finally:
            await sched.close()
            await backend.close()
        assert sched.environment_count() == 0
        assert sched.capacity.used_mb == 0, "every MB taken was given back"

    asyncio.run(main())


def live(s: Scheduler) -> list[str]:
    return sorted(e.ctx.config.name for e in s.environments())


def test_idle_environments_holding_little_all_stay_warm(tmp_path: Path) -> None:
    """Room for two 128 MB environments by MemorySize; idle ones holding 10 MB each: eight
    stay warm, and each of them runs again without a cold start."""

    async def body(s: Scheduler, backend: FakeBackend) -> None:
        backend.usage_mb = 10
        names = [f"f{i}" for i in range(8)]
        for name in names:
            assert (await s.invoke(fn(name), request())).init_duration_ms is not None
        assert live(s) == names
        for name in names:
            result = await s.invoke(fn(name), request())
            assert result.init_duration_ms is None, f"{name} was started again"
        assert s.capacity.used_mb <= 256

    run(tmp_path, body, memory_capacity_mb=256)


def test_without_a_usage_idle_environments_hold_their_memory_size(tmp_path: Path) -> None:
    """A sandbox that cannot tell its usage is charged its MemorySize: two fit, the third
    cold start stops the least recently used."""

    async def body(s: Scheduler, backend: FakeBackend) -> None:
        backend.usage_mb = None
        for name in ("a", "b"):
            await s.invoke(fn(name), request())
        await s.invoke(fn("a"), request())  # b is the least recently used now
        await s.invoke(fn("c"), request())
        await asyncio.sleep(0.05)
        assert live(s) == ["a", "c"]

    run(tmp_path, body, memory_capacity_mb=256)


def test_when_usage_is_not_enough_idle_environments_go_lru_first(tmp_path: Path) -> None:
    """Idle environments that really hold 100 MB: shrinking frees too little, so the least
    recently used is stopped, as before."""

    async def body(s: Scheduler, backend: FakeBackend) -> None:
        backend.usage_mb = 100
        for name in ("a", "b"):
            await s.invoke(fn(name), request())
        await s.invoke(fn("a"), request())
        await s.invoke(fn("c"), request())
        await asyncio.sleep(0.05)
        assert live(s) == ["a", "c"]
        await s.invoke(fn("d"), request())
        await asyncio.sleep(0.05)
        assert live(s) == ["c", "d"]

    run(tmp_path, body, memory_capacity_mb=256)


def test_an_idle_environment_takes_its_memory_size_back_before_it_runs(tmp_path: Path) -> None:
    """Two functions busy at 128 MB each fill the node; a third, idle and charged 10 MB,
    cannot grow back to 128 MB: its invoke waits its turn, and is throttled after the queue
    timeout rather than running beyond the capacity. Once room comes back it runs warm."""

    async def body(s: Scheduler, backend: FakeBackend) -> None:
        backend.usage_mb = 10
        await s.invoke(fn("idle"), request())
        held = [
            asyncio.ensure_future(s.invoke(fn(name, "h.slow"), request({"sleep": 0.6})))
            for name in ("x", "y")
        ]
        await asyncio.sleep(0.2)
        assert s.capacity.used_mb == 128 + 128 + 10
        with pytest.raises(TooManyRequestsError):
            await s.invoke(fn("idle"), request())
        assert "idle" in live(s), "refused, it stays warm"
        await asyncio.gather(*held)
        result = await s.invoke(fn("idle"), request())
        assert result.init_duration_ms is None and payload(result)["event"] == {}

    run(tmp_path, body, memory_capacity_mb=276, queue_timeout_s=0.2)
