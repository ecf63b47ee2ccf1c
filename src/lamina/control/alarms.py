"""CloudWatch metric alarms: their configuration's rules, their states, and how one is
evaluated (CloudWatch's "Evaluating an alarm").

An alarm watches one metric's statistic over `Period`-second periods. Each evaluation looks
at the last `EvaluationPeriods` (N) periods, the newest being the one under way, and goes to
ALARM when at least `DatapointsToAlarm` (M) of them breach the threshold, to OK when fewer
do, and to INSUFFICIENT_DATA when there is nothing to judge. Missing periods count as
`TreatMissingData` says: `missing` (the default: not counted; none present at all is
INSUFFICIENT_DATA), `ignore` (not counted; none present keeps the state), `breaching`,
`notBreaching`. Actions are Lambda functions only (ARNs: a function, an alias, a version).

Blocking (the store): the API module and the evaluator call these on a worker thread.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lamina.control.metric_queries import (
    PERCENTILE,
    STATISTICS,
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MetricQueries,
    MissingParameter,
)
from lamina.errors import UserError
from lamina.observability.cw_metrics import MinuteRow
from lamina.store.alarms import AlarmRow, AlarmStore, HistoryRow, dumps


class ResourceNotFound(UserError):
    error_type = "ResourceNotFound"


class InvalidFormat(UserError):
    error_type = "InvalidFormat"


class LimitExceeded(UserError):
    error_type = "LimitExceeded"


OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"
STATES = (OK, ALARM, INSUFFICIENT)
COMPARISONS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", lambda v, t: v >= t),
    "GreaterThanThreshold": ("greater than", lambda v, t: v > t),
    "LessThanThreshold": ("less than", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("less than or equal to", lambda v, t: v <= t),
}
MISSING = ("missing", "ignore", "breaching", "notBreaching")
_FUNCTION_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([a-zA-Z0-9-_]{1,64})"
    r"(?::(\$LATEST|[a-zA-Z0-9-_]{1,128}))?"
)
MAX_ACTIONS = 5
#: CloudWatch's limit on alarms per region (a soft quota there)
MAX_ALARMS = 10_000
#: an alarm's evaluation range: Period x EvaluationPeriods at most one day
MAX_RANGE_S = 86_400
_HISTORY_PAGE = 100


def _iso(t: float) -> str:
    """CloudWatch's timestamp in events and reason data: 2023-08-04T12:36:15.490+0000."""
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


@dataclass(frozen=True)
class Transition:
    """A state change, for the actions it sets off."""

    alarm: AlarmRow  # after the change
    previous_value: str
    previous_reason: str
    previous_reason_data: str | None
    previous_updated: float


