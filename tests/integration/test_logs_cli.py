"""`lamina logs` against a real server: printing, filtering, following, and refusals."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import IO, Any

import click
import pytest
from tests.conftest import Functions, Server, lamina, lamina_env

from lamina.cli.logs import format_event, parse_since, short_stream

pytestmark = pytest.mark.control_plane

PRINTER = """
def handler(event, context):
    for text in event.get("say", []):
        print(text)
    return "ok"
"""


def say(lam: Any, name: str, *lines: str) -> None:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"say": list(lines)}).encode())
    assert "FunctionError" not in resp


def test_logs_prints_what_a_function_printed(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(PRINTER)["FunctionName"]
    phrase = f"hello from {uuid.uuid4().hex}"
    say(lam, name, phrase, "ERROR something else")

    out = lamina("logs", name, endpoint=server.endpoint)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    [line] = [line for line in lines if phrase in line]
    stamp, stream, message = line.split(" ", 2)
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == len("2026-01-01T00:00:00.000Z")
    assert stream.startswith("[$LATEST]")
    assert message == phrase
    assert any(" START RequestId: " in line for line in lines)
    assert any(" REPORT RequestId: " in line for line in lines)
    assert "\x1b[" not in out.stdout  # NO_COLOR

    filtered = lamina("logs", name, "--filter", "ERROR", "--since", "1h", endpoint=server.endpoint)
    assert filtered.returncode == 0, filtered.stderr
    assert [line.split(" ", 2)[2] for line in filtered.stdout.splitlines()] == [
        "ERROR something else"
    ]
    future = lamina("logs", name, "--since", "2999-01-01T00:00:00", endpoint=server.endpoint)
    assert future.returncode == 0 and future.stdout == ""


def test_logs_refusals(server: Server, functions: Functions) -> None:
    missing = lamina("logs", "no-such-function", endpoint=server.endpoint)
    assert missing.returncode == 1
    assert "no function no-such-function" in missing.stderr
    assert "Traceback" not in missing.stderr

    quiet = functions.create(PRINTER)["FunctionName"]  # exists, never invoked
    nothing = lamina("logs", quiet, endpoint=server.endpoint)
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "logged nothing yet" in nothing.stderr

    for args, fragment in [
        (("--since", "yesterday"), "neither a duration"),
        (("--filter", '"unclosed'), "InvalidParameterException"),
    ]:
        out = lamina("logs", quiet, *args, endpoint=server.endpoint)
        assert out.returncode != 0
        assert fragment in out.stderr


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_follow_shows_new_lines_within_a_second_or_two(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(PRINTER)["FunctionName"]
    say(lam, name, "before following")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamina", "logs", name, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lamina_env(server.endpoint),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:

        def wait_for(text: str, within: float) -> float:
            start = time.monotonic()
            while (left := start + within - time.monotonic()) > 0:
                try:
                    if text in lines.get(timeout=left):
                        return time.monotonic() - start
                except queue.Empty:
                    break
            raise AssertionError(f"{text!r} not shown within {within} s")

        wait_for("before following", within=10)  # the follower is up
        phrase = f"fresh {uuid.uuid4().hex}"
        say(lam, name, phrase)
        assert wait_for(phrase, within=2.0) < 2.0
        say(lam, name, "second", "third")
        wait_for("second", within=2.0)
        wait_for("third", within=2.0)
        time.sleep(1.0)  # a few more polls: nothing is printed twice
        repeated = []
        while not lines.empty():
            repeated.append(lines.get())
        assert not any(phrase in line or "before following" in line for line in repeated)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = proc.stderr.read()
    reader.join(10)  # the process has exited: its output has ended
    proc.stdout.close()
    proc.stderr.close()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_since_and_formatting() -> None:
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    at_noon = int(now.timestamp() * 1000)
    assert parse_since("10m", now) == at_noon - 600_000
    assert parse_since("2h", now) == at_noon - 7_200_000
    assert parse_since("1d", now) == at_noon - 86_400_000
    assert parse_since("1h30m", now) == at_noon - 5_400_000
    assert parse_since("2026-01-31T12:00:00", now) == at_noon  # no zone: UTC
    assert parse_since("2026-01-31T13:00:00+01:00", now) == at_noon
    for bad in ("yesterday", "10x", "m"):
        try:
            parse_since(bad, now)
        except click.BadParameter:
            continue
        raise AssertionError(f"{bad!r} accepted")

    assert short_stream("2026/01/31/[$LATEST]0123456789abcdef") == "[$LATEST]01234567"
    assert short_stream("2026/01/31/[3]abc") == "[3]abc"
    event = {
        "timestamp": at_noon + 7,
        "logStreamName": "2026/01/31/[$LATEST]0123456789abcdef",
        "message": "hello\n",
    }
    assert format_event(event, color=False) == "2026-01-31T12:00:00.007Z [$LATEST]01234567 hello"
    assert format_event(event, color=True) == format_event(event, color=False)
    start = dict(event, message="START RequestId: 1 Version: $LATEST")
    assert format_event(start, color=True) == click.style(format_event(start, False), dim=True)
    for text in ("ERROR boom", "Traceback (most recent call last):", '{"errorType": "X"}'):
        failing = dict(event, message=text)
        assert format_event(failing, True) == click.style(format_event(failing, False), fg="red")
