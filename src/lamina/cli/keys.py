"""`lamina keys`: the server's access keys (admin only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lamina.cli.main import Api, _fail, endpoint_option, main


@main.group()
def keys() -> None:
    """Access keys that may sign requests to the server (admin only)."""


@keys.command("create")
@click.option("--name", default="lamina-user", show_default=True, help="The key's user name.")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
@endpoint_option
def create(name: str, as_json: bool, endpoint: str) -> None:
    """Make an access key; its secret is shown this once."""
    made = Api(endpoint).call("POST", "/lamina/keys", json_body={"UserName": name}).json()
    if as_json:
        click.echo(
            json.dumps(
                {"AccessKeyId": made["AccessKeyId"], "SecretAccessKey": made["SecretAccessKey"]}
            )
        )
        return
    click.echo(f"AccessKeyId:     {made['AccessKeyId']}")
    click.echo(f"SecretAccessKey: {made['SecretAccessKey']}")


@keys.command("list")
@endpoint_option
def list_keys(endpoint: str) -> None:
    """List access keys (never their secrets)."""
    for k in Api(endpoint).call("GET", "/lamina/keys").json()["AccessKeys"]:
        admin = "  admin" if k["Admin"] else ""
        click.echo(
            f"{k['AccessKeyId']}  {k['UserName']:<20} {k['CreateDate']}  "
            f"{len(k['Policies'])} polic{'y' if len(k['Policies']) == 1 else 'ies'}{admin}"
        )


@keys.command("delete")
@click.argument("key_id")
@endpoint_option
def delete(key_id: str, endpoint: str) -> None:
    """Delete access key KEY_ID: requests it signs fail from now on."""
    Api(endpoint).call("DELETE", f"/lamina/keys/{key_id}")
    click.echo(f"deleted {key_id}")


@keys.command("attach-policy")
@click.argument("key_id")
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@endpoint_option
def attach_policy(key_id: str, policy_file: Path, endpoint: str) -> None:
    """Attach the IAM policy in POLICY_FILE (JSON) to KEY_ID."""
    try:
        document = json.loads(policy_file.read_text())
    except ValueError as e:
        _fail(f"{policy_file} is not JSON: {e}")
    if not isinstance(document, dict) or "Version" not in document or "Statement" not in document:
        _fail(f"{policy_file} is not a policy document (it needs Version and Statement)")
    Api(endpoint).call("POST", f"/lamina/keys/{key_id}/policies", json_body=document)
    click.echo(f"attached {policy_file.name} to {key_id}")
