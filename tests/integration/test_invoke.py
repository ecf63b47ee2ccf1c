"""Invoke: results, errors and environments, as Lambda behaves."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, make_zip

PROBE = """
import os, json, tempfile
count = 0
def client_context(cc):
    if cc is None:
        return None
    return {"custom": cc.custom, "env": cc.env, "app_title": cc.client and cc.client.app_title}
def handler(event, context):
    global count
    count += 1
    path = os.path.join(tempfile.gettempdir(), "seen")
    with open(path, "a") as f:
        f.write("x")
    return {
        "event": event,
        "count": count,
        "pid": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
        "tmp_seen": open(path).read(),
        "cwd": os.getcwd(),
        "ctx": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "client_context": client_context(context.client_context),
        },
        "env": {k: v for k, v in os.environ.items()},
    }
"""


def invoke(lam: Any, name: str, payload: Any = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    args: dict[str, Any] = {"FunctionName": name, **kw}
    if payload is not None:
        args["Payload"] = json.dumps(payload)
    resp = lam.invoke(**args)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def test_result_and_context(functions: Functions, lam: Any) -> None:
    created = functions.create(PROBE, MemorySize=256, Timeout=10)
    name = created["FunctionName"]
    resp, out = invoke(lam, name, {"hello": "world"})
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    assert out["event"] == {"hello": "world"}
    ctx = out["ctx"]
    assert ctx["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == created["FunctionArn"]
    assert ctx["memory_limit_in_mb"] == "256"
    assert 8000 < ctx["remaining"] <= 10000
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert ctx["log_stream_name"].endswith(ctx["log_stream_name"][-32:])
    assert "[$LATEST]" in ctx["log_stream_name"]
    assert ctx["client_context"] is None


def test_lambda_environment_variables(functions: Functions, lam: Any, server: Server) -> None:
    name = functions.create(PROBE, Environment={"Variables": {"MY_VAR": "mine", "TZ": "x"}})[
        "FunctionName"
    ]
    _, out = invoke(lam, name)
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == out["ctx"]["log_stream_name"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == out["cwd"]
    assert env["AWS_ENDPOINT_URL"] == server.endpoint
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LANG", "PATH"):
        assert env[key]
    # The function's own variables, including overrides of non-reserved ones.
    assert env["MY_VAR"] == "mine"
    assert env["TZ"] == "x"


def test_client_context_reaches_the_handler(functions: Functions, lam: Any) -> None:
    name = functions.create(PROBE)["FunctionName"]
    cc = {"client": {"app_title": "demo"}, "custom": {"k": "v"}, "env": {"locale": "en"}}
    _, out = invoke(lam, name, ClientContext=base64.b64encode(json.dumps(cc).encode()).decode())
    assert out["ctx"]["client_context"] == {
        "custom": {"k": "v"},
        "env": {"locale": "en"},
        "app_title": "demo",
    }


def test_warm_environment_is_reused(functions: Functions, lam: Any) -> None:
    name = functions.create(PROBE)["FunctionName"]
    _, first = invoke(lam, name)
    _, second = invoke(lam, name)
    assert second["pid"] == first["pid"]
    assert (first["count"], second["count"]) == (1, 2)
    assert second["tmp_seen"] == "xx", "/tmp must persist in a warm environment"
    assert first["ctx"]["aws_request_id"] != second["ctx"]["aws_request_id"]


def test_concurrent_invokes_get_their_own_environments(functions: Functions, lam: Any) -> None:
    code = "import time\ndef handler(e, c):\n    time.sleep(0.5)\n    return c.log_stream_name\n"
    name = functions.create(code)["FunctionName"]
    pids: list[str] = []

    def call() -> None:
        pids.append(json.loads(lam.invoke(FunctionName=name)["Payload"].read()))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(pids)) == 3


def test_empty_payload_is_empty_object(functions: Functions, lam: Any) -> None:
    name = functions.create("def handler(e, c):\n    return e\n")["FunctionName"]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"{}"


def test_none_result_is_null(functions: Functions, lam: Any) -> None:
    name = functions.create("def handler(e, c):\n    return None\n")["FunctionName"]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"null"


def test_handler_exception(functions: Functions, lam: Any) -> None:
    code = "def handler(e, c):\n    raise ValueError('boom ' + e['x'])\n"
    name = functions.create(code)["FunctionName"]
    resp, out = invoke(lam, name, {"x": "here"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert out["errorMessage"] == "boom here"
    assert out["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert any("raise ValueError" in line for line in out["stackTrace"])
    # The environment survives a handled exception.
    resp2, _ = invoke(lam, name, {"x": "again"})
    assert resp2["FunctionError"] == "Unhandled"


@pytest.mark.parametrize(
    ("files", "handler", "error_type"),
    [
        ({"app.py": "import no_such_module\n"}, "app.handler", "Runtime.ImportModuleError"),
        ({"app.py": "x = 1\n"}, "app.handler", "Runtime.HandlerNotFound"),
        ({"app.py": "x = 1\n"}, "nodot", "Runtime.MalformedHandlerName"),
        ({"app.py": "def handler(:\n"}, "app.handler", "Runtime.UserCodeSyntaxError"),
        ({"app.py": "raise RuntimeError('init broke')\n"}, "app.handler", "RuntimeError"),
        ({"other.py": "x = 1\n"}, "app.handler", "Runtime.ImportModuleError"),
    ],
)
def test_init_errors(
    functions: Functions, lam: Any, files: dict[str, str], handler: str, error_type: str
) -> None:
    name = functions.create(files, handler=handler)["FunctionName"]
    for _ in range(2):  # every invoke retries the init, as Lambda does
        resp, out = invoke(lam, name)
        assert resp["StatusCode"] == 200
        assert resp["FunctionError"] == "Unhandled"
        assert out["errorType"] == error_type


def test_timeout_kills_environment(functions: Functions, lam: Any) -> None:
    code = (
        "import os, time\n"
        "def handler(e, c):\n"
        "    if e.get('sleep'):\n"
        "        time.sleep(30)\n"
        "    return c.log_stream_name\n"
    )
    name = functions.create(code, Timeout=1)["FunctionName"]
    _, pid_before = invoke(lam, name)
    resp, out = invoke(lam, name, {"sleep": True})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in out["errorMessage"]
    assert resp["ResponseMetadata"]["RequestId"] in out["errorMessage"]
    resp, pid_after = invoke(lam, name)
    assert "FunctionError" not in resp
    assert pid_after != pid_before, "a timed-out environment must not be reused"


def test_runtime_exit(functions: Functions, lam: Any) -> None:
    code = "import os\ndef handler(e, c):\n    os._exit(3)\n"
    name = functions.create(code)["FunctionName"]
    resp, out = invoke(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in out["errorMessage"]
    resp, out = invoke(lam, name)  # a new environment, same fate
    assert out["errorType"] == "Runtime.ExitError"


def test_unserialisable_result(functions: Functions, lam: Any) -> None:
    name = functions.create("def handler(e, c):\n    return {1, 2}\n")["FunctionName"]
    resp, out = invoke(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.MarshalError"


def test_response_too_large(functions: Functions, lam: Any) -> None:
    code = "def handler(e, c):\n    return 'x' * (6 * 1024 * 1024 + 10)\n"
    name = functions.create(code, MemorySize=512)["FunctionName"]
    resp, out = invoke(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Function.ResponseSizeTooLarge"


def test_request_too_large(functions: Functions, lam: Any) -> None:
    name = functions.create("def handler(e, c):\n    return 1\n")["FunctionName"]
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName=name, Payload=json.dumps("x" * (6 * 1024 * 1024)))


def test_payload_must_be_json(functions: Functions, lam: Any) -> None:
    name = functions.create("def handler(e, c):\n    return 1\n")["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"{not json")


def test_dry_run(functions: Functions, lam: Any) -> None:
    code = "import os\ndef handler(e, c):\n    open(os.environ['MARK'], 'w').write('ran')\n"
    name = functions.create(code, Environment={"Variables": {"MARK": "/nonexistent/x"}})[
        "FunctionName"
    ]
    resp = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-fn", InvocationType="DryRun")


def test_update_code_retires_old_environments(functions: Functions, lam: Any) -> None:
    v1 = "import os\ndef handler(e, c):\n    return ['v1', c.log_stream_name]\n"
    v2 = "import os\ndef handler(e, c):\n    return ['v2', c.log_stream_name]\n"
    name = functions.create(v1)["FunctionName"]
    _, (version, pid1) = invoke(lam, name)
    assert version == "v1"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": v2}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    _, (version, pid2) = invoke(lam, name)
    assert version == "v2"
    assert pid2 != pid1


def test_update_configuration_retires_old_environments(functions: Functions, lam: Any) -> None:
    code = "import os\ndef handler(e, c):\n    return [os.environ.get('KEY'), c.log_stream_name]\n"
    name = functions.create(code)["FunctionName"]
    _, (value, pid1) = invoke(lam, name)
    assert value is None
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"KEY": "v"}})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    _, (value, pid2) = invoke(lam, name)
    assert value == "v"
    assert pid2 != pid1


def test_crash_of_one_function_does_not_hurt_another(functions: Functions, lam: Any) -> None:
    good = functions.create("def handler(e, c):\n    return 'fine'\n")["FunctionName"]
    bad = functions.create("import os\ndef handler(e, c):\n    os._exit(1)\n")["FunctionName"]
    for _ in range(3):
        assert lam.invoke(FunctionName=bad)["FunctionError"] == "Unhandled"
        assert lam.invoke(FunctionName=good)["Payload"].read() == b'"fine"'


def test_invoke_over_raw_http_headers(functions: Functions, server: Server) -> None:
    name = functions.create("def handler(e, c):\n    return e\n")["FunctionName"]
    resp = SIGNED_HTTP.post(
        f"{server.endpoint}/2015-03-31/functions/{name}/invocations", content=b'{"a": [1, 2]}'
    )
    assert resp.status_code == 200
    assert resp.headers["X-Amz-Executed-Version"] == "$LATEST"
    assert resp.headers["x-amzn-RequestId"]
    assert resp.json() == {"a": [1, 2]}


def test_out_of_memory(functions: Functions, lam: Any) -> None:
    code = (
        "import time\n"
        "def handler(e, c):\n"
        "    hog = []\n"
        "    for _ in range(64):\n"
        "        hog.append(bytearray(8 * 1024 * 1024))\n"
        "        time.sleep(0.01)\n"
        "    return len(hog)\n"
    )
    name = functions.create(code, MemorySize=128, Timeout=30)["FunctionName"]
    resp, out = invoke(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.OutOfMemory"
    assert "signal: killed" in out["errorMessage"]
    # Within its memory the same code works.
    lam.update_function_configuration(FunctionName=name, MemorySize=1024)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    resp, out = invoke(lam, name)
    assert "FunctionError" not in resp
    assert out == 64


def test_killed_by_a_signal(functions: Functions, lam: Any) -> None:
    code = "import os, signal\ndef handler(e, c):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    name = functions.create(code)["FunctionName"]
    _, out = invoke(lam, name)
    assert out["errorType"] == "Runtime.ExitError"
    assert out["errorMessage"].endswith("Runtime exited with error: signal: killed")
