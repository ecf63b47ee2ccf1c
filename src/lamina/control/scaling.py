"""Function scaling configs (Get/PutFunctionScalingConfig): how many execution environments
a published version of a function on a capacity provider keeps.

- `MinExecutionEnvironments`: that many environments are started ahead and kept however long
  they idle, as provisioned concurrency keeps them (with both set on a version, the larger
  number is kept).
- `MaxExecutionEnvironments`: at most that many environments of the version run at once (a
  Lamina environment runs one invocation at a time, so: at most that many invocations); one
  past it gets 429 `TooManyRequestsException` at once.

Only published versions (a number, or `$LATEST.PUBLISHED` for the newest) of functions with a
`CapacityProviderConfig` take one, as on Lambda.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.control import validation as v
from lamina.control.capacity_providers import CapacityProviders
from lamina.errors import InvalidParameterValueError
from lamina.models import FunctionConfig
from lamina.store.capacity import CapacityStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from lamina.control.functions import FunctionService

LATEST_PUBLISHED = "$LATEST.PUBLISHED"
_QUALIFIER = re.compile(r"(\$LATEST\.PUBLISHED|[0-9]+)")
_ENVIRONMENTS_MAX = 15000


@dataclass(frozen=True)
class ScalingConfig:
    min_environments: int | None = None
    max_environments: int | None = None


class FunctionScaling:
    def __init__(
        self, functions: FunctionService, store: CapacityStore, providers: CapacityProviders
    ) -> None:
        self._functions = functions
        self._store = store
        self._providers = providers
        self._configs: dict[tuple[str, str], ScalingConfig] = {}
        #: told `(config, max environments or None, provider or None, vCPUs each)` whenever
        #: a version's limits change (the scheduler's EnvironmentLimits)
        self.on_limits: Callable[[FunctionConfig, int | None, str | None, float], None] | None
        self.on_limits = None

    async def load(self) -> None:
        for name, version, low, high in await self._functions.run(self._store.scaling):
            self._configs[(name, version)] = ScalingConfig(low, high)
        for config in self._functions.all_configs():
            self.apply(config.name, config.version)

    def apply(self, name: str, version: str) -> None:
        """Tell the scheduler a version's limits and keep its minimum started."""
        config = self._functions.version(name, version)
        if config is None:
            return
        scaling = self._configs.get((name, version), ScalingConfig())
        attached = self._providers.attachment(name, version)
        if self.on_limits is not None:
            self.on_limits(
                config,
                scaling.max_environments,
                attached["provider"] if attached else None,
                self._providers.vcpus(config),
            )
        if scaling.min_environments is not None or (name, version) in self._configs:
            self._functions.provisioned.set_floor(config, scaling.min_environments or 0)

    def _version(self, ref: FunctionRef, qualifier: Any) -> FunctionConfig:
        c = v.Constraints()
        c.string(qualifier, "qualifier", max_len=128, pattern=_QUALIFIER, required=True)
        c.check()
        if ref.qualifier is not None:
            raise InvalidParameterValueError(
                "The function name must be unqualified: name the version with Qualifier."
            )
        self._functions.require(ref.name)
        version = qualifier
        if qualifier == LATEST_PUBLISHED:
            numbers = [
                int(c.version)
                for c in self._functions.all_configs()
                if c.name == ref.name and c.version.isdigit()
            ]
            if not numbers:
                raise self._functions.not_found(ref.name, qualifier)
            version = str(max(numbers))
        config = self._functions.version(ref.name, version)
        if config is None:
            raise self._functions.not_found(ref.name, qualifier)
        if self._providers.attachment(ref.name, config.version) is None:
            raise InvalidParameterValueError(
                "Function scaling configuration is only supported for function versions that "
                "use a capacity provider."
            )
        return config

    def get(self, ref: FunctionRef, qualifier: Any) -> tuple[str, ScalingConfig, ScalingConfig]:
        """GetFunctionScalingConfig: (version ARN, applied, requested)."""
        config = self._version(ref, qualifier)
        requested = self._configs.get((config.name, config.version), ScalingConfig())
        ready = self._functions.provisioned.ready(config)
        applied = ScalingConfig(
            None if requested.min_environments is None else min(ready, requested.min_environments),
            requested.max_environments,
        )
        return self._functions.arn(config.name, config.version), applied, requested

    async def put(self, ref: FunctionRef, qualifier: Any, value: Any) -> FunctionConfig:
        """PutFunctionScalingConfig."""
        c = v.Constraints()
        low = high = None
        if value is not None and not isinstance(value, dict):
            c.fail(value, "functionScalingConfig", "Member must be a structure")
        elif value is not None:
            extra = sorted(set(value) - {"MinExecutionEnvironments", "MaxExecutionEnvironments"})
            if extra:
                c.fail(extra[0], "functionScalingConfig", "Member is not a member")
            low = value.get("MinExecutionEnvironments")
            high = value.get("MaxExecutionEnvironments")
            if low is not None:
                c.integer(low, "functionScalingConfig.minExecutionEnvironments", 0, 15000)
            if high is not None:
                c.integer(high, "functionScalingConfig.maxExecutionEnvironments", 0, 15000)
        c.check()
        config = self._version(ref, qualifier)
        if low is not None and high is not None and low > high:
            raise InvalidParameterValueError(
                "MinExecutionEnvironments must be less than or equal to MaxExecutionEnvironments."
            )
        if not await self._functions.run(
            self._store.put_scaling, config.name, config.version, low, high
        ):
            raise self._functions.not_found(config.name, config.version)
        self._configs[(config.name, config.version)] = ScalingConfig(low, high)
        self.apply(config.name, config.version)
        await self._functions.changed(config.name)
        return config

    def forget(self, name: str, version: str | None) -> None:
        for key in [k for k in self._configs if k[0] == name]:
            if version is None or key[1] == version:
                del self._configs[key]
                self._functions.provisioned.drop_floor(*key)
