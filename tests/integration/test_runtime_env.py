"""The execution environment around the handler, as Lambda's: the sandbox user and home
directory, PATH and the runtime image, the bundled SDKs (boto3, the AWS SDK for JavaScript v3)
calling Lamina with the function's role, other AWS services refused clearly or sent where the
user points them, the tenant id, Max Memory Used without /tmp."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import SIGNED_HTTP, Functions, Server, free_port

ACCOUNT = "000000000000"
NAMESPACE = os.environ.get("LAMINA_TEST_SANDBOX", "namespace") == "namespace" and os.geteuid() == 0

PY_PROBE = """
import getpass, json, os, pathlib, shutil, sys
try:
    import boto3
except ImportError:
    boto3 = None

def handler(event, context):
    try:
        import yaml  # on the host's site-packages, never on Lambda's Python
        has_yaml = True
    except ImportError:
        has_yaml = False
    return {
        "home": str(pathlib.Path.home()),
        "expanded": os.path.expanduser("~"),
        "user": getpass.getuser(),
        "uid": os.getuid(),
        "path": os.environ["PATH"],
        "python_on_path": os.path.realpath(shutil.which("python3.11") or ""),
        "executable": os.path.realpath(sys.executable),
        "sys_path": sys.path,
        "yaml": has_yaml,
        "boto3": boto3.__version__ if boto3 else None,
        "boto3_file": boto3.__file__ if boto3 else None,
        "tenant": context.tenant_id,
        "env": dict(os.environ),
    }
"""

PY_SDK = """
import boto3, botocore.config

def handler(event, context):
    config = botocore.config.Config(retries={"total_max_attempts": 1})
    if event["service"] == "lambda":
        client = boto3.client("lambda", config=config)
        names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
        try:
            client.invoke(FunctionName=event["denied"])
            denied = None
        except client.exceptions.ClientError as e:
            denied = e.response["Error"]["Code"]
        return {"names": names, "denied": denied}
    client = boto3.client("dynamodb", config=config)
    try:
        return {"tables": client.list_tables()["TableNames"]}
    except Exception as e:
        error = getattr(e, "response", {}).get("Error", {})
        return {"error": type(e).__name__, "code": error.get("Code"), "message": str(e)}
