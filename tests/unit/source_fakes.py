"""Fakes of the event-source contract (`events/sources/api.py`) for the delivery rules' and the
runner's unit tests: a queue kept in memory with leases, an invoker that answers as a test
says, a mapping control that records what the runner asks of it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from lamina.events.sources.api import Message, Outcome, SourceUnavailable
from lamina.mappings import (
    Connection,
    EventSourceMapping,
    MappingState,
    SourceKind,
)

SQS_ARN = "arn:aws:sqs:us-east-1:000000000000:q"
FN_ARN = "arn:aws:lambda:us-east-1:000000000000:function:fn"


def mapping(**changes: Any) -> EventSourceMapping:
    base = EventSourceMapping(
        uuid="u-1",
        function_arn=FN_ARN,
        function_name="fn",
        qualifier=None,
        source_arn=SQS_ARN,
        kind=SourceKind.SQS,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=0.0,
        last_result="No records processed",
        batch_size=10,
        batching_window_s=0,
    )
    return dataclasses.replace(base, **changes)


class FakeQueue:
    """A queue of messages with leases: `receive` leases, `acknowledge` deletes, `release`
    puts back at the front (as a broker's redelivery would). Records every call."""

    def __init__(self, bodies: Sequence[bytes | str] = (), *, wait_cap_s: float = 0.02) -> None:
        self.ready: list[Message] = []
        self.leased: dict[str, Message] = {}
        self.acked: list[str] = []
        self.released: list[str] = []
        self.receives: list[tuple[int, float]] = []
        self.opened = 0
        self.closed = 0
        self.fail_receive: str | None = None
        self.backlog_value: int | None = None
        self.in_receive = 0
        self.max_in_receive = 0
        self._seq = 0
        #: a receive waits at most this long (a long poll the tests do not sit through)
        self.wait_cap_s = wait_cap_s
        self._arrived = asyncio.Event()
        self.put(*bodies)

    def put(self, *bodies: bytes | str, sent_at: float | None = None) -> list[str]:
        ids = []
        for body in bodies:
            raw = body.encode() if isinstance(body, str) else body
            self._seq += 1
            mid = f"m{self._seq}"
            record = {"messageId": mid, "body": raw.decode(errors="replace"), "attributes": {}}
            self.ready.append(Message(mid, raw, record, token=mid, sent_at=sent_at))
            ids.append(mid)
        self._arrived.set()
        return ids

    async def open(self) -> None:
        self.opened += 1

    async def receive(self, max_messages: int, wait_s: float) -> list[Message]:
        self.receives.append((max_messages, wait_s))
        self.in_receive += 1
        self.max_in_receive = max(self.max_in_receive, self.in_receive)
        try:
            if self.fail_receive:
                raise SourceUnavailable(self.fail_receive)
            if not self.ready:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), min(wait_s, self.wait_cap_s))
                except TimeoutError:
                    return []
            got, self.ready = self.ready[:max_messages], self.ready[max_messages:]
            for m in got:
                self.leased[m.id] = m
            return got
        finally:
            self.in_receive -= 1

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        for m in messages:
            assert self.leased.pop(m.id, None) is m, f"{m.id} acknowledged but not leased"
            self.acked.append(m.id)

    async def release(self, messages: Sequence[Message]) -> None:
        for m in messages:
            assert self.leased.pop(m.id, None) is m, f"{m.id} released but not leased"
            self.released.append(m.id)
        self.ready[:0] = list(messages)
        self._arrived.set()

    def event(self, messages: Sequence[Message]) -> dict[str, Any]:
        return {"Records": [m.record for m in messages]}

    def failed_ids(self, response: Any, messages: Sequence[Message]) -> set[str] | None:
        ids = {m.id for m in messages}
        failed = set()
        for item in response.get("batchItemFailures") or ():
            if not isinstance(item, dict):
                return None
            value = item.get("itemIdentifier")
            if not isinstance(value, str) or value not in ids:
                return None
            failed.add(value)
        return failed

    async def backlog(self) -> int | None:
        return self.backlog_value if self.backlog_value is not None else len(self.ready)

    async def close(self) -> None:
        self.closed += 1
        # what a broker does with leases when its consumer goes: hands them back
        self.ready[:0] = list(self.leased.values())
        self.leased.clear()


