"""Helpers the event-source-mapping tests share (not a test module): functions that record
what they were fed in a file on the host, and waits on a mapping's state, its
`LastProcessingResult` and its deletion, through boto3.

A recorder function appends one JSON line per record to the file named by its `RECORD`
variable (so its servers run the `process` backend: a namespace sandbox cannot write host
files); what each test's recorder writes, and the mapping it makes, stay in the test module.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import SIGNED_HTTP, Server, make_zip, wait_for


def recorded(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a recorder function has written to `path` so far."""
    if not path.exists():
        return []
    # Only whole lines: the function may be writing the last one as it is read.
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line]


def wait_recorded(path: Path, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The recorded lines once there are at least `n` of them."""

    def enough() -> list[dict[str, Any]] | None:
        got = recorded(path)
        return got if len(got) >= n else None

    found: list[dict[str, Any]] = wait_for(enough, timeout, f"{n} recorded message(s)")
    return found


def put_role(server: Server, name: str, policy: dict[str, Any]) -> None:
    """Make (or replace) the execution role `name` with one policy document."""
    resp = SIGNED_HTTP.put(f"{server.endpoint}/lamina/roles/{name}", json={"Policies": [policy]})
    assert resp.status_code == 200, resp.text


def create_recorder(
    lam: Any,
    code: str,
    *,
    prefix: str,
    role: str,
    variables: dict[str, str],
    timeout: int = 30,
) -> str:
    """A python3.11 function `<prefix><random>` running `code` as `app.handler`, once Active:
    its name."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": code})},
        Environment={"Variables": variables},
        Timeout=timeout,
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}
    )
    return name


def wait_state(lam: Any, uuid_: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    """The mapping once its State is `state`."""

    def reached() -> dict[str, Any] | None:
        m: dict[str, Any] = lam.get_event_source_mapping(UUID=uuid_)
        return m if m["State"] == state else None

    found: dict[str, Any] = wait_for(reached, timeout, f"mapping {uuid_} {state}")
    return found


def wait_result(lam: Any, uuid_: str, prefix: str, timeout: float = 30.0) -> str:
    """The mapping's LastProcessingResult once it starts with `prefix` ("OK", "PROBLEM:")."""

    def reached() -> str | None:
        result: str = lam.get_event_source_mapping(UUID=uuid_).get("LastProcessingResult", "")
        return result if result.startswith(prefix) else None

    found: str = wait_for(reached, timeout, f"LastProcessingResult {prefix}...")
    return found


def delete_mapping(lam: Any, uuid_: str, timeout: float = 30.0) -> None:
    """Delete, and wait until it is gone (its consumer has stopped: what it had not
    acknowledged is back in the queue by then)."""
    lam.delete_event_source_mapping(UUID=uuid_)

    def gone() -> bool:
        try:
            lam.get_event_source_mapping(UUID=uuid_)
        except lam.exceptions.ResourceNotFoundException:
            return True
        return False

    wait_for(gone, timeout, f"mapping {uuid_} deleted")
