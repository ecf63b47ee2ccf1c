"""`lamina images`: the container images of the server's node, and their pulls
(`GET /lamina/images`)."""

from __future__ import annotations

import json

import click

from lamina.cli.main import Api, endpoint_option, main
from lamina.cli.tables import print_table


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@endpoint_option
def images(as_json: bool, endpoint: str) -> None:
    """Container images of image functions on this node: digest, size, state and the
    progress of pulls under way."""
    data = Api(endpoint).call("GET", "/lamina/images").json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["Images"]:
        click.echo("no images")
        return
    header = ("IMAGE", "DIGEST", "SIZE", "STATE", "PROGRESS", "FUNCTIONS")
    rows = []
    for image in data["Images"]:
        total = image.get("BytesTotal")
        progress = ""
        if image.get("LayersTotal"):
            progress = f"{image['LayersDone']}/{image['LayersTotal']} layers"
            if total:
                progress += f", {100 * image['BytesDone'] // total}%"
        state = image["State"]
        if image.get("Error"):
            state += f": {image['Error']}"
        rows.append(
            (
                image["Uri"],
                image["Digest"].removeprefix("sha256:")[:12],
                _size(total) if total else "",
                state,
                progress,
                ", ".join(image["Functions"]),
            )
        )
    print_table(header, rows)
