"""Debugger attach (issue 24): `lamina invoke NAME --debug` and the LAMINA_DEBUG setting.

The Python tests attach the way an IDE does, with debugpy's own client side of the Debug
Adapter Protocol (`debugpy.common.messaging`: its JSON stream and message channel), imported
from the debugpy Lamina installed into its runtime directory. The Node test talks to the
inspector over its HTTP and WebSocket endpoints.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
from tests.conftest import SIGNED_HTTP, Functions, Server, lamina_env, wait_for

HANDLER = """\
import time

def handler(event, context):
    word = event["word"] * 2
    time.sleep(event.get("sleep", 0))
    return {"word": word, "remaining": context.get_remaining_time_in_millis(), "file": __file__}
"""
#: the line of `return ...` in HANDLER (where the test stops)
BREAK_LINE = 6


def _debugpy_dir() -> Path:
    return Path(os.environ["LAMINA_RUNTIME_CACHE"]) / "python3.11" / "debugger"


class Dap:
    """An IDE's side of a debugpy session: debugpy's JsonMessageChannel over the port."""

    def __init__(self, port: int) -> None:
        where = str(_debugpy_dir())
        if where not in sys.path:
            sys.path.append(where)
        from debugpy.common import messaging

        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.settimeout(None)
        stream = messaging.JsonIOStream.from_socket(sock, "lamina-test")
        # A handler that raised would end this process (debugpy's channel exits): keep it
        # to a queue put.
        handlers = messaging.MessageHandlers(
            event=lambda e: self.events.put((e.event, dict(e.body or {})))
        )
        self.channel = messaging.JsonMessageChannel(stream, handlers, "lamina-test")
        self.channel.start()

    def request(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        return self.channel.request(command, arguments)

    def attach(self, breakpoints: dict[str, list[int]] | None = None) -> None:
        """initialize, attach, breakpoints, configurationDone: what VS Code sends."""
        self.request(
            "initialize",
            {
                "clientID": "lamina-test",
                "adapterID": "debugpy",
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
            },
        )
        attached = self.channel.send_request("attach", {"justMyCode": False})
        self.wait_event("initialized")
        for path, lines in (breakpoints or {}).items():
            answer = self.request(
                "setBreakpoints",
                {"source": {"path": path}, "breakpoints": [{"line": n} for n in lines]},
            )
            assert len(answer["breakpoints"]) == len(lines)
        self.request("configurationDone")
        attached.wait_for_response()

    def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            event, body = self.events.get(timeout=max(end - time.monotonic(), 0.01))
            if event == name:
                return body

    def close(self) -> None:
        from debugpy.common import messaging

        try:
            self.request("disconnect", {"terminateDebuggee": False})
        except (messaging.NoMoreMessages, messaging.MessageHandlingError, OSError):
            pass  # the session's environment is gone already (the CLI ended it)
        finally:
            self.channel.close()


def _debug_invoke(
    server: Server, name: str, payload: dict[str, Any]
) -> tuple[subprocess.Popen[str], int]:
    """`lamina invoke NAME --debug` in the background; returns it and the port it printed."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina",
            "invoke",
            name,
            "--debug",
            "--payload",
            json.dumps(payload),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lamina_env(server.endpoint),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # waits through debugpy's first install, if need be
    assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
    assert line.rstrip().endswith("attach your IDE; waiting for it...")
    port = int(line.split("127.0.0.1:")[1].split()[0])
    return proc, port


