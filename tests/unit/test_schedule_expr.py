"""Schedule expressions: rate() and cron() parsing and their next ticks (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.schedule_expr import Cron, Rate, ScheduleExpressionError, parse


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(expression: str, start: datetime, n: int) -> list[datetime]:
    schedule = parse(expression)
    out: list[datetime] = []
    t = start
    for _ in range(n):
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 43200),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 604800),
    ],
)
def test_rate(expression: str, seconds: int) -> None:
    schedule = parse(expression)
    assert isinstance(schedule, Rate)
    assert schedule.seconds == seconds


def test_rate_ticks_count_from_the_anchor() -> None:
    rate = parse("rate(5 minutes)")
    anchor = at(2024, 1, 1, 10, 2, 30)
    assert rate.next_after(anchor, anchor) == at(2024, 1, 1, 10, 7, 30)
    assert rate.next_after(at(2024, 1, 1, 10, 7, 30), anchor) == at(2024, 1, 1, 10, 12, 30)
    assert rate.next_after(at(2024, 1, 1, 10, 7, 31), anchor) == at(2024, 1, 1, 10, 12, 30)
    assert rate.next_after(at(2024, 1, 1, 9, 0), anchor) == at(2024, 1, 1, 10, 7, 30)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(0 minutes)",
        "rate(-1 minutes)",
        "rate(1.5 hours)",
        "rate(1 second)",
        "rate(2 weeks)",
        "rate(minutes)",
        "rate 1 minute",
        "every minute",
        "",
        "cron(0 12 * * ? *",
        "cron(0 12 * * *)",  # five fields
        "cron(0 12 * * * *)",  # neither day field is ?
        "cron(0 12 ? * ? *)",  # both are
        "cron(60 12 * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 12 32 * ? *)",
        "cron(0 12 0 * ? *)",
        "cron(0 12 * 13 ? *)",
        "cron(0 12 ? * 8 *)",
        "cron(0 12 ? * 0 *)",
        "cron(0 12 * * ? 1969)",
        "cron(0 12 * * ? 2200)",
        "cron(0 12 * FOO ? *)",
        "cron(0 12 ? * MON#6 *)",
        "cron(0 12 ? * FRI-MON *)",
        "cron(0/0 12 * * ? *)",
        "cron(a 12 * * ? *)",
        "cron(0 12 32W * ? *)",
    ],
)
def test_invalid(expression: str) -> None:
    with pytest.raises(ScheduleExpressionError) as e:
        parse(expression)
    assert e.value.message == "Parameter ScheduleExpression is not valid."
    assert e.value.error_type == "ValidationException"


def test_cron_every_minute_and_hourly() -> None:
    start = at(2024, 3, 1, 10, 59, 30)
    assert ticks("cron(* * * * ? *)", start, 2) == [at(2024, 3, 1, 11, 0), at(2024, 3, 1, 11, 1)]
    assert ticks("cron(15 * * * ? *)", start, 2) == [
        at(2024, 3, 1, 11, 15),
        at(2024, 3, 1, 12, 15),
    ]


def test_cron_next_is_strictly_after() -> None:
    assert ticks("cron(0 12 * * ? *)", at(2024, 3, 1, 12, 0), 1) == [at(2024, 3, 2, 12, 0)]


def test_cron_lists_ranges_increments() -> None:
    assert ticks("cron(0/20 8-9 * * ? *)", at(2024, 3, 1, 0, 0), 7) == [
        at(2024, 3, 1, 8, 0),
        at(2024, 3, 1, 8, 20),
        at(2024, 3, 1, 8, 40),
        at(2024, 3, 1, 9, 0),
        at(2024, 3, 1, 9, 20),
        at(2024, 3, 1, 9, 40),
        at(2024, 3, 2, 8, 0),
    ]
    assert ticks("cron(5,35 10 * * ? *)", at(2024, 3, 1, 10, 5), 2) == [
        at(2024, 3, 1, 10, 35),
        at(2024, 3, 2, 10, 5),
    ]
    assert ticks("cron(0 0 1 1/4 ? *)", at(2024, 1, 1, 0, 0), 3) == [
        at(2024, 5, 1),
        at(2024, 9, 1),
        at(2025, 1, 1),
    ]


def test_cron_day_of_week_names_and_numbers() -> None:
    # 2024-03-04 is a Monday; 1-7 is SUN-SAT
    weekdays = ticks("cron(0 9 ? * MON-FRI *)", at(2024, 3, 1, 12, 0), 3)
    assert weekdays == [at(2024, 3, 4, 9), at(2024, 3, 5, 9), at(2024, 3, 6, 9)]
    assert ticks("cron(0 9 ? * 2-6 *)", at(2024, 3, 1, 12, 0), 3) == weekdays
    assert ticks("cron(0 9 ? * 1 *)", at(2024, 3, 1), 1) == [at(2024, 3, 3, 9)]  # Sunday
    assert ticks("cron(0 9 ? * sat *)", at(2024, 3, 1), 1) == [at(2024, 3, 2, 9)]
    assert ticks("cron(0 9 ? * L *)", at(2024, 3, 1), 1) == [at(2024, 3, 2, 9)]  # Saturday


def test_cron_month_names() -> None:
    assert ticks("cron(0 0 1 JAN,JUL ? *)", at(2024, 2, 1), 2) == [at(2024, 7, 1), at(2025, 1, 1)]


def test_cron_last_day_of_month_and_leap_years() -> None:
    assert ticks("cron(0 0 L * ? *)", at(2024, 1, 15), 4) == [
        at(2024, 1, 31),
        at(2024, 2, 29),
        at(2024, 3, 31),
        at(2024, 4, 30),
    ]
    assert ticks("cron(0 0 L 2 ? *)", at(2023, 1, 1), 3) == [
        at(2023, 2, 28),
        at(2024, 2, 29),
        at(2025, 2, 28),
    ]
    # 29 February only in leap years; 2100 is not one
    assert ticks("cron(0 0 29 2 ? *)", at(2024, 3, 1), 2) == [at(2028, 2, 29), at(2032, 2, 29)]
    assert ticks("cron(0 0 29 2 ? 2097-2104)", at(2097, 1, 1), 1) == [at(2104, 2, 29)]
    assert ticks("cron(0 0 31 * ? *)", at(2024, 4, 1), 1) == [at(2024, 5, 31)]


def test_cron_nearest_weekday() -> None:
    # 2024-06-15 is a Saturday: 15W is Friday the 14th
    assert ticks("cron(0 0 15W * ? *)", at(2024, 6, 1), 1) == [at(2024, 6, 14)]
    # 2024-09-15 is a Sunday: Monday the 16th
    assert ticks("cron(0 0 15W * ? *)", at(2024, 9, 1), 1) == [at(2024, 9, 16)]
    # 2024-06-01 is a Saturday: 1W does not cross back into May, so Monday the 3rd
    assert ticks("cron(0 0 1W * ? *)", at(2024, 5, 31), 1) == [at(2024, 6, 3)]
    # 2024-03-31 is a Sunday: 31W does not cross into April, so Friday the 29th
    assert ticks("cron(0 0 31W 3 ? *)", at(2024, 1, 1), 1) == [at(2024, 3, 29)]
    # a weekday stays itself: 2024-06-12 is a Wednesday
    assert ticks("cron(0 0 12W * ? *)", at(2024, 6, 1), 1) == [at(2024, 6, 12)]
    # LW: the last weekday; 2024-08-31 is a Saturday
    assert ticks("cron(0 0 LW * ? *)", at(2024, 8, 1), 1) == [at(2024, 8, 30)]


def test_cron_nth_and_last_day_of_week() -> None:
    # the third Friday of each month
    assert ticks("cron(0 10 ? * 6#3 *)", at(2024, 1, 1), 3) == [
        at(2024, 1, 19, 10),
        at(2024, 2, 16, 10),
        at(2024, 3, 15, 10),
    ]
    assert ticks("cron(0 10 ? * FRI#3 *)", at(2024, 1, 1), 1) == [at(2024, 1, 19, 10)]
    # the last Friday of each month
    assert ticks("cron(0 10 ? * 6L *)", at(2024, 1, 1), 2) == [
        at(2024, 1, 26, 10),
        at(2024, 2, 23, 10),
    ]
    # a fifth Monday exists only in some months: 2024-04-29 is one
    assert ticks("cron(0 0 ? * MON#5 *)", at(2024, 3, 1), 1) == [at(2024, 4, 29)]


def test_cron_years() -> None:
    assert ticks("cron(0 0 1 1 ? 2030,2032)", at(2024, 1, 1), 2) == [at(2030, 1, 1), at(2032, 1, 1)]
    schedule = parse("cron(0 0 1 1 ? 2030)")
    assert isinstance(schedule, Cron)
    assert schedule.next_after(at(2030, 1, 1)) is None


def test_cron_ignores_seconds_and_the_anchor() -> None:
    schedule = parse("cron(0/10 * * * ? *)")
    anchor = at(2024, 1, 1, 0, 3)
    assert schedule.next_after(at(2024, 1, 1, 0, 9, 59, 999), anchor) == at(2024, 1, 1, 0, 10)
    assert schedule.next_after(at(2024, 1, 1, 0, 10, 0, 1)) == at(2024, 1, 1, 0, 20)


def test_cron_wraps_at_year_end() -> None:
    assert ticks("cron(30 23 L 12 ? *)", at(2024, 12, 31, 23, 30), 1) == [at(2025, 12, 31, 23, 30)]
    assert parse("cron(* * * * ? *)").next_after(at(2024, 12, 31, 23, 59)) == at(2025, 1, 1)
    assert at(2025, 1, 1) - at(2024, 12, 31, 23, 59) == timedelta(minutes=1)
