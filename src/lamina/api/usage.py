"""`GET /lamina/usage`: metered usage per function, version and UTC day (Lamina's own endpoint,
read by `lamina usage`). Prices are the client's business: the server reports only quantities."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.context import app_state
from lamina.api.wire import json_response
from lamina.errors import InvalidParameterValueError
from lamina.observability.metering import utc_day


def since_day(raw: str | None) -> str | None:
    """`since` as the first UTC day to include: seconds since the epoch, or an ISO 8601 date or
    date-time (UTC unless it says otherwise). Usage is kept per day, so a moment within a day
    includes that whole day."""
    if raw is None or raw == "":
        return None
    try:
        return utc_day(float(raw))
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameterValueError(
            f"since must be seconds since the epoch or an ISO 8601 date, not {raw!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


async def usage(request: Request) -> Response:
    state = app_state(request)
    since = since_day(request.query_params.get("since"))
    function = request.query_params.get("function") or None
    rows = await state.meter.usage(since, function) if state.meter is not None else []
    return json_response(
        {
            "since": since,
            "function": function,
            "usage": [
                {
                    "function": u.function,
                    "version": u.version,
                    "day": u.day,
                    "requests": u.requests,
                    "billedMs": u.billed_ms,
                    "gbSeconds": u.gb_seconds,
                }
                for u in rows
            ],
        }
    )
