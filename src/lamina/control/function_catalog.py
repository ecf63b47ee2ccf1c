"""The in-memory view of every function's configuration, and what reads it.

Resolving an invocation is the hot path, so it never touches the database: `FunctionCatalog`
keeps `$LATEST` and every published version of every function in memory (in a cluster,
`FunctionService.refresh` re-reads what another node changed: `control.changes`), and
answers from it what an invocation runs, GetFunction, ListFunctions and
ListVersionsByFunction, and the names and ARNs of functions. `FunctionService`
(`functions.py`) is the catalog plus the writes that change it; the sub-services read
functions through the same methods.

Blocking work (SQL, unzipping) runs on one worker thread, which also serialises writers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import IntegrityError

from lamina.arns import FunctionRef, function_arn, parse_function_ref
from lamina.control import listing
from lamina.control import validation as v
from lamina.control.aliases import is_alias_name
from lamina.control.changes import CONCURRENT_CHANGE
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    StorageFullError,
    is_disk_full,
)
from lamina.models import LATEST, Function, FunctionConfig
from lamina.settings import Settings
from lamina.store import MetadataStore

if TYPE_CHECKING:
    from lamina.control.aliases import AliasService

T = TypeVar("T")

_QUALIFIER = re.compile(r"(|[a-zA-Z0-9$_-]+)")
_MASTER_REGION = re.compile(r"ALL|(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}")


def _name_then_version(key: str) -> tuple[str, tuple[int, int, str]]:
    name, _, version = key.partition(":")
    return name, listing.qualifier_order(version)


class FunctionCatalog:
    """Every function's configurations in memory, the control worker, and the reads; see
    the module's docstring."""

    #: the aliases, through which `resolve` and `get` pick a version (set by the service)
    aliases: AliasService

    def __init__(self, settings: Settings, metadata: MetadataStore) -> None:
        self._settings = settings
        self._metadata = metadata
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-control")
        self._latest: dict[str, FunctionConfig] = {}
        #: published versions, by (name, version): immutable once made
        self._versions: dict[tuple[str, str], FunctionConfig] = {}

    # -- the in-memory view --------------------------------------------------------

    def latest(self, name: str) -> FunctionConfig | None:
        """The function's $LATEST configuration, if it exists (no I/O)."""
        return self._latest.get(name)

    def runtimes_in_use(self) -> set[str]:
        """The runtimes of every function version."""
        return {c.runtime for c in self._all_configs()}

    def all_configs(self) -> list[FunctionConfig]:
        """Every version of every function (no I/O)."""
        return self._all_configs()

    def function_count(self) -> int:
        return len(self._latest)

    def _all_configs(self) -> list[FunctionConfig]:
        return [*self._latest.values(), *self._versions.values()]

    # -- the control worker --------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, partial(fn, *args)
            )
        except IntegrityError as e:
            # Another node wrote the same key first (the database's constraints catch what
            # the in-memory checks here could not see); rolled back whole.
            raise ResourceConflictError(CONCURRENT_CHANGE) from e
        except Exception as e:
            # The metadata store rolled the change back whole; the caller may retry.
            if is_disk_full(e):
                raise StorageFullError("the change") from e
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work on the control worker (which serialises writers)."""
        return await self._run(fn, *args)

    # -- names ---------------------------------------------------------------------

    def ref(
        self, value: str, qualifier: str | None = None, *, namespaced: bool = False
    ) -> FunctionRef:
        """Parse a FunctionName (and Qualifier); `namespaced` for the operations whose model
        takes a NamespacedFunctionName (see `arns.parse_function_ref`)."""
        if qualifier is not None:
            c = v.Constraints()
            c.string(
                qualifier,
                "qualifier",
                max_len=128,
                pattern=_QUALIFIER,
            )
            c.check()
        return parse_function_ref(
            value,
            region=self._settings.region,
            account=self._settings.account_id,
            qualifier=qualifier,
            namespaced=namespaced,
        )

    def arn(self, name: str, qualifier: str | None = None) -> str:
        return function_arn(self._settings.region, self._settings.account_id, name, qualifier)

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundError:
        """Lambda's error for a function (or version, alias) that does not exist."""
        return self._not_found(name, qualifier)

    def _not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundError:
        return ResourceNotFoundError(f"Function not found: {self.arn(name, qualifier)}")

    def _check_qualifier(self, ref: FunctionRef) -> None:
        """Only `$LATEST` may be named here (an update, say, cannot name a version)."""
        if ref.qualifier not in (None, LATEST):
            raise self._not_found(ref.name, ref.qualifier)

    # -- reads ---------------------------------------------------------------------

    def resolve(self, ref: FunctionRef) -> FunctionConfig:
        """What an invocation of `ref` runs (no I/O: the hot path). An alias with routing
        picks one of its versions at random, by weight, on each call."""
        version = ref.qualifier
        if version is not None and is_alias_name(version):
            version = self.aliases.pick(ref.name, version)
            if version is None:
                raise self._not_found(ref.name, ref.qualifier)
        config = self.version(ref.name, version or LATEST)
        if config is None:
            raise self._not_found(ref.name, ref.qualifier)
        return config

    def version(self, name: str, version: str) -> FunctionConfig | None:
        """`$LATEST` or a published version's configuration (no I/O)."""
        if version == LATEST:
            return self._latest.get(name)
        return self._versions.get((name, version))

    def require(self, name: str) -> FunctionConfig:
        """The function's `$LATEST`; ResourceNotFoundException if there is no such function."""
        config = self._latest.get(name)
        if config is None:
            raise self._not_found(name)
        return config

    async def get(self, ref: FunctionRef) -> Function:
        """The function, with `latest` the configuration `ref` names ($LATEST unless a
        version was given; for an alias, the version it points at)."""
        if ref.qualifier is not None and is_alias_name(ref.qualifier):
            self.require(ref.name)
            alias = self.aliases.get(ref.name, ref.qualifier)
            config = self.version(ref.name, alias.function_version)
            if config is None:
                raise self._not_found(ref.name, ref.qualifier)
        else:
            config = self.resolve(ref)
        fn = await self._run(self._metadata.get_function, ref.name)
        if fn is None:
            raise self._not_found(ref.name, ref.qualifier)
        return fn if config.version == LATEST else replace(fn, latest=config)

    async def get_config(self, ref: FunctionRef) -> FunctionConfig:
        return (await self.get(ref)).latest

    def versions(
        self, ref: FunctionRef, marker: str | None, max_items: int | None
    ) -> tuple[list[FunctionConfig], str | None]:
        """ListVersionsByFunction: `$LATEST`, then published versions in number order."""
        self._check_qualifier(ref)
        latest = self._latest.get(ref.name)
        if latest is None:
            raise self._not_found(ref.name)
        c = v.Constraints()
        limit = v.max_items(c, max_items)
        c.check()
        published = sorted(
            (c for (name, _), c in self._versions.items() if name == ref.name),
            key=lambda c: int(c.version),
        )
        return listing.page(
            "ListVersionsByFunction", [latest, *published], lambda c: c.version, limit, marker
        )

    async def list(
        self,
        marker: str | None,
        max_items: int | None,
        every_version: bool = False,
        master_region: str | None = None,
    ) -> tuple[list[FunctionConfig], str | None]:
        """ListFunctions: each function's `$LATEST` by name; with `every_version` (Lambda's
        FunctionVersion=ALL) each function's published versions follow its `$LATEST`.
        `master_region` asks for the Lambda@Edge replicas of functions of that region (or of
        every region, `ALL`): Lamina makes none, so there are none to list."""
        c = v.Constraints()
        limit = v.max_items(c, max_items)
        if master_region is not None:
            c.string(master_region, "masterRegion", max_len=50, pattern=_MASTER_REGION)
        c.check()
        if master_region is not None:
            if not every_version:
                raise InvalidParameterValueError(
                    "MasterRegion is only taken with FunctionVersion set to ALL."
                )
            return [], None
        if every_version:
            # From the in-memory copy, which holds every version of every function.
            return listing.page(
                "ListFunctions.ALL",
                self._all_configs(),
                lambda c: f"{c.name}:{c.version}",
                limit,
                marker,
                order=_name_then_version,
            )
        after = listing.decode_marker("ListFunctions", marker) if marker else None
        rows = await self._run(self._metadata.list_latest, after, limit + 1)
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, listing.encode_marker("ListFunctions", rows[-1].name)
        return rows, None
