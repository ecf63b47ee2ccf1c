"""Which operations of botocore's `lambda` model Lamina serves: a conformance report.

Run: ``.venv/bin/python tools/conformance.py [--json]`` (or ``make conformance``).

It starts a fresh ``lamina serve`` on a free loopback port (authentication on, other settings
at their defaults, a temporary data directory), creates what the calls need (a function, a
version, an alias, a layer version), then makes one minimal real call of every operation in
the installed botocore's model, with inputs generated from the model's required members, and
sorts each operation into:

* implemented: the server answered in the operation's terms (success, or an AWS error such as
  ResourceNotFoundException for an input that names nothing real);
* missing: UnknownOperationException (Lamina has no route for it);
* owned: a family another open issue delivers (`OWNED`), reported whatever it answered;
* errored: a 5xx answer or no answer at all (a bug: no request should produce one).

It prints a table and the counts, and exits 0 whatever they are (1 only when the server could
not be started or set up), so that the number of implemented operations can be watched going
up. ``--json`` prints the same as one JSON object (the conformance test reads it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import botocore.session
import httpx
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

#: operation families other open issues deliver, with the issue that owns each
OWNED: dict[str, str] = {}

REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lamina-conformance"
FUNCTION = "conformance-fn"
ALIAS = "live"
LAYER = "conformance-layer"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"
LAYER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{LAYER}"
#: what a probe names when the resource is made up (an ESM, a durable execution...)
FAKE_CSC_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0"
FAKE_DURABLE_ARN = f"{FUNCTION_ARN}:1/durable-execution/run/0123456789abcdef"
SIGNING_PROFILE = f"arn:aws:signer:{REGION}:{ACCOUNT}:/signing-profiles/conformance/abcdefghij"


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


HANDLER_ZIP = _zip({"app.py": "def handler(event, context):\n    return event\n"})
LAYER_ZIP = _zip({"python/conformance_layer.py": "X = 1\n"})

#: values for required members, by member name (the same name means the same thing across
#: the model's operations)
BY_MEMBER: dict[str, Any] = {
    "FunctionName": FUNCTION,
    "Qualifier": ALIAS,
    "Name": ALIAS,
    "FunctionVersion": "1",
    "LayerName": LAYER,
    "VersionNumber": 1,
    "StatementId": "conformance",
    "Action": "lambda:InvokeFunction",
    "Principal": "*",
    "Resource": FUNCTION_ARN,
    "ResourceArn": FUNCTION_ARN,
    "Tags": {"conformance": "yes"},
    "TagKeys": ["conformance"],
    "Arn": f"{LAYER_ARN}:1",
    "CodeSigningConfigArn": FAKE_CSC_ARN,
    "AllowedPublishers": {"SigningProfileVersionArns": [SIGNING_PROFILE]},
    "CapacityProviderName": "conformance-cp",
    "DurableExecutionArn": FAKE_DURABLE_ARN,
    "CheckpointToken": "conformance-token",
    "CallbackId": "conformance-callback",
    "UUID": "00000000-0000-4000-8000-000000000000",
    "ReservedConcurrentExecutions": 5,
    "ProvisionedConcurrentExecutions": 1,
    "RecursiveLoop": "Terminate",
    "UpdateRuntimeOn": "Auto",
    "AuthType": "NONE",
    "InvokeArgs": b"{}",
    "Role": ROLE,
    "Code": {"ZipFile": HANDLER_ZIP},
    "Content": {"ZipFile": LAYER_ZIP},
}

#: members that differ from `BY_MEMBER` for one operation (a new name where the call creates)
OVERRIDES: dict[str, dict[str, Any]] = {
    "CreateFunction": {
        "FunctionName": "conformance-created",
        "Handler": "app.handler",
    },
    "CreateAlias": {"Name": "conformance-alias"},
    "DeleteAlias": {"Name": "conformance-alias"},
    "AddLayerVersionPermission": {"Action": "lambda:GetLayerVersion", "Principal": ACCOUNT},
    "PutResourcePolicy": {
        "Policy": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "conformance",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                        "Action": "lambda:InvokeFunction",
                        "Resource": FUNCTION_ARN,
                    }
                ],
            }
        )
    },
    "CreateCapacityProvider": {
        "VpcConfig": {
            "SubnetIds": ["subnet-0123456789abcdef0"],
            "SecurityGroupIds": ["sg-0123456789abcdef0"],
        },
        "PermissionsConfig": {"CapacityProviderOperatorRoleArn": ROLE},
    },
    "PublishLayerVersion": {"CompatibleRuntimes": ["python3.12"]},
    # Each needs one setting besides the function, though the model requires none.
    "UpdateFunctionCode": {"ZipFile": HANDLER_ZIP},
    "PutFunctionEventInvokeConfig": {"MaximumRetryAttempts": 1},
    "UpdateFunctionEventInvokeConfig": {"MaximumRetryAttempts": 0},
}


def _order(name: str) -> tuple[int, str]:
    """Creating calls first, then reads and updates, then removals; the function last."""
    if name == "DeleteFunction":
        return 3, name
    if name.startswith(("Create", "Put", "Publish", "Add", "Tag")):
        return 0, name
    if name.startswith(("Delete", "Remove", "Untag")):
        return 2, name
    return 1, name


def _value(shape: Any, depth: int = 0) -> Any:
    """A minimal value of a shape the tables above do not cover."""
    kind = shape.type_name
    if kind == "structure":
        return {
            m: _member_value(m, shape.members[m], depth + 1)
            for m in shape.required_members
            if depth < 5
        }
    if kind == "list":
        return [_value(shape.member, depth + 1)] if shape.metadata.get("min", 0) > 0 else []
    if kind == "map":
        return {}
    if kind in ("integer", "long"):
        return int(shape.metadata.get("min", 1))
    if kind in ("float", "double"):
        return float(shape.metadata.get("min", 1))
    if kind == "boolean":
        return False
    if kind == "blob":
        return b"{}"
    if kind == "timestamp":
        return 0
    enum = shape.enum if kind == "string" else None
    if enum:
        return enum[0]
    return "conformance"


def _member_value(name: str, shape: Any, depth: int = 0) -> Any:
    if name in BY_MEMBER:
        return BY_MEMBER[name]
    return _value(shape, depth)


def minimal_input(model: Any, operation: str) -> dict[str, Any]:
    """The operation's required members, filled in (see `BY_MEMBER`, `OVERRIDES`)."""
    op = model.operation_model(operation)
    out: dict[str, Any] = {}
    if op.input_shape is not None:
        for member in op.input_shape.required_members:
            out[member] = _member_value(member, op.input_shape.members[member])
    out.update(OVERRIDES.get(operation, {}))
    return out


