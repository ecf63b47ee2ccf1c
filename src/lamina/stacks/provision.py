"""Provisioning a template's resources onto Lamina, as CloudFormation would: in dependency
order, each one's properties resolved just before (`template.Resolver`), through the server's
public APIs (`kinds` and the modules per family), remembered as a stack record
(`/lamina/stacks/{name}`), rolled back on failure.

A second deploy of a stack compares each resource's resolved properties (local code by a
digest of its files) with the record: unchanged ones are left alone, changed ones updated (or
replaced where Lambda cannot update in place), new ones created, and those the template no
longer has deleted after the rest succeeded, in reverse dependency order, except those with
`DeletionPolicy: Retain`. A failure undoes the deploy: what it created is deleted, what it
updated is put back as it was, and the stack record is left as before (a first deploy that
fails leaves no stack).

The public surface (for `lamina deploy --template`, `lamina stacks` and `lamina dev`):
`deploy_stack`, `delete_stack`, `StackFailed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.stacks import DeployedFunction, DeployResult, Physical, TemplateError
from lamina.stacks.apis import Accepted, Api
from lamina.stacks.client import ApiError, StackClient, Transport
from lamina.stacks.events import Rule, Schedule
from lamina.stacks.functions import (
    Alias,
    EventInvokeConfig,
    EventSourceMapping,
    Function,
    LayerVersion,
    Permission,
    Url,
    Version,
)
from lamina.stacks.iam import Role
from lamina.stacks.kinds import (
    LOCAL_PATH,
    Context,
    Kind,
    Record,
    Replace,
    ResourceFailed,
    add_digests,
    generated_name,
)

#: resource type -> what provisions it
KINDS: dict[str, Kind] = {
    "AWS::Lambda::Function": Function(),
    "AWS::Lambda::Version": Version(),
    "AWS::Lambda::Alias": Alias(),
    "AWS::Lambda::Permission": Permission(),
    "AWS::Lambda::Url": Url(),
    "AWS::Lambda::LayerVersion": LayerVersion(),
    "AWS::Lambda::EventSourceMapping": EventSourceMapping(),
    "AWS::Lambda::EventInvokeConfig": EventInvokeConfig(),
    "AWS::Events::Rule": Rule(),
    "AWS::Scheduler::Schedule": Schedule(),
    "AWS::IAM::Role": Role(),
    "AWS::ApiGateway::RestApi": Api(rest=True),
    "AWS::ApiGatewayV2::Api": Api(rest=False),
    "AWS::ApiGateway::Deployment": Accepted(),
    "AWS::ApiGateway::Stage": Accepted("StageName"),
    "AWS::ApiGatewayV2::Stage": Accepted("StageName"),
    # a DeploymentPreference: the alias's update shifts traffic itself (`shift`)
    "AWS::CodeDeploy::Application": Accepted(),
    "AWS::CodeDeploy::DeploymentGroup": Accepted(),
}

Echo = Callable[[str], None]
#: CloudFormation's stack names (as `control.stacks` checks them)
_STACK_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")
_REPLACING = (
    "Requested update requires the creation of a new physical resource; hence creating one."
)


class StackFailed(Exception):
    """A deploy or delete that failed (after rolling back what it could): why."""


@dataclass
class _Step:
    """One change of this deploy, for rollback."""

    action: str  # "create" | "update" | "replace"
    logical_id: str
    new: Record
    old: Record | None = None


def _region_account() -> tuple[str, str]:
    from lamina.settings import DEFAULT_ACCOUNT_ID

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return region, os.environ.get("LAMINA_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)


def _digest(props: Any, extra: list[str]) -> str:
    text = json.dumps([props, extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _line(echo: Echo, status: str, rtype: str, logical_id: str, reason: str = "") -> None:
    echo(f"{status:<28} {rtype:<36} {logical_id:<36} {reason}".rstrip())


def _unsupported_physical(ctx: Context, logical_id: str, rtype: str) -> Physical:
    """What a skipped resource answers to, so that the rest of the template still resolves."""
    name = generated_name(ctx.stack, logical_id)
    service = rtype.split("::")[1].lower() if rtype.count("::") == 2 else "unknown"
    arn = f"arn:aws:{service}:{ctx.region}:{ctx.account}:{name}"
    return Physical(ref=name, attributes={"Arn": arn, "Name": name, "Id": name})


def _load(template_path: Path, overrides: dict[str, str], stack: str) -> Any:
    from lamina.stacks.template import load_template

    region, account = _region_account()
    return load_template(
        template_path, overrides, stack_name=stack, region=region, account_id=account
    )


def deploy_stack(
    api: Transport,
    template_path: Path,
    *,
    stack: str,
    overrides: dict[str, str] | None = None,
    strict: bool = False,
    echo: Echo = print,
) -> DeployResult:
    """Deploy `template_path` as stack `stack` (create it, or update it to the template).
    Raises `TemplateError` (nothing done) or `StackFailed` (rolled back)."""
    from lamina.stacks.template import Resolver, deployment_order

    if not _STACK_NAME.fullmatch(stack):
        raise TemplateError(
            f"{stack!r} is not a stack name: a letter, then letters, digits and hyphens "
            "(at most 128 characters)"
        )
    client = StackClient(api)
    template = _load(template_path, overrides or {}, stack)
    order = deployment_order(template)
    skipped = [lid for lid in order if template.resources[lid].type not in KINDS]
    for lid in skipped:
        r = template.resources[lid]
        where = f" (line {r.line})" if r.line else ""
        echo(f"warning: {lid} ({r.type}){where} is not run by Lamina: skipped")
    if strict and skipped:
        raise TemplateError(
            "--strict: resource types Lamina does not run: "
            + ", ".join(sorted({template.resources[lid].type for lid in skipped})),
            logical_id=skipped[0],
            line=template.resources[skipped[0]].line,
        )
    try:
        previous = client.call("GET", f"/lamina/stacks/{stack}", ok_missing=True)
    except ApiError as e:
        raise StackFailed(str(e)) from None
    before: dict[str, Record] = dict((previous or {}).get("Stack", {}).get("Resources", {}))
    region, account = _region_account()
    ctx = Context(client, stack, region, account, template, echo, lambda m: echo(f"warning: {m}"))
    resolver = Resolver(template)
    records: dict[str, Record] = {}
    steps: list[_Step] = []
    echo(
        f"{'ResourceStatus':<28} {'ResourceType':<36} {'LogicalResourceId':<36} "
        "ResourceStatusReason"
    )
    current = ""
    try:
        for lid in order:
            current = lid
            resource = template.resources[lid]
            if lid in skipped:
                ctx.physical[lid] = _unsupported_physical(ctx, lid, resource.type)
                records[lid] = _record(
                    resource.type, ctx.physical[lid], {}, "", "SKIPPED", resource.deletion_policy
                )
                continue
            props = add_digests(resolver.resolve(resource.properties, ctx.physical))
            # A version is published again when the function it publishes changed.
            extra = (
                [
                    records[d]["properties_digest"]
                    for d in sorted(resource.depends_on)
                    if d in records
                ]
                if resource.type == "AWS::Lambda::Version"
                else []
            )
            digest = _digest(props, extra)
            old = before.get(lid)
            if (
                old is not None
                and old.get("type") == resource.type
                and old.get("properties_digest") == digest
            ):
                ctx.physical[lid] = Physical(old["physical_ref"], dict(old.get("attributes") or {}))
                records[lid] = dict(old, deletion_policy=resource.deletion_policy or "Delete")
                continue
            kind = KINDS[resource.type]
            if old is None or old.get("type") != resource.type or old.get("status") == "SKIPPED":
                _line(echo, "CREATE_IN_PROGRESS", resource.type, lid)
                physical = kind.create(ctx, lid, props)
                # the same logical id with another type: the old resource goes at clean-up
                action = "create" if old is None or old.get("status") == "SKIPPED" else "replace"
                _line(echo, "CREATE_COMPLETE", resource.type, lid)
            else:
                _line(echo, "UPDATE_IN_PROGRESS", resource.type, lid)
                try:
                    physical = kind.update(ctx, lid, props, old)
                    action = "update"
                except Replace:
                    _line(
                        echo,
                        "UPDATE_IN_PROGRESS",
                        resource.type,
                        lid,
                        _REPLACING,
                    )
                    physical = kind.create(ctx, lid, props)
                    action = "replace"
                except Exception:
                    # Half-updated (its code, say, but not its configuration): put it back too.
                    partial = Physical(old["physical_ref"], dict(old.get("attributes") or {}))
                    half = _record(resource.type, partial, props, "", "UPDATE_FAILED", None)
                    steps.append(_Step("update", lid, half, old))
                    raise
                _line(echo, "UPDATE_COMPLETE", resource.type, lid)
            ctx.physical[lid] = physical
            status = "CREATE_COMPLETE" if action == "create" else "UPDATE_COMPLETE"
            records[lid] = _record(
                resource.type, physical, props, digest, status, resource.deletion_policy
            )
            steps.append(_Step(action, lid, records[lid], old if action != "create" else None))
        outputs = resolver.resolve_outputs(ctx.physical)
        status = "UPDATE_COMPLETE" if previous else "CREATE_COMPLETE"
        record = {
            "TemplatePath": str(template_path.resolve()),
            "Parameters": {k: str(v) for k, v in template.parameters.items()},
            "Resources": records,
            "Outputs": _no_nulls(outputs),
            "Status": status,
        }
        current = stack
        client.call("PUT", f"/lamina/stacks/{stack}", record)
    except (Exception, KeyboardInterrupt) as e:
        # Interrupted (Ctrl-C) too: what was created would otherwise be left with no record.
        reason = _reason(e)
        rtype = template.resources[current].type if current in template.resources else ""
        if current == stack:
            rtype = "AWS::CloudFormation::Stack"
        failed = "CREATE_FAILED" if current not in before else "UPDATE_FAILED"
        _line(echo, failed, rtype, current, reason)
        _rollback(ctx, steps, echo)
        _line(
            echo,
            "UPDATE_ROLLBACK_COMPLETE" if previous else "ROLLBACK_COMPLETE",
            "AWS::CloudFormation::Stack",
            stack,
        )
        raise StackFailed(f"{current}: {reason}") from None
    # Clean-up, as CloudFormation's UPDATE_COMPLETE_CLEANUP_IN_PROGRESS: removed resources and
    # the old halves of replaced ones, once the stack is updated. A failure here is not rolled
    # back: what could not be deleted stays in the stack's record, to be retried next time.
    gone = [(lid, rec) for lid, rec in reversed(list(before.items())) if lid not in records]
    gone += [(s.logical_id, s.old) for s in reversed(steps) if s.action == "replace" and s.old]
    leftovers: dict[str, Record] = {}
    for lid, rec in gone:
        try:
            _remove(ctx, lid, rec)
        except Exception as e:
            _line(echo, "DELETE_FAILED", str(rec.get("type")), lid, _reason(e))
            if lid not in records:
                leftovers[lid] = rec
    if leftovers:
        record["Resources"] = {**leftovers, **records}
        client.call("PUT", f"/lamina/stacks/{stack}", record)
    if previous and not steps and not gone:
        echo(f"No changes to deploy. Stack {stack} is up to date")
    else:
        echo(f"{status:<28} {'AWS::CloudFormation::Stack':<36} {stack}")
    if outputs:
        echo("Outputs")
        for key, value in outputs.items():
            echo(f"  {key:<34} {value}")
    for note in ctx.notes:
        echo(f"route {note}")
    return DeployResult(stack=stack, functions=_functions(template, records), outputs=outputs)


def _reason(error: BaseException) -> str:
    """Why a resource failed, as its progress line says it. A property the template left out
    that a resource type needs surfaces as a KeyError from its handler; any other unexpected
    error is named by its type, so that the deploy still rolls back and says what happened."""
    if isinstance(error, TemplateError):
        return error.describe()
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, KeyError):
        return f"required property {error.args[0]!r} is missing"
    if isinstance(error, (ApiError, ResourceFailed, OSError)):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _record(
    rtype: str,
    physical: Physical,
    props: dict[str, Any],
    digest: str,
    status: str,
    policy: str | None,
) -> Record:
    return {
        "type": rtype,
        "physical_ref": physical.ref,
        "attributes": _no_nulls(physical.attributes),
        "properties": _no_nulls(props),
        "properties_digest": digest,
        "status": status,
        "deletion_policy": policy or "Delete",
    }


def _no_nulls(value: Any) -> Any:
    """`value` without null members (the server refuses them; a record has no use for them)."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value if v is not None]
    return value


