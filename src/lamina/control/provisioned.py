"""Provisioned concurrency: environments initialised ahead for a version or an alias.

The configuration (how many, for what) lives here and in the store; the environments are the
scheduler's, which this module drives through `on_change(config, count)` and reads through
`status(config)` (both wired at start-up). An alias's provisioned environments are its
version's (of an alias with weighted routing, the primary version's). Lambda's rules: only a
published version or an alias; not both an alias and the version it points at; in all, no
more than the function's reserved concurrency, when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lamina.arns import FunctionRef
from lamina.control import listing, snapstart
from lamina.control import validation as v
from lamina.control.aliases import is_alias_name
from lamina.errors import (
    InvalidParameterValueError,
    ProvisionedConcurrencyConfigNotFoundError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LATEST, FunctionConfig
from lamina.store import MetadataStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

#: ListProvisionedConcurrencyConfigs' MaxItems range (botocore's model: 1 to 50)
LIST_MAX_ITEMS = 50


@dataclass(frozen=True)
class ProvisionedConfig:
    function_name: str
    qualifier: str
    requested: int
    last_modified: datetime
    #: environments ready now
    allocated: int = 0
    status: str = "IN_PROGRESS"
    status_reason: str | None = None


class ProvisionedConcurrency:
    def __init__(self, functions: FunctionService, metadata: MetadataStore) -> None:
        self._functions = functions
        self._metadata = metadata
        self._configs: dict[tuple[str, str], tuple[int, datetime]] = {}
        #: `(version config, count)` whenever a version's provisioned count changes
        self.on_change: Callable[[FunctionConfig, int], None] | None = None
        #: `(version config) -> (ready, failure)`
        self.status: Callable[[FunctionConfig], tuple[int, str | None]] | None = None
        #: environments kept warm per version whatever its provisioned concurrency
        #: (a function scaling config's MinExecutionEnvironments), by (name, version)
        self._floors: dict[tuple[str, str], int] = {}

    async def load(self) -> None:
        for name, qualifier, requested, at in await self._functions.run(
            self._metadata.all_provisioned
        ):
            self._configs[(name, qualifier)] = (requested, at)
            target = self._target(name, qualifier)
            if target is not None:
                self._apply(target)

    def _target(self, name: str, qualifier: str) -> FunctionConfig | None:
        """The version a qualifier's environments belong to."""
        if is_alias_name(qualifier):
            try:
                version = self._functions.aliases.get(name, qualifier).function_version
            except ResourceNotFoundError:
                return None
        else:
            version = qualifier
        return self._functions.version(name, version)

    def _apply(self, config: FunctionConfig) -> None:
        """Tell the scheduler the total for one version (its own and its aliases')."""
        total = sum(
            n
            for (name, qualifier), (n, _) in self._configs.items()
            if name == config.name
            and (target := self._target(name, qualifier)) is not None
            and target.version == config.version
        )
        total = max(total, self._floors.get((config.name, config.version), 0))
        if self.on_change is not None:
            self.on_change(config, total)

    def set_floor(self, config: FunctionConfig, count: int) -> None:
        """Keep at least `count` environments of the version started (0: no floor)."""
        if count:
            self._floors[(config.name, config.version)] = count
        else:
            self._floors.pop((config.name, config.version), None)
        self._apply(config)

    def ready(self, config: FunctionConfig) -> int:
        """Environments of the version started ahead and ready now."""
        return self.status(config)[0] if self.status is not None else 0

    async def put(self, ref: FunctionRef, requested: Any) -> ProvisionedConfig:
        c = v.Constraints()
        c.integer(requested, "provisionedConcurrentExecutions", 1, 2**31 - 1)
        c.check()
        qualifier = self._qualifier(ref)
        target = self._target(ref.name, qualifier)
        if target is None:
            raise ResourceNotFoundError(
                f"Function not found: {self._functions.arn(ref.name, qualifier)}"
            )
        snapstart.refuse_provisioned(target)
        for name, other in self._configs:
            if name != ref.name or other == qualifier:
                continue
            other_target = self._target(name, other)
            if other_target is not None and other_target.version == target.version:
                raise ResourceConflictError(
                    f"Alias can't be used for Provisioned Concurrency configuration on an "
                    f"already Provisioned version: {self._functions.arn(name, other)}"
                )
        reserved = self._functions.concurrency.get(self._functions.ref(ref.name))
        others = sum(
            n for (name, q), (n, _) in self._configs.items() if name == ref.name and q != qualifier
        )
        if reserved is not None and others + requested > reserved:
            raise InvalidParameterValueError(
                "Requested Provisioned Concurrency should not be greater than the "
                f"reservedConcurrentExecution for function ({reserved})."
            )
        at = datetime.now(UTC)
        await self._functions.run(
            self._metadata.put_provisioned, ref.name, qualifier, requested, at
        )
        self._configs[(ref.name, qualifier)] = (requested, at)
        self._apply(target)
        await self._functions.changed(ref.name)
        return self._config(ref.name, qualifier)

    def get(self, ref: FunctionRef) -> ProvisionedConfig:
        return self._config(ref.name, self._existing(ref))

    def list_configs(
        self, name: str, marker: str | None, max_items: int | None
    ) -> tuple[list[ProvisionedConfig], str | None]:
        """A page of the function's configurations (versions by number, then aliases by
        name) and the marker of the next page, if there is one."""
        self._functions.require(name)
        c = v.Constraints()
        limit = v.max_items(c, max_items, LIST_MAX_ITEMS)
        c.check()
        configs = [self._config(n, q) for (n, q) in self._configs if n == name]
        return listing.page(
            "ListProvisionedConcurrencyConfigs", configs, lambda c: c.qualifier, limit, marker
        )

    async def delete(self, ref: FunctionRef) -> None:
        await self.forget(ref.name, self._existing(ref))

    async def forget(self, name: str, qualifier: str) -> None:
        """Drop a qualifier's configuration (also when its version or alias is deleted)."""
        if (name, qualifier) not in self._configs:
            return
        target = self._target(name, qualifier)
        await self._functions.run(self._metadata.delete_provisioned, name, qualifier)
        del self._configs[(name, qualifier)]
        if target is not None:
            self._apply(target)
        await self._functions.changed(name)

    def refresh(self, name: str) -> None:
        """Re-tell the scheduler every version's total (an alias moved to another version)."""
        for config in self._functions.all_configs():
            if config.name == name and config.version != LATEST:
                self._apply(config)

    def forget_function(self, name: str) -> None:
        for key in [k for k in self._configs if k[0] == name]:
            del self._configs[key]
        for key in [k for k in self._floors if k[0] == name]:
            del self._floors[key]

    def drop_floor(self, name: str, version: str) -> None:
        """A version with a floor is gone (its environments go with it)."""
        self._floors.pop((name, version), None)

    def _existing(self, ref: FunctionRef) -> str:
        """The qualifier of a configuration that exists (else Lambda's not-found error)."""
        qualifier = self._qualifier(ref)
        if (ref.name, qualifier) not in self._configs:
            raise ProvisionedConcurrencyConfigNotFoundError(
                "No Provisioned Concurrency Config found for this function: "
                f"{self._functions.arn(ref.name, qualifier)}"
            )
        return qualifier

    def _qualifier(self, ref: FunctionRef) -> str:
        self._functions.require(ref.name)
        if ref.qualifier is None:
            raise InvalidParameterValueError(
                "Provisioned Concurrency Configs need a Qualifier: a version or an alias."
            )
        if ref.qualifier == LATEST:
            raise InvalidParameterValueError(
                "Provisioned Concurrency Configs cannot be applied to unpublished function "
                "versions."
            )
        return ref.qualifier

    def _config(self, name: str, qualifier: str) -> ProvisionedConfig:
        requested, at = self._configs[(name, qualifier)]
        target = self._target(name, qualifier)
        ready, failure = (0, None)
        if target is not None and self.status is not None:
            ready, failure = self.status(target)
        allocated = min(ready, requested)
        if failure is not None:
            status = "FAILED"
        elif allocated >= requested:
            status = "READY"
        else:
            status = "IN_PROGRESS"
        return ProvisionedConfig(
            function_name=name,
            qualifier=qualifier,
            requested=requested,
            last_modified=at,
            allocated=allocated,
            status=status,
            status_reason=failure,
        )