class AlarmService:
    def __init__(
        self,
        store: AlarmStore,
        queries: MetricQueries,
        region: str,
        account: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._queries = queries
        self.region = region
        self.account = account
        self._clock = clock

    def arn(self, name: str) -> str:
        return f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{name}"

    # -- PutMetricAlarm ---------------------------------------------------------------------

    def put_metric_alarm(self, body: dict[str, Any]) -> dict[str, Any]:
        config = self._check(body)
        name = config["AlarmName"]
        now = self._clock()
        if self._store.get(name) is None and len(self._store.all()) >= MAX_ALARMS:
            raise LimitExceeded(f"The maximum of {MAX_ALARMS} alarms has been reached.")
        row = AlarmRow(
            name,
            config,
            INSUFFICIENT,
            "Unchecked: Initial alarm creation",
            None,
            now,
            now,
        )
        existing = self._store.get(name)
        summary = f'Alarm "{name}" {"updated" if existing else "created"}'
        data = {"version": "1.0", "type": "Update" if existing else "Create"}
        self._store.put(row, HistoryRow(name, now, "ConfigurationUpdate", summary, dumps(data)))
        return {}

    def _check(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("AlarmName")
        if not isinstance(name, str) or not name:
            raise MissingParameter("The parameter AlarmName is required.")
        if len(name) > 255:
            raise InvalidParameterValue("The parameter AlarmName must be at most 255 long.")
        if body.get("Metrics") is not None:
            raise InvalidParameterValue(
                "Alarms on metric math (Metrics) are not supported by Lamina: use MetricName "
                "and Namespace."
            )
        if body.get("ThresholdMetricId") is not None:
            raise InvalidParameterValue("Anomaly detection alarms are not supported by Lamina.")
        for member in ("MetricName", "Namespace", "Period", "EvaluationPeriods"):
            if body.get(member) in (None, ""):
                raise MissingParameter(f"The parameter {member} is required.")
        if body.get("ComparisonOperator") in (None, ""):
            raise MissingParameter("The parameter ComparisonOperator is required.")
        if body.get("Threshold") is None:
            raise MissingParameter("The parameter Threshold is required.")
        stat, extended = body.get("Statistic"), body.get("ExtendedStatistic")
        if (stat is None) == (extended is None):
            raise InvalidParameterCombination(
                "Exactly one of Statistic and ExtendedStatistic must be specified."
            )
        if stat is not None and stat not in STATISTICS:
            raise InvalidParameterValue(
                f"The parameter Statistic must be one of {', '.join(STATISTICS)}."
            )
        if extended is not None and (
            not isinstance(extended, str) or not PERCENTILE.fullmatch(extended)
        ):
            raise InvalidParameterValue(
                "The parameter ExtendedStatistic must be a percentile pNN.NN (other extended "
                "statistics are not supported)."
            )
        period = body["Period"]
        if not isinstance(period, int) or isinstance(period, bool) or period < 60 or period % 60:
            raise InvalidParameterValue(
                "The parameter Period must be a multiple of 60 (Lamina keeps 1-minute data)."
            )
        periods = body["EvaluationPeriods"]
        if not isinstance(periods, int) or isinstance(periods, bool) or periods < 1:
            raise InvalidParameterValue("The parameter EvaluationPeriods must be at least 1.")
        if period * periods > MAX_RANGE_S:
            raise InvalidParameterValue(
                "The evaluation range (Period x EvaluationPeriods) must be at most one day."
            )
        to_alarm = body.get("DatapointsToAlarm", periods)
        if not isinstance(to_alarm, int) or isinstance(to_alarm, bool) or to_alarm < 1:
            raise InvalidParameterValue("The parameter DatapointsToAlarm must be at least 1.")
        if to_alarm > periods:
            raise InvalidParameterCombination(
                "DatapointsToAlarm must be less than or equal to EvaluationPeriods."
            )
        if body["ComparisonOperator"] not in COMPARISONS:
            raise InvalidParameterValue(
                "The parameter ComparisonOperator must be one of "
                f"{', '.join(COMPARISONS)} (anomaly detection bands are not supported)."
            )
        threshold = body["Threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise InvalidParameterValue("The parameter Threshold must be a number.")
        if not math.isfinite(threshold):
            raise InvalidParameterValue("The parameter Threshold must be finite.")
        missing = body.get("TreatMissingData", "missing")
        if missing not in MISSING:
            raise InvalidParameterValue(
                f"The parameter TreatMissingData must be one of {', '.join(MISSING)}."
            )
        # the metric part is checked as GetMetricStatistics checks it
        dims = body.get("Dimensions") or []
        probe = {
            "Namespace": body["Namespace"],
            "MetricName": body["MetricName"],
            "Dimensions": dims,
        }
        self._queries.check_metric(probe)
        for member in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            actions = body.get(member) or []
            if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
                raise InvalidParameterValue(
                    f"The parameter {member} must hold at most {MAX_ACTIONS} actions."
                )
            for arn in actions:
                m = _FUNCTION_ARN.fullmatch(arn) if isinstance(arn, str) else None
                if m is None:
                    raise InvalidParameterValue(
                        f"Invalid arn syntax: {arn}. Lamina's alarm actions are Lambda "
                        "functions (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])."
                    )
                if m[1] != self.region or m[2] != self.account:
                    raise InvalidParameterValue(
                        f"The action {arn} is not a function of this region and account."
                    )
        description = body.get("AlarmDescription")
        if description is not None and (
            not isinstance(description, str) or len(description) > 1024
        ):
            raise InvalidParameterValue("The parameter AlarmDescription must be at most 1024.")
        keep = (
            "AlarmName",
            "AlarmDescription",
            "ActionsEnabled",
            "OKActions",
            "AlarmActions",
            "InsufficientDataActions",
            "MetricName",
            "Namespace",
            "Statistic",
            "ExtendedStatistic",
            "Dimensions",
            "Period",
            "Unit",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "Threshold",
            "ComparisonOperator",
            "TreatMissingData",
        )
        config = {k: body[k] for k in keep if body.get(k) is not None}
        config.setdefault("ActionsEnabled", True)
        config["DatapointsToAlarm"] = to_alarm
        config["TreatMissingData"] = missing
        config["Threshold"] = float(threshold)
        for member in ("OKActions", "AlarmActions", "InsufficientDataActions", "Dimensions"):
            config.setdefault(member, [])
        return config

    # -- reads ------------------------------------------------------------------------------

    def wire(self, row: AlarmRow) -> dict[str, Any]:
        c = row.config
        out: dict[str, Any] = {
            "AlarmName": row.name,
            "AlarmArn": self.arn(row.name),
            "AlarmConfigurationUpdatedTimestamp": datetime.fromtimestamp(row.config_updated, UTC),
            "StateValue": row.state_value,
            "StateReason": row.state_reason,
            "StateUpdatedTimestamp": datetime.fromtimestamp(row.state_updated, UTC),
            "StateTransitionedTimestamp": datetime.fromtimestamp(row.state_updated, UTC),
        }
        if row.state_reason_data is not None:
            out["StateReasonData"] = row.state_reason_data
        out.update(c)
        return out

    def describe_alarms(self, body: dict[str, Any]) -> dict[str, Any]:
        names, prefix = body.get("AlarmNames"), body.get("AlarmNamePrefix")
        if names and prefix:
            raise InvalidParameterCombination(
                "AlarmNames and AlarmNamePrefix may not be specified together."
            )
        if names is not None and (not isinstance(names, list) or len(names) > 100):
            raise InvalidParameterValue("The parameter AlarmNames must hold up to 100 names.")
        state = body.get("StateValue")
        if state is not None and state not in STATES:
            raise InvalidParameterValue(f"The parameter StateValue must be one of {STATES}.")
        limit = body.get("MaxRecords", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise InvalidParameterValue("The parameter MaxRecords must be between 1 and 100.")
        action_prefix = body.get("ActionPrefix")
        types = body.get("AlarmTypes")
        rows = self._store.all()
        if names:
            rows = [r for r in rows if r.name in names]
        if prefix:
            rows = [r for r in rows if r.name.startswith(prefix)]
        if state is not None:
            rows = [r for r in rows if r.state_value == state]
        if action_prefix:
            rows = [
                r
                for r in rows
                if any(
                    a.startswith(action_prefix)
                    for m in ("OKActions", "AlarmActions", "InsufficientDataActions")
                    for a in r.config.get(m, [])
                )
            ]
        if types is not None and "MetricAlarm" not in types:
            rows = []
        offset = _offset(body.get("NextToken"))
        page = rows[offset : offset + limit]
        out: dict[str, Any] = {"MetricAlarms": [self.wire(r) for r in page], "CompositeAlarms": []}
        if offset + limit < len(rows):
            out["NextToken"] = _token(offset + limit)
        return out

    def delete_alarms(self, body: dict[str, Any]) -> dict[str, Any]:
        names = body.get("AlarmNames")
        if not names:
            raise MissingParameter("The parameter AlarmNames is required.")
        if not isinstance(names, list) or len(names) > 100:
            raise InvalidParameterValue("The parameter AlarmNames must hold up to 100 names.")
        known = {r.name for r in self._store.all()}
        missing = [n for n in names if n not in known]
        if missing:
            raise ResourceNotFound(f"Alarm(s) not found: {', '.join(map(str, missing))}")
        self._store.delete(list(names))
        return {}

    def describe_alarm_history(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("AlarmName")
        kind = body.get("HistoryItemType")
        if kind is not None and kind not in ("ConfigurationUpdate", "StateUpdate", "Action"):
            raise InvalidParameterValue(
                "The parameter HistoryItemType must be ConfigurationUpdate, StateUpdate or Action."
            )
        start = body.get("StartDate")
        end = body.get("EndDate")
        for member, value in (("StartDate", start), ("EndDate", end)):
            if value is not None and not isinstance(value, datetime):
                raise InvalidParameterValue(f"The parameter {member} must be a timestamp.")
        limit = body.get("MaxRecords", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise InvalidParameterValue("The parameter MaxRecords must be between 1 and 100.")
        scan = body.get("ScanBy", "TimestampDescending")
        if scan not in ("TimestampDescending", "TimestampAscending"):
            raise InvalidParameterValue(
                "The parameter ScanBy must be TimestampDescending or TimestampAscending."
            )
        items = self._store.history(
            name if isinstance(name, str) else None,
            start.timestamp() if start else 0.0,
            end.timestamp() if end else math.inf,
        )
        if kind is not None:
            items = [i for i in items if i.item_type == kind]
        if scan == "TimestampAscending":
            items.reverse()
        offset = _offset(body.get("NextToken"))
        page = items[offset : offset + limit]
        out: dict[str, Any] = {
            "AlarmHistoryItems": [
                {
                    "AlarmName": i.alarm_name,
                    "AlarmType": "MetricAlarm",
                    "Timestamp": datetime.fromtimestamp(i.timestamp, UTC),
                    "HistoryItemType": i.item_type,
                    "HistorySummary": i.summary,
                    "HistoryData": i.data,
                }
                for i in page
            ]
        }
        if offset + limit < len(items):
            out["NextToken"] = _token(offset + limit)
        return out

    # -- state changes ----------------------------------------------------------------------

    def set_alarm_state(self, body: dict[str, Any]) -> Transition | None:
        """SetAlarmState: the change, for its actions (None: the state was already that)."""
        name = body.get("AlarmName")
        value = body.get("StateValue")
        reason = body.get("StateReason")
        for member, v in (("AlarmName", name), ("StateValue", value), ("StateReason", reason)):
            if v in (None, ""):
                raise MissingParameter(f"The parameter {member} is required.")
        if value not in STATES:
            raise InvalidParameterValue(f"The parameter StateValue must be one of {STATES}.")
        assert isinstance(name, str) and isinstance(reason, str)
        data = body.get("StateReasonData")
        if data is not None:
            try:
                json.loads(data)
            except (TypeError, ValueError) as e:
                raise InvalidFormat("The parameter StateReasonData is not valid JSON.") from e
        row = self._store.get(name)
        if row is None:
            raise ResourceNotFound(f"Alarm {name} not found")
        return self._move(row, str(value), reason, data)

    def _move(self, row: AlarmRow, value: str, reason: str, data: str | None) -> Transition | None:
        if value == row.state_value:
            return None
        now = self._clock()
        history = {
            "version": "1.0",
            "oldState": {"stateValue": row.state_value, "stateReason": row.state_reason},
            "newState": {"stateValue": value, "stateReason": reason},
        }
        summary = f"Alarm updated from {row.state_value} to {value}"
        if not self._store.set_state(
            row.name,
            value,
            reason,
            data,
            now,
            HistoryRow(row.name, now, "StateUpdate", summary, dumps(history)),
        ):
            return None
        after = AlarmRow(row.name, row.config, value, reason, data, now, row.config_updated)
        return Transition(
            after, row.state_value, row.state_reason, row.state_reason_data, row.state_updated
        )

    def record_action(self, name: str, summary: str, data: dict[str, Any]) -> None:
        self._store.add_history(HistoryRow(name, self._clock(), "Action", summary, dumps(data)))

    # -- evaluation -------------------------------------------------------------------------

    def due(self, round_at: int) -> list[AlarmRow]:
        """The alarms this node evaluates in the round at `round_at` (claimed)."""
        return [r for r in self._store.all() if self._store.claim(r.name, round_at)]

    def evaluate(
        self, row: AlarmRow, live: Sequence[MinuteRow], lag: float = 0.0
    ) -> Transition | None:
        """Judge the alarm now. The newest period evaluated is the one holding `lag`
        seconds ago: the evaluator's rounds run `lag` seconds into each minute, so that for
        1-minute periods it is the minute just ended, which every node has written by then;
        a longer period is judged while under way, as its data arrives."""
        c = row.config
        period = int(c["Period"])
        n = int(c["EvaluationPeriods"])
        m = int(c["DatapointsToAlarm"])
        now = self._clock()
        newest = int(now - lag) // period * period
        start = newest - (n - 1) * period
        stat = c.get("Statistic") or c["ExtendedStatistic"]
        request: dict[str, Any] = {
            "Namespace": c["Namespace"],
            "MetricName": c["MetricName"],
            "Dimensions": c.get("Dimensions") or [],
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(newest + period, UTC),
            "Period": period,
        }
        if c.get("Unit"):
            request["Unit"] = c["Unit"]
        if c.get("Statistic"):
            request["Statistics"] = [stat]
        else:
            request["ExtendedStatistics"] = [stat]
        points = self._queries.get_metric_statistics(request, live)["Datapoints"]
        values: dict[int, float] = {}
        for p in points:
            at = int(p["Timestamp"].timestamp())
            v = p[stat] if stat in p else p.get("ExtendedStatistics", {}).get(stat)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                values[at] = float(v)
        word, compare = COMPARISONS[c["ComparisonOperator"]]
        threshold = float(c["Threshold"])
        missing = c.get("TreatMissingData", "missing")
        slots = [newest - k * period for k in range(n)]  # newest first
        breaching = 0
        present = 0
        for at in slots:
            if at in values:
                present += 1
                breaching += compare(values[at], threshold)
            elif missing == "breaching":
                breaching += 1
        evaluated = [
            {"timestamp": _iso(at), **({"value": values[at]} if at in values else {})}
            for at in slots
        ]
        recent = [values[at] for at in slots if at in values]
        reason_data = dumps(
            {
                "version": "1.0",
                "queryDate": _iso(now),
                "startDate": _iso(start),
                "statistic": stat,
                "period": period,
                "recentDatapoints": recent,
                "threshold": threshold,
                "evaluatedDatapoints": evaluated,
            }
        )
        if breaching >= m:
            state = ALARM
        elif present == 0 and missing == "missing":
            state = INSUFFICIENT
        elif present == 0 and missing == "ignore":
            return None  # nothing to judge: the state stays
        else:
            state = OK
        if state == INSUFFICIENT:
            reason = f"Insufficient Data: {n} datapoint{'s' if n > 1 else ''} were unknown."
        else:
            shown = ", ".join(
                f"{v} ({_short(at)})" for at, v in sorted(values.items(), reverse=True)
            )
            verb = "was" if breaching == 1 else "were"
            reason = (
                f"Threshold Crossed: {breaching} out of the last {n} datapoints [{shown}] {verb} "
                f"{'' if state == ALARM else 'not '}{word} the threshold ({threshold}) "
                f"(minimum {m} datapoint{'s' if m > 1 else ''} for "
                f"{row.state_value} -> {state} transition)."
            )
        return self._move(row, state, reason, reason_data)

    # -- the Lambda alarm action's event --------------------------------------------------

    def action_event(self, t: Transition) -> dict[str, Any]:
        c = t.alarm.config
        stat = c.get("Statistic") or c.get("ExtendedStatistic")
        metric_stat: dict[str, Any] = {
            "metric": {
                "namespace": c["Namespace"],
                "name": c["MetricName"],
                "dimensions": {d["Name"]: d["Value"] for d in c.get("Dimensions") or []},
            },
            "period": c["Period"],
            "stat": stat,
        }
        if c.get("Unit"):
            metric_stat["unit"] = c["Unit"]
        configuration: dict[str, Any] = {
            "metrics": [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.arn(t.alarm.name))),
                    "metricStat": metric_stat,
                    "returnData": True,
                }
            ]
        }
        if c.get("AlarmDescription"):
            configuration = {"description": c["AlarmDescription"], **configuration}
        state: dict[str, Any] = {
            "value": t.alarm.state_value,
            "reason": t.alarm.state_reason,
            "timestamp": _iso(t.alarm.state_updated),
        }
        if t.alarm.state_reason_data is not None:
            state["reasonData"] = t.alarm.state_reason_data
        previous: dict[str, Any] = {
            "value": t.previous_value,
            "reason": t.previous_reason,
            "timestamp": _iso(t.previous_updated),
        }
        if t.previous_reason_data is not None:
            previous["reasonData"] = t.previous_reason_data
        return {
            "source": "aws.cloudwatch",
            "alarmArn": self.arn(t.alarm.name),
            "accountId": self.account,
            "time": _iso(t.alarm.state_updated),
            "region": self.region,
            "alarmData": {
                "alarmName": t.alarm.name,
                "state": state,
                "previousState": previous,
                "configuration": configuration,
            },
        }


def actions_for(t: Transition) -> list[str]:
    c = t.alarm.config
    if not c.get("ActionsEnabled", True):
        return []
    member = {OK: "OKActions", ALARM: "AlarmActions", INSUFFICIENT: "InsufficientDataActions"}
    return list(c.get(member[t.alarm.state_value]) or [])


def _short(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%d/%m/%y %H:%M:%S")


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _offset(token: Any) -> int:
    if token is None:
        return 0
    try:
        if not isinstance(token, str):
            raise ValueError
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidNextToken("The service couldn't process the NextToken.") from e
