"""The Node.js runtime (`nodejs20.x`): handler loading, the invocation contract, the context
object, error shapes and logging, as AWS's Node.js runtime behaves."""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
from typing import Any

import pytest
from tests.conftest import ROLE, SIGNED_HTTP, Functions, Server, make_zip

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

RUNTIME = "nodejs20.x"


def create(functions: Functions, files: dict[str, str | bytes], **kwargs: Any) -> str:
    kwargs.setdefault("handler", "index.handler")
    name: str = functions.create(files, runtime=RUNTIME, **kwargs)["FunctionName"]
    return name


def invoke(lam: Any, name: str, payload: Any = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    args: dict[str, Any] = {"FunctionName": name, **kw}
    if payload is not None:
        args["Payload"] = json.dumps(payload)
    resp = lam.invoke(**args)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def ok(lam: Any, name: str, payload: Any = None, **kw: Any) -> Any:
    resp, out = invoke(lam, name, payload, **kw)
    assert "FunctionError" not in resp, out
    return out


def failed(lam: Any, name: str, payload: Any = None) -> tuple[dict[str, Any], Any]:
    resp, out = invoke(lam, name, payload)
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled", out
    return resp, out


def function_log(server: Server, marker: str, request_id: str | None = None) -> str:
    """Everything the environments logged, from the log that contains `marker` (and, if
    given, the REPORT line of `request_id`: the whole invocation)."""
    # Logs reach the store a moment after the invocation (they are written in batches).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for text in server.streams_text().values():
            if marker in text and (request_id is None or f"REPORT RequestId: {request_id}" in text):
                return text
        time.sleep(0.05)
    raise AssertionError(f"no function log contains {marker!r}")


# -- handler loading ------------------------------------------------------------------------

PID_AND_EVENT = "({ pid: process.env.AWS_LAMBDA_LOG_STREAM_NAME, event })"


@pytest.mark.parametrize(
    ("files", "handler"),
    [
        pytest.param(
            {"index.js": f"exports.handler = async (event) => {PID_AND_EVENT};\n"},
            "index.handler",
            id="commonjs-index.js",
        ),
        pytest.param(
            {"index.mjs": f"export const handler = async (event) => {PID_AND_EVENT};\n"},
            "index.handler",
            id="esm-index.mjs",
        ),
        pytest.param(
            {
                "package.json": '{"type": "module"}',
                "app.js": f"export async function run(event) {{ return {PID_AND_EVENT}; }}\n",
            },
            "app.run",
            id="esm-js-type-module",
        ),
        pytest.param(
            {"lib.cjs": f"module.exports.go = async (event) => {PID_AND_EVENT};\n"},
            "lib.go",
            id="commonjs-.cjs",
        ),
        pytest.param(
            {
                "src/api/main.mjs": (
                    f"export const handlers = {{ get: async (event) => {PID_AND_EVENT} }};\n"
                )
            },
            "src/api/main.handlers.get",
            id="directory-and-nested-property",
        ),
        pytest.param(
            {
                "node_modules/mypkg/package.json": '{"main": "lib/entry.js"}',
                "node_modules/mypkg/lib/entry.js": (
                    f"exports.handler = async (event) => {PID_AND_EVENT};\n"
                ),
            },
            "mypkg.handler",
            id="package-resolved-from-node_modules",
        ),
    ],
)
def test_module_kinds(
    functions: Functions, lam: Any, files: dict[str, str | bytes], handler: str
) -> None:
    name = create(functions, files, handler=handler)
    out = ok(lam, name, {"hello": "node"})
    assert out["event"] == {"hello": "node"}
    assert out["pid"].startswith("20")  # the environment's log stream: one per environment


def test_package_resolved_through_node_path(functions: Functions, lam: Any) -> None:
    """With no such file in the code, the module is resolved as a package, NODE_PATH included
    (where Lambda puts /opt/nodejs/node_modules for layers)."""
    name = create(
        functions,
        {"lib/modules/shared/index.js": "exports.handler = async () => __filename;\n"},
        handler="shared.handler",
        # relative entries resolve from the working directory, the code's root
        Environment={"Variables": {"NODE_PATH": "lib/modules"}},
    )
    assert ok(lam, name).endswith("/lib/modules/shared/index.js")


# -- the invocation contract --------------------------------------------------------------------


def test_async_handler_result(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event) => ({ doubled: event.n * 2, list: [1, 'two', null] });\n"
    )
    name = create(functions, {"index.js": code})
    assert ok(lam, name, {"n": 21}) == {"doubled": 42, "list": [1, "two", None]}


