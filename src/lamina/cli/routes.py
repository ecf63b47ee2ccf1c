"""`lamina routes list|add|rm`: the HTTP routes (API Gateway HTTP API style) the server serves
under `/_http/`. Talks to the server's `/lamina/routes` only; the server keeps the route file."""

from __future__ import annotations

import click

from lamina.cli.main import Api, endpoint_option, main
from lamina.cli.tables import print_table


@main.group()
def routes() -> None:
    """HTTP routes: `GET /items/{id}` -> a function, served at <endpoint>/_http/..."""


@routes.command(name="list")
@endpoint_option
def list_routes(endpoint: str) -> None:
    """List the routes and where they are served."""
    data = Api(endpoint).call("GET", "/lamina/routes").json()
    click.echo(f"{data['baseUrl']}  (stage {data['stage']}, file {data['file']})")
    if not data["routes"]:
        click.echo("no routes")
        return
    header = ("ROUTE", "FUNCTION", "PAYLOAD")
    body = [(r["routeKey"], r["function"], r["payloadFormatVersion"]) for r in data["routes"]]
    print_table(header, body)


@routes.command()
@click.argument("route_key")
@click.argument("function")
@click.option(
    "--payload-format",
    type=click.Choice(["1.0", "2.0"]),
    default="2.0",
    show_default=True,
    help="The event the function gets: 2.0 (HTTP API) or 1.0 (REST API proxy shape).",
)
@endpoint_option
def add(route_key: str, function: str, payload_format: str, endpoint: str) -> None:
    """Add ROUTE_KEY ('GET /items/{id}', 'ANY /proxy/{proxy+}' or '$default') to FUNCTION
    (a name or ARN, optionally name:alias)."""
    body = {"routeKey": route_key, "function": function, "payloadFormatVersion": payload_format}
    Api(endpoint).call("POST", "/lamina/routes", json_body=body)
    click.echo(f"{click.style('added', fg='green')} {route_key} -> {function} ({payload_format})")


@routes.command()
@click.argument("route_key")
@endpoint_option
def rm(route_key: str, endpoint: str) -> None:
    """Remove the route ROUTE_KEY."""
    Api(endpoint).call("DELETE", "/lamina/routes", params={"routeKey": route_key})
    click.echo(f"{click.style('removed', fg='yellow')} {route_key}")
