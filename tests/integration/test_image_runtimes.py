"""Image functions on real runtime interface clients, as users build them without AWS's base
images: the host's CPython with AWS's `awslambdaric` from PyPI (ENTRYPOINT `python3 -m
awslambdaric`, CMD the handler, as AWS documents for an alternative base image), and the
host's Node.js with Lamina's own Node client. Images assembled by `tests/integration/_images.py`,
pushed with skopeo to a real `docker-registry`, created with boto3, run in the namespace
sandbox: the handler contract (event, context, result, errors as the client reports them),
the environment Lambda gives, a read-only root with a private /tmp, warm reuse."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._oci import Registry, missing_tools, push
from tests.conftest import ROLE, Server
from tests.integration._images import image, node_base, python_base

if os.geteuid() != 0:
    pytest.skip(
        "image functions run in namespace sandboxes, which need root", allow_module_level=True
    )

PYTHON_APP = """\
import os

def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    wrote = "tmp"
    try:
        open("/var/task/app.py", "a").close()
        wrote = "root"
    except OSError:
        pass
    with open("/tmp/seen", "a") as f:
        f.write("x")
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000,
        "arn": context.invoked_function_arn,
        "cwd": os.getcwd(),
        "own": os.environ.get("OWN"),
        "mine": os.environ.get("MINE"),
        "region": os.environ.get("AWS_REGION"),
        "has_credentials": bool(os.environ.get("AWS_ACCESS_KEY_ID")),
        "writable": wrote,
        "tmp_count": len(open("/tmp/seen").read()),
        "uid": os.getuid(),
    }
"""

NODE_APP = """\
export const handler = async (event, context) => {
  if (event.fail) throw new TypeError('asked to fail');
  return {
    event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    memory: context.memoryLimitInMB,
    own: process.env.OWN,
    node: process.version,
  };
};
"""

#: as AWS's base images' lambda-entrypoint.sh: the handler is the CMD's first argument
NODE_ENTRY = """\
process.env._HANDLER = process.argv[2];
await import('/var/runtime/bootstrap.mjs');
"""


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    missing = missing_tools()
    assert not missing, f"the image tests need {missing}"
    with Registry() as running:
        yield running


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, runtime_images: Any) -> Iterator[Server]:
    server = Server(
        data_dir=tmp_path_factory.mktemp("image-runtimes") / "data",
        extra_args=("--sandbox", "namespace"),
    ).start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def lam(srv: Server) -> Any:
    return srv.client()


def _deploy(lam: Any, uri: str, **more: Any) -> str:
    name = f"ric-{uuid.uuid4().hex[:10]}"
    lam.create_function(
        FunctionName=name,
        Role=ROLE,
        PackageType="Image",
        Code={"ImageUri": uri},
        MemorySize=256,
        Timeout=30,
        **more,
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240}
    )
    return name


def _invoke(lam: Any, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any, str]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail")
    return resp, json.loads(resp["Payload"].read()), base64.b64decode(resp["LogResult"]).decode()


def test_awslambdaric_runs_a_python_handler(lam: Any, registry: Registry, tmp_path: Path) -> None:
    image(
        tmp_path / "py",
        python_base(),
        {"app.py": PYTHON_APP},
        cmd=["app.handler"],
        env=["OWN=from-image"],
    )
    push(tmp_path / "py", registry, "ric/python", "v1")
    name = _deploy(
        lam, f"{registry.host}/ric/python:v1", Environment={"Variables": {"MINE": "set"}}
    )

    resp, body, tail = _invoke(lam, name, {"n": 1})
    assert "FunctionError" not in resp, body
    assert "Init Duration" in tail
    assert body["event"] == {"n": 1}
    assert body["request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert body["function_name"] == name
    assert body["memory"] == "256" and body["remaining_ok"] is True
    assert body["arn"].endswith(f":function:{name}")
    assert (body["cwd"], body["own"], body["mine"]) == ("/var/task", "from-image", "set")
    assert body["region"] == "us-east-1"
    assert body["has_credentials"] is True
    assert body["writable"] == "tmp", "the image's root must be read-only"
    assert body["uid"] != 0
    assert body["tmp_count"] == 1

    resp, warm, tail = _invoke(lam, name, {"n": 2})
    assert "Init Duration" not in tail, "the second invoke reuses the environment"
    assert warm["tmp_count"] == 2, "the same environment keeps its /tmp"

    resp, error, tail = _invoke(lam, name, {"fail": True})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "asked to fail"
    assert any("raise ValueError" in line for line in error["stackTrace"])
    assert "asked to fail" in tail


def test_a_node_image_with_lamina_s_client(lam: Any, registry: Registry, tmp_path: Path) -> None:
    image(
        tmp_path / "node",
        node_base(),
        {"index.mjs": NODE_APP, "entry.mjs": NODE_ENTRY},
        entrypoint=["node", "/var/task/entry.mjs"],
        cmd=["index.handler"],
        env=["OWN=node-image"],
    )
    push(tmp_path / "node", registry, "ric/node", "v1")
    name = _deploy(lam, f"{registry.host}/ric/node:v1")

    resp, body, tail = _invoke(lam, name, {"n": 3})
    assert "FunctionError" not in resp, body
    assert "Init Duration" in tail
    assert body["event"] == {"n": 3} and body["functionName"] == name
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert body["memory"] == "256" and body["own"] == "node-image"

    resp, error, _ = _invoke(lam, name, {"fail": True})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorType"] == "TypeError" and error["errorMessage"] == "asked to fail"


def test_an_entrypoint_that_does_not_exist(lam: Any, registry: Registry, tmp_path: Path) -> None:
    image(
        tmp_path / "bad",
        python_base(),
        {"app.py": PYTHON_APP},
        entrypoint=["/usr/local/bin/no-such-runtime"],
        cmd=["app.handler"],
    )
    push(tmp_path / "bad", registry, "ric/bad", "v1")
    name = _deploy(lam, f"{registry.host}/ric/bad:v1")
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert resp["FunctionError"] == "Unhandled"
    error = json.loads(resp["Payload"].read())
    assert error["errorType"] == "Runtime.InvalidEntrypoint", error
    # ... and the server goes on serving the good one
    good = _deploy(lam, f"{registry.host}/ric/python:v1")
    _, body, _ = _invoke(lam, good, {"n": 4})
    assert body["event"] == {"n": 4}
