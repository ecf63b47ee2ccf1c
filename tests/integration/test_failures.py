"""Each failure mode, in each runtime family, as Lambda reports it: errorType, message,
FunctionError, and what becomes of the environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Functions
from tests.integration.test_custom_runtime import install_awslambdaric, zip_dir

# One handler per family, steered by the event: {"do": "ok" | "sleep" | "exit" | "hog" | "big"}.
PYTHON = """
import os, time
def handler(event, context):
    do = event.get("do")
    if do == "sleep":
        time.sleep(30)
    if do == "exit":
        os._exit(3)
    if do == "hog":
        hog = []
        for _ in range(64):
            hog.append(bytearray(8 * 1024 * 1024))
            time.sleep(0.01)
    if do == "big":
        return "x" * (6 * 1024 * 1024 + 10)
    return os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
"""

NODE = """
exports.handler = async (event) => {
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  if (event.do === "sleep") await wait(30000);
  if (event.do === "exit") process.exit(3);
  if (event.do === "hog") {
    const hog = [];
    for (let i = 0; i < 64; i++) { hog.push(Buffer.alloc(8 * 1024 * 1024, 1)); await wait(10); }
  }
  if (event.do === "big") return "x".repeat(6 * 1024 * 1024 + 10);
  return process.env.AWS_LAMBDA_LOG_STREAM_NAME;
};
"""


@pytest.fixture(scope="module")
def ric_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_awslambdaric(tmp_path_factory.mktemp("ric-failures"))


def make(family: str, functions: Functions, ric_dir: Path, **kw: Any) -> str:
    if family == "python":
        return str(functions.create(PYTHON, **kw)["FunctionName"])
    if family == "node":
        return str(
            functions.create(
                {"index.js": NODE}, handler="index.handler", runtime="nodejs20.x", **kw
            )["FunctionName"]
        )
    # A custom runtime: AWS's Python runtime interface client as the bootstrap.
    (ric_dir / "app.py").write_text(PYTHON)
    zipped = zip_dir(
        ric_dir, {"bootstrap": ("#!/bin/sh\nexec python3 -m awslambdaric app.handler\n", 0o755)}
    )
    return str(
        functions.create_zip(zipped, handler="app.handler", runtime="provided.al2023", **kw)[
            "FunctionName"
        ]
    )


def call(lam: Any, name: str, do: str) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"do": do}))
    body = resp["Payload"].read()
    try:
        return resp, json.loads(body)
    except ValueError:
        return resp, body


FAMILIES = ["python", "node", "provided"]


@pytest.mark.parametrize("family", FAMILIES)
def test_timeout_discards_the_environment(
    family: str, functions: Functions, lam: Any, ric_dir: Path
) -> None:
    name = make(family, functions, ric_dir, Timeout=1)
    _, pid = call(lam, name, "ok")
    resp, err = call(lam, name, "sleep")
    assert resp["FunctionError"] == "Unhandled"
    assert err["errorType"] == "Sandbox.Timedout"
    assert err["errorMessage"] == (
        f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Task timed out after "
        "1.00 seconds"
    )
    resp, pid_after = call(lam, name, "ok")
    assert "FunctionError" not in resp
    assert pid_after != pid


@pytest.mark.parametrize("family", FAMILIES)
def test_exit(family: str, functions: Functions, lam: Any, ric_dir: Path) -> None:
    name = make(family, functions, ric_dir)
    resp, err = call(lam, name, "exit")
    assert resp["FunctionError"] == "Unhandled"
    assert err == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Runtime "
        "exited with error: exit status 3",
    }
    assert "FunctionError" not in call(lam, name, "ok")[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_memory(family: str, functions: Functions, lam: Any, ric_dir: Path) -> None:
    name = make(family, functions, ric_dir, MemorySize=128, Timeout=30)
    resp, err = call(lam, name, "hog")
    assert resp["FunctionError"] == "Unhandled"
    assert err == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Runtime "
        "exited with error: signal: killed",
    }
    assert "FunctionError" not in call(lam, name, "ok")[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_response_too_large(family: str, functions: Functions, lam: Any, ric_dir: Path) -> None:
    name = make(family, functions, ric_dir, MemorySize=512)
    resp, err = call(lam, name, "big")
    assert resp["FunctionError"] == "Unhandled"
    assert err["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291456 bytes" in err["errorMessage"]
