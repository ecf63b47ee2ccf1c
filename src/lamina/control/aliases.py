"""Aliases: names for function versions, with weighted routing to a second version.

Kept in memory (like functions) so that resolving an invocation of an alias never touches the
database; each invocation of an alias with `routing` picks its version at random by weight,
as Lambda does. Lambda's rules: an alias points at `$LATEST` or a published version; routing
names one more published version, with a weight from 0 to 1; an alias on `$LATEST` cannot
route; both versions must share an execution role; a version an alias uses cannot be deleted.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lamina.control import listing
from lamina.control import validation as v
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import LATEST, Alias, FunctionConfig
from lamina.store import MetadataStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

_ALIAS_NAME = re.compile(r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)")
_VERSION = re.compile(r"(\$LATEST|[0-9]+)")
_PUBLISHED = re.compile(r"[0-9]+")


def is_alias_name(qualifier: str) -> bool:
    """A qualifier that names an alias rather than a version."""
    return qualifier != LATEST and not qualifier.isdigit()


class AliasService:
    def __init__(self, functions: FunctionService, metadata: MetadataStore) -> None:
        self._functions = functions
        self._metadata = metadata
        self._aliases: dict[tuple[str, str], Alias] = {}
        self._random: Callable[[], float] = random.random
        #: `listener(function_name, alias)` after an alias was deleted (event-source mappings
        #: that name it go with it)
        self.on_deleted: list[Callable[[str, str], Awaitable[None]]] = []

    def load(self, aliases: list[Alias]) -> None:
        self._aliases = {(a.function_name, a.name): a for a in aliases}

    # -- reads ---------------------------------------------------------------------

    def pick(self, function_name: str, name: str) -> str | None:
        """The version one invocation of the alias runs (None: no such alias)."""
        alias = self._aliases.get((function_name, name))
        if alias is None:
            return None
        for version, weight in alias.routing.items():
            if self._random() < weight:
                return version
        return alias.function_version

    def get(self, function_name: str, name: str) -> Alias:
        self._functions.require(function_name)
        alias = self._aliases.get((function_name, name))
        if alias is None:
            raise self._not_found(function_name, name)
        return alias

    def list_aliases(
        self,
        function_name: str,
        function_version: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> tuple[list[Alias], str | None]:
        self._functions.require(function_name)
        c = v.Constraints()
        limit = v.max_items(c, max_items)
        if function_version is not None:
            c.string(function_version, "functionVersion", max_len=1024, pattern=_VERSION)
        c.check()
        found = (
            a
            for (fn, _), a in self._aliases.items()
            if fn == function_name
            and (function_version is None or a.function_version == function_version)
        )
        return listing.page("ListAliases", found, lambda a: a.name, limit, marker, order=str)

    def referencing(self, function_name: str, version: str) -> list[str]:
        """The aliases that route any invocation to `version`."""
        return sorted(
            a.name
            for (fn, _), a in self._aliases.items()
            if fn == function_name and (a.function_version == version or version in a.routing)
        )

    def forget_function(self, function_name: str) -> None:
        for key in [k for k in self._aliases if k[0] == function_name]:
            del self._aliases[key]

    def replace_function(self, function_name: str, aliases: list[Alias]) -> bool:
        """Hold `aliases` as the function's (as the database has them now); True if that
        changed any."""
        held = {k: a for k, a in self._aliases.items() if k[0] == function_name}
        fresh = {(a.function_name, a.name): a for a in aliases}
        if held == fresh:
            return False
        self.forget_function(function_name)
        self._aliases.update(fresh)
        return True

    # -- writes --------------------------------------------------------------------

    async def create(
        self,
        function_name: str,
        name: Any,
        function_version: Any,
        description: Any = None,
        routing: Any = None,
    ) -> Alias:
        c = v.Constraints()
        c.string(name, "name", max_len=128, pattern=_ALIAS_NAME)
        c.string(function_version, "functionVersion", max_len=1024, pattern=_VERSION)
        weights = self._check(c, description, routing)
        self._functions.require(function_name)
        alias = Alias(
            function_name=function_name,
            name=name,
            function_version=function_version,
            description=description or "",
            routing=weights or {},
            revision_id=str(uuid.uuid4()),
        )
        self._check_versions(alias)
        if not await self._functions.run(self._metadata.create_alias, alias):
            raise ResourceConflictError(
                f"Alias already exists: {self._functions.arn(function_name, name)}"
            )
        self._aliases[(function_name, name)] = alias
        await self._functions.changed(function_name)
        return alias

    async def update(
        self,
        function_name: str,
        name: str,
        function_version: Any = None,
        description: Any = None,
        routing: Any = None,
        revision_id: Any = None,
    ) -> Alias:
        c = v.Constraints()
        if function_version is not None:
            c.string(function_version, "functionVersion", max_len=1024, pattern=_VERSION)
        weights = self._check(c, description, routing)
        current = self.get(function_name, name)
        if revision_id is not None and revision_id != current.revision_id:
            raise v.stale_revision()
        new = replace(
            current,
            function_version=current.function_version
            if function_version is None
            else function_version,
            description=current.description if description is None else description,
            routing=current.routing if weights is None else weights,
            revision_id=str(uuid.uuid4()),
        )
        self._check_versions(new)
        replaced = await self._functions.run(
            lambda: self._metadata.replace_alias(new, expect_revision=current.revision_id)
        )
        if not replaced:
            raise v.stale_revision()
        self._aliases[(function_name, name)] = new
        if new.function_version != current.function_version:
            self._functions.provisioned.refresh(function_name)
        await self._functions.changed(function_name)
        return new

    async def delete(self, function_name: str, name: str) -> None:
        self._functions.require(function_name)
        await self._functions.provisioned.forget(function_name, name)
        # Lambda answers a delete of a missing alias with success.
        await self._functions.run(self._metadata.delete_alias, function_name, name)
        self._aliases.pop((function_name, name), None)
        # The store deleted the alias's asynchronous invocation settings, URL and policy with it.
        self._functions.event_invoke.forget(function_name, name)
        self._functions.urls.forget(function_name, name)
        self._functions.policies.forget(function_name, name)
        for listener in self.on_deleted:
            await listener(function_name, name)
        await self._functions.changed(function_name)

    # -- rules ---------------------------------------------------------------------

    def _check(self, c: v.Constraints, description: Any, routing: Any) -> dict[str, float] | None:
        """Check the request's shapes; returns the routing weights (None: not given)."""
        if description is not None:
            c.string(description, "description", max_len=256)
        weights = None
        if routing is not None:
            if not isinstance(routing, dict):
                c.fail(routing, "routingConfig", "Member must be a structure")
            else:
                raw = routing.get("AdditionalVersionWeights") or {}
                if not isinstance(raw, dict):
                    c.fail(raw, "routingConfig.additionalVersionWeights", "Member must be a map")
                else:
                    weights = {}
                    for version, weight in raw.items():
                        if not isinstance(version, str) or not _PUBLISHED.fullmatch(version):
                            c.fail(
                                version,
                                "routingConfig.additionalVersionWeights",
                                "Map keys must satisfy constraint: [Member must satisfy "
                                "regular expression pattern: [0-9]+]",
                            )
                        elif not isinstance(weight, int | float) or not 0 <= weight <= 1:
                            c.fail(
                                weight,
                                "routingConfig.additionalVersionWeights",
                                "Map values must satisfy constraint: [Member must have value "
                                "less than or equal to 1.0, Member must have value greater "
                                "than or equal to 0.0]",
                            )
                        else:
                            weights[version] = float(weight)
        c.check()
        return weights

    def _check_versions(self, alias: Alias) -> None:
        fn = alias.function_name
        primary = self._version(fn, alias.function_version)
        if not alias.routing:
            return
        if len(alias.routing) > 1:
            raise InvalidParameterValueError(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        if alias.function_version == LATEST:
            raise InvalidParameterValueError(
                "$LATEST is not supported for an alias pointing to more than 1 version"
            )
        (extra,) = alias.routing
        if extra == alias.function_version:
            raise InvalidParameterValueError(
                f"Invalid function version {extra}. Function version {extra} is already "
                "included in routing configuration."
            )
        additional = self._version(fn, extra)
        if additional.role != primary.role:
            raise InvalidParameterValueError(
                "The role of the additional version must be the same as the role of the "
                "primary version."
            )

    def _version(self, function_name: str, version: str) -> FunctionConfig:
        config = self._functions.version(function_name, version)
        if config is None:
            raise ResourceNotFoundError(
                f"Function not found: {self._functions.arn(function_name, version)}"
            )
        return config

    def _not_found(self, function_name: str, name: str) -> ResourceNotFoundError:
        # Lambda's wording
        return ResourceNotFoundError(
            f"Cannot find alias arn: {self._functions.arn(function_name, name)}"
        )
