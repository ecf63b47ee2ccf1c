"""`lamina brokers`, `lamina secrets` and `lamina sources`: what event-source mappings read
from, log in with, and how they are doing. Talks to the server's `/lamina/...` only."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from lamina.cli.main import Api, _fail, endpoint_option, main
from lamina.cli.tables import print_table

# -- brokers ---------------------------------------------------------------------------


@main.group()
def brokers() -> None:
    """Brokers event-source mappings read from: RabbitMQ (amqp://), NATS JetStream
    (nats://) and Redis Streams (redis://). Their ARN is a mapping's EventSourceArn."""


@brokers.command(name="add")
@click.argument("name")
@click.argument("url")
@endpoint_option
def add_broker(name: str, url: str, endpoint: str) -> None:
    """Register the broker NAME at URL (credentials included, e.g.
    amqp://user:pass@host:5672/vhost), or replace the URL of the broker NAME. Prints its
    ARN."""
    broker = (Api(endpoint).call("PUT", f"/lamina/brokers/{name}", json_body={"Url": url}).json())[
        "Broker"
    ]
    click.echo(f"{click.style('added', fg='green')} {broker['Kind']} broker {broker['Arn']}")


@brokers.command(name="list")
@endpoint_option
def list_brokers(endpoint: str) -> None:
    """List the brokers (URLs without their passwords)."""
    found = Api(endpoint).call("GET", "/lamina/brokers").json()["Brokers"]
    if not found:
        click.echo("no brokers")
        return
    print_table(
        ("NAME", "KIND", "URL", "ARN"),
        [(b["Name"], b["Kind"], b["Url"], b["Arn"]) for b in found],
    )


@brokers.command(name="remove")
@click.argument("name")
@endpoint_option
def remove_broker(name: str, endpoint: str) -> None:
    """Forget the broker NAME (refused while a mapping reads from it)."""
    Api(endpoint).call("DELETE", f"/lamina/brokers/{name}")
    click.echo(f"{click.style('removed', fg='yellow')} {name}")


# -- secrets ---------------------------------------------------------------------------


@main.group()
def secrets() -> None:
    """Username/password secrets that a mapping's BASIC_AUTH names by ARN (Lamina's stand-in
    for Secrets Manager)."""


@secrets.command(name="put")
@click.argument("name")
@click.option("--username", required=True, help="The user to log in to the broker as.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (its first line) instead of a prompt.",
)
@endpoint_option
def put_secret(name: str, username: str, password_stdin: bool, endpoint: str) -> None:
    """Create the secret NAME, or replace its username and password (its ARN stays). Prints
    the ARN to name in SourceAccessConfigurations [{"Type": "BASIC_AUTH", "URI": ARN}]."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        _fail("the password is empty")
    body = {"Username": username, "Password": password}
    secret = Api(endpoint).call("PUT", f"/lamina/secrets/{name}", json_body=body).json()
    click.echo(f"{click.style('put', fg='green')} {secret['Secret']['Arn']}")


@secrets.command(name="list")
@endpoint_option
def list_secrets(endpoint: str) -> None:
    """List the secrets (never their passwords)."""
    found = Api(endpoint).call("GET", "/lamina/secrets").json()["Secrets"]
    if not found:
        click.echo("no secrets")
        return
    print_table(("NAME", "USERNAME", "ARN"), [(s["Name"], s["Username"], s["Arn"]) for s in found])


@secrets.command(name="delete")
@click.argument("name")
@endpoint_option
def delete_secret(name: str, endpoint: str) -> None:
    """Delete the secret NAME (refused while a mapping's BASIC_AUTH names it)."""
    Api(endpoint).call("DELETE", f"/lamina/secrets/{name}")
    click.echo(f"{click.style('deleted', fg='yellow')} {name}")


# -- sources ---------------------------------------------------------------------------


def _stat(stats: dict[str, Any] | None, key: str) -> str:
    if stats is None or stats.get(key) is None:
        return "-"
    value = stats[key]
    return f"{value:.1f}" if isinstance(value, float) else str(value)


@main.command()
@endpoint_option
def sources(endpoint: str) -> None:
    """List the event-source mappings: state, last processing result and counters."""
    found = Api(endpoint).call("GET", "/lamina/sources").json()["Sources"]
    if not found:
        click.echo("no event-source mappings")
        return
    rows: list[tuple[str, ...]] = []
    for m in found:
        stats = m.get("Stats")
        function = m["FunctionArn"].split(":function:", 1)[1]
        modified = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m["LastModified"]))
        rows.append(
            (
                m["UUID"],
                function,
                m["EventSourceArn"] + (f" ({m['Queues'][0]})" if m.get("Queues") else ""),
                m["State"],
                m["LastProcessingResult"],
                _stat(stats, "RecordsReceived"),
                _stat(stats, "Batches"),
                _stat(stats, "FunctionErrors"),
                _stat(stats, "BacklogAgeSeconds"),
                modified,
            )
        )
    print_table(
        (
            "UUID",
            "FUNCTION",
            "SOURCE",
            "STATE",
            "LAST RESULT",
            "RECORDS",
            "BATCHES",
            "ERRORS",
            "AGE S",
            "MODIFIED",
        ),
        rows,
    )
