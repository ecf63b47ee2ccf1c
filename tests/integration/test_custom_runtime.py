"""Custom runtimes (provided.*): the package's own `bootstrap` is the runtime."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ROLE, Functions

# AWS's custom-runtime tutorial (Lambda developer guide, "Building a custom runtime"), as is.
TUTORIAL_BOOTSTRAP = """#!/bin/sh

set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")

  # Send the response
  curl "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response"  -d "$RESPONSE"
done
"""  # noqa: E501 - AWS's text, unchanged

TUTORIAL_FUNCTION = """function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
"""


def zip_dir(root: Path, extra: dict[str, tuple[str, int]]) -> bytes:
    """Zip a directory tree plus extra (content, mode) files, keeping modes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(path.relative_to(root).as_posix())
                info.external_attr = (0o100000 | (path.stat().st_mode & 0o777)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        for name, (content, mode) in extra.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, content)
    return buf.getvalue()


def create(lam: Any, functions: Functions, name: str, zipped: bytes, **kw: Any) -> str:
    lam.create_function(
        FunctionName=name,
        Runtime=kw.pop("Runtime", "provided.al2023"),
        Role=ROLE,
        Handler=kw.pop("Handler", "function.handler"),
        Code={"ZipFile": zipped},
        **kw,
    )
    functions.names.append(name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


@pytest.mark.parametrize("runtime", ["provided", "provided.al2", "provided.al2023"])
def test_aws_tutorial_shell_bootstrap(functions: Functions, lam: Any, runtime: str) -> None:
    zipped = zip_dir(
        Path("/nonexistent"),
        {"bootstrap": (TUTORIAL_BOOTSTRAP, 0o755), "function.sh": (TUTORIAL_FUNCTION, 0o644)},
    )
    name = create(lam, functions, f"shell-{runtime.replace('.', '-')}", zipped, Runtime=runtime)
    for payload in ({"text": "Hello"}, {"text": "again"}):
        resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
        assert "FunctionError" not in resp
        body = resp["Payload"].read().decode()
        assert body == f"Echoing request: '{json.dumps(payload, separators=(', ', ': '))}'"


def install_awslambdaric(target: Path) -> Path:
    """AWS's own Python runtime interface client, installed into a function package."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(target),
            "awslambdaric",
        ],
        check=True,
        timeout=600,
    )
    return target


@pytest.fixture(scope="module")
def awslambdaric_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = install_awslambdaric(tmp_path_factory.mktemp("ric"))
    (target / "app.py").write_text(
        "import os\n"
        "def handler(event, context):\n"
        "    if event.get('fail'):\n"
        "        raise ValueError('ric says no')\n"
        "    return {'got': event, 'fn': context.function_name,\n"
        "            'rid': context.aws_request_id, 'arn': context.invoked_function_arn,\n"
        "            'remaining': context.get_remaining_time_in_millis()}\n"
    )
    return target


def test_awslambdaric_unchanged(functions: Functions, lam: Any, awslambdaric_package: Path) -> None:
    bootstrap = "#!/bin/sh\nexec python3 -m awslambdaric app.handler\n"
    zipped = zip_dir(awslambdaric_package, {"bootstrap": (bootstrap, 0o755)})
    name = create(lam, functions, "ric-fn", zipped, Handler="app.handler", Timeout=10)
    resp = lam.invoke(FunctionName=name, Payload=b'{"x": 1}')
    assert "FunctionError" not in resp
    out = json.loads(resp["Payload"].read())
    assert out["got"] == {"x": 1}
    assert out["fn"] == name
    assert out["rid"] == resp["ResponseMetadata"]["RequestId"]
    assert out["arn"].endswith(f":function:{name}")
    assert 8000 < out["remaining"] <= 10000
    # Errors come back in AWS's own shape, through the same Runtime API.
    resp = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(resp["Payload"].read())
    assert err["errorType"] == "ValueError"
    assert err["errorMessage"] == "ric says no"


def test_missing_bootstrap(functions: Functions, lam: Any) -> None:
    zipped = zip_dir(Path("/nonexistent"), {"function.sh": (TUTORIAL_FUNCTION, 0o644)})
    name = create(lam, functions, "no-bootstrap", zipped)
    resp = lam.invoke(FunctionName=name)
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(resp["Payload"].read())
    assert err["errorType"] == "Runtime.InvalidEntrypoint"
    assert "bootstrap" in err["errorMessage"]


def test_bootstrap_that_exits(functions: Functions, lam: Any) -> None:
    zipped = zip_dir(Path("/nonexistent"), {"bootstrap": ("#!/bin/bash\nexit 7\n", 0o755)})
    name = create(lam, functions, "exits", zipped)
    resp = lam.invoke(FunctionName=name)
    err = json.loads(resp["Payload"].read())
    assert err["errorType"] == "Runtime.ExitError"
    assert "exit status 7" in err["errorMessage"]


def test_no_execution_env_name_for_custom_runtimes(functions: Functions, lam: Any) -> None:
    bootstrap = (
        "#!/bin/bash\n"
        "API=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation\n"
        "while true; do\n"
        "  H=$(mktemp)\n"
        '  curl -sS -D "$H" -o /dev/null "$API/next"\n'
        '  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$H" | tr -d "[:space:]" | cut -d: -f2)\n'
        '  curl -sS -o /dev/null "$API/$ID/response" '
        '-d "\\"${AWS_EXECUTION_ENV-unset}|$_HANDLER|$LAMBDA_TASK_ROOT\\""\n'
        "done\n"
    )
    zipped = zip_dir(Path("/nonexistent"), {"bootstrap": (bootstrap, 0o755)})
    name = create(lam, functions, "env-probe", zipped, Handler="my.handler")
    value = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    execution_env, handler, task_root = value.split("|")
    assert execution_env == "unset"
    assert handler == "my.handler"
    assert task_root