"""

NODE_CJS = """
const os = require('os');
const { LambdaClient, ListFunctionsCommand } = require('@aws-sdk/client-lambda');
exports.handler = async (event, context) => {
  const out = await new LambdaClient({ maxAttempts: 1 }).send(new ListFunctionsCommand({}));
  return {
    names: out.Functions.map((f) => f.FunctionName),
    home: os.homedir(),
    user: os.userInfo().username,
    tenant: context.tenantId ?? null,
  };
};
"""

NODE_ESM = """
import { LambdaClient, ListFunctionsCommand } from '@aws-sdk/client-lambda';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
export const handler = async () => {
  const out = await new LambdaClient({ maxAttempts: 1 }).send(new ListFunctionsCommand({}));
  let dynamo;
  const started = Date.now();
  try {
    await new DynamoDBClient({ maxAttempts: 3 }).send(new ListTablesCommand({}));
  } catch (e) {
    dynamo = { name: e.name, message: e.message, ms: Date.now() - started };
  }
  return { names: out.Functions.map((f) => f.FunctionName), dynamo };
};
"""


def invoke(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}), **kwargs)
    out = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, out
    return resp, out


def put_role(server: Server, statements: list[dict[str, Any]]) -> str:
    role = f"sdk-{uuid.uuid4().hex[:8]}"
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    return f"arn:aws:iam::{ACCOUNT}:role/{role}"


LIST_ONLY = [{"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}]


# -- the sandbox user, home, PATH, the runtime image -------------------------------------


def test_home_directory_and_user_lookups_work(functions: Functions, lam: Any) -> None:
    name = functions.create(PY_PROBE)["FunctionName"]
    _, out = invoke(lam, name)
    assert out["home"] == out["expanded"] != "~"
    assert out["user"]
    if NAMESPACE:
        # Lambda's sandbox user, and its (nonexistent) home; HOME itself is not set there.
        assert out["user"] == "sbx_user1051"
        assert out["uid"] == 993 or out["uid"] == 65534
        assert out["home"] == "/home/sbx_user1051"
        assert "HOME" not in out["env"]


def test_path_names_the_runtime_image_not_the_hosts_interpreter_directory(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(PY_PROBE)["FunctionName"]
    _, out = invoke(lam, name)
    path = out["path"].split(":")
    assert path[1:4] == ["/usr/local/bin", "/usr/bin/", "/bin"]
    if NAMESPACE:
        assert out["path"] == "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
    else:
        assert path[0].endswith("/python3.11/bin")
    # `python3.11` on PATH is the very interpreter the runtime runs on (through the image's
    # bin/, even where the host keeps it somewhere PATH does not name).
    assert out["python_on_path"] == out["executable"]
    env = out["env"]
    if NAMESPACE:
        assert env["LD_LIBRARY_PATH"] == (
            "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
            "/var/task/lib:/opt/lib"
        )


def test_x_ray_and_endpoint_variables_are_lambdas(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create(PY_PROBE)["FunctionName"]
    _, out = invoke(lam, name)
    env = out["env"]
    assert env["AWS_XRAY_CONTEXT_MISSING"] == "LOG_ERROR"
    assert env["AWS_XRAY_DAEMON_ADDRESS"] == "127.0.0.1:2000"
    assert env["_AWS_XRAY_DAEMON_ADDRESS"] == "127.0.0.1"
    assert env["_AWS_XRAY_DAEMON_PORT"] == "2000"
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};.*", env["_X_AMZN_TRACE_ID"])
    for service in ("LAMBDA", "CLOUDWATCH_LOGS", "EVENTBRIDGE", "CLOUDWATCH"):
        assert env[f"AWS_ENDPOINT_URL_{service}"] == server.endpoint
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in env


def test_python_sees_no_host_site_packages(functions: Functions, lam: Any) -> None:
    name = functions.create(PY_PROBE)["FunctionName"]
    _, out = invoke(lam, name)
    for entry in out["sys_path"]:
        if "-packages" in entry:
            # Only the layers' and the bundled SDK's.
            assert (
                "/opt/" in entry
                or "python3.11/lib/python3.11/site-packages" in entry
                or (entry.startswith("/var/lang/"))
            ), entry
    host_has_yaml = (
        subprocess.run(["/usr/bin/python3.11", "-c", "import yaml"], capture_output=True).returncode
        == 0
        if os.path.exists("/usr/bin/python3.11")
        else False
    )
    if host_has_yaml:
        assert out["yaml"] is False
    assert out["boto3"] == "1.43.11"


# -- the bundled SDKs, with the function's role ------------------------------------------


def test_boto3_bundled_calls_lamina_with_the_functions_role(
    functions: Functions, lam: Any, server: Server
) -> None:
    other = functions.create("def handler(e, c):\n    return 1\n")["FunctionName"]
    role = put_role(server, LIST_ONLY)
    name = functions.create(PY_SDK, Role=role, MemorySize=1024, Timeout=60)["FunctionName"]
    _, out = invoke(lam, name, {"service": "lambda", "denied": other})
    assert name in out["names"] and other in out["names"]
    # The role allows listing and nothing else: the SDK signs with the role's session.
    assert out["denied"] == "AccessDeniedException"


def test_node_sdk_bundled_calls_lamina_with_the_functions_role(
    functions: Functions, lam: Any, server: Server
) -> None:
    role = put_role(server, LIST_ONLY)
    name = functions.create(
        {"index.js": NODE_CJS},
        handler="index.handler",
        runtime="nodejs20.x",
        Role=role,
        MemorySize=1024,
        Timeout=60,
    )["FunctionName"]
    _, out = invoke(lam, name, TenantId="tenant-a")
    assert name in out["names"]
    assert out["home"]
    assert out["tenant"] == "tenant-a"
    if NAMESPACE:
        assert out["user"] == "sbx_user1051"
        assert out["home"] == "/home/sbx_user1051"


def test_node_es_module_imports_the_bundled_sdk_and_meets_the_clear_error(
    functions: Functions, lam: Any, server: Server
) -> None:
    role = put_role(server, LIST_ONLY)
    name = functions.create(
        {"index.mjs": NODE_ESM},
        handler="index.handler",
        runtime="nodejs20.x",
        Role=role,
        MemorySize=1024,
        Timeout=60,
    )["FunctionName"]
    _, out = invoke(lam, name)
    assert name in out["names"]
    dynamo = out["dynamo"]
    assert dynamo["name"] == "UnsupportedServiceException", dynamo
    assert "Lamina does not serve dynamodb; set AWS_ENDPOINT_URL_DYNAMODB" in dynamo["message"]
    assert dynamo["ms"] < 3000  # answered at once: no retries (the client allowed 3)


def test_a_service_lamina_does_not_serve_gets_a_clear_error_at_once(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(PY_SDK, MemorySize=1024, Timeout=60)["FunctionName"]
    started = time.monotonic()
    _, out = invoke(lam, name, {"service": "dynamodb"})
    assert out["code"] == "UnsupportedServiceException", out
    assert "Lamina does not serve dynamodb; set AWS_ENDPOINT_URL_DYNAMODB" in out["message"]
    assert time.monotonic() - started < 20


def test_the_tenant_id_reaches_python_context(functions: Functions, lam: Any) -> None:
    name = functions.create(PY_PROBE)["FunctionName"]
    _, out = invoke(lam, name, TenantId="org-7:blue")
    assert out["tenant"] == "org-7:blue"
    _, out = invoke(lam, name)
    assert out["tenant"] is None
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, TenantId="no#hash")
    assert e.value.response["Error"]["Code"] == "ValidationException"


# -- endpoints the user sets ----------------------------------------------------------------


class _FakeDynamo(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        _FakeDynamo.seen.append(self.headers.get("X-Amz-Target", ""))
        body = json.dumps({"TableNames": ["from-the-test-server"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_dynamo() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _FakeDynamo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_aws_endpoint_sends_a_service_where_the_user_points_it_and_env_wins(
    own_server: Any, fake_dynamo: int
) -> None:
    srv: Server = own_server(None, "--aws-endpoint", f"dynamodb=http://127.0.0.1:{fake_dynamo}")
    lam = srv.client()
    functions = Functions(lam)
    try:
        name = functions.create(PY_SDK, MemorySize=1024, Timeout=60)["FunctionName"]
        _, out = invoke(lam, name, {"service": "dynamodb"})
        assert out == {"tables": ["from-the-test-server"]}
        assert _FakeDynamo.seen[-1] == "DynamoDB_20120810.ListTables"
        # The function's own Environment wins over the server-wide setting.
        env = {"Variables": {"AWS_ENDPOINT_URL_DYNAMODB": srv.endpoint}}
        moved = functions.create(PY_SDK, MemorySize=1024, Timeout=60, Environment=env)
        _, out = invoke(lam, moved["FunctionName"], {"service": "dynamodb"})
        assert out["code"] == "UnsupportedServiceException", out
    finally:
        functions.cleanup()


# -- memory ---------------------------------------------------------------------------------

FILL_TMP = """
def handler(event, context):
    with open("/tmp/filler", "wb") as f:
        for _ in range(event["mb"]):
            f.write(b"x" * (1024 * 1024))
    return "ok"