def test_invoke_debug_stops_at_a_breakpoint_past_the_timeout(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(HANDLER, Timeout=3)["FunctionName"]
    # An ordinary invocation first: a warm environment exists, and it tells where the
    # runtime sees the code (/var/task in a namespace, a directory of the host's else).
    seen = json.loads(
        lam.invoke(FunctionName=name, Payload=json.dumps({"word": "a"}))["Payload"].read()
    )
    assert seen["word"] == "aa"
    source = seen["file"]
    # A namespace sandbox shows the code where Lambda does (what an IDE's remoteRoot names).
    in_namespace = os.environ.get("LAMINA_TEST_SANDBOX", "namespace") == "namespace"
    assert source.startswith("/var/task/") == in_namespace, source
    proc, port = _debug_invoke(server, name, {"word": "ab"})
    dap = Dap(port)
    try:
        dap.attach({source: [BREAK_LINE]})
        stopped = dap.wait_event("stopped")
        assert stopped["reason"] == "breakpoint"
        frames = dap.request("stackTrace", {"threadId": stopped["threadId"]})["stackFrames"]
        assert frames[0]["line"] == BREAK_LINE
        assert frames[0]["source"]["path"] == source
        scopes = dap.request("scopes", {"frameId": frames[0]["id"]})["scopes"]
        local = next(s for s in scopes if s["name"] == "Locals")
        values = dap.request("variables", {"variablesReference": local["variablesReference"]})
        word = next(v for v in values["variables"] if v["name"] == "word")
        assert word["value"] == "'abab'"
        # Stopped longer than the function's 3 s timeout: the invocation is not killed.
        time.sleep(4)
        assert proc.poll() is None
        # Not waiting for continue's answer: the handler may return, the CLI print its result
        # and end the session (closing the connection) before the answer is read.
        dap.channel.send_request("continue", {"threadId": stopped["threadId"]})
        out, err = proc.communicate(timeout=30)
    finally:
        dap.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["word"] == "abab"
    # The context still counts down the configured timeout (from 3 s, past it by now).
    assert result["remaining"] == 0
    # The debug environment is gone; ordinary invocations still use the warm pool and keep
    # their timeout.
    wait_for(
        lambda: all(e["DebugPort"] is None for e in _environments(server, name)),
        message="the debug environment to end",
    )
    assert len(_environments(server, name)) == 1
    listed = subprocess.run(
        [sys.executable, "-m", "lamina", "runtimes"],
        capture_output=True,
        text=True,
        env=lamina_env(server.endpoint),
        timeout=60,
        check=True,
    ).stdout
    assert "debugger: ready (debugpy==" in listed
    slow = lam.invoke(FunctionName=name, Payload=json.dumps({"word": "c", "sleep": 4}))
    assert slow["FunctionError"] == "Unhandled"
    assert "Task timed out after 3.00 seconds" in slow["Payload"].read().decode()


def _environments(server: Server, name: str) -> list[dict[str, Any]]:
    envs = SIGNED_HTTP.get(f"{server.endpoint}/lamina/environments").json()["Environments"]
    return [e for e in envs if e["FunctionName"] == name]


def test_debug_setting_starts_every_environment_with_the_debugger(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(HANDLER, Timeout=1, Environment={"Variables": {"LAMINA_DEBUG": "1"}})[
        "FunctionName"
    ]
    # In debug mode the deadline is not enforced: 2 s of a 1 s function complete.
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"word": "x", "sleep": 2}))
    assert "FunctionError" not in out, out["Payload"].read()
    assert json.loads(out["Payload"].read())["word"] == "xx"
    [env] = _environments(server, name)
    assert env["DebugPort"]
    dap = Dap(env["DebugPort"])
    try:
        dap.attach()
        threads = dap.request("threads")["threads"]
        assert any(t["name"] == "MainThread" for t in threads), threads
    finally:
        dap.close()
    # Still serving after the client left.
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"word": "y"}))
    assert json.loads(out["Payload"].read())["word"] == "yy"


