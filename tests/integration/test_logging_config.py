"""LoggingConfig: the JSON log format (the runtimes' JSON records and Lambda's `platform.*`
records), application and system log levels, a custom log group, and their validation, read
back with boto3's `logs` client."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from typing import Any

import pytest
from tests.conftest import Functions, Server, lamina

PYTHON = """
import json, logging, os, time
log = logging.getLogger("app")

def handler(event, context):
    tag = event["tag"]
    log.debug("debug %s", tag)
    log.info("info %s", tag, extra={"order": 42})
    log.warning("warn %s", tag)
    print(f"printed {tag}")
    print(json.dumps({"level": "debug", "message": f"json-debug {tag}"}))
    print(json.dumps({"level": "ERROR", "message": f"json-error {tag}"}))
    if event.get("raise"):
        raise ValueError(f"boom {tag}")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {k: os.environ.get(k) for k in (
        "AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_LOG_LEVEL", "AWS_LAMBDA_LOG_GROUP_NAME")}
"""

NODE = """
exports.handler = async (event) => {
  console.debug(`debug ${event.tag}`);
  console.log(`log ${event.tag}`);
  console.warn(`warn ${event.tag}`);
  console.error(`error ${event.tag}`);
  return process.env.AWS_LAMBDA_LOG_LEVEL ?? null;
};
"""


@pytest.fixture(scope="module")
def logs(server: Server) -> Any:
    return server.client("logs")


def invoke(lam: Any, name: str, **event: Any) -> tuple[str, Any, dict[str, Any]]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return resp["ResponseMetadata"]["RequestId"], json.loads(resp["Payload"].read()), resp


def messages(logs: Any, group: str, until: str, timeout: float = 15.0) -> list[str]:
    """Every message of the group once one containing `until` is there."""
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        try:
            pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
            found = [e["message"] for page in pages for e in page["events"]]
        except logs.exceptions.ResourceNotFoundException:
            found = []
        if any(until in m for m in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"nothing with {until!r} in {group}: {found[-8:]}")


def records(found: list[str]) -> list[dict[str, Any]]:
    out = []
    for message in found:
        try:
            value = json.loads(message)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def platform(found: list[str], kind: str, request_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records(found)
        if r.get("type") == kind and r.get("record", {}).get("requestId") == request_id
    ]


def test_default_is_text_in_the_functions_own_group(functions: Functions, lam: Any) -> None:
    created = functions.create(PYTHON)
    name = created["FunctionName"]
    assert created["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    _, result, _ = invoke(lam, name, tag="t")
    assert result == {
        "AWS_LAMBDA_LOG_FORMAT": None,
        "AWS_LAMBDA_LOG_LEVEL": None,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
    }


def test_json_format_python(functions: Functions, lam: Any, logs: Any) -> None:
    created = functions.create(PYTHON, LoggingConfig={"LogFormat": "JSON"})
    name = created["FunctionName"]
    # Lambda's levels when JSON is asked for without them.
    assert created["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
        "LogGroup": f"/aws/lambda/{name}",
    }
    tag = uuid.uuid4().hex[:8]
    rid, result, _ = invoke(lam, name, tag=tag)
    assert result["AWS_LAMBDA_LOG_FORMAT"] == "JSON"
    assert result["AWS_LAMBDA_LOG_LEVEL"] == "INFO"
    found = messages(logs, f"/aws/lambda/{name}", '"platform.report"')
    app = {r.get("message"): r for r in records(found) if "level" in r}

    info = app[f"info {tag}"]
    assert info["level"] == "INFO"
    assert info["logger"] == "app"
    assert info["requestId"] == rid
    assert info["order"] == 42  # a field given with extra=
    assert info["timestamp"].endswith("Z")
    assert app[f"warn {tag}"]["level"] == "WARN"
    assert f"debug {tag}" not in app  # under INFO: the root logger's level is INFO
    assert f"json-debug {tag}" not in app  # a JSON line with a level under INFO is dropped
    assert app[f"json-error {tag}"]["level"] == "ERROR"
    assert f"printed {tag}" in found  # print stays plain text, INFO

    # JSON filter patterns pick records by their fields.
    hits = logs.filter_log_events(
        logGroupName=f"/aws/lambda/{name}",
        filterPattern=f'{{ $.level = "WARN" && $.requestId = "{rid}" }}',
    )["events"]
    assert [json.loads(e["message"])["message"] for e in hits] == [f"warn {tag}"]
    reports = logs.filter_log_events(
        logGroupName=f"/aws/lambda/{name}",
        filterPattern='{ $.type = "platform.report" && $.record.metrics.billedDurationMs >= 1 }',
    )["events"]
    assert len(reports) == 1

    (start,) = platform(found, "platform.start", rid)
    assert start["record"]["version"] == "$LATEST"
    (report,) = platform(found, "platform.report", rid)
    metrics = report["record"]["metrics"]
    assert report["record"]["status"] == "success"
    assert metrics["memorySizeMB"] == 128
    assert metrics["billedDurationMs"] >= max(1, int(metrics["durationMs"]))
    assert metrics["maxMemoryUsedMB"] >= 0
    # DEBUG system records are not sent at INFO, nor are the text lines.
    assert not platform(found, "platform.runtimeDone", rid)
    assert not any(m.startswith(("START RequestId", "END RequestId", "REPORT")) for m in found)


def test_levels_filter_application_and_system_logs(
    functions: Functions, lam: Any, logs: Any
) -> None:
    name = functions.create(
        PYTHON,
        LoggingConfig={
            "LogFormat": "JSON",
            "ApplicationLogLevel": "WARN",
            "SystemLogLevel": "WARN",
        },
    )["FunctionName"]
    tag = uuid.uuid4().hex[:8]
    rid, result, _ = invoke(lam, name, tag=tag)
    assert result["AWS_LAMBDA_LOG_LEVEL"] == "WARN"
    found = messages(logs, f"/aws/lambda/{name}", f"json-error {tag}")
    text = "\n".join(found)
    assert f"warn {tag}" in text
    for gone in (f"info {tag}", f"printed {tag}", f"debug {tag}"):
        assert gone not in text, found
    # The system records are INFO and DEBUG: none at WARN.
    assert not any('"platform.' in m for m in found), found

    lam.update_function_configuration(
        FunctionName=name,
        LoggingConfig={"ApplicationLogLevel": "DEBUG", "SystemLogLevel": "DEBUG"},
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    tag = uuid.uuid4().hex[:8]
    rid, _, _ = invoke(lam, name, tag=tag)
    found = messages(logs, f"/aws/lambda/{name}", '"platform.report"')
    app = {r.get("message"): r for r in records(found) if "level" in r}
    assert app[f"debug {tag}"]["level"] == "DEBUG"
    assert app[f"json-debug {tag}"]["level"] == "debug"
    (done,) = platform(found, "platform.runtimeDone", rid)
    assert done["record"]["status"] == "success"


def test_json_errors_and_timeouts(functions: Functions, lam: Any, logs: Any) -> None:
    name = functions.create(PYTHON, Timeout=1, LoggingConfig={"LogFormat": "JSON"})["FunctionName"]
    tag = uuid.uuid4().hex[:8]
    rid, result, resp = invoke(lam, name, tag=tag, **{"raise": True})
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "ValueError"
    found = messages(logs, f"/aws/lambda/{name}", '"platform.report"')
    (error,) = [r for r in records(found) if r.get("errorType") == "ValueError"]
    assert error["level"] == "ERROR"
    assert error["errorMessage"] == f"boom {tag}"
    assert error["requestId"] == rid
    assert any("raise ValueError" in frame for frame in error["stackTrace"])

    rid, result, _ = invoke(lam, name, tag=tag, sleep=5)
    assert result["errorType"] == "Sandbox.Timedout"
    deadline = time.monotonic() + 15
    while not platform(found, "platform.report", rid) and time.monotonic() < deadline:
        found = messages(logs, f"/aws/lambda/{name}", '"platform.report"')
    (report,) = platform(found, "platform.report", rid)
    assert report["record"]["status"] == "timeout"
    assert report["record"]["metrics"]["durationMs"] >= 900  # the 1 s timeout, give or take a tick


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_json_format_node(functions: Functions, lam: Any, logs: Any) -> None:
    name = functions.create(
        {"index.js": NODE},
        handler="index.handler",
        runtime="nodejs20.x",
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"},
    )["FunctionName"]
    tag = uuid.uuid4().hex[:8]
    rid, result, _ = invoke(lam, name, tag=tag)
    assert result == "WARN"
    found = messages(logs, f"/aws/lambda/{name}", '"platform.report"')
    app = {r["message"]: r for r in records(found) if "level" in r}
    assert app[f"warn {tag}"]["level"] == "WARN"
    assert app[f"error {tag}"]["level"] == "ERROR"
    assert app[f"error {tag}"]["requestId"] == rid
    assert f"log {tag}" not in app and f"debug {tag}" not in app
    assert platform(found, "platform.start", rid)  # SystemLogLevel stayed INFO


def test_custom_log_group_shared_by_two_functions(
    functions: Functions, lam: Any, logs: Any, server: Server
) -> None:
    group = f"/lamina-test/shared-{uuid.uuid4().hex[:8]}"
    one = functions.create(PYTHON, LoggingConfig={"LogGroup": group})
    assert one["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": group}
    two = functions.create(PYTHON, LoggingConfig={"LogGroup": group})
    _, result, _ = invoke(lam, one["FunctionName"], tag="one")
    assert result["AWS_LAMBDA_LOG_GROUP_NAME"] == group
    invoke(lam, two["FunctionName"], tag="two")
    found = messages(logs, group, "printed two")
    assert "printed one" in found
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.filter_log_events(logGroupName=f"/aws/lambda/{one['FunctionName']}")
    # `lamina logs` reads the function's own group.
    out = lamina("logs", one["FunctionName"], "--since", "10m", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    assert "printed one" in out.stdout

    # Back to the default group: the next environment writes there.
    lam.update_function_configuration(
        FunctionName=one["FunctionName"],
        LoggingConfig={"LogGroup": f"/aws/lambda/{one['FunctionName']}"},
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=one["FunctionName"])
    invoke(lam, one["FunctionName"], tag="back")
    assert "printed back" in messages(logs, f"/aws/lambda/{one['FunctionName']}", "printed back")


def test_updates_merge_and_text_drops_levels(functions: Functions, lam: Any) -> None:
    name = functions.create(
        PYTHON,
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "ERROR"},
    )["FunctionName"]
    got = lam.update_function_configuration(
        FunctionName=name, LoggingConfig={"LogGroup": "/lamina-test/merged"}
    )["LoggingConfig"]
    assert got == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "ERROR",
        "SystemLogLevel": "INFO",
        "LogGroup": "/lamina-test/merged",
    }
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    got = lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "Text"})
    assert got["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/lamina-test/merged"}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert (
        lam.get_function_configuration(FunctionName=name)["LoggingConfig"] == (got["LoggingConfig"])
    )
    # A logging change is a change of configuration: it publishes a new version.
    first = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "JSON"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    second = lam.publish_version(FunctionName=name)
    assert second["Version"] != first
    assert second["LoggingConfig"]["LogFormat"] == "JSON"
    v1 = lam.get_function_configuration(FunctionName=name, Qualifier=first)
    assert v1["LoggingConfig"]["LogFormat"] == "Text"


@pytest.mark.parametrize(
    ("config", "error", "words"),
    [
        ({"LogFormat": "Yaml"}, "ValidationException", "loggingConfig.logFormat"),
        (
            {"LogFormat": "JSON", "ApplicationLogLevel": "LOUD"},
            "ValidationException",
            "loggingConfig.applicationLogLevel",
        ),
        (
            {"LogFormat": "JSON", "SystemLogLevel": "TRACE"},
            "ValidationException",
            "loggingConfig.systemLogLevel",
        ),
        ({"LogGroup": "has space"}, "ValidationException", "loggingConfig.logGroup"),
        ({"LogGroup": "x" * 513}, "ValidationException", "loggingConfig.logGroup"),
        (
            {"ApplicationLogLevel": "DEBUG"},
            "InvalidParameterValueException",
            'LogLevel is not supported when LogFormat is set to "Text"',
        ),
        (
            {"LogFormat": "Text", "SystemLogLevel": "WARN"},
            "InvalidParameterValueException",
            'LogLevel is not supported when LogFormat is set to "Text"',
        ),
    ],
)
def test_bad_logging_config_is_refused_and_nothing_is_created(
    functions: Functions, lam: Any, config: dict[str, str], error: str, words: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    with pytest.raises(lam.exceptions.ClientError) as caught:
        functions.create(PYTHON, FunctionName=name, LoggingConfig=config)
    assert caught.value.response["Error"]["Code"] == error
    assert words in caught.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_bad_update_changes_nothing(functions: Functions, lam: Any) -> None:
    name = functions.create(PYTHON)["FunctionName"]
    before = lam.get_function_configuration(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(
            FunctionName=name, LoggingConfig={"SystemLogLevel": "DEBUG"}
        )
    after = lam.get_function_configuration(FunctionName=name)
    assert after["LoggingConfig"] == before["LoggingConfig"]
    assert after["RevisionId"] == before["RevisionId"]
