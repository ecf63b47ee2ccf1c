"""Environment variables at rest: sealed in the metadata database, read back after a restart,
and a data directory from before sealing is sealed when the server starts."""

from __future__ import annotations

import json
import sqlite3
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ROLE, make_zip

pytestmark = pytest.mark.control_plane

ECHO = "import os\ndef handler(e, c):\n    return os.environ.get(e['name'])\n"


def database_bytes(data_dir: Path) -> bytes:
    """The metadata database as it is on disk, write-ahead log included."""
    return b"".join(
        path.read_bytes()
        for path in sorted(data_dir.glob("lamina.db*"))
        if path.name in ("lamina.db", "lamina.db-wal", "lamina.db-shm")
    )


def invoke(lam: Any, name: str, variable: str, qualifier: str = "$LATEST") -> Any:
    resp = lam.invoke(
        FunctionName=name, Qualifier=qualifier, Payload=json.dumps({"name": variable})
    )
    assert resp["StatusCode"] == 200
    return json.loads(resp["Payload"].read())


def create(lam: Any, name: str, variables: dict[str, str]) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": ECHO})},
        Environment={"Variables": variables},
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def test_variables_are_not_in_the_database_in_clear_and_survive_a_restart(
    own_server: Any,
) -> None:
    first = own_server()
    lam = first.client()
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    updated = f"upd4ted-{uuid.uuid4().hex}"
    create(lam, "sealed", {"TOKEN": secret})
    assert invoke(lam, "sealed", "TOKEN") == secret
    version = lam.publish_version(FunctionName="sealed")["Version"]
    lam.update_function_configuration(
        FunctionName="sealed", Environment={"Variables": {"TOKEN": updated}}
    )
    lam.get_waiter("function_updated_v2").wait(
        FunctionName="sealed", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert first.stop() == 0

    raw = database_bytes(first.data_dir)
    assert b"sealed" in raw, "the function is in this database"
    assert secret.encode() not in raw and updated.encode() not in raw
    key = first.data_dir / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    second = own_server(first.data_dir)
    lam2 = second.client()
    config = lam2.get_function_configuration(FunctionName="sealed")
    assert config["Environment"]["Variables"] == {"TOKEN": updated}
    published = lam2.get_function_configuration(FunctionName="sealed", Qualifier=version)
    assert published["Environment"]["Variables"] == {"TOKEN": secret}
    assert invoke(lam2, "sealed", "TOKEN") == updated
    assert invoke(lam2, "sealed", "TOKEN", version) == secret


def test_rows_stored_in_clear_before_sealing_are_sealed_at_start(own_server: Any) -> None:
    first = own_server()
    create(first.client(), "legacy", {"PLACEHOLDER": "x"})
    assert first.stop() == 0
    # Make the row as a data directory from before sealing has it: the variables in clear.
    legacy = f"l3gacy-{uuid.uuid4().hex}"
    conn = sqlite3.connect(first.data_dir / "lamina.db")
    with conn:
        conn.execute(
            "UPDATE function_versions SET environment = ? WHERE function_name = 'legacy'",
            (json.dumps({"OLD": legacy}),),
        )
    conn.close()
    assert legacy.encode() in database_bytes(first.data_dir)

    second = own_server(first.data_dir)
    lam = second.client()
    assert lam.get_function_configuration(FunctionName="legacy")["Environment"] == {
        "Variables": {"OLD": legacy}
    }
    assert invoke(lam, "legacy", "OLD") == legacy
    assert second.stop() == 0
    assert legacy.encode() not in database_bytes(first.data_dir)
