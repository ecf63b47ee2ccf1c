"""`lamina logs NAME`: a function's log events, and with --follow the new ones as they come.

It reads the server's CloudWatch Logs API (FilterLogEvents on `/aws/lambda/NAME`) with plain
JSON posts, like any other Logs client would; nothing here reads the store directly.

Following polls every POLL_INTERVAL_S. Each poll asks again from a little before the newest
timestamp seen (FOLLOW_OVERLAP_MS) and prints only events with an id above the highest it has
printed. Ids grow with insertion (Lamina's eventIds are the store's ids; in a cluster
`NODE:ID`, the node's store's, so the highest is kept per node), so an event stored
late with an earlier timestamp (a line printed just before a slow hand-over) is still shown,
once, and nothing is shown twice; the cost is re-reading one overlap's worth of events per
poll, which is why the overlap is short.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from lamina.cli.main import _FN, _fail, endpoint_option, main

POLL_INTERVAL_S = 0.3
FOLLOW_OVERLAP_MS = 2_000
_TARGET = "Logs_20140328."
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STREAM_DATE = re.compile(r"\d{4}/\d{2}/\d{2}/")
_ERROR_MARKERS = ("ERROR", "Traceback", "errorType")
_PLATFORM_PREFIXES = ("START RequestId:", "END RequestId:", "REPORT RequestId:")


class _GroupMissing(Exception):
    """The function's log group does not exist (yet)."""


class LogsClient:
    """The few Logs API calls this command makes, over httpx."""

    def __init__(self, endpoint: str) -> None:
        # Imported here, not with the module: `lamina serve` imports every command.
        import httpx

        from lamina.cli.signing import Signer

        self.endpoint = endpoint.rstrip("/")
        self._client = httpx.Client(
            base_url=self.endpoint, timeout=30.0, auth=Signer(self.endpoint)
        )
        self._transport_error = httpx.TransportError

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self._client.post(
                "/",
                json=body,
                headers={
                    "X-Amz-Target": _TARGET + operation,
                    "Content-Type": "application/x-amz-json-1.1",
                },
            )
        except self._transport_error as e:
            _fail(f"cannot reach Lamina at {self.endpoint} ({e}). Is `lamina serve` running?", 2)
        try:
            data: dict[str, Any] = resp.json()
        except ValueError:
            _fail(f"HTTP {resp.status_code} from {self.endpoint}: {resp.text[:200]}")
        if resp.status_code >= 400:
            kind = str(data.get("__type", f"HTTP {resp.status_code}")).rsplit("#", 1)[-1]
            if kind == "ResourceNotFoundException":
                raise _GroupMissing(data.get("message", ""))
            _fail(f"{kind}: {data.get('message', resp.text)}")
        return data

    def function_exists(self, name: str) -> bool:
        return self._configuration(name) is not None

    def log_group(self, name: str) -> str:
        """The function's log group: its LoggingConfig's, or `/aws/lambda/NAME` (also for a
        function that is gone, whose logs stay)."""
        config = self._configuration(name) or {}
        group = config.get("LoggingConfig", {}).get("LogGroup")
        return group if isinstance(group, str) and group else f"/aws/lambda/{name}"

    def _configuration(self, name: str) -> dict[str, Any] | None:
        try:
            resp = self._client.get(f"{_FN}/{name}/configuration")
        except self._transport_error as e:
            _fail(f"cannot reach Lamina at {self.endpoint} ({e}). Is `lamina serve` running?", 2)
        if resp.status_code != 200:
            return None
        body = resp.json()
        return body if isinstance(body, dict) else None

    def events(self, group: str, start_ms: int, pattern: str | None) -> Iterator[dict[str, Any]]:
        """Every event of the group from `start_ms` on (matching `pattern`), page by page."""
        body: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
        if pattern:
            body["filterPattern"] = pattern
        while True:
            page = self.call("FilterLogEvents", body)
            yield from page.get("events", [])
            token = page.get("nextToken")
            if not token:
                return
            body["nextToken"] = token


def parse_since(value: str, now: datetime | None = None) -> int:
    """`10m`, `2h`, `1d`, `1h30m` (before now) or an ISO 8601 time (UTC if it names no zone)
    → milliseconds since the epoch."""
    now = now or datetime.now(UTC)
    text = value.strip()
    parts = _DURATION.findall(text)
    if parts and _DURATION.sub("", text).strip() == "":
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in parts)
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (10m, 2h, 1d) nor an ISO time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def format_event(event: dict[str, Any], color: bool) -> str:
    """`2026-01-31T12:34:56.789Z [$LATEST]1a2b3c4d message`: UTC time to the millisecond,
    the stream without its date and with its id shortened, and the message."""
    when = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    message = str(event.get("message", "")).rstrip("\n")
    line = f"{stamp} {short_stream(str(event.get('logStreamName', '')))} {message}"
    if not color:
        return line
    if message.startswith(_PLATFORM_PREFIXES):
        return click.style(line, dim=True)
    if any(marker in message for marker in _ERROR_MARKERS):
        return click.style(line, fg="red")
    return line


