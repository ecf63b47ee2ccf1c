"""Extensions through boto3: real external extensions (Python and Node) shipped as layers,
the Extensions API's lifecycle (INVOKE, SHUTDOWN), the Telemetry API, and wrapper scripts.

The extensions (`extension_code.py`) report what they see as lines of their own output,
which land in the function's log stream; the tests read them from the server's log store.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import ROLE, Functions, Server, make_zip, wait_for
from tests.integration.extension_code import NODE_EXTENSION, PY_EXTENSION
from tests.integration.test_layers import exe_zip

HANDLER_PY = (
    "import os\n"
    "def handler(event, context):\n"
    "    print('MARK', context.aws_request_id)\n"
    "    return {'wrapped': os.environ.get('WRAPPED'), 'args': os.environ.get('WRAPPED_ARGS')}\n"
)
HANDLER_NODE = (
    "exports.handler = async (event, context) => {\n"
    "  console.log('MARK', context.awsRequestId);\n"
    "  return { wrapped: process.env.WRAPPED || null, args: process.env.WRAPPED_ARGS || null };\n"
    "};\n"
)
#: a function that shuts down gracefully on SIGTERM, with an internal extension if INTERNAL=1
HANDLER_GRACEFUL = """
import json, os, signal, sys, threading, urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def on_term(signum, frame):
    print("RUNTIME SIGTERM", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
if os.environ.get("INTERNAL") == "1":
    request = urllib.request.Request(
        f"http://{API}/2020-01-01/extension/register",
        data=b'{"events": ["INVOKE"]}',
        headers={"Lambda-Extension-Name": "inproc"},
    )
    ident = urllib.request.urlopen(request).headers["Lambda-Extension-Identifier"]

    def events():
        while True:
            request = urllib.request.Request(
                f"http://{API}/2020-01-01/extension/event/next",
                headers={"Lambda-Extension-Identifier": ident},
            )
            event = json.loads(urllib.request.urlopen(request).read())
            print("INTERNAL", event["eventType"], event["requestId"], flush=True)

    threading.Thread(target=events, daemon=True).start()


def handler(event, context):
    return {"ok": True}
"""
WRAPPER = '#!/bin/bash\nexport WRAPPED=yes\nexport WRAPPED_ARGS="$*"\nexec "$@"\n'
#: how long the extensions work on each INVOKE after the runtime has answered
POST_PROCESS_S = 1.0
REPORT = re.compile(r"REPORT RequestId: (\S+)\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms")


@pytest.fixture
def layer_arns(lam: Any) -> Iterator[list[str]]:
    arns: list[str] = []
    yield arns
    for arn in arns:
        name, version = arn.split(":")[-2:]
        lam.delete_layer_version(LayerName=name, VersionNumber=int(version))


def publish(lam: Any, arns: list[str], files: dict[str, str], executable: tuple[str, ...]) -> str:
    arn: str = lam.publish_layer_version(
        LayerName=f"l-{uuid.uuid4().hex[:12]}",
        Content={"ZipFile": exe_zip(files, executable)},
    )["LayerVersionArn"]
    arns.append(arn)
    return arn


def lines(server: Server, name: str, prefix: str = "EXT ") -> list[str]:
    return [m for _, m in server.log_events(f"/aws/lambda/{name}") if m.startswith(prefix)]


def wait_line(server: Server, name: str, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    regex = re.compile(pattern)

    def found() -> re.Match[str] | None:
        for line in lines(server, name, ""):
            if m := regex.search(line):
                return m
        return None

    match: re.Match[str] = wait_for(found, timeout, pattern)
    return match


@pytest.mark.parametrize(
    ("runtime", "handler", "code", "ext_name", "ext_code"),
    [
        ("python3.11", "app.handler", {"app.py": HANDLER_PY}, "py-recorder", PY_EXTENSION),
        (
            "nodejs20.x",
            "index.handler",
            {"index.js": HANDLER_NODE},
            "node-recorder",
            NODE_EXTENSION,
        ),
    ],
    ids=["python", "node"],
)
def test_external_extension_lifecycle_and_telemetry(
    server: Server,
    lam: Any,
    functions: Functions,
    layer_arns: list[str],
    runtime: str,
    handler: str,
    code: dict[str, str],
    ext_name: str,
    ext_code: str,
) -> None:
    layer = publish(
        lam, layer_arns, {f"extensions/{ext_name}": ext_code}, (f"extensions/{ext_name}",)
    )
    name = functions.create(
        code,
        handler=handler,
        runtime=runtime,
        Layers=[layer],
        Timeout=10,
        Environment={"Variables": {"EXT_POST_PROCESS_S": str(POST_PROCESS_S)}},
    )["FunctionName"]

    # Cold start: the extension registered (and saw Lambda's errors for bad calls) before the
    # runtime's first invocation, and received that invocation's INVOKE.
    first = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in first, first["Payload"].read()
    rid1 = first["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    wait_line(server, name, rf"EXT {ext_name} DONE {rid1}")
    ext_lines = lines(server, name)
    assert f"EXT {ext_name} REGISTERED {name} {handler} 000000000000" in ext_lines
    assert f"EXT {ext_name} SUBSCRIBED 200" in ext_lines
    if ext_name == "py-recorder":
        # Inside a namespace sandbox, sandbox.localdomain resolves, as on Lambda.
        host = (
            "127.0.0.1"
            if os.environ.get("LAMINA_TEST_SANDBOX") == "process"
            else ("sandbox.localdomain")
        )
        assert f"EXT {ext_name} LISTEN {host}" in ext_lines
        assert f"EXT {ext_name} ERR 403 Extension.InvalidExtensionIdentifier" in ext_lines
        assert f"EXT {ext_name} ERR 403 Extension.UnknownExtensionIdentifier" in ext_lines
    else:
        assert f"EXT {ext_name} ERR 403 Extension.MissingExtensionIdentifier" in ext_lines
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert f"EXT {ext_name} INVOKE {rid1} {arn}" in ext_lines

    # Warm: the caller has the answer while the extension still works on the invocation; the
    # REPORT comes after the extension is done and its Duration counts the extension's time.
    wait_line(server, name, rf"REPORT RequestId: {rid1}")
    t0 = time.monotonic()
    second = lam.invoke(FunctionName=name, Payload=b"{}")
    answered_in = time.monotonic() - t0
    rid2 = second["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert answered_in < POST_PROCESS_S, answered_in
    report = wait_line(server, name, rf"REPORT RequestId: {rid2}\t")
    assert float(REPORT.search(report.string)[2]) >= POST_PROCESS_S * 1000  # type: ignore[index]
    assert int(REPORT.search(report.string)[3]) >= POST_PROCESS_S * 1000  # type: ignore[index]
    stream = [m for _, m in server.log_events(f"/aws/lambda/{name}")]
    done = stream.index(f"EXT {ext_name} DONE {rid2}")
    assert done < next(i for i, m in enumerate(stream) if m.startswith(f"REPORT RequestId: {rid2}"))

    # Telemetry: Lambda's platform events and the function's own lines reached the listener.
    for kind in (
        "platform.initStart",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.start",
        "platform.runtimeDone",
        "platform.report",
        "platform.extension",
        "platform.telemetrySubscription",
        "function",
        "extension",
    ):
        wait_line(server, name, rf"EXT {ext_name} TYPE {re.escape(kind)}$")
    wait_line(server, name, rf"EXT {ext_name} FUNCTION-LINE .*MARK {rid2}")
    # The runtime's own duration, and the invocation's (the extension's time included).
    runtime_done = wait_line(
        server, name, rf"EXT {ext_name} platform.runtimeDone {rid2} (\S+) (\S+)"
    )
    assert runtime_done[1] == "success" and float(runtime_done[2]) < POST_PROCESS_S * 1000
    reported = wait_line(server, name, rf"EXT {ext_name} platform.report {rid2} (\S+) (\S+)")
    assert reported[1] == "success" and float(reported[2]) >= POST_PROCESS_S * 1000

    # The environment ends (the function is deleted): SHUTDOWN, with time left before its
    # deadline (2 s with external extensions, as on Lambda).
    lam.delete_function(FunctionName=name)
    shutdown = wait_line(server, name, rf"EXT {ext_name} SHUTDOWN (\w+) (-?\d+)")
    assert shutdown[1] == "spindown"
    assert 0 < int(shutdown[2]) <= 2000


def test_runtime_gets_sigterm_after_the_extensions_shutdown(
    server: Server, lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    layer = publish(lam, layer_arns, {"extensions/rec": PY_EXTENSION}, ("extensions/rec",))
    name = functions.create(HANDLER_GRACEFUL, Layers=[layer])["FunctionName"]
    assert "FunctionError" not in lam.invoke(FunctionName=name, Payload=b"{}")
    wait_line(server, name, r"REPORT RequestId")
    lam.delete_function(FunctionName=name)
    wait_line(server, name, r"RUNTIME SIGTERM")
    stream = lines(server, name, "")
    assert stream.index("RUNTIME SIGTERM") > next(
        i for i, m in enumerate(stream) if m.startswith("EXT rec SHUTDOWN spindown")
    )


def test_internal_extension_gets_invoke_and_the_runtime_sigterm(
    server: Server, lam: Any, functions: Functions
) -> None:
    name = functions.create(HANDLER_GRACEFUL, Environment={"Variables": {"INTERNAL": "1"}})[
        "FunctionName"
    ]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in resp
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    wait_line(server, name, rf"INTERNAL INVOKE {rid}")
    lam.delete_function(FunctionName=name)
    wait_line(server, name, r"RUNTIME SIGTERM")


def test_json_log_lines_reach_telemetry_as_objects(
    server: Server, lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    layer = publish(lam, layer_arns, {"extensions/rec": PY_EXTENSION}, ("extensions/rec",))
    code = (
        "import json\n"
        "def handler(event, context):\n"
        "    print(json.dumps({'level': 'INFO', 'MARK': context.aws_request_id}))\n"
    )
    name = functions.create(code, Layers=[layer], LoggingConfig={"LogFormat": "JSON"})[
        "FunctionName"
    ]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    # The extension prints the record it got with Python's repr: a dict, not a string.
    line = wait_line(server, name, r"EXT rec FUNCTION-LINE (.*)")
    assert line[1] == repr({"level": "INFO", "MARK": rid})


def test_an_environment_held_by_extensions_counts_against_concurrency(
    server: Server, lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    layer = publish(lam, layer_arns, {"extensions/rec": PY_EXTENSION}, ("extensions/rec",))
    name = functions.create(
        HANDLER_PY,
        Layers=[layer],
        Environment={"Variables": {"EXT_POST_PROCESS_S": str(POST_PROCESS_S * 2)}},
    )["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    first = lam.invoke(FunctionName=name, Payload=b"{}")
    rid = first["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    # Answered, but its extension still works: the one execution is in use, as on Lambda.
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name, Payload=b"{}")
    wait_line(server, name, rf"REPORT RequestId: {rid}")
    assert "FunctionError" not in lam.invoke(FunctionName=name, Payload=b"{}")


def test_shutdown_on_idle_timeout(own_server: Any, tmp_path: Any) -> None:
    server = own_server(None, "--idle-timeout", "1")
    lam = server.client()
    layer = lam.publish_layer_version(
        LayerName="recorder",
        Content={"ZipFile": exe_zip({"extensions/rec": PY_EXTENSION}, ("extensions/rec",))},
    )["LayerVersionArn"]
    lam.create_function(
        FunctionName="idle",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": HANDLER_PY})},
        Layers=[layer],
    )
    lam.get_waiter("function_active_v2").wait(FunctionName="idle")
    assert "FunctionError" not in lam.invoke(FunctionName="idle", Payload=b"{}")
    shutdown = wait_line(server, "idle", r"EXT rec SHUTDOWN (\w+)", timeout=30)
    assert shutdown[1] == "spindown"


def test_extension_past_the_timeout_times_the_invocation_out(
    server: Server, lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    layer = publish(lam, layer_arns, {"extensions/slow": PY_EXTENSION}, ("extensions/slow",))
    name = functions.create(
        HANDLER_PY,
        Layers=[layer],
        Timeout=1,
        Environment={"Variables": {"EXT_POST_PROCESS_S": "5"}},
    )["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    # The runtime answered in time: the caller has its result ...
    assert "FunctionError" not in resp
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    # ... but the extension held the invocation past the timeout: reset, as on Lambda.
    report = wait_line(server, name, rf"REPORT RequestId: {rid}\t.*")
    assert "Status: timeout" in report[0]
    # The next invocation gets a new environment (its extension registers again).
    assert "FunctionError" not in lam.invoke(FunctionName=name, Payload=b"{}")
    wait_for(
        lambda: len([m for m in lines(server, name) if m.startswith("EXT slow REGISTERED")]) == 2,
        message="a second environment",
    )


def test_extension_that_exits_before_registering_fails_the_init_at_once(
    lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    crashing = "#!/bin/sh\necho 'crashing now'\nexit 3\n"
    layer = publish(lam, layer_arns, {"extensions/crash": crashing}, ("extensions/crash",))
    name = functions.create(HANDLER_PY, Layers=[layer])["FunctionName"]
    t0 = time.monotonic()
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    # Not the init phase's 10 s timeout: the extension's exit ends it.
    assert time.monotonic() - t0 < 5
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorType"] == "Extension.Crash"


def test_shutdown_when_the_server_stops(own_server: Any) -> None:
    server = own_server()
    lam = server.client()
    layer = lam.publish_layer_version(
        LayerName="recorder",
        Content={"ZipFile": exe_zip({"extensions/rec": PY_EXTENSION}, ("extensions/rec",))},
    )["LayerVersionArn"]
    lam.create_function(
        FunctionName="stopping",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": HANDLER_PY})},
        Layers=[layer],
    )
    lam.get_waiter("function_active_v2").wait(FunctionName="stopping")
    assert "FunctionError" not in lam.invoke(FunctionName="stopping", Payload=b"{}")
    wait_line(server, "stopping", r"REPORT RequestId")
    assert server.stop() == 0
    assert any(m.startswith("EXT rec SHUTDOWN spindown") for m in lines(server, "stopping"))


def test_extension_init_error_fails_the_init(
    lam: Any, functions: Functions, layer_arns: list[str]
) -> None:
    failing = (
        "#!/usr/bin/env python3\n"
        "import json, os, urllib.request\n"
        "api = os.environ['AWS_LAMBDA_RUNTIME_API']\n"
        "req = urllib.request.Request(f'http://{api}/2020-01-01/extension/register',\n"
        "    data=b'{\"events\": [\"INVOKE\"]}', headers={'Lambda-Extension-Name': 'bad'})\n"
        "ident = urllib.request.urlopen(req).headers['Lambda-Extension-Identifier']\n"
        "body = json.dumps({'errorMessage': 'no config', 'errorType': 'Extension.ConfigMissing'})\n"
        "urllib.request.urlopen(urllib.request.Request(\n"
        "    f'http://{api}/2020-01-01/extension/init/error', data=body.encode(),\n"
        "    headers={'Lambda-Extension-Identifier': ident,\n"
        "             'Lambda-Extension-Function-Error-Type': 'Extension.ConfigMissing'}))\n"
    )
    layer = publish(lam, layer_arns, {"extensions/bad": failing}, ("extensions/bad",))
    name = functions.create(HANDLER_PY, Layers=[layer])["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert resp["FunctionError"] == "Unhandled"
    body = json.loads(resp["Payload"].read())
    assert body == {"errorMessage": "no config", "errorType": "Extension.ConfigMissing"}


@pytest.mark.parametrize(
    ("runtime", "handler", "code"),
    [
        ("python3.11", "app.handler", {"app.py": HANDLER_PY}),
        ("nodejs20.x", "index.handler", {"index.js": HANDLER_NODE}),
    ],
    ids=["python", "node"],
)
def test_exec_wrapper_from_a_layer(
    lam: Any,
    functions: Functions,
    layer_arns: list[str],
    runtime: str,
    handler: str,
    code: dict[str, str],
) -> None:
    layer = publish(lam, layer_arns, {"wrapper.sh": WRAPPER}, ("wrapper.sh",))
    name = functions.create(
        code,
        handler=handler,
        runtime=runtime,
        Layers=[layer],
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh"}},
    )["FunctionName"]
    result = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    assert result["wrapped"] == "yes"
    # The wrapper got the runtime's own command line, which it ran.
    assert "bootstrap" in result["args"]


def test_node_options_reach_the_runtime(lam: Any, functions: Functions) -> None:
    code = {
        "preload.js": "globalThis.preloaded = 'by NODE_OPTIONS';\n",
        "index.js": "exports.handler = async () => globalThis.preloaded || null;\n",
    }
    name = functions.create(
        code,
        handler="index.handler",
        runtime="nodejs20.x",
        # Relative to the working directory, the code's (/var/task in a namespace sandbox).
        Environment={"Variables": {"NODE_OPTIONS": "--require ./preload.js"}},
    )["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(resp["Payload"].read()) == "by NODE_OPTIONS"


def test_missing_exec_wrapper_is_an_invalid_entrypoint(lam: Any, functions: Functions) -> None:
    name = functions.create(
        HANDLER_PY,
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/nowhere.sh"}},
    )["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorType"] == "Runtime.InvalidEntrypoint"