def test_debug_setting_wait_holds_the_init_until_a_client_attaches(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(HANDLER, Environment={"Variables": {"LAMINA_DEBUG": "wait"}})[
        "FunctionName"
    ]
    answers: queue.Queue[Any] = queue.Queue()
    caller = threading.Thread(
        target=lambda: answers.put(
            lam.invoke(FunctionName=name, Payload=json.dumps({"word": "w"}))["Payload"].read()
        ),
        daemon=True,
    )
    caller.start()
    port = wait_for(
        lambda: next((e["DebugPort"] for e in _environments(server, name)), None),
        timeout=120,
        message="the environment to listen",
    )
    time.sleep(1)
    assert answers.empty()  # its init phase waits for the debugger
    dap = Dap(port)
    try:
        dap.attach()
        assert json.loads(answers.get(timeout=30))["word"] == "ww"
    finally:
        dap.close()


def test_debug_session_api_without_waiting(server: Server, lam: Any, functions: Functions) -> None:
    """The API `lamina invoke --debug` uses, as another tool would: a session that does not
    wait for the IDE runs its invocation at once, with no deadline; the IDE leaving after an
    invocation ends the session."""
    name = functions.create(HANDLER, Timeout=1)["FunctionName"]
    url = f"{server.endpoint}/lamina/functions/{name}/debug"
    started = SIGNED_HTTP.post(url, json={"Wait": False}, timeout=120)
    assert started.status_code == 201, started.text
    session = started.json()
    assert session["Debugger"] == "debugpy" and session["Version"] == "$LATEST"
    # The port is taken while the session lives.
    taken = SIGNED_HTTP.post(url, json={"Port": session["Port"]}, timeout=120)
    assert taken.status_code == 409, taken.text
    resp = SIGNED_HTTP.post(
        f"{server.endpoint}/2015-03-31/functions/{name}/invocations",
        content=json.dumps({"word": "z", "sleep": 2}).encode(),
        headers={"X-Lamina-Debug-Session": session["Session"]},
        timeout=60,
    )
    assert "X-Amz-Function-Error" not in resp.headers, resp.text
    assert resp.json()["word"] == "zz"
    [env] = _environments(server, name)
    assert env["DebugPort"] == session["Port"]
    dap = Dap(session["Port"])
    dap.attach()
    dap.close()
    wait_for(lambda: not _environments(server, name), message="the session to end")
    assert SIGNED_HTTP.delete(f"{url}/{session['Session']}").status_code == 404


def test_debug_setting_is_checked(lam: Any, functions: Functions) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="LAMINA_DEBUG"):
        functions.create(HANDLER, Environment={"Variables": {"LAMINA_DEBUG": "yes"}})


def test_debug_api_refuses_bad_input(server: Server, functions: Functions) -> None:
    name = functions.create(HANDLER)["FunctionName"]
    url = f"{server.endpoint}/lamina/functions/{name}/debug"
    for body, kind in (
        ({"Port": "x"}, "InvalidParameterValueException"),
        ({"Port": 80}, "InvalidParameterValueException"),
        ({"Wait": 1}, "InvalidParameterValueException"),
        ({"Other": 1}, "InvalidParameterValueException"),
    ):
        resp = SIGNED_HTTP.post(url, json=body)
        assert resp.status_code == 400 and resp.headers["x-amzn-ErrorType"] == kind, resp.text
    missing = SIGNED_HTTP.post(
        f"{server.endpoint}/lamina/functions/nope-{uuid.uuid4().hex[:6]}/debug"
    )
    assert missing.status_code == 404
    gone = SIGNED_HTTP.delete(f"{url}/{uuid.uuid4().hex}")
    assert gone.status_code == 404
    # A session the invoke names must exist.
    resp = SIGNED_HTTP.post(
        f"{server.endpoint}/2015-03-31/functions/{name}/invocations",
        content=b"{}",
        headers={"X-Lamina-Debug-Session": "nope"},
    )
    assert resp.status_code == 404, resp.text


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js")
def test_invoke_debug_node_inspector(server: Server, functions: Functions) -> None:
    name = functions.create(
        {"index.mjs": "export const handler = async (e) => ({ twice: e.n * 2 });\n"},
        handler="index.handler",
        runtime="nodejs20.x",
        Timeout=3,
    )["FunctionName"]
    proc, port = _debug_invoke(server, name, {"n": 21})
    try:
        targets = wait_for(
            lambda: _inspector_targets(port), timeout=30, message="the inspector to answer"
        )
        url = targets[0]["webSocketDebuggerUrl"]
        assert f"127.0.0.1:{port}/" in url
        with websockets.sync.client.connect(url, max_size=None) as ws:
            ws.send(
                json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {"expression": "6*7"}})
            )
            answer = _reply(ws, 1)
            assert answer["result"]["result"]["value"] == 42
            # --inspect-wait: the runtime goes on once the debugger says so.
            ws.send(json.dumps({"id": 2, "method": "Runtime.runIfWaitingForDebugger"}))
            _reply(ws, 2)
            out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out) == {"twice": 42}


def _inspector_targets(port: int) -> list[dict[str, Any]] | None:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5)
    except httpx.HTTPError:
        return None
    return resp.json() or None if resp.status_code == 200 else None


def _reply(ws: Any, wanted: int) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") == wanted:
            return dict(message)
