"""`lamina websockets`: WebSocket APIs, their routes and this node's live connections, over
the same apigatewayv2 API boto3 uses (`/v2/apis`) and Lamina's `/lamina/websockets/...`."""

from __future__ import annotations

import click

from lamina.cli.main import Api, endpoint_option, main
from lamina.cli.tables import print_table


@main.group(invoke_without_command=True)
@endpoint_option
@click.pass_context
def websockets(ctx: click.Context, endpoint: str) -> None:
    """WebSocket APIs (API Gateway v2 style). Without a subcommand: `list`."""
    if ctx.invoked_subcommand is None:
        _list(endpoint)


@websockets.command(name="list")
@endpoint_option
def list_apis(endpoint: str) -> None:
    """List the WebSocket APIs with their endpoints and stages."""
    _list(endpoint)


def _list(endpoint: str) -> None:
    api = Api(endpoint)
    items = api.call("GET", "/v2/apis").json()["items"]
    if not items:
        click.echo("no WebSocket APIs")
        return
    rows: list[tuple[str, ...]] = []
    for item in items:
        stages = api.call("GET", f"/v2/apis/{item['apiId']}/stages").json()["items"]
        names = ",".join(s["stageName"] for s in stages) or "-"
        rows.append((item["apiId"], item["name"], item["apiEndpoint"], names))
    print_table(("API ID", "NAME", "ENDPOINT", "STAGES"), rows)


@websockets.command(name="routes")
@click.argument("api_id")
@endpoint_option
def routes(api_id: str, endpoint: str) -> None:
    """The routes of API_ID and the function each is integrated with."""
    api = Api(endpoint)
    found = api.call("GET", f"/v2/apis/{api_id}/routes").json()["items"]
    integrations = {
        i["integrationId"]: i["integrationUri"]
        for i in api.call("GET", f"/v2/apis/{api_id}/integrations").json()["items"]
    }
    if not found:
        click.echo("no routes")
        return
    rows: list[tuple[str, ...]] = []
    for route in found:
        target = route.get("target", "")
        uri = integrations.get(target.removeprefix("integrations/"), "-")
        two_way = "yes" if route.get("routeResponseSelectionExpression") else "no"
        rows.append((route["routeKey"], route["routeId"], uri, two_way))
    print_table(("ROUTE KEY", "ROUTE ID", "FUNCTION", "TWO-WAY"), rows)


@websockets.command(name="connections")
@endpoint_option
def connections(endpoint: str) -> None:
    """The live connections this server holds."""
    found = Api(endpoint).call("GET", "/lamina/websockets/connections").json()["Connections"]
    if not found:
        click.echo("no connections")
        return
    print_table(
        ("CONNECTION ID", "API ID", "STAGE", "SOURCE IP", "CONNECTED AT", "LAST ACTIVE"),
        [
            (
                c["ConnectionId"],
                c["ApiId"],
                c["Stage"],
                c["SourceIp"],
                c["ConnectedAt"],
                c["LastActiveAt"],
            )
            for c in found
        ],
    )