def short_stream(stream: str) -> str:
    """`2026/01/31/[$LATEST]1a2b3c4d5e6f...` → `[$LATEST]1a2b3c4d`."""
    rest = _STREAM_DATE.sub("", stream, count=1)
    if "]" in rest:
        version, _, ident = rest.partition("]")
        return f"{version}]{ident[:8]}"
    return rest[:16]


def _use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@main.command(name="logs")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--since",
    default="10m",
    show_default=True,
    help="Start this long ago (30s, 10m, 2h, 1d) or at an ISO time (UTC unless it says).",
)
@click.option(
    "--filter",
    "pattern",
    default=None,
    help='CloudWatch filter pattern: terms, "phrases", -excluded, ?either.',
)
@endpoint_option
def logs_command(name: str, follow: bool, since: str, pattern: str | None, endpoint: str) -> None:
    """Print function NAME's log events (its log group: /aws/lambda/NAME unless its
    LoggingConfig names another, which other functions may share)."""
    try:
        start_ms = parse_since(since)
    except click.BadParameter as e:
        _fail(f"--since: {e.message}", code=2)
    client = LogsClient(endpoint)
    group = client.log_group(name)
    color = _use_color()
    try:
        if follow:
            _follow(client, name, group, start_ms, pattern, color)
        else:
            _print_once(client, name, group, start_ms, pattern, color)
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:  # `lamina logs fn | head`: the reader has had enough
        # Python's own flush of stdout at exit would fail again and say so: point it away.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _print_once(
    client: LogsClient, name: str, group: str, start_ms: int, pattern: str | None, color: bool
) -> None:
    try:
        for event in client.events(group, start_ms, pattern):
            click.echo(format_event(event, color), color=color)
    except _GroupMissing:
        _missing(client, name, group)


def _missing(client: LogsClient, name: str, group: str) -> None:
    """No log group: an error if there is no such function, else just nothing logged yet."""
    if not client.function_exists(name):
        _fail(f"no function {name} (and no log group {group})")
    click.echo(f"{name} has logged nothing yet (no log group {group})", err=True)


def _follow(
    client: LogsClient, name: str, group: str, start_ms: int, pattern: str | None, color: bool
) -> None:
    follower = Follower(client, group, start_ms, pattern)
    warned = False
    while True:
        try:
            for event in follower.poll():
                click.echo(format_event(event, color), color=color)
        except _GroupMissing:
            if not warned:
                _missing(client, name, group)
                warned = True
        time.sleep(POLL_INTERVAL_S)


class Follower:
    """A log group's new events, poll after poll, each once (the module docstring says how);
    `lamina logs -f` and `lamina dev` poll one each per group they follow."""

    def __init__(
        self, client: LogsClient, group: str, start_ms: int, pattern: str | None = None
    ) -> None:
        self.client = client
        self.group = group
        self.pattern = pattern
        self._start_ms = start_ms
        self._since_ms = start_ms
        self._newest_ids: dict[str, int] = {}  # by node (a cluster's eventIds are NODE:ID)

    def poll(self) -> list[dict[str, Any]]:
        """The events stored since the last poll, in the server's order; raises _GroupMissing
        while the group does not exist."""
        newest_ms = self._since_ms + FOLLOW_OVERLAP_MS  # so that `since_ms` never moves back
        newest_ids = dict(self._newest_ids)
        fresh: list[dict[str, Any]] = []
        for event in self.client.events(self.group, self._since_ms, self.pattern):
            node, _, number = str(event.get("eventId", "-1")).rpartition(":")
            event_id = int(number)
            newest_ms = max(newest_ms, int(event["timestamp"]))
            if event_id <= self._newest_ids.get(node, -1):
                continue  # returned by an earlier poll
            newest_ids[node] = max(newest_ids.get(node, -1), event_id)
            fresh.append(event)
        # Moved on only once the whole poll succeeded: a failed one is asked again.
        self._newest_ids = newest_ids
        self._since_ms = max(self._start_ms, newest_ms - FOLLOW_OVERLAP_MS)
        return fresh