def _remove(ctx: Context, lid: str, rec: Record) -> None:
    rtype = str(rec.get("type", ""))
    if rec.get("status") == "SKIPPED" or rtype not in KINDS:
        return
    if rec.get("deletion_policy") == "Retain":
        _line(ctx.echo, "DELETE_SKIPPED", rtype, lid, "DeletionPolicy: Retain")
        return
    _line(ctx.echo, "DELETE_IN_PROGRESS", rtype, lid)
    KINDS[rtype].delete(ctx, lid, rec)
    _line(ctx.echo, "DELETE_COMPLETE", rtype, lid)


def _rollback(ctx: Context, steps: list[_Step], echo: Echo) -> None:
    """Undo `steps`, newest first; a step that cannot be undone is reported and passed."""
    for step in reversed(steps):
        rtype = step.new["type"]
        kind = KINDS[rtype]
        try:
            if step.action in ("create", "replace"):
                kind.delete(ctx, step.logical_id, step.new)
                _line(echo, "DELETE_COMPLETE", rtype, step.logical_id, "rollback")
            elif step.old is not None:
                ctx.physical[step.logical_id] = Physical(
                    step.old["physical_ref"], step.old.get("attributes") or {}
                )
                kind.update(ctx, step.logical_id, step.old["properties"], step.new)
                _line(echo, "UPDATE_COMPLETE", rtype, step.logical_id, "rollback")
        except Exception as e:
            _line(echo, "UPDATE_ROLLBACK_FAILED", rtype, step.logical_id, _reason(e))


