"""`lamina schedules`: every scheduled rule, its expression, state, targets and next fire time
(UTC), as the server plans them (`GET /lamina/schedules`)."""

from __future__ import annotations

import json

import click

from lamina.cli.main import Api, endpoint_option, main


@main.command()
@endpoint_option
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def schedules(endpoint: str, as_json: bool) -> None:
    """List scheduled EventBridge rules and when each fires next (UTC)."""
    data = Api(endpoint).call("GET", "/lamina/schedules").json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    listed = data["Schedules"]
    if not listed:
        click.echo("no scheduled rules")
        return
    if data.get("ClockRate", 1.0) != 1.0:
        click.secho(f"test clock: {data['ClockRate']}x real time", fg="yellow")
    for s in listed:
        state = s["State"]
        colour = "green" if state == "ENABLED" else "yellow"
        next_fire = s["NextFire"] or "-"
        click.echo(
            f"{s['Name']:<32} {s['ScheduleExpression']:<28} {click.style(state, fg=colour):<8} "
            f"next {next_fire}"
        )
        for arn in s["Targets"] or ["(no targets)"]:
            click.echo(f"    -> {arn}")
