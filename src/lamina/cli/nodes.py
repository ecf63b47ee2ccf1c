"""`lamina nodes`: the nodes of the cluster, their health and load (`GET /lamina/nodes`)."""

from __future__ import annotations

import json

import click

from lamina.cli.main import Api, endpoint_option, main
from lamina.cli.tables import print_table


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@endpoint_option
def nodes(as_json: bool, endpoint: str) -> None:
    """The live nodes of the cluster this server belongs to (a single-machine server lists
    itself): health, heartbeat age, environments and memory."""
    data = Api(endpoint).call("GET", "/lamina/nodes").json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    header = ("NODE", "ENDPOINT", "HEALTH", "HEARTBEAT", "ENVS", "BUSY", "MEMORY MB")
    rows = [
        (
            node["Name"] + (" *" if node["Self"] else ""),
            node["Endpoint"],
            "ok" if node["Healthy"] else "; ".join(node["Problems"]) or "unhealthy",
            f"{node['HeartbeatAgeSeconds']:.1f}s ago",
            str(node["Environments"]),
            str(node["Busy"]),
            f"{node['MemoryUsedMB']:,}/{node['MemoryCapacityMB']:,}",
        )
        for node in data["Nodes"]
    ]
    print_table(header, rows)
    if not data["Cluster"]:
        click.echo("(a single-machine server: not in a cluster)")