Answer = Outcome | Callable[[dict[str, Any]], Outcome]


class FakeInvoker:
    """Answers each invoke with the next of `answers` (then with the last one, or "ok"),
    recording the events; `hold` makes invokes wait until it is set."""

    def __init__(self, *answers: Answer, delay_s: float = 0.0) -> None:
        self.answers = list(answers)
        self.events: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.running = 0
        self.max_running = 0
        self.hold: asyncio.Event | None = None
        self.destinations: list[tuple[str | None, dict[str, Any]]] = []
        self.times: list[float] = []

    async def invoke(self, mapping: EventSourceMapping, event: dict[str, Any]) -> Outcome:
        self.events.append(event)
        self.times.append(time.monotonic())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            answer = self.answers.pop(0) if len(self.answers) > 1 else None
            if answer is None:
                answer = self.answers[0] if self.answers else Outcome("ok", b"null")
            return answer(event) if callable(answer) else answer
        finally:
            self.running -= 1

    async def send_to_failure_destination(
        self, mapping: EventSourceMapping, record: dict[str, Any]
    ) -> None:
        self.destinations.append((mapping.on_failure, record))

    def ids(self, at: int) -> list[str]:
        return [r["messageId"] for r in self.events[at]["Records"]]


def batch_failures(*ids: str) -> Outcome:
    items = [{"itemIdentifier": i} for i in ids]
    return Outcome("ok", json.dumps({"batchItemFailures": items}).encode())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeControl:
    """A MappingControl over a dict, recording settles, removals and reports."""

    def __init__(self, *mappings: EventSourceMapping) -> None:
        self.items = {m.uuid: m for m in mappings}
        self.callbacks: list[Callable[[str], None]] = []
        self.settled: list[tuple[str, MappingState]] = []
        self.removed: list[str] = []
        self.reports: list[tuple[str, str]] = []
        self.role_problems: dict[str, str] = {}
        self.missing: dict[str, str] = {}

    def mappings(self) -> list[EventSourceMapping]:
        return list(self.items.values())

    def get(self, uuid: str) -> EventSourceMapping | None:
        return self.items.get(uuid)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)

    def change(self, uuid: str, **changes: Any) -> None:
        """What the API does: store the change, then tell the subscribers."""
        self.items[uuid] = dataclasses.replace(self.items[uuid], **changes)
        for callback in self.callbacks:
            callback(uuid)

    async def settle(self, uuid: str, state: MappingState) -> None:
        self.settled.append((uuid, state))
        current = self.items.get(uuid)
        movable = {
            MappingState.ENABLED: (
                MappingState.CREATING,
                MappingState.ENABLING,
                MappingState.UPDATING,
            ),
            MappingState.DISABLED: (MappingState.DISABLING,),
        }
        if current is not None and current.state in movable[state]:
            self.items[uuid] = dataclasses.replace(current, state=state)

    async def remove(self, uuid: str) -> None:
        self.removed.append(uuid)
        self.items.pop(uuid, None)

    def report(self, uuid: str, result: str) -> None:
        self.reports.append((uuid, result))
        if uuid in self.items:
            self.items[uuid] = dataclasses.replace(self.items[uuid], last_result=result)

    def connection(self, mapping: EventSourceMapping) -> Connection:
        if mapping.uuid in self.missing:
            raise LookupError(self.missing[mapping.uuid])
        return Connection(mapping.kind, "fake://", queue_name="q")

    def role_problem(self, mapping: EventSourceMapping) -> str | None:
        return self.role_problems.get(mapping.uuid)

    def results(self, uuid: str = "u-1") -> list[str]:
        return [r for u, r in self.reports if u == uuid]
