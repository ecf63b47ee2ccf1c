"""Log capture: every line a function writes lands in the log store, as one event of group
`/aws/lambda/NAME` and the environment's stream, framed by START/END/REPORT, whatever becomes
of the function. Read straight from `<data-dir>/logs.db` (read-only)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from typing import Any

import pytest
from tests.conftest import Functions, Server

DROPPED = re.compile(r"\[lamina: \d+ log lines \((\d+) bytes\) dropped: [^\]]+\]")


def stored(
    server: Server, group: str, until: str, timeout: float = 15.0
) -> list[tuple[str, int, str]]:
    """(stream, timestamp, message) of every event of a group, in the store's order, once an
    event starting with `until` is there."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[str, int, str]] = []
    while time.monotonic() < deadline:
        db = server.data_dir / "logs.db"
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                rows = conn.execute(
                    "SELECT s.name, e.timestamp_ms, e.message FROM log_events e "
                    "JOIN log_streams s ON s.id = e.stream_id "
                    "JOIN log_groups g ON g.id = e.group_id WHERE g.name = ? "
                    "ORDER BY e.timestamp_ms, e.id",
                    (group,),
                ).fetchall()
            conn.close()
            if any(m.startswith(until) for _, _, m in rows):
                return rows
        time.sleep(0.1)
    raise AssertionError(f"no event starting {until!r} in {group}: {rows[-5:]}")


def invoke(lam: Any, name: str, payload: Any = None) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    body = resp["Payload"].read()
    try:
        return resp, json.loads(body)
    except ValueError:
        return resp, body


def between(messages: list[str], rid: str) -> list[str]:
    start = messages.index(next(m for m in messages if m.startswith(f"START RequestId: {rid}")))
    end = messages.index(f"END RequestId: {rid}")
    return messages[start + 1 : end]


PRINTS = """
import os, sys
print("init line")
def handler(event, context):
    for i in range(event.get("n", 3)):
        print("line", i)
    print("to stderr", file=sys.stderr)
    sys.stdout.write("no newline at the end")
    sys.stdout.flush()
    return os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
"""


def test_python_prints_land_in_the_group_and_stream(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create(PRINTS, MemorySize=256)["FunctionName"]
    resp1, stream = invoke(lam, name, {"n": 3})
    resp2, stream2 = invoke(lam, name, {"n": 2})
    assert stream == stream2
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]+", stream)
    rid1 = resp1["ResponseMetadata"]["RequestId"]
    rid2 = resp2["ResponseMetadata"]["RequestId"]
    rows = stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid2}")
    assert {s for s, _, _ in rows} == {stream}
    timestamps = [t for _, t, _ in rows]
    assert timestamps == sorted(timestamps)
    assert abs(timestamps[-1] / 1000 - time.time()) < 60
    messages = [m for _, _, m in rows]
    assert messages[0] == "init line"
    assert messages[1] == f"START RequestId: {rid1} Version: $LATEST"
    assert between(messages, rid1) == [
        "line 0",
        "line 1",
        "line 2",
        "to stderr",
        "no newline at the end",
    ]
    assert between(messages, rid2) == ["line 0", "line 1", "to stderr", "no newline at the end"]
    report = messages[messages.index(f"END RequestId: {rid1}") + 1]
    assert report.startswith(f"REPORT RequestId: {rid1}\tDuration: ")
    assert "\tInit Duration: " in report and report.endswith("\t")
    assert messages[-1].startswith(f"REPORT RequestId: {rid2}\t")


def test_node_console_log_lands_in_the_store(
    functions: Functions, lam: Any, server: Server
) -> None:
    code = (
        "console.log('node init');\n"
        "exports.handler = async (event) => {\n"
        "  for (let i = 0; i < 3; i++) console.log('node line ' + i);\n"
        "  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
        "};\n"
    )
    name = functions.create({"index.js": code}, handler="index.handler", runtime="nodejs20.x")[
        "FunctionName"
    ]
    resp, stream = invoke(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    rows = stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid}")
    assert {s for s, _, _ in rows} == {stream}
    messages = [m for _, _, m in rows]
    assert any(
        m.endswith("\tINFO\tnode init")
        for m in messages[: messages.index(f"START RequestId: {rid} Version: $LATEST")]
    )
    body = between(messages, rid)
    assert [m.split("\t", 3)[1:] for m in body] == [
        [rid, "INFO", f"node line {i}"] for i in range(3)
    ]


