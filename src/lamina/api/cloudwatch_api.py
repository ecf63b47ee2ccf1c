"""The CloudWatch API (`monitoring`): the metric reads (GetMetricStatistics, GetMetricData,
ListMetrics) and metric alarms (PutMetricAlarm, DescribeAlarms, DeleteAlarms, SetAlarmState,
DescribeAlarmHistory), in each protocol botocore speaks for it (see `cloudwatch_wire`).

Handlers only translate: the rules live in `control/metric_queries.py`; reads run on a worker
thread (they query the metadata database).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.api import cloudwatch_wire as wire
from lamina.api.context import AppState, app_state
from lamina.api.errors import internal_error
from lamina.control.alarms import AlarmService
from lamina.control.metric_queries import MetricQueries
from lamina.errors import LaminaError, UserError
from lamina.observability.cw_metrics import MinuteRow

TARGET_PREFIX = wire.TARGET_PREFIX
CBOR_PATH = wire.CBOR_PATH
_DECODE_INLINE_MAX = 64 * 1024

_Read = Callable[[MetricQueries, dict[str, Any], Sequence[MinuteRow]], dict[str, Any]]
_READS: dict[str, _Read] = {
    "GetMetricStatistics": MetricQueries.get_metric_statistics,
    "GetMetricData": MetricQueries.get_metric_data,
    "ListMetrics": MetricQueries.list_metrics,
}
_ALARM_OPS: dict[str, Callable[[AlarmService, dict[str, Any]], dict[str, Any]]] = {
    "PutMetricAlarm": AlarmService.put_metric_alarm,
    "DescribeAlarms": AlarmService.describe_alarms,
    "DeleteAlarms": AlarmService.delete_alarms,
    "DescribeAlarmHistory": AlarmService.describe_alarm_history,
}


async def _answer(state: AppState, name: str, args: dict[str, Any]) -> dict[str, Any]:
    read = _READS.get(name)
    if read is not None:
        if state.metric_queries is None:
            raise _Unavailable()
        # This node's minutes not yet written, read here on the loop (their only writer).
        live = state.metrics.cloudwatch.snapshot()
        return await asyncio.to_thread(read, state.metric_queries, args, live)
    runner = state.alarms
    if runner is None:
        raise _Unavailable()
    if name == "SetAlarmState":
        change = await asyncio.to_thread(runner.service.set_alarm_state, args)
        if change is not None:
            await runner.act(change)
        return {}
    return await asyncio.to_thread(_ALARM_OPS[name], runner.service, args)


class _Unavailable(Exception):
    pass


def protocol_of(request: Request) -> str | None:
    return wire.protocol_of(
        request.method,
        request.url.path,
        {k: request.headers[k] for k in ("x-amz-target", "content-type") if k in request.headers},
    )


async def dispatch(request: Request) -> Response:
    """A CloudWatch request in any of its protocols (the caller checked `protocol_of`)."""
    protocol = protocol_of(request) or wire.JSON
    body = await request.body()
    name = "?"
    try:
        name = wire.action(protocol, request.url.path, request.headers, body)
        if not name:
            raise wire.WireError("MissingAction", "The request names no operation.")
        op = wire.operation(name)  # InvalidAction for a name the service does not have
        if name not in _READS and name not in _ALARM_OPS and name != "SetAlarmState":
            raise wire.WireError("InvalidAction", f"The operation {name} is not supported yet.")
        if len(body) > _DECODE_INLINE_MAX:  # a large one would hold the loop up
            args = await asyncio.to_thread(wire.decode, protocol, op, body)
        else:
            args = wire.decode(protocol, op, body)
        return wire.respond(protocol, op, await _answer(app_state(request), name, args))
    except _Unavailable:
        return wire.error(protocol, "ServiceUnavailable", "This server keeps no metrics.", 503)
    except wire.WireError as e:
        return wire.error(protocol, e.code, e.message, e.status)
    except LaminaError as e:
        status = 400 if isinstance(e, UserError) else 500
        return wire.error(protocol, e.error_type, e.message, status)
    except Exception as e:  # the protocol's shape even for our own failures
        return wire.error(
            protocol, "InternalServiceError", internal_error(e, f"cloudwatch {name}").message, 500
        )
