"""`lamina dev DIR --handler ...` against a real server: a save reaches new invocations within
a second or two, in-flight ones finish on the old code, logs and reloads are printed, a syntax
error is the function's error (not the watcher's), and Ctrl-C leaves the function deployed."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from tests.conftest import Server, lamina, lamina_env

pytestmark = pytest.mark.control_plane

APP = """
import time

def handler(event, context):
    print("{tag} says", event.get("say", "hello"))
    time.sleep(event.get("sleep", 0))
    return "{tag}"
"""


class Dev:
    """A `lamina dev` process and what it has printed so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            self._new.put(line)

    def wait_line(self, text: str, within: float) -> str:
        """The first line printed from now on that contains `text`."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed within {within} s; printed:\n" + self.output)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        """Kill it if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: (exit status, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout=20)
        self._reader.join(5)  # the last lines, up to end of file
        assert self.proc.stderr is not None
        return status, self.proc.stderr.read()


@pytest.fixture
def dev(server: Server, lam: Any, tmp_path: Path) -> Iterator[tuple[Dev, str, Path]]:
    code = tmp_path / "app"
    code.mkdir()
    (code / "app.py").write_text(APP.format(tag="v1"))
    name = f"t-dev-{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina",
            "dev",
            str(code),
            "--handler",
            "app.handler",
            "--name",
            name,
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lamina_env(server.endpoint),
    )
    running = Dev(proc)
    try:
        running.wait_line("Ctrl-C to stop", within=60)
        yield running, name, code
    finally:
        running.close()
        with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
            lam.delete_function(FunctionName=name)


def invoke(lam: Any, name: str, **event: Any) -> tuple[Any, str | None]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(resp["Payload"].read()), resp.get("FunctionError")


def until_answer(lam: Any, name: str, predicate: Any, within: float) -> tuple[float, Any]:
    """Invoke until the answer satisfies `predicate`: (seconds it took, the answer)."""
    start = time.monotonic()
    while True:
        answer = invoke(lam, name)
        took = time.monotonic() - start
        if predicate(answer):
            return took, answer
        assert took < within, f"still {answer!r} after {took:.2f} s"
        time.sleep(0.02)


def test_a_save_reloads_within_a_second_or_two(
    dev: tuple[Dev, str, Path], lam: Any, server: Server
) -> None:
    proc, name, code = dev
    assert f"created arn:aws:lambda:us-east-1:000000000000:function:{name}" in proc.output
    assert invoke(lam, name) == ("v1", None)
    # the invocation's log lines, prefixed with the function's name
    assert proc.wait_line("v1 says hello", within=10).startswith(f"{name} | ")

    # A slow invocation started before the save finishes on the code it started with.
    slow: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: slow.update(answer=invoke(lam, name, sleep=3, say="slowly")), daemon=True
    )
    thread.start()
    proc.wait_line("v1 says slowly", within=10)  # it is running

    (code / "app.py").write_text(APP.format(tag="v2"))
    took, _ = until_answer(lam, name, lambda a: a[0] == "v2", within=10)
    print(f"save → new code answering: {took:.3f} s")
    assert took < 2.0, took
    reloaded = proc.wait_line("reloaded ", within=5)
    assert reloaded.startswith(f"reloaded {name} (1 file, sha256 "), reloaded
    thread.join(20)
    assert slow["answer"] == ("v1", None)
    proc.wait_line("v2 says hello", within=10)

    # Saving the same content again (and an editor's swap file, never zipped) uploads nothing.
    sha = lam.get_function_configuration(FunctionName=name)["CodeSha256"]
    (code / "app.py").write_text(APP.format(tag="v2"))
    (code / ".app.py.swp").write_bytes(b"vim swap")
    proc.wait_line(f"unchanged {name}", within=5)
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == sha

    # A syntax error is the function's error; the next save reloads again.
    (code / "app.py").write_text("def handler(event, context)\n    return 'broken'\n")
    _, (error, kind) = until_answer(lam, name, lambda a: a[1] is not None, within=10)
    assert kind == "Unhandled"
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    (code / "app.py").write_text(APP.format(tag="v3"))
    until_answer(lam, name, lambda a: a[0] == "v3", within=10)

    status, err = proc.interrupt()
    assert status == 0, err
    assert "Traceback" not in err
    assert "stopped (the functions stay deployed)" in proc.output
    assert invoke(lam, name) == ("v3", None)  # nothing deleted on exit


def test_a_failed_reload_is_reported_and_watching_goes_on(
    dev: tuple[Dev, str, Path], lam: Any
) -> None:
    proc, name, code = dev
    lam.delete_function(FunctionName=name)  # gone behind dev's back: the update must fail
    (code / "app.py").write_text(APP.format(tag="v2"))
    failed = proc.wait_line("reload of", within=10)
    assert f"reload of {name} failed: ResourceNotFoundException" in failed
    assert proc.proc.poll() is None  # still watching
    (code / "more.py").write_text("X = 1\n")
    proc.wait_line("reload of", within=10)
    status, err = proc.interrupt()
    assert status == 0 and "Traceback" not in err, err


TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: prod
Globals:
  Function:
    Runtime: python3.11
    Handler: app.handler
    Timeout: 30
    CodeUri: src/
    Environment:
      Variables:
        STAGE: !Ref Stage
Resources:
  Live:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${AWS::StackName}-live"
      AutoPublishAlias: live
  Plain:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${AWS::StackName}-plain"
"""

STAGED = """
import os

def handler(event, context):
    print("{tag} in", os.environ["STAGE"])
    return "{tag}"
"""


def test_template_mode_reloads_every_function_of_a_directory_and_moves_aliases(
    server: Server, lam: Any, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(STAGED.format(tag="v1"))
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    stack = f"t-dev-{uuid.uuid4().hex[:8]}"
    live, plain = f"{stack}-live", f"{stack}-plain"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina",
            "dev",
            "--template",
            str(tmp_path / "template.yaml"),
            "--stack",
            stack,
            "--parameter-overrides",
            "ParameterKey=Stage,ParameterValue=dev",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lamina_env(server.endpoint),
    )
    dev = Dev(proc)
    try:
        dev.wait_line("Ctrl-C to stop", within=90)
        assert f"watching {(tmp_path / 'src').resolve()} → {live}, {plain}" in dev.output
        assert invoke(lam, f"{live}:live") == ("v1", None)
        assert dev.wait_line("v1 in dev", within=10).startswith(f"{live} | ")

        (tmp_path / "src" / "app.py").write_text(STAGED.format(tag="v2"))
        took, _ = until_answer(lam, f"{live}:live", lambda a: a[0] == "v2", within=10)
        print(f"save → alias answering new code: {took:.3f} s")
        assert took < 2.0, took
        line = dev.wait_line(f"reloaded {live}", within=5)
        assert ", live → version 2, " in line, line
        # the functions of one directory are reloaded one after the other
        took, _ = until_answer(lam, plain, lambda a: a[0] == "v2", within=10)
        assert took < 2.0, took
        dev.wait_line(f"reloaded {plain}", within=5)
        assert lam.get_alias(FunctionName=live, Name="live")["FunctionVersion"] == "2"
        assert invoke(lam, f"{live}:1") == ("v1", None)  # the version deployed stays as it was

        # A save of the template deploys the stack again, and watching goes on.
        (tmp_path / "template.yaml").write_text(TEMPLATE.replace("!Ref Stage", "!Sub ${Stage}-2"))
        dev.wait_line("template.yaml changed: deploying stack", within=5)
        dev.wait_line(f"deployed stack {stack}", within=60)
        dev.wait_line("Ctrl-C to stop", within=10)
        variables = lam.get_function_configuration(FunctionName=plain)["Environment"]["Variables"]
        assert variables == {"STAGE": "dev-2"}
        (tmp_path / "src" / "app.py").write_text(STAGED.format(tag="v3"))
        until_answer(lam, f"{live}:live", lambda a: a[0] == "v3", within=10)
        assert dev.wait_line("v3 in dev-2", within=10).startswith(f"{live} | ")
        # a template that does not deploy is reported; the last deployed functions stay watched
        (tmp_path / "template.yaml").write_text(TEMPLATE + "  Broken: [\n")
        assert "nothing was deployed" in dev.wait_line("deploy failed: ", within=10)
        (tmp_path / "src" / "app.py").write_text(STAGED.format(tag="v4"))
        until_answer(lam, plain, lambda a: a[0] == "v4", within=10)
        status, err = dev.interrupt()
        assert status == 0 and "Traceback" not in err, err
    finally:
        dev.close()
        deleted = lamina("stacks", "delete", stack, endpoint=server.endpoint)
        assert deleted.returncode == 0, deleted.stderr


def test_template_errors_are_reported_before_watching(server: Server, tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n"
        "    Type: AWS::Serverless::Function\n    Properties:\n      Runtime: [oops\n"
    )
    out = lamina("dev", "--template", str(tmp_path / "template.yaml"), endpoint=server.endpoint)
    assert out.returncode == 1
    assert "nothing was deployed" in out.stderr and "Traceback" not in out.stderr
    for args, fragment in [
        (("dev", str(tmp_path)), "needs DIRECTORY and --handler"),
        (("dev", str(tmp_path), "--handler", "a.b", "--stack", "x"), "go with --template"),
        (("dev", "--template", str(tmp_path / "template.yaml"), "--handler", "a.b"), "give no"),
        (("dev", str(tmp_path), "--handler", "a.b", "--env", "NOEQUALS"), "KEY=VALUE"),
    ]:
        out = lamina(*args, endpoint=server.endpoint)
        assert out.returncode == 2, (args, out.stderr)
        assert fragment in out.stderr and "Traceback" not in out.stderr
