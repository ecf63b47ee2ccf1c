"""DeploymentPreference as a weighted alias shift.

SAM turns a function's `DeploymentPreference` into CodeDeploy resources and an
`UpdatePolicy: CodeDeployLambdaAliasUpdate` on its alias. Lamina runs no CodeDeploy: when such
an alias's version changes, the deploy itself moves the traffic, with the alias's
`RoutingConfig.AdditionalVersionWeights` (the old version stays the alias's main version and
the new one gets the weight), in the steps the deployment group's `DeploymentConfigName`
names, waiting in the foreground:

- `AllAtOnce`: at once;
- `Canary<N>Percent<M>Minutes`: N % for M minutes, then all;
- `Linear<N>PercentEvery<M>Minute(s)`: N % more every M minutes.

`LAMINA_STACKS_SHIFT_SECONDS_PER_MINUTE` (test-only) scales a "minute" down, e.g. to 0.1.
Hooks (PreTraffic/PostTraffic) and alarms are not run: a warning says so.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from lamina.stacks.kinds import Context

_CANARY = re.compile(r"Canary(\d+)Percent(\d+)Minutes?")
_LINEAR = re.compile(r"Linear(\d+)PercentEvery(\d+)Minutes?")


def steps(config_name: str) -> list[tuple[float, float]]:
    """(weight of the new version, minutes to hold it) for each step before the last (100 %)."""
    name = config_name.rsplit(".", 1)[-1].removeprefix("Lambda")
    m = _CANARY.fullmatch(name)
    if m:
        return [(int(m[1]) / 100, float(m[2]))]
    m = _LINEAR.fullmatch(name)
    if m:
        pct, minutes = int(m[1]), float(m[2])
        return [(p / 100, minutes) for p in range(pct, 100, pct)]
    return []  # AllAtOnce, and anything unknown


def _config_name(ctx: Context, logical_id: str) -> str | None:
    """The DeploymentConfigName of the deployment group the alias's UpdatePolicy names."""
    if ctx.template is None:
        return None
    resource = ctx.template.resources.get(logical_id)
    policy = (resource.update_policy or {}) if resource else {}
    update = policy.get("CodeDeployLambdaAliasUpdate")
    if not isinstance(update, dict):
        return None
    group = update.get("DeploymentGroupName")
    group_id = group.get("Ref") if isinstance(group, dict) else None
    group_resource = ctx.template.resources.get(str(group_id))
    if group_resource is None:
        return None
    from lamina.stacks import TemplateError
    from lamina.stacks.template import Resolver

    # Only the config's name: the group's other properties may name resources provisioned
    # after the alias (an UpdatePolicy is no dependency).
    try:
        name = Resolver(ctx.template).resolve(
            group_resource.properties.get("DeploymentConfigName"), ctx.physical
        )
    except TemplateError:
        name = None
    hooks = (resource.properties if resource else {}).get("Hooks")
    if hooks:
        ctx.warn(f"{logical_id}: DeploymentPreference hooks are not run by Lamina")
    return str(name) if name else "AllAtOnce"


def shift_alias(ctx: Context, logical_id: str, path: str, old: str, new: str) -> None:
    """Move the alias at `path` from version `old` to `new` in the configured steps (the
    final move to `new` alone is the caller's update)."""
    config = _config_name(ctx, logical_id)
    if config is None or old in ("None", "$LATEST"):
        return
    scale = float(os.environ.get("LAMINA_STACKS_SHIFT_SECONDS_PER_MINUTE", "60"))
    for weight, minutes in steps(config):
        body: dict[str, Any] = {
            "FunctionVersion": old,
            "RoutingConfig": {"AdditionalVersionWeights": {new: weight}},
        }
        ctx.client.call("PUT", path, body)
        ctx.echo(
            f"  {logical_id}: {config}: {weight:.0%} of traffic on version {new}, "
            f"holding {minutes:g} min"
        )
        time.sleep(minutes * scale)
    ctx.echo(f"  {logical_id}: 100% of traffic on version {new}")
