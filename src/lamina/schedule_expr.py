"""EventBridge schedule expressions: `rate(...)` and `cron(...)`, all in UTC.

`rate(N unit)` ticks every N minutes, hours or days; EventBridge wants the singular unit for 1
(`rate(1 minute)`) and the plural above it (`rate(5 minutes)`), and so does this parser. Its
ticks count from an anchor the caller gives (the rule's creation or enable time).

`cron(minutes hours day-of-month month day-of-week year)` has six fields. Each takes `*`,
values, `,` lists, `a-b` ranges and `/` increments; months may be JAN-DEC and days of the
week SUN-SAT (1-7, Sunday first). Day-of-month also takes `L` (last day), `nW` (the weekday
nearest day n, never crossing into another month) and `LW` (the last weekday); day-of-week
takes `L` (Saturday, the week's last day), `nL` (the month's last such day) and `n#k` (its
k-th). Exactly one of day-of-month and day-of-week must be `?`. Years run 1970-2199.

Anything else raises `ScheduleExpressionError`: ValidationException, "Parameter
ScheduleExpression is not valid.", as EventBridge answers. The module is pure: no I/O.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from lamina.errors import ValidationError

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_CRON = re.compile(r"cron\((.*)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# Spelt out: calendar.month_abbr follows the locale.
_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_FIRST_YEAR, _LAST_YEAR = 1970, 2199


class ScheduleExpressionError(ValidationError):
    """A schedule expression EventBridge would refuse."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("Parameter ScheduleExpression is not valid.")
        #: what exactly is wrong (for logs and tests; EventBridge's message says no more)
        self.detail = detail


