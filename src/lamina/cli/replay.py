"""`lamina replay REQUEST_ID [--code DIR | --qualifier Q]`: run a past invocation again.

The server keeps each invocation's request and outcome for a while (`--replay-retention`,
see docs/replay.md). This command fetches the record (`GET /lamina/invocations/ID`), invokes
the function again with the recorded payload, ClientContext and tenant id — as recorded
(the same qualifier), on another version or alias (`--qualifier`), or on new code (`--code
DIR`: a temporary copy of the function, with the recorded version's configuration and DIR's
code, deleted afterwards, also on failure or Ctrl-C) — and shows the recorded and the new
outcome side by side: status, duration, result and log lines. The recorded invocation's log
lines come from the Logs API (its START to REPORT lines in its log stream); the new one's
from the Tail of its own log (LogType=Tail: the last 4 KB, as Lambda returns it).

Exit status: 0 when the replay succeeded, 1 when it failed (a function error).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import sys
import textwrap
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from lamina.cli.logs import LogsClient

from lamina.cli.main import _FN, Api, _fail, _wait_ready, _zip_path, endpoint_option, main

#: configuration members a `--code` copy takes from the recorded version (as
#: GetFunctionConfiguration names them, CreateFunction takes them)
_COPIED = (
    "Runtime",
    "Handler",
    "Role",
    "MemorySize",
    "Timeout",
    "Architectures",
    "EphemeralStorage",
    "TracingConfig",
    "Description",
)
_NAME_MAX = 64
_DURATION = re.compile(r"\bDuration: ([0-9.]+) ms")
#: seconds to wait for the recorded invocation's log lines to reach the store
_LOG_WAIT_S = 3.0


@dataclass
class Side:
    """One outcome: the recorded one or the replay's."""

    label: str
    status: str
    error_type: str | None = None
    duration_ms: float | None = None
    version: str | None = None
    response: str = ""
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "Success"

    def status_line(self) -> str:
        if self.ok:
            head = "OK"
        elif self.error_type:
            head = f"{self.status}: {self.error_type}"
        else:
            head = self.status
        if self.duration_ms is not None:
            head += f"  {self.duration_ms:.1f} ms"
        return head


@main.command()
@click.argument("request_id")
@click.option(
    "--code",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Run it on this code (a directory or zip) in a temporary copy of the function.",
)
@click.option(
    "--qualifier", default=None, help="Run it on this version or alias [default: as recorded]."
)
@click.option("--json", "as_json", is_flag=True, help="Print both outcomes as JSON.")
@endpoint_option
def replay(
    request_id: str, code: Path | None, qualifier: str | None, as_json: bool, endpoint: str
) -> None:
    """Run invocation REQUEST_ID again and show the recorded and new outcomes side by side."""
    if code is not None and qualifier is not None:
        raise click.UsageError("--code and --qualifier cannot be used together")
    # Imported here: `lamina.cli.logs` imports `main`, which imports this module.
    from lamina.cli.logs import LogsClient

    api = Api(endpoint)
    found = api.call("GET", f"/lamina/invocations/{request_id}", ok_missing=True)
    if found.status_code == 404:
        message = found.json().get("Message", "") if found.content else ""
        _fail(f"ResourceNotFoundException: {message or f'no record of {request_id}'}")
    record: dict[str, Any] = found.json()
    name = str(record["functionName"])
    old = _recorded(record, LogsClient(endpoint))
    if code is not None:
        new = _replay_on_code(api, record, code)
    else:
        asked = qualifier or record.get("qualifier")
        new = _invoke(api, name, asked, record, f"replay ({asked or '$LATEST'})")
    if as_json:
        click.echo(
            json.dumps(
                {"requestId": request_id, "recorded": asdict(old), "replay": asdict(new)}, indent=2
            )
        )
    else:
        _print_side_by_side(old, new)
    sys.exit(0 if new.ok else 1)


# -- the recorded side ------------------------------------------------------------------


def _recorded(record: dict[str, Any], logs: LogsClient) -> Side:
    outcome = record.get("outcome") or {}
    version = outcome.get("executedVersion")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(record.get("time", 0))))
    return Side(
        label=f"recorded ({version}, {record.get('source')}, {when} UTC)",
        status=str(outcome.get("status", "Error")),
        error_type=outcome.get("errorType"),
        duration_ms=outcome.get("durationMs"),
        version=version,
        response=_pretty(_payload(outcome, "response")),
        logs=_recorded_logs(logs, record),
    )


def _recorded_logs(client: LogsClient, record: dict[str, Any]) -> list[str]:
    """The recorded invocation's log lines: its stream's events from its START line to its
    REPORT line (an environment runs one invocation at a time, so the lines between are
    its own, the function's unprefixed prints included)."""
    from lamina.cli.logs import _GroupMissing

    request_id = str(record["requestId"])
    group = client.log_group(str(record["functionName"]))
    start_ms = int(float(record.get("time", 0)) * 1000) - 1000
    deadline = time.monotonic() + _LOG_WAIT_S
    while True:
        try:
            lines = _lines_between(client, group, request_id, start_ms)
        except _GroupMissing:
            lines = []
        except SystemExit:  # the Logs API refused (its error is printed): replay without them
            return ["(the recorded log lines could not be read)"]
        if (lines and lines[-1].startswith("REPORT")) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def _lines_between(client: LogsClient, group: str, request_id: str, start_ms: int) -> list[str]:
    found = client.call(
        "FilterLogEvents",
        {"logGroupName": group, "startTime": start_ms, "filterPattern": f'"{request_id}"'},
    )
    starts = [
        e
        for e in found.get("events", [])
        if str(e.get("message", "")).startswith(f"START RequestId: {request_id}")
    ]
    if not starts:
        return []
    start = starts[-1]  # the last attempt's
    body: dict[str, Any] = {
        "logGroupName": group,
        "logStreamNames": [start["logStreamName"]],
        "startTime": int(start["timestamp"]),
    }
    lines: list[str] = []
    seen_start = False
    while True:
        page = client.call("FilterLogEvents", body)
        for event in page.get("events", []):
            message = str(event.get("message", "")).rstrip("\n")
            if event.get("eventId") == start.get("eventId"):
                seen_start = True
            if not seen_start:
                continue
            lines.append(message)
            if message.startswith(f"REPORT RequestId: {request_id}"):
                return lines
        token = page.get("nextToken")
        if not token:
            return lines
        body["nextToken"] = token


