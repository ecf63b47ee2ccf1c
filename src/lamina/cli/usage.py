"""`lamina usage`: invocations, GB-seconds and what AWS Lambda would have charged for them.

The server meters quantities only (`GET /lamina/usage`, per function, version and UTC day); the
prices are applied here, so they can be changed per question without touching stored data.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import click

from lamina.cli.main import Api, _fail, endpoint_option, main

#: AWS Lambda's published on-demand list prices for x86 in us-east-1 (USD)
PRICE_PER_GB_SECOND = 0.0000166667
PRICE_PER_MILLION_REQUESTS = 0.20

_RELATIVE = re.compile(r"(\d+)([dh])")


@dataclass
class _Line:
    """One row of the report: a function version's usage summed over the days asked for."""

    function: str
    version: str
    requests: int = 0
    billed_ms: int = 0
    gb_seconds: float = 0.0

    def cost(self, per_gb_second: float, per_million_requests: float) -> float:
        return self.gb_seconds * per_gb_second + self.requests * per_million_requests / 1e6

    def as_json(self, per_gb_second: float, per_million_requests: float) -> dict[str, Any]:
        return {
            "function": self.function,
            "version": self.version,
            "requests": self.requests,
            "billedMs": self.billed_ms,
            # Rounded past the last exact digit (1 MB-ms is 0.0000009765625 GB-s) to drop the
            # noise that summing floats leaves, and costs to a millionth of a cent.
            "gbSeconds": round(self.gb_seconds, 13),
            "cost": round(self.cost(per_gb_second, per_million_requests), 12),
        }


def since_param(since: str, now: float) -> str | None:
    """`--since` as the server's `since` parameter: `7d`/`24h` become seconds since the epoch,
    an ISO 8601 date or date-time is passed on as it is, `all` sends nothing."""
    if since == "all":
        return None
    relative = _RELATIVE.fullmatch(since)
    if relative:
        hours = int(relative[1]) * (24 if relative[2] == "d" else 1)
        return str(int(now - hours * 3600))
    return since


def _version_key(version: str) -> tuple[int, str]:
    # $LATEST first, then published versions in number order (not "10" before "2").
    return (0, "") if not version.isdigit() else (1, version.zfill(12))


def summarize(rows: list[dict[str, Any]]) -> list[_Line]:
    """Per-day rows from the server, summed per function version."""
    lines: dict[tuple[str, str], _Line] = {}
    for row in rows:
        key = (row["function"], row["version"])
        line = lines.setdefault(key, _Line(*key))
        line.requests += row["requests"]
        line.billed_ms += row["billedMs"]
        line.gb_seconds += row["gbSeconds"]
    return sorted(lines.values(), key=lambda x: (x.function, _version_key(x.version)))


@main.command()
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="How far back: 7d, 24h, an ISO date (2024-05-01, UTC) or `all`. Usage is kept per "
    "UTC day, so the whole of the first day is included.",
)
@click.option("--function", "function", default=None, help="Only this function.")
@click.option("--json", "as_json", is_flag=True, help="Print the same figures as JSON.")
@click.option(
    "--price-gb-second",
    type=click.FloatRange(min=0),
    default=f"{PRICE_PER_GB_SECOND:.10f}",  # a string, so that --help shows it in full
    show_default=True,
    help="USD per GB-second; the default is Lambda's x86 on-demand list price.",
)
@click.option(
    "--price-per-million-requests",
    type=click.FloatRange(min=0),
    default=f"{PRICE_PER_MILLION_REQUESTS:.2f}",
    show_default=True,
    help="USD per million requests; the default is Lambda's list price.",
)
@endpoint_option
def usage(
    since: str,
    function: str | None,
    as_json: bool,
    price_gb_second: float,
    price_per_million_requests: float,
    endpoint: str,
) -> None:
    """Invocations, billed milliseconds and GB-seconds per function version, and what AWS
    Lambda would charge for them: by default at its x86 on-demand list prices, with no free
    tier applied."""
    params: dict[str, str] = {}
    since_value = since_param(since, time.time())
    if since_value is not None:
        params["since"] = since_value
    if function:
        params["function"] = function
    data = Api(endpoint).call("GET", "/lamina/usage", params=params).json()
    lines = summarize(data["usage"])
    total = _Line("TOTAL", "")
    for line in lines:
        total.requests += line.requests
        total.billed_ms += line.billed_ms
        total.gb_seconds += line.gb_seconds
    prices = (price_gb_second, price_per_million_requests)
    if as_json:
        out = {
            "since": data["since"],
            "function": data["function"],
            "prices": {
                "currency": "USD",
                "perGbSecond": price_gb_second,
                "perMillionRequests": price_per_million_requests,
            },
            "usage": [line.as_json(*prices) for line in lines],
            "total": {
                k: v for k, v in total.as_json(*prices).items() if k not in ("function", "version")
            },
        }
        click.echo(json.dumps(out, indent=2))
        return
    if function and not lines:
        _fail(f"no usage recorded for {function} since {data['since'] or 'the start'}")
    _print_table(lines, total, data["since"], prices)


def _print_table(
    lines: list[_Line], total: _Line, since: str | None, prices: tuple[float, float]
) -> None:
    header = ("FUNCTION", "VERSION", "INVOCATIONS", "BILLED MS", "GB-S", "COST (USD)")
    cells = [
        (
            line.function,
            line.version,
            f"{line.requests:,}",
            f"{line.billed_ms:,}",
            f"{line.gb_seconds:,.6f}",
            f"{line.cost(*prices):,.8f}",
        )
        for line in [*lines, total]
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def fmt(row: tuple[str, ...]) -> str:
        left = [row[i].ljust(widths[i]) for i in range(2)]
        right = [row[i].rjust(widths[i]) for i in range(2, len(row))]
        return "  ".join(left + right).rstrip()

    click.echo(
        f"since {since or 'the start'} (UTC days); ${_price(prices[0])} per GB-s, "
        f"${_price(prices[1])} per 1M requests"
    )
    click.echo(fmt(header))
    for row in cells[:-1]:
        click.echo(fmt(row))
    click.echo("-" * len(fmt(header)))
    click.echo(fmt(cells[-1]))


def _price(value: float) -> str:
    """A price as it is quoted: 0.0000166667 (not 1.66667e-05), 0.20."""
    text = f"{value:.10f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"
