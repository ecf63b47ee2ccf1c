"""`lamina deploy --template` (called from `deploy` in cli/main.py) and `lamina stacks
[show NAME | delete NAME]`: stacks deployed from SAM / CloudFormation templates. The work is
`lamina.stacks.provision`'s; this module parses options and prints."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from lamina.cli.main import Api, _fail, endpoint_option, main
from lamina.cli.tables import print_table

_SAM_PAIR = re.compile(r"ParameterKey=([^,]+),ParameterValue=(.*)", re.S)


def parse_overrides(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`K=V` and sam's `ParameterKey=K,ParameterValue=V`, each option holding one or several
    separated by spaces (sam's own way of writing them; quotes group words, as in a shell)."""
    out: dict[str, str] = {}
    for value in values:
        try:
            items = shlex.split(value)  # sam's quoting: Name="two words"
        except ValueError as e:
            raise click.BadParameter(
                f"{value!r}: {e}", param_hint="--parameter-overrides"
            ) from None
        for item in items:
            m = _SAM_PAIR.fullmatch(item)
            if m:
                out[m[1]] = m[2]
                continue
            key, eq, val = item.partition("=")
            if not eq or not key:
                raise click.BadParameter(
                    f"{item!r}: expected K=V or ParameterKey=K,ParameterValue=V",
                    param_hint="--parameter-overrides",
                )
            out[key] = val
    return out


def default_stack_name(template: Path) -> str:
    """What `sam deploy` would use: the `stack_name` of the project's samconfig.toml
    (`[default.deploy.parameters]`), else the project directory's name (as `sam deploy
    --guided` suggests `sam-app` for an app in `sam-app/`), made a valid stack name. The
    project is the template's directory, or the one holding `.aws-sam/` for the template
    `sam build` wrote."""
    project = template.resolve().parent
    if project.name == "build" and project.parent.name == ".aws-sam":
        project = project.parent.parent
    name = _samconfig_stack_name(project / "samconfig.toml") or project.name
    name = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    if not name or not name[0].isalpha():
        name = f"stack-{name}" if name else "stack"
    return name[:128]


def _samconfig_stack_name(path: Path) -> str | None:
    import tomllib

    try:
        config = tomllib.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    params = config.get("default", {}).get("deploy", {}).get("parameters", {})
    value = params.get("stack_name") if isinstance(params, dict) else None
    return value if isinstance(value, str) and value else None


def deploy_template(
    api: Api, template: Path, overrides: tuple[str, ...], stack: str | None, strict: bool
) -> None:
    from lamina.stacks import TemplateError
    from lamina.stacks.provision import StackFailed, deploy_stack

    params = parse_overrides(overrides)
    name = stack or default_stack_name(template)
    try:
        deploy_stack(api, template, stack=name, overrides=params, strict=strict, echo=click.echo)
    except TemplateError as e:
        _fail(f"{template}: {e.describe()} (nothing was deployed)")
    except StackFailed as e:
        _fail(f"stack {name} failed, rolled back: {e}")
    click.secho(f"Successfully created/updated stack - {name}", fg="green")


@main.group(invoke_without_command=True)
@click.pass_context
@endpoint_option
def stacks(ctx: click.Context, endpoint: str) -> None:
    """Stacks deployed with `lamina deploy --template`: list them (no subcommand), show one,
    delete one."""
    if ctx.invoked_subcommand is not None:
        return
    data = Api(endpoint).call("GET", "/lamina/stacks").json()
    if not data["Stacks"]:
        click.echo("no stacks")
        return
    header = ("NAME", "STATUS", "RESOURCES", "UPDATED")
    body = [
        (s["StackName"], s["StackStatus"], str(s["ResourceCount"]), s["LastUpdatedTime"])
        for s in data["Stacks"]
    ]
    print_table(header, body)


@stacks.command()
@click.argument("name")
@endpoint_option
def show(name: str, endpoint: str) -> None:
    """Show stack NAME: its resources (type, physical id, status) and outputs."""
    data: dict[str, Any] = Api(endpoint).call("GET", f"/lamina/stacks/{name}").json()["Stack"]
    click.echo(f"{data['StackName']}  {data['StackStatus']}  ({data['TemplatePath']})")
    header = ("LOGICAL ID", "TYPE", "PHYSICAL ID", "STATUS")
    body = [
        (lid, r["type"], r["physical_ref"], r["status"]) for lid, r in data["Resources"].items()
    ]
    print_table(header, body)
    if data["Outputs"]:
        click.echo("Outputs")
        for key, value in data["Outputs"].items():
            click.echo(f"  {key:<34} {value}")


@stacks.command()
@click.argument("name")
@endpoint_option
def delete(name: str, endpoint: str) -> None:
    """Delete stack NAME and its resources (in reverse order; DeletionPolicy Retain kept)."""
    from lamina.stacks.provision import StackFailed, delete_stack

    try:
        delete_stack(Api(endpoint), name, echo=click.echo)
    except StackFailed as e:
        _fail(f"stack {name}: {e}")
    sys.stdout.flush()


# `lamina stack delete NAME` (the singular, as in "a stack") is the same group.
main.add_command(stacks, name="stack")
