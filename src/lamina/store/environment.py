"""Function versions' environment variables, sealed at rest.

The `environment` column holds a JSON string: base64 of the variables' JSON sealed by
`Sealer` with the row's function name and version as context, so that a sealed blob copied
to another row does not open there. Everything above the store sees plain dicts.

Rows written before sealing came hold a JSON object (the variables in clear). `seal_plain_rows`
seals them when the store opens, and the database is then vacuumed so that the clear values
do not linger in free pages or the write-ahead log. A row still in clear is read as it is.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from lamina.store.schema import function_versions
from lamina.store.sealed import SealedError, Sealer


def _context(name: str, version: str) -> bytes:
    return f"function_versions\0{name}\0{version}".encode()


def seal(sealer: Sealer, name: str, version: str, variables: dict[str, str]) -> str:
    """The column value for `variables` of the version `name`/`version`."""
    plain = json.dumps(variables, separators=(",", ":")).encode()
    return base64.b64encode(sealer.seal(plain, _context(name, version))).decode()


def unseal(sealer: Sealer, name: str, version: str, stored: Any) -> dict[str, str]:
    """The variables a column value holds (a JSON object: a row not sealed yet)."""
    if isinstance(stored, dict):
        return dict(stored)
    try:
        plain = sealer.unseal(base64.b64decode(stored, validate=True), _context(name, version))
    except (SealedError, ValueError, TypeError) as e:
        # Without its variables the function cannot run as configured: refuse, and say why.
        raise SealedError(
            f"the environment of {name}:{version} cannot be unsealed ({e}): is secret.key in "
            "the data directory the one it was sealed with?"
        ) from None
    variables: dict[str, str] = json.loads(plain)
    return variables


def seal_plain_rows(engine: Engine, sealer: Sealer) -> int:
    """Seal every row stored in clear; the number sealed. On SQLite, vacuum after sealing
    some, so that the clear values leave the file and its write-ahead log."""
    with engine.begin() as conn:
        sealed = _seal_rows(conn, sealer)
    if sealed and engine.dialect.name == "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return sealed


def _seal_rows(conn: Connection, sealer: Sealer) -> int:
    t = function_versions
    rows = conn.execute(select(t.c.function_name, t.c.version, t.c.environment)).all()
    sealed = 0
    for name, version, stored in rows:
        if not isinstance(stored, dict):
            continue
        conn.execute(
            update(t)
            .where(t.c.function_name == name, t.c.version == version)
            .values(environment=seal(sealer, name, version, stored))
        )
        sealed += 1
    return sealed
