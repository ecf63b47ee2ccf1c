"""Invocation replay (issue 24): every invocation is recorded on the node that ran it, and
`lamina replay REQUEST_ID` runs it again on new code or another version."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from tests.conftest import (
    SIGNED_HTTP,
    Functions,
    Server,
    lamina,
    lamina_env,
    make_zip,
    wait_for,
)
from tests.integration.test_authorization import new_key

from lamina.cli.signing import Signer

pytestmark = pytest.mark.control_plane

FAILING = """
import os

def handler(event, context):
    print("about to fail on", event["order"])
    raise ValueError("no such order: " + str(event["order"]))
"""

FIXED = """
import os

def handler(event, context):
    print("fixed handler took", event["order"])
    return {"order": event["order"], "greeting": os.environ["GREETING"],
            "client": context.client_context.custom if context.client_context else None}
"""


def record_of(server: Server, request_id: str) -> httpx.Response:
    return SIGNED_HTTP.get(f"{server.endpoint}/lamina/invocations/{request_id}")


def invoke(lam: Any, name: str, payload: dict[str, Any], **kw: Any) -> tuple[str, dict[str, Any]]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert request_id == resp["ResponseMetadata"]["RequestId"]
    return request_id, resp


def test_a_failed_invocation_replayed_on_fixed_code_succeeds(
    server: Server, lam: Any, functions: Functions, tmp_path: Path
) -> None:
    name = functions.create(FAILING, Environment={"Variables": {"GREETING": "hello"}})[
        "FunctionName"
    ]
    context = json.dumps({"custom": {"caller": "test"}}).encode()
    request_id, resp = invoke(
        lam, name, {"order": 41}, ClientContext=base64.b64encode(context).decode()
    )
    assert resp["FunctionError"] == "Unhandled"

    record = record_of(server, request_id)
    assert record.status_code == 200, record.text
    kept = record.json()
    assert kept["functionName"] == name
    assert json.loads(kept["payload"]) == {"order": 41}
    assert json.loads(kept["clientContext"]) == {"custom": {"caller": "test"}}
    assert kept["source"] == "RequestResponse"
    assert kept["outcome"]["status"] == "Unhandled"
    assert kept["outcome"]["errorType"] == "ValueError"

    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "app.py").write_text(FIXED)
    out = lamina("replay", request_id, "--code", str(fixed), "--json", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    both = json.loads(out.stdout)
    old, new = both["recorded"], both["replay"]
    assert old["status"] == "Unhandled" and old["error_type"] == "ValueError"
    assert "no such order: 41" in old["response"]
    assert any("about to fail on 41" in line for line in old["logs"]), old["logs"]
    assert old["logs"][-1].startswith(f"REPORT RequestId: {request_id}")
    assert new["status"] == "Success"
    # The copy has the function's configuration (its environment) and the recorded context.
    assert json.loads(new["response"]) == {
        "order": 41,
        "greeting": "hello",
        "client": {"caller": "test"},
    }
    assert any("fixed handler took 41" in line for line in new["logs"]), new["logs"]
    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert not [n for n in names if n.startswith(f"{name}-replay-")]

    # Side by side, as a person reads it.
    shown = lamina("replay", request_id, "--code", str(fixed), endpoint=server.endpoint)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    status = next(line for line in lines if "Unhandled: ValueError" in line)
    left, _, right = status.partition(" | ")
    assert left.startswith("Unhandled: ValueError") and right.startswith("OK")
    assert any("about to fail on 41" in line and "fixed handler took 41" in line for line in lines)


def test_replay_on_another_version_and_on_the_same_one(
    server: Server, lam: Any, functions: Functions
) -> None:
    good = "def handler(event, context):\n    return {'version': 'one', 'got': event}\n"
    name = functions.create(good)["FunctionName"]
    published = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": FAILING}))
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    request_id, resp = invoke(lam, name, {"order": 7})
    assert resp["FunctionError"] == "Unhandled"

    on_version = lamina(
        "replay", request_id, "--qualifier", published, "--json", endpoint=server.endpoint
    )
    assert on_version.returncode == 0, on_version.stderr
    new = json.loads(on_version.stdout)["replay"]
    assert new["version"] == published
    assert json.loads(new["response"]) == {"version": "one", "got": {"order": 7}}

    again = lamina("replay", request_id, "--json", endpoint=server.endpoint)
    assert again.returncode == 1, again.stderr
    new = json.loads(again.stdout)["replay"]
    assert new["status"] == "Unhandled" and new["version"] == "$LATEST"

    both = lamina("replay", request_id, "--qualifier", "1", "--code", ".", endpoint=server.endpoint)
    assert both.returncode == 2 and "cannot be used together" in both.stderr


def test_an_async_invocation_is_recorded_and_replayable(
    server: Server, lam: Any, functions: Functions
) -> None:
    echo = "def handler(event, context):\n    print('event', event)\n    return event\n"
    name = functions.create(echo)["FunctionName"]
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 3}')
    request_id = resp["ResponseMetadata"]["RequestId"]

    def recorded() -> dict[str, Any] | None:
        got = record_of(server, request_id)
        return got.json() if got.status_code == 200 else None

    kept = wait_for(recorded, message="the async invocation's record")
    assert kept["source"] == "Event" and kept["attempt"] == 1
    assert kept["outcome"]["status"] == "Success"
    out = lamina("replay", request_id, "--json", endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    both = json.loads(out.stdout)
    assert both["recorded"]["status"] == "Success"
    assert json.loads(both["replay"]["response"]) == {"n": 3}


def test_an_unknown_request_id_is_a_clear_error(server: Server) -> None:
    unknown = str(uuid.uuid4())
    out = lamina("replay", unknown, endpoint=server.endpoint)
    assert out.returncode != 0
    assert "ResourceNotFoundException" in out.stderr and unknown in out.stderr
    bad = record_of(server, "not%20an%20id")
    assert bad.status_code == 400
    assert bad.headers["x-amzn-ErrorType"] == "ValidationException"


def test_a_key_reads_only_the_records_of_functions_it_may(
    server: Server, lam: Any, functions: Functions, tmp_path: Path
) -> None:
    echo = "def handler(event, context):\n    return event\n"
    mine = functions.create(echo)["FunctionName"]
    other = functions.create(echo)["FunctionName"]
    mine_id, _ = invoke(lam, mine, {"a": 1})
    other_id, _ = invoke(lam, other, {"b": 2})
    key = new_key(
        server,
        tmp_path,
        {
            "Effect": "Allow",
            "Action": "lamina:GetInvocation",
            "Resource": f"arn:aws:lambda:us-east-1:000000000000:function:{mine}",
        },
    )
    signer = Signer("", Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "us-east-1")
    with httpx.Client(auth=signer, timeout=5.0) as user:
        allowed = user.get(f"{server.endpoint}/lamina/invocations/{mine_id}")
        assert allowed.status_code == 200, allowed.text
        assert json.loads(allowed.json()["payload"]) == {"a": 1}
        denied = user.get(f"{server.endpoint}/lamina/invocations/{other_id}")
        assert denied.status_code == 403
        assert denied.headers["x-amzn-ErrorType"] == "AccessDeniedException"
        assert "lamina:GetInvocation" in denied.text
        assert '"b"' not in denied.text


def test_retention_zero_records_nothing(own_server: Callable[..., Server]) -> None:
    srv = own_server(None, "--replay-retention", "0")
    lam = srv.client()
    fns = Functions(lam)  # the server goes with the test: no clean-up
    name = fns.create("def handler(event, context):\n    return 1\n")["FunctionName"]
    request_id, _ = invoke(lam, name, {})
    got = record_of(srv, request_id)
    assert got.status_code == 404
    assert "--replay-retention 0" in got.json()["Message"]
    replay_dir = srv.data_dir / "replay"
    assert not replay_dir.exists() or not list(replay_dir.iterdir())


def test_records_expire_and_files_are_private(own_server: Callable[..., Server]) -> None:
    srv = own_server(None, "--replay-retention", "2s")
    lam = srv.client()
    fns = Functions(lam)  # the server goes with the test: no clean-up
    name = fns.create("def handler(event, context):\n    return 1\n")["FunctionName"]
    request_id, _ = invoke(lam, name, {"secret": "payload"})
    assert record_of(srv, request_id).status_code == 200
    replay_dir = srv.data_dir / "replay"
    assert stat.S_IMODE(replay_dir.stat().st_mode) == 0o700
    segments = list(replay_dir.iterdir())
    assert segments
    for segment in segments:
        assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    wait_for(lambda: record_of(srv, request_id).status_code == 404, 10, "the record to expire")
    # The sweeper follows the retention: the segment goes within a second or so.
    wait_for(lambda: not list(replay_dir.iterdir()), 10, "the expired segment to go")


def test_the_options_are_checked() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--replay-retention", "soon"],
        capture_output=True,
        text=True,
        env=lamina_env("http://127.0.0.1:1"),
        timeout=60,
    )
    assert out.returncode == 2
    assert "--replay-retention" in out.stderr
