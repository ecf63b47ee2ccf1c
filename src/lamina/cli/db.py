"""`lamina db`: the schema of a cluster's database (`upgrade`, `status`).

Unlike the other commands, these talk to the database itself, not to a server: a node refuses
a database whose schema is older than its code, and this is how it is upgraded, once, before
the nodes of the new version start (see docs/cluster.md).
"""

from __future__ import annotations

import click

from lamina.cli.main import _fail, main

_database = click.option(
    "--database",
    required=True,
    metavar="URL",
    envvar="LAMINA_DATABASE",
    help="The database: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (or sqlite:///PATH) "
    "[default: $LAMINA_DATABASE].",
)


@main.group()
def db() -> None:
    """The schema of a cluster's database."""


@db.command()
@_database
def upgrade(database: str) -> None:
    """Bring the database's schema to this Lamina's (creating it if the database is empty)."""
    from lamina.cluster.api import ClusterConfigError
    from lamina.store.engine import describe, upgrade_database

    try:
        before, head = upgrade_database(database)
    except ClusterConfigError as e:
        _fail(str(e))
    where = describe(database)
    if before == head:
        click.echo(f"{where}: the schema is at revision {head} already (this Lamina's)")
    else:
        click.echo(f"{where}: the schema is at revision {head} now (was: {before or 'none'})")


@db.command()
@_database
def status(database: str) -> None:
    """The database's schema revision beside this Lamina's. Exits 0 if a node of this
    version can start on the database as it is (at this revision, or empty), 1 if not."""
    from lamina.cluster.api import ClusterConfigError
    from lamina.store.engine import describe, redacted, schema_status

    try:
        found = schema_status(database)
    except ClusterConfigError as e:
        _fail(str(e))
    where = describe(database)
    if found.empty:
        click.echo(f"{where}: empty; the first node (or `lamina db upgrade`) creates the schema")
    elif found.current == found.head:
        click.echo(f"{where}: schema revision {found.head}, this Lamina's: up to date")
    elif not found.known:
        _fail(
            f"{where}: schema revision {found.current}, unknown to this Lamina (revision "
            f"{found.head}): a newer Lamina upgraded it"
        )
    else:
        _fail(
            f"{where}: schema revision {found.current or 'none'}; this Lamina needs "
            f"{found.head}: run `lamina db upgrade --database {redacted(database)}`"
        )
