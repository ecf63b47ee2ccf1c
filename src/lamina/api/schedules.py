"""`GET /lamina/schedules`: every rule with a ScheduleExpression, its state, targets, next fire
time and last fired tick, in UTC (Lamina's own endpoint, read by `lamina schedules`)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.errors import ServiceError


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def schedules(request: Request) -> Response:
    state = app_state(request)
    if state.schedules is None or state.rules is None:
        raise ServiceError("This server runs no schedules.")
    rules = state.rules
    return json_response(
        {
            "Schedules": [
                {
                    "Name": p.rule.name,
                    "Arn": rules.arn(p.rule.name),
                    "ScheduleExpression": p.rule.schedule_expression,
                    "State": p.rule.state.value,
                    "Targets": [t.arn for t in p.rule.targets],
                    "NextFire": _iso(p.next_fire),
                    "LastFired": _iso(p.rule.last_tick),
                }
                for p in state.schedules.plan()
            ],
            "ClockRate": state.settings.test_clock_rate,
            "Fired": state.schedules.fired,
        }
    )
