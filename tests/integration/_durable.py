"""AWS's durable-execution SDKs, installed once per machine from their registries (PyPI, npm)
into directories beside the runtime cache, and zipped into function packages the way a user
packages them (docs/durable.md); plus the waits and probes the durable tests share.

AWS's own Python example is the SDK's Quick Start, read from the installed distribution's
metadata (its README), so it runs exactly as AWS publishes it and nothing of it is copied here.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

PYTHON_SDK = "aws-durable-execution-sdk-python==3.0.0"
NODE_SDK = "@aws/durable-execution-sdk-js@2.4.0"
#: the DurableConfig of the tests' functions
DURABLE_CONFIG = {"ExecutionTimeout": 600, "RetentionPeriodInDays": 1}
#: the execution role of the tests' durable functions, and what AWS's managed policy for
#: durable functions (AWSLambdaBasicDurableExecutionRolePolicy) lets such a role do
DURABLE_ROLE = "arn:aws:iam::000000000000:role/lamina-durable-test"
DURABLE_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"],
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        },
    ],
}

_CACHE = Path(os.environ.get("LAMINA_RUNTIME_CACHE", "/tmp/lamina-test-runtimes")).parent


def _install_once(target: Path, command: list[str]) -> Path:
    """Run an installer into a fresh directory, then move it into place: a run killed halfway
    leaves nothing that looks installed."""
    if (target / ".installed").exists():
        return target
    staging = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        subprocess.run(
            [*command, str(staging)], check=True, capture_output=True, timeout=600, text=True
        )
        (staging / ".installed").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def define_durable_role(endpoint: str) -> str:
    """Define DURABLE_ROLE in the server (`lamina roles put` does the same) and return it."""
    from tests.conftest import SIGNED_HTTP

    name = DURABLE_ROLE.rsplit("/", 1)[1]
    put = SIGNED_HTTP.put(
        f"{endpoint}/lamina/roles/{name}", json={"Policies": [DURABLE_ROLE_POLICY]}
    )
    assert put.status_code == 200, put.text
    return DURABLE_ROLE


def python_sdk() -> Path:
    """The Python SDK with its dependencies (a boto3 new enough for the durable API), as
    `pip install --target` lays them out in a package."""
    return _install_once(
        _CACHE / "lamina-test-durable-python",
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", PYTHON_SDK, "--target"],
    )


def node_sdk() -> Path:
    """The JavaScript SDK with its `node_modules` (`@aws-sdk/client-lambda` among them)."""
    return _install_once(
        _CACHE / "lamina-test-durable-node",
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", NODE_SDK, "--prefix"],
    )


def aws_python_quick_start(sdk: Path) -> str:
    """AWS's Quick Start handler for the Python SDK, as its README publishes it."""
    (metadata,) = sdk.glob("aws_durable_execution_sdk_python-*.dist-info/METADATA")
    readme = metadata.read_text()
    start = readme.index("## 🚀 Quick Start")
    block = re.search(r"```python\n(.*?)```", readme[start:], re.DOTALL)
    assert block is not None, "the SDK's README has no Quick Start handler"
    return block.group(1)


def package(tree: Path, files: dict[str, str], skip: Iterable[str] = ()) -> bytes:
    """A deployment package: `tree` (an installed SDK) plus the handler files."""
    buf = io.BytesIO()
    skipped = {".installed", *skip}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(tree.rglob("*")) if tree.is_dir() else []:
            rel = path.relative_to(tree)
            if rel.parts[0] in skipped or "__pycache__" in rel.parts or not path.is_file():
                continue
            zf.write(path, rel.as_posix())
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def require_durable_api(lam: Any, function_name: str) -> None:
    """Skip unless the server serves durable functions: DurableConfig kept on a function and
    ListDurableExecutionsByFunction answered for it. (Lamina issue 22 lands in two parts; the
    tests of the outside must not fail for want of the inside.)"""
    config = lam.get_function_configuration(FunctionName=function_name)
    if "DurableConfig" not in config:
        pytest.skip("this server does not keep DurableConfig (durable functions not served)")
    try:
        lam.list_durable_executions_by_function(FunctionName=function_name)
    except lam.exceptions.ClientError as e:  # pragma: no cover - depends on the server
        pytest.skip(f"this server does not serve the durable-execution API: {e}")


def history(lam: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    marker: str | None = None
    while True:
        page = lam.get_durable_execution_history(
            DurableExecutionArn=arn,
            IncludeExecutionData=True,
            **({"Marker": marker} if marker else {}),
        )
        events += page["Events"]
        marker = page.get("NextMarker")
        if not marker:
            return events


_ENDS = frozenset(
    {"ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionStopped"}
)


def wait_event(lam: Any, arn: str, event_type: str, timeout: float = 60.0) -> dict[str, Any]:
    """The first event of `event_type` in the execution's history, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = history(lam, arn)
        for event in events:
            if event["EventType"] == event_type:
                return event
        if events and events[-1]["EventType"] in _ENDS:
            raise AssertionError(f"{arn} ended without {event_type}: {events}")
        time.sleep(0.1)
    raise AssertionError(f"no {event_type} in {arn} after {timeout} s: {history(lam, arn)}")


def wait_status(lam: Any, arn: str, timeout: float = 60.0) -> dict[str, Any]:
    """The execution once it has ended (any status but RUNNING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got: dict[str, Any] = lam.get_durable_execution(
            DurableExecutionArn=arn, IncludeExecutionData=True
        )
        if got["Status"] != "RUNNING":
            return got
        time.sleep(0.1)
    raise AssertionError(f"{arn} still RUNNING after {timeout} s: {history(lam, arn)}")


def operations(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event type, operation name or id) of every event but InvocationCompleted, whose place
    between the others depends on timing."""
    return [
        (e["EventType"], e.get("Name") or "")
        for e in events
        if e["EventType"] != "InvocationCompleted"
    ]