def _functions(template: Any, records: dict[str, Record]) -> list[DeployedFunction]:
    """The stack's functions, for `lamina dev`: name, code directory, alias, handler."""
    out = []
    code_dirs: dict[str, Path] = template.code_dirs
    aliases = {
        str(rec["properties"].get("FunctionName")): str(rec["properties"].get("Name"))
        for rec in records.values()
        if rec["type"] == "AWS::Lambda::Alias"
    }
    for lid, rec in records.items():
        if rec["type"] != "AWS::Lambda::Function" or rec.get("status") == "SKIPPED":
            continue
        props = rec["properties"]
        resource = template.resources[lid]
        source = resource.source or lid
        code = props.get("Code") or {}
        local = code.get(LOCAL_PATH) if isinstance(code, dict) else None
        code_dir = code_dirs.get(source) or code_dirs.get(lid)
        if code_dir is None and local and Path(local).is_dir():
            code_dir = Path(local)
        name = rec["physical_ref"]
        out.append(
            DeployedFunction(
                logical_id=source,
                function_name=name,
                code_dir=code_dir,
                alias=aliases.get(name),
                handler=props.get("Handler"),
                runtime=props.get("Runtime"),
            )
        )
    return out


def delete_stack(api: Transport, stack: str, *, echo: Echo = print) -> None:
    """Delete every resource of stack `stack` in reverse order (Retain ones kept), then its
    record. Raises `StackFailed` if the stack does not exist or a delete fails (the record
    then keeps what is left, status DELETE_FAILED)."""
    client = StackClient(api)
    try:
        found = client.call("GET", f"/lamina/stacks/{stack}", ok_missing=True)
    except ApiError as e:
        raise StackFailed(str(e)) from None
    if found is None:
        raise StackFailed(f"Stack with id {stack} does not exist")
    data = found["Stack"]
    records: dict[str, Record] = dict(data.get("Resources") or {})
    region, account = _region_account()
    ctx = Context(client, stack, region, account, None, echo, lambda m: echo(f"warning: {m}"))
    left = dict(records)
    for lid, rec in reversed(list(records.items())):
        try:
            _remove(ctx, lid, rec)
        except Exception as e:
            _line(echo, "DELETE_FAILED", str(rec.get("type")), lid, _reason(e))
            client.call(
                "PUT",
                f"/lamina/stacks/{stack}",
                dict(
                    TemplatePath=data.get("TemplatePath", ""),
                    Parameters=data.get("Parameters") or {},
                    Resources=left,
                    Outputs=data.get("Outputs") or {},
                    Status="DELETE_FAILED",
                ),
            )
            raise StackFailed(f"{lid}: {_reason(e)}") from None
        del left[lid]
    client.call("DELETE", f"/lamina/stacks/{stack}", ok_missing=True)
    _line(echo, "DELETE_COMPLETE", "AWS::CloudFormation::Stack", stack)
