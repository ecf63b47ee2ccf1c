"""`lamina roles put|list|get|delete`: execution roles defined in Lamina (what a function's
role session may do). Talks to the server's `/lamina/roles` only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lamina.cli.main import Api, _fail, endpoint_option, main
from lamina.cli.tables import print_table


@main.group()
def roles() -> None:
    """Execution roles: name them as a function's Role (their ARN) to grant its session
    their policies."""


def _read_policies(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        _fail(f"cannot read {path}: {e.strerror}")
    except ValueError as e:
        _fail(f"{path} is not JSON: {e}")
    return data if isinstance(data, list) else [data]


@roles.command()
@click.argument("name")
@click.argument(
    "policy_files",
    metavar="POLICY_FILE...",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
)
@click.option("--description", default=None, help="What the role is for.")
@click.option("--path", "role_path", default=None, help="IAM path, e.g. /service/ [default: /].")
@endpoint_option
def put(
    name: str,
    policy_files: tuple[Path, ...],
    description: str | None,
    role_path: str | None,
    endpoint: str,
) -> None:
    """Create or replace the role NAME with the identity policies in POLICY_FILE (a JSON
    policy document, or a list of them; several files add up)."""
    policies = [doc for path in policy_files for doc in _read_policies(path)]
    body: dict[str, Any] = {"Policies": policies}
    if description is not None:
        body["Description"] = description
    if role_path is not None:
        body["Path"] = role_path
    role = Api(endpoint).call("PUT", f"/lamina/roles/{name}", json_body=body).json()["Role"]
    click.echo(f"{click.style('put', fg='green')} {role['Arn']}")


@roles.command(name="list")
@endpoint_option
def list_roles(endpoint: str) -> None:
    """List the roles."""
    found = Api(endpoint).call("GET", "/lamina/roles").json()["Roles"]
    if not found:
        click.echo("no roles")
        return
    header = ("NAME", "ARN", "POLICIES", "DESCRIPTION")
    body = [(r["RoleName"], r["Arn"], str(len(r["Policies"])), r["Description"]) for r in found]
    print_table(header, body)


@roles.command()
@click.argument("name")
@endpoint_option
def get(name: str, endpoint: str) -> None:
    """Show the role NAME, its policies included (JSON)."""
    role = Api(endpoint).call("GET", f"/lamina/roles/{name}").json()["Role"]
    click.echo(json.dumps(role, indent=2))


@roles.command()
@click.argument("name")
@endpoint_option
def delete(name: str, endpoint: str) -> None:
    """Delete the role NAME. Functions that name it keep it, and their sessions then may do
    nothing."""
    Api(endpoint).call("DELETE", f"/lamina/roles/{name}")
    click.echo(f"{click.style('deleted', fg='yellow')} {name}")