def test_callback_handler(functions: Functions, lam: Any) -> None:
    code = "exports.handler = (event, context, callback) => callback(null, { got: event.v });\n"
    name = create(functions, {"index.js": code})
    assert ok(lam, name, {"v": "cb"}) == {"got": "cb"}


def test_undefined_result_is_null(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": "exports.handler = async () => undefined;\n"})
    resp = lam.invoke(FunctionName=name)
    assert "FunctionError" not in resp
    assert resp["Payload"].read() == b"null"


def test_sync_return_without_callback_is_null(functions: Functions, lam: Any) -> None:
    """A non-async handler answers through its callback; its return value is ignored."""
    name = create(functions, {"index.js": "exports.handler = (event) => 42;\n"})
    assert ok(lam, name) is None


def test_callback_waits_for_empty_event_loop(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = (event, context, callback) => {\n"
        "  const result = { timerFired: false, waits: context.callbackWaitsForEmptyEventLoop };\n"
        "  setTimeout(() => { result.timerFired = true; }, 400);\n"
        "  callback(null, result);\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    ok(lam, name)  # the cold start
    started = time.monotonic()
    out = ok(lam, name)
    elapsed = time.monotonic() - started
    # The response is sent once the timer has run: the result is serialised then.
    assert out == {"timerFired": True, "waits": True}
    assert elapsed >= 0.38


def test_callback_without_waiting_freezes_pending_work(functions: Functions, lam: Any) -> None:
    code = (
        "let fired = 0;\n"
        "exports.handler = (event, context, callback) => {\n"
        "  context.callbackWaitsForEmptyEventLoop = false;\n"
        "  const seen = fired;\n"
        "  setTimeout(() => { fired += 1; }, 500);\n"
        "  callback(null, { seen, pid: process.env.AWS_LAMBDA_LOG_STREAM_NAME });\n"
        "};\n"
    )
    # One vCPU's worth of memory: at 128 MB the namespace sandbox gives 7% of a CPU, as
    # Lambda does, and the timing below would measure that cap rather than the freeze.
    name = create(functions, {"index.js": code}, MemorySize=1769)
    first = ok(lam, name)
    timings, seen = [], [first["seen"]]
    for _ in range(2):
        time.sleep(0.8)  # the timer is due, but the environment is frozen
        started = time.monotonic()
        out = ok(lam, name)
        timings.append(time.monotonic() - started)
        assert out["pid"] == first["pid"]
        seen.append(out["seen"])
    assert max(timings) < 0.45, "the response must not wait for the timer"
    # Each timer runs only once its environment is thawed by the next invoke, after that
    # invoke's handler has run.
    assert seen == [0, 0, 1]


def test_async_handler_leftover_work_is_frozen(functions: Functions, lam: Any) -> None:
    code = (
        "let ticks = 0;\n"
        "setInterval(() => { ticks += 1; }, 50);\n"
        "exports.handler = async () => ticks;\n"
    )
    name = create(functions, {"index.js": code})
    first = ok(lam, name)
    time.sleep(0.5)
    second = ok(lam, name)
    # Lambda freezes the sandbox between invocations: ~10 ticks would be due, at most one runs.
    assert second - first <= 1


def test_legacy_context_methods(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = (event, context) => {\n"
        "  if (event.how === 'succeed') context.succeed({ via: 'succeed' });\n"
        "  else if (event.how === 'done') context.done(null, { via: 'done' });\n"
        "  else if (event.how === 'done-error') context.done(new Error('via done'));\n"
        "  else if (event.how === 'fail') context.fail(new Error('via fail'));\n"
        "  else context.fail();\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    assert ok(lam, name, {"how": "succeed"}) == {"via": "succeed"}
    assert ok(lam, name, {"how": "done"}) == {"via": "done"}
    _, out = failed(lam, name, {"how": "done-error"})
    assert (out["errorType"], out["errorMessage"]) == ("Error", "via done")
    _, out = failed(lam, name, {"how": "fail"})
    assert (out["errorType"], out["errorMessage"]) == ("Error", "via fail")
    _, out = failed(lam, name, {"how": "fail-empty"})
    assert out == {"errorType": "string", "errorMessage": "handled", "trace": []}


def test_only_the_first_answer_counts(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event, context, callback) => {\n"
        "  context.succeed('first');\n"
        "  callback(null, 'second');\n"
        "  context.fail(new Error('third'));\n"
        "  return 'fourth';\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    assert ok(lam, name) == "first"
    assert ok(lam, name) == "first"


def test_async_handler_that_never_settles(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": "exports.handler = async () => new Promise(() => {});\n"})
    _, out = failed(lam, name)
    assert out["errorType"] == "Runtime.NodeJsExit"
    assert out["errorMessage"].startswith(
        "The Lambda runtime client detected an unexpected Node.js exit code."
    )
    # Nothing was left to wait for, so the environment is still usable.
    assert failed(lam, name)[1]["errorType"] == "Runtime.NodeJsExit"


def test_unserialisable_result(functions: Functions, lam: Any) -> None:
    code = "exports.handler = async () => { const a = {}; a.self = a; return a; };\n"
    name = create(functions, {"index.js": code})
    _, out = failed(lam, name)
    assert out["errorType"] == "Error"
    assert out["errorMessage"] == "Unable to stringify response body"


def test_response_streaming_handler_is_buffered(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = awslambda.streamifyResponse(async (event, stream, context) => {\n"
        "  stream.setContentType('text/plain');\n"
        "  stream.write('hello ');\n"
        "  stream.write(context.functionName ? 'stream' : '?');\n"
        "  stream.end();\n"
        "});\n"
    )
    name = create(functions, {"index.js": code})
    resp = lam.invoke(FunctionName=name)
    assert "FunctionError" not in resp
    assert resp["Payload"].read() == b"hello stream"


# -- the context object and the environment ----------------------------------------------------

CONTEXT_PROBE = """
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  return {
    count,
    pid: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    cwd: process.cwd(),
    keys: Object.keys(context),
    json: JSON.parse(JSON.stringify(context)),
    remaining: context.getRemainingTimeInMillis(),
    clientContext: context.clientContext ?? null,
    identity: context.identity ?? null,
    env: process.env,
  };
};
"""


def test_context_fields(functions: Functions, lam: Any) -> None:
    created = functions.create(
        {"index.js": CONTEXT_PROBE},
        handler="index.handler",
        runtime=RUNTIME,
        MemorySize=256,
        Timeout=7,
    )
    name = created["FunctionName"]
    resp, out = invoke(lam, name)
    assert "FunctionError" not in resp
    ctx = out["json"]
    assert ctx["awsRequestId"] == resp["ResponseMetadata"]["RequestId"]
    assert ctx["invokedFunctionArn"] == created["FunctionArn"]
    assert ctx["functionName"] == name
    assert ctx["functionVersion"] == "$LATEST"
    assert ctx["memoryLimitInMB"] == "256"
    assert ctx["logGroupName"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in ctx["logStreamName"]
    assert ctx["logStreamName"] == out["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert ctx["callbackWaitsForEmptyEventLoop"] is True
    assert 5000 < out["remaining"] <= 7000
    assert out["clientContext"] is None
    assert out["identity"] is None
    # Every field AWS's context has, in AWS's order (JSON.stringify(context) matches).
    assert out["keys"] == [
        "callbackWaitsForEmptyEventLoop",
        "succeed",
        "fail",
        "done",
        "functionVersion",
        "functionName",
        "memoryLimitInMB",
        "logGroupName",
        "logStreamName",
        "clientContext",
        "identity",
        "invokedFunctionArn",
        "awsRequestId",
        "tenantId",
        "getRemainingTimeInMillis",
    ]


def test_client_context(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": CONTEXT_PROBE})
    cc = {
        "client": {"installation_id": "i-1", "app_title": "demo", "app_package_name": "p"},
        "custom": {"k": "v"},
        "env": {"locale": "en"},
    }
    encoded = base64.b64encode(json.dumps(cc).encode()).decode()
    out = ok(lam, name, ClientContext=encoded)
    assert out["clientContext"] == cc


def test_environment_variables(functions: Functions, lam: Any, server: Server) -> None:
    name = create(
        functions, {"index.js": CONTEXT_PROBE}, Environment={"Variables": {"MY_VAR": "mine"}}
    )
    out = ok(lam, name)
    env = out["env"]
    assert env["MY_VAR"] == "mine"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs20.x"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["_HANDLER"] == "index.handler"
    assert env["LAMBDA_TASK_ROOT"] == out["cwd"]
    assert out["cwd"] in env["NODE_PATH"].split(":")
    assert env["AWS_ENDPOINT_URL"] == server.endpoint
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    # The trace id is the invocation's own.
    assert ok(lam, name)["env"]["_X_AMZN_TRACE_ID"] != env["_X_AMZN_TRACE_ID"]


def test_warm_environment_is_reused(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": CONTEXT_PROBE})
    first, second, third = (ok(lam, name) for _ in range(3))
    assert first["pid"] == second["pid"] == third["pid"]
    assert (first["count"], second["count"], third["count"]) == (1, 2, 3)
    assert first["json"]["awsRequestId"] != second["json"]["awsRequestId"]


# -- errors from the handler --------------------------------------------------------------------


def assert_error(out: Any, error_type: str, message: str, first_frame_file: str) -> None:
    assert set(out) == {"errorType", "errorMessage", "trace"}
    assert out["errorType"] == error_type
    assert out["errorMessage"] == message
    assert out["trace"][0] == f"{error_type}: {message}"
    assert first_frame_file in out["trace"][1]
    assert all(line.startswith("    at ") for line in out["trace"][1:])


def test_thrown_error(functions: Functions, lam: Any) -> None:
    code = "exports.handler = async (event) => { throw new TypeError('boom ' + event.x); };\n"
    name = create(functions, {"index.js": code})
    _, out = failed(lam, name, {"x": "here"})
    assert_error(out, "TypeError", "boom here", "/index.js:1:")
    # The environment survives an error the handler reports.
    assert failed(lam, name, {"x": "again"})[1]["errorMessage"] == "boom again"


def test_error_thrown_synchronously_by_callback_handler(functions: Functions, lam: Any) -> None:
    code = (
        "class MyError extends Error {}\n"
        "MyError.prototype.name = 'MyError';\n"
        "exports.handler = (event, context, callback) => { throw new MyError('sync'); };\n"
    )
    name = create(functions, {"index.js": code})
    _, out = failed(lam, name)
    assert_error(out, "MyError", "sync", "/index.js:3:")


def test_rejected_promise(functions: Functions, lam: Any) -> None:
    code = "exports.handler = () => Promise.reject(new RangeError('rejected'));\n"
    name = create(
        functions, {"index.mjs": code.replace("exports.handler =", "export const handler =")}
    )
    _, out = failed(lam, name)
    assert_error(out, "RangeError", "rejected", "/index.mjs:1:")


def test_callback_error(functions: Functions, lam: Any) -> None:
    code = "exports.handler = (event, context, callback) => callback(new Error('via callback'));\n"
    name = create(functions, {"index.js": code})
    _, out = failed(lam, name)
    assert_error(out, "Error", "via callback", "/index.js:1:")


@pytest.mark.parametrize(
    ("thrown", "expected"),
    [
        ("'a plain string'", {"errorType": "string", "errorMessage": "a plain string"}),
        ("42", {"errorType": "number", "errorMessage": "42"}),
        ("{ code: 7 }", {"errorType": "object", "errorMessage": "[object Object]"}),
    ],
)
def test_non_error_values(
    functions: Functions, lam: Any, thrown: str, expected: dict[str, str]
) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        f"  if (event.how === 'throw') throw {thrown};\n"
        f"  if (event.how === 'reject') return Promise.reject({thrown});\n"
        "};\n"
        "exports.cb = (event, context, callback) => callback(" + thrown + ");\n"
    )
    name = create(functions, {"index.js": code})
    for how in ("throw", "reject"):
        _, out = failed(lam, name, {"how": how})
        assert out == {**expected, "trace": []}
    cb = create(functions, {"index.js": code}, handler="index.cb")
    assert failed(lam, cb)[1] == {**expected, "trace": []}


# -- init errors ---------------------------------------------------------------------------------


def init_attempts(server: Server, name: str) -> int:
    """How often the function's init logged its mark (its log is written within ~0.2 s)."""
    count = 0
    for _ in range(50):
        events = server.log_events(f"/aws/lambda/{name}")
        count = sum(message.count("lamina-init-attempt") for _, message in events)
        if count >= 2:
            break
        time.sleep(0.05)
    return count


MARK_INIT = "console.log('lamina-init-attempt');\n"


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message", "runs_init"),
    [
        pytest.param(
            {"other.js": MARK_INIT},
            "index.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'index'\nRequire stack:\n- ",
            False,
            id="module-missing",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "require('no-such-package');\n"},
            "index.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'no-such-package'\nRequire stack:\n- ",
            True,
            id="dependency-missing",
        ),
        pytest.param(
            {"index.js": MARK_INIT, "broken.js": "exports.handler = (;\n"},
            "broken.handler",
            "Runtime.UserCodeSyntaxError",
            "SyntaxError: Unexpected token ';'",
            False,
            id="syntax-error",
        ),
        pytest.param(
            {"index.mjs": "export const handler = async () => { await; };\n"},
            "index.handler",
            "Runtime.UserCodeSyntaxError",
            "SyntaxError: Unexpected token ';'",
            False,
            id="esm-syntax-error",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "exports.other = async () => 1;\n"},
            "index.handler",
            "Runtime.HandlerNotFound",
            "index.handler is undefined or not exported",
            True,
            id="handler-not-exported",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "exports.handler = 42;\n"},
            "index.handler",
            "Runtime.HandlerNotFound",
            "index.handler is not a function",
            True,
            id="handler-not-a-function",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "exports.handler = async () => 1;\n"},
            "index",
            "Runtime.MalformedHandlerName",
            "Bad handler",
            False,
            id="handler-without-dot",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "exports.handler = async () => 1;\n"},
            "../index.handler",
            "Runtime.MalformedHandlerName",
            "'../index.handler' is not a valid handler name. Use absolute paths when "
            "specifying root directories in handler names.",
            False,
            id="handler-with-dotdot",
        ),
        pytest.param(
            {"index.js": MARK_INIT + "throw new RangeError('init broke');\n"},
            "index.handler",
            "RangeError",
            "init broke",
            True,
            id="throw-at-top-level",
        ),
        pytest.param(
            {"index.mjs": "await Promise.reject(new Error('top-level await'));\n"},
            "index.handler",
            "Error",
            "top-level await",
            False,
            id="esm-top-level-await-rejects",
        ),
    ],
)
def test_init_errors(
    server: Server,
    functions: Functions,
    lam: Any,
    files: dict[str, str | bytes],
    handler: str,
    error_type: str,
    message: str,
    runs_init: bool,
) -> None:
    name = create(functions, files, handler=handler)
    for _ in range(2):  # every invoke retries the init, as Lambda does
        _, out = failed(lam, name)
        assert set(out) == {"errorType", "errorMessage", "trace"}
        assert out["errorType"] == error_type
        if message.endswith("- "):
            assert out["errorMessage"].startswith(message)
            assert out["errorMessage"].endswith("bootstrap.mjs")
        else:
            assert out["errorMessage"] == message
        assert out["trace"][0] == f"{error_type}: {out['errorMessage'].splitlines()[0]}"
    if runs_init:
        assert init_attempts(server, name) == 2, "each invoke must run the init again"


def test_init_error_then_fixed_code(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": "exports.nothing = 1;\n"})
    assert failed(lam, name)[1]["errorType"] == "Runtime.HandlerNotFound"
    lam.update_function_code(
        FunctionName=name,
        ZipFile=make_zip({"index.js": "exports.handler = async () => 'fixed';\n"}),
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert ok(lam, name) == "fixed"


# -- failures that end the environment ----------------------------------------------------------


def test_timeout(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        "  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, 3000));\n"
        "  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
        "};\n"
    )
    name = create(functions, {"index.js": code}, Timeout=1)
    pid_before = ok(lam, name)
    started = time.monotonic()
    resp, out = failed(lam, name, {"sleep": True})
    assert time.monotonic() - started < 2.5
    assert out["errorType"] == "Sandbox.Timedout"
    assert out["errorMessage"] == (
        f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Task timed out after "
        "1.00 seconds"
    )
    assert ok(lam, name) != pid_before, "a timed-out environment must not be reused"


def test_process_exit(functions: Functions, lam: Any) -> None:
    name = create(functions, {"index.js": "exports.handler = async () => process.exit(2);\n"})
    resp, out = failed(lam, name)
    assert out["errorType"] == "Runtime.ExitError"
    assert out["errorMessage"] == (
        f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Runtime exited with error: "
        "exit status 2"
    )


def test_unhandled_rejection(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        "  if (event.reject) Promise.reject(new Error('nobody listens'));\n"
        "  await new Promise((resolve) => setTimeout(resolve, 200));\n"
        "  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    pid_before = ok(lam, name)
    _, out = failed(lam, name, {"reject": True})
    assert set(out) == {"errorType", "errorMessage", "trace"}
    assert out["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert out["errorMessage"] == "Error: nobody listens"
    assert out["trace"][0] == "Runtime.UnhandledPromiseRejection: Error: nobody listens"
    # As on Lambda, the runtime exits (status 128) after reporting it: the next invoke, sent
    # at once, is run by a fresh environment, not handed to the dying one.
    assert ok(lam, name) != pid_before


def test_unhandled_rejection_after_the_response(functions: Functions, lam: Any) -> None:
    """The result is already posted when the rejection surfaces: it stands, and the runtime
    exits after reporting the rejection, as on Lambda."""
    code = (
        "async function fails() { throw new Error('too late'); }\n"
        "exports.handler = async (event) => {\n"
        "  if (event.reject) fails();\n"
        "  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    pid = ok(lam, name, {"reject": True})
    assert ok(lam, name) != pid


def test_uncaught_exception(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        "  if (event.boom) setTimeout(() => { throw new SyntaxError('from a timer'); }, 10);\n"
        "  await new Promise((resolve) => setTimeout(resolve, 200));\n"
        "  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    pid_before = ok(lam, name)
    _, out = failed(lam, name, {"boom": True})
    assert_error(out, "SyntaxError", "from a timer", "/index.js:2:")
    # The runtime exits (status 129) after reporting it, as on Lambda.
    assert ok(lam, name) != pid_before


def test_uninstalled_node_runtime_is_refused(lam: Any, server: Server) -> None:
    installed = {
        r["Runtime"]
        for r in SIGNED_HTTP.get(f"{server.endpoint}/lamina/runtimes").json()["Runtimes"]
        if not r.get("Missing")
    }
    missing = [r for r in ("nodejs18.x", "nodejs22.x", "nodejs24.x") if r not in installed]
    if not missing:
        pytest.skip("every Node.js runtime Lamina knows is installed here")
    name = f"t-{uuid.uuid4().hex[:12]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(
            FunctionName=name,
            Runtime=missing[0],
            Role=ROLE,
            Handler="index.handler",
            Code={"ZipFile": make_zip({"index.js": "exports.handler = async () => 1;\n"})},
        )
    message = e.value.response["Error"]["Message"]
    major = missing[0].removeprefix("nodejs").removesuffix(".x")
    # What the host lacks, as `lamina runtimes` says it.
    assert f"The runtime {missing[0]} is not available on this Lamina host: no Node.js {major}" in (
        message
    )


# -- logging -------------------------------------------------------------------------------------


def test_console_output_format(functions: Functions, lam: Any, server: Server) -> None:
    marker = uuid.uuid4().hex
    code = (
        f"console.log('init {marker}');\n"
        "exports.handler = async (event) => {\n"
        f"  console.log('log {marker}', {{ a: 1 }});\n"
        f"  console.info('info %s', '{marker}');\n"
        f"  console.warn('warn {marker}');\n"
        f"  console.error('error {marker}');\n"
        f"  console.debug('debug {marker}');\n"
        f"  console.trace('trace {marker}');\n"
        f"  console.log('multi\\nline {marker}');\n"
        "  return 'logged';\n"
        "};\n"
    )
    name = create(functions, {"index.js": code})
    resp, out = invoke(lam, name)
    assert out == "logged"
    request_id = resp["ResponseMetadata"]["RequestId"]
    log = function_log(server, marker, request_id)
    lines = [line for line in log.split("\n") if marker in line]
    records = [line.split("\t", 3) for line in lines]
    for timestamp, *_ in records:
        assert timestamp.endswith("Z") and "T" in timestamp and len(timestamp) == 24
    assert [r[1:] for r in records] == [
        ["undefined", "INFO", f"init {marker}"],
        [request_id, "INFO", f"log {marker} {{ a: 1 }}"],
        [request_id, "INFO", f"info {marker}"],
        [request_id, "WARN", f"warn {marker}"],
        [request_id, "ERROR", f"error {marker}"],
        [request_id, "DEBUG", f"debug {marker}"],
        [request_id, "TRACE", f"trace {marker}"],
        [request_id, "INFO", f"multi\rline {marker}"],
    ]


def test_invoke_error_is_logged(functions: Functions, lam: Any, server: Server) -> None:
    marker = uuid.uuid4().hex
    code = f"exports.handler = async () => {{ throw new Error('{marker}'); }};\n"
    name = create(functions, {"index.js": code})
    resp, _ = failed(lam, name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    line = next(
        line for line in function_log(server, marker).split("\n") if "\tERROR\tInvoke Error" in line
    )
    _, rid, level, text = line.split("\t", 3)
    assert (rid, level) == (request_id, "ERROR")
    assert text.startswith("Invoke Error \t")
    logged = json.loads(text.split("\t", 1)[1])
    assert logged["errorType"] == "Error"
    assert logged["errorMessage"] == marker
    assert logged["stack"][0] == f"Error: {marker}"


def test_json_log_format_and_level(functions: Functions, lam: Any, server: Server) -> None:
    marker = uuid.uuid4().hex
    code = (
        "exports.handler = async () => {\n"
        f"  console.info('hidden {marker}');\n"
        f"  console.warn('shown %s', '{marker}');\n"
        f"  console.error(new TypeError('{marker}'));\n"
        "  return 1;\n"
        "};\n"
    )
    variables = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"}
    name = create(functions, {"index.js": code}, Environment={"Variables": variables})
    resp, _ = invoke(lam, name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    records = [
        json.loads(line)
        for line in function_log(server, marker).split("\n")
        if line.startswith("{") and marker in line
    ]
    assert [(r["level"], r["requestId"]) for r in records] == [
        ("WARN", request_id),
        ("ERROR", request_id),
    ]
    assert records[0]["message"] == f"shown {marker}"
    error = records[1]["message"]
    assert (error["errorType"], error["errorMessage"]) == ("TypeError", marker)
    assert error["stackTrace"][0] == f"TypeError: {marker}"


def test_response_too_large(functions: Functions, lam: Any) -> None:
    code = (
        "exports.handler = async (event) => event.big ? 'x'.repeat(6 * 1024 * 1024 + 10) : "
        "process.env.AWS_LAMBDA_LOG_STREAM_NAME;\n"
    )
    name = create(functions, {"index.js": code}, MemorySize=512)
    pid = ok(lam, name)
    _, out = failed(lam, name, {"big": True})
    assert out["errorType"] == "Function.ResponseSizeTooLarge"
    assert ok(lam, name) == pid, "the environment survives an oversized response"
