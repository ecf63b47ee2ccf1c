"""The rules of CloudWatch's metric reads: GetMetricStatistics, GetMetricData, ListMetrics.

Input is the operation's members as the API module decoded them (wire names, timestamps as
aware datetimes); output is the operation's members likewise. Validation follows CloudWatch:
what it refuses is refused here with its error code (InvalidParameterValue, MissingParameter,
InvalidParameterCombination, InvalidNextToken). Reads run on a worker thread.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lamina.errors import UserError
from lamina.observability.cw_metrics import (
    NAMESPACE,
    RETENTION_S,
    UNITS,
    Aggregate,
    Dimensions,
    MinuteRow,
    percentile,
)
from lamina.store.metric_data import MetricDataStore, SeriesName


class InvalidParameterValue(UserError):
    error_type = "InvalidParameterValue"


class MissingParameter(UserError):
    error_type = "MissingParameter"


class InvalidParameterCombination(UserError):
    error_type = "InvalidParameterCombination"


class InvalidNextToken(UserError):
    error_type = "InvalidNextToken"


STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
#: GetMetricStatistics returns at most this many datapoints
MAX_DATAPOINTS = 1440
#: GetMetricData: queries per request, and the default (and largest) MaxDatapoints
MAX_QUERIES = 500
DEFAULT_MAX_DATAPOINTS = 100_800
LIST_PAGE = 500
PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d{1,2})?|100(?:\.0{1,2})?)")
_QUERY_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")
_RECENT_S = 3 * 3600


def _require(body: dict[str, Any], member: str) -> Any:
    value = body.get(member)
    if value is None or value == "":
        raise MissingParameter(f"The parameter {member} is required.")
    return value


def _text(body: dict[str, Any], member: str, *, required: bool = True) -> str | None:
    value = _require(body, member) if required else body.get(member)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise InvalidParameterValue(f"The parameter {member} must be a string of 1 to 255.")
    return value


def _epoch(body: dict[str, Any], member: str) -> int:
    value = _require(body, member)
    if not isinstance(value, datetime):
        raise InvalidParameterValue(f"The parameter {member} must be a timestamp.")
    return int(value.timestamp())


def _dimensions(value: Any, member: str = "Dimensions") -> Dimensions:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 30:
        raise InvalidParameterValue(f"The parameter {member} must be a list of up to 30.")
    pairs: dict[str, str] = {}
    for d in value:
        name = d.get("Name") if isinstance(d, dict) else None
        val = d.get("Value") if isinstance(d, dict) else None
        if not isinstance(name, str) or not name or not isinstance(val, str) or not val:
            raise MissingParameter(f"The parameter {member}.member.Name and Value are required.")
        if name in pairs:
            raise InvalidParameterCombination(f"The collection {member} must not have duplicates.")
        pairs[name] = val
    return tuple(sorted(pairs.items()))


def _period(value: Any, member: str = "Period") -> int:
    if value is None:
        raise MissingParameter(f"The parameter {member} is required.")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterValue(f"The parameter {member} must be a positive integer.")
    if value % 60:
        raise InvalidParameterValue(
            f"The parameter {member} must be a multiple of 60 (this metric has 1-minute "
            "resolution)."
        )
    return value


def _statistic(stat: str, agg: Aggregate) -> float:
    if stat == "SampleCount":
        return float(agg.count)
    if stat == "Sum":
        return agg.sum
    if stat == "Average":
        return agg.sum / agg.count if agg.count else math.nan
    if stat == "Minimum":
        return agg.min
    if stat == "Maximum":
        return agg.max
    p = float(stat[1:])  # a checked pNN
    return percentile(agg.histogram or {}, p, agg.min, agg.max)


def _check_stat(stat: Any, member: str) -> str:
    if isinstance(stat, str) and (stat in STATISTICS or PERCENTILE.fullmatch(stat)):
        return stat
    raise InvalidParameterValue(
        f"The parameter {member} must be one of {', '.join(STATISTICS)} or a percentile "
        f"pNN.NN (got {stat!r}; other extended statistics are not supported)."
    )


@dataclass(frozen=True)
class FunctionActivity:
    """A function's recent counts (`MetricQueries.recent_activity`)."""

    invocations: int
    errors: int
    #: the start of the last minute it was invoked in (Unix seconds), None: not in the window
    last_minute: int | None


