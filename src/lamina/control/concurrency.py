"""Reserved concurrency (PutFunctionConcurrency and friends) and the account's limits.

The rules live here; the counting of running invocations is the scheduler's
(`scheduler/concurrency.py`), told of every change through `on_change`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lamina import limits
from lamina.arns import FunctionRef
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError
from lamina.settings import Settings
from lamina.store import MetadataStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService


class ReservedConcurrency:
    def __init__(
        self, functions: FunctionService, metadata: MetadataStore, settings: Settings
    ) -> None:
        self._functions = functions
        self._metadata = metadata
        self._settings = settings
        self._reserved: dict[str, int] = {}
        #: told `(name, limit or None)` whenever a reservation changes (the scheduler)
        self.on_change: Callable[[str, int | None], None] | None = None

    async def load(self) -> None:
        """Read every function's reserved concurrency; tell `on_change` of each that is not
        what was held (all of them at start; after another node's change, that one)."""
        held = self._reserved
        self._reserved = await self._functions.run(self._metadata.reserved_concurrency)
        for name in held.keys() - self._reserved.keys():
            self._tell(name, None)
        for name, limit in self._reserved.items():
            if held.get(name) != limit:
                self._tell(name, limit)

    def get(self, ref: FunctionRef) -> int | None:
        """GetFunctionConcurrency: the function's reserved concurrency, if any."""
        _unqualified(ref)
        self._functions.require(ref.name)
        return self._reserved.get(ref.name)

    async def put(self, ref: FunctionRef, limit: Any) -> int:
        """PutFunctionConcurrency, with Lambda's rule that the unreserved pool never drops
        below its minimum (100, or the whole account limit if that is smaller)."""
        _unqualified(ref)
        c = v.Constraints()
        c.integer(limit, "reservedConcurrentExecutions", 0, 2**31 - 1)
        c.check()
        self._functions.require(ref.name)
        others = sum(n for name, n in self._reserved.items() if name != ref.name)
        account = self._settings.concurrency_limit
        minimum = min(limits.UNRESERVED_CONCURRENCY_MIN, account)
        if account - others - limit < minimum:
            raise InvalidParameterValueError(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{minimum}]."
            )
        await self._functions.run(self._metadata.set_reserved_concurrency, ref.name, limit)
        self._reserved[ref.name] = limit
        self._tell(ref.name, limit)
        await self._functions.changed(ref.name)
        return int(limit)

    async def delete(self, ref: FunctionRef) -> None:
        _unqualified(ref)
        self._functions.require(ref.name)
        await self._functions.run(self._metadata.set_reserved_concurrency, ref.name, None)
        self._reserved.pop(ref.name, None)
        self._tell(ref.name, None)
        await self._functions.changed(ref.name)

    def forget(self, name: str) -> None:
        """The function is gone (its row, and so its reservation, with it)."""
        if self._reserved.pop(name, None) is not None:
            self._tell(name, None)

    def account(self) -> dict[str, int]:
        """What GetAccountSettings reports: limits and usage."""
        limit = self._settings.concurrency_limit
        return {
            "concurrent_executions": limit,
            "unreserved": limit - sum(self._reserved.values()),
            "function_count": self._functions.function_count(),
            "total_code_size": sum(c.code_size for c in self._functions.all_configs()),
        }

    def _tell(self, name: str, limit: int | None) -> None:
        if self.on_change is not None:
            self.on_change(name, limit)


def _unqualified(ref: FunctionRef) -> None:
    if ref.qualifier is not None:
        raise InvalidParameterValueError(
            "Concurrency is set on a function as a whole: name it without a qualifier."
        )
