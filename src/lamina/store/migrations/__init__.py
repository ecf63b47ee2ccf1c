"""Schema migrations of the SQL stores (Alembic), run from code: no alembic.ini is needed.

The tables stay where their store defines them, all on one `MetaData` (`store.schema`);
`target_metadata` imports every store module so that it holds them all. The revisions are in
`versions/`:

- `r0001_baseline`: every table, created where missing, and the columns added to `functions`
  and `function_versions` before migrations existed. It is what upgrades a data directory
  made by an earlier Lamina (tables present, no `alembic_version`).
- A later change is an ordinary revision (`down_revision` the previous head). Because the
  baseline creates tables from the models as they are *now*, a revision must check before
  it adds a table or a column (see the baseline's `_add_missing`): on a data directory
  migrated from before Alembic the baseline may have made it already.

An empty database is not migrated step by step: it is created from the models and stamped at
head (Alembic's recipe for a new database). Lamina is not downgraded: a newer schema than the
code knows is refused, never rolled back.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

# Alembic says at INFO what it sets up, on every start (and on import); Lamina says what it
# did itself. Its warnings still show.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import MetaData, inspect  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from lamina.cluster.api import ClusterConfigError  # noqa: E402

_HERE = Path(__file__).parent


def target_metadata() -> MetaData:
    """The one `MetaData` with every table of every SQL store on it."""
    # Imported for their tables (each module adds its own to `schema.metadata`).
    from lamina.store import (  # noqa: F401
        access_keys,
        alarms,
        capacity,
        code_signing,
        concurrency_grants,
        durable,
        event_sources,
        function_policies,
        function_settings,
        function_urls,
        http_routes,
        layer_policies,
        metric_data,
        roles,
        rules,
        sealing_check,
        stacks,
        usage,
        websocket_apis,
    )
    from lamina.store.schema import metadata

    return metadata


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, in code: the scripts in this package, and `conn` to run on
    (`env.py` takes it from `attributes`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = conn
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The revision this code's schema is at."""
    found = scripts().get_current_head()
    assert found is not None, "the migrations have no head"
    return found


def known(revision: str) -> bool:
    return any(s.revision == revision for s in scripts().walk_revisions())


def current(conn: Connection) -> str | None:
    """The revision the database is stamped with (None: none, or no `alembic_version`)."""
    return MigrationContext.configure(conn).get_current_revision()


def is_empty(conn: Connection) -> bool:
    """Whether the database holds none of Lamina's tables (other tables do not count)."""
    have = set(inspect(conn).get_table_names())
    return not have.intersection(target_metadata().tables)


def bring_to_head(conn: Connection, *, upgrade: bool, url: str) -> str:
    """Bring the database on `conn` (in a transaction holding the schema lock) to head:
    create it if empty, upgrade it if `upgrade`, else refuse an older schema; refuse a newer
    one always. What was done: "created", "current" or "upgraded"."""
    from lamina.store.engine import describe, redacted

    now, want = current(conn), head()
    if now == want:
        return "current"
    if now is None and is_empty(conn):
        target_metadata().create_all(conn)
        MigrationContext.configure(conn).stamp(scripts(), want)
        return "created"
    if now is not None and not known(now):
        raise ClusterConfigError(
            f"the database at {describe(url)} was upgraded by a newer Lamina: its schema is at "
            f"revision {now}, which this Lamina (schema {want}) does not know. Run the newer "
            "Lamina, or restore a backup made before the upgrade"
        )
    if not upgrade:
        raise ClusterConfigError(
            f"the database schema is at revision {now or '(none)'}; this Lamina needs {want}: "
            f"run `lamina db upgrade --database {redacted(url)}` first"
        )
    command.upgrade(config(conn), "head")
    return "upgraded"
