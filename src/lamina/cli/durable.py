"""`lamina durable`: durable executions seen from outside, over the same durable-execution API
boto3 uses (`/2025-12-01/...`, signed like every other command).

- `list FUNCTION`: a function's executions (ListDurableExecutionsByFunction, every page);
- `show ARN`: one execution (GetDurableExecution) and its history as a timeline
  (GetDurableExecutionHistory, every page): time since the execution started, the event, the
  operation it concerns and what happened (wait end, attempt, error, result);
- `callback CALLBACK_ID`: complete a callback (SendDurableExecutionCallbackSuccess / Failure)
  or keep it alive (Heartbeat), as the system a function waits for would;
- `stop ARN`: StopDurableExecution;
- `pause ARN` / `resume ARN`: PauseDurableExecution / ResumeDurableExecution.

The timeline is built by `timeline_rows`, a pure function of the events, so its rendering is
tested without a server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import click

from lamina.cli.main import Api, _fail, endpoint_option, main
from lamina.cli.tables import print_table

_DURABLE = "/2025-12-01"
#: the statuses ListDurableExecutionsByFunction filters on (botocore's ExecutionStatus)
STATUSES = ("RUNNING", "PAUSING", "PAUSED", "SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED")
#: payloads longer than this are cut in tables (`--json` prints them whole)
_CELL = 60


def _label(value: str) -> str:
    # A path label is percent-encoded whole, as botocore encodes it: an execution ARN holds
    # ':' and '/', a callback id '/', '+' and '='.
    return quote(value, safe="-._~")


def _timestamp(value: Any) -> datetime | None:
    """A wire timestamp: epoch seconds (rest-json's default) or ISO 8601."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _when(value: Any) -> str:
    ts = _timestamp(value)
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _offset(seconds: float) -> str:
    """Time since the execution started: `+0.012s`, `+2m05.300s`, `+3h02m05s`."""
    if seconds < 60:
        return f"+{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"+{int(minutes)}m{secs:06.3f}s"
    hours, minutes = divmod(minutes, 60)
    return f"+{int(hours)}h{int(minutes):02d}m{int(secs):02d}s"


def _cut(text: str, limit: int = _CELL) -> str:
    text = " ".join(text.split())  # one line per row
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _payload(holder: Mapping[str, Any] | None) -> str | None:
    """The text of an EventInput/EventResult (None when the event carries none)."""
    if not holder or holder.get("Payload") is None:
        return None
    text = str(holder["Payload"])
    return text + (" (truncated)" if holder.get("Truncated") else "")


def _error(holder: Mapping[str, Any] | None) -> str | None:
    """`Type: message` of an EventError (or of a bare ErrorObject)."""
    if not holder:
        return None
    obj = holder.get("Payload", holder)
    if not isinstance(obj, Mapping):
        return None
    kind, message = obj.get("ErrorType"), obj.get("ErrorMessage")
    text = ": ".join(str(p) for p in (kind, message) if p) or "error"
    return text + (" (truncated)" if holder.get("Truncated") else "")


def _attempt(retry: Mapping[str, Any] | None) -> list[str]:
    if not retry:
        return []
    parts = []
    if retry.get("CurrentAttempt") is not None:
        parts.append(f"attempt {retry['CurrentAttempt']}")
    if retry.get("NextAttemptDelaySeconds") is not None:
        parts.append(f"retry in {retry['NextAttemptDelaySeconds']} s")
    return parts


def _details(event: Mapping[str, Any]) -> str:
    """What an event says, in words: the fields of its `<EventType>Details`."""
    kind = str(event.get("EventType", ""))
    d: Mapping[str, Any] = event.get(f"{kind}Details") or {}
    parts: list[str] = []
    if kind == "ExecutionStarted":
        if d.get("ExecutionTimeout") is not None:
            parts.append(f"timeout {d['ExecutionTimeout']} s")
        if (text := _payload(d.get("Input"))) is not None:
            parts.append(f"input {_cut(text)}")
    elif kind == "WaitStarted":
        if d.get("Duration") is not None:
            parts.append(f"for {d['Duration']} s")
        if d.get("ScheduledEndTimestamp") is not None:
            parts.append(f"until {_when(d['ScheduledEndTimestamp'])}")
    elif kind == "WaitSucceeded":
        if d.get("Duration") is not None:
            parts.append(f"waited {d['Duration']} s")
    elif kind == "CallbackStarted":
        if d.get("CallbackId"):
            parts.append(f"callback id {d['CallbackId']}")
        if d.get("Timeout"):
            parts.append(f"timeout {d['Timeout']} s")
        if d.get("HeartbeatTimeout"):
            parts.append(f"heartbeat {d['HeartbeatTimeout']} s")
    elif kind == "ChainedInvokeStarted":
        if d.get("FunctionName"):
            parts.append(f"invokes {d['FunctionName']}")
        if d.get("DurableExecutionArn"):
            parts.append(f"as {d['DurableExecutionArn']}")
    elif kind in ("ExecutionPaused", "ExecutionResumed"):
        if (reason := _payload(d.get("Reason"))) is not None:
            parts.append(f"reason {_cut(reason)}")
        if d.get("ExecutionTimeoutPaused") is False:
            parts.append("timeout kept running")
    elif kind == "InvocationCompleted":
        start, end = _timestamp(d.get("StartTimestamp")), _timestamp(d.get("EndTimestamp"))
        if d.get("RequestId"):
            parts.append(f"request {d['RequestId']}")
        if start and end:
            parts.append(f"{(end - start).total_seconds() * 1000:.0f} ms")
    parts += _attempt(d.get("RetryDetails"))
    if (text := _payload(d.get("Result"))) is not None:
        parts.append(f"result {_cut(text)}")
    if (text := _error(d.get("Error"))) is not None:
        parts.append(f"error {_cut(text)}")
    return ", ".join(parts)


def timeline_rows(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """The history as rows of (time since the first event, event type, operation, operation
    type, details). The operation is its name, else its id; ExecutionStarted's offset is 0."""
    stamps = [_timestamp(e.get("EventTimestamp")) for e in events]
    start = next((s for s in stamps if s is not None), None)
    rows = []
    for event, ts in zip(events, stamps, strict=True):
        offset = _offset((ts - start).total_seconds()) if ts and start else "-"
        operation = str(event.get("Name") or event.get("Id") or "")
        rows.append(
            (
                offset,
                str(event.get("EventType", "")),
                operation,
                str(event.get("SubType") or ""),
                _details(event),
            )
        )
    return rows


def _pages(
    api: Api, path: str, query: list[tuple[str, str]], key: str
) -> Iterable[Mapping[str, Any]]:
    """Every item of a Marker/NextMarker-paged list operation."""
    marker: str | None = None
    while True:
        params = query + ([("Marker", marker)] if marker else [])
        page = api.call("GET", f"{path}?{urlencode(params)}" if params else path).json()
        yield from page.get(key) or []
        marker = page.get("NextMarker")
        if not marker:
            return


@main.group()
def durable() -> None:
    """Durable executions: list them, show one's history, send callbacks, stop, pause or
    resume one."""


@durable.command(name="list")
@click.argument("function")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only executions in this status (repeatable).",
)
@click.option("--name", default=None, help="Only the executions started with this name.")
@click.option("--qualifier", default=None, help="Only executions of this version or alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the executions as JSON.")
@endpoint_option
def list_executions(
    function: str,
    statuses: tuple[str, ...],
    name: str | None,
    qualifier: str | None,
    as_json: bool,
    endpoint: str,
) -> None:
    """List the durable executions of FUNCTION, newest first."""
    api = Api(endpoint)
    query = [("Statuses", s.upper()) for s in statuses]
    if name:
        query.append(("DurableExecutionName", name))
    if qualifier:
        query.append(("Qualifier", qualifier))
    path = f"{_DURABLE}/functions/{_label(function)}/durable-executions"
    found = list(_pages(api, path, query, "DurableExecutions"))
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    if not found:
        click.echo("no durable executions")
        return
    print_table(
        ("NAME", "STATUS", "STARTED", "ENDED", "EXECUTION ARN"),
        [
            (
                str(e.get("DurableExecutionName", "")),
                str(e.get("Status", "")),
                _when(e.get("StartTimestamp")),
                _when(e.get("EndTimestamp")),
                str(e.get("DurableExecutionArn", "")),
            )
            for e in found
        ],
    )


@durable.command()
@click.argument("arn")
@click.option(
    "--data/--no-data",
    default=True,
    show_default=True,
    help="Include inputs, results and errors (IncludeExecutionData).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the execution and events as JSON.")
@endpoint_option
def show(arn: str, data: bool, as_json: bool, endpoint: str) -> None:
    """Show execution ARN: its status, result or error, and its history as a timeline."""
    api = Api(endpoint)
    flag = "true" if data else "false"
    base = f"{_DURABLE}/durable-executions/{_label(arn)}"
    execution = api.call("GET", f"{base}?IncludeExecutionData={flag}").json()
    events = list(_pages(api, f"{base}/history", [("IncludeExecutionData", flag)], "Events"))
    if as_json:
        click.echo(json.dumps({"Execution": execution, "Events": events}, indent=2, default=str))
        return
    status = str(execution.get("Status", ""))
    colour = {"SUCCEEDED": "green", "RUNNING": "cyan", "PAUSING": "yellow", "PAUSED": "yellow"}.get(
        status, "red"
    )
    click.echo(f"{execution.get('DurableExecutionName', '')}  {click.style(status, fg=colour)}")
    click.echo(f"  function  {execution.get('FunctionArn', '')}")
    click.echo(f"  started   {_when(execution.get('StartTimestamp'))}")
    if execution.get("EndTimestamp") is not None:
        click.echo(f"  ended     {_when(execution.get('EndTimestamp'))}")
    if execution.get("Result") is not None:
        click.echo(f"  result    {_cut(str(execution['Result']), 200)}")
    if (error := _error(execution.get("Error"))) is not None:
        click.echo(f"  error     {_cut(error, 200)}")
    click.echo("")
    if not events:
        click.echo("no events")
        return
    print_table(("TIME", "EVENT", "OPERATION", "TYPE", "DETAILS"), timeline_rows(events))


def _error_object(message: str | None, error_type: str | None, data: str | None) -> dict[str, str]:
    error = {"ErrorMessage": message, "ErrorType": error_type, "ErrorData": data}
    return {k: v for k, v in error.items() if v is not None}


@durable.command()
@click.argument("callback_id")
@click.option(
    "--success",
    "result",
    default=None,
    metavar="RESULT",
    help="Complete the callback with this result, sent as it is (the SDKs hand it to the "
    "function unparsed by default; JSON is usual); '-' reads stdin.",
)
@click.option(
    "--failure",
    "failure",
    default=None,
    metavar="MESSAGE",
    help="Fail the callback with this error message.",
)
@click.option("--error-type", default=None, help="With --failure: the error's type.")
@click.option("--error-data", default=None, help="With --failure: the error's data.")
@click.option(
    "--heartbeat", is_flag=True, help="Tell the execution the callback's work is still alive."
)
@endpoint_option
def callback(
    callback_id: str,
    result: str | None,
    failure: str | None,
    error_type: str | None,
    error_data: str | None,
    heartbeat: bool,
    endpoint: str,
) -> None:
    """Complete callback CALLBACK_ID (--success or --failure) or send it a --heartbeat."""
    if (result is not None) + (failure is not None) + heartbeat != 1:
        _fail("give exactly one of --success RESULT, --failure MESSAGE, --heartbeat")
    if (error_type or error_data) and failure is None:
        _fail("--error-type and --error-data go with --failure")
    api = Api(endpoint)
    path = f"{_DURABLE}/durable-execution-callbacks/{_label(callback_id)}"
    if result is not None:
        if result == "-":
            result = sys.stdin.read()
        api.call("POST", f"{path}/succeed", content=result.encode())
        click.echo(f"{click.style('succeeded', fg='green')} callback {callback_id}")
    elif failure is not None:
        api.call("POST", f"{path}/fail", json_body=_error_object(failure, error_type, error_data))
        click.echo(f"{click.style('failed', fg='yellow')} callback {callback_id}")
    else:
        api.call("POST", f"{path}/heartbeat")
        click.echo(f"heartbeat sent to callback {callback_id}")


@durable.command()
@click.argument("arn")
@click.option("--error-message", default=None, help="The error the execution stops with.")
@click.option("--error-type", default=None, help="The type of that error.")
@endpoint_option
def stop(arn: str, error_message: str | None, error_type: str | None, endpoint: str) -> None:
    """Stop durable execution ARN (it ends STOPPED)."""
    body = _error_object(error_message, error_type, None)
    resp = Api(endpoint).call(
        "POST",
        f"{_DURABLE}/durable-executions/{_label(arn)}/stop",
        json_body=body if body else None,
    )
    when = _when(resp.json().get("StopTimestamp")) if resp.content else "-"
    click.echo(f"{click.style('stopped', fg='yellow')} {arn} at {when}")


@durable.command()
@click.argument("arn")
@click.option("--reason", default=None, help="Why: recorded in the execution's history.")
@click.option(
    "--keep-timeout-running",
    is_flag=True,
    help="Let the execution timeout run on while paused (by default it is extended by the "
    "time spent paused).",
)
@endpoint_option
def pause(arn: str, reason: str | None, keep_timeout_running: bool, endpoint: str) -> None:
    """Pause durable execution ARN: nothing invokes it until it is resumed (its waits and
    callbacks still complete). PAUSING while an invocation runs, then PAUSED."""
    body: dict[str, Any] = {"ExecutionTimeoutPaused": not keep_timeout_running}
    if reason is not None:
        body["Reason"] = reason
    Api(endpoint).call("POST", f"{_DURABLE}/durable-executions/{_label(arn)}/pause", json_body=body)
    click.echo(f"{click.style('paused', fg='yellow')} {arn}")


@durable.command()
@click.argument("arn")
@click.option("--reason", default=None, help="Why: recorded in the execution's history.")
@endpoint_option
def resume(arn: str, reason: str | None, endpoint: str) -> None:
    """Resume paused durable execution ARN (invoked now if it has work to do)."""
    body = {"Reason": reason} if reason is not None else {}
    Api(endpoint).call(
        "POST", f"{_DURABLE}/durable-executions/{_label(arn)}/resume", json_body=body
    )
    click.echo(f"{click.style('resumed', fg='green')} {arn}")
