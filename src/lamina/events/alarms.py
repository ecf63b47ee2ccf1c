"""The alarm evaluator: every minute, each alarm's state is judged from its metric, and a
change sets off the alarm's Lambda actions (CloudWatch's alarm action event, invoked
asynchronously through the queue, as CloudWatch invokes them).

In a cluster every node runs the loop and each alarm is evaluated by the node that claims it
first in that round (`AlarmStore.claim`: a conditional UPDATE in the shared database).
An action runs only if the function's resource policy lets
`lambda.alarms.cloudwatch.amazonaws.com` invoke it for the alarm (as on AWS); what happened
is written to the alarm's history as an `Action` item.

`LAMINA_TEST_ALARM_INTERVAL_S` (test-only) shortens the round from 60 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable

from lamina import ids
from lamina.arns import function_arn
from lamina.auth.triggers import alarms_may_invoke
from lamina.control.alarms import AlarmService, Transition, actions_for
from lamina.control.function_policies import FunctionPolicies
from lamina.errors import LaminaError
from lamina.events.async_queue import AsyncQueue
from lamina.observability.cw_metrics import MetricRecorder

log = logging.getLogger(__name__)

INTERVAL_S = 60.0
LAG_S = 10.0


def interval() -> float:
    raw = os.environ.get("LAMINA_TEST_ALARM_INTERVAL_S")
    try:
        return max(float(raw), 0.2) if raw else INTERVAL_S
    except ValueError:
        return INTERVAL_S


class AlarmRunner:
    def __init__(
        self,
        service: AlarmService,
        recorder: MetricRecorder,
        queue: AsyncQueue,
        policies: FunctionPolicies,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self._recorder = recorder
        self._queue = queue
        self._policies = policies
        self._clock = clock
        self._interval = interval()
        #: rounds run this far into each interval, and judge the period holding that much
        #: ago (writers flush every 5 s: by 10 s into a minute the last one is complete)
        self._lag = min(LAG_S, self._interval / 6)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            now = self._clock()
            wait = (self._lag - now % self._interval) % self._interval
            await asyncio.sleep(wait or self._interval)
            try:
                await self.evaluate_all()
            except Exception:
                log.exception("alarms: an evaluation round failed")

    async def evaluate_all(self) -> None:
        round_at = int((self._clock() - self._lag) // self._interval * self._interval)
        due = await asyncio.to_thread(self.service.due, round_at)
        for alarm in due:
            live = self._recorder.snapshot()  # on the loop: the recorder's only thread
            try:
                change = await asyncio.to_thread(self.service.evaluate, alarm, live, self._lag)
            except LaminaError as e:
                log.warning("alarms: %s could not be evaluated: %s", alarm.name, e)
                continue
            if change is not None:
                await self.act(change)

    async def act(self, change: Transition) -> None:
        """Invoke the actions of the state `change` moved to."""
        actions = actions_for(change)
        if not actions:
            return
        event = json.dumps(self.service.action_event(change)).encode()
        alarm_arn = self.service.arn(change.alarm.name)
        for arn in actions:
            parts = arn.split(":")
            name = parts[6]
            qualifier = parts[7] if len(parts) > 7 else None
            target = function_arn(self.service.region, self.service.account, name, qualifier)
            policy = self._policies.policy_for(name, qualifier)
            if not alarms_may_invoke(target, alarm_arn, self.service.account, policy):
                summary = f"Failed to execute action {arn}. Received error: 'not authorized'"
                log.warning(
                    "alarms: %s may not invoke %s: its resource policy does not allow "
                    "lambda:InvokeFunction to lambda.alarms.cloudwatch.amazonaws.com "
                    "(aws lambda add-permission --principal "
                    "lambda.alarms.cloudwatch.amazonaws.com --source-arn %s)",
                    change.alarm.name,
                    arn,
                    alarm_arn,
                )
            else:
                try:
                    await self._queue.accept(name, qualifier, event, ids.request_id())
                    summary = f"Successfully executed action {arn}"
                except (LaminaError, OSError) as e:
                    summary = f"Failed to execute action {arn}. Received error: '{e}'"
                    log.warning("alarms: %s could not invoke %s: %s", change.alarm.name, arn, e)
            data = {"actionState": "Succeeded" if summary.startswith("Succ") else "Failed"}
            await asyncio.to_thread(self.service.record_action, change.alarm.name, summary, data)
