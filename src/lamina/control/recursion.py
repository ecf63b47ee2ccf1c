"""Recursive loop detection (Get/PutFunctionRecursionConfig) and the trace-header `Lineage`
that counts a chain of invocations.

Lambda follows one chain of requests through the X-Ray trace header: each function the chain
reaches gets an entry `<hash>:<count>` in the header's `Lineage` field, and the SDK inside the
function passes the header on (botocore sets `X-Amzn-Trace-Id` from `_X_AMZN_TRACE_ID`). When
an invocation would be the 17th of the same function in one chain, Lambda stops it unless the
function's `RecursiveLoop` is `Allow`. Lamina counts on its own paths: Invoke (synchronous
and `Event`), and the asynchronous queue's destinations. The hash is the first 8 hex digits
of the SHA-256 of the function's unqualified ARN.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lamina import ids
from lamina.arns import FunctionRef
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError
from lamina.store.function_settings import FunctionSettingsStore

if TYPE_CHECKING:
    from lamina.control.functions import FunctionService

RECURSIVE_LOOP = ("Allow", "Terminate")
#: Lambda lets a function run this many times in one chain; the next invocation is stopped
RECURSION_LIMIT = 16
_LINEAGE_ENTRY = re.compile(r"([0-9a-f]{8}):(\d{1,9})")


def _hash(function_arn: str) -> str:
    return hashlib.sha256(function_arn.encode()).hexdigest()[:8]


def continue_trace(header: str | None, function_hash: str) -> tuple[str, int]:
    """The trace header an invocation of the function `function_hash` names runs with, and
    how many times that function has now run in the chain (1 on a new chain). `header` is
    the caller's X-Amzn-Trace-Id, if any (URL-quoted by botocore)."""
    fields: list[tuple[str, str]] = []
    lineage: list[tuple[str, int]] = []
    if header:
        for part in unquote(header).split(";"):
            key, sep, value = part.strip().partition("=")
            if not sep:
                continue
            if key == "Lineage":
                for entry in value.split("|"):
                    m = _LINEAGE_ENTRY.fullmatch(entry.strip())
                    if m is not None:
                        lineage.append((m[1], int(m[2])))
            elif key in ("Root", "Parent", "Sampled"):
                fields.append((key, value))
    if not any(k == "Root" for k, _ in fields):
        fresh = ids.trace_id()
        fields = [tuple(p.split("=", 1)) for p in fresh.split(";")]  # type: ignore[misc]
        lineage = []
    count = 1
    for i, (h, n) in enumerate(lineage):
        if h == function_hash:
            count = n + 1
            lineage[i] = (h, count)
            break
    else:
        lineage.append((function_hash, count))
    text = ";".join(f"{k}={val}" for k, val in fields)
    return f"{text};Lineage={'|'.join(f'{h}:{n}' for h, n in lineage)}", count


class RecursionConfigs:
    """Each function's RecursiveLoop (default Terminate), kept in memory: invokes read it."""

    def __init__(self, functions: FunctionService, store: FunctionSettingsStore) -> None:
        self._functions = functions
        self._store = store
        self._configs: dict[str, str] = {}
        self._hashes: dict[str, str] = {}

    async def load(self) -> None:
        self._configs = await self._functions.run(self._store.all_recursion)

    def get(self, ref: FunctionRef) -> str:
        """GetFunctionRecursionConfig."""
        _unqualified(ref)
        self._functions.require(ref.name)
        return self._configs.get(ref.name, "Terminate")

    async def put(self, ref: FunctionRef, recursive_loop: Any) -> str:
        """PutFunctionRecursionConfig."""
        c = v.Constraints()
        if recursive_loop is None:
            c.fail(None, "recursiveLoop", "Member must not be null")
        elif recursive_loop not in RECURSIVE_LOOP:
            c.fail(
                recursive_loop,
                "recursiveLoop",
                f"Member must satisfy enum value set: [{', '.join(RECURSIVE_LOOP)}]",
            )
        c.check()
        _unqualified(ref)
        self._functions.require(ref.name)
        if not await self._functions.run(self._store.put_recursion, ref.name, recursive_loop):
            raise self._functions.not_found(ref.name)
        self._configs[ref.name] = recursive_loop
        await self._functions.changed(ref.name)
        return str(recursive_loop)

    def forget_function(self, name: str) -> None:
        self._configs.pop(name, None)
        self._hashes.pop(name, None)

    def trace(self, name: str, header: str | None) -> tuple[str, bool]:
        """The trace header an invocation of function `name` runs with, and whether it may
        run (False: the chain has run the function RECURSION_LIMIT times already and the
        function's RecursiveLoop is Terminate)."""
        function_hash = self._hashes.get(name)
        if function_hash is None:
            function_hash = self._hashes[name] = _hash(self._functions.arn(name))
        if not header:
            # The common case, kept cheap: a new chain.
            return f"{ids.trace_id()};Lineage={function_hash}:1", True
        trace, count = continue_trace(header, function_hash)
        allowed = count <= RECURSION_LIMIT or self._configs.get(name) == "Allow"
        return trace, allowed


def _unqualified(ref: FunctionRef) -> None:
    if ref.qualifier is not None:
        raise InvalidParameterValueError(
            "The recursion configuration is set on a function as a whole: name it without "
            "a qualifier."
        )