FAILING = """
import os, sys, time
def handler(event, context):
    for i in range(100):
        print("before", i)
    do = event["do"]
    if do == "exit":
        os._exit(3)
    if do == "sleep":
        time.sleep(30)
    if do == "hog":
        hog = []  # 1 GB: past the watched MemorySize, and past the hard limit if it is missed
        for _ in range(128):
            hog.append(bytearray(8 * 1024 * 1024))
            time.sleep(0.01)
    return "ok"
"""


@pytest.mark.parametrize(
    ("do", "status"),
    [("exit", "error"), ("sleep", "timeout"), ("hog", "error")],
    ids=["crash", "timeout", "out-of-memory"],
)
def test_lines_before_a_failure_are_kept(
    do: str, status: str, functions: Functions, lam: Any, server: Server
) -> None:
    # At 128 MB the function has 7% of a CPU: on a loaded machine the hog needs more than
    # 2 s to reach its limit, so only the sleeper gets the short timeout it is there to meet.
    timeout = 2 if do == "sleep" else 20
    name = functions.create(FAILING, MemorySize=128, Timeout=timeout)["FunctionName"]
    resp, _ = invoke(lam, name, {"do": do})
    assert resp["FunctionError"] == "Unhandled"
    rid = resp["ResponseMetadata"]["RequestId"]
    rows = stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid}")
    messages = [m for _, _, m in rows]
    body = between(messages, rid)
    assert [m for m in body if m.startswith("before ")] == [f"before {i}" for i in range(100)]
    report = messages[-1]
    assert report.startswith(f"REPORT RequestId: {rid}\t")
    assert f"Status: {status}" in report
    if do == "sleep":
        assert any("Task timed out after 2.00 seconds" in m for m in body)


FLOOD_MB = 24
FLOOD = f"""
import sys
def handler(event, context):
    sys.stdout.write(("y" * 1023 + "\\n") * ({FLOOD_MB} * 1024))
    sys.stdout.flush()
    return "done"
"""


def test_a_flood_is_capped_with_a_marker_and_the_server_answers(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create(FLOOD, MemorySize=512, Timeout=60)["FunctionName"]
    resp, out = invoke(lam, name)
    assert out == "done"
    rid = resp["ResponseMetadata"]["RequestId"]
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    rows = stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid}", timeout=60)
    messages = [m for _, _, m in rows]
    body = between(messages, rid)
    kept = [m for m in body if m.startswith("y")]
    assert all(m == "y" * 1023 for m in kept)
    markers = [DROPPED.fullmatch(m) for m in body if m.startswith("[lamina:")]
    assert markers and all(markers)
    dropped = sum(int(m[1]) for m in markers if m)
    assert dropped > 0
    # Every byte is either stored or counted as dropped.
    assert len(kept) * 1024 + dropped == FLOOD_MB * 1024 * 1024
    # And the server still runs functions.
    again, _ = invoke(lam, functions.create(PRINTS)["FunctionName"])
    assert "FunctionError" not in again


def test_every_line_in_order(functions: Functions, lam: Any, server: Server) -> None:
    code = "def handler(e, c):\n    for i in range(20000):\n        print('row', i)\n"
    name = functions.create(code)["FunctionName"]
    resp, _ = invoke(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    messages = [m for _, _, m in stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid}")]
    assert between(messages, rid) == [f"row {i}" for i in range(20000)]


def test_a_line_longer_than_an_event_is_split(
    functions: Functions, lam: Any, server: Server
) -> None:
    code = "def handler(e, c):\n    print('z' * 600000)\n    print('after')\n"
    name = functions.create(code)["FunctionName"]
    resp, _ = invoke(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    messages = [m for _, _, m in stored(server, f"/aws/lambda/{name}", f"REPORT RequestId: {rid}")]
    body = between(messages, rid)
    assert body[-1] == "after"
    assert "".join(body[:-1]) == "z" * 600000
    assert len(body) == 4 and all(len(m) <= 256 * 1024 - 26 for m in body)
