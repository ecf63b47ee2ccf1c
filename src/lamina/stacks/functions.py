"""AWS::Lambda::* resources, through Lamina's Lambda API (the same calls CloudFormation makes
on AWS): Function, Version, Alias, Permission, Url, LayerVersion, EventSourceMapping and
EventInvokeConfig."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lamina.stacks import Physical, TemplateError
from lamina.stacks.client import FN
from lamina.stacks.kinds import (
    LOCAL_PATH,
    Context,
    Record,
    Replace,
    coerce,
    function_and_qualifier,
    strip,
    zip_inline,
    zip_local,
)
from lamina.stacks.shift import shift_alias

#: CreateFunction members a template's Function may carry as they are
_CONFIG_KEYS = (
    "Runtime",
    "Handler",
    "Role",
    "Description",
    "Timeout",
    "MemorySize",
    "Environment",
    "Layers",
    "Architectures",
    "EphemeralStorage",
    "DeadLetterConfig",
    "TracingConfig",
    "KmsKeyArn",
    "VpcConfig",
    "FileSystemConfigs",
    "ImageConfig",
    "LoggingConfig",
    "SnapStart",
)
#: what UpdateFunctionConfiguration is sent for a member the template no longer has
_RESET: dict[str, Any] = {
    "Description": "",
    "Environment": {"Variables": {}},
    "Layers": [],
    "DeadLetterConfig": {},
    "TracingConfig": {"Mode": "PassThrough"},
    "Timeout": 3,
    "MemorySize": 128,
    "EphemeralStorage": {"Size": 512},
    "SnapStart": {"ApplyOn": "None"},
}
#: what UpdateFunctionConfiguration does not take (the code's, or apart)
_NOT_CONFIG = ("ImageConfig", "Architectures")
#: configuration that cannot change after creation (CloudFormation replaces the function)
_REPLACE_ON = ("FunctionName", "PackageType")


def _code(props: dict[str, Any], logical_id: str) -> dict[str, Any]:
    code = props.get("Code")
    if not isinstance(code, dict):
        raise TemplateError("Code is required", logical_id=logical_id)
    if LOCAL_PATH in code:
        return {"ZipFile": zip_local(Path(code[LOCAL_PATH]), logical_id)}
    if "ZipFile" in code:
        return {"ZipFile": zip_inline(str(code["ZipFile"]), props.get("Runtime"))}
    keys = ("S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri")
    out = {k: code[k] for k in keys if k in code}
    if not out:
        raise TemplateError("Code needs S3Bucket/S3Key, ImageUri or ZipFile", logical_id=logical_id)
    return out


def _key(code: Any) -> str:
    return json.dumps(code, sort_keys=True)


def _tags(props: dict[str, Any], ctx: Context, logical_id: str) -> dict[str, str]:
    tags = {t["Key"]: str(t["Value"]) for t in props.get("Tags") or [] if isinstance(t, dict)}
    tags.setdefault("lamina:stack-name", ctx.stack)
    tags.setdefault("lamina:logical-id", logical_id)
    return tags


def _function_props(props: dict[str, Any]) -> dict[str, Any]:
    out = coerce(props, ints=("Timeout", "MemorySize", "ReservedConcurrentExecutions"))
    storage = out.get("EphemeralStorage")
    if isinstance(storage, dict):
        out["EphemeralStorage"] = coerce(storage, ints=("Size",))
    return out


class Function:
    """Functions. Before local code is replaced, the package in place is downloaded and kept
    for the rest of the deploy: the directory now holds the new code, so a rollback could not
    rebuild the old package from it."""

    def __init__(self) -> None:
        #: (function name, the Code property as JSON) -> the package, base64
        self._saved: dict[tuple[str, str], str] = {}

    def _name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        return str(props.get("FunctionName") or ctx.name_for(logical_id))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        props = _function_props(props)
        name = self._name(ctx, logical_id, props)
        body: dict[str, Any] = {k: props[k] for k in _CONFIG_KEYS if k in props}
        body.setdefault("Role", f"arn:aws:iam::{ctx.account}:role/lamina-function")
        body.update(FunctionName=name, Code=_code(props, logical_id))
        body["Tags"] = _tags(props, ctx, logical_id)
        if props.get("PackageType"):
            body["PackageType"] = props["PackageType"]
        ctx.client.call("POST", FN, body)
        try:
            self._after(ctx, name, props)
            return self._physical(ctx, name)
        except Exception:
            ctx.client.call("DELETE", f"{FN}/{name}", ok_missing=True)
            raise

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        props, before = _function_props(props), _function_props(old["properties"])
        name = self._name(ctx, logical_id, props)
        if name != old["physical_ref"] or any(
            props.get(k) != before.get(k) for k in _REPLACE_ON if k != "FunctionName"
        ):
            raise Replace()
        # Architectures go with the code (UpdateFunctionCode), not the configuration.
        if props.get("Code") != before.get("Code") or props.get("Architectures") != before.get(
            "Architectures"
        ):
            self._save(ctx, name, before.get("Code"))
            saved = self._saved.get((name, _key(props.get("Code"))))
            code = {"ZipFile": saved} if saved else _code(props, logical_id)
            if props.get("Architectures"):
                code["Architectures"] = props["Architectures"]
            ctx.client.call("PUT", f"{FN}/{name}/code", code)
            ctx.client.wait_ready(name)
        config = {k: props[k] for k in _CONFIG_KEYS if k in props and k not in _NOT_CONFIG}
        for key in _RESET:
            if key in before and key not in props:
                config[key] = _RESET[key]
        if props.get("ImageConfig") or before.get("ImageConfig"):
            config["ImageConfig"] = props.get("ImageConfig") or {}
        if config:
            ctx.client.call("PUT", f"{FN}/{name}/configuration", config)
        self._after(ctx, name, props, before)
        return self._physical(ctx, name)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        ctx.client.call("DELETE", f"{FN}/{record['physical_ref']}", ok_missing=True)

    def _save(self, ctx: Context, name: str, code: Any) -> None:
        if not (isinstance(code, dict) and LOCAL_PATH in code):
            return  # inline and S3 code can be sent again as it is
        key = (name, _key(code))
        if key in self._saved:
            return
        location = (ctx.client.call("GET", f"{FN}/{name}").get("Code") or {}).get("Location")
        if location:
            self._saved[key] = base64.b64encode(ctx.client.download(location)).decode()

    def _after(
        self, ctx: Context, name: str, props: dict[str, Any], before: dict[str, Any] | None = None
    ) -> None:
        ctx.client.wait_ready(name)
        reserved = props.get("ReservedConcurrentExecutions")
        if reserved is not None:
            body = {"ReservedConcurrentExecutions": int(reserved)}
            ctx.client.call("PUT", f"/2017-10-31/functions/{name}/concurrency", body)
        elif before and before.get("ReservedConcurrentExecutions") is not None:
            ctx.client.call("DELETE", f"/2017-10-31/functions/{name}/concurrency", ok_missing=True)

    def _physical(self, ctx: Context, name: str) -> Physical:
        config = ctx.client.wait_ready(name)
        return Physical(ref=name, attributes={"Arn": config["FunctionArn"]})


class Version:
    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name, _ = function_and_qualifier(str(props["FunctionName"]))
        ctx.client.wait_ready(name)
        body = {k: props[k] for k in ("Description", "CodeSha256") if k in props}
        out = ctx.client.call("POST", f"{FN}/{name}/versions", body)
        return Physical(
            ref=out["FunctionArn"],
            attributes={"Version": out["Version"], "FunctionArn": out["FunctionArn"]},
        )

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        raise Replace()  # a version never changes: CloudFormation publishes a new one

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        name, version = function_and_qualifier(record["physical_ref"])
        params = {"Qualifier": version} if version else None
        if version:
            ctx.client.call("DELETE", f"{FN}/{name}", params=params, ok_missing=True)


class Alias:
    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name, _ = function_and_qualifier(str(props["FunctionName"]))
        body = strip(props, "FunctionName", "ProvisionedConcurrencyConfig")
        out = ctx.client.call("POST", f"{FN}/{name}/aliases", body)
        try:
            self._provisioned(ctx, name, props, {})
        except Exception:
            ctx.client.call("DELETE", f"{FN}/{name}/aliases/{props['Name']}", ok_missing=True)
            raise
        return Physical(ref=out["AliasArn"], attributes={"AliasArn": out["AliasArn"]})

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        before = old["properties"]
        if props.get("Name") != before.get("Name") or props.get("FunctionName") != before.get(
            "FunctionName"
        ):
            raise Replace()
        name, _ = function_and_qualifier(str(props["FunctionName"]))
        path = f"{FN}/{name}/aliases/{props['Name']}"
        new_version = str(props.get("FunctionVersion"))
        old_version = str(before.get("FunctionVersion"))
        if new_version != old_version:
            shift_alias(ctx, logical_id, path, old_version, new_version)
        body = strip(props, "FunctionName", "Name", "ProvisionedConcurrencyConfig")
        body.setdefault("RoutingConfig", {"AdditionalVersionWeights": {}})
        body.setdefault("Description", "")
        out = ctx.client.call("PUT", path, body)
        self._provisioned(ctx, name, props, before)
        return Physical(ref=out["AliasArn"], attributes={"AliasArn": out["AliasArn"]})

    @staticmethod
    def _provisioned(
        ctx: Context, name: str, props: dict[str, Any], before: dict[str, Any]
    ) -> None:
        """The alias's ProvisionedConcurrencyConfig (SAM's `ProvisionedConcurrencyConfig`),
        through Put/DeleteProvisionedConcurrencyConfig on the alias."""
        config, was = (
            props.get("ProvisionedConcurrencyConfig"),
            before.get("ProvisionedConcurrencyConfig"),
        )
        if config == was:
            return
        path = f"/2019-09-30/functions/{name}/provisioned-concurrency"
        params = {"Qualifier": str(props["Name"])}
        if isinstance(config, dict):
            body = coerce(config, ints=("ProvisionedConcurrentExecutions",))
            ctx.client.call("PUT", path, body, params=params)
        elif was:
            ctx.client.call("DELETE", path, params=params, ok_missing=True)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        props = record["properties"]
        name, _ = function_and_qualifier(str(props["FunctionName"]))
        ctx.client.call("DELETE", f"{FN}/{name}/aliases/{props['Name']}", ok_missing=True)


class Permission:
    _KEYS = (
        "Action",
        "Principal",
        "SourceArn",
        "SourceAccount",
        "EventSourceToken",
        "PrincipalOrgID",
        "FunctionUrlAuthType",
    )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name, qualifier = function_and_qualifier(str(props["FunctionName"]))
        digest = hashlib.sha256(repr(sorted(props.items())).encode()).hexdigest()[:8]
        sid = f"{ctx.stack}-{logical_id}"[:90] + f"-{digest}"
        body = {k: props[k] for k in self._KEYS if k in props}
        body["StatementId"] = sid
        params = {"Qualifier": qualifier} if qualifier else None
        ctx.client.call("POST", f"{FN}/{name}/policy", body, params=params)
        return Physical(ref=sid)

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        raise Replace()  # every property of a permission is "Replacement: Yes"

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        name, qualifier = function_and_qualifier(str(record["properties"]["FunctionName"]))
        params = {"Qualifier": qualifier} if qualifier else None
        sid = quote(record["physical_ref"], safe="")
        ctx.client.call("DELETE", f"{FN}/{name}/policy/{sid}", params=params, ok_missing=True)


class Url:
    _KEYS = ("AuthType", "Cors", "InvokeMode")

    def _where(self, props: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
        name, qualifier = function_and_qualifier(str(props["TargetFunctionArn"]))
        qualifier = props.get("Qualifier") or qualifier
        return f"/2021-10-31/functions/{name}/url", (
            {"Qualifier": str(qualifier)} if qualifier else None
        )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        path, params = self._where(props)
        body = {k: props[k] for k in self._KEYS if k in props}
        out = ctx.client.call("POST", path, body, params=params)
        return self._physical(out)

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        if self._where(props) != self._where(old["properties"]):
            raise Replace()
        path, params = self._where(props)
        body = {k: props[k] for k in self._KEYS if k in props}
        body.setdefault("Cors", {})
        out = ctx.client.call("PUT", path, body, params=params)
        return self._physical(out)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        path, params = self._where(record["properties"])
        ctx.client.call("DELETE", path, params=params, ok_missing=True)

    @staticmethod
    def _physical(out: dict[str, Any]) -> Physical:
        return Physical(
            ref=out["FunctionArn"],
            attributes={"FunctionUrl": out["FunctionUrl"], "FunctionArn": out["FunctionArn"]},
        )


class LayerVersion:
    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        name = str(props.get("LayerName") or ctx.name_for(logical_id, 140))
        content = props.get("Content")
        if not isinstance(content, dict):
            raise TemplateError("Content is required", logical_id=logical_id)
        if LOCAL_PATH in content:
            body_content: dict[str, Any] = {
                "ZipFile": zip_local(Path(content[LOCAL_PATH]), logical_id)
            }
        else:
            body_content = {k: content[k] for k in ("S3Bucket", "S3Key", "S3ObjectVersion")}
        keys = ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo")
        body = {k: props[k] for k in keys if k in props}
        body["Content"] = body_content
        out = ctx.client.call("POST", f"/2018-10-31/layers/{name}/versions", body)
        return Physical(
            ref=out["LayerVersionArn"], attributes={"LayerVersionArn": out["LayerVersionArn"]}
        )

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        raise Replace()  # a layer version never changes: a new one is published

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        arn = record["physical_ref"]
        parts = arn.split(":")
        name, version = parts[6], parts[7]
        ctx.client.call("DELETE", f"/2018-10-31/layers/{name}/versions/{version}", ok_missing=True)


def _mapping_props(props: dict[str, Any]) -> dict[str, Any]:
    ints = (
        "BatchSize",
        "MaximumBatchingWindowInSeconds",
        "MaximumRecordAgeInSeconds",
        "MaximumRetryAttempts",
        "ParallelizationFactor",
        "TumblingWindowInSeconds",
    )
    return coerce(props, ints=ints, bools=("Enabled", "BisectBatchOnFunctionError"))


class EventSourceMapping:
    _PATH = "/2015-03-31/event-source-mappings"

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        out = ctx.client.call("POST", self._PATH, _mapping_props(strip(props, "Tags")))
        return Physical(ref=out["UUID"], attributes={"Id": out["UUID"]})

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        before = old["properties"]
        for key in ("EventSourceArn", "StartingPosition", "SelfManagedEventSource"):
            if props.get(key) != before.get(key):
                raise Replace()
        body = strip(
            props, "Tags", "EventSourceArn", "StartingPosition", "StartingPositionTimestamp"
        )
        ctx.client.call("PUT", f"{self._PATH}/{old['physical_ref']}", _mapping_props(body))
        return Physical(ref=old["physical_ref"], attributes={"Id": old["physical_ref"]})

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        ctx.client.call("DELETE", f"{self._PATH}/{record['physical_ref']}", ok_missing=True)


class EventInvokeConfig:
    _KEYS = ("MaximumEventAgeInSeconds", "MaximumRetryAttempts", "DestinationConfig")

    def _where(self, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
        name, _ = function_and_qualifier(str(props["FunctionName"]))
        qualifier = str(props.get("Qualifier") or "$LATEST")
        return f"/2019-09-25/functions/{name}/event-invoke-config", {"Qualifier": qualifier}

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Physical:
        path, params = self._where(props)
        body = coerce(
            {k: props[k] for k in self._KEYS if k in props},
            ints=("MaximumEventAgeInSeconds", "MaximumRetryAttempts"),
        )
        ctx.client.call("PUT", path, body, params=params)
        return Physical(ref=f"{path.split('/')[3]}:{params['Qualifier']}")

    def update(self, ctx: Context, logical_id: str, props: dict[str, Any], old: Record) -> Physical:
        if self._where(props) != self._where(old["properties"]):
            raise Replace()
        return self.create(ctx, logical_id, props)

    def delete(self, ctx: Context, logical_id: str, record: Record) -> None:
        path, params = self._where(record["properties"])
        ctx.client.call("DELETE", path, params=params, ok_missing=True)
