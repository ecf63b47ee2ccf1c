"""LogType=Tail: the end of the invocation's log, framed by Lambda's START/END/REPORT lines."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from tests.conftest import Functions

CHATTY = """
import logging, sys
logger = logging.getLogger()
print("module loaded")
def handler(event, context):
    print("to stdout", event.get("n"))
    print("to stderr", file=sys.stderr)
    logging.getLogger().setLevel(logging.INFO)
    logger.info("info via logging")
    logger.debug("debug is below the level")
    if event.get("fail"):
        raise KeyError("missing")
    return "ok"
"""


def tail(lam: Any, name: str, payload: bytes = b"{}", **kw: Any) -> tuple[dict[str, Any], str]:
    resp = lam.invoke(FunctionName=name, LogType="Tail", Payload=payload, **kw)
    resp["Payload"].read()
    return resp, base64.b64decode(resp["LogResult"]).decode()


def test_tail_frames_what_the_function_printed(functions: Functions, lam: Any) -> None:
    name = functions.create(CHATTY, MemorySize=256)["FunctionName"]
    resp, text = tail(lam, name, b'{"n": 1}')
    rid = resp["ResponseMetadata"]["RequestId"]
    lines = text.splitlines()
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    end = lines.index(f"END RequestId: {rid}")
    body = lines[start + 1 : end]
    assert "to stdout 1" in body
    assert "to stderr" in body
    info = [line for line in body if line.startswith("[INFO]")]
    assert len(info) == 1
    assert re.fullmatch(
        rf"\[INFO\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\tinfo via logging", info[0]
    )
    assert not any("debug is below" in line for line in body)
    report = lines[end + 1]
    m = re.fullmatch(
        rf"REPORT RequestId: {rid}\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms\t"
        r"Memory Size: 256 MB\tMax Memory Used: (\d+) MB\tInit Duration: (\d+\.\d\d) ms\t",
        report,
    )
    assert m, report
    assert int(m[2]) >= float(m[1])  # billed is rounded up to the millisecond
    assert 0 < int(m[3]) <= 256
    # A warm invoke: no Init Duration, and only this invocation's lines.
    resp2, text2 = tail(lam, name, b'{"n": 2}')
    assert "to stdout 1" not in text2
    assert "to stdout 2" in text2
    assert "Init Duration" not in text2
    assert text2.startswith(f"START RequestId: {resp2['ResponseMetadata']['RequestId']}")


def test_tail_of_a_failed_invocation(functions: Functions, lam: Any) -> None:
    name = functions.create(CHATTY)["FunctionName"]
    resp, text = tail(lam, name, b'{"fail": true}')
    assert resp["FunctionError"] == "Unhandled"
    assert "[ERROR] KeyError: 'missing'" in text
    assert "Traceback (most recent call last):" in text
    assert 'raise KeyError("missing")' in text


def test_tail_is_at_most_4kb(functions: Functions, lam: Any) -> None:
    code = "def handler(e, c):\n    for i in range(2000):\n        print('line', i)\n"
    name = functions.create(code)["FunctionName"]
    resp = lam.invoke(FunctionName=name, LogType="Tail")
    raw = base64.b64decode(resp["LogResult"])
    assert len(raw) <= 4096
    assert raw.decode().rstrip("\n").splitlines()[-1].startswith("REPORT RequestId:")
    assert "line 1999" in raw.decode()


def test_timeout_is_logged(functions: Functions, lam: Any) -> None:
    code = "import time\ndef handler(e, c):\n    time.sleep(5)\n"
    name = functions.create(code, Timeout=1)["FunctionName"]
    resp, text = tail(lam, name)
    rid = resp["ResponseMetadata"]["RequestId"]
    assert re.search(rf"Z {rid} Task timed out after 1\.00 seconds", text)
    assert f"END RequestId: {rid}" in text
    assert "Status: timeout" in text


def test_no_log_result_unless_asked(functions: Functions, lam: Any) -> None:
    name = functions.create(CHATTY)["FunctionName"]
    assert "LogResult" not in lam.invoke(FunctionName=name)


def test_bad_log_type(functions: Functions, lam_unchecked: Any) -> None:
    name = functions.create(CHATTY)["FunctionName"]
    try:
        lam_unchecked.invoke(FunctionName=name, LogType="Everything")
    except lam_unchecked.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException"
    else:
        raise AssertionError("LogType=Everything was accepted")


def test_log_store_keeps_every_line_in_order(functions: Functions, lam: Any, server: Any) -> None:
    code = (
        "def handler(e, c):\n"
        "    for i in range(20000):\n"
        "        print('row', i)\n"
        "    return 'done'\n"
    )
    name = functions.create(code)["FunctionName"]
    resp = lam.invoke(FunctionName=name)
    rid = resp["ResponseMetadata"]["RequestId"]
    assert resp["Payload"].read() == b'"done"'
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [m for _, m in server.log_events(f"/aws/lambda/{name}")]
        if any(m.startswith(f"REPORT RequestId: {rid}") for m in lines):
            break
        time.sleep(0.05)
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    rows = [line for line in lines[start:] if line.startswith("row ")]
    assert rows == [f"row {i}" for i in range(20000)]
    # Everything the runtime wrote before answering comes before END.
    assert lines.index(f"END RequestId: {rid}") > start + 20000