class MetricQueries:
    """Answers the metric reads from the stored minutes."""

    def __init__(self, store: MetricDataStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def _buckets(
        self,
        series: SeriesName,
        start: int,
        end: int,
        period: int,
        unit: Any,
        live: Sequence[MinuteRow],
    ) -> tuple[str | None, dict[int, Aggregate]]:
        """The series' data in `period`-second buckets from `start` (aligned down to the
        minute), bucket start -> merged aggregate; none if `unit` names another unit."""
        start = start // 60 * 60
        oldest = int(self._clock()) - RETENTION_S
        first = max(start, oldest // 60 * 60)
        stored_unit, minutes = self._store.read(series, first, end)
        for row in live:
            if (
                series.namespace == NAMESPACE
                and row.metric == series.metric
                and row.dimensions == series.dimensions
                and first <= row.minute < end
            ):
                stored_unit = UNITS.get(row.metric, "None")
                have = minutes.get(row.minute)
                if have is None:
                    minutes[row.minute] = row.aggregate
                else:
                    have.merge(row.aggregate)
        if unit is not None and stored_unit is not None and unit != stored_unit:
            return stored_unit, {}
        out: dict[int, Aggregate] = {}
        for minute, agg in minutes.items():
            at = start + (minute - start) // period * period
            have = out.get(at)
            if have is None:
                hist = None if agg.histogram is None else dict(agg.histogram)
                out[at] = Aggregate(agg.sum, agg.count, agg.min, agg.max, hist)
            else:
                have.merge(agg)
        return stored_unit, out

    def check_metric(self, body: dict[str, Any]) -> None:
        """Check a metric's Namespace, MetricName and Dimensions as the reads do."""
        _text(body, "Namespace")
        _text(body, "MetricName")
        _dimensions(body.get("Dimensions"))

    def recent_activity(
        self, names: Sequence[str], window_s: int, live: Sequence[MinuteRow] = ()
    ) -> dict[str, FunctionActivity]:
        """Each function's Invocations and Errors over the last `window_s` seconds (the
        current minute included), and the minute of its last invocation in that window:
        what the console's function list shows beside each function."""
        end = (int(self._clock()) // 60 + 1) * 60
        start = end - 60 - window_s
        out: dict[str, FunctionActivity] = {}
        for name in names:
            dims = (("FunctionName", name),)
            _, calls = self._buckets(
                SeriesName(NAMESPACE, "Invocations", dims), start, end, 60, None, live
            )
            _, errors = self._buckets(
                SeriesName(NAMESPACE, "Errors", dims), start, end, 60, None, live
            )
            used = [minute for minute, agg in calls.items() if agg.sum > 0]
            out[name] = FunctionActivity(
                int(sum(agg.sum for agg in calls.values())),
                int(sum(agg.sum for agg in errors.values())),
                max(used) if used else None,
            )
        return out

    # -- GetMetricStatistics --------------------------------------------------------------

    def get_metric_statistics(
        self, body: dict[str, Any], live: Sequence[MinuteRow] = ()
    ) -> dict[str, Any]:
        namespace = _text(body, "Namespace")
        metric = _text(body, "MetricName")
        assert namespace is not None and metric is not None
        dims = _dimensions(body.get("Dimensions"))
        start, end = _epoch(body, "StartTime"), _epoch(body, "EndTime")
        period = _period(body.get("Period"))
        if end <= start:
            raise InvalidParameterValue("The parameter StartTime must be before EndTime.")
        stats = body.get("Statistics") or []
        extended = body.get("ExtendedStatistics") or []
        for member, value in (("Statistics", stats), ("ExtendedStatistics", extended)):
            if not isinstance(value, list):
                raise InvalidParameterValue(f"The parameter {member} must be a list.")
        if not stats and not extended:
            raise MissingParameter("Either Statistics or ExtendedStatistics must be specified.")
        if stats and extended:
            raise InvalidParameterCombination(
                "Only one of Statistics or ExtendedStatistics may be specified."
            )
        if len(stats) > 5 or len(extended) > 10:
            raise InvalidParameterValue("Too many statistics requested.")
        for s in stats:
            if s not in STATISTICS:
                raise InvalidParameterValue(
                    f"The parameter Statistics.member must be one of {', '.join(STATISTICS)}."
                )
        for s in extended:
            if not isinstance(s, str) or not PERCENTILE.fullmatch(s):
                raise InvalidParameterValue(
                    f"The parameter ExtendedStatistics.member {s!r} is not a percentile pNN.NN "
                    "(other extended statistics are not supported)."
                )
        if (end - start) / period > MAX_DATAPOINTS:
            raise InvalidParameterCombination(
                f"You have requested up to {math.ceil((end - start) / period)} datapoints, "
                f"which exceeds the limit of {MAX_DATAPOINTS}. You may reduce the datapoints "
                "requested by increasing Period, or decreasing the time range."
            )
        unit = body.get("Unit")
        stored_unit, buckets = self._buckets(
            SeriesName(namespace, metric, dims), start, end, period, unit, live
        )
        points: list[dict[str, Any]] = []
        for at in sorted(buckets):
            agg = buckets[at]
            point: dict[str, Any] = {
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Unit": stored_unit or "None",
            }
            for s in stats:
                point[s] = _statistic(s, agg)
            if extended:
                point["ExtendedStatistics"] = {s: _statistic(s, agg) for s in extended}
            points.append(point)
        return {"Label": metric, "Datapoints": points}

    # -- GetMetricData --------------------------------------------------------------------

    def get_metric_data(
        self, body: dict[str, Any], live: Sequence[MinuteRow] = ()
    ) -> dict[str, Any]:
        queries = _require(body, "MetricDataQueries")
        if not isinstance(queries, list) or not 1 <= len(queries) <= MAX_QUERIES:
            raise InvalidParameterValue(
                f"The parameter MetricDataQueries must hold 1 to {MAX_QUERIES} queries."
            )
        start, end = _epoch(body, "StartTime"), _epoch(body, "EndTime")
        if end <= start:
            raise InvalidParameterValue("The parameter StartTime must be before EndTime.")
        scan = body.get("ScanBy") or "TimestampDescending"
        if scan not in ("TimestampDescending", "TimestampAscending"):
            raise InvalidParameterValue(
                "The parameter ScanBy must be TimestampDescending or TimestampAscending."
            )
        limit = body.get("MaxDatapoints")
        if limit is None:
            limit = DEFAULT_MAX_DATAPOINTS
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidParameterValue("The parameter MaxDatapoints must be a positive integer.")
        offset = _token(body.get("NextToken"))
        ids: set[str] = set()
        results: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            if not isinstance(q, dict):
                raise InvalidParameterValue(f"MetricDataQueries.member.{i + 1} is not a query.")
            qid = q.get("Id")
            if not isinstance(qid, str) or not _QUERY_ID.fullmatch(qid) or len(qid) > 255:
                raise InvalidParameterValue(
                    f"The value {qid!r} for parameter MetricDataQueries.member.{i + 1}.Id is "
                    "invalid: it must start with a lowercase letter and hold only letters, "
                    "digits and underscores."
                )
            if qid in ids:
                raise InvalidParameterValue(f"The value {qid} for Id is not unique.")
            ids.add(qid)
            stat_spec, expression = q.get("MetricStat"), q.get("Expression")
            if (stat_spec is None) == (expression is None):
                raise InvalidParameterCombination(
                    f"Exactly one of MetricStat and Expression must be given in query {qid}."
                )
            if expression is not None:
                raise InvalidParameterValue(
                    f"The Expression of query {qid} is not supported by Lamina: use MetricStat."
                )
            if q.get("ReturnData") is False:
                continue
            results.append(self._metric_stat(qid, q, stat_spec, start, end, scan, live))
        # Paging: MaxDatapoints counts values over all results, in query order.
        flat = [(r, k) for r in results for k in range(len(r["Values"]))]
        page = flat[offset : offset + limit]
        shown: dict[str, list[int]] = {}
        for r, k in page:
            shown.setdefault(r["Id"], []).append(k)
        out: list[dict[str, Any]] = []
        for r in results:
            keep = shown.get(r["Id"], [])
            more = offset + limit < len(flat)
            out.append(
                {
                    "Id": r["Id"],
                    "Label": r["Label"],
                    "Timestamps": [r["Timestamps"][k] for k in keep],
                    "Values": [r["Values"][k] for k in keep],
                    "StatusCode": "PartialData" if more else "Complete",
                }
            )
        response: dict[str, Any] = {"MetricDataResults": out, "Messages": []}
        if offset + limit < len(flat):
            response["NextToken"] = _make_token(offset + limit)
        return response

    def _metric_stat(
        self,
        qid: str,
        q: dict[str, Any],
        spec: Any,
        start: int,
        end: int,
        scan: str,
        live: Sequence[MinuteRow],
    ) -> dict[str, Any]:
        where = f"MetricDataQueries.member(Id={qid}).MetricStat"
        if not isinstance(spec, dict):
            raise InvalidParameterValue(f"The parameter {where} is not a structure.")
        metric = spec.get("Metric")
        if not isinstance(metric, dict):
            raise MissingParameter(f"The parameter {where}.Metric is required.")
        namespace = metric.get("Namespace")
        name = metric.get("MetricName")
        if not isinstance(namespace, str) or not namespace:
            raise MissingParameter(f"The parameter {where}.Metric.Namespace is required.")
        if not isinstance(name, str) or not name:
            raise MissingParameter(f"The parameter {where}.Metric.MetricName is required.")
        dims = _dimensions(metric.get("Dimensions"), f"{where}.Metric.Dimensions")
        period = _period(spec.get("Period"), f"{where}.Period")
        stat = _check_stat(spec.get("Stat"), f"{where}.Stat")
        if stat is None:
            raise MissingParameter(f"The parameter {where}.Stat is required.")
        _, buckets = self._buckets(
            SeriesName(namespace, name, dims), start, end, period, spec.get("Unit"), live
        )
        order = sorted(buckets, reverse=scan == "TimestampDescending")
        values = [_statistic(stat, buckets[at]) for at in order]
        label = q.get("Label")
        return {
            "Id": qid,
            "Label": label if isinstance(label, str) and label else name,
            "Timestamps": [datetime.fromtimestamp(at, UTC) for at in order],
            "Values": values,
        }

    # -- ListMetrics ----------------------------------------------------------------------

    def list_metrics(self, body: dict[str, Any], live: Sequence[MinuteRow] = ()) -> dict[str, Any]:
        namespace = _text(body, "Namespace", required=False)
        metric = _text(body, "MetricName", required=False)
        filters = body.get("Dimensions") or []
        if not isinstance(filters, list) or len(filters) > 30:
            raise InvalidParameterValue("The parameter Dimensions must be a list of up to 30.")
        wanted: list[tuple[str, str | None]] = []
        for f in filters:
            fname = f.get("Name") if isinstance(f, dict) else None
            if not isinstance(fname, str) or not fname:
                raise MissingParameter("The parameter Dimensions.member.Name is required.")
            fvalue = f.get("Value")
            if fvalue is not None and not isinstance(fvalue, str):
                raise InvalidParameterValue("The parameter Dimensions.member.Value is a string.")
            wanted.append((fname, fvalue))
        recent = body.get("RecentlyActive")
        if recent is not None and recent != "PT3H":
            raise InvalidParameterValue("The parameter RecentlyActive must be PT3H.")
        now = int(self._clock())
        since = now - (_RECENT_S if recent else RETENTION_S)
        offset = _token(body.get("NextToken"))
        stored = self._store.series(namespace, metric, since)
        known = set(stored)
        for row in live:
            name = SeriesName(NAMESPACE, row.metric, row.dimensions)
            if (
                name not in known
                and namespace in (None, NAMESPACE)
                and metric in (None, row.metric)
            ):
                known.add(name)
                stored.append(name)
        stored.sort(key=lambda n: (n.namespace, n.metric, n.dimensions))
        found = []
        for s in stored:
            have = dict(s.dimensions)
            if all(n in have and (v is None or have[n] == v) for n, v in wanted):
                found.append(s)
        page = found[offset : offset + LIST_PAGE]
        response: dict[str, Any] = {
            "Metrics": [
                {
                    "Namespace": s.namespace,
                    "MetricName": s.metric,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in s.dimensions],
                }
                for s in page
            ]
        }
        if offset + LIST_PAGE < len(found):
            response["NextToken"] = _make_token(offset + LIST_PAGE)
        return response


def _make_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _token(token: Any) -> int:
    if token is None:
        return 0
    try:
        if not isinstance(token, str):
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = data["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidNextToken("The service couldn't process the NextToken.") from e
