"""Capacity providers (Lambda Managed Instances) and the function versions attached to them.

On AWS a capacity provider is a fleet of EC2 instances in the customer's VPC that runs the
execution environments of the function versions attached to it. On a Lamina host it is a
named share of this host's CPU:

- `CapacityProviderScalingConfig.MaxVCpuCount` caps the vCPUs that the provider's function
  versions' running environments use together (an environment counts its
  `MemorySize / 1024 / ExecutionEnvironmentMemoryGiBPerVCpu` vCPUs, the ratio Managed
  Instances gives it); an invoke past the cap gets 429 at once. Without it, no cap.
- `InstanceRequirements.Architectures` must be one this host runs, and an attached function
  must have the same architecture.
- `VpcConfig` and `PermissionsConfig` are required and checked as AWS's model has them; they
  are recorded (the host's network and Lamina's roles apply, as for any function).
- What has no meaning on one host is refused rather than ignored: instance types, scaling
  policies and `ScalingMode: Manual`, `PerExecutionEnvironmentMaxConcurrency` other than 1
  (a Lamina environment runs one invocation at a time), `PropagateTags`, `TelemetryConfig`.

A function's `CapacityProviderConfig` (CreateFunction, UpdateFunctionConfiguration) belongs to
its `$LATEST` and is copied to each version it publishes. The scaling configs of attached
versions are in `control.scaling`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lamina.control import changes, listing
from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ValidationError,
)
from lamina.models import LATEST, FunctionConfig
from lamina.settings import Settings
from lamina.store.capacity import CapacityStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from lamina.control.functions import FunctionService

LIST_MAX_ITEMS = 50
STATES = ("Pending", "Active", "Failed", "Deleting")
_NAME = re.compile(r"[a-zA-Z0-9-_]+")
_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"capacity-provider:(?P<name>[a-zA-Z0-9-_]+)"
)
_NAME_OR_ARN = re.compile(rf"({_ARN.pattern.replace('?P<name>', '')})|{_NAME.pattern}")
_SUBNET = re.compile(r"subnet-[0-9a-z]*")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-zA-Z]*")
_ROLE = re.compile(r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
_KMS = re.compile(r"arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*")
_CREATE_MEMBERS = {
    "CapacityProviderName",
    "VpcConfig",
    "PermissionsConfig",
    "InstanceRequirements",
    "CapacityProviderScalingConfig",
    "KmsKeyArn",
    "Tags",
    "PropagateTags",
    "TelemetryConfig",
}
_UPDATE_MEMBERS = {"CapacityProviderScalingConfig", "PropagateTags", "TelemetryConfig"}
#: Lambda Managed Instances' default memory per vCPU of an environment (GiB)
DEFAULT_GIB_PER_VCPU = 2.0


class CapacityProviders:
    """The providers and the versions attached to them, kept in memory (invokes and
    FunctionConfiguration read them)."""

    def __init__(
        self,
        functions: FunctionService,
        store: CapacityStore,
        settings: Settings,
        host_architectures: Callable[[], set[str]],
    ) -> None:
        self._functions = functions
        self._store = store
        self._settings = settings
        self._host_architectures = host_architectures
        self._providers: dict[str, tuple[dict[str, Any], datetime]] = {}
        #: (function, version) -> the version's CapacityProviderConfig as stored
        self._attached: dict[tuple[str, str], dict[str, Any]] = {}
        #: told `(provider, MaxVCpuCount or None)` when a provider's cap changes
        self.on_provider: Callable[[str, float | None], None] | None = None
        #: told `(name, version)` when a version's attachment changes
        self.on_attach: Callable[[str, str], None] | None = None

    async def load(self) -> None:
        for name, spec, at in await self._functions.run(self._store.providers):
            self._providers[name] = (spec, at)
            self._tell_provider(name)
        for fn, version, config in await self._functions.run(self._store.attachments):
            self._attached[(fn, version)] = config
            if self.on_attach is not None:
                self.on_attach(fn, version)

    async def refresh(self, name: str) -> None:
        """Another node created, changed or deleted the provider `name` ("*": any): re-read
        it, and tell the scheduler if it is not what was held."""
        fresh = {n: (spec, at) for n, spec, at in await self._functions.run(self._store.providers)}
        names = fresh.keys() | self._providers.keys() if name == "*" else {name}
        for n in names:
            if self._providers.get(n) == fresh.get(n):
                continue
            if n in fresh:
                self._providers[n] = fresh[n]
                self._tell_provider(n)
            else:
                del self._providers[n]
                if self.on_provider is not None:
                    self.on_provider(n, None)

    async def _changed(self, name: str) -> None:
        await changes.tell(self._functions.feed, "capacity-provider", name)

    # -- names ---------------------------------------------------------------------

    def arn(self, name: str) -> str:
        region, account = self._settings.region, self._settings.account_id
        return f"arn:aws:lambda:{region}:{account}:capacity-provider:{name}"

    def _name(self, value: Any) -> str:
        c = v.Constraints()
        c.string(value, "capacityProviderName", max_len=140, pattern=_NAME_OR_ARN, required=True)
        c.check()
        m = _ARN.fullmatch(value)
        return m["name"] if m is not None else str(value)

    def _require(self, name: str) -> tuple[dict[str, Any], datetime]:
        found = self._providers.get(name)
        if found is None:
            raise ResourceNotFoundError(f"Capacity provider not found: {self.arn(name)}")
        return found

    # -- the provider operations ---------------------------------------------------

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateCapacityProvider: the provider as GetCapacityProvider shows it."""
        _refuse_unknown(body, _CREATE_MEMBERS)
        c = v.Constraints()
        raw = body.get("CapacityProviderName")
        c.string(raw, "capacityProviderName", max_len=140, pattern=_NAME_OR_ARN, required=True)
        vpc = self._vpc(c, body.get("VpcConfig"))
        permissions = _permissions(c, body.get("PermissionsConfig"))
        requirements = self._requirements(c, body.get("InstanceRequirements"))
        scaling = _scaling(c, body.get("CapacityProviderScalingConfig"))
        kms = body.get("KmsKeyArn")
        if kms is not None:
            c.string(kms, "kmsKeyArn", max_len=10_000, pattern=_KMS)
        tags = body.get("Tags")
        if tags is not None and not isinstance(tags, dict):
            c.fail(tags, "tags", "Member must be a map")
        c.check()
        name = self._name(raw)
        spec: dict[str, Any] = {
            "VpcConfig": vpc,
            "PermissionsConfig": permissions,
            "InstanceRequirements": requirements,
        }
        if scaling:
            spec["CapacityProviderScalingConfig"] = scaling
        if kms is not None:
            spec["KmsKeyArn"] = kms
        if tags:
            spec["Tags"] = dict(tags)
        at = datetime.now(UTC)
        if name in self._providers or not await self._functions.run(
            lambda: self._store.put_provider(name, spec, at, create=True)
        ):
            raise ResourceConflictError(f"Capacity provider already exists: {self.arn(name)}")
        self._providers[name] = (spec, at)
        self._tell_provider(name)
        await self._changed(name)
        return self.describe(name)

    def get(self, raw: Any) -> dict[str, Any]:
        """GetCapacityProvider."""
        name = self._name(raw)
        self._require(name)
        return self.describe(name)

    async def update(self, raw: Any, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateCapacityProvider: its scaling config (the rest is fixed at creation)."""
        _refuse_unknown(body, _UPDATE_MEMBERS)
        name = self._name(raw)
        c = v.Constraints()
        scaling = _scaling(c, body.get("CapacityProviderScalingConfig"))
        c.check()
        spec, _ = self._require(name)
        spec = dict(spec)
        if "CapacityProviderScalingConfig" in body:
            spec["CapacityProviderScalingConfig"] = scaling
        at = datetime.now(UTC)
        if not await self._functions.run(
            lambda: self._store.put_provider(name, spec, at, create=False)
        ):
            raise ResourceNotFoundError(f"Capacity provider not found: {self.arn(name)}")
        self._providers[name] = (spec, at)
        self._tell_provider(name)
        await self._changed(name)
        return self.describe(name)

    async def delete(self, raw: Any) -> dict[str, Any]:
        """DeleteCapacityProvider: refused while a function version is attached to it."""
        name = self._name(raw)
        self._require(name)
        shown = self.describe(name, state="Deleting")
        why = await self._functions.run(self._store.delete_provider, name)
        if why == "in use":
            raise ResourceConflictError(
                f"Capacity provider {self.arn(name)} is in use by function versions: detach "
                "or delete them first."
            )
        if why == "missing":
            raise ResourceNotFoundError(f"Capacity provider not found: {self.arn(name)}")
        del self._providers[name]
        if self.on_provider is not None:
            self.on_provider(name, None)
        await self._changed(name)
        return shown

    def list_providers(
        self, state: str | None, marker: str | None, max_items: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """ListCapacityProviders (every provider is Active once created)."""
        c = v.Constraints()
        if state is not None and state not in STATES:
            c.fail(state, "state", f"Member must satisfy enum value set: [{', '.join(STATES)}]")
        limit = v.max_items(c, max_items, LIST_MAX_ITEMS)
        c.check()
        names = sorted(self._providers) if state in (None, "Active") else []
        page, next_marker = listing.page(
            "ListCapacityProviders", names, lambda n: n, limit, marker, order=lambda n: n
        )
        return [self.describe(n) for n in page], next_marker

    def versions(
        self, raw: Any, marker: str | None, max_items: int | None
    ) -> tuple[str, list[dict[str, str]], str | None]:
        """ListFunctionVersionsByCapacityProvider: (provider ARN, versions, next marker)."""
        name = self._name(raw)
        c = v.Constraints()
        limit = v.max_items(c, max_items, LIST_MAX_ITEMS)
        c.check()
        self._require(name)
        keys = [k for k, conf in self._attached.items() if conf["provider"] == name]
        page, next_marker = listing.page(
            "ListFunctionVersionsByCapacityProvider",
            keys,
            lambda k: f"{k[0]}:{k[1]}",
            limit,
            marker,
            order=_version_order,
        )
        out = []
        for fn, version in page:
            config = self._functions.version(fn, version)
            state = config.state.value if config is not None else "Active"
            out.append({"FunctionArn": self._functions.arn(fn, version), "State": state})
        return self.arn(name), out, next_marker

    def describe(self, name: str, state: str = "Active") -> dict[str, Any]:
        spec, at = self._providers[name]
        out: dict[str, Any] = {"CapacityProviderArn": self.arn(name), "State": state}
        for key in (
            "VpcConfig",
            "PermissionsConfig",
            "InstanceRequirements",
            "CapacityProviderScalingConfig",
            "KmsKeyArn",
        ):
            if key in spec:
                out[key] = spec[key]
        # Lambda's LastModified form (as FunctionConfiguration's), in UTC.
        out["LastModified"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
        return out

    # -- functions -----------------------------------------------------------------

    def check_function_config(self, value: Any, architecture: str) -> dict[str, Any]:
        """A CapacityProviderConfig as stored (`provider`, the member values), refused if it
        does not fit this host or a function of `architecture`."""
        if not isinstance(value, dict) or set(value) != {
            "LambdaManagedInstancesCapacityProviderConfig"
        }:
            raise ValidationError(
                "1 validation error detected: Value at 'capacityProviderConfig' failed to "
                "satisfy constraint: Member must contain exactly "
                "LambdaManagedInstancesCapacityProviderConfig"
            )
        inner = value["LambdaManagedInstancesCapacityProviderConfig"]
        where = "capacityProviderConfig.lambdaManagedInstancesCapacityProviderConfig"
        c = v.Constraints()
        if not isinstance(inner, dict):
            c.fail(inner, where, "Member must be a structure")
            c.check()
        arn = c.string(
            inner.get("CapacityProviderArn"),
            f"{where}.capacityProviderArn",
            max_len=140,
            pattern=_ARN,
            required=True,
        )
        per_env = inner.get("PerExecutionEnvironmentMaxConcurrency")
        if per_env is not None:
            c.integer(per_env, f"{where}.perExecutionEnvironmentMaxConcurrency", 1, 1600)
        ratio = inner.get("ExecutionEnvironmentMemoryGiBPerVCpu")
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 2 <= ratio <= 8
        ):
            c.fail(
                ratio,
                f"{where}.executionEnvironmentMemoryGiBPerVCpu",
                "Member must have value between 2 and 8",
            )
        extra = sorted(
            set(inner)
            - {
                "CapacityProviderArn",
                "PerExecutionEnvironmentMaxConcurrency",
                "ExecutionEnvironmentMemoryGiBPerVCpu",
            }
        )
        if extra:
            c.fail(extra[0], where, "Member is not a member of the structure")
        c.check()
        assert arn is not None
        m = _ARN.fullmatch(arn)
        assert m is not None
        name = m["name"]
        if arn != self.arn(name) or name not in self._providers:
            raise InvalidParameterValueError(f"Capacity provider not found: {arn}")
        if per_env is not None and per_env != 1:
            raise InvalidParameterValueError(
                "Lamina's execution environments run one invocation at a time: "
                "PerExecutionEnvironmentMaxConcurrency must be 1."
            )
        provider_arch = self._providers[name][0]["InstanceRequirements"]["Architectures"][0]
        if architecture != provider_arch:
            raise InvalidParameterValueError(
                f"The function's architecture ({architecture}) does not match the "
                f"capacity provider's ({provider_arch})."
            )
        stored = {"provider": name, "CapacityProviderArn": arn}
        if per_env is not None:
            stored["PerExecutionEnvironmentMaxConcurrency"] = per_env
        if ratio is not None:
            stored["ExecutionEnvironmentMemoryGiBPerVCpu"] = ratio
        return stored

    async def attach(self, config: FunctionConfig, stored: dict[str, Any] | None) -> None:
        """Record a version's CapacityProviderConfig (None: detach it)."""
        if not await self._functions.run(self._store.attach, config.name, config.version, stored):
            raise self._functions.not_found(config.name, config.version)
        key = (config.name, config.version)
        if stored is None:
            self._attached.pop(key, None)
        else:
            self._attached[key] = stored
        if self.on_attach is not None:
            self.on_attach(config.name, config.version)
        await self._functions.changed(config.name)

    async def published(self, name: str, version: str) -> None:
        """A version was published: it runs on `$LATEST`'s provider."""
        stored = self._attached.get((name, LATEST))
        config = self._functions.version(name, version)
        if stored is not None and config is not None and (name, version) not in self._attached:
            await self.attach(config, stored)

    def attachment(self, name: str, version: str) -> dict[str, Any] | None:
        """The version's CapacityProviderConfig as stored, if it has one (no I/O)."""
        return self._attached.get((name, version))

    def wire_config(self, config: FunctionConfig) -> dict[str, Any] | None:
        """FunctionConfiguration's CapacityProviderConfig, if the version has one."""
        stored = self._attached.get((config.name, config.version))
        if stored is None:
            return None
        inner = {k: val for k, val in stored.items() if k != "provider"}
        return {"LambdaManagedInstancesCapacityProviderConfig": inner}

    def vcpus(self, config: FunctionConfig) -> float:
        """The vCPUs one environment of an attached version counts against its provider."""
        stored = self._attached.get((config.name, config.version)) or {}
        ratio = float(stored.get("ExecutionEnvironmentMemoryGiBPerVCpu", DEFAULT_GIB_PER_VCPU))
        return config.memory_size / 1024 / ratio

    def forget(self, name: str, version: str | None) -> None:
        for key in [k for k in self._attached if k[0] == name]:
            if version is None or key[1] == version:
                del self._attached[key]

    # -- internals -----------------------------------------------------------------

    def _tell_provider(self, name: str) -> None:
        if self.on_provider is None:
            return
        scaling = self._providers[name][0].get("CapacityProviderScalingConfig") or {}
        cap = scaling.get("MaxVCpuCount")
        self.on_provider(name, float(cap) if cap is not None else None)

    def _vpc(self, c: v.Constraints, value: Any) -> dict[str, Any] | None:
        if value is None:
            c.fail(None, "vpcConfig", "Member must not be null")
            return None
        if not isinstance(value, dict):
            c.fail(value, "vpcConfig", "Member must be a structure")
            return None
        subnets = _id_list(c, value.get("SubnetIds"), "vpcConfig.subnetIds", _SUBNET, 1, 16)
        groups = _id_list(
            c, value.get("SecurityGroupIds"), "vpcConfig.securityGroupIds", _SECURITY_GROUP, 0, 5
        )
        return {"SubnetIds": subnets, "SecurityGroupIds": groups}

    def _requirements(self, c: v.Constraints, value: Any) -> dict[str, Any]:
        if value is None:
            return {"Architectures": ["x86_64"]}
        if not isinstance(value, dict):
            c.fail(value, "instanceRequirements", "Member must be a structure")
            return {}
        for member in ("AllowedInstanceTypes", "ExcludedInstanceTypes"):
            if value.get(member):
                raise InvalidParameterValueError(
                    f"Lamina runs environments on its own host: {member} cannot be chosen."
                )
        archs = value.get("Architectures", ["x86_64"])
        arch = v.architectures(c, archs)
        if arch is None:
            return {}
        if arch[0] not in self._host_architectures():
            raise InvalidParameterValueError(
                f"This host does not run {arch[0]} (it runs: "
                f"{', '.join(sorted(self._host_architectures()))})."
            )
        return {"Architectures": list(arch)}


def _version_order(key: str) -> tuple[str, tuple[int, int, str]]:
    name, _, version = key.partition(":")
    return name, listing.qualifier_order(version)


def _refuse_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for member in ("PropagateTags", "TelemetryConfig"):
        if body.get(member):
            raise InvalidParameterValueError(f"Lamina does not support {member} yet.")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise InvalidParameterValueError(f"Unknown member: {unknown[0]}")


def _permissions(c: v.Constraints, value: Any) -> dict[str, Any] | None:
    if value is None:
        c.fail(None, "permissionsConfig", "Member must not be null")
        return None
    if not isinstance(value, dict):
        c.fail(value, "permissionsConfig", "Member must be a structure")
        return None
    role = c.string(
        value.get("CapacityProviderOperatorRoleArn"),
        "permissionsConfig.capacityProviderOperatorRoleArn",
        max_len=10_000,
        pattern=_ROLE,
        required=True,
    )
    return {"CapacityProviderOperatorRoleArn": role}


def _scaling(c: v.Constraints, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.fail(value, "capacityProviderScalingConfig", "Member must be a structure")
        return {}
    out: dict[str, Any] = {}
    if value.get("ScalingPolicies"):
        raise InvalidParameterValueError(
            "Lamina starts environments on demand on its own host: ScalingPolicies have no "
            "instances to scale."
        )
    mode = value.get("ScalingMode")
    if mode is not None:
        if mode not in ("Auto", "Manual"):
            c.fail(
                mode,
                "capacityProviderScalingConfig.scalingMode",
                "Member must satisfy enum value set: [Auto, Manual]",
            )
        elif mode == "Manual":
            raise InvalidParameterValueError(
                "Lamina starts environments on demand on its own host: ScalingMode must be Auto."
            )
        else:
            out["ScalingMode"] = mode
    cap = value.get("MaxVCpuCount")
    if cap is not None and c.integer(cap, "capacityProviderScalingConfig.maxVCpuCount", 2, 15000):
        out["MaxVCpuCount"] = cap
    return out


def _id_list(
    c: v.Constraints, value: Any, where: str, pattern: re.Pattern[str], low: int, high: int
) -> list[str]:
    if value is None:
        c.fail(None, where, "Member must not be null")
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        c.fail(value, where, "Member must be a list of strings")
        return []
    if len(value) < low:
        c.fail(value, where, f"Member must have length greater than or equal to {low}")
    elif len(value) > high:
        c.fail(value, where, f"Member must have length less than or equal to {high}")
    for item in value:
        if len(item) > 1024 or not pattern.fullmatch(item):
            c.fail(
                item, where, f"Member must satisfy regular expression pattern: {pattern.pattern}"
            )
            break
    return list(value)
