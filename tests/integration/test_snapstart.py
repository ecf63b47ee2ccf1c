"""SnapStart through the API on the server's real backend: a published version is Pending
(SnapStartNotReadyException) while its template is made, then Active; cold starts are restored
(Restore Duration on the REPORT line, RESTORE_START/RESTORE_REPORT in the log, the init type
`snap-start`, hooks run); an after-restore hook that raises is SnapStartException (400).
Restored environments share the init's module state but not its luck; an update and a
re-publish make a new template, and deleting the old version retires its own. (Isolation: the
sandbox's system tests.)"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Functions, Server, make_zip, wait_for

CODE = """\
import os, random, time
from snapshot_restore_py import register_after_restore, register_before_snapshot

time.sleep(1.5)  # an init slow enough to be seen Pending
TOKEN = random.random()
HOOKS = {"before": 0, "after": 0}


@register_before_snapshot
def before():
    HOOKS["before"] += 1


@register_after_restore
def after():
    global TOKEN
    HOOKS["after"] += 1
    if os.environ.get("FAIL_RESTORE"):
        raise RuntimeError("cannot reconnect")
    TOKEN = random.random()


def handler(event, context):
    return {
        "token": TOKEN,
        "hooks": HOOKS,
        "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "stream": context.log_stream_name,
    }
"""
ON = {"ApplyOn": "PublishedVersions"}


def _active(lam: Any, name: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        c: dict[str, Any] = lam.get_function_configuration(FunctionName=name, Qualifier="1")
        return c if c["State"] != "Pending" else None

    config: dict[str, Any] = wait_for(settled, message="the SnapStart version to settle")
    assert config["State"] == "Active", config
    return config


def test_a_snapstart_version_is_restored(functions: Functions, lam: Any, server: Server) -> None:
    name = functions.create(CODE, runtime="python3.12", SnapStart=ON)["FunctionName"]
    published = lam.publish_version(FunctionName=name)
    assert (published["State"], published["StateReasonCode"]) == ("Pending", "Creating")
    try:
        lam.invoke(FunctionName=name, Qualifier="1")
        raise AssertionError("a Pending SnapStart version was invoked")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "SnapStartNotReadyException"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    _active(lam, name)
    started = time.monotonic()
    first = lam.invoke(FunctionName=name, Qualifier="1", LogType="Tail")
    assert time.monotonic() - started < 1.5, "a restore does not run the init again"
    answer = json.loads(first["Payload"].read())
    assert answer["hooks"] == {"before": 1, "after": 1}
    assert answer["init"] == "snap-start" and answer["stream"] is None
    tail = base64.b64decode(first["LogResult"]).decode()
    report = tail.strip().splitlines()[-1]
    assert "\tRestore Duration: " in report and "\tBilled Restore Duration: " in report
    assert "Init Duration" not in report
    # $LATEST is never snapshotted: its cold start runs the init.
    latest = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert latest["init"] == "on-demand" and latest["hooks"] == {"before": 0, "after": 0}
    logs = server.client("logs")
    group = f"/aws/lambda/{name}"

    def restore_lines() -> list[str] | None:
        events = logs.filter_log_events(logGroupName=group)["events"]
        kinds = [e["message"].split(" ", 1)[0] for e in events]
        kinds = [k for k in kinds if k in ("RESTORE_START", "RESTORE_REPORT", "START")]
        return kinds[:3] if len(kinds) >= 3 else None

    lines = wait_for(restore_lines, message="the restore lines")
    assert lines == ["RESTORE_START", "RESTORE_REPORT", "START"]


def test_a_failing_after_restore_hook_is_snapstart_exception(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(
        CODE,
        runtime="python3.12",
        SnapStart=ON,
        Environment={"Variables": {"FAIL_RESTORE": "1"}},
    )["FunctionName"]
    lam.publish_version(FunctionName=name)
    _active(lam, name)
    try:
        lam.invoke(FunctionName=name, Qualifier="1")
        raise AssertionError("the failed restore was not reported")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "SnapStartException"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert e.response["Error"]["Message"].startswith(
            "The afterRestore() runtime hook encountered an error."
        )


UNIQUE = """\
import random, time
from snapshot_restore_py import register_after_restore, register_before_snapshot

VERSION = "{version}"
INIT_TOKEN = random.random()
INIT_TIME = time.time()
FRESH = None
BEFORE = []


@register_before_snapshot
def before():
    BEFORE.append(1)


@register_after_restore
def regenerate():
    global FRESH
    FRESH = random.random()


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {{
        "version": VERSION, "init_token": INIT_TOKEN, "init_time": INIT_TIME,
        "fresh": FRESH, "before": len(BEFORE), "request": context.aws_request_id,
    }}
"""


def _templates(server: Server) -> float:
    """`lamina_snapstart_templates` from /metrics: the templates this server holds."""
    text = httpx.get(server.endpoint + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lamina_snapstart_templates":
                return float(sample.value)
    raise AssertionError("no lamina_snapstart_templates gauge")


def test_restored_environments_share_the_init_and_are_unique(
    functions: Functions, lam: Any, server: Server
) -> None:
    before = _templates(server)
    name = functions.create(
        UNIQUE.format(version="one"), runtime="python3.12", SnapStart=ON, Timeout=30
    )["FunctionName"]
    lam.publish_version(FunctionName=name)
    _active(lam, name)
    assert _templates(server) == before + 1
    # Two at once: two environments, each restored from the one template.
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: json.loads(
                    lam.invoke(FunctionName=name, Qualifier="1", Payload=b'{"sleep": 1}')[
                        "Payload"
                    ].read()
                ),
                range(2),
            )
        )
    assert {a["version"] for a in answers} == {"one"}
    assert len({a["init_token"] for a in answers}) == 1  # the init ran once, at publish
    assert len({a["init_time"] for a in answers}) == 1
    assert [a["before"] for a in answers] == [1, 1]  # before-snapshot hooks: once
    fresh = {a["fresh"] for a in answers}
    assert None not in fresh and len(fresh) == 2  # after-restore: in each, with its own luck
    # An update and a re-publish: a new template of the new code beside the old version's.
    lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": UNIQUE.format(version="two")})
    )
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    config = wait_for(
        lambda: (
            (c := lam.get_function_configuration(FunctionName=name, Qualifier="2"))
            and c["State"] != "Pending"
            and c
        ),
        message="version 2 to settle",
    )
    assert config["State"] == "Active", config
    assert _templates(server) == before + 2
    second = json.loads(lam.invoke(FunctionName=name, Qualifier="2")["Payload"].read())
    assert second["version"] == "two" and second["init_token"] not in {
        a["init_token"] for a in answers
    }
    # Version 1 deleted: its template is retired.
    lam.delete_function(FunctionName=name, Qualifier="1")
    wait_for(lambda: _templates(server) == before + 1, message="the old template to go")
    again = json.loads(lam.invoke(FunctionName=name, Qualifier="2")["Payload"].read())
    assert again["version"] == "two"