def classify(operation: str, call: Callable[[], Any]) -> tuple[str, str]:
    """(status, detail) of one probe: see the module docstring."""
    try:
        response = call()
        if isinstance(response, dict) and "EventStream" in response:
            for _ in response["EventStream"]:
                pass
        status, detail = "implemented", "ok"
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        http = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "UnknownOperationException":
            status, detail = "missing", code
        elif http >= 500:
            status, detail = "errored", f"{http} {code}"
        else:
            status, detail = "implemented", code
    except (BotoCoreError, OSError, ValueError) as e:
        status, detail = "errored", f"{type(e).__name__}: {e}"
    if operation in OWNED:
        return "owned", f"{OWNED[operation]}; answered {detail}"
    return status, detail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def fresh_server(data_dir: Path, key: tuple[str, str]) -> Iterator[str]:
    """A `lamina serve` of this run's own, with authentication on; its endpoint."""
    port = _free_port()
    log = open(data_dir.parent / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--admin-key",
            ":".join(key),
            # The probes never need the bundled SDKs: do not download them.
            "--no-runtime-sdk",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lamina serve exited with {proc.returncode}")
            try:
                if httpx.get(f"{endpoint}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("lamina serve did not become healthy")
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _python_runtime() -> str:
    from lamina.runtimes.catalog import PYTHON_RUNTIMES, RuntimeCatalog

    found = RuntimeCatalog.discover()
    for name in reversed(PYTHON_RUNTIMES):
        if found.get(name) is not None:
            return name
    raise RuntimeError("this host has no Python runtime Lamina can run")


def set_up(client: Any, runtime: str) -> None:
    """What the probes name: a function with version 1 and an alias, a layer version."""
    BY_MEMBER["Runtime"] = runtime
    OVERRIDES["CreateFunction"]["Runtime"] = runtime
    client.create_function(
        FunctionName=FUNCTION,
        Runtime=runtime,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": HANDLER_ZIP},
    )
    client.get_waiter("function_active_v2").wait(
        FunctionName=FUNCTION, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )
    client.publish_version(FunctionName=FUNCTION)
    client.create_alias(FunctionName=FUNCTION, Name=ALIAS, FunctionVersion="1")
    client.publish_layer_version(LayerName=LAYER, Content={"ZipFile": LAYER_ZIP})


def probe(endpoint: str, key: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """Every operation of the model, probed in `_order`: {operation: (status, detail)}."""
    client = botocore.session.get_session().create_client(
        "lambda",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
    )
    set_up(client, _python_runtime())
    model = client.meta.service_model
    results: dict[str, tuple[str, str]] = {}
    for operation in sorted(model.operation_names, key=_order):
        args = minimal_input(model, operation)
        method = getattr(client, xform_name(operation))
        results[operation] = classify(operation, partial(method, **args))
    return results


def report(results: dict[str, tuple[str, str]]) -> dict[str, Any]:
    counts = {"implemented": 0, "missing": 0, "owned": 0, "errored": 0}
    for status, _ in results.values():
        counts[status] += 1
    return {
        "Operations": {
            op: {"Status": status, "Detail": detail} for op, (status, detail) in results.items()
        },
        "Counts": counts,
        "Total": len(results),
    }


def _print_table(out: dict[str, Any]) -> None:
    ops = out["Operations"]
    width = max(len(op) for op in ops)
    for status in ("implemented", "missing", "owned", "errored"):
        names = sorted(op for op, r in ops.items() if r["Status"] == status)
        if not names:
            continue
        print(f"\n{status} ({len(names)})")
        for op in names:
            print(f"  {op:<{width}}  {ops[op]['Detail']}")
    counts = out["Counts"]
    print(
        f"\n{out['Total']} operations in botocore's lambda model: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    key = ("conformance", secrets.token_hex(16))
    scratch = Path(tempfile.mkdtemp(prefix="lamina-conformance-"))
    try:
        with fresh_server(scratch / "data", key) as endpoint:
            results = probe(endpoint, key)
    except (RuntimeError, ClientError, BotoCoreError) as e:
        log = scratch / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        print(f"conformance: could not set up a server to probe: {e}\n{tail}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = report(results)
    if args.json:
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        _print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