# -- the new side -----------------------------------------------------------------------


def _invoke(api: Api, name: str, qualifier: str | None, record: dict[str, Any], label: str) -> Side:
    headers = {"X-Amz-Log-Type": "Tail"}
    if record.get("clientContext"):
        headers["X-Amz-Client-Context"] = base64.b64encode(
            str(record["clientContext"]).encode()
        ).decode()
    if record.get("tenantId"):
        headers["X-Amz-Tenant-Id"] = str(record["tenantId"])
    resp = api.call(
        "POST",
        f"{_FN}/{name}/invocations",
        content=_payload(record, "payload"),
        params={"Qualifier": qualifier} if qualifier else None,
        headers=headers,
    )
    tail = base64.b64decode(resp.headers.get("X-Amz-Log-Result", "")).decode(errors="replace")
    logs = tail.splitlines()
    duration = next((float(m[1]) for line in logs if (m := _DURATION.search(line))), None)
    function_error = resp.headers.get("X-Amz-Function-Error")
    error_type = None
    if function_error:
        try:
            error_type = json.loads(resp.content).get("errorType")
        except (ValueError, AttributeError):
            error_type = None
    return Side(
        label=label,
        status=function_error or "Success",
        error_type=error_type,
        duration_ms=duration,
        version=resp.headers.get("X-Amz-Executed-Version"),
        response=_pretty(resp.content),
        logs=logs,
    )


def _replay_on_code(api: Api, record: dict[str, Any], code: Path) -> Side:
    """Invoke a temporary copy of the recorded version with `code`; the copy is deleted
    however this ends."""
    name = str(record["functionName"])
    version = (record.get("outcome") or {}).get("executedVersion") or "$LATEST"
    config: dict[str, Any] = api.call(
        "GET", f"{_FN}/{name}/configuration", params={"Qualifier": version}
    ).json()
    if config.get("PackageType") == "Image":
        _fail(f"{name} is a container image function: --code replays zip functions only")
    zipped = _zip_path(code)
    suffix = f"-replay-{uuid.uuid4().hex[:8]}"
    temp = name[: _NAME_MAX - len(suffix)] + suffix
    body: dict[str, Any] = {
        "FunctionName": temp,
        "PackageType": "Zip",
        "Code": {"ZipFile": base64.b64encode(zipped).decode()},
    }
    body.update({key: config[key] for key in _COPIED if config.get(key) is not None})
    variables = (config.get("Environment") or {}).get("Variables")
    if variables:
        body["Environment"] = {"Variables": variables}
    layers = [layer["Arn"] for layer in config.get("Layers") or [] if layer.get("Arn")]
    if layers:
        body["Layers"] = layers
    try:
        api.call("POST", _FN, json_body=body)
        _wait_ready(api, temp)
        return _invoke(api, temp, None, record, f"replay (code {code}, as {temp})")
    finally:
        api.call("DELETE", f"{_FN}/{temp}", ok_missing=True)


# -- output ------------------------------------------------------------------------------


def _payload(holder: dict[str, Any], key: str) -> bytes:
    """A record's payload (`payload`, or the outcome's `response`) as bytes, however it was
    kept (text, or base64 under `<key>Base64`)."""
    if holder.get(key + "Base64"):
        return base64.b64decode(holder[key + "Base64"])
    value = holder.get(key)
    return value.encode() if isinstance(value, str) else b""


def _pretty(data: bytes) -> str:
    text = data.decode(errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text


def _print_side_by_side(old: Side, new: Side) -> None:
    width = max(40, shutil.get_terminal_size((120, 24)).columns)
    column = (width - 3) // 2
    color = sys.stdout.isatty()

    def rows(left: list[str], right: list[str]) -> None:
        wrapped_left = _wrap(left, column)
        wrapped_right = _wrap(right, column)
        for a, b in itertools.zip_longest(wrapped_left, wrapped_right, fillvalue=""):
            click.echo(f"{a:<{column}} | {b}".rstrip())

    def status(side: Side) -> str:
        line = side.status_line()
        if not color:
            return line
        return click.style(line, fg="green" if side.ok else "red")

    rows([old.label], [new.label])
    left, right = _wrap([old.status_line()], column), _wrap([new.status_line()], column)
    # Styled separately: padding counts the visible characters, not the colour codes.
    for a, b in itertools.zip_longest(left, right, fillvalue=""):
        pad = " " * (column - len(a))
        shown_a = status(old) if a == old.status_line() else a
        shown_b = status(new) if b == new.status_line() else b
        click.echo(f"{shown_a}{pad} | {shown_b}".rstrip())
    click.echo("-" * column + "-+-" + "-" * column)
    rows(["result:", *old.response.splitlines()], ["result:", *new.response.splitlines()])
    click.echo("-" * column + "-+-" + "-" * column)
    rows(["logs:", *old.logs], ["logs:", *new.logs])


def _wrap(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        line = line.expandtabs(4).replace("\r", " ")
        out.extend(textwrap.wrap(line, width, drop_whitespace=False) or [""])
    return out