@dataclass(frozen=True)
class Rate:
    """`rate(N unit)`: a tick every `seconds`, counted from an anchor."""

    expression: str
    seconds: int

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        """The first tick strictly after `after`: anchor + k * period for some k >= 1 (the
        anchor itself is not a tick). Without an anchor, ticks are aligned to the epoch."""
        base = anchor if anchor is not None else datetime(1970, 1, 1, tzinfo=UTC)
        elapsed = (after - base).total_seconds()
        k = max(1, int(elapsed // self.seconds) + 1)
        return base + timedelta(seconds=k * self.seconds)


@dataclass(frozen=True)
class _Field:
    """A cron field's plain values, and day fields' special forms."""

    values: frozenset[int]
    any: bool = False  # `?`
    last: bool = False  # day-of-month `L`
    last_weekday: bool = False  # day-of-month `LW`
    nearest_weekday: frozenset[int] = frozenset()  # day-of-month `nW`
    last_of: frozenset[int] = frozenset()  # day-of-week `nL`
    nth: frozenset[tuple[int, int]] = frozenset()  # day-of-week `n#k`


@dataclass(frozen=True)
class Cron:
    """`cron(...)`: the minutes that match all six fields, in UTC."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    dom: _Field
    months: frozenset[int]
    dow: _Field
    years: frozenset[int]

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        """The first matching minute strictly after `after`, or None past 2199. `anchor` is
        accepted for symmetry with `Rate` and ignored: cron ticks are absolute."""
        start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for year in sorted(y for y in self.years if y >= start.year):
            for month in sorted(self.months):
                if (year, month) < (start.year, start.month):
                    continue
                for day in self._days(year, month):
                    when = date(year, month, day)
                    if when < start.date():
                        continue
                    today = when == start.date()
                    for hour in sorted(self.hours):
                        if today and hour < start.hour:
                            continue
                        now_hour = today and hour == start.hour
                        for minute in sorted(self.minutes):
                            if now_hour and minute < start.minute:
                                continue
                            return datetime(year, month, day, hour, minute, tzinfo=UTC)
        return None

    def _days(self, year: int, month: int) -> list[int]:
        length = calendar.monthrange(year, month)[1]
        days: set[int] = set()
        if self.dow.any:
            f = self.dom
            days.update(d for d in f.values if d <= length)
            if f.last:
                days.add(length)
            if f.last_weekday:
                days.add(_nearest_weekday(year, month, length))
            days.update(_nearest_weekday(year, month, n) for n in f.nearest_weekday if n <= length)
        else:
            f = self.dow
            for day in range(1, length + 1):
                weekday = _aws_weekday(date(year, month, day))
                if weekday in f.values:
                    days.add(day)
                if weekday in f.last_of and day + 7 > length:
                    days.add(day)
                if (weekday, (day - 1) // 7 + 1) in f.nth:
                    days.add(day)
        return sorted(days)


Schedule = Rate | Cron


def parse(expression: str) -> Schedule:
    """Parse a ScheduleExpression; raises ScheduleExpressionError (ValidationException)."""
    if not isinstance(expression, str) or len(expression) > 256:
        raise ScheduleExpressionError("not a string of at most 256 characters")
    if m := _RATE.fullmatch(expression):
        value, unit = int(m[1]), m[2]
        if value < 1:
            raise ScheduleExpressionError("a rate must be a positive whole number")
        if (value == 1) != (not unit.endswith("s")):
            raise ScheduleExpressionError("use the singular unit for 1 and the plural above it")
        return Rate(expression, value * _UNIT_SECONDS[unit.removesuffix("s")])
    if m := _CRON.fullmatch(expression):
        return _cron(expression, m[1].split())
    raise ScheduleExpressionError("neither rate(...) nor cron(...)")


def _cron(expression: str, fields: list[str]) -> Cron:
    if len(fields) != 6:
        raise ScheduleExpressionError("cron() takes six fields")
    minute, hour, dom, month, dow, year = (f.upper() for f in fields)
    if (dom == "?") == (dow == "?"):
        raise ScheduleExpressionError("exactly one of day-of-month and day-of-week must be ?")
    return Cron(
        expression,
        _values(minute, 0, 59),
        _values(hour, 0, 23),
        _day_of_month(dom),
        _values(month, 1, 12, _MONTHS),
        _day_of_week(dow),
        _values(year, _FIRST_YEAR, _LAST_YEAR),
    )


def _values(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    """A field of `*`, values, lists, ranges and increments."""
    out: set[int] = set()
    for item in text.split(","):
        out.update(_item(item, low, high, names or {}))
    return frozenset(out)


def _item(item: str, low: int, high: int, names: dict[str, int]) -> range:
    body, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ScheduleExpressionError(f"bad increment in {item!r}")
        step = int(step_text)
    if body == "*":
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = _number(first, low, high, names), _number(last, low, high, names)
        if start > end:
            raise ScheduleExpressionError(f"range {item!r} runs backwards")
    else:
        start = _number(body, low, high, names)
        # `a/b` runs from a to the field's end; a lone value is just itself
        end = high if step_text else start
    return range(start, end + 1, step)


def _number(text: str, low: int, high: int, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit() or not low <= int(text) <= high:
        raise ScheduleExpressionError(f"{text!r} is not in {low}-{high}")
    return int(text)


def _day_of_month(text: str) -> _Field:
    if text == "?":
        return _Field(frozenset(), any=True)
    values: set[int] = set()
    last = last_weekday = False
    nearest: set[int] = set()
    for item in text.split(","):
        if item == "L":
            last = True
        elif item == "LW":
            last_weekday = True
        elif item.endswith("W"):
            nearest.add(_number(item[:-1], 1, 31, {}))
        else:
            values.update(_item(item, 1, 31, {}))
    return _Field(
        frozenset(values), last=last, last_weekday=last_weekday, nearest_weekday=frozenset(nearest)
    )


def _day_of_week(text: str) -> _Field:
    if text == "?":
        return _Field(frozenset(), any=True)
    values: set[int] = set()
    last_of: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for item in text.split(","):
        if item == "L":
            values.add(7)  # the last day of the week: Saturday
        elif item.endswith("L"):
            last_of.add(_number(item[:-1], 1, 7, _DAYS))
        elif "#" in item:
            day, _, k = item.partition("#")
            nth.add((_number(day, 1, 7, _DAYS), _number(k, 1, 5, {})))
        else:
            values.update(_item(item, 1, 7, _DAYS))
    return _Field(frozenset(values), last_of=frozenset(last_of), nth=frozenset(nth))


def _aws_weekday(d: date) -> int:
    """1 (Sunday) to 7 (Saturday), as cron's day-of-week counts."""
    return (d.weekday() + 1) % 7 + 1


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """The weekday (Monday-Friday) nearest `day` within the same month."""
    length = calendar.monthrange(year, month)[1]
    weekday = date(year, month, day).weekday()  # Monday 0 ... Sunday 6
    if weekday == 5:  # Saturday: the Friday before, or the Monday after on the 1st
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before on the last day
        return day + 1 if day < length else day - 2
    return day