"""


def test_max_memory_used_leaves_out_tmp(functions: Functions, lam: Any) -> None:
    name = functions.create(FILL_TMP, MemorySize=128, Timeout=30)["FunctionName"]
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"mb": 200}), LogType="Tail")
    assert "FunctionError" not in resp, resp["Payload"].read()
    tail = base64.b64decode(resp["LogResult"]).decode()
    used = int(re.search(r"Max Memory Used: (\d+) MB", tail)[1])  # type: ignore[index]
    assert used < 128, tail


HOLD_MEMORY = """
held = []

def handler(event, context):
    held.append(b"x" * (event["mb"] * 1024 * 1024))  # written: resident, charged
    return "ok"
"""


def test_max_memory_used_follows_a_warm_environment_s_peak(functions: Functions, lam: Any) -> None:
    """The cgroup's peak is read afresh after every invocation (the server keeps the file
    open): a warm environment's REPORT shows memory its handler took since the last one.
    (The process backend reads VmHWM at most once per memory poll, by design: there the peak
    only never goes down.)"""
    name = functions.create(HOLD_MEMORY, MemorySize=512, Timeout=30)["FunctionName"]
    used = []
    for mb in (1, 150):
        resp = lam.invoke(FunctionName=name, Payload=json.dumps({"mb": mb}), LogType="Tail")
        assert "FunctionError" not in resp, resp["Payload"].read()
        tail = base64.b64decode(resp["LogResult"]).decode()
        used.append(int(re.search(r"Max Memory Used: (\d+) MB", tail)[1]))  # type: ignore[index]
    if NAMESPACE:
        assert used[1] >= used[0] + 140, used
    else:
        assert used[1] >= used[0], used


# -- runtimes and architectures ---------------------------------------------------------


def test_runtimes_lamina_does_not_implement_are_refused_as_such(lam: Any) -> None:
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName=f"t-{uuid.uuid4().hex[:8]}",
            Runtime="ruby3.3",
            Role=f"arn:aws:iam::{ACCOUNT}:role/x",
            Handler="app.handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "Lamina does not implement the ruby3.3 runtime" in str(e.value)


def test_arm64_runs_only_where_the_host_can(functions: Functions, lam: Any, server: Server) -> None:
    listed = SIGNED_HTTP.get(f"{server.endpoint}/lamina/runtimes").json()
    archs = {a["Architecture"] for a in listed["Architectures"]}
    assert archs  # the host's own, at least
    if "arm64" in archs:
        created = functions.create(PY_PROBE, Architectures=["arm64"])
        assert created["Architectures"] == ["arm64"]
        return
    with pytest.raises(ClientError) as e:
        functions.create(PY_PROBE, Architectures=["arm64"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "Architectures [arm64] cannot run on this Lamina host" in str(e.value)


def test_runtimes_endpoint_reports_each_runtimes_sdk(server: Server) -> None:
    listed = SIGNED_HTTP.get(f"{server.endpoint}/lamina/runtimes").json()
    by_name = {r["Runtime"]: r for r in listed["Runtimes"]}
    assert by_name["python3.11"]["Sdk"]["State"] == "ready"
    assert "boto3 1.43.11" in by_name["python3.11"]["Sdk"]["Detail"]
    assert by_name["provided.al2023"]["Sdk"]["State"] == "none"


def test_sdk_installed_by_a_server_is_readable_in_its_sandboxes(tmp_path: Any) -> None:
    """Without the tests' shared runtime cache, a server installs the bundled SDK into its own
    data directory under its private umask (see `lamina.datadir`); the sandbox's user must
    still import it, and every file of the image stays readable to it."""
    server = Server(
        data_dir=tmp_path / "data",
        wrapper=("env", "-u", "LAMINA_RUNTIME_CACHE"),
        extra_args=("--log-level", "info"),
    ).start()
    try:
        functions = Functions(server.client())
        name = functions.create(
            "import boto3\n\ndef handler(event, context):\n    return boto3.__version__\n"
        )["FunctionName"]
        resp = server.client().invoke(FunctionName=name)  # waits for the install if need be
        out = json.loads(resp["Payload"].read())
        assert "FunctionError" not in resp, out
        assert re.fullmatch(r"\d+\.\d+\.\d+", out)
        image = tmp_path / "data" / "runtimes" / "python3.11"
        closed = []
        for here, _dirs, files in os.walk(image):
            for entry in [here, *(os.path.join(here, f) for f in files)]:
                mode = os.lstat(entry).st_mode
                if not os.path.islink(entry) and mode & 0o004 == 0:
                    closed.append(entry)
        assert closed == []
    finally:
        server.stop()
